//! The read-only scoped mount, exercised through a real FUSE mount the way an agent would use it.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Mount, bin, tree_hash, write_profile};

/// A profile with redaction off and a zero cache TTL, for tests about visibility and freshness.
const PLAIN: &str = r#"
version = 1
name = "test-plain"
description = "filtering only"
[visibility]
deny = [".env*", "*.pem", "id_rsa*", ".ssh/", "secret-dir/"]
[redaction]
rule_sets = []
[cache]
ttl_ms = 0
"#;

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

fn scope_with_credentials() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let s = d.path();
    fs::create_dir_all(s.join("src/deep/er")).unwrap();
    fs::create_dir_all(s.join(".ssh")).unwrap();
    fs::write(s.join("README.md"), "# project\n").unwrap();
    fs::write(s.join("src/main.rs"), "fn main() { println!(\"hi\"); }\n").unwrap();
    fs::write(
        s.join("src/deep/er/data.bin"),
        (0..=255u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::write(s.join(".env"), "DB_PASSWORD=hunter2-very-secret\n").unwrap();
    fs::write(s.join(".env.local"), "X=1\n").unwrap();
    fs::write(s.join("src/server.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    fs::write(s.join("id_rsa"), "private\n").unwrap();
    fs::write(s.join(".ssh/config"), "Host *\n").unwrap();
    // Odd names: unicode, spaces, a newline, and bytes that are not UTF-8.
    fs::write(s.join("ünïcødé 文件.txt"), "unicode\n").unwrap();
    fs::write(s.join("with space\nand newline"), "odd\n").unwrap();
    fs::write(s.join(OsStr::from_bytes(b"bad-\xff\xfe-bytes")), "bytes\n").unwrap();
    fs::write(s.join(OsStr::from_bytes(b".env-\xff")), "hidden odd\n").unwrap();
    d
}

#[test]
fn visible_files_are_byte_identical_and_hidden_ones_do_not_exist() {
    let scope = scope_with_credentials();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PLAIN);
    let m = Mount::start(scope.path(), &["--profile", profile.to_str().unwrap()]);

    for rel in [
        "README.md",
        "src/main.rs",
        "src/deep/er/data.bin",
        "ünïcødé 文件.txt",
        "with space\nand newline",
    ] {
        assert_eq!(
            fs::read(m.path(rel)).unwrap(),
            fs::read(scope.path().join(rel)).unwrap(),
            "{rel}"
        );
    }
    let odd = OsStr::from_bytes(b"bad-\xff\xfe-bytes");
    assert_eq!(fs::read(m.mp.join(odd)).unwrap(), b"bytes\n");

    for rel in [
        ".env",
        ".env.local",
        "src/server.pem",
        "id_rsa",
        ".ssh",
        ".ssh/config",
    ] {
        let e = fs::symlink_metadata(m.path(rel)).expect_err(rel);
        assert_eq!(e.kind(), ErrorKind::NotFound, "{rel}");
        let e = fs::File::open(m.path(rel)).expect_err(rel);
        assert_eq!(e.kind(), ErrorKind::NotFound, "{rel}");
    }
    assert!(fs::symlink_metadata(m.mp.join(OsStr::from_bytes(b".env-\xff"))).is_err());

    let root = names(&m.mp);
    for hidden in [
        &b".env"[..],
        b".env.local",
        b"id_rsa",
        b".ssh",
        b".env-\xff",
    ] {
        assert!(!root.contains(&hidden.to_vec()), "{hidden:?} listed");
    }
    assert!(root.contains(&b"README.md".to_vec()));
    assert!(root.contains(&b"bad-\xff\xfe-bytes".to_vec()));
    assert_eq!(
        names(&m.path("src")),
        vec![b"deep".to_vec(), b"main.rs".to_vec()]
    );

    // `find` agrees with the listing: nothing hidden anywhere in the tree.
    let out = Command::new("find").arg(&m.mp).output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(!out.contains(".env") && !out.contains(".ssh") && !out.contains("pem"));
    assert!(out.contains("data.bin"));
}

#[test]
fn every_mutation_fails_with_erofs_and_the_real_folder_is_unchanged() {
    let scope = scope_with_credentials();
    let before = tree_hash(scope.path());
    let m = Mount::start(scope.path(), &[]);
    let p = |r: &str| m.path(r);
    let erofs = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(errno(&e), libc::EROFS, "{what}: {e}");
    };
    erofs("create", fs::File::create(p("new.txt")).map(|_| ()));
    erofs(
        "open for write",
        fs::OpenOptions::new()
            .write(true)
            .open(p("README.md"))
            .map(|_| ()),
    );
    erofs(
        "open O_TRUNC",
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p("README.md"))
            .map(|_| ()),
    );
    erofs(
        "append",
        fs::OpenOptions::new()
            .append(true)
            .open(p("README.md"))
            .map(|_| ()),
    );
    erofs("truncate", {
        let c = std::ffi::CString::new(p("README.md").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        let r = unsafe { libc::truncate(c.as_ptr(), 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    erofs("unlink", fs::remove_file(p("README.md")));
    erofs("rename", fs::rename(p("README.md"), p("X.md")));
    erofs("mkdir", fs::create_dir(p("newdir")));
    erofs("rmdir", fs::remove_dir(p("src/deep/er")));
    erofs("symlink", symlink("README.md", p("ln")));
    erofs("link", fs::hard_link(p("README.md"), p("hl")));
    erofs(
        "chmod",
        fs::set_permissions(p("README.md"), fs::Permissions::from_mode(0o600)),
    );
    erofs(
        "chown",
        std::os::unix::fs::chown(p("README.md"), Some(1), Some(1)),
    );
    erofs(
        "utimens",
        fs::File::open(p("README.md"))
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH),
    );
    erofs("setxattr", {
        let c = std::ffi::CString::new(p("README.md").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and buffer.
        let r =
            unsafe { libc::setxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    drop(m);
    assert_eq!(tree_hash(scope.path()), before, "the real folder changed");
}

#[test]
fn symlinks_that_leave_the_scope_are_hidden_and_inside_ones_work() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("probe"), "OUTSIDE\n").unwrap();
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    fs::create_dir_all(s.join("a/b")).unwrap();
    fs::write(s.join("a/b/inside.txt"), "INSIDE\n").unwrap();
    symlink("/etc/passwd", s.join("abs")).unwrap();
    symlink(outside.path().join("probe"), s.join("abs-probe")).unwrap();
    symlink("../../../../../../../../etc/passwd", s.join("a/rel-up")).unwrap();
    symlink("../b/../../..", s.join("a/b/sneaky")).unwrap();
    symlink("b/inside.txt", s.join("a/ok")).unwrap();
    symlink("../a/b", s.join("a/dirlink")).unwrap();
    let m = Mount::start(s, &[]);
    for rel in ["abs", "abs-probe", "a/rel-up", "a/b/sneaky"] {
        assert!(fs::symlink_metadata(m.path(rel)).is_err(), "{rel} visible");
    }
    assert_eq!(fs::read_to_string(m.path("a/ok")).unwrap(), "INSIDE\n");
    assert_eq!(
        fs::read_to_string(m.path("a/dirlink/inside.txt")).unwrap(),
        "INSIDE\n"
    );
    assert_eq!(
        fs::read_link(m.path("a/ok")).unwrap(),
        Path::new("b/inside.txt")
    );
    let listed = names(&m.mp);
    assert!(!listed.contains(&b"abs".to_vec()));
}

#[test]
fn swapping_a_directory_for_a_symlink_while_reading_never_leaks_outside_bytes() {
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(outside.path().join("d")).unwrap();
    fs::write(outside.path().join("d/probe"), "OUTSIDE\n").unwrap();
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path().to_path_buf();
    fs::create_dir(s.join("d")).unwrap();
    fs::write(s.join("d/probe"), "INSIDE\n").unwrap();
    symlink(outside.path().join("d"), s.join("evil")).unwrap();
    symlink("/", s.join("root")).unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PLAIN);
    let m = Mount::start(&s, &["--profile", profile.to_str().unwrap()]);

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let s = s.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // d <-> evil (symlink to an outside dir), and d <-> root (symlink to /).
                let other = if swaps.is_multiple_of(2) {
                    "evil"
                } else {
                    "root"
                };
                let _ = fs::rename(s.join("d"), s.join("tmp"));
                let _ = fs::rename(s.join(other), s.join("d"));
                let _ = fs::rename(s.join("d"), s.join(other));
                let _ = fs::rename(s.join("tmp"), s.join("d"));
                swaps += 1;
            }
            swaps
        })
    };
    let mut inside = 0;
    for _ in 0..3000 {
        for rel in ["d/probe", "d/etc/passwd", "d/d/probe"] {
            if let Ok(data) = fs::read(m.path(rel)) {
                assert_eq!(data, b"INSIDE\n", "read {rel} through the mount: {data:?}");
                inside += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        swaps > 0 && inside > 0,
        "race did not run: {swaps} swaps, {inside} reads"
    );
}

#[test]
fn a_bind_mount_inside_the_scope_is_not_part_of_it() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("probe"), "OUTSIDE\n").unwrap();
    let scope = tempfile::tempdir().unwrap();
    fs::create_dir(scope.path().join("bound")).unwrap();
    let target = scope.path().join("bound");
    let ok = Command::new("mount")
        .arg("--bind")
        .arg(outside.path())
        .arg(&target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "bind mount needs root");
    struct Unbind(std::path::PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unbind = Unbind(target);
    let m = Mount::start(scope.path(), &[]);
    assert!(fs::read(m.path("bound/probe")).is_err());
    assert!(!names(&m.mp).contains(&b"bound".to_vec()));
}

#[test]
fn proc_self_fd_of_a_mount_file_stays_inside_the_mount() {
    let scope = scope_with_credentials();
    let m = Mount::start(scope.path(), &[]);
    let dir = fs::File::open(m.path("src")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let link = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    assert!(link.starts_with(&m.mp), "{link:?}");
    // Climbing with .. from inside the mount ends at the mount root, then leaves the mount
    // (the agent's own namespace), never at the scope's real parent through veilfs.
    let up = fs::read_dir(format!("/proc/self/fd/{fd}/../..")).unwrap();
    let up: Vec<_> = up.map(|e| e.unwrap().file_name()).collect();
    assert!(up.iter().any(|n| n == "view"), "{up:?}");
    // Hidden names stay hidden through the magic link too.
    assert!(fs::read(format!("/proc/self/fd/{fd}/../.env")).is_err());
}

#[test]
fn changes_in_the_real_folder_show_up_immediately_with_a_zero_ttl() {
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    fs::write(s.join("f.txt"), "one\n").unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PLAIN);
    let m = Mount::start(s, &["--profile", profile.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(m.path("f.txt")).unwrap(), "one\n");
    fs::write(s.join("f.txt"), "two, longer\n").unwrap();
    assert_eq!(fs::metadata(m.path("f.txt")).unwrap().len(), 12);
    assert_eq!(
        fs::read_to_string(m.path("f.txt")).unwrap(),
        "two, longer\n"
    );
    // Same size, new content: must not come from a stale page cache.
    fs::write(s.join("f.txt"), "TWO, LONGER\n").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("f.txt")).unwrap(),
        "TWO, LONGER\n"
    );
    fs::write(s.join("added.txt"), "new\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("added.txt")).unwrap(), "new\n");
    assert!(names(&m.mp).contains(&b"added.txt".to_vec()));
    fs::remove_file(s.join("added.txt")).unwrap();
    assert!(fs::metadata(m.path("added.txt")).is_err());
    assert!(!names(&m.mp).contains(&b"added.txt".to_vec()));
    // A file that becomes hidden-by-name (renamed to .env) disappears.
    fs::rename(s.join("f.txt"), s.join(".env")).unwrap();
    assert!(fs::metadata(m.path("f.txt")).is_err());
    assert!(fs::metadata(m.path(".env")).is_err());
}

#[test]
fn a_sparse_file_over_4_gib_reads_at_high_offsets_and_is_fail_closed_by_default() {
    let scope = tempfile::tempdir().unwrap();
    let big = scope.path().join("big.img");
    let f = fs::File::create(&big).unwrap();
    let off = 4_500_000_000u64;
    f.write_all_at(b"MARKER", off).unwrap();
    f.set_len(5 << 30).unwrap();
    drop(f);
    // The default profile cannot scan 5 GiB for secrets, so it refuses to serve it.
    {
        let m = Mount::start(scope.path(), &[]);
        assert_eq!(fs::metadata(m.path("big.img")).unwrap().len(), 5 << 30);
        // (In no-open mode the open itself succeeds and the first read is refused.)
        let e = fs::File::open(m.path("big.img"))
            .and_then(|mut f| f.read(&mut [0u8; 1]))
            .unwrap_err();
        assert_eq!(errno(&e), libc::EACCES);
    }
    // A profile without redaction serves it, at offsets beyond 4 GiB.
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PLAIN);
    let m = Mount::start(scope.path(), &["--profile", profile.to_str().unwrap()]);
    let mut f = fs::File::open(m.path("big.img")).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"MARKER");
    let mut tail = [1u8; 8];
    f.read_exact_at(&mut tail, (5 << 30) - 8).unwrap();
    assert_eq!(tail, [0u8; 8]);
}

#[test]
fn mmap_reads_the_same_bytes() {
    let scope = tempfile::tempdir().unwrap();
    // Text: the default profile scans it (binary would be refused as unscannable).
    let data: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i} of the mapped file\n").into_bytes())
        .collect();
    fs::write(scope.path().join("m.dat"), &data).unwrap();
    let m = Mount::start(scope.path(), &[]);
    let f = fs::File::open(m.path("m.dat")).unwrap();
    assert!(common::mmap_read(&f, data.len()) == data);
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn everyday_tools_work_through_the_mount() {
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    fs::create_dir_all(s.join("proj/src")).unwrap();
    fs::write(
        s.join("proj/Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    fs::write(
        s.join("proj/src/main.rs"),
        "fn main() { println!(\"needle from the mount\"); }\n",
    )
    .unwrap();
    fs::write(s.join("proj/.env"), "TOKEN=x\n").unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(s.join("proj")))
    };
    // The mount is read-only: cargo must find its lock file already there.
    run(Command::new("cargo")
        .args(["generate-lockfile", "--offline"])
        .current_dir(s.join("proj")));
    git(&["init", "-q"]);
    git(&["add", "Cargo.toml", "Cargo.lock", "src"]);
    git(&["commit", "-qm", "first commit"]);

    let m = Mount::start(s, &[]);
    let proj = m.path("proj");
    let ls = run(Command::new("ls").arg("-la").arg(&proj));
    assert!(ls.contains("Cargo.toml") && !ls.contains(".env"));
    let found = run(Command::new("find").arg(&proj).arg("-name").arg("*.rs"));
    assert!(found.contains("main.rs"));
    let grep = run(Command::new("grep").arg("-r").arg("needle").arg(&proj));
    assert!(grep.contains("main.rs"));
    let cat = run(Command::new("cat").arg(proj.join("src/main.rs")));
    assert!(cat.contains("needle"));

    let out = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(&proj)
        .arg(out.path().join("copy")));
    assert_eq!(
        fs::read(out.path().join("copy/src/main.rs")).unwrap(),
        fs::read(s.join("proj/src/main.rs")).unwrap()
    );
    assert!(!out.path().join("copy/.env").exists());

    let safe = format!("safe.directory={}", proj.display());
    let log = run(Command::new("git")
        .args(["-c", &safe, "log", "--oneline"])
        .current_dir(&proj));
    assert!(log.contains("first commit"), "{log}");
    let status = run(Command::new("git")
        .args(["-c", &safe, "status", "--porcelain"])
        .current_dir(&proj));
    assert!(status.trim().is_empty(), "git status: {status}");

    let target = tempfile::tempdir().unwrap();
    let built = Command::new("cargo")
        .args(["build", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", target.path())
        .current_dir(&proj)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = run(&mut Command::new(target.path().join("debug/hello")));
    assert!(ran.contains("needle from the mount"));
}

#[test]
fn a_tree_of_100k_files_lists_completely() {
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    let mut n = 0;
    for d in 0..100 {
        let dir = s.join(format!("d{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            fs::File::create(dir.join(format!("f{f:04}"))).unwrap();
            n += 1;
        }
    }
    let m = Mount::start(s, &[]);
    let out = Command::new("find")
        .arg(&m.mp)
        .arg("-type")
        .arg("f")
        .output()
        .unwrap();
    assert!(out.status.success());
    let count = out.stdout.iter().filter(|b| **b == b'\n').count();
    assert_eq!(count, n);
    let du = Command::new("du").arg("-s").arg(&m.mp).output().unwrap();
    assert!(du.status.success());
}

fn mount_fails(scope: &Path, mp: &Path, extra: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("mount")
        .args(extra)
        .arg(scope)
        .arg(mp)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "mount of {scope:?} at {mp:?} succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_mount_requests_are_refused_and_nothing_is_mounted() {
    let base = tempfile::tempdir().unwrap();
    let scope = base.path().join("scope");
    let mp = base.path().join("mp");
    fs::create_dir_all(scope.join("inner")).unwrap();
    fs::create_dir(&mp).unwrap();
    let not_mounted = |p: &Path| assert!(!veilfs::is_mount_point(&p.canonicalize().unwrap()));
    let e = mount_fails(&base.path().join("missing"), &mp, &[]);
    not_mounted(&mp);
    assert!(e.contains("does not exist"), "{e}");
    let e = mount_fails(&scope, &scope.join("inner"), &[]);
    assert!(e.contains("inside the scope"), "{e}");
    fs::create_dir(mp.join("sub")).unwrap();
    let e = mount_fails(&mp.join("sub"), &mp, &[]);
    assert!(
        e.contains("not empty") || e.contains("inside the mount point"),
        "{e}"
    );
    fs::remove_dir(mp.join("sub")).unwrap();
    fs::write(mp.join("x"), "").unwrap();
    let e = mount_fails(&scope, &mp, &[]);
    assert!(e.contains("not empty"), "{e}");
    fs::remove_file(mp.join("x")).unwrap();
    let bad = write_profile(
        base.path(),
        "bad.toml",
        "version = 1\nname = \"x\"\n[visibility]\nhdie = []\n",
    );
    let e = mount_fails(&scope, &mp, &["--profile", bad.to_str().unwrap()]);
    assert!(e.contains("bad.toml:4") && e.contains("hdie"), "{e}");
    not_mounted(&mp);
    // Already mounted.
    let m = Mount::start(&scope, &[]);
    let e = mount_fails(&scope, &m.mp, &[]);
    assert!(
        e.contains("already a mount point") || e.contains("not empty"),
        "{e}"
    );
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    let scope = scope_with_credentials();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut m = Mount::start(scope.path(), &[]);
        assert!(veilfs::is_mount_point(&m.mp.canonicalize().unwrap()));
        let child = m.child.take().unwrap();
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "exit after signal {sig}: {:?}",
            out.status
        );
        assert!(!veilfs::is_mount_point(&m.mp), "stale mount after {sig}");
        assert!(fs::read_dir(&m.mp).unwrap().next().is_none());
    }
}

#[test]
fn unmount_command_ends_the_mount_process() {
    let scope = scope_with_credentials();
    let m = Mount::start(scope.path(), &[]);
    let mp = m.mp.clone();
    let (status, _err) = m.stop();
    assert!(status.success());
    assert!(!veilfs::is_mount_point(&mp));
}

#[test]
fn outside_changes_reach_a_long_ttl_mount_through_the_watcher() {
    // The default profile caches names and attributes for 10 minutes while the folder is watched.
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    fs::create_dir(s.join("sub")).unwrap();
    fs::write(s.join("f.txt"), "one\n").unwrap();
    let m = Mount::start(s, &[]);
    assert_eq!(fs::read_to_string(m.path("f.txt")).unwrap(), "one\n");
    assert!(names(&m.path("sub")).is_empty());
    fs::write(s.join("f.txt"), "two, longer\n").unwrap();
    fs::write(s.join("sub/new.txt"), "new\n").unwrap();
    assert!(common::eventually(|| fs::metadata(m.path("f.txt"))
        .map(|md| md.len() == 12)
        .unwrap_or(false)));
    assert_eq!(
        fs::read_to_string(m.path("f.txt")).unwrap(),
        "two, longer\n"
    );
    assert!(common::eventually(
        || names(&m.path("sub")) == vec![b"new.txt".to_vec()]
    ));
    fs::remove_file(s.join("sub/new.txt")).unwrap();
    assert!(common::eventually(
        || names(&m.path("sub")).is_empty() && fs::metadata(m.path("sub/new.txt")).is_err()
    ));
    // Contents are kept in the kernel across opens: a same-size rewrite must still show.
    assert_eq!(
        fs::read_to_string(m.path("f.txt")).unwrap(),
        "two, longer\n"
    );
    fs::write(s.join("f.txt"), "six, longer\n").unwrap();
    assert!(common::eventually(|| fs::read_to_string(m.path("f.txt"))
        .unwrap()
        == "six, longer\n"));
    // Directories made outside are watched too, however deep, and keep being watched when
    // they move.
    fs::create_dir_all(s.join("a/b/c")).unwrap();
    fs::write(s.join("a/b/c/deep.txt"), "1\n").unwrap();
    assert!(common::eventually(|| fs::read_to_string(
        m.path("a/b/c/deep.txt")
    )
    .map(|t| t == "1\n")
    .unwrap_or(false)));
    fs::write(s.join("a/b/c/deep.txt"), "2\n").unwrap();
    assert!(common::eventually(|| fs::read_to_string(
        m.path("a/b/c/deep.txt")
    )
    .unwrap()
        == "2\n"));
    fs::rename(s.join("a/b"), s.join("moved")).unwrap();
    assert!(common::eventually(
        || fs::metadata(m.path("a/b")).is_err() && names(&m.path("moved")) == vec![b"c".to_vec()]
    ));
    assert_eq!(
        fs::read_to_string(m.path("moved/c/deep.txt")).unwrap(),
        "2\n"
    );
    fs::write(s.join("moved/c/deep.txt"), "3\n").unwrap();
    fs::write(s.join("moved/c/later.txt"), "4\n").unwrap();
    assert!(common::eventually(|| fs::read_to_string(
        m.path("moved/c/deep.txt")
    )
    .unwrap()
        == "3\n"
        && names(&m.path("moved/c")).len() == 2));
}
