//! The agent chooses every name: hard links, renames of ancestors, truncation, outside writers,
//! metadata and probes of hidden entries. Each test is an attack a hostile (or prompt-injected)
//! agent can run through a real mount; each failed on the code before the fix that made the
//! decision follow the object instead of the name it arrived on.

use crate::common;

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, symlink};
use std::path::Path;

use common::{Mount, WriteEnv, eventually, tree_hash, veilfs, write_profile};

/// A token of the shape `github-pat` masks (`ghp_` and 36 alphanumerics).
const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

/// Snapshot mode, secrets masked, `.git/config` not writable, binaries refused except `*.png`.
const SNAPSHOT: &str = r#"
version = 1
name = "adversary-snapshot"
description = "snapshot, secrets masked"
[visibility]
deny = [".env*", "**/.config/gcloud/"]
hide_special_files = true
hide_escaping_symlinks = true
[redaction]
rule_sets = ["secrets"]
unscannable = "deny"
unscannable_allow = ["*.png"]
[write]
mode = "snapshot"
writable = ["**", "!.git/config", "!.git/hooks/"]
"#;

fn seed(s: &Path) {
    fs::create_dir_all(s.join(".git/hooks")).unwrap();
    fs::create_dir_all(s.join("src")).unwrap();
    fs::create_dir_all(s.join(".config/gcloud")).unwrap();
    fs::write(s.join(".git/config"), "[core]\n\tbare = false\n").unwrap();
    fs::write(s.join("a.txt"), "v1\n").unwrap();
    fs::write(s.join("src/main.rs"), "fn main() {}\n").unwrap();
    fs::write(
        s.join("tok.txt"),
        format!("line one\ntoken {TOKEN} end\nline three\n"),
    )
    .unwrap();
    fs::write(
        s.join("db.yaml"),
        "host: db\npassword: Zq9xpLm3Kw7v\nport: 5432\n",
    )
    .unwrap();
    fs::write(s.join(".config/gcloud/creds.json"), "{\"k\": \"hidden\"}\n").unwrap();
    // Unscannable: compressed content (a zstd frame).
    fs::write(
        s.join("blob.bin"),
        b"\x28\xb5\x2f\xfd\x00\x01\x02binary\x00\xff",
    )
    .unwrap();
}

fn env() -> WriteEnv {
    WriteEnv::new(SNAPSHOT, seed)
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn rollback_all(e: &WriteEnv) -> String {
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback failed: {out}{err}");
    out
}

// ---- 1. hard link, then write ----

#[test]
fn write_through_a_new_hard_link_is_captured_and_rolled_back() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    fs::hard_link(m.path("a.txt"), m.path("b.txt")).unwrap();
    fs::write(m.path("b.txt"), "EVIL\n").unwrap();
    assert_eq!(
        fs::read_to_string(e.scope.path().join("a.txt")).unwrap(),
        "EVIL\n"
    );
    let (st, err) = m.stop();
    assert!(st.success(), "{err}");
    rollback_all(&e);
    assert_eq!(
        fs::read_to_string(e.scope.path().join("a.txt")).unwrap(),
        "v1\n"
    );
    assert!(!e.scope.path().join("b.txt").exists());
    assert_eq!(tree_hash(e.scope.path()), before);
}

#[test]
fn linking_a_protected_file_under_a_writable_name_is_refused() {
    let e = env();
    let m = e.mount();
    let r = fs::hard_link(m.path(".git/config"), m.path("src/cfg.rs"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    assert!(!e.scope.path().join("src/cfg.rs").exists());
    // A masked file cannot get a second name either (writing it would write masks back).
    let r = fs::hard_link(m.path("tok.txt"), m.path("tok2.txt"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    drop(m);
    assert_eq!(
        fs::read_to_string(e.scope.path().join(".git/config")).unwrap(),
        "[core]\n\tbare = false\n"
    );
}

#[test]
fn a_file_with_hard_links_veilfs_never_saw_cannot_be_changed_in_place() {
    // The link was made outside the mount (before the session): veilfs cannot check or snapshot
    // the other name, so the real `.git/config` must not change through `src/cfg.rs`.
    let e = env();
    fs::hard_link(
        e.scope.path().join(".git/config"),
        e.scope.path().join("src/cfg.rs"),
    )
    .unwrap();
    let m = e.mount();
    let r = fs::write(m.path("src/cfg.rs"), "[core]\n\thooksPath = /tmp/evil\n");
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    let r = fs::OpenOptions::new()
        .write(true)
        .open(m.path("src/cfg.rs"))
        .and_then(|f| f.set_len(0));
    assert!(r.is_err());
    // Replacing the name (what editors do) is fine and leaves the other name alone.
    fs::write(m.path("src/new.rs"), "x\n").unwrap();
    fs::rename(m.path("src/new.rs"), m.path("src/cfg.rs")).unwrap();
    drop(m);
    assert_eq!(
        fs::read_to_string(e.scope.path().join(".git/config")).unwrap(),
        "[core]\n\tbare = false\n"
    );
}

#[test]
fn writing_through_two_names_does_not_block_rollback() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    fs::hard_link(m.path("a.txt"), m.path("b.txt")).unwrap();
    fs::write(m.path("a.txt"), "one\n").unwrap();
    fs::write(m.path("b.txt"), "two\n").unwrap();
    drop(m);
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(" 0 conflict(s)"), "false conflict: {out}");
    assert_eq!(tree_hash(e.scope.path()), before);
}

// ---- 2. truncate of a masked file ----

#[test]
fn truncating_a_masked_file_is_refused_like_a_write_open() {
    let e = env();
    let m = e.mount();
    let cut = "line one\ntoken ghp_R4nd0mT0k3n".len() as u64;
    let r = nix_truncate(&m.path("tok.txt"), cut);
    assert_eq!(r, Err(libc::EACCES));
    // Growing it keeps the secret whole (refused, or allowed: either way nothing leaks).
    let _ = nix_truncate(&m.path("tok.txt"), 1 << 20);
    // (Grown with NULs it may read as binary and be refused: also no leak.)
    if let Ok(seen) = fs::read(m.path("tok.txt")) {
        assert!(
            !seen.windows(10).any(|w| w == b"ghp_R4nd0m"),
            "token served"
        );
    }
    drop(m);
    assert!(
        fs::read_to_string(e.scope.path().join("tok.txt"))
            .unwrap()
            .contains(TOKEN)
    );
}

fn nix_truncate(p: &Path, len: u64) -> Result<(), i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; truncate(2) does not keep the pointer.
    let r = unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

// ---- 3. renames and links that would loosen the view ----

#[test]
fn renaming_the_parent_of_a_denied_directory_is_refused() {
    let e = env();
    let m = e.mount();
    assert!(!m.path(".config/gcloud").exists());
    let r = fs::rename(m.path(".config"), m.path("cfg"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    assert!(!m.path("cfg/gcloud/creds.json").exists());
    drop(m);
    assert!(e.scope.path().join(".config/gcloud/creds.json").exists());
}

#[test]
fn an_unscannable_file_cannot_be_renamed_or_linked_to_a_name_served_unscanned() {
    let e = env();
    let m = e.mount();
    assert!(fs::read(m.path("blob.bin")).is_err());
    let r = fs::rename(m.path("blob.bin"), m.path("blob.png"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    let r = fs::hard_link(m.path("blob.bin"), m.path("blob2.png"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    assert!(fs::read(m.path("blob.png")).is_err());
}

#[test]
fn a_path_limited_rule_keeps_applying_after_a_rename() {
    let e = env();
    let m = e.mount();
    let seen = fs::read_to_string(m.path("db.yaml")).unwrap();
    assert!(!seen.contains("Zq9xpLm3Kw7v"), "{seen}");
    match fs::rename(m.path("db.yaml"), m.path("db.txt")) {
        Err(err) => assert_eq!(errno(&err), libc::EACCES),
        Ok(()) => {
            let seen = fs::read_to_string(m.path("db.txt")).unwrap();
            assert!(
                !seen.contains("Zq9xpLm3Kw7v"),
                "unmasked after rename: {seen}"
            );
        }
    }
}

#[test]
fn read_only_a_hard_link_read_first_does_not_unmask_the_other_name() {
    let scope = tempfile::tempdir().unwrap();
    fs::write(
        scope.path().join("ro.yaml"),
        "user: x\npassword: Zq9xpLm3Kw7v\n",
    )
    .unwrap();
    fs::hard_link(scope.path().join("ro.yaml"), scope.path().join("ro.bak")).unwrap();
    let m = Mount::start(scope.path(), &[]);
    let bak = fs::read_to_string(m.path("ro.bak")).unwrap();
    let yaml = fs::read_to_string(m.path("ro.yaml")).unwrap();
    assert!(!yaml.contains("Zq9xpLm3Kw7v"), "ro.yaml unmasked: {yaml}");
    assert!(!bak.contains("Zq9xpLm3Kw7v"), "ro.bak unmasked: {bak}");
}

fn exchange(a: &Path, b: &Path) -> Result<(), i32> {
    let a = std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings; AT_FDCWD with absolute paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// RENAME_EXCHANGE moves two objects at once: each must be checked as the rename it is, in
/// both directions, so a swap can neither expose a denied subtree nor put the agent's bytes
/// under a name it may not write.
#[test]
fn rename_exchange_is_checked_in_both_directions() {
    let e = env();
    let m = e.mount();
    fs::create_dir(m.path("cfg")).unwrap();
    // .config holds the denied gcloud/: swapped with cfg, it would show as cfg/gcloud/.
    assert_eq!(
        exchange(&m.path(".config"), &m.path("cfg")),
        Err(libc::EACCES)
    );
    assert_eq!(
        exchange(&m.path("cfg"), &m.path(".config")),
        Err(libc::EACCES)
    );
    assert!(!m.path("cfg/gcloud").exists());
    // .git/config may not be written: swapping a file the agent wrote into its place would.
    fs::write(m.path("src/cfg.rs"), "[core]\n\thooksPath = /tmp/evil\n").unwrap();
    assert_eq!(
        exchange(&m.path(".git/config"), &m.path("src/cfg.rs")),
        Err(libc::EACCES)
    );
    assert_eq!(
        exchange(&m.path("src/cfg.rs"), &m.path(".git/config")),
        Err(libc::EACCES)
    );
    // A masked file swapped with a clean one stays masked under its new name.
    exchange(&m.path("tok.txt"), &m.path("a.txt")).unwrap();
    let seen = fs::read_to_string(m.path("a.txt")).unwrap();
    assert!(
        seen.contains("token ") && !seen.contains("R4nd0mT0k3nV"),
        "{seen}"
    );
    drop(m);
    let s = e.scope.path();
    assert_eq!(
        fs::read_to_string(s.join(".git/config")).unwrap(),
        "[core]\n\tbare = false\n"
    );
    assert!(s.join(".config/gcloud/creds.json").exists());
    // The swap itself rolls back.
    rollback_all(&e);
    assert_eq!(fs::read_to_string(s.join("a.txt")).unwrap(), "v1\n");
    assert!(
        fs::read_to_string(s.join("tok.txt"))
            .unwrap()
            .contains(TOKEN)
    );
}

/// A file made with O_TMPFILE has no name until `linkat` gives it one: that first name is
/// checked like any other create (writable, not hidden), so an anonymous file cannot be
/// linked into a protected or hidden place.
#[test]
fn an_o_tmpfile_cannot_be_linked_into_a_protected_or_hidden_name() {
    let e = env();
    let m = e.mount();
    let dir = std::ffi::CString::new(m.path("src").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o644) };
    if fd < 0 {
        // FUSE without a TMPFILE handler answers EOPNOTSUPP: no anonymous file, no attack.
        let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        assert!(
            err == libc::EOPNOTSUPP || err == libc::ENOSYS,
            "O_TMPFILE: errno {err}"
        );
        return;
    }
    // SAFETY: fd was just opened and is owned here.
    let f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    (&f).write_all(b"#!/bin/sh\nevil\n").unwrap();
    let link = |to: &Path| {
        let src = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        let to = std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C strings.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                src.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    };
    assert_eq!(link(&m.path(".git/hooks/pre-commit")), Err(libc::EACCES));
    assert_eq!(link(&m.path(".env.local")), Err(libc::EACCES));
    link(&m.path("src/new.sh")).unwrap();
    drop(f);
    drop(m);
    let s = e.scope.path();
    assert!(!s.join(".git/hooks/pre-commit").exists());
    assert!(!s.join(".env.local").exists());
    rollback_all(&e);
    assert!(!s.join("src/new.sh").exists());
}

// ---- 5. metadata goes through the view ----

#[test]
fn symlink_targets_xattrs_and_names_are_masked() {
    let scope = tempfile::tempdir().unwrap();
    // An in-scope target (an escaping one is hidden anyway).
    symlink(format!("sub/{TOKEN}/x"), scope.path().join("link")).unwrap();
    fs::write(scope.path().join("plain.txt"), "hello\n").unwrap();
    let f = fs::File::open(scope.path().join("plain.txt")).unwrap();
    xattr_set(&f, "user.note", format!("token {TOKEN}").as_bytes());
    fs::write(scope.path().join(format!("{TOKEN}.txt")), "x\n").unwrap();
    let p = write_profile(
        scope.path().parent().unwrap(),
        &format!(
            "{}-p.toml",
            scope.path().file_name().unwrap().to_string_lossy()
        ),
        "version = 1\nname = \"t\"\ndescription = \"t\"\n[redaction]\nrule_sets = [\"secrets\"]\n",
    );
    let m = Mount::start(scope.path(), &["--profile", p.to_str().unwrap()]);
    let t = fs::read_link(m.path("link")).unwrap();
    let t = t.to_string_lossy();
    assert!(!t.contains("R4nd0m"), "symlink target unmasked: {t}");
    assert_eq!(t.len(), format!("sub/{TOKEN}/x").len());
    let f = fs::File::open(m.path("plain.txt")).unwrap();
    let v = xattr_get(&f, "user.note");
    assert!(
        !String::from_utf8_lossy(&v).contains("R4nd0m"),
        "xattr unmasked"
    );
    let names: Vec<String> = fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("R4nd0m")), "{names:?}");
    assert!(!m.path(&format!("{TOKEN}.txt")).exists());
    drop(m);
    let _ = fs::remove_file(p);
}

fn xattr_set(f: &fs::File, name: &str, v: &[u8]) {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid fd, name and buffer for the call.
    let r = unsafe {
        libc::fsetxattr(
            std::os::fd::AsRawFd::as_raw_fd(f),
            n.as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    assert_eq!(r, 0, "fsetxattr: {}", std::io::Error::last_os_error());
}

fn xattr_get(f: &fs::File, name: &str) -> Vec<u8> {
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid fd, name and buffer for the call.
    let r = unsafe {
        libc::fgetxattr(
            std::os::fd::AsRawFd::as_raw_fd(f),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(r >= 0, "fgetxattr: {}", std::io::Error::last_os_error());
    buf.truncate(r as usize);
    buf
}

// ---- 6. hidden means indistinguishable from absent ----

#[test]
fn hidden_entries_answer_like_denied_names_and_are_not_counted() {
    let e = env();
    let s = e.scope.path();
    fs::create_dir_all(s.join("d/.env.d")).unwrap();
    fs::create_dir_all(s.join("d/sub")).unwrap();
    fs::create_dir_all(s.join("only")).unwrap();
    let fifo = std::ffi::CString::new(s.join("only/pipe").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    fs::write(s.join("shared.txt"), "x\n").unwrap();
    fs::hard_link(s.join("shared.txt"), s.join(".env.shared")).unwrap();
    let m = e.mount();
    // A directory's link count counts only the subdirectories the agent can see.
    let nlink = fs::metadata(m.path("d")).unwrap().nlink();
    assert_eq!(nlink, 3, "d has one visible subdirectory");
    // The count is kept per version of the directory: one changed outside the mount is counted
    // again (a new hidden subdirectory still not counted, a new visible one counted), once the
    // kernel's attributes expire (`cache.write_ttl_ms`: no watcher in write modes).
    let nlink_is = |n| eventually(|| fs::metadata(m.path("d")).unwrap().nlink() == n);
    fs::create_dir(s.join("d/.env.e")).unwrap();
    assert!(nlink_is(3));
    fs::create_dir(s.join("d/sub2")).unwrap();
    assert!(nlink_is(4));
    fs::rename(s.join("d/sub2"), s.join("d/.env.f")).unwrap();
    assert!(nlink_is(3));
    // A file's counts only the names the agent can see (its link named .env.shared is hidden).
    assert_eq!(fs::metadata(m.path("shared.txt")).unwrap().nlink(), 1);
    fs::write(m.path("mine.txt"), "m\n").unwrap();
    fs::hard_link(m.path("mine.txt"), m.path("mine2.txt")).unwrap();
    assert_eq!(fs::metadata(m.path("mine.txt")).unwrap().nlink(), 2);
    fs::remove_file(m.path("mine2.txt")).unwrap();
    assert_eq!(fs::metadata(m.path("mine.txt")).unwrap().nlink(), 1);
    // The fifo is hidden: creating over it, making a directory there or renaming onto it all
    // answer EACCES, like a name the profile denies, never ENOENT/EEXIST that would reveal it.
    let r = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path("only/pipe"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    assert_eq!(
        errno(&fs::create_dir(m.path("only/pipe")).unwrap_err()),
        libc::EACCES
    );
    fs::write(m.path("x.txt"), "x").unwrap();
    let r = fs::rename(m.path("x.txt"), m.path("only/pipe"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    let r = fs::create_dir(m.path(".env.local"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    // A directory whose only entries are hidden cannot be removed, and says so as EACCES.
    assert_eq!(fs::read_dir(m.path("only")).unwrap().count(), 0);
    assert_eq!(
        errno(&fs::remove_dir(m.path("only")).unwrap_err()),
        libc::EACCES
    );
    drop(m);
    assert!(s.join("only/pipe").exists());
}

// ---- 7. symlinks judged where they are ----

#[test]
fn a_rename_that_would_make_a_symlink_escape_is_refused() {
    let e = env();
    let m = e.mount();
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("x"), "x").unwrap();
    symlink("../../x", m.path("a/b/l")).unwrap();
    assert_eq!(fs::read_to_string(m.path("a/b/l")).unwrap(), "x");
    let r = fs::rename(m.path("a/b"), m.path("b2"));
    assert_eq!(errno(&r.unwrap_err()), libc::EACCES);
    // Hard-linking an in-scope symlink beside itself is fine.
    symlink("../a/b/l", m.path("src/sym")).unwrap();
    fs::hard_link(m.path("src/sym"), m.path("src/sym2")).unwrap();
    drop(m);
    assert!(e.scope.path().join("a/b/l").is_symlink());
    assert!(!e.scope.path().join("b2").exists());
}

// ---- 4. an outside program rewriting a file in place while the agent reads ----

fn race_secs() -> u64 {
    std::env::var("VEILFS_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// How the program outside the mount rewrites the file.
#[derive(Clone, Copy)]
enum Writer {
    /// Moves the token between two offsets in place, one whole-file `pwrite` each time: a
    /// writer preempted mid-copy leaves half a token on disk.
    Whole,
    /// Writes the token in two halves with an `fdatasync` after each, then erases it: the
    /// file spends milliseconds holding half a token, which no rule can match.
    Halves,
}

/// A writer outside the mount rewrites the file in place (same size) while two readers read
/// it through the mount. No read may ever show any part of the token.
fn race(scope: &Path, mp_of: impl Fn() -> std::path::PathBuf, how: Writer) -> (u64, u64) {
    // Large enough that copying it takes the kernel a while (a write's new ctime is visible
    // before its bytes are), below the size served by passthrough.
    let len = 64 * 1024usize;
    let filler = |i: usize| if i % 64 == 63 { b'\n' } else { b'.' };
    let base: Vec<u8> = (0..len).map(filler).collect();
    let tok = format!(" {TOKEN} ");
    let layout = |at: usize| {
        let mut v = base.clone();
        v[at..at + tok.len()].copy_from_slice(tok.as_bytes());
        v
    };
    let a = layout(100);
    let b = layout(len - 200);
    let real = scope.join("race.txt");
    fs::write(&real, &a).unwrap();
    // Sanity: the token is masked when nothing is writing.
    let seen = fs::read(mp_of().join("race.txt")).unwrap();
    assert_eq!(seen.len(), a.len());
    assert!(
        !seen.windows(12).any(|w| w == b"R4nd0mT0k3nV"),
        "not masked at rest"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let real = real.clone();
        let tok = tok.clone();
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(&real).unwrap();
            let (first, second) = tok.as_bytes().split_at(tok.len() / 2);
            let dots = vec![b'.'; tok.len()];
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match how {
                    Writer::Whole => {
                        let v = if n.is_multiple_of(2) { &b } else { &a };
                        f.write_all_at(v, 0).unwrap();
                    }
                    Writer::Halves => {
                        f.write_all_at(&dots, 100).unwrap();
                        f.sync_data().unwrap();
                        f.write_all_at(first, 100).unwrap();
                        f.sync_data().unwrap();
                        f.write_all_at(second, 100 + first.len() as u64).unwrap();
                        f.sync_data().unwrap();
                    }
                }
                n += 1;
            }
            n
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(race_secs());
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let p = mp_of().join("race.txt");
            std::thread::spawn(move || {
                let (mut reads, mut leaks) = (0u64, 0u64);
                while std::time::Instant::now() < deadline {
                    match fs::read(&p) {
                        Ok(d) => {
                            reads += 1;
                            if d.windows(12).any(|w| w == b"R4nd0mT0k3nV") {
                                leaks += 1;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => reads += 1,
                    }
                }
                (reads, leaks)
            })
        })
        .collect();
    let (mut reads, mut leaks) = (0, 0);
    for r in readers {
        let (a, b) = r.join().unwrap();
        reads += a;
        leaks += b;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    eprintln!("race: {reads} reads, {writes} rewrites, {leaks} leaks");
    (reads, leaks)
}

fn overlay_env() -> WriteEnv {
    WriteEnv::new(&SNAPSHOT.replace("\"snapshot\"", "\"overlay\""), seed)
}

/// Every reader sees the file whole, as it was at a moment veilfs could prove no write was in
/// progress: never a torn or half-written token.
fn assert_no_leak(scope: &Path, mp: &Path, how: Writer) {
    let (reads, leaks) = race(scope, || mp.to_path_buf(), how);
    assert!(reads > 100, "only {reads} reads");
    assert_eq!(
        leaks, 0,
        "{leaks} of {reads} reads showed part of the token"
    );
}

#[test]
fn an_outside_in_place_writer_never_makes_a_read_leak_read_only() {
    let scope = tempfile::tempdir().unwrap();
    let m = Mount::start(scope.path(), &[]);
    assert_no_leak(scope.path(), &m.mp, Writer::Whole);
}

/// Was flaky (2 leaks in one loaded 8 s run): a writer preempted mid-`pwrite` left a torn
/// state both of veilfs's reads agreed on. Fixed by trusting a copy only once its ctime settled.
#[test]
fn an_outside_in_place_writer_never_makes_a_read_leak_overlay() {
    let e = overlay_env();
    let m = e.mount();
    assert_no_leak(e.scope.path(), &m.mp, Writer::Whole);
}

#[test]
fn an_outside_in_place_writer_never_makes_a_read_leak_snapshot() {
    let e = env();
    let m = e.mount();
    assert_no_leak(e.scope.path(), &m.mp, Writer::Whole);
}

#[test]
fn half_a_token_written_outside_is_never_served_read_only() {
    let scope = tempfile::tempdir().unwrap();
    let m = Mount::start(scope.path(), &[]);
    assert_no_leak(scope.path(), &m.mp, Writer::Halves);
}

#[test]
fn half_a_token_written_outside_is_never_served_snapshot() {
    let e = env();
    let m = e.mount();
    assert_no_leak(e.scope.path(), &m.mp, Writer::Halves);
}

#[test]
fn half_a_token_written_outside_is_never_served_overlay() {
    let e = overlay_env();
    let m = e.mount();
    assert_no_leak(e.scope.path(), &m.mp, Writer::Halves);
}

/// A large clean file was served by FUSE passthrough (write modes; read-only mounts use no-open
/// mode), which reads the real file at every `read`: a secret written outside after the open
/// reached the agent unscanned. Passthrough is now kept for files no rule applies to.
#[test]
fn a_secret_written_outside_into_an_open_large_clean_file_is_never_served() {
    let e = env();
    let real = e.scope.path().join("big.log");
    let line = b"a perfectly ordinary log line with nothing secret in it........\n";
    assert_eq!(line.len(), 64);
    let clean: Vec<u8> = line.iter().copied().cycle().take(2 << 20).collect();
    fs::write(&real, &clean).unwrap();
    let m = e.mount();
    let f = fs::File::open(m.path("big.log")).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], &clean[..n]);
    let tok = format!("{TOKEN}\n");
    let at = (1 << 20) + 4096;
    fs::OpenOptions::new()
        .write(true)
        .open(&real)
        .unwrap()
        .write_all_at(tok.as_bytes(), at)
        .unwrap();
    let n = f.read_at(&mut buf, at).unwrap();
    assert!(
        !buf[..n].windows(12).any(|w| w == b"R4nd0mT0k3nV"),
        "the open handle served the new secret raw"
    );
    // A new open, once the file settled, serves the new version masked.
    drop(f);
    let seen = fs::read(m.path("big.log")).unwrap();
    assert_eq!(seen.len(), clean.len());
    assert!(!seen.windows(12).any(|w| w == b"R4nd0mT0k3nV"));
}

/// The settle rule must not make the agent read its own writes late: a copy taken before
/// a change through the mount is never served after it.
#[test]
fn the_agent_reads_its_own_changes_at_once() {
    for e in [env(), overlay_env()] {
        let m = e.mount();
        let p = m.path("notes.txt");
        fs::write(&p, "one\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "one\n");
        fs::write(&p, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two\n", "after a write");
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(2)
            .unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "tw", "after a truncate");
        // An editor's save: a new file renamed over the old one.
        fs::write(m.path("notes.txt.tmp"), "three\n").unwrap();
        fs::rename(m.path("notes.txt.tmp"), &p).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "three\n",
            "after a rename over"
        );
        let f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        (&f).write_all(b"four\n").unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "three\nfour\n",
            "after an append"
        );
    }
}

// ---- errors keep their cause: a full store is ENOSPC, not EIO ----

#[test]
fn a_full_store_refuses_a_change_with_enospc() {
    let e = env();
    // 4 MiB of incompressible bytes cannot be snapshotted into a 1 MiB store.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(e.scope.path().join("big.png"), &big).unwrap();
    let store = e.store.path().join("s");
    fs::create_dir_all(&store).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _tmpfs = Unmount(store.clone());
    let m = e.mount();
    let r = fs::OpenOptions::new()
        .write(true)
        .open(m.path("big.png"))
        .and_then(|f| f.write_all_at(b"x", 0));
    assert_eq!(errno(&r.unwrap_err()), libc::ENOSPC);
    drop(m);
    assert_eq!(fs::read(e.scope.path().join("big.png")).unwrap(), big);
}
