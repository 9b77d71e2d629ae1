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

/// The command after "undo with: " in a rollback's or commit's report.
fn undo_hint(out: &str) -> Vec<String> {
    let line = out
        .lines()
        .find_map(|l| l.split("undo with: ").nth(1))
        .unwrap_or_else(|| panic!("no undo hint in:\n{out}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// Runs a hint the CLI printed (`veilfs ARGS...`) and returns its stdout.
fn run_hint(hint: &[String]) -> String {
    assert_eq!(hint[0], "veilfs", "{hint:?}");
    let args: Vec<&str> = hint[1..].iter().map(String::as_str).collect();
    let (ok, out, err) = veilfs(&args);
    assert!(
        ok,
        "the printed hint `{}` failed:\n{out}{err}",
        hint.join(" ")
    );
    out
}

/// Item 7: `mv P/f g; rmdir P` made rollback move `g` back into `P` before re-creating `P`
/// (ENOENT, half rolled back, every re-run the same). And the "undo with" hint printed after
/// a rollback of several sessions (`--session A,B`) was rejected.
#[test]
fn a_move_out_of_a_removed_directory_rolls_back_and_every_hint_works() {
    let e = WriteEnv::new(WRITABLE, |s: &Path| {
        fs::create_dir_all(s.join("P/Q")).unwrap();
        fs::write(s.join("P/f"), "f\n").unwrap();
        fs::write(s.join("P/Q/h"), "h\n").unwrap();
        fs::write(s.join("top"), "top\n").unwrap();
    });
    let orig = common::tree_hash(e.scope.path());
    let store = e.store();
    // Session 1: moves out of P and P/Q, then removes both.
    let m = e.mount();
    fs::rename(m.path("P/f"), m.path("g")).unwrap();
    fs::rename(m.path("P/Q/h"), m.path("h2")).unwrap();
    fs::remove_dir(m.path("P/Q")).unwrap();
    fs::remove_dir(m.path("P")).unwrap();
    let (st, _) = m.stop();
    assert!(st.success());
    // Session 2: more changes on top.
    let m = e.mount();
    fs::write(m.path("top"), "changed\n").unwrap();
    fs::rename(m.path("g"), m.path("g2")).unwrap();
    let (st, _) = m.stop();
    assert!(st.success());
    let after = common::tree_hash(e.scope.path());
    // Roll back both sessions at once (newest first).
    let (ok, out, err) = veilfs(&["rollback", "--store", &store, "--since", "0"]);
    assert!(ok, "{out}{err}");
    assert_eq!(common::tree_hash(e.scope.path()), orig, "{out}{err}");
    assert_eq!(
        fs::read_to_string(e.scope.path().join("P/f")).unwrap(),
        "f\n"
    );
    // The hint lists two undo sessions; running it redoes both sessions' changes.
    let hint = undo_hint(&out);
    assert!(hint.iter().any(|a| a.contains(',')), "{hint:?}");
    let out2 = run_hint(&hint);
    assert_eq!(common::tree_hash(e.scope.path()), after, "{out2}");
    // And that rollback's own hint undoes it again.
    run_hint(&undo_hint(&out2));
    assert_eq!(common::tree_hash(e.scope.path()), orig);
    // A repeated --session is the same as a comma-separated list.
    let ids: Vec<String> = hint
        .iter()
        .skip_while(|a| *a != "--session")
        .nth(1)
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let (ok, _, err) = veilfs(&[
        "rollback",
        "--store",
        &store,
        "--dry-run",
        "--session",
        &ids[0],
        "--session",
        &ids[1],
    ]);
    assert!(ok, "{err}");
}
