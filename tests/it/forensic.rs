//! Sessions recorded by the real guard (capture → record → change, as the mount's write path
//! calls it), then rolled back through the library and through the real `veilfs` binary; the tree is compared with the
//! original by content, kind, mode, owner, mtime and xattrs.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use veilfs::Store;
use veilfs::WriteMode;
use veilfs::testing::backing;
use veilfs::testing::rollback;
use veilfs::{Guard, GuardError};

/// Drives the real [`Guard`] the way the FUSE write path does (src/fs/write.rs): capture (the
/// parent directory too for a create, remove or rename; every known name of a hard-linked file),
/// record the change, make it in the real folder, record the post-image; after a rename or
/// removal, tell the guard which paths no longer hold what it captured. What is captured, when,
/// and what the journal says is the guard's own code, not a copy of it.
struct Session {
    g: Guard,
    root: OwnedFd,
    scope: PathBuf,
    /// Capture parent directories (as the mount does), so directory mtimes are restored.
    parents: bool,
}

impl Session {
    fn start(store_dir: &Path, scope: &Path) -> Session {
        let store = Store::create_or_open(store_dir).unwrap();
        Session {
            g: Guard::start(store, scope, WriteMode::Snapshot, "test", u64::MAX, None).unwrap(),
            root: backing::open_root(scope).unwrap(),
            scope: scope.to_path_buf(),
            parents: true,
        }
    }
    fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.scope.join(rel)
    }
    fn capture(&self, rel: impl AsRef<Path>) {
        self.g.capture(self.root.as_fd(), rel.as_ref()).unwrap();
    }
    fn capture_parent(&self, rel: &str) {
        if self.parents {
            self.capture(Path::new(rel).parent().unwrap());
        }
    }
    /// Captures an existing object about to change in content or metadata under every name
    /// the guard knows for it (or refuses, as the mount does); returns those names.
    fn try_capture_object(&self, rel: &str) -> Result<Vec<PathBuf>, GuardError> {
        let m = self.p(rel).symlink_metadata().unwrap();
        if m.is_dir() {
            self.g.capture(self.root.as_fd(), Path::new(rel))?;
            return Ok(vec![rel.into()]);
        }
        self.g.capture_object(
            self.root.as_fd(),
            (m.dev(), m.ino()),
            Path::new(rel),
            m.nlink(),
        )
    }
    fn change(&self, rel: &str, op: &str) {
        self.g.record_change(Path::new(rel), op);
    }
    fn post(&self, names: &[PathBuf]) {
        let fd = backing::open_path(self.root.as_fd(), &names[0]).unwrap();
        self.g.post_image(fd.as_fd(), names);
        self.g.check_running().unwrap();
    }
    /// Captures, records and makes a content or metadata change of an existing object.
    fn modify(&self, rel: &str, op: &str, f: impl FnOnce()) {
        let names = self.try_capture_object(rel).unwrap();
        self.change(rel, op);
        f();
        self.post(&names);
    }
    fn try_write(&self, rel: &str, data: &[u8]) -> Result<(), GuardError> {
        let names = if self.p(rel).symlink_metadata().is_ok() {
            self.try_capture_object(rel)?
        } else {
            self.capture_parent(rel);
            self.capture(rel);
            vec![rel.into()]
        };
        self.change(rel, "write");
        fs::write(self.p(rel), data).unwrap();
        self.post(&names);
        Ok(())
    }
    fn write(&self, rel: &str, data: &[u8]) {
        self.try_write(rel, data).unwrap()
    }
    fn truncate(&self, rel: &str, len: u64) {
        self.modify(rel, "truncate", || {
            fs::OpenOptions::new()
                .write(true)
                .open(self.p(rel))
                .unwrap()
                .set_len(len)
                .unwrap()
        });
    }
    fn chmod(&self, rel: &str, mode: u32) {
        self.modify(rel, "chmod", || {
            fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)).unwrap()
        });
    }
    fn touch(&self, rel: &str, secs: i64) {
        self.modify(rel, "utimens", || {
            let (parent, name) = backing::open_parent(self.root.as_fd(), Path::new(rel)).unwrap();
            let t = backing::SetTime::At(secs, 0);
            backing::utimens_at(parent.as_fd(), &name, t, t).unwrap();
        });
    }
    fn setxattr(&self, rel: &str, name: &str, value: &[u8]) {
        self.modify(rel, "setxattr", || {
            let fd = backing::open_path(self.root.as_fd(), Path::new(rel)).unwrap();
            backing::setxattr(fd.as_fd(), OsStr::new(name), value, 0).unwrap();
        });
    }
    /// Captures a name about to be created (its parent, and the name itself as absent).
    fn creating(&self, rel: &str, op: &str) {
        self.capture_parent(rel);
        self.capture(rel);
        self.change(rel, op);
    }
    fn mkdir(&self, rel: &str) {
        self.creating(rel, "mkdir");
        fs::create_dir(self.p(rel)).unwrap();
    }
    fn symlink(&self, rel: &str, target: &str) {
        self.creating(rel, "symlink");
        symlink(target, self.p(rel)).unwrap();
    }
    fn hardlink(&self, existing: &str, rel: &str) {
        self.creating(rel, "link");
        fs::hard_link(self.p(existing), self.p(rel)).unwrap();
        let m = self.p(rel).symlink_metadata().unwrap();
        self.g
            .linked((m.dev(), m.ino()), Path::new(existing), Path::new(rel));
    }
    fn remove(&self, rel: &str, op: &str) {
        let m = self.p(rel).symlink_metadata().unwrap();
        self.capture_parent(rel);
        self.capture(rel);
        self.change(rel, op);
        if m.is_dir() {
            fs::remove_dir(self.p(rel)).unwrap();
        } else {
            fs::remove_file(self.p(rel)).unwrap();
            self.g.unlinked((m.dev(), m.ino()), Path::new(rel));
        }
        self.g.forget_subtree(Path::new(rel));
    }
    fn unlink(&self, rel: &str) {
        self.remove(rel, "unlink")
    }
    fn rmdir(&self, rel: &str) {
        self.remove(rel, "rmdir")
    }
    /// `perform: false` simulates a crash after the Rename record, before the rename.
    fn rename_ex(&self, from: &str, to: &str, exchange: bool, perform: bool) {
        self.capture_parent(from);
        self.capture_parent(to);
        if self.p(to).symlink_metadata().is_ok() {
            self.capture(to);
        }
        if self.p(from).symlink_metadata().unwrap().is_dir() {
            self.capture(from);
        }
        let (from, to) = (Path::new(from), Path::new(to));
        self.g
            .capture_for_rename(self.root.as_fd(), &[], from, to, exchange)
            .unwrap();
        if !perform {
            return;
        }
        let (pa, na) = backing::open_parent(self.root.as_fd(), from).unwrap();
        let (pb, nb) = backing::open_parent(self.root.as_fd(), to).unwrap();
        let flags = if exchange { libc::RENAME_EXCHANGE } else { 0 };
        backing::rename(pa.as_fd(), &na, pb.as_fd(), &nb, flags).unwrap();
        self.g.forget_subtree(from);
        self.g.forget_subtree(to);
        self.g.renamed(from, to, exchange);
    }
    fn rename(&self, from: &str, to: &str) {
        self.rename_ex(from, to, false, true)
    }
    fn exchange(&self, a: &str, b: &str) {
        self.rename_ex(a, b, true, true)
    }
    fn end(self) -> String {
        self.g.end();
        self.g.session_id().to_string()
    }
    /// The mount process died: no `SessionEnd`.
    fn crash(self) -> String {
        self.g.session_id().to_string()
    }
}

/// Everything rollback promises to restore, one line per path (atime left out: reads move it).
fn tree(root: &Path) -> Vec<String> {
    let rootfd = backing::open_root(root).unwrap();
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let m = fs::symlink_metadata(&full).unwrap();
        let content = if m.is_file() {
            blake3::hash(&fs::read(&full).unwrap()).to_hex()[..16].to_string()
        } else if m.file_type().is_symlink() {
            fs::read_link(&full).unwrap().display().to_string()
        } else if !m.is_dir() {
            format!("special rdev={}", m.rdev())
        } else {
            let mut names: Vec<_> = fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                stack.push(rel.join(n));
            }
            "dir".to_string()
        };
        let fd = backing::open_path(rootfd.as_fd(), &rel).unwrap();
        let mut x = backing::all_xattrs(fd.as_fd()).unwrap();
        x.sort();
        out.push(format!(
            "{} {content} {:o} {}:{} nlink={} mtime={}.{} {:?}",
            rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.nlink() },
            m.mtime(),
            m.mtime_nsec(),
            x
        ));
    }
    out.sort();
    out
}

struct Env {
    _tmp: tempfile::TempDir,
    scope: PathBuf,
    store: PathBuf,
}

/// A scope with a few files, dirs, a symlink, an xattr, odd modes and old mtimes.
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let scope = tmp.path().join("scope");
    let store = tmp.path().join("store");
    fs::create_dir_all(scope.join("src/deep")).unwrap();
    fs::create_dir_all(scope.join("empty")).unwrap();
    fs::create_dir_all(scope.join("d/sub")).unwrap();
    fs::write(scope.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    fs::write(scope.join("b.bin"), [0u8, 1, 2, 3, 255, 254].repeat(1000)).unwrap();
    fs::write(scope.join("src/main.rs"), "fn main() {}\n").unwrap();
    fs::write(scope.join("src/deep/x"), "deep\n").unwrap();
    fs::write(scope.join("d/f"), "in d\n").unwrap();
    fs::write(scope.join("d/sub/g"), "in d/sub\n").unwrap();
    fs::write(scope.join("y"), "old y\n").unwrap();
    fs::write(scope.join("x"), "x content\n").unwrap();
    symlink("a.txt", scope.join("link")).unwrap();
    fs::set_permissions(scope.join("src/main.rs"), fs::Permissions::from_mode(0o755)).unwrap();
    let fd = backing::open_root(&scope).unwrap();
    let a = backing::open_path(fd.as_fd(), Path::new("a.txt")).unwrap();
    backing::setxattr(a.as_fd(), OsStr::new("user.tag"), b"orig", 0).unwrap();
    // Old, distinct times everywhere (children first so dir mtimes stick).
    let mut all: Vec<PathBuf> = Vec::new();
    let mut stack = vec![scope.clone()];
    while let Some(p) = stack.pop() {
        all.push(p.clone());
        if p.symlink_metadata().unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let rel = p.strip_prefix(&scope).unwrap();
        let t = backing::SetTime::At(1_600_000_000 + i as i64 * 1000, 123_456_789);
        if rel.as_os_str().is_empty() {
            backing::utimens_fd(fd.as_fd(), t, t).unwrap();
        } else {
            let (parent, name) = backing::open_parent(fd.as_fd(), rel).unwrap();
            backing::utimens_at(parent.as_fd(), &name, t, t).unwrap();
        }
    }
    Env {
        _tmp: tmp,
        scope,
        store,
    }
}

/// Plans a rollback, waiting out a false "still live". A session is live while its journal is
/// flock'd. This test process holds its sessions' journals open, and a child that another test
/// thread is spawning holds a copy of every fd from fork until exec: for that instant an ended
/// session looks live. All integration tests share this process (and spawn `veilfs` all the
/// time), so the instant does come. A refused rollback changes nothing, so trying again is safe.
fn plan_lib(store: &Store, sessions: &[String]) -> rollback::Plan {
    let mut plan = None;
    let settled = crate::common::eventually(|| {
        match rollback::plan(store, sessions, &[]) {
            Err(rollback::RollbackError::Live { .. }) => return false,
            r => plan = Some(r.unwrap()),
        }
        true
    });
    assert!(settled, "sessions {sessions:?} stayed live");
    plan.unwrap()
}

fn rollback_lib(store: &Path, session: &str) -> rollback::Report {
    let store = Store::open(store).unwrap();
    let plan = plan_lib(&store, &[session.to_string()]);
    rollback::apply(&store, &plan, false, &|_| {}).unwrap()
}

/// Runs the real binary; a rollback refused because a session looked live is retried (see
/// [`plan_lib`]).
fn veilfs(args: &[&str]) -> (i32, String, String) {
    let mut result = None;
    let settled = crate::common::eventually(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_veilfs"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() == Some(1) && err.contains("is still live") {
            return false;
        }
        result = Some((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            err,
        ));
        true
    });
    assert!(settled, "veilfs {args:?}: a session stayed live");
    result.unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn edits_truncation_unlink_rmdir_and_metadata_roll_back_exactly() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"one\nTWO\nthree\nfour\n");
    g.write("a.txt", b"second write, not re-captured\n");
    g.truncate("b.bin", 10);
    g.unlink("src/deep/x");
    g.rmdir("src/deep");
    g.rmdir("empty");
    g.chmod("src/main.rs", 0o600);
    g.touch("y", 42);
    g.setxattr("a.txt", "user.tag", b"changed");
    g.setxattr("x", "user.new", b"added");
    g.unlink("link");
    let id = g.end();
    assert_ne!(tree(&e.scope), orig);
    let r = rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
    assert!(r.restored > 0 && r.warnings.is_empty(), "{r:?}");
}

#[test]
fn renames_over_files_and_directory_renames_with_later_writes() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.rename("x", "y"); // over an existing file
    g.write("y", b"written after the rename\n");
    g.rename("d", "e"); // a directory
    g.write("e/f", b"changed inside the moved dir\n");
    g.write("e/new", b"created inside the moved dir\n");
    g.rename("e/sub", "sub2");
    g.write("x", b"a new x where the old one was renamed away\n");
    let id = g.end();
    let r = rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
    assert_eq!(r.renamed, 3, "{r:?}");
}

#[test]
fn created_files_dirs_symlinks_and_hardlinks_are_removed() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.write("new.txt", b"new\n");
    g.mkdir("newdir");
    g.mkdir("newdir/inner");
    g.write("newdir/inner/file", b"deep new\n");
    g.symlink("newdir/ln", "../a.txt");
    g.hardlink("a.txt", "hard");
    g.write("src/added.rs", b"// added\n");
    let id = g.end();
    rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
}

#[test]
fn a_rename_that_never_happened_is_skipped() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"changed\n");
    g.rename_ex("x", "y", false, false); // crash: journal has the Rename, the fs does not
    let id = g.crash();
    rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
    // A directory rename that never happened, with the destination free.
    let g = Session::start(&e.store, &e.scope);
    g.rename_ex("d", "moved", false, false);
    let id = g.crash();
    rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
}

#[test]
fn rollback_twice_and_rollback_of_a_rollback() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.rename("d", "e");
    g.mkdir("d");
    g.write("d/f", b"a different d\n");
    g.unlink("x");
    g.write("a.txt", b"edited\n");
    let id = g.end();
    let after = tree(&e.scope);
    let r1 = rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
    // Twice: nothing left to do, same result.
    let r2 = rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
    assert!(r2.undo_sessions.is_empty(), "{r2:?}");
    // Undo the undo: back to what the session left.
    rollback_lib(&e.store, &r1.undo_sessions[0]);
    assert_eq!(tree(&e.scope), after);
    // And the original session can be rolled back again.
    rollback_lib(&e.store, &id);
    assert_eq!(tree(&e.scope), orig);
}

#[test]
fn a_rollback_that_crashed_half_way_resumes() {
    // Crash after k steps, for every k: the second run finishes the job exactly.
    for k in 1.. {
        let e = env();
        let orig = tree(&e.scope);
        let g = Session::start(&e.store, &e.scope);
        g.rename("d", "e");
        g.mkdir("d");
        g.write("a.txt", b"edited\n");
        g.write("new", b"new\n");
        g.unlink("y");
        g.write("e/f", b"inside\n");
        let id = g.end();
        let store = Store::open(&e.store).unwrap();
        let plan = plan_lib(&store, std::slice::from_ref(&id));
        let n = plan.steps.len();
        let done = std::cell::Cell::new(0);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rollback::apply(&store, &plan, false, &|_| {
                done.set(done.get() + 1);
                if done.get() == k {
                    panic!("simulated crash");
                }
            })
        }));
        assert!(crashed.is_err());
        let r2 = rollback_lib(&e.store, &id);
        assert_eq!(tree(&e.scope), orig, "crash after {k} of {n} steps");
        assert_eq!(r2.conflicts, 0, "{r2:?}");
        if k >= n {
            break;
        }
    }
}

#[test]
fn conflicts_refuse_without_force_and_force_is_undoable() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"agent\n");
    g.write("src/main.rs", b"agent main\n");
    let id = g.end();
    fs::write(e.scope.join("a.txt"), "someone else\n").unwrap();
    let outside = tree(&e.scope);
    let st = s(&e.store);
    let (code, out, _) = veilfs(&["rollback", "--store", st, "--session", &id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("conflict a.txt"), "{out}");
    assert!(!out.contains("conflict src/main.rs"), "{out}");
    assert_eq!(tree(&e.scope), outside, "nothing changed");
    let (code, out, err) = veilfs(&["rollback", "--store", st, "--session", &id, "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tree(&e.scope), orig);
    // The forced rollback captured "someone else": undoing it brings that back.
    let store = Store::open(&e.store).unwrap();
    let undo = store.sessions().unwrap().last().unwrap().id.clone();
    let (code, out, err) = veilfs(&["rollback", "--store", st, "--session", &undo]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        fs::read_to_string(e.scope.join("a.txt")).unwrap(),
        "someone else\n"
    );
}

#[test]
fn a_corrupt_object_refuses_the_whole_rollback() {
    let e = env();
    let g = Session::start(&e.store, &e.scope);
    g.write("x", b"changed x\n");
    g.write("a.txt", b"changed a\n");
    let id = g.end();
    let before = tree(&e.scope);
    let store = Store::open(&e.store).unwrap();
    let a_id = veilfs::ObjectId::of(b"one\ntwo\nthree\n");
    let obj = store.object_path(&a_id);
    fs::write(
        &obj,
        zstd::encode_all(&b"one\ntwo\nthree\nEVIL\n"[..], 1).unwrap(),
    )
    .unwrap();
    let (code, out, err) = veilfs(&["rollback", "--store", s(&e.store), "--session", &id]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&a_id.to_string()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(tree(&e.scope), before, "no partial rollback");
    let (code, out, _) = veilfs(&["verify", "--store", s(&e.store)]);
    assert_eq!(code, 1);
    assert!(out.contains(&a_id.to_string()), "{out}");
    // A missing object is refused the same way.
    fs::remove_file(&obj).unwrap();
    let (code, _, err) = veilfs(&["rollback", "--store", s(&e.store), "--session", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("missing"), "{err}");
    assert_eq!(tree(&e.scope), before);
}

#[test]
fn a_tampered_journal_line_is_named_by_verify_and_refused_by_rollback() {
    let e = env();
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"changed\n");
    g.unlink("x");
    let id = g.end();
    let (code, out, _) = veilfs(&["verify", "--store", s(&e.store)]);
    assert_eq!(code, 0, "{out}");
    let store = Store::open(&e.store).unwrap();
    let path = store.session_path(&id);
    let text = fs::read_to_string(&path).unwrap();
    let tampered = text.replacen("\"op\":\"unlink\"", "\"op\":\"write\"", 1);
    assert_ne!(text, tampered);
    fs::write(&path, tampered).unwrap();
    let bad_line = text.lines().position(|l| l.contains("\"unlink\"")).unwrap() + 2;
    let (code, out, _) = veilfs(&["verify", "--store", s(&e.store)]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("{id}.jsonl:{bad_line}:")), "{out}");
    let before = tree(&e.scope);
    let (code, _, err) = veilfs(&["rollback", "--store", s(&e.store), "--session", &id]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{id}.jsonl:{bad_line}:")), "{err}");
    assert_eq!(tree(&e.scope), before);
}

#[test]
fn a_truncated_last_line_is_tolerated_by_rollback_and_reported_by_verify() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"changed\n");
    let id = g.crash();
    let store = Store::open(&e.store).unwrap();
    let path = store.session_path(&id);
    // A crashed session's journal ends in the zeros its writer wrote ahead of its records;
    // the torn record is where the next append would have gone.
    let data = fs::read(&path).unwrap();
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let lines = data[..end].iter().filter(|b| **b == b'\n').count();
    let torn = format!("{{\"seq\":{lines},\"time_ns\":17,\"prev\":\"ab");
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, torn.as_bytes(), end as u64).unwrap();
    drop(f);
    let (code, out, _) = veilfs(&["verify", "--store", s(&e.store)]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("{id}.jsonl:{}:", lines + 1)) && out.contains("truncated"),
        "{out}"
    );
    let (code, out, err) = veilfs(&["rollback", "--store", s(&e.store)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(tree(&e.scope), orig);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let e = env();
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"changed\n");
    g.write("new.txt", b"new\n");
    g.rename("x", "z");
    g.end();
    let before = tree(&e.scope);
    let (code, out, err) = veilfs(&["rollback", "--store", s(&e.store), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("remove   new.txt"), "{out}");
    assert!(out.contains("rename   z -> x"), "{out}");
    assert!(out.contains("restore  a.txt  (content "), "{out}");
    assert!(out.contains(", 0644)"), "{out}");
    assert_eq!(tree(&e.scope), before);
}

#[test]
fn rollback_limited_to_paths_follows_renames() {
    let e = env();
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"changed a\n");
    g.rename("d", "e");
    g.write("e/f", b"changed f\n");
    g.write("x", b"changed x\n");
    g.end();
    let (code, out, err) = veilfs(&["rollback", "--store", s(&e.store), "d", "x"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fs::read_to_string(e.scope.join("d/f")).unwrap(), "in d\n");
    assert_eq!(
        fs::read_to_string(e.scope.join("x")).unwrap(),
        "x content\n"
    );
    assert!(!e.scope.join("e").exists());
    assert_eq!(
        fs::read_to_string(e.scope.join("a.txt")).unwrap(),
        "changed a\n"
    );
}

#[test]
fn since_rolls_back_several_sessions_newest_first() {
    let e = env();
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"first session\n");
    g.rename("x", "x2");
    g.end();
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"second session\n");
    g.rename("x2", "x3");
    g.end();
    let (code, out, err) = veilfs(&["rollback", "--store", s(&e.store), "--since", "0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tree(&e.scope), orig);
}

#[test]
fn log_and_diff_show_what_happened() {
    let e = env();
    let g = Session::start(&e.store, &e.scope);
    g.write("a.txt", b"one\nTWO\nthree\n");
    g.write("b.bin", &[9u8, 0, 9]);
    g.write("new.txt", b"hello\n");
    g.unlink("x");
    let id = g.end();
    let st = s(&e.store);
    let (code, out, _) = veilfs(&["log", "--store", st]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("snapshot") && out.contains("ended"),
        "{out}"
    );
    let (code, out, _) = veilfs(&["log", "--store", st, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["id"], id.as_str());
    let (code, out, _) = veilfs(&["log", "--store", st, "--session", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("capture  a.txt") && out.contains("unlink   x"),
        "{out}"
    );
    let (code, out, _) = veilfs(&["log", "--store", st, "--session", &id, "--json"]);
    assert_eq!(code, 0);
    for l in out.lines() {
        let _: veilfs::Record = serde_json::from_str(l).unwrap();
    }
    let (code, out, err) = veilfs(&["diff", "--store", st, "--session", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"),
        "{out}"
    );
    assert!(out.contains("binary b.bin: size 6000 -> 3"), "{out}");
    assert!(out.contains("created new.txt"), "{out}");
    assert!(out.contains("deleted x"), "{out}");
    let (code, out, _) = veilfs(&["diff", "--store", st, "--session", &id, "x"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted x") && !out.contains("a.txt"), "{out}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let e = env();
    let missing = e.store.join("nope");
    let (code, _, err) = veilfs(&["log", "--store", s(&missing)]);
    assert_eq!(code, 1);
    assert!(err.contains("no store at") && err.contains("nope"), "{err}");
    let g = Session::start(&e.store, &e.scope);
    g.end();
    let (code, _, err) = veilfs(&["rollback", "--store", s(&e.store), "--session", "2020-nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session \"2020-nope\""), "{err}");
    let (code, _, err) = veilfs(&["rollback", "--store", s(&e.store), "--since", "yesterday"]);
    assert_eq!(code, 1);
    assert!(err.contains("--since"), "{err}");
}

#[test]
fn exchange_renames_fifos_hardlinks_and_non_utf8_names_roll_back() {
    let e = env();
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(e.scope.join(odd), "latin-1 name\n").unwrap();
    fs::hard_link(e.scope.join("x"), e.scope.join("x-link")).unwrap();
    let fifo = std::ffi::CString::new(e.scope.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let orig = tree(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.exchange("a.txt", "y");
    g.exchange("d", "src"); // two directories
    // `x` has a second name made outside the mount: the guard cannot snapshot that name, so
    // a write through `x` is refused (EACCES) and changes nothing.
    let refused = g.try_write("x", b"written through one of two hard links\n");
    assert_eq!(refused.unwrap_err().errno(), libc::EACCES);
    // A link made in the session: a write through the new name captures the old one first.
    g.hardlink("b.bin", "b-link");
    g.write("b-link", b"written through the session's own hard link\n");
    // A non-UTF-8 name.
    let odd_path = PathBuf::from(odd);
    g.capture(&odd_path);
    g.g.record_change(&odd_path, "write");
    fs::write(e.scope.join(odd), "changed\n").unwrap();
    g.unlink("pipe");
    let id = g.end();
    let (code, out, _) = veilfs(&["log", "--store", s(&e.store), "--session", &id, "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"bytes_hex\":\"636166e92e747874\""), "{out}");
    let (code, out, err) = veilfs(&["rollback", "--store", s(&e.store)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tree(&e.scope), orig);
}

/// The tree without directory mtimes (which only parent captures can restore).
fn tree_no_dir_times(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .map(|l| {
            if l.contains(" dir ") {
                l.split(" mtime=").next().unwrap().to_string()
            } else {
                l
            }
        })
        .collect()
}

#[test]
fn without_parent_captures_everything_but_directory_times_is_restored() {
    let e = env();
    let orig = tree_no_dir_times(&e.scope);
    let mut g = Session::start(&e.store, &e.scope);
    g.parents = false;
    g.chmod("src/deep", 0o700); // captured before its child...
    g.unlink("src/deep/x");
    g.rmdir("src/deep"); // ...so its only Capture precedes the child's
    g.rename("d", "e");
    g.write("e/new", b"new\n");
    g.mkdir("made");
    g.write("made/file", b"f\n");
    g.write("a.txt", b"edited\n");
    let id = g.end();
    fs::write(e.scope.join("made/outsider"), "not the agent's").unwrap();
    fs::remove_file(e.scope.join("made/outsider")).unwrap();
    let r = rollback_lib(&e.store, &id);
    assert_eq!(tree_no_dir_times(&e.scope), orig, "{r:?}");
}

/// Rollback puts the folder back as it was, so a directory the session made goes, whatever is
/// in it; entries no record names (another program's, or the session's own whose records an OS
/// crash lost) are moved with it into the store, never deleted.
#[test]
fn a_directory_someone_else_filled_is_moved_whole_into_the_store() {
    let e = env();
    let orig = tree_no_dir_times(&e.scope);
    let g = Session::start(&e.store, &e.scope);
    g.mkdir("made");
    g.write("made/file", b"f\n");
    let id = g.end();
    fs::write(e.scope.join("made/outsider"), "not the agent's").unwrap();
    let r = rollback_lib(&e.store, &id);
    assert_eq!(tree_no_dir_times(&e.scope), orig, "{r:?}");
    let w = r
        .warnings
        .iter()
        .find(|w| w.contains("moved whole to"))
        .unwrap_or_else(|| panic!("{r:?}"));
    let kept = PathBuf::from(w.rsplit("moved whole to ").next().unwrap());
    assert!(kept.starts_with(&e.store), "{w}");
    assert_eq!(
        fs::read_to_string(kept.join("outsider")).unwrap(),
        "not the agent's"
    );
    assert!(
        !kept.join("file").exists(),
        "the recorded file was removed by its own step"
    );
}
