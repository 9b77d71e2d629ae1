//! A program running from the mount cannot be cut short through it. The kernel refuses a
//! write-open of a file being executed (ETXTBSY) before the filesystem sees it, except for a
//! read-only open that truncates (`O_RDONLY | O_TRUNC`), which it checks only after the OPEN;
//! with `FUSE_ATOMIC_O_TRUNC` the OPEN itself truncates. veilfs used to apply that truncate
//! and let the kernel refuse afterwards: the open answered ETXTBSY, but the running program
//! had already lost its bytes (it died of SIGBUS at its next page fault, and when that came
//! before the kernel's check, the open even succeeded: pjdfstest's `open::etxtbsy` failing
//! about one run in six, the fault blamed on `cache.write_ttl_ms`).

use crate::common;

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{WriteEnv, eventually};

fn profile(mode: &str) -> String {
    format!(
        r#"
version = 1
name = "running-binary"
[visibility]
deny = []
hide_special_files = false
hide_escaping_symlinks = false
[redaction]
rule_sets = []
[write]
mode = "{mode}"
[cache]
write_ttl_ms = 1000
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
"#
    )
}

fn seed(s: &Path) {
    fs::create_dir_all(s.join("bin")).unwrap();
}

fn errno(r: std::io::Result<fs::File>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn open(p: &Path, write: bool, read: bool, truncate: bool) -> std::io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.read(read).write(write);
    if truncate {
        // std refuses truncate without write access; the raw flag is what the agent can pass.
        o.custom_flags(libc::O_TRUNC);
    }
    o.open(p)
}

/// Copies `sleep` into the mount (as pjdfstest does), runs it, and tries every write-open the
/// kernel must refuse; the program and its bytes must come out untouched. Then, once it has
/// ended, the same truncating open goes through (the refusal follows the running program only).
fn a_running_program_keeps_its_bytes(mode: &str) {
    let e = WriteEnv::new(&profile(mode), seed);
    let m = e.mount();
    let prog = m.path("bin/prog");
    let original = fs::read("/bin/sleep").unwrap();
    fs::write(&prog, &original).unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
    // `spawn` returns once the child has exec'd: the kernel then denies write access.
    let mut child = Command::new(&prog)
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(errno(open(&prog, true, false, false)), libc::ETXTBSY);
    assert_eq!(errno(open(&prog, true, true, false)), libc::ETXTBSY);
    assert_eq!(
        errno(open(&prog, false, true, true)),
        libc::ETXTBSY,
        "O_RDONLY | O_TRUNC of a running program"
    );
    assert_eq!(
        fs::metadata(&prog).unwrap().len(),
        original.len() as u64,
        "the refused open truncated the running program"
    );
    assert!(fs::read(&prog).unwrap() == original, "its bytes changed");
    if mode == "snapshot" {
        assert!(fs::read(e.scope.path().join("bin/prog")).unwrap() == original);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the program died while running: {:?}",
        child.try_wait()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel reports the program's end (RELEASE) asynchronously after the exit.
    assert!(
        eventually(|| open(&prog, false, true, true).is_ok()),
        "still refused after the program ended"
    );
    assert_eq!(fs::metadata(&prog).unwrap().len(), 0);
}

#[test]
fn a_truncating_open_of_a_running_program_is_refused_before_it_cuts_snapshot() {
    a_running_program_keeps_its_bytes("snapshot");
}

#[test]
fn a_truncating_open_of_a_running_program_is_refused_before_it_cuts_overlay() {
    a_running_program_keeps_its_bytes("overlay");
}
