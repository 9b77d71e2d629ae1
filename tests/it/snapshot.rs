//! Snapshot mode through a real mount: every change is captured before it happens, and
//! `veilfs rollback` returns the folder exactly to its state before the session, even after the
//! mount process was killed with SIGKILL in the middle of a write-heavy workload.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use common::{Mount, WriteEnv, tree_hash, veilfs, write_profile};

const WRITABLE: &str = r#"
version = 1
name = "test-snapshot"
description = "snapshot writes everywhere visible"
[visibility]
deny = [".env*", "secret-dir/"]
[redaction]
rule_sets = []
[write]
mode = "snapshot"
"#;

fn seed(s: &Path) {
    fs::create_dir_all(s.join("src/nested")).unwrap();
    fs::create_dir_all(s.join("docs")).unwrap();
    fs::create_dir_all(s.join("secret-dir")).unwrap();
    fs::write(s.join("src/main.rs"), "fn main() {}\n").unwrap();
    fs::write(s.join("src/nested/lib.rs"), "pub fn f() {}\n").unwrap();
    fs::write(s.join("docs/a.md"), "# A\n".repeat(100)).unwrap();
    fs::write(s.join("docs/b.md"), "# B\n").unwrap();
    fs::write(s.join(".env"), "X=1\n").unwrap();
    fs::write(s.join("secret-dir/k"), "k\n").unwrap();
    fs::set_permissions(s.join("docs/b.md"), fs::Permissions::from_mode(0o640)).unwrap();
}

fn env() -> WriteEnv {
    WriteEnv::new(WRITABLE, seed)
}

/// What an agent typically does: edit, append, create, delete, rename, chmod, mkdir, symlink.
fn agent_session(mp: &Path) {
    fs::write(
        mp.join("src/main.rs"),
        "fn main() { println!(\"changed\"); }\n",
    )
    .unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(mp.join("docs/a.md"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    fs::write(mp.join("new.txt"), "created\n").unwrap();
    fs::create_dir(mp.join("newdir")).unwrap();
    fs::write(mp.join("newdir/inner.txt"), "inner\n").unwrap();
    fs::remove_file(mp.join("docs/b.md")).unwrap();
    fs::rename(mp.join("src/nested"), mp.join("src/moved")).unwrap();
    fs::write(mp.join("src/moved/lib.rs"), "pub fn g() {}\n").unwrap();
    fs::set_permissions(mp.join("src/main.rs"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("main.rs", mp.join("src/link")).unwrap();
    fs::rename(mp.join("new.txt"), mp.join("docs/a.md")).unwrap();
    // Rename, then write at the new name and re-create the old one: nothing was copied at the
    // rename, so the write must capture what it overwrites.
    fs::rename(mp.join("src/moved/lib.rs"), mp.join("src/moved/lib2.rs")).unwrap();
    fs::write(mp.join("src/moved/lib2.rs"), "overwritten\n").unwrap();
    fs::write(mp.join("src/moved/lib.rs"), "a new file at the old name\n").unwrap();
    fs::rename(mp.join("src/moved"), mp.join("src/again")).unwrap();
}

#[test]
fn rollback_restores_the_exact_tree_after_a_session() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    agent_session(&m.mp);
    // Hidden paths stay hidden and cannot be created or replaced.
    assert!(fs::write(m.path(".env"), "Y=2\n").is_err());
    assert!(fs::rename(m.path("docs/a.md"), m.path(".env.local")).is_err());
    let (st, _) = m.stop();
    assert!(st.success());
    assert_eq!(
        fs::read_to_string(e.scope.path().join("src/main.rs")).unwrap(),
        "fn main() { println!(\"changed\"); }\n"
    );
    assert_eq!(
        fs::read_to_string(e.scope.path().join(".env")).unwrap(),
        "X=1\n"
    );
    assert_ne!(tree_hash(e.scope.path()), before);

    let (ok, out, err) = veilfs(&["log", "--store", &e.store()]);
    assert!(ok, "{err}");
    assert!(out.contains("snapshot"), "{out}");
    let (ok, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("src/main.rs") && out.contains("changed"),
        "{out}"
    );
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store(), "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert_ne!(
        tree_hash(e.scope.path()),
        before,
        "dry run changed the tree"
    );
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "rollback: {out}{err}");
    let (ok, out, err) = veilfs(&["verify", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
}

#[test]
fn a_file_that_cannot_be_snapshotted_is_diverted_to_the_overlay() {
    let e = env();
    let big = e.scope.path().join("big.bin");
    fs::write(&big, vec![7u8; 4096]).unwrap();
    let profile = write_profile(
        e.pdir.path(),
        "small.toml",
        &format!("{WRITABLE}snapshot_max_size = 1024\n"),
    );
    let args = [
        "--profile",
        profile.to_str().unwrap(),
        "--store",
        &e.store(),
    ];
    let m = Mount::start(e.scope.path(), &args);
    // Above snapshot_max_size: the write goes to a copy; the agent sees its own change.
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("big.bin"))
        .unwrap()
        .write_all(b"AGENT")
        .unwrap();
    let mut want = vec![7u8; 4096];
    want[..5].copy_from_slice(b"AGENT");
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), want);
    assert_eq!(fs::metadata(m.path("big.bin")).unwrap().len(), 4096);
    // Truncation reaches the copy too; removing or renaming it is refused.
    fs::OpenOptions::new()
        .write(true)
        .open(m.path("big.bin"))
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(fs::metadata(m.path("big.bin")).unwrap().len(), 10);
    assert!(fs::remove_file(m.path("big.bin")).is_err());
    assert!(fs::rename(m.path("big.bin"), m.path("b2")).is_err());
    // Small files are still snapshotted and written in place.
    fs::write(m.path("docs/b.md"), "small edit\n").unwrap();
    drop(m);
    assert_eq!(
        fs::read(&big).unwrap(),
        vec![7u8; 4096],
        "the real file was touched"
    );
    assert_eq!(
        fs::read_to_string(e.scope.path().join("docs/b.md")).unwrap(),
        "small edit\n"
    );
    let (ok, out, err) = veilfs(&["log", "--store", &e.store(), "--json"]);
    assert!(ok, "{err}");
    let (_, sessions, _) = veilfs(&["log", "--store", &e.store()]);
    assert!(!sessions.is_empty(), "{out}");

    // A remount (after the process is gone) serves the diverted copy again.
    let m = Mount::start(e.scope.path(), &args);
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), &want[..10]);
    // The store is busy while the mount runs.
    let (ok, _, _) = veilfs(&["commit", "--store", &e.store()]);
    assert!(!ok, "commit while mounted");
    drop(m);
    assert_eq!(fs::read(&big).unwrap(), vec![7u8; 4096]);

    // diff shows the diverted change; commit applies it (pre-image stored first).
    let (ok, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(ok && out.contains("big.bin"), "{out}{err}");
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(fs::read(&big).unwrap(), &want[..10]);
}

/// Runs a write-heavy workload in a child shell against the mount, kills the mount process
/// with SIGKILL once the workload has made `after` changes, then checks that the store
/// verifies and rollback restores the exact original tree.
fn crash_once(after: usize, seedn: u64) {
    let e = env();
    // One large file too, so a kill can land in the middle of its capture or rewrite.
    fs::write(e.scope.path().join("large.bin"), vec![3u8; 8 << 20]).unwrap();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let script = format!(
        r#"set -u
cd "{mp}"
i=0
while :; do
  i=$((i+1))
  echo "line $i" >> docs/a.md
  echo "file $i" > "f$i.txt"
  [ $((i % 3)) -eq 0 ] && mv "f$i.txt" "src/g$i.txt"
  [ $((i % 4)) -eq 0 ] && rm -f "f$((i-1)).txt"
  [ $((i % 5)) -eq 0 ] && mkdir -p "d$i" && echo x > "d$i/x"
  [ $((i % 7)) -eq 0 ] && dd if=/dev/zero of=large.bin bs=64k count=16 seek={seedn} conv=notrunc status=none
  echo "progress $i"
done"#,
        mp = m.mp.display()
    );
    crate::common::sigkill_mount_during(m, &script, after);

    let (ok, out, err) = veilfs(&["verify", "--store", &e.store()]);
    // A torn last journal line is reported by verify; everything else must be clean.
    assert!(
        ok || err.contains("torn") || out.contains("torn"),
        "verify: {out}{err}"
    );
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback after kill at {after}: {out}{err}");
    assert_eq!(
        tree_hash(e.scope.path()),
        before,
        "tree after rollback (kill at {after}): {out}{err}"
    );
}

#[test]
fn sigkill_during_a_write_heavy_workload_never_loses_a_pre_image() {
    for (i, after) in [1usize, 3, 8, 17, 30, 55].into_iter().enumerate() {
        crash_once(after, i as u64 * 7);
    }
}

#[test]
fn a_store_inside_the_scope_or_the_mount_point_is_refused() {
    let e = env();
    for store in [
        e.scope.path().join("store"),
        e.scope.path().join("src/nested/.s"),
    ] {
        let mp = tempfile::tempdir().unwrap();
        let out = Command::new(common::bin())
            .args(["mount", "--mode", "snapshot", "--store"])
            .arg(&store)
            .arg(e.scope.path())
            .arg(mp.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("inside the scope"), "{err}");
        assert!(!store.exists(), "a store was created inside the scope");
        assert!(!veilfs::is_mount_point(&mp.path().canonicalize().unwrap()));
    }
    let mp = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["mount", "--mode", "snapshot", "--store"])
        .arg(mp.path().join("s"))
        .arg(e.scope.path())
        .arg(mp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the mount point"));
}

/// A file the agent removes (or renames over) while holding it open stays readable through
/// that descriptor, as on a native filesystem (temporary files live on this), and is shown
/// with the view of the path it had: a secret in it stays masked. So does one removed by
/// another program outside the mount.
#[test]
fn a_file_removed_while_open_is_still_read_through_its_descriptor_with_its_view() {
    const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
    fn seed_unlinked(s: &Path) {
        fs::write(s.join("plain.txt"), "plain words\n".repeat(50)).unwrap();
        fs::write(s.join("tok.txt"), format!("token = {TOKEN}\n")).unwrap();
        fs::write(s.join("tok-twin.txt"), format!("token = {TOKEN}\n")).unwrap();
        fs::write(s.join("old.txt"), "replaced by a rename\n").unwrap();
        fs::write(s.join("new.txt"), "the new one\n").unwrap();
        fs::write(s.join("outside.txt"), "removed outside the mount\n").unwrap();
    }
    let token = TOKEN;
    let masking =
        common::SNAPSHOT_NO_BREAKER.replace("rule_sets = []", "rule_sets = [\"secrets\"]");
    assert!(masking.contains("secrets"));
    let e = WriteEnv::new(&masking, seed_unlinked);
    let m = e.mount();
    let read_all = |f: &mut fs::File| {
        use std::io::{Read, Seek};
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    };
    let mut plain = fs::File::open(m.mp.join("plain.txt")).unwrap();
    let mut tok = fs::File::open(m.mp.join("tok.txt")).unwrap();
    let mut old = fs::File::open(m.mp.join("old.txt")).unwrap();
    let mut outside = fs::File::open(m.mp.join("outside.txt")).unwrap();
    // Nothing is read before the removals: every read below reaches veilfs, not the kernel's
    // page cache. The twin shows what the view at tok.txt's path is.
    let masked = fs::read_to_string(m.mp.join("tok-twin.txt")).unwrap();
    assert!(!masked.contains(token), "{masked}");
    fs::remove_file(m.mp.join("plain.txt")).unwrap();
    fs::remove_file(m.mp.join("tok.txt")).unwrap();
    fs::rename(m.mp.join("new.txt"), m.mp.join("old.txt")).unwrap();
    fs::remove_file(e.scope.path().join("outside.txt")).unwrap();
    assert_eq!(read_all(&mut outside), "removed outside the mount\n");
    assert_eq!(read_all(&mut plain), "plain words\n".repeat(50));
    assert_eq!(read_all(&mut tok), masked);
    assert_eq!(read_all(&mut old), "replaced by a rename\n");
    assert_eq!(
        fs::read_to_string(m.mp.join("old.txt")).unwrap(),
        "the new one\n"
    );
}
