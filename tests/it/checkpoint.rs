//! Checkpoints (issue #19): undo one agent turn. `veilfs checkpoint MP` reaches the live
//! session through the mount's control socket; `veilfs rollback --to` undoes what follows.

use crate::common;

use std::fs;
use std::path::Path;

use common::{WriteEnv, veilfs};

const WRITABLE: &str = r#"
version = 1
name = "test-checkpoint"
description = "snapshot writes everywhere"
[redaction]
rule_sets = []
[write]
mode = "snapshot"
"#;

fn checkpoint(mp: &Path, label: &str) -> String {
    let (ok, out, err) = veilfs(&["checkpoint", "--label", label, mp.to_str().unwrap()]);
    assert!(ok, "checkpoint {label}: {out}{err}");
    out
}

fn rollback(store: &str, extra: &[&str]) -> String {
    let mut args = vec!["rollback", "--store", store];
    args.extend_from_slice(extra);
    let (ok, out, err) = veilfs(&args);
    assert!(ok, "rollback {extra:?}: {out}{err}");
    out + &err
}

/// Three turns, each editing, creating, deleting and renaming files and directories, with a
/// checkpoint after each: undoing the last turn gives exactly the tree after turn 2, then undoing
/// to checkpoint 1 exactly the tree after turn 1, and a full rollback the original tree.
#[test]
fn rollback_to_a_checkpoint_undoes_exactly_the_turns_after_it() {
    let e = WriteEnv::new(WRITABLE, |s: &Path| {
        fs::create_dir_all(s.join("src/lib")).unwrap();
        fs::write(s.join("README"), "readme v0\n").unwrap();
        fs::write(s.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(s.join("src/lib/a.rs"), "a v0\n").unwrap();
        fs::write(s.join("src/lib/b.rs"), "b v0\n").unwrap();
        fs::write(s.join("notes.txt"), "notes\n").unwrap();
    });
    let scope = e.scope.path();
    let orig = common::tree_hash(scope);
    let store = e.store();
    let m = e.mount();
    // Turn 1: edit, create, delete, rename.
    fs::write(m.path("README"), "readme v1\n").unwrap();
    fs::write(m.path("src/new.rs"), "new v1\n").unwrap();
    fs::remove_file(m.path("notes.txt")).unwrap();
    fs::rename(m.path("src/lib/b.rs"), m.path("src/b.rs")).unwrap();
    let out = checkpoint(&m.mp, "turn one");
    assert!(out.contains("checkpoint #1"), "{out}");
    let h1 = common::tree_hash(scope);
    // Turn 2: the same paths again (already captured in turn 1), plus a directory.
    fs::write(m.path("README"), "readme v2\n").unwrap();
    fs::write(m.path("src/new.rs"), "new v2, longer\n").unwrap();
    fs::create_dir(m.path("docs")).unwrap();
    fs::write(m.path("docs/guide.md"), "guide\n").unwrap();
    fs::rename(m.path("src/b.rs"), m.path("src/lib/b2.rs")).unwrap();
    fs::remove_file(m.path("src/lib/a.rs")).unwrap();
    checkpoint(&m.mp, "turn two");
    let h2 = common::tree_hash(scope);
    // Turn 3: undo-worthy damage: a directory removed, files rewritten and renamed over.
    fs::write(m.path("README"), "readme v3\n").unwrap();
    fs::remove_file(m.path("docs/guide.md")).unwrap();
    fs::remove_dir(m.path("docs")).unwrap();
    fs::rename(m.path("src/new.rs"), m.path("src/main.rs")).unwrap();
    fs::write(m.path("src/lib/b2.rs"), "b v3\n").unwrap();
    fs::rename(m.path("src/lib"), m.path("lib")).unwrap();
    checkpoint(&m.mp, "turn three");
    let h3 = common::tree_hash(scope);
    assert!(orig != h1 && h1 != h2 && h2 != h3);
    // `veilfs log` lists the turns and what each changed.
    let (ok, log, err) = veilfs(&["log", "--store", &store]);
    assert!(ok, "{err}");
    assert!(log.contains("checkpoint #2 \"turn two\""), "{log}");
    assert!(log.contains("docs/guide.md"), "{log}");
    let (st, _) = m.stop();
    assert!(st.success());

    // Undo the last turn (by number; --to 3 would be a no-op: nothing follows it).
    let out = rollback(&store, &["--to", "3"]);
    assert!(out.contains("nothing to roll back"), "{out}");
    rollback(&store, &["--to", "2"]);
    assert_eq!(common::tree_hash(scope), h2, "after undoing turn 3");
    assert_eq!(
        fs::read_to_string(scope.join("docs/guide.md")).unwrap(),
        "guide\n"
    );
    // Then turn 2 (by label).
    rollback(&store, &["--to", "turn one"]);
    assert_eq!(common::tree_hash(scope), h1, "after undoing turn 2");
    // Then the whole session.
    rollback(&store, &[]);
    assert_eq!(common::tree_hash(scope), orig, "after the full rollback");
}

/// Inside `veilfs run` the command finds its mount without arguments (VEILFS_MOUNT,
/// VEILFS_CONTROL); a read-only mount refuses a checkpoint; an unknown checkpoint is an error.
#[test]
fn a_command_under_run_checkpoints_its_own_session() {
    let scope = tempfile::tempdir().unwrap();
    fs::write(scope.path().join("f"), "v0\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("store").display().to_string();
    let script = format!(
        "echo v1 > f && {bin} checkpoint --label one && echo v2 > f",
        bin = common::bin()
    );
    let out = std::process::Command::new(common::bin())
        .args(["run", "--mode", "snapshot", "--store", &store])
        .arg(scope.path())
        .args(["--", "sh", "-c", &script])
        .env("XDG_DATA_HOME", data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checkpoint #1"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(scope.path().join("f")).unwrap(), "v2\n");
    rollback(&store, &["--to", "one"]);
    assert_eq!(fs::read_to_string(scope.path().join("f")).unwrap(), "v1\n");
    let (ok, _, err) = veilfs(&["rollback", "--store", &store, "--to", "nope"]);
    assert!(!ok && err.contains("no checkpoint \"nope\""), "{err}");

    let out = std::process::Command::new(common::bin())
        .arg("run")
        .arg(scope.path())
        .args(["--", common::bin(), "checkpoint"])
        .env("XDG_DATA_HOME", data.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("read-only mount changes nothing"), "{err}");
}
