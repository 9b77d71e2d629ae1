//! Rollback of sessions made through a real snapshot-mode mount (issue #15 items 1 and 7).

mod common;

use std::fs;
use std::path::Path;

use common::{WriteEnv, veilfs};

const WRITABLE: &str = r#"
version = 1
name = "test-rollback"
description = "snapshot writes everywhere"
[redaction]
rule_sets = []
[write]
mode = "snapshot"
"#;

/// Item 1: `a = v1; agent writes v2; rollback; agent writes v3; unmount; rollback` left
/// `a = v3`, because the live mount still believed `a` was captured. Rollback now refuses a
/// live session, names the mount point and the command that stops it, and changes nothing.
#[test]
fn rollback_refuses_while_the_sessions_mount_is_up() {
    let e = WriteEnv::new(WRITABLE, |s: &Path| fs::write(s.join("a"), "v1\n").unwrap());
    let m = e.mount();
    fs::write(m.path("a"), "v2\n").unwrap();
    let store = e.store();
    let (ok, out, err) = veilfs(&["rollback", "--store", &store]);
    assert!(!ok, "rollback of a live session succeeded:\n{out}{err}");
    let mp = m.mp.canonicalize().unwrap();
    let stop = format!("veilfs unmount {}", mp.display());
    assert!(
        err.contains(&stop),
        "the refusal names how to stop the mount:\n{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(
        fs::read_to_string(e.scope.path().join("a")).unwrap(),
        "v2\n"
    );
    // Every spelling of the request is refused the same way.
    let (ok, _, err2) = veilfs(&["rollback", "--store", &store, "--dry-run"]);
    assert!(!ok && err2.contains(&stop), "{err2}");
    fs::write(m.path("a"), "v3\n").unwrap();
    // The hint is a command that works.
    let (ok, _, err3) = veilfs(&["unmount", mp.to_str().unwrap()]);
    assert!(ok, "{err3}");
    let (status, _) = m.stop();
    assert!(status.success());
    let (ok, out, err) = veilfs(&["rollback", "--store", &store]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        fs::read_to_string(e.scope.path().join("a")).unwrap(),
        "v1\n"
    );
}
