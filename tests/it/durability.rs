//! The snapshot write path's durability contract under SIGKILL: small pre-images travel in the
//! journal (an `Object` record, fsynced with their `Capture`) while their object files are
//! written without an fsync, and one journal fsync guards each change. The mount is killed at
//! many points of a small-file workload (edits, deletes, save-by-rename over existing files,
//! directory churn); then every lazily written object file is removed or torn, as a power loss
//! before writeback could leave it, and `verify` and `rollback` must still restore the exact
//! original tree.

use crate::common;

use std::fs;
use std::path::Path;

use common::{WriteEnv, tree_hash, veilfs};

const PROFILE: &str = common::SNAPSHOT_NO_BREAKER;

fn seed(s: &Path) {
    for d in 0..4 {
        let dir = s.join(format!("src/m{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            fs::write(
                dir.join(format!("f{f}.rs")),
                format!("// module {d} file {f}\n").repeat(f + 1),
            )
            .unwrap();
        }
    }
    // Above the inline limit: captured the ordinary (fsynced) way, in the same session.
    fs::write(s.join("large.bin"), vec![5u8; 300 << 10]).unwrap();
}

/// The ids of every `Object` record in the store's journals.
fn journalled_objects(store: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for e in fs::read_dir(store.join("sessions")).unwrap().flatten() {
        let text = fs::read_to_string(e.path()).unwrap();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a torn last line
            };
            if v["event"]["type"] == "object" {
                ids.push(v["event"]["id"].as_str().unwrap().to_string());
            }
        }
    }
    ids
}

fn kill_at(profile: &str, after: usize) {
    let e = WriteEnv::new(profile, seed);
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let script = format!(
        r#"set -u
cd "{mp}"
i=0
while :; do
  i=$((i+1))
  d=$((i % 4)); f=$((i % 40))
  echo "edit $i" >> "src/m$d/f$f.rs"
  [ $((i % 3)) -eq 0 ] && rm -f "src/m$(((i+1) % 4))/f$(((i*7) % 40)).rs"
  if [ $((i % 2)) -eq 0 ]; then
    echo "saved $i" > "src/m$d/.tmp$i" && mv "src/m$d/.tmp$i" "src/m$d/f$(((i*3) % 40)).rs"
  fi
  [ $((i % 5)) -eq 0 ] && mkdir "new$i" && echo x > "new$i/x" && mv "src/m$d/f$(((i*11) % 40)).rs" "new$i/"
  [ $((i % 10)) -eq 0 ] && rm -rf "new$((i-5))"
  [ $((i % 9)) -eq 0 ] && dd if=/dev/zero of=large.bin bs=4k count=1 seek=$i conv=notrunc status=none
  echo "progress $i"
done"#,
        mp = m.mp.display()
    );
    crate::common::sigkill_mount_during(m, &script, after);

    // What a power loss could leave of objects written without an fsync: gone, empty, or
    // garbage.
    let store = Path::new(&e.store()).to_path_buf();
    let ids = journalled_objects(&store);
    // (With deferred apply an early kill may come before the first batch: nothing journalled.)
    assert!(
        !ids.is_empty() || profile.contains("deferred"),
        "kill at {after}: no pre-image was journalled"
    );
    for (n, id) in ids.iter().enumerate() {
        let p = store.join("objects").join(&id[..2]).join(&id[2..]);
        // Object files are written off the request path: a kill may come before the file
        // (or its fan-out directory) exists at all.
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match n % 3 {
            0 => {
                let _ = fs::remove_file(&p);
            }
            1 => fs::write(&p, b"").unwrap(),
            _ => fs::write(&p, b"not zstd at all").unwrap(),
        }
    }

    let (ok, out, err) = veilfs(&["verify", "--store", &e.store()]);
    assert!(
        ok || err.contains("torn") || out.contains("torn"),
        "verify after kill at {after}: {out}{err}"
    );
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    // A deferred-apply mount killed before its first batch changed nothing: nothing to undo.
    assert!(
        ok || (profile.contains("deferred") && err.contains("no session to roll back")),
        "rollback after kill at {after}: {out}{err}"
    );
    assert_eq!(
        tree_hash(e.scope.path()),
        before,
        "tree after rollback (kill at {after}): {out}{err}"
    );
}

#[test]
fn sigkill_at_any_point_of_a_small_file_workload_then_lost_lazy_objects_roll_back_exactly() {
    for after in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89] {
        kill_at(PROFILE, after);
    }
}

/// The same with `[write] apply = "deferred"`: the kill lands while edits wait in private
/// copies, while a batch is captured or applied, and between a namespace change's forced apply
/// and the change itself.
#[test]
fn sigkill_at_any_point_with_deferred_apply_rolls_back_exactly() {
    let profile = PROFILE.replace(
        "mode = \"snapshot\"",
        "mode = \"snapshot\"\napply = \"deferred\"",
    );
    assert!(profile.contains("apply = \"deferred\""));
    for after in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89] {
        kill_at(&profile, after);
    }
}

/// Entries created in a directory the session made are journalled without waiting for the
/// disk (rollback removes that directory whole). An OS crash can then lose their records while
/// the entries themselves reach the disk: simulated here by cutting the journal back to the
/// directory's own (fsynced) capture after a SIGKILL. Rollback must still leave the tree exactly
/// as it was, and keep the unrecorded entries' bytes in the store.
#[test]
fn an_os_crash_losing_the_records_of_files_made_in_a_new_directory_still_rolls_back_exactly() {
    let e = WriteEnv::new(PROFILE, seed);
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let script = format!(
        r#"set -eu
cd "{mp}"
mkdir -p new/sub
echo a > new/a
echo b > new/sub/b
ln -s a new/l
echo "progress 1""#,
        mp = m.mp.display()
    );
    assert_eq!(crate::common::sigkill_mount_during(m, &script, 1), 1);

    let store = Path::new(&e.store()).to_path_buf();
    let journals: Vec<_> = fs::read_dir(store.join("sessions"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let text = fs::read_to_string(&journals[0]).unwrap();
    let mut kept = String::new();
    let mut cut = false;
    for line in text.lines() {
        kept.push_str(line);
        kept.push('\n');
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"]["type"] == "capture" && v["event"]["path"] == "new" {
            assert_eq!(v["event"]["before"]["kind"], "absent", "{line}");
            cut = true;
            break;
        }
    }
    assert!(cut, "no capture of new/ in {text}");
    assert!(
        text.trim_end_matches('\0').len() > kept.len(),
        "the cut must drop the records of new/'s entries"
    );
    fs::write(&journals[0], kept).unwrap();

    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback: {out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{err}");
    let aside: Vec<_> = walk_files(&store.join("set-aside"));
    assert!(
        aside
            .iter()
            .any(|p| p.ends_with("new/sub/b") || p.ends_with("sub/b")),
        "new/sub/b kept in the store: {aside:?} ({out}{err})"
    );
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
