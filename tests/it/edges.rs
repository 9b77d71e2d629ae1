//! Noise at the edges of a mount's life (issue #15 item 8): `veilfs unmount` ends the mount
//! process at once, cleanly, and programs that probe files with ioctls (TCGETS from `less`,
//! Python's `open`) get ENOTTY without a log line per call.

use crate::common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::Mount;

/// Stops `m` with `veilfs unmount` and waits (bounded) for its process; returns its exit status,
/// stderr, and how long the process took to exit after the unmount returned.
fn unmount_and_wait(mut m: Mount, limit: Duration) -> (std::process::ExitStatus, String, Duration) {
    let (ok, _, err) = common::veilfs(&["unmount", m.mp.to_str().unwrap()]);
    assert!(ok, "veilfs unmount failed: {err}");
    let t0 = Instant::now();
    let mut child = m.child.take().expect("child");
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the mount process did not exit within {limit:?} of `veilfs unmount`");
        }
        std::thread::park_timeout(Duration::from_millis(2));
    };
    let took = t0.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, stderr, took)
}

fn tcgets(f: &std::fs::File) -> i32 {
    // SAFETY: TCGETS writes one `termios` into the buffer we pass, which lives for the call.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS, &mut t) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[test]
fn unmount_exits_at_once_and_ioctls_are_enotty_without_log_lines() {
    for mode in ["read-only", "snapshot"] {
        let scope = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        std::fs::write(scope.path().join("notes.txt"), "hello\n").unwrap();
        let store_dir = store.path().join("s");
        let m = Mount::start(
            scope.path(),
            &["-v", "--mode", mode, "--store", store_dir.to_str().unwrap()],
        );
        let f = std::fs::File::open(m.path("notes.txt")).unwrap();
        for _ in 0..5 {
            assert_eq!(tcgets(&f), libc::ENOTTY, "{mode}: TCGETS through the mount");
        }
        let dir = std::fs::File::open(m.path("")).unwrap();
        assert_eq!(tcgets(&dir), libc::ENOTTY, "{mode}: TCGETS on a directory");
        drop((f, dir));
        let (status, stderr, took) = unmount_and_wait(m, Duration::from_secs(5));
        assert!(status.success(), "{mode}: exit status {status:?}\n{stderr}");
        assert!(
            took < Duration::from_secs(2),
            "{mode}: the mount process took {took:?} to exit after the unmount\n{stderr}"
        );
        for noise in [
            "Failed to umount",
            "Unmount failed",
            "Not Implemented",
            "ioctl(",
        ] {
            assert!(
                !stderr.contains(noise),
                "{mode}: {noise:?} in the log:\n{stderr}"
            );
        }
        let summary = stderr
            .lines()
            .find(|l| l.contains("unsupported ioctls answered ENOTTY"))
            .unwrap_or_else(|| panic!("{mode}: no ioctl count at unmount:\n{stderr}"));
        assert!(summary.contains("count=6"), "{mode}: {summary}");
        assert!(summary.contains("INFO"), "{mode}: {summary}");
    }
}
