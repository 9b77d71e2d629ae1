//! The runnable examples in `examples/` (issue #19), each run here the way its comments say.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

const EMAIL: &str = "jane.roe@example-corp.de";
const PHONE: &str = "+4915148273916";

fn seed_exports(s: &Path) {
    fs::create_dir_all(s.join("exports")).unwrap();
    fs::create_dir_all(s.join("reports")).unwrap();
    fs::create_dir_all(s.join("other")).unwrap();
    fs::write(
        s.join("exports/orders.csv"),
        format!("id,customer,email,phone,total\n1,Jane Roe,{EMAIL},{PHONE},12.50\n"),
    )
    .unwrap();
    fs::write(s.join("other/ledger.tsv"), "a\tb\n").unwrap();
    fs::write(s.join("notes.txt"), "not a spreadsheet\n").unwrap();
}

#[test]
fn spreadsheet_profile_serves_csv_read_only_with_pii_masked() {
    let scope = tempfile::tempdir().unwrap();
    seed_exports(scope.path());
    let profile = example("spreadsheet-profile.toml");
    let m = common::Mount::start(scope.path(), &["--profile", profile.to_str().unwrap()]);
    let csv = fs::read_to_string(m.path("exports/orders.csv")).unwrap();
    let real = fs::read_to_string(scope.path().join("exports/orders.csv")).unwrap();
    assert_eq!(csv.len(), real.len(), "{csv}");
    assert!(!csv.contains(EMAIL) && !csv.contains(PHONE), "{csv}");
    assert!(csv.contains("<redacted:"), "{csv}");
    assert!(
        csv.starts_with("id,customer,email,phone,total\n1,Jane Roe,"),
        "{csv}"
    );
    assert!(csv.ends_with(",12.50\n"), "{csv}");
    assert!(fs::metadata(m.path("other/ledger.tsv")).is_ok());
    assert!(
        fs::metadata(m.path("notes.txt")).is_err(),
        "only spreadsheets"
    );
    let e = fs::write(m.path("exports/orders.csv"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn agent_manifest_example_gets_a_consent_screen_and_narrows_a_mount() {
    let manifest = example("agent-manifest.json");
    let profile = example("spreadsheet-profile.toml");
    let (ok, out, err) = common::veilfs(&[
        "consent",
        "--profile",
        profile.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Agent \"sheet-summariser\" version 1.2.0"),
        "{out}"
    );
    assert!(
        out.contains("change `reports/`: the profile is read-only"),
        "{out}"
    );
    assert!(
        out.contains("connect to `https://llm.corporate.internal`: the profile allows no network"),
        "{out}"
    );
    assert!(
        out.contains("run `python3`") && out.contains("outside veilfs' scope"),
        "{out}"
    );

    let scope = tempfile::tempdir().unwrap();
    seed_exports(scope.path());
    let m = common::Mount::start(
        scope.path(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    let csv = fs::read_to_string(m.path("exports/orders.csv")).unwrap();
    assert!(!csv.contains(EMAIL), "{csv}");
    // The profile shows .tsv files; the manifest did not ask for them.
    assert!(fs::metadata(m.path("other/ledger.tsv")).is_err());
    let e = fs::write(m.path("reports/r.csv"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn agent_sandbox_script_runs_the_agent_in_bubblewrap_on_the_view() {
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("skipped: bubblewrap is not installed");
        return;
    }
    let scope = tempfile::tempdir().unwrap();
    seed_exports(scope.path());
    let store = tempfile::tempdir().unwrap();
    let real = scope.path().display().to_string();
    let script = format!(
        "pwd; cat exports/orders.csv; echo 'total: 12.50' > reports/summary.txt; \
         if cat {real}/exports/orders.csv 2>/dev/null | grep -q @; then echo REAL-VISIBLE; fi; \
         echo done"
    );
    let out = Command::new(example("agent-sandbox.sh"))
        .arg(scope.path())
        .args(["sh", "-c", &script])
        .env("VEILFS", common::bin())
        .env("VEILFS_STORE", store.path().join("s"))
        .env("VEILFS_MANIFEST", example("agent-manifest.json"))
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{o}{e}");
    assert!(o.contains("veilfs-run-") && o.ends_with("done\n"), "{o}");
    assert!(!o.contains(EMAIL) && o.contains("<redacted:"), "{o}");
    assert!(!o.contains("REAL-VISIBLE"), "{o}");
    // The consent screen came first, then the session summary.
    assert!(e.contains("Agent \"sheet-summariser\""), "{e}");
    assert!(e.contains("session summary (snapshot mode"), "{e}");
    assert_eq!(
        fs::read_to_string(scope.path().join("reports/summary.txt")).unwrap(),
        "total: 12.50\n"
    );
}

/// `%h`, `%i`, `%I` and `${VIEW}` of the unit, as systemd would expand them for `home`.
fn expand(line: &str, home: &Path, instance: &str) -> Vec<String> {
    let view = format!("{}/agent-view/{instance}", home.display());
    line.replace("${VIEW}", &view)
        .replace("%h", &home.display().to_string())
        .replace("%i", instance)
        .replace("%I", &instance.replace('-', "/"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn systemd_user_unit_verifies_and_its_commands_mount_and_unmount() {
    let unit = fs::read_to_string(example("veilfs-mount@.service")).unwrap();
    let key = |k: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in the unit"))
            .to_string()
    };
    let (pre, start, stop) = (key("ExecStartPre"), key("ExecStart"), key("ExecStop"));
    // systemd's own check, with the binary where the unit expects one.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("veilfs-mount@Projects-x.service");
        fs::write(&copy, unit.replace("%h/.local/bin/veilfs", common::bin())).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{err}");
    }
    // Its commands, run as systemd would run them for ~/Projects/x.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    fs::create_dir_all(h.join("Projects/x")).unwrap();
    fs::write(h.join("Projects/x/README.md"), "hello\n").unwrap();
    fs::create_dir_all(h.join(".config/veilfs")).unwrap();
    fs::create_dir_all(h.join(".local/state")).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/default.toml"),
        h.join(".config/veilfs/profile.toml"),
    )
    .unwrap();
    let run = |argv: Vec<String>| {
        let mut argv = argv;
        if argv[0].ends_with("/.local/bin/veilfs") {
            argv[0] = common::bin().to_string();
        }
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .env("XDG_DATA_HOME", h.join(".local/share"));
        c
    };
    assert!(
        run(expand(&pre, h, "Projects-x"))
            .status()
            .unwrap()
            .success()
    );
    let mut mount = run(expand(&start, h, "Projects-x"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(mount.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let view = h.join("agent-view/Projects-x");
    let guard = scopeguard(&view);
    assert!(line.starts_with("veilfs: mounted"), "{line}");
    assert_eq!(
        fs::read_to_string(view.join("README.md")).unwrap(),
        "hello\n"
    );
    assert!(
        run(expand(&stop, h, "Projects-x"))
            .status()
            .unwrap()
            .success()
    );
    assert!(mount.wait().unwrap().success());
    drop(guard);
    let audit = fs::read_to_string(h.join(".local/state/veilfs-Projects-x.audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"unmounted\""), "{audit}");
}

/// Unmounts `mp` when dropped, if a failed assertion left it mounted.
fn scopeguard(mp: &Path) -> impl Drop + '_ {
    struct G<'a>(&'a Path);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            if veilfs::is_mount_point(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    G(mp)
}

/// The README's incident runbook, command by command: an agent's second turn goes wrong
/// (a prompt injection deletes files and probes a secret); detect it in the audit trail,
/// contain it with `revoke`, then review, roll back to the last good checkpoint and verify.
#[test]
fn incident_runbook_commands_detect_contain_and_remediate() {
    let profile = "version = 1\nname = \"runbook\"\n[visibility]\ndeny = [\".env*\"]\n\
                   [redaction]\nrule_sets = []\n[write]\nmode = \"snapshot\"\n\
                   [breaker]\nmax_deletes = 0\n";
    let e = common::WriteEnv::new(profile, |s: &Path| {
        fs::create_dir_all(s.join("src")).unwrap();
        fs::write(s.join("src/a.rs"), "a v0\n").unwrap();
        fs::write(s.join("src/b.rs"), "b v0\n").unwrap();
        fs::write(s.join(".env"), "TOKEN=1\n").unwrap();
    });
    let store = e.store();
    let scope = e.scope.path();
    let m = e.mount();
    let mp = m.mp.to_str().unwrap().to_string();
    // Turn 1: a good edit, then the harness's checkpoint.
    fs::write(m.path("src/a.rs"), "a v1\n").unwrap();
    let (ok, out, err) = common::veilfs(&["checkpoint", "--label", "turn-1", &mp]);
    assert!(ok, "{out}{err}");
    let good = common::tree_hash(scope);
    // Turn 2 goes wrong.
    fs::remove_file(m.path("src/b.rs")).unwrap();
    fs::write(m.path("src/a.rs"), "pwned\n").unwrap();
    assert!(fs::write(m.path(".env"), "x").is_err());

    // Detect: `veilfs status`, `veilfs audit --store DIR --denied`, `... --path 'src/**'`.
    let (ok, out, err) = common::veilfs(&["status"]);
    assert!(ok && out.contains(&mp), "{out}{err}");
    let (ok, out, err) = common::veilfs(&["audit", "--store", &store, "--denied"]);
    assert!(ok && out.contains(".env"), "{out}{err}");
    let (ok, out, err) = common::veilfs(&["audit", "--store", &store, "--path", "src/**"]);
    assert!(ok && out.contains("src/b.rs"), "{out}{err}");
    let (ok, out, err) = common::veilfs(&[
        "audit",
        "--store",
        &store,
        "--since",
        "2026-01-01T00:00:00Z",
        "--json",
    ]);
    assert!(ok && out.lines().count() > 3, "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with('{')), "{out}");
    // Contain: `veilfs revoke MOUNTPOINT`.
    let (ok, out, err) = common::veilfs(&["revoke", &mp]);
    assert!(ok && err.contains("revoked"), "{out}{err}");
    drop(m);
    // Remediate: `veilfs log`, `veilfs rollback --to CHECKPOINT --dry-run`, then for real,
    // then `veilfs verify`.
    let (ok, out, err) = common::veilfs(&["log", "--store", &store]);
    assert!(
        ok && out.contains("turn-1") && out.contains("src/b.rs"),
        "{out}{err}"
    );
    let (ok, out, err) = common::veilfs(&["diff", "--store", &store]);
    assert!(ok && out.contains("pwned"), "{out}{err}");
    let (ok, out, err) =
        common::veilfs(&["rollback", "--store", &store, "--to", "turn-1", "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert_ne!(common::tree_hash(scope), good, "a dry run changes nothing");
    let (ok, out, err) = common::veilfs(&["rollback", "--store", &store, "--to", "turn-1"]);
    assert!(ok, "{out}{err}");
    assert_eq!(common::tree_hash(scope), good);
    assert_eq!(
        fs::read_to_string(scope.join("src/a.rs")).unwrap(),
        "a v1\n"
    );
    let (ok, out, err) = common::veilfs(&["verify", "--store", &store]);
    assert!(ok, "{out}{err}");
}
