//! `veilfs status`, `veilfs revoke` and `mount --expires` through real mounts: a revoked or
//! expired mount is gone at once, and an agent process working inside it is cut off.

use std::fs;
use std::process::{Command, Stdio};

use crate::common::{Mount, eventually, veilfs};

fn scope() -> tempfile::TempDir {
    let s = tempfile::tempdir().unwrap();
    fs::write(s.path().join("f.txt"), "hello\n").unwrap();
    s
}

#[test]
fn revoke_ends_a_mount_with_an_agent_working_inside_it() {
    let s = scope();
    let mut m = Mount::start(s.path(), &[]);
    let mp = m.mp.canonicalize().unwrap();
    let (ok, out, err) = veilfs(&["status", "--json"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("\"mountpoint\":\"{}\"", mp.display()))),
        "status does not list {}: {out}",
        mp.display()
    );
    // An agent with its working directory inside the mount, reading in a loop; it has read
    // the file (so the kernel holds its name, attributes and pages) before the revoke.
    let marks = tempfile::tempdir().unwrap();
    let read_once = marks.path().join("read");
    let mut agent = Command::new("sh")
        .arg("-c")
        .arg("while cat f.txt > /dev/null; do : > \"$1\"; done; exit 3")
        .arg("sh")
        .arg(&read_once)
        .current_dir(&mp)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(|| read_once.exists()), "the agent never read");
    let (ok, _out, err) = veilfs(&["revoke", &mp.display().to_string()]);
    assert!(ok, "{err}");
    assert!(err.contains("revoked"), "{err}");
    assert!(!veilfs::is_mount_point(&mp), "still mounted");
    // The agent's next read fails, cached or not: the loop ends by itself.
    let ended = eventually(|| agent.try_wait().unwrap().is_some());
    if !ended {
        let _ = agent.kill();
    }
    assert!(ended, "the agent kept reading after the revoke");
    assert_eq!(agent.wait().unwrap().code(), Some(3));
    let status = m.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "mount process: {status:?}");
    let (_, out, _) = veilfs(&["status", "--json"]);
    assert!(!out.contains(&format!("\"mountpoint\":\"{}\"", mp.display())));
}

#[test]
fn an_expired_mount_ends_by_itself() {
    let s = scope();
    let mut m = Mount::start(s.path(), &["--expires", "1s"]);
    assert_eq!(fs::read_to_string(m.path("f.txt")).unwrap(), "hello\n");
    // Waits for the mount process to end on its own.
    let status = m.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!veilfs::is_mount_point(&m.mp));
}

#[test]
fn bad_expiry_and_unknown_mounts_are_clear_errors() {
    let s = scope();
    let mp = tempfile::tempdir().unwrap();
    let (ok, _, err) = veilfs(&[
        "mount",
        "--expires",
        "soon",
        &s.path().display().to_string(),
        &mp.path().display().to_string(),
    ]);
    assert!(!ok);
    assert!(err.contains("`soon` is not a duration"), "{err}");
    let (ok, _, err) = veilfs(&["revoke", &mp.path().display().to_string()]);
    assert!(!ok);
    assert!(err.contains("no live veilfs mount"), "{err}");
}
