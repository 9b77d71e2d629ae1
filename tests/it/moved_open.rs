//! A file moved outside the mount (by another program, in the real folder) while the agent
//! holds it open, in the write modes: reads through the descriptor go on with the view of
//! where the file is now (or had, when it left the folder), the held object decides and never
//! the name, a file moved out of sight is refused, and changes through the descriptor are
//! refused with ESTALE so rollback still restores the folder exactly.

use crate::common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{WriteEnv, tree_hash, veilfs};

const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
const OTHER: &str = "ghp_Q7wErTy9UiOp3AsDfGh5JkLz2XcVbNm8Pq4R";

fn seed(s: &Path) {
    fs::create_dir_all(s.join("d/sub")).unwrap();
    fs::create_dir_all(s.join("private")).unwrap();
    fs::write(s.join("tok.txt"), format!("token = {TOKEN}\n")).unwrap();
    fs::write(s.join("twin.txt"), format!("token = {TOKEN}\n")).unwrap();
    fs::write(s.join("d/sub/deep.txt"), format!("deep = {TOKEN}\n")).unwrap();
    fs::write(s.join("d/sub/twin.txt"), format!("deep = {TOKEN}\n")).unwrap();
    fs::write(s.join("hide.txt"), "soon out of sight\n").unwrap();
    fs::write(s.join("leave.txt"), format!("leaving = {TOKEN}\n")).unwrap();
    fs::write(s.join("w.txt"), "writable\n").unwrap();
}

/// Secrets masked, `private/` denied, the breaker off; `mode` is "snapshot" or "overlay".
fn profile(mode: &str) -> String {
    common::SNAPSHOT_NO_BREAKER
        .replace("rule_sets = []", "rule_sets = [\"secrets\"]")
        .replace("\"snapshot\"", &format!("\"{mode}\""))
        + "[visibility]\ndeny = [\"private/\"]\n"
}

fn read_all(f: &mut fs::File) -> std::io::Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// The audit lines of `e`'s store that name a read of a moved file.
fn moved_reads(e: &WriteEnv) -> Vec<String> {
    let dir = Path::new(&e.store()).join("audit");
    let mut out = Vec::new();
    for f in fs::read_dir(&dir).unwrap() {
        let text = fs::read_to_string(f.unwrap().path()).unwrap();
        out.extend(
            text.lines()
                .filter(|l| l.contains("\"moved_outside\":true"))
                .map(String::from),
        );
    }
    out
}

fn moved_file_and_ancestor_are_read_with_their_view(mode: &str) {
    let e = WriteEnv::new(&profile(mode), seed);
    let m = e.mount();
    // Nothing is read before the moves: every read below reaches veilfs, not the kernel's
    // page cache. The twins show the views at those paths.
    let mut tok = fs::File::open(m.mp.join("tok.txt")).unwrap();
    let mut deep = fs::File::open(m.mp.join("d/sub/deep.txt")).unwrap();
    let masked = fs::read_to_string(m.mp.join("twin.txt")).unwrap();
    let deep_masked = fs::read_to_string(m.mp.join("d/sub/twin.txt")).unwrap();
    assert!(
        !masked.contains(TOKEN) && masked.starts_with("token = "),
        "{masked}"
    );
    assert!(!deep_masked.contains(TOKEN), "{deep_masked}");
    let real = e.scope.path();
    fs::rename(real.join("tok.txt"), real.join("moved.txt")).unwrap();
    fs::rename(real.join("d"), real.join("d2")).unwrap();
    assert_eq!(read_all(&mut tok).unwrap(), masked);
    assert_eq!(read_all(&mut deep).unwrap(), deep_masked);
    assert_eq!(tok.metadata().unwrap().len(), masked.len() as u64);
    assert_eq!(deep.metadata().unwrap().len(), deep_masked.len() as u64);
    drop((tok, deep));
    m.stop();
    if mode == "snapshot" {
        // Overlay mode never noticed the moves (see the test below): nothing to tell.
        let lines = moved_reads(&e);
        assert!(
            lines.iter().any(|l| l.contains("\"moved.txt\"")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("\"d2/sub/deep.txt\"")),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| !l.contains(TOKEN)), "{lines:?}");
    }
}

/// Snapshot mode: the path check every read makes used to answer ESTALE.
#[test]
fn snapshot_a_file_moved_outside_while_open_is_read_with_its_view() {
    moved_file_and_ancestor_are_read_with_their_view("snapshot");
}

/// Overlay mode: the kernel overlay keeps the names it resolved while the agent holds the
/// file (a change to its lower layer under a live mount is not looked at again), so reads go
/// on there too; this holds that.
#[test]
fn overlay_a_file_moved_outside_while_open_is_read_with_its_view() {
    moved_file_and_ancestor_are_read_with_their_view("overlay");
}

/// The held object decides, never the name: after the move another file is put at the old
/// name; the descriptor reads its own file, a new open reads the new one. A file moved into
/// a denied directory is refused through the descriptor; one moved out of the folder is read
/// with the view of the path it had.
#[test]
fn snapshot_the_descriptor_keeps_its_own_file_and_a_hidden_move_is_refused() {
    let e = WriteEnv::new(&profile("snapshot"), seed);
    let m = e.mount();
    let real = e.scope.path();
    let mut tok = fs::File::open(m.mp.join("tok.txt")).unwrap();
    let mut hide = fs::File::open(m.mp.join("hide.txt")).unwrap();
    let mut leave = fs::File::open(m.mp.join("leave.txt")).unwrap();
    let masked = fs::read_to_string(m.mp.join("twin.txt")).unwrap();
    fs::rename(real.join("tok.txt"), real.join("moved.txt")).unwrap();
    fs::write(real.join("tok.txt"), format!("other = {OTHER}\n")).unwrap();
    fs::rename(real.join("hide.txt"), real.join("private/hide.txt")).unwrap();
    // Out of the folder, on the same filesystem (a rename, not a copy).
    let away = tempfile::tempdir_in(real.parent().unwrap()).unwrap();
    fs::rename(real.join("leave.txt"), away.path().join("leave.txt")).unwrap();
    assert_eq!(read_all(&mut tok).unwrap(), masked);
    let other = fs::read_to_string(m.mp.join("tok.txt")).unwrap();
    assert!(
        other.starts_with("other = ") && !other.contains(OTHER),
        "{other}"
    );
    assert_eq!(read_all(&mut tok).unwrap(), masked);
    let err = read_all(&mut hide).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let left = read_all(&mut leave).unwrap();
    assert!(
        left.starts_with("leaving = ") && !left.contains(TOKEN),
        "{left}"
    );
    // The name swapped back: the descriptor's file is no longer there, the new one is.
    fs::rename(real.join("tok.txt"), real.join("other.txt")).unwrap();
    fs::rename(real.join("moved.txt"), real.join("tok.txt")).unwrap();
    assert_eq!(read_all(&mut tok).unwrap(), masked);
    drop((tok, hide, leave));
    m.stop();
    let lines = moved_reads(&e);
    assert!(
        lines.iter().any(|l| l.contains("\"leave.txt\"")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("private")), "{lines:?}");
    // The refusal is audited under the path the agent knew, never the hidden one.
    let audit = fs::read_dir(Path::new(&e.store()).join("audit"))
        .unwrap()
        .map(|f| fs::read_to_string(f.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        audit.lines().any(|l| l.contains("hide.txt")
            && l.contains("moved outside the mount to a path the agent may not see")),
        "{audit}"
    );
    assert!(!audit.contains("private"), "{audit}");
}

/// Runs `cp -a from to` (keeps modes and times, which `tree_hash` compares).
fn cp_a(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A write (and a truncate, and a masked edit's merge) through a descriptor whose file was
/// moved outside is refused: the pre-image was captured at the old path, where rollback
/// restores it, while the write would change the file at the new one, where nothing would
/// undo it. The real file is unchanged; rollback restores the captured path and leaves the
/// outside program's moves alone: the folder ends exactly as a reference copy that went
/// through the same moves, plus the restored `w.txt`.
#[test]
fn snapshot_a_write_through_a_descriptor_moved_outside_is_refused_and_rollback_is_exact() {
    let e = WriteEnv::new(&profile("snapshot"), seed);
    let real = e.scope.path();
    let refs = tempfile::tempdir().unwrap();
    let reference = refs.path().join("r");
    cp_a(real, &reference);
    let m = e.mount();
    let w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.mp.join("w.txt"))
        .unwrap();
    // A masked file opened for writing is edited through a scratch copy of its view, merged
    // into the real file at close (an edit beside the masked span merges cleanly).
    let mut d = fs::OpenOptions::new()
        .append(true)
        .open(m.mp.join("d/sub/twin.txt"))
        .unwrap();
    let mut t = fs::OpenOptions::new()
        .append(true)
        .open(m.mp.join("twin.txt"))
        .unwrap();
    for root in [real, reference.as_path()] {
        fs::rename(root.join("w.txt"), root.join("w2.txt")).unwrap();
        fs::rename(root.join("d"), root.join("d2")).unwrap();
        fs::rename(root.join("twin.txt"), root.join("twin-moved.txt")).unwrap();
    }
    // And another file put at its name.
    fs::write(real.join("twin.txt"), "a new file\n").unwrap();
    cp_a(&real.join("twin.txt"), &reference.join("twin.txt"));
    let after_move = tree_hash(real);
    assert_eq!(after_move, tree_hash(&reference));
    let err = w.write_at(b"X", 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    let err = w.set_len(1).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    // SAFETY: fallocate on a descriptor this test holds open.
    let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&w), 0, 0, 1 << 16) };
    let err = std::io::Error::last_os_error();
    assert_eq!((r, err.raw_os_error()), (-1, Some(libc::ESTALE)), "{err}");
    // Reads through it go on.
    let mut buf = [0u8; 9];
    assert_eq!(w.read_at(&mut buf, 0).unwrap(), 9);
    assert_eq!(&buf, b"writable\n");
    for f in [&mut d, &mut t] {
        std::io::Write::write_all(f, b"appended = nothing secret\n").unwrap();
        let err = f.sync_all().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    }
    drop((w, d, t));
    assert_eq!(tree_hash(real), after_move);
    m.stop();
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    // The session captured w.txt (at its write-open): rollback puts it back, as it does for
    // any captured path it finds changed; the moved file itself was never touched.
    cp_a(&reference.join("w2.txt"), &reference.join("w.txt"));
    assert_eq!(tree_hash(real), tree_hash(&reference), "{out}{err}");
}

/// A read-only mount (the default: watcher, no-open mode, the kernel's page cache kept): a file
/// moved into a denied directory while the agent holds it open is refused from the watcher's
/// report on, so bytes written into it there never reach the agent; a file moved within sight
/// is read with its view, and files nobody moved read as before.
#[test]
fn read_only_a_file_moved_out_of_sight_while_open_is_refused() {
    let scope = tempfile::tempdir().unwrap();
    let real = scope.path();
    seed(real);
    let pdir = tempfile::tempdir().unwrap();
    let p = common::write_profile(
        pdir.path(),
        "ro.toml",
        "version = 1\nname = \"ro\"\n[visibility]\ndeny = [\"private/\"]\n[redaction]\nrule_sets = [\"secrets\"]\n",
    );
    let m = common::Mount::start(real, &["--profile", p.to_str().unwrap()]);
    let mut hide = fs::File::open(m.mp.join("hide.txt")).unwrap();
    let mut tok = fs::File::open(m.mp.join("tok.txt")).unwrap();
    assert_eq!(read_all(&mut hide).unwrap(), "soon out of sight\n");
    let masked = read_all(&mut tok).unwrap();
    assert!(!masked.contains(TOKEN), "{masked}");
    fs::rename(real.join("hide.txt"), real.join("private/hide.txt")).unwrap();
    fs::write(real.join("private/hide.txt"), format!("now = {OTHER}\n")).unwrap();
    fs::rename(real.join("tok.txt"), real.join("d/tok.txt")).unwrap();
    assert!(
        common::eventually(
            || read_all(&mut hide).is_err_and(|e| e.raw_os_error() == Some(libc::EACCES))
        ),
        "a file moved into a denied directory is still read through the old descriptor"
    );
    assert_eq!(read_all(&mut tok).unwrap(), masked);
    let twin = fs::read_to_string(m.mp.join("twin.txt")).unwrap();
    assert_eq!(twin, masked);
}
