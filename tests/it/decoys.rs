//! Decoys (`[decoys]`) and virtual entries through real mounts: canary credential files the view
//! shows and the real folder never gets. Listed and readable like real ones, never masked,
//! refused every change, audited as critical when opened, and (when the profile says so)
//! tripping the damage breaker. A visible real file of a decoy's name wins.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{Mount, WriteEnv, tree_hash, veilfs, write_profile};

/// Snapshot mode, the secrets rules on (they must not mask a decoy), credential places hidden
/// as the default profile hides them, decoys at the default paths plus one beside a real
/// directory's files, breaker limits off (the test renames and deletes on purpose).
const PROFILE: &str = r#"
version = 1
name = "decoys"
[visibility]
deny = [".env*", ".aws/", "id_ed25519*"]
[redaction]
rule_sets = ["secrets"]
[write]
mode = "snapshot"
writable = ["**"]
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
[decoys]
enabled = true
paths = [".aws/credentials", ".env.production", ".ssh/id_ed25519", "shown.env", "ops/aws.env"]
"#;

fn seed(s: &Path) {
    fs::create_dir(s.join("src")).unwrap();
    fs::write(s.join("src/main.rs"), "fn main() {}\n").unwrap();
    // A real `.ssh` (visible) holding other files: the decoy key goes inside it.
    fs::create_dir(s.join(".ssh")).unwrap();
    fs::write(s.join(".ssh/known_hosts"), "github.com ssh-ed25519 AAAA\n").unwrap();
    // A real `.env.production` the profile hides: the decoy stands in its place.
    fs::write(s.join(".env.production"), "REAL_SECRET=the-real-one\n").unwrap();
    // A visible real file of a decoy's name: it wins.
    fs::write(s.join("shown.env"), "REAL=1\n").unwrap();
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn decoys_are_listed_readable_unmasked_and_read_only_and_never_reach_the_real_folder() {
    let e = WriteEnv::new(PROFILE, seed);
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    assert_eq!(
        names(&m.path("")),
        [".aws", ".env.production", ".ssh", "ops", "shown.env", "src"]
    );
    assert_eq!(names(&m.path(".aws")), ["credentials"]);
    assert_eq!(names(&m.path(".ssh")), ["id_ed25519", "known_hosts"]);

    // Readable, credential-shaped and not masked (the secrets rules are on).
    let aws = fs::read_to_string(m.path(".aws/credentials")).unwrap();
    assert!(aws.contains("aws_access_key_id = AKIA"), "{aws}");
    assert!(!aws.contains("redacted"), "a decoy was masked: {aws}");
    let env = fs::read_to_string(m.path(".env.production")).unwrap();
    assert!(env.contains("GITHUB_TOKEN=ghp_"), "{env}");
    assert!(
        !env.contains("the-real-one"),
        "the hidden real file leaked: {env}"
    );
    let key = fs::read_to_string(m.path(".ssh/id_ed25519")).unwrap();
    assert!(
        key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "{key}"
    );
    // Its size is what a read gives, as for any file.
    assert_eq!(
        fs::metadata(m.path(".aws/credentials")).unwrap().len(),
        aws.len() as u64
    );
    assert_eq!(
        fs::metadata(m.path(".aws/credentials"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // A visible real file of a decoy's name wins.
    assert_eq!(fs::read_to_string(m.path("shown.env")).unwrap(), "REAL=1\n");

    // Every change of a decoy, or onto its name, is refused.
    let d = m.path(".aws/credentials");
    let acc = libc::EACCES;
    assert_eq!(errno(fs::OpenOptions::new().append(true).open(&d)), acc);
    assert_eq!(
        errno(fs::OpenOptions::new().write(true).truncate(true).open(&d)),
        acc
    );
    assert_eq!(errno(fs::remove_file(&d)), acc);
    assert_eq!(errno(fs::rename(&d, m.path("stolen"))), acc);
    assert_eq!(errno(fs::hard_link(&d, m.path("linked"))), acc);
    assert_eq!(
        errno(fs::set_permissions(&d, fs::Permissions::from_mode(0o644))),
        acc
    );
    assert_eq!(errno(fs::write(m.path(".aws/config"), "x")), acc);
    assert_eq!(errno(fs::create_dir(m.path(".aws/sub"))), acc);
    assert_eq!(errno(fs::remove_dir(m.path(".aws"))), acc);
    assert_eq!(errno(fs::rename(m.path(".aws"), m.path("aws"))), acc);
    // A real file renamed or linked onto a decoy's name: refused, the real folder untouched.
    assert_eq!(
        errno(fs::rename(m.path("src/main.rs"), m.path(".env.production"))),
        acc
    );
    // (A link meets the name the view shows first: EEXIST, before veilfs is asked.)
    assert_eq!(
        errno(fs::hard_link(
            m.path("src/main.rs"),
            m.path(".ssh/id_ed25519")
        )),
        libc::EEXIST
    );
    // Creating one by its name meets the entry the view shows.
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path(".env.production"));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::AlreadyExists);
    drop(m);
    assert_eq!(tree_hash(e.scope.path()), before, "the real folder changed");

    // The opens were critical audit events naming the decoy and the process.
    let (ok, out, err) = veilfs(&["audit", "--store", &e.store()]);
    assert!(ok, "{err}");
    let opened: Vec<&str> = out.lines().filter(|l| l.contains("DECOY OPENED")).collect();
    assert!(
        opened.iter().any(|l| l.contains(".aws/credentials")),
        "{out}"
    );
    assert!(
        opened.iter().any(|l| l.contains(".ssh/id_ed25519")),
        "{out}"
    );
    assert!(out.contains("decoy placed (canary AKIA"), "{out}");
    let (ok, json, _) = veilfs(&["audit", "--store", &e.store(), "--json"]);
    assert!(ok);
    let ev = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v.pointer("/unmapped/veilfs/event").and_then(|e| e.as_str()) == Some("decoy-opened")
        })
        .expect("a decoy-opened event");
    assert_eq!(ev["severity_id"], 5, "{ev}");
    assert!(
        ev.pointer("/actor/process/pid")
            .is_some_and(|p| p.as_u64() > Some(0)),
        "{ev}"
    );
}

/// Renaming the real directory a decoy sits in carries nothing along: the decoy is placed by
/// path, so it shows at the old place again (a virtual directory) and not in the moved one.
#[test]
fn renaming_a_decoys_real_parent_moves_no_decoy() {
    let e = WriteEnv::new(PROFILE, seed);
    let m = e.mount();
    assert!(m.path(".ssh/id_ed25519").exists());
    fs::rename(m.path(".ssh"), m.path("ssh-old")).unwrap();
    assert_eq!(names(&m.path("ssh-old")), ["known_hosts"]);
    assert_eq!(names(&m.path(".ssh")), ["id_ed25519"]);
    drop(m);
    assert_eq!(names(&e.scope.path().join("ssh-old")), ["known_hosts"]);
    assert!(!e.scope.path().join(".ssh").exists());
}

/// With `trip_breaker`, opening a decoy trips the mount: the open itself is served (the
/// canary is what identifies a leak), and every later open and change is refused.
#[test]
fn opening_a_decoy_trips_the_breaker_when_the_profile_says_so() {
    let scope = tempfile::tempdir().unwrap();
    fs::write(scope.path().join("notes.txt"), "hello\n").unwrap();
    fs::write(scope.path().join("later.txt"), "later\n").unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[decoys]\nenabled = true\ntrip_breaker = true\n",
    );
    let m = Mount::start(scope.path(), &["--profile", profile.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(m.path("notes.txt")).unwrap(), "hello\n");
    let _ = fs::read(m.path(".aws/credentials")).unwrap();
    assert_eq!(
        fs::read(m.path("later.txt")).unwrap_err().raw_os_error(),
        Some(libc::EACCES),
        "reads go on after a decoy was opened"
    );
    // A file read before the trip is dropped from the kernel's caches too.
    assert!(
        crate::common::eventually(|| fs::read(m.path("notes.txt")).is_err()),
        "a file cached before the trip is still readable"
    );
    drop(m);
}

#[test]
fn scan_lists_the_decoys_a_profile_would_place() {
    let scope = tempfile::tempdir().unwrap();
    seed(scope.path());
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PROFILE);
    let (_, out, err) = veilfs(&[
        "scan",
        "--profile",
        profile.to_str().unwrap(),
        scope.path().to_str().unwrap(),
    ]);
    for want in [
        "decoy\t.aws/credentials\tplaced",
        "decoy\t.env.production\tplaced",
        "decoy\t.ssh/id_ed25519\tplaced",
        "decoy\tshown.env\tnot placed: a visible real file of this name wins",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}{err}");
    }
}

#[test]
fn a_bad_decoy_path_is_named_by_file_line_and_field() {
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "bad.toml",
        "version = 1\n[decoys]\nenabled = true\npaths = [\"ok\", \"../escape\"]\n",
    );
    let (ok, out, err) = veilfs(&["profile", "check", profile.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("bad.toml:4") && err.contains("decoys.paths[1]"),
        "{err}"
    );
}

/// A real file renamed onto a decoy's name is refused: onto a name the profile does not hide
/// (`ops/aws.env`, in a real `ops/`) it would put a real file in the folder under the decoy's
/// name; onto one it hides, it would replace the hidden real file the agent cannot see.
#[test]
fn renaming_a_real_file_onto_a_decoys_name_is_refused() {
    let e = WriteEnv::new(PROFILE, seed);
    fs::create_dir(e.scope.path().join("ops")).unwrap();
    let m = e.mount();
    assert!(m.path("ops/aws.env").exists());
    assert_eq!(
        errno(fs::rename(m.path("src/main.rs"), m.path("ops/aws.env"))),
        libc::EACCES
    );
    assert!(!e.scope.path().join("ops/aws.env").exists());
    assert_eq!(
        errno(fs::rename(m.path("src/main.rs"), m.path(".env.production"))),
        libc::EACCES
    );
    assert_eq!(
        errno(fs::rename(m.path("src/main.rs"), m.path(".ssh/id_ed25519"))),
        libc::EACCES
    );
    drop(m);
    assert_eq!(
        fs::read_to_string(e.scope.path().join(".env.production")).unwrap(),
        "REAL_SECRET=the-real-one\n"
    );
    assert!(e.scope.path().join("src/main.rs").exists());
}
