//! Removals without an fsync (issue 21): in snapshot mode, with the store on the scope's
//! filesystem, a removed small file or symlink is parked in the store's aside area instead of
//! unlinked, and its journal records are not fsynced. These tests check what that promises:
//! an OS crash that loses the journal's un-synced tail still rolls back exactly (the records
//! are rebuilt from the parked files), a clean session leaves nothing aside and rolls back
//! exactly, and removing many files in a directory costs a fixed number of journal fsyncs.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{WriteEnv, tree_hash, veilfs};

const PROFILE: &str = common::SNAPSHOT_NO_BREAKER;

const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

/// Sets `p`'s mtime (and atime) to a fixed moment in the past, not following a symlink.
fn age(p: &Path, secs: u64) {
    let st = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `d/`: 40 small files of varied content, mode and age, a symlink, a 300 KiB file (above the
/// inline limit: removed the synchronous way), and `keep/` with a file that stays.
fn seed(s: &Path) {
    let d = s.join("d");
    fs::create_dir_all(d.join("keep")).unwrap();
    fs::write(d.join("keep/stay.txt"), "stays\n").unwrap();
    for i in 0..40u64 {
        let p = d.join(format!("f{i:02}.txt"));
        fs::write(&p, format!("line {i} {TOKEN}\n").repeat(i as usize + 1)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o440][i as usize % 4];
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        age(&p, 1_600_000_000 + i * 1000);
    }
    std::os::unix::fs::symlink("f01.txt", d.join("link")).unwrap();
    age(&d.join("link"), 1_500_000_000);
    fs::write(d.join("big.bin"), vec![7u8; 300 << 10]).unwrap();
    age(&d.join("big.bin"), 1_550_000_000);
    age(&d.join("keep"), 1_400_000_000);
    age(&d, 1_450_000_000);
}

/// The one session journal in the store.
fn journal(store: &Path) -> PathBuf {
    let v: Vec<PathBuf> = fs::read_dir(store.join("sessions"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

/// The journal fdatasyncs a mount logged at its end (`RUST_LOG=veilfs::guard=info`).
fn fdatasyncs(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("fdatasyncs"))
        .unwrap_or_else(|| panic!("no fdatasync count logged: {stderr}"));
    line.split("journal: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// Files left in the store's aside area.
fn parked(store: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&store.join("aside"), &mut out);
    out
}

/// Mounts, removes `d/big.bin` and then every small file and the symlink of `d/`, and
/// SIGKILLs the mount. The big file goes first: its synchronous capture syncs the directory's
/// capture too, so every record after it up to the kill is un-synced.
fn remove_all_then_kill(e: &WriteEnv) {
    let m = e.mount();
    let script = format!(
        r#"set -e
cd "{mp}/d"
rm big.bin
rm -f f*.txt link
echo "progress 1""#,
        mp = m.mp.display()
    );
    assert_eq!(common::sigkill_mount_during(m, &script, 1), 1);
}

/// The OS crash the aside path is built for: the mount removes files without syncing their
/// records, then the machine dies and the journal's un-synced tail is lost while the renames
/// into the aside area persisted. Simulated by a SIGKILL, then cutting the journal back to the
/// end of the last record before the first parked removal's records (the prefix of a hash chain
/// is a valid chain). `verify` and `rollback` must rebuild those records from the parked files
/// and restore every file byte-exact with its mode and mtime. Without the recovery the files'
/// captures are simply gone and rollback cannot bring them back.
#[test]
fn an_os_crash_that_lost_the_removals_records_still_rolls_back_exactly() {
    let e = WriteEnv::new(PROFILE, seed);
    let before = tree_hash(e.scope.path());
    remove_all_then_kill(&e);
    let store = PathBuf::from(e.store());
    assert_eq!(
        parked(&store).len(),
        41,
        "every small file and the symlink is parked, not unlinked"
    );

    // Cut the journal back to before the first parked removal's records.
    let jpath = journal(&store);
    let text = fs::read_to_string(&jpath).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first_parked = lines
        .iter()
        .position(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"]["type"] == "capture"
                && v["event"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("d/f") || p == "d/link")
        })
        .expect("a capture of a parked file");
    // Its inline object record comes right before it.
    let cut = lines[..first_parked]
        .iter()
        .rposition(|l| !l.contains("\"type\":\"object\""))
        .unwrap()
        + 1;
    assert!(
        cut >= 3,
        "the session start and the directory's capture stay"
    );
    let kept: String = lines[..cut].iter().map(|l| format!("{l}\n")).collect();
    fs::write(&jpath, kept).unwrap();
    let removed_captures = text.matches("\"type\":\"capture\"").count()
        - fs::read_to_string(&jpath)
            .unwrap()
            .matches("\"type\":\"capture\"")
            .count();
    assert_eq!(
        removed_captures, 41,
        "the cut lost every parked file's capture"
    );

    let (ok, out, err) = veilfs(&["verify", "--store", &e.store()]);
    assert!(ok, "verify: {out}{err}");
    assert!(parked(&store).is_empty(), "recovered files are removed");
    let (ok, out, err) = veilfs(&["log", "--store", &e.store()]);
    assert!(ok, "log: {out}{err}");
    assert!(
        !out.contains("aside/") && !err.contains("aside/"),
        "no aside path in the log: {out}{err}"
    );
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback: {out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{err}");
}

/// The same crash, but the cut keeps some parked removals' records: those are not rebuilt a
/// second time (the parked file is only dropped), the others are.
#[test]
fn a_crash_that_kept_part_of_the_removals_records_rebuilds_only_the_rest() {
    let e = WriteEnv::new(PROFILE, seed);
    let before = tree_hash(e.scope.path());
    remove_all_then_kill(&e);
    let store = PathBuf::from(e.store());
    let jpath = journal(&store);
    let text = fs::read_to_string(&jpath).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Keep up to (and including) the 10th parked capture.
    let mut seen = 0;
    let cut = lines
        .iter()
        .position(|l| {
            if l.contains("\"type\":\"capture\"") && l.contains("\"path\":\"d/f") {
                seen += 1;
            }
            seen == 10
        })
        .unwrap()
        + 1;
    let kept: String = lines[..cut].iter().map(|l| format!("{l}\n")).collect();
    fs::write(&jpath, kept).unwrap();
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback: {out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{err}");
    let text = fs::read_to_string(&jpath).unwrap();
    for i in 0..40 {
        let p = format!("\"path\":\"d/f{i:02}.txt\"");
        let n = text
            .lines()
            .filter(|l| l.contains("\"type\":\"capture\"") && l.contains(&p))
            .count();
        assert_eq!(n, 1, "d/f{i:02}.txt captured once: {n}");
    }
}

/// The normal path: `rm -rf` through the mount (small files, a symlink, a file with two names,
/// a file removed, re-created and removed again, a file created in the session, an fsync in
/// between), a clean unmount that leaves nothing aside, and an exact rollback.
#[test]
fn rm_rf_leaves_nothing_aside_and_rolls_back_exactly() {
    let e = WriteEnv::new(PROFILE, |s| {
        seed(s);
        fs::create_dir_all(s.join("t/x/y")).unwrap();
        for i in 0..30 {
            fs::write(s.join(format!("t/x/y/g{i}")), format!("{i} {TOKEN}\n")).unwrap();
            fs::write(s.join(format!("t/x/h{i}")), format!("h{i}\n")).unwrap();
        }
        std::os::unix::fs::symlink("../x", s.join("t/x/y/up")).unwrap();
        fs::write(s.join("t/again"), "first\n").unwrap();
        fs::write(s.join("twice"), "two names\n").unwrap();
        fs::hard_link(s.join("twice"), s.join("t/twice2")).unwrap();
        age(&s.join("twice"), 1_600_000_000);
        for d in ["t/x/y", "t/x", "t", ""] {
            age(&s.join(d), 1_450_000_000);
        }
    });
    let before = tree_hash(e.scope.path());
    let m = e.mount_env(&[("RUST_LOG", Path::new("warn,veilfs::guard=info"))]);
    let mp = m.mp.clone();
    let run = |script: &str| {
        let st = Command::new("bash")
            .arg("-c")
            .arg(format!("set -e; cd '{}'; {script}", mp.display()))
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    run("rm t/again; echo second > t/again; sync t/again; rm t/again");
    run("echo new > t/made; rm t/made");
    run("rm t/twice2");
    // A file removed while the agent holds it open has no links, as natively (its parked
    // name is not one of its names).
    let held = fs::File::open(mp.join("d/f05.txt")).unwrap();
    fs::remove_file(mp.join("d/f05.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(held.metadata().unwrap().nlink(), 0);
    drop(held);
    run("rm -rf t d");
    assert!(!mp.join("t").exists() && !mp.join("d").exists());
    let (st, err) = m.stop();
    assert!(st.success(), "{err}");
    // 110 removals; one fsync per directory, per re-created name and per session start/end.
    let syncs = fdatasyncs(&err);
    assert!(syncs < 25, "{syncs} journal fdatasyncs: {err}");
    let store = PathBuf::from(e.store());
    assert!(parked(&store).is_empty(), "{:?}", parked(&store));
    assert!(
        !store.join("aside").exists() || fs::read_dir(store.join("aside")).unwrap().count() == 0,
        "a clean end leaves no aside directory"
    );
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "rollback: {out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{err}");
    assert_eq!(
        fs::read(e.scope.path().join("t/again")).unwrap(),
        b"first\n"
    );
}

/// The performance claim: removing N files of one directory costs a fixed number of journal
/// fdatasyncs, not one per file (on main, before the aside path, it was one per file). The
/// mount logs its count at a clean end.
#[test]
fn removing_many_files_of_a_directory_costs_a_fixed_number_of_journal_fsyncs() {
    let count = |n: usize| -> u64 {
        let e = WriteEnv::new(PROFILE, |s| {
            fs::create_dir_all(s.join("many")).unwrap();
            for i in 0..200 {
                fs::write(s.join(format!("many/f{i}")), format!("{i}\n")).unwrap();
            }
        });
        let m = e.mount_env(&[("RUST_LOG", Path::new("warn,veilfs::guard=info"))]);
        let st = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "cd '{}' && for i in $(seq 0 {}); do rm many/f$i; done",
                m.mp.display(),
                n - 1
            ))
            .status()
            .unwrap();
        assert!(st.success());
        let (st, err) = m.stop();
        assert!(st.success(), "{err}");
        fdatasyncs(&err)
    };
    let (few, many) = (count(10), count(200));
    assert_eq!(
        few, many,
        "fdatasyncs for 10 removals {few}, for 200 {many}"
    );
    assert!(many <= 4, "{many} fdatasyncs for 200 removals");
}

/// SIGKILL in the middle of a stream of parked removals (nothing lost from the page cache):
/// the journal holds every record, the readers only drop the parked files, and rollback is
/// exact.
#[test]
fn a_sigkill_amid_parked_removals_rolls_back_exactly() {
    for after in [1, 7, 23] {
        let e = WriteEnv::new(PROFILE, seed);
        let before = tree_hash(e.scope.path());
        let m = e.mount();
        let script = format!(
            r#"set -e
cd "{mp}/d"
i=0
for f in f*.txt link; do rm "$f"; i=$((i+1)); echo "progress $i"; done"#,
            mp = m.mp.display()
        );
        common::sigkill_mount_during(m, &script, after);
        let store = PathBuf::from(e.store());
        assert!(
            !parked(&store).is_empty(),
            "kill at {after}: nothing parked"
        );
        let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
        assert!(ok, "rollback after kill at {after}: {out}{err}");
        assert!(parked(&store).is_empty(), "kill at {after}");
        assert_eq!(
            tree_hash(e.scope.path()),
            before,
            "kill at {after}: {out}{err}"
        );
    }
}

/// The agent's `fsync` of a directory makes its removals there durable: the journal is synced
/// (so the parked files' records no longer depend on them, and they are reaped), then the
/// real directory. It was a no-op before: the parked files stayed until unmount.
#[test]
fn an_fsync_of_the_directory_makes_its_removals_durable() {
    let e = WriteEnv::new(PROFILE, seed);
    let m = e.mount();
    let store = PathBuf::from(e.store());
    for i in 0..5 {
        fs::remove_file(m.mp.join(format!("d/f{i:02}.txt"))).unwrap();
    }
    assert!(!parked(&store).is_empty(), "the removals were parked");
    fs::File::open(m.mp.join("d")).unwrap().sync_all().unwrap();
    assert!(
        common::eventually(|| parked(&store).is_empty()),
        "parked files left after the directory's fsync: {:?}",
        parked(&store)
    );
}
