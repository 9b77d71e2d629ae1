//! Write modes let the kernel keep entries and attributes for `cache.write_ttl_ms`. Changes
//! made through the mount update those caches in the kernel; these tests are the cases the
//! kernel cannot see: a name an outside writer moved away while the kernel still holds it, and
//! a hard link's other name that veilfs's inode table lost. Every test uses a TTL far longer
//! than it runs, so the kernel's copy is certainly still held when the agent acts.

use crate::common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::{WriteEnv, tree_hash, veilfs};

const PROFILE: &str = r#"
version = 1
name = "write-cache"
[visibility]
deny = [".env*"]
[redaction]
rule_sets = []
[write]
mode = "snapshot"
writable = ["**", "!locked/"]
[cache]
write_ttl_ms = 60000
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
"#;

fn seed(s: &Path) {
    fs::create_dir_all(s.join("open")).unwrap();
    fs::create_dir_all(s.join("work")).unwrap();
    fs::create_dir_all(s.join("locked")).unwrap();
    fs::create_dir_all(s.join(".env.d")).unwrap();
    fs::write(s.join("open/x"), "v1\n").unwrap();
    fs::write(s.join("open/y"), "public\n").unwrap();
    fs::write(s.join("work/f"), "f1\n").unwrap();
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn append(p: &Path) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .append(true)
        .open(p)?
        .write_all(b"agent\n")
}

/// A file an outside writer moved into a read-only directory is not written through the name
/// the kernel still holds: the open answers ENOENT, as after a native rename, and the file
/// keeps its bytes (before: judged and captured at its old path, written at the new one).
#[test]
fn a_file_moved_outside_is_not_changed_through_its_old_name() {
    let e = WriteEnv::new(PROFILE, seed);
    let s = e.scope.path();
    let m = e.mount();
    assert_eq!(fs::read_to_string(m.path("open/x")).unwrap(), "v1\n");
    fs::rename(s.join("open/x"), s.join("locked/x")).unwrap();
    let r = append(&m.path("open/x"));
    assert_eq!(errno(&r.unwrap_err()), libc::ENOENT);
    let r = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("open/x"));
    assert_eq!(errno(&r.unwrap_err()), libc::ENOENT);
    assert_eq!(fs::read_to_string(s.join("locked/x")).unwrap(), "v1\n");
    // Through its new name it is read-only, as the profile says.
    let r = append(&m.path("locked/x"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    drop(m);
    assert_eq!(fs::read_to_string(s.join("locked/x")).unwrap(), "v1\n");
}

/// The same for a directory moved outside: nothing is created in it or written below it
/// through its old name.
#[test]
fn a_directory_moved_outside_is_not_changed_through_its_old_name() {
    let e = WriteEnv::new(PROFILE, seed);
    let s = e.scope.path();
    let m = e.mount();
    assert_eq!(fs::read_to_string(m.path("work/f")).unwrap(), "f1\n");
    fs::rename(s.join("work"), s.join("locked/work")).unwrap();
    let r = fs::write(m.path("work/new"), "agent\n");
    assert_eq!(errno(&r.unwrap_err()), libc::ENOENT);
    let r = append(&m.path("work/f"));
    assert_eq!(errno(&r.unwrap_err()), libc::ENOENT);
    drop(m);
    assert!(!s.join("locked/work/new").exists());
    assert_eq!(fs::read_to_string(s.join("locked/work/f")).unwrap(), "f1\n");
}

/// A file an outside writer moved into a hidden directory is not read through its old name.
#[test]
fn a_file_moved_outside_into_a_hidden_directory_is_not_read_through_its_old_name() {
    let e = WriteEnv::new(PROFILE, seed);
    let s = e.scope.path();
    let m = e.mount();
    assert_eq!(fs::metadata(m.path("open/y")).unwrap().len(), 7);
    fs::rename(s.join("open/y"), s.join(".env.d/y")).unwrap();
    fs::write(s.join(".env.d/y"), "hidden!\n").unwrap();
    let r = fs::read_to_string(m.path("open/y"));
    assert_eq!(errno(&r.unwrap_err()), libc::ENOENT);
}

/// A hard link whose other name was renamed over (the name the inode table knew it by) is
/// still written through the name the kernel holds, and rollback restores every name.
#[test]
fn a_hard_link_renamed_over_is_still_written_through_its_other_name() {
    let e = WriteEnv::new(PROFILE, seed);
    let s = e.scope.path();
    let before = tree_hash(s);
    let m = e.mount();
    fs::write(m.path("open/a"), "a1\n").unwrap();
    fs::hard_link(m.path("open/a"), m.path("open/b")).unwrap();
    fs::write(m.path("open/tmp"), "saved\n").unwrap();
    fs::rename(m.path("open/tmp"), m.path("open/b")).unwrap();
    append(&m.path("open/a")).unwrap();
    assert_eq!(fs::read_to_string(m.path("open/a")).unwrap(), "a1\nagent\n");
    assert_eq!(fs::read_to_string(m.path("open/b")).unwrap(), "saved\n");
    drop(m);
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback failed: {out}{err}");
    assert_eq!(tree_hash(s), before);
}

/// A name found absent is kept by the kernel for the TTL like any other entry, so a file an
/// outside writer makes under it is not seen at once. The agent's create of that name (the
/// kernel, trusting its absence, sends CREATE without a LOOKUP) must still meet the real file:
/// `O_EXCL` fails, a plain create opens it without truncating or replacing it, a rename onto
/// the name replaces it only after capturing it, and rollback restores the outside writer's
/// bytes.
#[test]
fn a_create_through_a_cached_absence_meets_the_file_made_outside() {
    let e = WriteEnv::new(PROFILE, seed);
    let s = e.scope.path();
    let m = e.mount();
    for name in ["work/new", "work/excl", "work/over"] {
        assert_eq!(
            errno(&fs::metadata(m.path(name)).unwrap_err()),
            libc::ENOENT
        );
        fs::write(s.join(name), "outside\n").unwrap();
        // The kernel keeps the absence (the write TTL is a minute here).
        assert_eq!(
            errno(&fs::metadata(m.path(name)).unwrap_err()),
            libc::ENOENT
        );
    }
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("work/excl"));
    assert_eq!(errno(&r.unwrap_err()), libc::EEXIST);
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(m.path("work/new"))
        .unwrap()
        .write_all(b"agent\n")
        .unwrap();
    assert_eq!(
        fs::read_to_string(m.path("work/new")).unwrap(),
        "outside\nagent\n"
    );
    // Made through the mount, a name replaces the kernel's absence at once.
    assert_eq!(
        errno(&fs::metadata(m.path("work/mine")).unwrap_err()),
        libc::ENOENT
    );
    fs::write(m.path("work/mine"), "mine\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("work/mine")).unwrap(), "mine\n");
    // A rename onto a name the kernel holds as absent replaces the real file there, which is
    // captured first like any rename target.
    fs::rename(m.path("work/mine"), m.path("work/over")).unwrap();
    assert_eq!(fs::read_to_string(s.join("work/over")).unwrap(), "mine\n");
    drop(m);
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback failed: {out}{err}");
    assert_eq!(fs::read_to_string(s.join("work/new")).unwrap(), "outside\n");
    assert_eq!(
        fs::read_to_string(s.join("work/excl")).unwrap(),
        "outside\n"
    );
    assert_eq!(
        fs::read_to_string(s.join("work/over")).unwrap(),
        "outside\n"
    );
    assert!(!s.join("work/mine").exists());
}
