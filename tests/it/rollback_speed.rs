//! Rollback's shared syncs (benches/README.md, "Session 12: rollback speed"): removals of
//! created files and files put back where nothing is run in batches, each batch's captures made
//! durable by one journal sync and the put-back files' bytes by one `syncfs`; `undo` markers are
//! appended without a sync of their own; small pre-images travel in the rollback's journal and
//! their object files are written without an fsync. A killed rollback that also lost what it had
//! not synced (as a power cut would) must still resume to the exact tree, and the rollback
//! sessions must still undo exactly.

use crate::common;
use crate::exact;

use std::fs;
use std::path::Path;

use common::{SNAPSHOT_NO_BREAKER, WriteEnv, veilfs};

const N: usize = 30;

fn seed(s: &Path) {
    fs::create_dir(s.join("old")).unwrap();
    for i in 0..N {
        fs::write(
            s.join(format!("old/f{i}")),
            format!("old {i} ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q\n"),
        )
        .unwrap();
    }
    for i in 0..N {
        fs::write(s.join(format!("edited{i}")), format!("edited {i} before\n")).unwrap();
    }
}

/// What a power cut may take from a killed rollback under the new ordering, and more: the
/// un-synced tail of its journal (every trailing `undo` marker) and the object files of the
/// pre-images it journalled inline (written without an fsync). Returns how many markers and
/// object files it took.
fn lose_unsynced(store: &str, journal: &Path) -> (usize, usize) {
    let mut taken = (0, 0);
    let text = fs::read_to_string(journal).unwrap();
    // A killed writer leaves the zeros it wrote ahead of its records.
    let mut lines: Vec<&str> = text.trim_end_matches('\0').lines().collect();
    while lines
        .last()
        .is_some_and(|l| l.contains("\"op\":\"undo ") && !l.contains("SessionEnd"))
    {
        lines.pop();
        taken.0 += 1;
    }
    let mut kept = lines.join("\n");
    kept.push('\n');
    fs::write(journal, kept).unwrap();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["event"]["type"] == "object"
            && let Some(id) = v["event"]["id"].as_str()
        {
            let p = Path::new(store)
                .join("objects")
                .join(&id[..2])
                .join(&id[2..]);
            if fs::remove_file(&p).is_ok() {
                taken.1 += 1;
            }
        }
    }
    taken
}

#[test]
fn a_batched_rollback_killed_and_losing_its_unsynced_tail_resumes_exactly() {
    let e = WriteEnv::new(SNAPSHOT_NO_BREAKER, seed);
    let before = exact::tree_lines(e.scope.path());
    let m = e.mount();
    // Removed files and edited ones (runs of restores), created files (a run of removals).
    for i in 0..N {
        fs::remove_file(m.path(&format!("old/f{i}"))).unwrap();
    }
    fs::create_dir(m.path("new")).unwrap();
    for i in 0..N {
        fs::write(
            m.path(&format!("new/g{i}")),
            format!("new {i} made by the agent\n"),
        )
        .unwrap();
    }
    for i in 0..N {
        fs::write(m.path(&format!("edited{i}")), "edited by the agent\n").unwrap();
    }
    let (st, err) = m.stop();
    assert!(st.success(), "{err}");
    let after_session = exact::tree_lines(e.scope.path());
    let store = e.store();

    let (mut markers, mut objects) = (0, 0);
    let kills = common::rollback_killed_at(&store, &[1, 2, 5, 17, 31, 40, 58, 75, 1000], |_| {
        let last = common::rollback_journals(&store)
            .pop()
            .expect("a rollback session");
        let (m, o) = lose_unsynced(&store, &last);
        (markers, objects) = (markers + m, objects + o);
    });
    assert!(kills >= 4, "only {kills} kills");
    assert!(
        markers > 0 && objects > 0,
        "nothing to lose: {markers} markers, {objects} objects"
    );
    let after = exact::tree_lines(e.scope.path());
    assert!(
        before == after,
        "after {kills} kills:\n{}",
        exact::diff(&before, &after)
    );

    // Every rollback session undone (newest first, by selection order): the session's tree.
    let ids: Vec<String> = common::rollback_journals(&store)
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["rollback", "--store", &store];
    for id in &ids {
        args.extend(["--session", id.as_str()]);
    }
    let (ok, out, err) = veilfs(&args);
    assert!(ok, "{out}{err}");
    let undone = exact::tree_lines(e.scope.path());
    assert!(
        undone == after_session,
        "undoing the rollbacks:\n{}\n{out}{err}",
        exact::diff(&after_session, &undone)
    );
}
