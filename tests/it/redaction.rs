//! Redacted reads through a real mount: whatever way the agent reads a file, it never gets a
//! byte of a secret, and sizes and offsets stay true.

use crate::common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{Mount, bin, write_profile};

// Fake values made up for these tests; each matches a shipped rule.
const AWS_ID: &str = "AKIAQ7XZ4RTY2MN3KBWP";
const GH: &str = "ghp_Zx8Kq2Lm9Nv4Bw7Rt1Yp5Hs3Jd6Fg0Ca2Eu9";
const EMAIL: &str = "alice.smith@example-corp.com";
const PG_PASS: &str = "S3cr3tPassw0rd!x";
const KEY_BODY: &str = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";

fn config_text() -> String {
    let mut s = String::new();
    for i in 0..200 {
        s.push_str(&format!(
            "# padding line {i} so secrets sit at many offsets\n"
        ));
        if i % 50 == 7 {
            s.push_str(&format!("aws_access_key_id: {AWS_ID}\n"));
            s.push_str(&format!("github_token: {GH}\n"));
            s.push_str(&format!("contact: {EMAIL}\n"));
            s.push_str(&format!(
                "db_url: postgres://app:{PG_PASS}@db.internal:5432/app\n"
            ));
            s.push_str("password: ${DB_PASSWORD}\n");
        }
    }
    s.push_str("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    s.push_str(KEY_BODY);
    s.push_str("\nQyNTUxOQAAACDk3n4L5fTq8m2XyZ1cV9bR7aN0pQ6wE4sH8jK2lM3oPQAAAJgAAAAA\n");
    s.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    s
}

const SECRETS: [&str; 5] = [AWS_ID, GH, EMAIL, PG_PASS, KEY_BODY];

fn assert_no_secret(data: &[u8], what: &str) {
    let text = String::from_utf8_lossy(data);
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaked {s}");
    }
    // No 8-byte piece of any secret either (a read that cuts a secret in half).
    for s in SECRETS {
        for w in s.as_bytes().windows(12) {
            assert!(
                !data.windows(12).any(|d| d == w),
                "{what} leaked a piece of {s}"
            );
        }
    }
}

fn masked_view(file: &Path) -> Vec<u8> {
    let out = Command::new(bin())
        .arg("redact")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn scope() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("cfg")).unwrap();
    fs::write(d.path().join("cfg/service.yaml"), config_text()).unwrap();
    fs::write(
        d.path().join("clean.rs"),
        "fn main() { let token_parser = 1; }\n",
    )
    .unwrap();
    d
}

#[test]
fn every_read_pattern_sees_only_the_masked_view() {
    let s = scope();
    let real = fs::read(s.path().join("cfg/service.yaml")).unwrap();
    let view = masked_view(&s.path().join("cfg/service.yaml"));
    assert_eq!(view.len(), real.len(), "masking must keep the length");
    assert_ne!(view, real);
    assert_no_secret(&view, "redact CLI");
    assert!(String::from_utf8_lossy(&view).contains("<redacted:"));
    assert!(String::from_utf8_lossy(&view).contains("${DB_PASSWORD}"));

    let m = Mount::start(s.path(), &[]);
    let p = m.path("cfg/service.yaml");
    assert_eq!(fs::metadata(&p).unwrap().len(), real.len() as u64);
    assert_eq!(fs::read(&p).unwrap(), view);
    assert_eq!(
        fs::read(m.path("clean.rs")).unwrap(),
        fs::read(s.path().join("clean.rs")).unwrap()
    );

    // pread at odd offsets and lengths, including ones that cut secrets in half.
    let f = fs::File::open(&p).unwrap();
    let mut off = 0usize;
    let mut len = 1usize;
    while off < real.len() {
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        assert_eq!(
            &buf[..n],
            &view[off..(off + n).min(view.len())],
            "pread {off}+{len}"
        );
        off += 7 + len / 3;
        len = (len * 5 + 3) % 97 + 1;
    }
    // Byte-at-a-time reads through a small buffer.
    let mut r = std::io::BufReader::with_capacity(3, fs::File::open(&p).unwrap());
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, view);

    // mmap sees the masked view too.
    let mapped = common::mmap_read(&f, real.len());
    assert_eq!(mapped, view);

    // Tools: grep -r finds no secret, cp -a and tar copy only the masked view.
    let grep = Command::new("grep")
        .args(["-r", "-F", GH])
        .arg(&m.mp)
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "grep found the token");
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&m.mp)
        .arg(out.path().join("copy"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        fs::read(out.path().join("copy/cfg/service.yaml")).unwrap(),
        view
    );
    let tar = Command::new("tar")
        .arg("cf")
        .arg("-")
        .arg("-C")
        .arg(&m.mp)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert_no_secret(&tar.stdout, "tar");
}

#[test]
fn unscannable_files_are_refused_unless_the_profile_allows_them() {
    let s = scope();
    // Compressed content (a zstd frame): its text is not in its bytes.
    let mut bin_data = b"\x28\xb5\x2f\xfd".to_vec();
    bin_data.extend([0u8; 96]);
    bin_data.extend_from_slice(GH.as_bytes());
    fs::write(s.path().join("blob.dat"), &bin_data).unwrap();
    fs::write(s.path().join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let m = Mount::start(s.path(), &[]);
    let e = fs::read(m.path("blob.dat")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    assert_eq!(fs::read(m.path("logo.png")).unwrap().len(), 16);
}

#[test]
fn no_open_mode_refuses_unscannable_files_at_read_and_per_open_mode_at_open() {
    let s = scope();
    let mut bin_data = b"\x28\xb5\x2f\xfd".to_vec();
    bin_data.extend([0u8; 96]);
    bin_data.extend_from_slice(GH.as_bytes());
    fs::write(s.path().join("blob.dat"), &bin_data).unwrap();
    // Default profile: the kernel opens files without asking veilfs (no-open mode), so the
    // refusal comes with the first read, and no byte of the file is ever served.
    {
        let m = Mount::start(s.path(), &[]);
        let mut f = fs::File::open(m.path("blob.dat")).unwrap();
        let e = f.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        let e = f.read_at(&mut [0u8; 16], 100).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
    // `no_open = false` asks veilfs at every open, which refuses the open itself.
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\nname = \"t\"\n[redaction]\nrule_sets = [\"secrets\"]\n[cache]\nno_open = false\n",
    );
    let m = Mount::start(s.path(), &["--profile", profile.to_str().unwrap()]);
    let e = fs::File::open(m.path("blob.dat")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
}

#[test]
fn a_cached_clean_file_that_gains_a_secret_is_masked_through_the_kept_cache() {
    // Default profile: long TTLs, contents kept in the kernel's page cache across opens, and
    // the watcher dropping them when the real file changes.
    let s = scope();
    let m = Mount::start(s.path(), &[]);
    let before = fs::read(s.path().join("clean.rs")).unwrap();
    for _ in 0..3 {
        assert_eq!(fs::read(m.path("clean.rs")).unwrap(), before);
    }
    // Same size as before, so only the contents tell the versions apart.
    let mut secret = format!("const T: &str = \"{GH}\";\n").into_bytes();
    secret.resize(before.len().max(secret.len()), b' ');
    let mut padded = before.clone();
    padded.resize(secret.len(), b' ');
    if padded != before {
        fs::write(s.path().join("clean.rs"), &padded).unwrap();
        assert!(common::eventually(
            || fs::read(m.path("clean.rs")).unwrap() == padded
        ));
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .open(s.path().join("clean.rs"))
        .unwrap();
    f.write_all_at(&secret, 0).unwrap();
    drop(f);
    assert!(common::eventually(|| {
        let got = fs::read(m.path("clean.rs")).unwrap();
        assert_no_secret(&got, "kept cache");
        String::from_utf8_lossy(&got).contains("<redacted:github")
    }));
    // mmap sees the masked view too.
    let f = fs::File::open(m.path("clean.rs")).unwrap();
    let mapped = common::mmap_read(&f, secret.len());
    assert_no_secret(&mapped, "mmap after change");
}

#[test]
fn scan_results_are_saved_for_the_next_mount_and_never_trusted_for_changed_files() {
    let s = scope();
    let store = tempfile::tempdir().unwrap();
    let st = store.path().join("s");
    let args = ["-v", "--store", st.to_str().unwrap()];
    let m = Mount::start(s.path(), &args);
    assert_eq!(
        fs::read(m.path("clean.rs")).unwrap(),
        fs::read(s.path().join("clean.rs")).unwrap()
    );
    assert_no_secret(
        &fs::read(m.path("cfg/service.yaml")).unwrap(),
        "first mount",
    );
    let (status, _) = m.stop();
    assert!(status.success());
    // The clean verdict is saved (masked files are re-scanned: only clean/binary are kept).
    let saved = st.join("scan-cache");
    assert_eq!(fs::metadata(&saved).unwrap().len(), 16 + 32 + 49 + 32);

    // Unchanged: the next mount loads it.
    let m = Mount::start(s.path(), &args);
    assert!(fs::read(m.path("clean.rs")).is_ok());
    let (_, err) = m.stop();
    assert!(
        err.contains("loaded saved scan results") && err.contains("n=1"),
        "{err}"
    );

    // Changed while unmounted: the saved verdict is for another identity, so it is re-scanned.
    fs::write(
        s.path().join("clean.rs"),
        format!("const T: &str = \"{GH}\";\n"),
    )
    .unwrap();
    let m = Mount::start(s.path(), &args);
    let got = fs::read(m.path("clean.rs")).unwrap();
    assert!(
        String::from_utf8_lossy(&got).contains("<redacted:github"),
        "{got:?}"
    );
    assert_no_secret(&got, "file changed while unmounted");
    drop(m);

    // A damaged file is ignored, not trusted.
    fs::write(&saved, b"veilfs-scans-v1\n garbage").unwrap();
    let m = Mount::start(s.path(), &args);
    assert_no_secret(&fs::read(m.path("clean.rs")).unwrap(), "damaged cache");
    let (_, err) = m.stop();
    assert!(err.contains("ignoring saved scan results"), "{err}");
}

#[test]
fn utf16_text_is_scanned_and_masked_in_place() {
    let s = scope();
    let text = format!("token = {GH}\r\nname = ok\r\n");
    let mut data = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        data.extend_from_slice(&u.to_le_bytes());
    }
    fs::write(s.path().join("win.ini"), &data).unwrap();
    let m = Mount::start(s.path(), &[]);
    let got = fs::read(m.path("win.ini")).unwrap();
    assert_eq!(got.len(), data.len());
    let units: Vec<u16> = got[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let decoded = String::from_utf16_lossy(&units);
    assert!(!decoded.contains(GH), "{decoded}");
    assert!(decoded.contains("<redacted:"), "{decoded}");
    assert!(decoded.contains("name = ok"));
}

#[test]
fn a_file_that_gains_a_secret_on_disk_is_rescanned() {
    let s = scope();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\nname = \"t\"\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\n[cache]\nttl_ms = 0\n",
    );
    let m = Mount::start(s.path(), &["--profile", profile.to_str().unwrap()]);
    let before = fs::read(m.path("clean.rs")).unwrap();
    assert_eq!(before, fs::read(s.path().join("clean.rs")).unwrap());
    fs::write(
        s.path().join("clean.rs"),
        format!("const T: &str = \"{GH}\";\n"),
    )
    .unwrap();
    let after = fs::read(m.path("clean.rs")).unwrap();
    assert_no_secret(&after, "rescanned file");
    assert!(String::from_utf8_lossy(&after).contains("<redacted:github"));
}

#[test]
fn a_redacted_file_opened_for_writing_shows_only_its_view_and_is_unchanged_by_open() {
    // Write-opens of a masked file edit a scratch copy of its view (tests/it/masked_edit.rs has
    // the merges); a handle that can write must never read the real secret either.
    let s = scope();
    let store = tempfile::tempdir().unwrap();
    let before = fs::read(s.path().join("cfg/service.yaml")).unwrap();
    let m = Mount::start(
        s.path(),
        &[
            "--mode",
            "snapshot",
            "--store",
            store.path().join("s").to_str().unwrap(),
        ],
    );
    let view = fs::read(m.path("cfg/service.yaml")).unwrap();
    assert_ne!(view, before);
    for opts in [
        fs::OpenOptions::new().write(true).clone(),
        fs::OpenOptions::new().read(true).write(true).clone(),
        fs::OpenOptions::new().read(true).append(true).clone(),
    ] {
        let mut f = opts.open(m.path("cfg/service.yaml")).unwrap();
        let mut got = Vec::new();
        if std::io::Read::read_to_end(&mut f, &mut got).is_ok() {
            assert_eq!(got, view, "a writable handle reads the view");
        }
    }
    // Clean files stay writable in snapshot mode.
    fs::write(m.path("clean.rs"), "fn main() {}\n").unwrap();
    drop(m);
    assert_eq!(fs::read(s.path().join("cfg/service.yaml")).unwrap(), before);
    assert_eq!(
        fs::read_to_string(s.path().join("clean.rs")).unwrap(),
        "fn main() {}\n"
    );
}

#[test]
fn scan_reports_findings_by_line_and_rule_never_the_value() {
    let s = scope();
    let out = Command::new(bin())
        .arg("scan")
        .arg(s.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cfg/service.yaml:9:aws-access-key-id"),
        "{text}"
    );
    assert!(text.contains("github-pat"), "{text}");
    assert_no_secret(&out.stdout, "scan output");
    let out = Command::new(bin())
        .args(["scan", "--json"])
        .arg(s.path())
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&out.stdout);
    let line = first.lines().find(|l| l.contains("\"rule\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(v["line"].as_u64().unwrap() > 0);
    assert_no_secret(&out.stdout, "scan --json");
}

#[test]
fn a_profile_adds_its_own_rule_file_and_bad_rules_are_refused_with_file_line_and_rule() {
    let s = scope();
    fs::write(
        s.path().join("orders.txt"),
        "order ACME-123456 shipped\nnote: fine\n",
    )
    .unwrap();
    let pdir = tempfile::tempdir().unwrap();
    fs::write(
        pdir.path().join("company.toml"),
        r#"version = 1
name = "company"
description = "in-house order ids"
[[rules]]
id = "acme-order-id"
description = "ACME order id"
regex = '''ACME-[0-9]{6}'''
keywords = ["acme-"]
"#,
    )
    .unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\nname = \"company\"\n[redaction]\nrule_sets = [\"secrets\"]\nrule_files = [\"company.toml\"]\n",
    );
    let check = Command::new(bin())
        .args(["profile", "check"])
        .arg(&profile)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let m = Mount::start(s.path(), &["--profile", profile.to_str().unwrap()]);
    let got = fs::read_to_string(m.path("orders.txt")).unwrap();
    assert!(!got.contains("ACME-123456"), "{got}");
    assert!(got.starts_with("order <redacted:a shipped"), "{got}");
    assert!(got.ends_with("shipped\nnote: fine\n"));
    drop(m);

    // A regex that does not compile: profile check and mount name the file, line and rule.
    fs::write(
        pdir.path().join("company.toml"),
        "version = 1\nname = \"company\"\n[[rules]]\nid = \"broken\"\ndescription = \"x\"\nregex = '''ACME-[0-9'''\nkeywords = [\"acme\"]\n",
    )
    .unwrap();
    let check = Command::new(bin())
        .args(["profile", "check"])
        .arg(&profile)
        .output()
        .unwrap();
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("company.toml:6") && err.contains("broken"),
        "{err}"
    );
    let mp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["mount", "--profile", profile.to_str().unwrap()])
        .arg(s.path())
        .arg(mp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken"));
    assert!(!veilfs::is_mount_point(&mp.path().canonicalize().unwrap()));
}
