//! The damage breaker through real mounts: a ransomware-like loop is stopped by the default
//! limits long before half the tree and rolled back exactly; a mass read trips a profile's read
//! limit; `veilfs resume` lets the mount go on.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::common::{WriteEnv, eventually, tree_hash, veilfs};

/// Snapshot mode with the built-in breaker limits (no `[breaker]` section).
const SNAPSHOT: &str = r#"
version = 1
name = "breaker-defaults"
[redaction]
rule_sets = []
[write]
mode = "snapshot"
"#;

const FILES: usize = 2000;

fn tree(s: &Path) {
    for d in 0..20 {
        let dir = s.join(format!("d{d:02}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..FILES / 20 {
            fs::write(dir.join(format!("f{f:03}.txt")), format!("file {d}/{f}\n")).unwrap();
        }
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn a_ransomware_loop_is_stopped_early_and_rolled_back_exactly() {
    let e = WriteEnv::new(SNAPSHOT, tree);
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut damaged = 0usize;
    let mut stopped_by = None;
    'outer: for d in 0..20 {
        for f in 0..FILES / 20 {
            let p = m.path(&format!("d{d:02}/f{f:03}.txt"));
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Err(err) = fs::write(&p, &junk).and_then(|()| fs::remove_file(&p)) {
                stopped_by = Some(err);
                break 'outer;
            }
            damaged += 1;
        }
    }
    let err = stopped_by.expect("the loop ran over the whole tree");
    assert_eq!(errno(&err), libc::EROFS, "{err}");
    assert!(
        damaged < FILES / 4,
        "{damaged} of {FILES} files damaged before the breaker tripped"
    );
    eprintln!("breaker: stopped after {damaged} of {FILES} files");
    // Reads still work while tripped; every change is refused.
    assert_eq!(
        fs::read_to_string(m.path("d19/f000.txt")).unwrap(),
        "file 19/0\n"
    );
    let r = fs::write(m.path("new.txt"), "x");
    assert_eq!(errno(&r.unwrap_err()), libc::EROFS);
    drop(m);
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "rollback was not exact");
}

#[test]
fn a_mass_read_trips_the_read_limit_and_resume_lets_the_mount_go_on() {
    let profile = SNAPSHOT.replace("name = \"breaker-defaults\"", "name = \"reads\"")
        + "[breaker]\nmax_reads_per_minute = 50\n";
    let e = WriteEnv::new(&profile, tree);
    let m = e.mount();
    let mut read = 0;
    let mut refused = None;
    for f in 0..FILES / 20 {
        match fs::read(m.path(&format!("d00/f{f:03}.txt"))) {
            Ok(_) => read += 1,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let err = refused.expect("100 distinct files read without a trip");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(read, 50, "the 51st distinct file trips the limit of 50");
    // Changes stop too.
    let r = fs::write(m.path("new.txt"), "x");
    assert_eq!(errno(&r.unwrap_err()), libc::EROFS);
    let mp = m.mp.display().to_string();
    let (ok, out, err) = veilfs(&["resume", &mp]);
    assert!(ok, "{out}{err}");
    assert!(
        eventually(|| fs::read(m.path("d01/f000.txt")).is_ok()),
        "still refused after resume"
    );
    fs::write(m.path("new.txt"), "x").unwrap();
}

#[test]
fn resume_of_a_path_that_is_no_mount_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _out, err) = veilfs(&["resume", &dir.path().display().to_string()]);
    assert!(!ok);
    assert!(err.contains("no live veilfs mount"), "{err}");
}
