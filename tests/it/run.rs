//! `veilfs run` (issue #19): mount privately, run a command in the view, unmount however it
//! ends, summarise; and `--sandbox` (bubblewrap).

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SECRET_FILE: &str = "password = \"hGkqPzWbTnRxYvLm93\"\n";

/// A scope with a masked file and a plain one, and a data dir for the default store.
struct Env {
    scope: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let scope = tempfile::tempdir().unwrap();
        fs::write(scope.path().join("config.yaml"), SECRET_FILE).unwrap();
        fs::write(scope.path().join("a.txt"), "hello\n").unwrap();
        Env {
            scope,
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> String {
        self.data.path().join("store").display().to_string()
    }

    fn cmd(&self, opts: &[&str], command: &[&str]) -> Command {
        let mut c = Command::new(common::bin());
        c.arg("run")
            .args(opts)
            .arg(self.scope.path())
            .arg("--")
            .args(command)
            .env("XDG_DATA_HOME", self.data.path());
        c
    }

    fn run(&self, opts: &[&str], command: &[&str]) -> Output {
        self.cmd(opts, command).output().expect("run veilfs run")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The mount point the command printed as its first line (`pwd`).
fn mount_point(out: &Output) -> PathBuf {
    let s = text(&out.stdout);
    PathBuf::from(
        s.lines()
            .next()
            .unwrap_or_else(|| panic!("no pwd in {s:?}")),
    )
}

fn assert_gone(mp: &Path) {
    assert!(
        !veilfs::is_mount_point(mp),
        "{} is still mounted",
        mp.display()
    );
    assert!(!mp.exists(), "{} was not removed", mp.display());
}

#[test]
fn the_commands_exit_code_passes_through_and_the_mount_is_gone_after() {
    let e = Env::new();
    let out = e.run(
        &[],
        &[
            "sh",
            "-c",
            "pwd; stat -c %a \"$(dirname \"$PWD\")\"; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let mp = mount_point(&out);
    assert!(mp.starts_with(std::env::temp_dir()), "{}", mp.display());
    // The private mount point's parent is ours alone.
    assert_eq!(text(&out.stdout).lines().nth(1), Some("700"));
    assert_gone(&mp);
    let err = text(&out.stderr);
    assert!(err.contains("session summary (read-only mode)"), "{err}");
    let out = e.run(&[], &["true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_command_runs_in_the_view_and_sees_the_masks() {
    let e = Env::new();
    let out = e.run(
        &[],
        &[
            "sh",
            "-c",
            "pwd; test \"$PWD\" = \"$VEILFS_MOUNT\" && cat config.yaml a.txt",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.contains("<redacted:"), "{o}");
    assert!(!o.contains("hGkqPzWbTnRxYvLm93"), "{o}");
    assert!(o.contains("hello"), "{o}");
    let err = text(&out.stderr);
    assert!(err.contains("files read:        2"), "{err}");
    assert!(err.contains("redacted views:    1"), "{err}");
    assert_eq!(
        fs::read_to_string(e.scope.path().join("config.yaml")).unwrap(),
        SECRET_FILE
    );
}

#[test]
fn a_killed_command_still_unmounts_and_exits_128_plus_the_signal() {
    let e = Env::new();
    let out = e.run(&[], &["sh", "-c", "pwd; kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert_gone(&mount_point(&out));
}

/// SIGTERM to `veilfs run` goes to the command; the mount comes down after it.
#[test]
fn a_signal_to_run_is_forwarded_to_the_command_then_it_unmounts() {
    let e = Env::new();
    let mut child = e
        .cmd(&[], &["sh", "-c", "pwd; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mp = PathBuf::from(line.trim_end());
    assert!(veilfs::is_mount_point(&mp));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        text(&out.stderr)
    );
    assert_gone(&mp);
}

#[test]
fn snapshot_runs_print_how_to_review_and_roll_back_and_those_commands_work() {
    let e = Env::new();
    let orig = common::tree_hash(e.scope.path());
    let store = e.store();
    let out = e.run(
        &["--mode", "snapshot", "--store", &store],
        &[
            "sh",
            "-c",
            "echo new > b.txt && mv a.txt c.txt && cat config.yaml && (echo k > .env) 2>/dev/null; true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("paths changed:     3 (1 renames)"), "{err}");
    assert!(err.contains("redacted views:    1"), "{err}");
    assert!(err.contains("denials:           1"), "{err}");
    assert!(err.contains(".env"), "the summary names the denial:\n{err}");
    let hint = |what: &str| -> Vec<String> {
        let l = err
            .lines()
            .find_map(|l| l.split(&format!("{what}: ")).nth(1))
            .unwrap_or_else(|| panic!("no {what} hint in:\n{err}"));
        l.split_whitespace().map(str::to_string).collect()
    };
    let diff = hint("review");
    assert_eq!(diff[..3], ["veilfs", "diff", "--store"]);
    let args: Vec<&str> = diff[1..].iter().map(String::as_str).collect();
    let (ok, d, derr) = common::veilfs(&args);
    assert!(ok && d.contains("b.txt"), "{d}{derr}");
    let rb = hint("roll back");
    let args: Vec<&str> = rb[1..].iter().map(String::as_str).collect();
    let (ok, r, rerr) = common::veilfs(&args);
    assert!(ok, "{r}{rerr}");
    assert_eq!(common::tree_hash(e.scope.path()), orig);
}

/// `--sandbox`: the command cannot read the real folder or the store, has no network, and
/// can write only through the mount.
#[test]
fn the_sandbox_hides_the_scope_and_the_store_and_the_network() {
    if !Path::new("/usr/bin/bwrap").exists()
        && Command::new("bwrap").arg("--version").output().is_err()
    {
        eprintln!("skipped: bubblewrap (bwrap) is not installed; tests/run-all.sh installs it");
        return;
    }
    let e = Env::new();
    let store = e.store();
    let scope = e.scope.path().display().to_string();
    let script = format!(
        "pwd; \
         if cat {scope}/config.yaml 2>/dev/null; then echo SCOPE-READ; fi; \
         if ls {scope} | grep -q .; then echo SCOPE-LISTED; fi; \
         if cat {store}/store.toml 2>/dev/null; then echo STORE-READ; fi; \
         if ls {store} | grep -q .; then echo STORE-LISTED; fi; \
         if echo > /dev/tcp/1.1.1.1/80; then echo NET; fi 2>/dev/null; \
         if tail -n +3 /proc/net/dev | grep -v ' lo:' | grep -q .; then echo IFACE; fi; \
         if echo x > /etc/veilfs-sandbox-test; then echo ETC-WRITTEN; fi 2>/dev/null; \
         echo written > inside.txt && echo WROTE; cat config.yaml; \
         {bin} checkpoint --label sandboxed >/dev/null && echo CHECKPOINTED",
        bin = common::bin()
    );
    let out = e.run(
        &["--sandbox", "--mode", "snapshot", "--store", &store],
        &["bash", "-c", &script],
    );
    let o = text(&out.stdout);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{o}{err}");
    for bad in [
        "SCOPE-READ",
        "SCOPE-LISTED",
        "STORE-READ",
        "STORE-LISTED",
        "NET",
        "IFACE",
        "ETC-WRITTEN",
        "hGkqPzWbTnRxYvLm93",
    ] {
        assert!(!o.contains(bad), "{bad} in:\n{o}{err}");
    }
    assert!(o.contains("WROTE") && o.contains("<redacted:"), "{o}{err}");
    // The control socket stays reachable: the agent's harness can checkpoint from inside.
    assert!(o.contains("CHECKPOINTED"), "{o}{err}");
    assert!(!Path::new("/etc/veilfs-sandbox-test").exists());
    assert_eq!(
        fs::read_to_string(e.scope.path().join("inside.txt")).unwrap(),
        "written\n"
    );
    assert_gone(&mount_point(&out));
}

/// `veilfs run` killed outright (SIGKILL, nothing forwarded): the kernel kills the command
/// and tells the mount, which unmounts by itself.
#[test]
fn a_killed_run_takes_its_command_and_its_mount_down() {
    let e = Env::new();
    let mut child = e
        .cmd(&[], &["sh", "-c", "pwd; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mp = PathBuf::from(line.trim_end());
    assert!(veilfs::is_mount_point(&mp));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        common::eventually(|| !veilfs::is_mount_point(&mp)),
        "{} is still mounted",
        mp.display()
    );
    // Nobody was left to remove the private mount point.
    fs::remove_dir(&mp).unwrap();
    fs::remove_dir(mp.parent().unwrap()).unwrap();
}
