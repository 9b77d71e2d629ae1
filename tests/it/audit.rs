//! The audit trail through real mounts: what an incident responder (or a SIEM) reads after an
//! agent's session, and what `veilfs verify` says when someone edited it.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Mount, veilfs, write_profile};
use serde_json::Value;

// Made up for these tests; each matches a shipped rule.
const AWS_ID: &str = "AKIAQ7XZ4RTY2MN3KBWP";
const GH: &str = "ghp_Zx8Kq2Lm9Nv4Bw7Rt1Yp5Hs3Jd6Fg0Ca2Eu9";

const WRITABLE: &str = r#"
version = 1
name = "audit-test"
[redaction]
rule_sets = ["secrets"]
[write]
mode = "snapshot"
writable = ["src/**"]
"#;

/// OCSF 1.3 File System Activity (class 1001): the attributes a SIEM requires, as JSON
/// pointers (the class's required ones plus the objects' required parts we fill).
const REQUIRED: [&str; 17] = [
    "/class_uid",
    "/category_uid",
    "/activity_id",
    "/type_uid",
    "/time",
    "/severity_id",
    "/status_id",
    "/disposition_id",
    "/metadata/version",
    "/metadata/product/name",
    "/actor/process/pid",
    "/actor/process/name",
    "/actor/user/uid",
    "/device/type_id",
    "/file/path",
    "/file/name",
    "/file/type_id",
];

struct Env {
    scope: tempfile::TempDir,
    store: tempfile::TempDir,
    pdir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let scope = tempfile::tempdir().unwrap();
        fs::create_dir_all(scope.path().join("src")).unwrap();
        fs::write(
            scope.path().join("config.yaml"),
            format!("name: app\naws_access_key_id: {AWS_ID}\ngithub_token: {GH}\n"),
        )
        .unwrap();
        fs::write(scope.path().join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(scope.path().join("README.md"), "# app\n").unwrap();
        let pdir = tempfile::tempdir().unwrap();
        write_profile(pdir.path(), "p.toml", WRITABLE);
        Env {
            scope,
            store: tempfile::tempdir().unwrap(),
            pdir,
        }
    }

    fn store(&self) -> String {
        self.store.path().join("s").display().to_string()
    }

    fn key(&self) -> String {
        let p = self.pdir.path().join("audit.key");
        if !p.exists() {
            // Hex form; the raw 32-byte form is covered by the unit tests.
            fs::write(&p, "11".repeat(32)).unwrap();
        }
        p.display().to_string()
    }

    /// A snapshot mount (redaction from the built-in rules) with extra args.
    fn mount(&self, extra: &[&str]) -> Mount {
        let profile = self.pdir.path().join("p.toml");
        let store = self.store();
        let mut args = vec!["--profile", profile.to_str().unwrap(), "--store", &store];
        args.extend_from_slice(extra);
        Mount::start(self.scope.path(), &args)
    }

    /// The one audit file of the store.
    fn audit_file(&self) -> PathBuf {
        let dir = Path::new(&self.store()).join("audit");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.pop().unwrap()
    }

    fn events(&self) -> Vec<Value> {
        fs::read_to_string(self.audit_file())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v.get("class_uid").is_some())
            .collect()
    }
}

fn ev<'a>(v: &'a Value, p: &str) -> &'a Value {
    v.pointer(p).unwrap_or(&Value::Null)
}

#[test]
fn a_masked_read_is_an_open_event_with_its_rule_ids_the_readers_pid_and_no_secret() {
    let e = Env::new();
    let m = e.mount(&[]);
    let seen = fs::read_to_string(m.path("config.yaml")).unwrap();
    assert!(!seen.contains(AWS_ID), "the view is masked");
    m.stop();
    let events = e.events();
    let open = events
        .iter()
        .find(|v| ev(v, "/unmapped/veilfs/path") == "config.yaml")
        .expect("an event for config.yaml");
    assert_eq!(ev(open, "/class_uid"), 1001);
    assert_eq!(ev(open, "/activity_id"), 14, "{open}");
    assert_eq!(ev(open, "/type_uid"), 100114);
    assert_eq!(ev(open, "/disposition_id"), 1);
    assert_eq!(ev(open, "/unmapped/veilfs/masked"), true);
    assert!(ev(open, "/unmapped/veilfs/redactions").as_u64().unwrap() >= 2);
    let rules: Vec<&str> = ev(open, "/unmapped/veilfs/rules")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rules.iter().any(|r| r.contains("aws")) && rules.iter().any(|r| r.contains("github")),
        "{rules:?}"
    );
    assert_eq!(
        ev(open, "/actor/process/pid").as_u64(),
        Some(std::process::id() as u64),
        "the test's own read is attributed to the test process"
    );
    assert_eq!(ev(open, "/actor/user/uid"), "0");
    let whole = fs::read(e.audit_file()).unwrap();
    for secret in [AWS_ID, GH] {
        for piece in secret.as_bytes().windows(10) {
            assert!(
                !whole.windows(10).any(|w| w == piece),
                "the audit file holds a piece of {secret}"
            );
        }
    }
}

#[test]
fn a_denied_write_is_a_blocked_event_with_its_reason() {
    let e = Env::new();
    let m = e.mount(&[]);
    let err = fs::write(m.path("README.md"), "changed\n").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    fs::write(m.path("src/main.rs"), "fn main() { }\n").unwrap();
    m.stop();
    let events = e.events();
    let denied: Vec<&Value> = events
        .iter()
        .filter(|v| ev(v, "/disposition_id") == 2)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    let d = denied[0];
    assert_eq!(ev(d, "/unmapped/veilfs/path"), "README.md");
    assert_eq!(ev(d, "/status_id"), 2);
    assert_eq!(ev(d, "/disposition"), "Blocked");
    assert_eq!(ev(d, "/activity_id"), 3, "a write-open is an Update");
    assert!(
        ev(d, "/status_detail")
            .as_str()
            .unwrap()
            .contains("not writable"),
        "{d}"
    );
    assert_eq!(
        ev(d, "/actor/process/pid").as_u64(),
        Some(std::process::id() as u64)
    );
    // The allowed write-open of src/main.rs is there too, allowed.
    assert!(
        events
            .iter()
            .any(|v| ev(v, "/unmapped/veilfs/path") == "src/main.rs"
                && ev(v, "/disposition_id") == 1
                && ev(v, "/unmapped/veilfs/writable") == true)
    );
}

#[test]
fn veilfs_audit_denied_shows_only_refusals() {
    let e = Env::new();
    let m = e.mount(&[]);
    fs::read(m.path("src/main.rs")).unwrap();
    assert!(fs::write(m.path("new.txt"), "x").is_err());
    m.stop();
    let store = e.store();
    let (ok, all, err) = veilfs(&["audit", "--store", &store]);
    assert!(ok, "{err}");
    assert!(
        all.contains("src/main.rs") && all.contains("new.txt"),
        "{all}"
    );
    let (ok, out, err) = veilfs(&["audit", "--store", &store, "--denied"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert!(
        rows[0].contains("new.txt") && rows[0].contains("Blocked"),
        "{out}"
    );
    let (ok, json, err) = veilfs(&["audit", "--store", &store, "--denied", "--json"]);
    assert!(ok, "{err}");
    for l in json.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(ev(&v, "/disposition_id"), 2, "{l}");
    }
    let pid = std::process::id().to_string();
    let (ok, mine, _) = veilfs(&["audit", "--store", &store, "--pid", &pid, "--path", "src/*"]);
    assert!(ok);
    assert!(
        mine.contains("src/main.rs") && !mine.contains("new.txt"),
        "{mine}"
    );
}

#[test]
fn every_event_has_the_required_fields_of_ocsf_file_system_activity() {
    let e = Env::new();
    let copy = e.pdir.path().join("siem.jsonl");
    let m = e.mount(&["--audit-log", copy.to_str().unwrap()]);
    fs::read(m.path("config.yaml")).unwrap();
    fs::write(m.path("src/new.rs"), "\n").unwrap();
    fs::set_permissions(m.path("src/new.rs"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(m.path("src/new.rs"), m.path("src/old.rs")).unwrap();
    fs::create_dir(m.path("src/d")).unwrap();
    fs::remove_dir(m.path("src/d")).unwrap();
    fs::remove_file(m.path("src/old.rs")).unwrap();
    let _ = fs::write(m.path("top.txt"), "x");
    m.stop();
    let events = e.events();
    let mut activities: Vec<u64> = Vec::new();
    for v in &events {
        for p in REQUIRED {
            assert!(
                v.pointer(p).is_some_and(|x| !x.is_null()),
                "{p} missing in {v}"
            );
        }
        let (class, act) = (
            ev(v, "/class_uid").as_u64().unwrap(),
            ev(v, "/activity_id").as_u64().unwrap(),
        );
        assert_eq!((class, ev(v, "/category_uid").as_u64()), (1001, Some(1)));
        assert_eq!(ev(v, "/type_uid").as_u64(), Some(class * 100 + act), "{v}");
        activities.push(act);
    }
    // Mount, Open, Create, Set Security (chmod), Rename, Delete, Create blocked, Unmount.
    for want in [12, 14, 1, 7, 5, 4, 13] {
        assert!(activities.contains(&want), "{want} not in {activities:?}");
    }
    let rename = events.iter().find(|v| ev(v, "/activity_id") == 5).unwrap();
    assert!(
        ev(rename, "/file_result/path")
            .as_str()
            .unwrap()
            .ends_with("src/old.rs"),
        "{rename}"
    );
    // The --audit-log copy holds the same lines.
    assert_eq!(
        fs::read_to_string(&copy).unwrap(),
        fs::read_to_string(e.audit_file()).unwrap()
    );
}

#[test]
fn an_edited_audit_line_is_named_by_verify() {
    let e = Env::new();
    let key = e.key();
    let m = e.mount(&["--audit-key", &key]);
    fs::read(m.path("README.md")).unwrap();
    fs::read(m.path("src/main.rs")).unwrap();
    assert!(fs::write(m.path("new.txt"), "x").is_err());
    m.stop();
    let store = e.store();
    let (ok, out, err) = veilfs(&["verify", "--store", &store, "--audit-key", &key]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("signed"), "{out}");
    // Someone hides that README.md was read: line 2 is the open of README.md.
    let f = e.audit_file();
    let text = fs::read_to_string(&f).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].contains("README.md"), "{}", lines[1]);
    let edited = text.replacen("README.md", "LICENSE.md", 2);
    fs::write(&f, edited).unwrap();
    let (ok, out, _) = veilfs(&["verify", "--store", &store, "--audit-key", &key]);
    assert!(!ok, "{out}");
    // The edit is found at the next line, whose `prev` no longer matches line 2.
    let name = format!("{}:3:", f.display());
    assert!(
        out.contains(&name) && out.contains("hash chain broken"),
        "{out}"
    );
    // Even without a key the chain names it.
    let (ok, out, _) = veilfs(&["verify", "--store", &store]);
    assert!(!ok && out.contains(&name), "{out}");
}

#[test]
fn a_bad_signature_is_caught_by_verify() {
    let e = Env::new();
    let key = e.key();
    let m = e.mount(&["--audit-key", &key]);
    fs::read(m.path("README.md")).unwrap();
    m.stop();
    let store = e.store();
    // Someone else's key does not verify the trail.
    let other = "22".repeat(32);
    let other_pub = {
        let p = e.pdir.path().join("other.key");
        fs::write(&p, &other).unwrap();
        p
    };
    let (ok, out, _) = veilfs(&[
        "verify",
        "--store",
        &store,
        "--audit-key",
        other_pub.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("bad signature"), "{out}");
    // A forged signature on the last line (the chain itself still holds).
    let f = e.audit_file();
    let text = fs::read_to_string(&f).unwrap();
    let n = text.lines().count();
    let last = text.lines().last().unwrap();
    let v: Value = serde_json::from_str(last).unwrap();
    let sig = ev(&v, "/veilfs_signature/sig").as_str().unwrap();
    let forged = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    fs::write(&f, text.replace(sig, &forged)).unwrap();
    let (ok, out, _) = veilfs(&["verify", "--store", &store, "--audit-key", &key]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}:{n}:", f.display())) && out.contains("bad signature"),
        "{out}"
    );
    // Dropping the signature line entirely leaves events unsigned: reported, not silent.
    let stripped: String = text.lines().take(n - 1).map(|l| format!("{l}\n")).collect();
    fs::write(&f, stripped).unwrap();
    let (ok, out, _) = veilfs(&["verify", "--store", &store, "--audit-key", &key]);
    assert!(!ok && out.contains("no signature"), "{out}");
}

#[test]
fn a_rollback_is_recorded_in_the_signed_trail() {
    let e = Env::new();
    let key = e.key();
    let m = e.mount(&["--audit-key", &key]);
    fs::write(m.path("src/main.rs"), "fn main() { panic!() }\n").unwrap();
    m.stop();
    let session = e
        .audit_file()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let store = e.store();
    let (ok, out, err) = veilfs(&[
        "rollback",
        "--store",
        &store,
        "--session",
        &session,
        "--audit-key",
        &key,
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        fs::read_to_string(e.scope.path().join("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    let (ok, out, err) = veilfs(&["audit", "--store", &store]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("Rollback"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(&session), "{row}");
    let (ok, out, err) = veilfs(&["verify", "--store", &store, "--audit-key", &key]);
    assert!(ok && out.contains("signed"), "{out}{err}");
}
