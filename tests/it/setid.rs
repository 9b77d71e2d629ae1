//! Set-id bits through a writable mount. veilfs asks the kernel for FUSE_HANDLE_KILLPRIV_V2
//! (one round trip per write instead of two), which leaves clearing the set-user-ID and
//! set-group-ID bits to the filesystem (src/fs/setid.rs). A write, truncate or fallocate by a
//! user without CAP_FSETID must still clear them as Linux does natively, and rollback must
//! give them back. Root only: the writer is another user, on a mount with `--allow-other`.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::{Mount, tree_hash, veilfs};

const PROFILE: &str = r#"
version = 1
name = "setid"
[redaction]
rule_sets = []
"#;

/// name, mode before, mode after the change `nobody` makes (see `CHANGES`).
const FILES: &[(&str, u32, u32)] = &[
    ("w_suid", 0o4777, 0o0777),
    ("w_both", 0o6777, 0o0777),
    // Set-group-ID without group execute marks mandatory locking: a write keeps it.
    ("w_sgid_nox", 0o2766, 0o2766),
    ("t_suid", 0o4777, 0o0777),
    ("o_both", 0o6777, 0o0777),
    ("f_suid", 0o4777, 0o0777),
    ("c_both", 0o6777, 0o0777),
    // Written by root, who holds CAP_FSETID: kept.
    ("r_suid", 0o4777, 0o4777),
];

/// What `nobody` does to the files through the mount (cwd: the mount point).
const CHANGES: &str = "set -e
printf x >> w_suid
printf x >> w_both
printf x >> w_sgid_nox
truncate -s 1 t_suid
: > o_both
fallocate -l 8192 f_suid
python3 -c 'import os; a = os.open(\"w_sgid_nox\", os.O_RDONLY); b = os.open(\"c_both\", os.O_WRONLY); os.copy_file_range(a, b, 1)'
";

fn seed(s: &Path) {
    fs::set_permissions(s, fs::Permissions::from_mode(0o755)).unwrap();
    for (name, mode, _) in FILES {
        let p = s.join(name);
        fs::write(&p, "content\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

fn as_nobody(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    assert!(
        out.status.success(),
        "as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn mount(scope: &Path, mode: &str, store: &Path) -> Mount {
    mount_with(scope, mode, store, PROFILE)
}

fn mount_with(scope: &Path, mode: &str, store: &Path, profile: &str) -> Mount {
    mount_env(scope, mode, store, profile, &[])
}

fn mount_env(
    scope: &Path,
    mode: &str,
    store: &Path,
    profile: &str,
    env: &[(&str, &Path)],
) -> Mount {
    let prof = common::write_profile(store.parent().unwrap(), "p.toml", profile);
    let m = Mount::start_env(
        scope,
        &[
            // Info lines too: the count of lookups is logged at unmount.
            "-v",
            "--mode",
            mode,
            "--allow-other",
            "--profile",
            prof.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        env,
    );
    // The mount point's temp parent is private to root.
    fs::set_permissions(m.mp.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    m
}

#[test]
fn a_change_by_a_user_clears_set_id_bits_as_linux_does_and_rollback_gives_them_back() {
    for mode in ["snapshot", "overlay"] {
        let scope = tempfile::tempdir().unwrap();
        seed(scope.path());
        let before = tree_hash(scope.path());
        let store = tempfile::tempdir().unwrap();
        let store = store.path().join("s");
        let m = mount(scope.path(), mode, &store);
        as_nobody(&m.mp, CHANGES);
        let w = fs::OpenOptions::new()
            .append(true)
            .open(m.path("r_suid"))
            .unwrap();
        std::io::Write::write_all(&mut &w, b"x").unwrap();
        drop(w);
        for (name, was, after) in FILES {
            assert_eq!(
                mode_of(&m.path(name)),
                *after,
                "{mode}: {name} (was {was:o}) through the mount"
            );
            let real = mode_of(&scope.path().join(name));
            // Overlay mode never touches the real folder before a commit.
            let want = if mode == "overlay" { *was } else { *after };
            assert_eq!(
                real, want,
                "{mode}: {name} (was {was:o}) in the real folder"
            );
        }
        let (status, log) = m.stop();
        assert!(status.success(), "{mode}: {log}");
        if mode == "snapshot" {
            let (ok, out, err) = veilfs(&["rollback", "--store", store.to_str().unwrap()]);
            assert!(ok, "{mode}: rollback: {out}{err}");
            assert_eq!(tree_hash(scope.path()), before, "{mode}: after rollback");
        }
    }
}

/// The round trip the flag saves: the kernel asks for `security.capability` once per written
/// file, not before every write (it did before: 200 writes, 200 lookups).
#[test]
fn many_writes_to_one_file_ask_for_its_capabilities_once() {
    for mode in ["snapshot", "overlay"] {
        let scope = tempfile::tempdir().unwrap();
        fs::write(scope.path().join("log"), "").unwrap();
        let store = tempfile::tempdir().unwrap();
        let m = mount(scope.path(), mode, &store.path().join("s"));
        let f = fs::OpenOptions::new()
            .append(true)
            .open(m.path("log"))
            .unwrap();
        for i in 0..200 {
            std::io::Write::write_all(&mut &f, format!("{i}\n").as_bytes()).unwrap();
        }
        drop(f);
        assert_eq!(
            fs::read_to_string(m.path("log")).unwrap().lines().count(),
            200
        );
        let (status, log) = m.stop();
        assert!(status.success(), "{mode}: {log}");
        let line = log
            .lines()
            .find(|l| l.contains("security.capability lookups answered"))
            .unwrap_or_else(|| panic!("{mode}: no lookup count at unmount:\n{log}"));
        let n: u64 = line
            .split("count=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{mode}: {line}"));
        assert!(n <= 2, "{mode}: {n} lookups for 200 writes: {line}");
    }
}

/// The two write paths whose changes reach the real file later: a masked edit (merged at close)
/// and deferred apply (a private copy applied in a batch). The bits go all the same.
#[test]
fn masked_edits_and_deferred_writes_clear_set_id_bits_too() {
    const SECRET: &str = "token: ghp_Zr8Kq2mVx7LpT4wNc9HbY3dFs6JgQ1eRu5Ak\n";
    let cases = [
        (
            "masked edit",
            "version = 1\nname = \"m\"\n[redaction]\nrule_sets = [\"secrets\"]\n",
            SECRET,
        ),
        (
            "deferred apply",
            "version = 1\nname = \"d\"\n[redaction]\nrule_sets = []\n[write]\napply = \"deferred\"\n",
            "port: 5432\n",
        ),
    ];
    for (what, profile, content) in cases {
        let scope = tempfile::tempdir().unwrap();
        fs::set_permissions(scope.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let f = scope.path().join("conf.yaml");
        fs::write(&f, content).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
        let store = tempfile::tempdir().unwrap();
        let store = store.path().join("s");
        let m = mount_with(scope.path(), "snapshot", &store, profile);
        as_nobody(&m.mp, "printf 'user: app\\n' >> conf.yaml");
        let (status, log) = m.stop();
        assert!(status.success(), "{what}: {log}");
        // The change took the path the case is about.
        let store = store.to_str().unwrap();
        let (_, sessions, _) = veilfs(&["log", "--store", store]);
        let session = sessions
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().next());
        let (_, changes, _) = veilfs(&["log", "--store", store, "--session", session.unwrap()]);
        let path = if what == "masked edit" {
            "masked-edit merged"
        } else {
            "write pending (deferred apply)"
        };
        assert!(
            changes.contains(path),
            "{what}: not through its path:\n{changes}"
        );
        let now = fs::read_to_string(&f).unwrap();
        assert!(
            now.ends_with("user: app\n"),
            "{what}: the edit never arrived: {now}"
        );
        assert!(now.starts_with(content), "{what}: {now}");
        assert_eq!(mode_of(&f), 0o0777, "{what}: the real file's mode");
    }
}

/// What `python3 -c HOLD_AND_WRITE FILE` does as the writer: opens FILE for writing, says so,
/// waits for a line on stdin, then writes through the descriptor it held.
const HOLD_AND_WRITE: &str = "import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
print('opened', flush=True)
sys.stdin.readline()
os.pwrite(fd, b'X', 0)
os.close(fd)
";

/// FUSE passthrough (`[write] passthrough_writes`, root mounts) writes with the credentials the
/// file was registered with and never asks veilfs. Registered with root's CAP_FSETID, a
/// set-user-ID bit put on a file the agent already held open for writing survived the agent's
/// writes, where Linux clears it: a way to a root set-user-ID program the agent could rewrite.
/// (Worse with FUSE_HANDLE_KILLPRIV_V2: the kernel then leaves the clearing to the server's
/// WRITE, which a passthrough write never sends.) The write must clear it; fuser's request log
/// shows that it passed through (no WRITE reached veilfs).
#[test]
fn a_set_id_bit_set_while_a_passthrough_writer_holds_the_file_is_cleared_by_its_write() {
    use std::io::{BufRead, Write};
    const PROFILE_PT: &str = "version = 1\nname = \"pt\"\n[redaction]\nrule_sets = []\n\
        [write]\npassthrough_writes = true\n[breaker]\nmax_overwritten_bytes = 0\n";
    let scope = tempfile::tempdir().unwrap();
    fs::set_permissions(scope.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let real = scope.path().join("tool");
    fs::write(&real, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o666)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let m = mount_env(
        scope.path(),
        "snapshot",
        &store.path().join("s"),
        PROFILE_PT,
        // Every request in the log, to see that the write never reached veilfs.
        &[("RUST_LOG", Path::new("info,fuser=debug"))],
    );
    let mut writer = Command::new("python3")
        .arg("-c")
        .arg(HOLD_AND_WRITE)
        .arg("tool")
        .current_dir(&m.mp)
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the writer as nobody");
    let mut said = String::new();
    std::io::BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said, "opened\n", "the writer did not open the file");
    // Root makes it set-user-ID while the writer holds it (a root program it may write).
    fs::set_permissions(m.path("tool"), fs::Permissions::from_mode(0o4777)).unwrap();
    writer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(writer.wait().unwrap().success(), "the writer failed");
    assert_eq!(fs::read_to_string(&real).unwrap(), "X!/bin/sh\n");
    assert_eq!(
        mode_of(&real),
        0o0777,
        "the real file kept its set-user-ID bit"
    );
    let (status, log) = m.stop();
    assert!(status.success(), "{log}");
    let requests: Vec<&str> = log.lines().filter(|l| l.contains(") ino 0x")).collect();
    assert!(
        requests.iter().any(|l| l.contains(" OPEN ")),
        "no request log:\n{log}"
    );
    assert!(
        !requests.iter().any(|l| l.contains(" WRITE ")),
        "the write reached veilfs, not passed through (the test proves nothing then):\n{log}"
    );
}
