//! Human approval through real mounts: a held request waits for `veilfs approve` / `deny` or
//! its timeout while other requests flow; only the mount's user (or root) may answer; revoke
//! ends a mount with a request held; `status` shows held requests and counters; the profile's
//! expiry maximum holds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

use crate::common::{Mount, WriteEnv, bin, eventually, veilfs};

const SECRET: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

fn profile(ops: &str, timeout: u64) -> String {
    format!(
        "version = 1\n[redaction]\nrule_sets = [\"secrets\"]\n[write]\nmode = \"snapshot\"\n[breaker]\nmax_deletes = 0\nmax_renames = 0\n\
         [approval]\nops = [{ops}]\ntimeout_secs = {timeout}\n"
    )
}

fn seed(d: &Path) {
    fs::write(d.join("a.txt"), "alpha\n").unwrap();
    fs::write(d.join("b.txt"), "bravo\n").unwrap();
    fs::write(d.join("conf.env"), format!("TOKEN={SECRET}\n")).unwrap();
}

/// Runs the CLI with extra environment; (success, stdout, stderr).
fn cli_env(args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run veilfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The ids of the requests held at `mp`, as `veilfs pending --json` lists them.
fn pending(mp: &Path, env: &[(&str, &Path)]) -> Vec<serde_json::Value> {
    let (ok, out, err) = cli_env(&["pending", "--json", &mp.display().to_string()], env);
    assert!(ok, "pending: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// Waits until one request is held at `mp` and returns its id.
fn held_id(mp: &Path, env: &[(&str, &Path)]) -> u64 {
    let mut id = None;
    assert!(
        eventually(|| {
            id = pending(mp, env).first().and_then(|p| p["id"].as_u64());
            id.is_some()
        }),
        "no request was held"
    );
    id.unwrap()
}

/// Deletes `p` on a thread of its own (the call blocks while the request is held).
fn delete_in_background(p: PathBuf) -> JoinHandle<std::io::Result<()>> {
    std::thread::spawn(move || fs::remove_file(p))
}

fn audit_text(env: &WriteEnv) -> String {
    let dir = Path::new(&env.store()).join("audit");
    let mut s = String::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        s.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
    }
    s
}

fn mp_str(m: &Mount) -> String {
    m.mp.canonicalize().unwrap().display().to_string()
}

#[test]
fn an_approved_delete_goes_through_and_is_audited() {
    let env = WriteEnv::new(&profile("\"delete\"", 60), seed);
    let m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    let t = delete_in_background(m.path("a.txt"));
    let id = held_id(&mp, &[]);
    let p = &pending(&mp, &[])[0];
    assert_eq!(p["op"], "delete");
    assert_eq!(p["path"], "a.txt");
    assert!(p["exe"].as_str().unwrap().contains("it"), "{p}");
    // Still there while nobody answered.
    assert!(env.scope.path().join("a.txt").exists());
    let (ok, _, err) = veilfs(&["approve", &id.to_string(), &mp_str(&m)]);
    assert!(ok, "{err}");
    t.join().unwrap().expect("the approved delete fails");
    assert!(!env.scope.path().join("a.txt").exists());
    assert!(pending(&mp, &[]).is_empty());
    // A clean unmount flushes the trail.
    m.stop();
    let audit = audit_text(&env);
    for kind in ["approval-requested", "approval-approved"] {
        assert!(
            audit.contains(&format!("\"event\":\"{kind}\"")),
            "no {kind} event in {audit}"
        );
    }
    // The delete itself is audited after the answer.
    assert!(audit.contains("\"op\":\"unlink\""), "{audit}");
}

#[test]
fn a_denied_delete_fails_with_eacces_and_leaves_the_file() {
    let env = WriteEnv::new(&profile("\"delete\"", 60), seed);
    let m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    let t = delete_in_background(m.path("a.txt"));
    let id = held_id(&mp, &[]);
    let (ok, _, err) = veilfs(&["deny", &id.to_string(), &mp_str(&m)]);
    assert!(ok, "{err}");
    let e = t.join().unwrap().expect_err("a denied delete succeeded");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    assert_eq!(
        fs::read_to_string(env.scope.path().join("a.txt")).unwrap(),
        "alpha\n"
    );
    // A second answer to the same request is refused.
    let (ok, _, err) = veilfs(&["approve", &id.to_string(), &mp_str(&m)]);
    assert!(!ok);
    assert!(err.contains("no request"), "{err}");
    m.stop();
    assert!(audit_text(&env).contains("\"event\":\"approval-denied\""));
}

#[test]
fn an_unanswered_request_times_out_as_eacces() {
    let env = WriteEnv::new(&profile("\"delete\", \"chmod\"", 1), seed);
    let m = env.mount();
    let t0 = std::time::Instant::now();
    let e = fs::remove_file(m.path("a.txt")).expect_err("deleted without an answer");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    assert!(t0.elapsed() >= std::time::Duration::from_millis(900));
    assert!(env.scope.path().join("a.txt").exists());
    // chmod asks too.
    use std::os::unix::fs::PermissionsExt;
    let e = fs::set_permissions(m.path("b.txt"), fs::Permissions::from_mode(0o600))
        .expect_err("chmod without an answer");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    m.stop();
    assert!(audit_text(&env).contains("\"event\":\"approval-timed-out\""));
}

#[test]
fn a_grant_for_a_while_answers_later_requests_of_its_kind() {
    let env = WriteEnv::new(&profile("\"delete\"", 60), |d| {
        fs::create_dir(d.join("build")).unwrap();
        for i in 0..3 {
            fs::write(d.join(format!("build/o{i}")), "x").unwrap();
        }
        fs::write(d.join("keep.txt"), "k").unwrap();
    });
    let m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    let t = delete_in_background(m.path("build/o0"));
    let id = held_id(&mp, &[]);
    // Every delete for ten minutes (path grants are unit-tested in `approval`).
    let (ok, _, err) = veilfs(&["approve", &id.to_string(), &mp_str(&m), "--for", "10m"]);
    assert!(ok, "{err}");
    t.join().unwrap().unwrap();
    // Covered by the standing grant: no request is held.
    fs::remove_file(m.path("build/o1")).unwrap();
    fs::remove_file(m.path("keep.txt")).unwrap();
    let (ok, out, err) = veilfs(&["status", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("every delete for"), "{out}");
}

#[test]
fn other_requests_flow_and_status_shows_the_held_one_and_counters() {
    let env = WriteEnv::new(&profile("\"delete\", \"rename\"", 60), |d| {
        seed(d);
        fs::create_dir(d.join("hold")).unwrap();
        fs::write(d.join("hold/a.txt"), "alpha\n").unwrap();
    });
    let m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    // The kernel keeps the directory of a held unlink locked (as for any unlink in progress):
    // requests elsewhere must flow.
    let t = delete_in_background(m.path("hold/a.txt"));
    let id = held_id(&mp, &[]);
    // While it is held: reads (masked), listings, creates and writes go on.
    let masked = fs::read_to_string(m.path("conf.env")).unwrap();
    assert!(!masked.contains(SECRET));
    assert_eq!(fs::read_to_string(m.path("b.txt")).unwrap(), "bravo\n");
    assert!(fs::read_dir(m.path("")).unwrap().count() >= 3);
    fs::write(m.path("new.txt"), "n").unwrap();
    assert_eq!(
        fs::read_to_string(env.scope.path().join("new.txt")).unwrap(),
        "n"
    );
    let (ok, out, err) = veilfs(&["status", "--json"]);
    assert!(ok, "{err}");
    let me = format!("\"mountpoint\":\"{}\"", mp.display());
    let line = out
        .lines()
        .find(|l| l.contains(&me))
        .unwrap_or_else(|| panic!("status does not list {}: {out}", mp.display()));
    let st: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(st["mode"], "snapshot");
    assert_eq!(st["breaker"], "ok");
    assert!(
        st["session"].as_str().is_some_and(|s| !s.is_empty()),
        "{st}"
    );
    assert!(st["counters"]["reads"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["counters"]["writes"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["pending"][0]["id"].as_u64(), Some(id), "{st}");
    assert_eq!(st["pending"][0]["op"], "delete");
    // The text form names it too.
    let (_, text, _) = veilfs(&["status"]);
    assert!(
        text.contains(&format!("held #{id}  delete hold/a.txt")),
        "{text}"
    );
    let (ok, _, err) = veilfs(&["deny", &id.to_string(), &mp_str(&m)]);
    assert!(ok, "{err}");
    assert!(t.join().unwrap().is_err());
}

#[test]
fn revoke_ends_a_mount_with_a_request_held() {
    let env = WriteEnv::new(&profile("\"delete\"", 60), seed);
    let mut m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    let t = delete_in_background(m.path("a.txt"));
    held_id(&mp, &[]);
    let t0 = std::time::Instant::now();
    let (ok, _, err) = veilfs(&["revoke", &mp.display().to_string()]);
    assert!(ok, "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(3), "{err}");
    assert!(t.join().unwrap().is_err(), "the held delete went through");
    assert!(env.scope.path().join("a.txt").exists());
    assert!(!veilfs::is_mount_point(&mp));
    assert!(m.child.take().unwrap().wait().unwrap().success());
    let audit = audit_text(&env);
    assert!(
        audit.contains("\"event\":\"approval-cancelled\""),
        "{audit}"
    );
}

/// A copy of the binary anyone may run (the worktree's target may not be reachable).
fn public_binary(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let b = dir.join("veilfs");
    fs::copy(bin(), &b).unwrap();
    fs::set_permissions(&b, fs::Permissions::from_mode(0o755)).unwrap();
    b
}

#[test]
fn another_user_cannot_answer_even_with_the_socket_open_to_all() {
    use std::os::unix::fs::PermissionsExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as nobody");
        return;
    }
    let env = WriteEnv::new(&profile("\"delete\"", 60), seed);
    let rt = tempfile::tempdir().unwrap();
    let rt_env = [("XDG_RUNTIME_DIR", rt.path())];
    let m = Mount::start_env(
        env.scope.path(),
        &[
            "--profile",
            env.profile.to_str().unwrap(),
            "--store",
            &env.store(),
        ],
        &rt_env,
    );
    let mp = m.mp.canonicalize().unwrap();
    let t = delete_in_background(m.path("a.txt"));
    let id = held_id(&mp, &rt_env);
    // Open every wall but the credential check: directories and socket world-accessible.
    let open = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    open(rt.path(), 0o755);
    open(&rt.path().join("veilfs"), 0o755);
    open(&rt.path().join("veilfs/admin"), 0o755);
    for e in fs::read_dir(rt.path().join("veilfs/admin"))
        .unwrap()
        .flatten()
    {
        open(&e.path(), 0o666);
    }
    let bindir = tempfile::tempdir().unwrap();
    open(bindir.path(), 0o755);
    let b = public_binary(bindir.path());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&b)
        .args(["approve", &id.to_string(), &mp.display().to_string()])
        .env("XDG_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody approved: {err}");
    assert!(err.contains("uid 65534 may not administer"), "{err}");
    // Still held, and the file still there; the owner's answer still works.
    assert_eq!(pending(&mp, &rt_env).len(), 1);
    assert!(env.scope.path().join("a.txt").exists());
    let (ok, _, err) = cli_env(
        &["deny", &id.to_string(), &mp.display().to_string()],
        &rt_env,
    );
    assert!(ok, "{err}");
    assert!(t.join().unwrap().is_err());
    m.stop();
    assert!(audit_text(&env).contains("\"event\":\"admin-refused\""));
}

#[test]
fn the_profiles_expiry_maximum_caps_mount_expires() {
    let env = WriteEnv::new("version = 1\n[guardrails]\nmax_expires = \"1h\"\n", seed);
    let p = env.profile.to_str().unwrap();
    let mp = tempfile::tempdir().unwrap();
    let (ok, _, err) = veilfs(&[
        "mount",
        "--profile",
        p,
        "--expires",
        "2h",
        &env.scope.path().display().to_string(),
        &mp.path().display().to_string(),
    ]);
    assert!(!ok, "mounted beyond the maximum");
    assert!(err.contains("exceeds the profile's maximum"), "{err}");
    assert!(!veilfs::is_mount_point(mp.path()));
    // Without --expires the maximum applies.
    let m = Mount::start(env.scope.path(), &["--profile", p]);
    let mpc = m.mp.canonicalize().unwrap();
    let (ok, out, err) = veilfs(&["status", "--json"]);
    assert!(ok, "{err}");
    let me = format!("\"mountpoint\":\"{}\"", mpc.display());
    let st: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.contains(&me)).expect("listed")).unwrap();
    let left = st["expires_in_secs"].as_u64().expect("no expiry");
    assert!((3500..=3600).contains(&left), "{st}");
    // A shorter one is fine.
    let m2 = Mount::start(env.scope.path(), &["--profile", p, "--expires", "30m"]);
    drop(m2);
    drop(m);
}

/// `veilfs run --sandbox`: the agent cannot reach the admin socket to answer its own request.
#[test]
fn a_sandboxed_agent_cannot_approve_its_own_request() {
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("skipped: bubblewrap (bwrap) is not installed; tests/run-all.sh installs it");
        return;
    }
    let env = WriteEnv::new(&profile("\"delete\"", 2), seed);
    // Ask again and again while the delete is held (until the timeout ends it).
    let script = format!(
        "rm a.txt 2>/dev/null & RM=$!; \
         while kill -0 $RM 2>/dev/null; do \
           {bin} approve 1 \"$VEILFS_MOUNT\" 2>>/tmp/err && echo APPROVED; \
         done; \
         wait $RM || echo RM-FAILED; head -c 300 /tmp/err; \
         {bin} checkpoint >/dev/null && echo CHECKPOINTED",
        bin = bin()
    );
    let out = Command::new(bin())
        .args(["run", "--sandbox", "--profile"])
        .arg(&env.profile)
        .args(["--store", &env.store()])
        .arg(env.scope.path())
        .args(["--", "bash", "-c", &script])
        .env("XDG_DATA_HOME", env.pdir.path())
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!o.contains("APPROVED"), "{o}{err}");
    assert!(o.contains("RM-FAILED"), "{o}{err}");
    assert!(o.contains("no veilfs mount answers"), "{o}{err}");
    // The agent-facing socket still works from inside.
    assert!(o.contains("CHECKPOINTED"), "{o}{err}");
    assert!(env.scope.path().join("a.txt").exists());
}

/// `overwrite` covers O_TRUNC opens of plain files and of masked ones (edited through a
/// scratch copy of their view) alike.
#[test]
fn an_overwrite_of_a_plain_or_a_masked_file_asks() {
    let env = WriteEnv::new(&profile("\"overwrite\"", 1), seed);
    let m = env.mount();
    for f in ["b.txt", "conf.env"] {
        let e = fs::write(m.path(f), "replaced\n").expect_err(f);
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{f}: {e}");
    }
    assert_eq!(
        fs::read_to_string(env.scope.path().join("b.txt")).unwrap(),
        "bravo\n"
    );
    assert!(
        fs::read_to_string(env.scope.path().join("conf.env"))
            .unwrap()
            .contains(SECRET)
    );
    // Appending is no overwrite: it goes through without asking.
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("b.txt"))
        .unwrap();
    f.write_all(b"more\n").unwrap();
}

/// Issue #18's first gap: the process whose delete waits is killed. fuser 0.18 cannot hand the
/// kernel's FUSE_INTERRUPT to veilfs, so the held request watches its caller; the request is
/// released (audited as cancelled) and the killed process can die, long before the timeout.
#[test]
fn a_killed_caller_releases_its_held_request() {
    let env = WriteEnv::new(&profile("\"delete\"", 60), seed);
    let m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    let mut rm = Command::new("rm")
        .arg(m.path("a.txt"))
        .spawn()
        .expect("spawn rm");
    let id = held_id(&mp, &[]);
    let t0 = std::time::Instant::now();
    rm.kill().unwrap();
    assert!(
        eventually(|| rm.try_wait().unwrap().is_some()),
        "the killed rm is still stuck in its held request"
    );
    assert!(eventually(|| pending(&mp, &[]).is_empty()));
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert!(env.scope.path().join("a.txt").exists());
    let (ok, _, err) = veilfs(&["approve", &id.to_string(), &mp_str(&m)]);
    assert!(!ok, "request {id} could still be approved");
    assert!(err.contains("no request"), "{err}");
    m.stop();
    let audit = audit_text(&env);
    assert!(
        audit.contains("\"event\":\"approval-cancelled\"") && audit.contains("killed or signalled"),
        "{audit}"
    );
}

/// Issue #18's second gap: while the delete of `d/sub/f.txt` waits, the agent renames `d` away
/// and puts a decoy at the same path. The rename is not held up by the pending request, and
/// the approval then acts on nothing: neither the object the person was shown (now at
/// `e/sub/f.txt`) nor the decoy now at the path they were shown is deleted.
#[test]
fn an_approval_never_acts_on_what_was_renamed_or_swapped_in_meanwhile() {
    fn seed_tree(d: &Path) {
        fs::create_dir_all(d.join("d/sub")).unwrap();
        fs::write(d.join("d/sub/f.txt"), "shown\n").unwrap();
    }
    let env = WriteEnv::new(&profile("\"delete\"", 60), seed_tree);
    let m = env.mount();
    let mp = m.mp.canonicalize().unwrap();
    let t = delete_in_background(m.path("d/sub/f.txt"));
    let id = held_id(&mp, &[]);
    // The agent, meanwhile: rename the ancestor, then put a decoy at the approved path.
    let (from, to) = (m.path("d"), m.path("e"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fs::rename(from, to));
    });
    let renamed = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the rename waited for the held delete");
    renamed.expect("rename d -> e");
    fs::create_dir_all(m.path("d/sub")).unwrap();
    fs::write(m.path("d/sub/f.txt"), "decoy\n").unwrap();
    let (ok, _, err) = veilfs(&["approve", &id.to_string(), &mp_str(&m)]);
    assert!(ok, "{err}");
    let e = t
        .join()
        .unwrap()
        .expect_err("the approved delete went through");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    let real = env.scope.path();
    assert_eq!(
        fs::read_to_string(real.join("e/sub/f.txt")).unwrap(),
        "shown\n"
    );
    assert_eq!(
        fs::read_to_string(real.join("d/sub/f.txt")).unwrap(),
        "decoy\n"
    );
    m.stop();
    assert!(
        audit_text(&env).contains("renamed or replaced while a person was asked"),
        "no audited refusal"
    );
}
