//! Issue #15 item 2: `veilfs commit` killed at many points of a big commit, then resumed,
//! leaves the real folder exactly as an uninterrupted commit does; the interrupted commit is
//! reported by `log`, refused by `mount`, and `--abort` returns to the state before it.

use crate::common;
use crate::exact;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Mount, WriteEnv, veilfs};

const OVERLAY: &str = r#"
version = 1
name = "test-overlay"
description = "overlay writes everywhere"
[visibility]
deny = []
hide_special_files = false
hide_escaping_symlinks = false
[redaction]
rule_sets = []
[write]
mode = "overlay"
# The agent's workload renames and deletes hundreds of entries in a second: not the breaker's
# business here (tests/it/breaker.rs).
[breaker]
max_deletes = 0
max_renames = 0
"#;

fn seed(s: &Path) {
    for d in 0..6 {
        fs::create_dir_all(s.join(format!("old/d{d}"))).unwrap();
        fs::create_dir_all(s.join(format!("del/d{d}"))).unwrap();
    }
    fs::create_dir_all(s.join("keep")).unwrap();
    for i in 0..300 {
        fs::write(s.join(format!("old/d{}/f{i}", i % 6)), format!("old {i}\n")).unwrap();
        fs::write(s.join(format!("del/d{}/f{i}", i % 6)), format!("del {i}\n")).unwrap();
        fs::write(s.join(format!("keep/k{i}")), format!("keep {i}\n")).unwrap();
    }
    symlink("../keep/k1", s.join("old/d0/link")).unwrap();
    fs::write(s.join("hl1"), "shared\n").unwrap();
    fs::hard_link(s.join("hl1"), s.join("hl2")).unwrap();
}

/// The agent's session through the overlay mount: a renamed directory (with edits and new
/// files inside), a deleted tree, thousands of new files, hard links and symlinks, edits,
/// chmods and deletes of existing files. Deterministic, so two runs build the same overlay.
fn agent(mp: &Path) -> usize {
    let mut n = 0;
    fs::rename(mp.join("old"), mp.join("renamed")).unwrap();
    for i in (0..300).step_by(7) {
        fs::write(
            mp.join(format!("renamed/d{}/f{i}", i % 6)),
            format!("edited {i}\n"),
        )
        .unwrap();
        n += 1;
    }
    fs::create_dir(mp.join("renamed/new")).unwrap();
    for i in 0..100 {
        fs::write(mp.join(format!("renamed/new/g{i}")), format!("g {i}\n")).unwrap();
        n += 1;
    }
    fs::remove_dir_all(mp.join("del")).unwrap();
    n += 306;
    for d in 0..42 {
        fs::create_dir(mp.join(format!("new{d}"))).unwrap();
        for i in 0..100 {
            fs::write(mp.join(format!("new{d}/f{i}")), format!("new {d} {i}\n")).unwrap();
            n += 1;
        }
    }
    for i in 0..150 {
        fs::hard_link(
            mp.join(format!("new0/f{}", i % 100)),
            mp.join(format!("new1/h{i}")),
        )
        .unwrap_or_else(|e| panic!("link new1/h{i}: {e}"));
        symlink(format!("../new2/f{i}"), mp.join(format!("new3/s{i}"))).unwrap();
        n += 2;
    }
    for i in 0..300 {
        let p = mp.join(format!("keep/k{i}"));
        match i % 6 {
            0 => fs::write(&p, format!("kept but changed {i}\n")).unwrap(),
            1 => fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap(),
            2 => fs::remove_file(&p).unwrap(),
            3 => fs::rename(&p, mp.join(format!("new4/moved{i}"))).unwrap(),
            _ => continue,
        }
        n += 1;
    }
    fs::write(mp.join("hl1"), "shared, edited through one name\n").unwrap();
    n + 1
}

fn build(e: &WriteEnv) -> usize {
    let m = e.mount();
    let n = agent(&m.mp);
    let (st, err) = m.stop();
    assert!(st.success(), "{err}");
    n
}

fn commit(e: &WriteEnv, kill_after: Option<u64>) -> (Option<i32>, String) {
    let mut cmd = Command::new(common::bin());
    cmd.args(["commit", "--store", &e.store()]);
    if let Some(k) = kill_after {
        cmd.env("VEILFS_TEST_KILL_AFTER", k.to_string());
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn no_temp_files(root: &Path) {
    let lines = exact::tree_lines(root);
    let temps: Vec<&String> = lines.iter().filter(|l| l.contains(".veilfs-")).collect();
    assert!(
        temps.is_empty(),
        "temp files left in the real folder: {temps:?}"
    );
}

fn staging_dirs(e: &WriteEnv) -> Vec<String> {
    fs::read_dir(Path::new(&e.store()).join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("p-"))
        .collect()
}

#[test]
fn a_commit_killed_anywhere_resumes_to_exactly_the_uninterrupted_result() {
    let t0 = Instant::now();
    // The reference: the same session, committed without interruption (in parallel with
    // the interrupted one below: separate scopes and stores).
    let reference = std::thread::spawn(|| {
        let reference = WriteEnv::new(OVERLAY, seed);
        let changes = build(&reference);
        let t_commit = Instant::now();
        let (code, out) = commit(&reference, None);
        assert_eq!(code, Some(0), "{out}");
        let took = t_commit.elapsed();
        (
            changes,
            took,
            exact::tree_lines_with(reference.scope.path(), false),
        )
    });

    let e = WriteEnv::new(OVERLAY, seed);
    let tb = Instant::now();
    build(&e);
    eprintln!("build {:?}", tb.elapsed());
    let before = exact::tree_lines(e.scope.path());
    // Deterministic kill points (durable steps of each process: changes to the real folder,
    // the "applied" record, overlay removals), and one external SIGKILL at a random moment.
    let plan: [u64; 14] = [1, 1, 2, 7, 60, 0, 400, 900, 1300, 1100, 900, 1, 3, 40];
    let mut kills = Vec::new();
    let mut seed = 0x5eed_u64 ^ t0.elapsed().as_nanos() as u64;
    let mut resumed_at = Duration::ZERO;
    for (round, &k) in plan.iter().enumerate() {
        if k == 0 {
            // A real SIGKILL from outside, at a random time into the run.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let after = Duration::from_millis(20 + seed % 400);
            let mut child = Command::new(common::bin())
                .args(["commit", "--store", &e.store()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            let finished = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break Some(st);
                }
                if start.elapsed() >= after {
                    break None;
                }
                std::thread::park_timeout(Duration::from_millis(1));
            };
            if finished.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                kills.push(format!("SIGKILL after {after:?}"));
            } else {
                break; // it finished first: nothing left to kill
            }
            continue;
        }
        let t = Instant::now();
        let (code, out) = commit(&e, Some(k));
        eprintln!("round {round}: kill after {k}: {:?}", t.elapsed());
        match code {
            None => kills.push(format!("after {k} step(s)")),
            Some(0) => {
                resumed_at = t.elapsed();
                eprintln!("round {round}: the commit finished before its kill point {k}");
                break;
            }
            Some(c) => panic!("round {round}: commit exited {c}:\n{out}"),
        }
        if round == 2 {
            // The admin is told, and nothing mounts over a half-committed folder.
            let (ok, _, err) = veilfs(&["log", "--store", &e.store()]);
            assert!(ok && err.contains("interrupted"), "log: {err}");
            let refused = Mount::try_start(
                e.scope.path(),
                &[
                    "--profile",
                    e.profile.to_str().unwrap(),
                    "--store",
                    &e.store(),
                ],
            );
            let msg = refused
                .err()
                .expect("mount of a store with an interrupted commit");
            assert!(
                msg.contains("interrupted") && msg.contains("veilfs commit"),
                "{msg}"
            );
        }
    }
    // Whatever is left: finish it.
    let t = Instant::now();
    let (code, out) = commit(&e, None);
    if resumed_at == Duration::ZERO {
        resumed_at = t.elapsed();
    }
    assert_eq!(code, Some(0), "final resume: {out}");
    assert!(kills.len() >= 10, "only {} kills: {kills:?}", kills.len());
    let (changes, uninterrupted, want) = reference.join().expect("reference commit");
    assert!(changes >= 5000, "{changes} changes");
    assert!(
        want.iter().any(|l| l.starts_with("renamed/d0/f0 ")),
        "renamed dir committed"
    );
    assert!(
        want.iter()
            .any(|l| l.starts_with("hl2 ") && l.contains("same-inode-as=hl1"))
    );
    let got = exact::tree_lines_with(e.scope.path(), false);
    assert!(
        got == want,
        "after {} kills ({kills:?}) and resume, the real folder differs from the uninterrupted commit:\n{}",
        kills.len(),
        exact::diff(&want, &got)
    );
    no_temp_files(e.scope.path());
    assert!(staging_dirs(&e).is_empty(), "{:?}", staging_dirs(&e));
    // Nothing pending any more; the whole commit is one session that rollback undoes.
    let (code, out) = commit(&e, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing to commit"), "{out}");
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        exact::tree_lines(e.scope.path()),
        before,
        "rollback of the resumed commit"
    );
    eprintln!(
        "{changes} changes; uninterrupted commit {uninterrupted:?}; {} kills: {kills:?}; last resume {resumed_at:?}; total {:?}",
        kills.len(),
        t0.elapsed()
    );
}

/// `commit --abort` after a kill: the real folder is as before the commit, the overlay keeps
/// every change, and a new commit then gives the uninterrupted result.
#[test]
fn an_interrupted_commit_can_be_aborted_and_committed_again() {
    let e = WriteEnv::new(OVERLAY, |s: &Path| {
        fs::create_dir_all(s.join("dir")).unwrap();
        for i in 0..50 {
            fs::write(s.join(format!("dir/f{i}")), format!("{i}\n")).unwrap();
        }
    });
    let before = exact::tree_lines(e.scope.path());
    let m = e.mount();
    fs::rename(m.path("dir"), m.path("moved")).unwrap();
    for i in 0..50 {
        fs::write(m.path(&format!("n{i}")), "new\n").unwrap();
    }
    let view = exact::tree_lines_with(&m.mp, false);
    let (st, _) = m.stop();
    assert!(st.success());
    let (code, out) = commit(&e, Some(30));
    assert_eq!(code, None, "killed: {out}");
    assert_ne!(
        exact::tree_lines(e.scope.path()),
        before,
        "it applied something"
    );
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--abort"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        exact::tree_lines(e.scope.path()),
        before,
        "abort restores the folder: {out}"
    );
    no_temp_files(e.scope.path());
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--abort"]);
    assert!(!ok && err.contains("nothing to abort"), "{out}{err}");
    // What the abort restored is newer than the agent's copies: a conflict, by the ctime rule.
    let (code, out) = commit(&e, None);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("conflict"), "{out}");
    // That commit applied everything else; the conflicting deletion waits for --force.
    let partial = exact::tree_lines_with(e.scope.path(), false);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(ok, "{out}{err}");
    assert_eq!(exact::tree_lines_with(e.scope.path(), false), view, "{out}");
    // The printed undo hint is a command that works, and undoes the commit.
    let hint: Vec<&str> = out
        .lines()
        .find_map(|l| l.split("undo with: ").nth(1))
        .unwrap_or_else(|| panic!("no undo hint: {out}"))
        .split_whitespace()
        .collect();
    assert_eq!(hint[0], "veilfs");
    let (ok, out2, err2) = veilfs(&hint[1..]);
    assert!(ok, "hint {hint:?}: {out2}{err2}");
    assert_eq!(
        exact::tree_lines_with(e.scope.path(), false),
        partial,
        "{out2}"
    );
}
