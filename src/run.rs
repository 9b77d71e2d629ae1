//! `veilfs run`: one agent session, from mount to summary, in one command.
//!
//! Why a child `veilfs mount` rather than a mount on a thread of this process: the mount
//! already owns its whole lifecycle (signal thread, unmount, releasing the FUSE device, ending
//! the journal), and a separate process is the one thing that survives whatever the command
//! does to us. So `run`:
//! 1. resolves the store the mount will use (so the sandbox can hide it and the summary can
//!    name it) and makes a private mount point (`/tmp/veilfs-run-XXXX/<scope name>`, 0700);
//! 2. starts `veilfs mount --log-json` in its own process group (a Ctrl-C at the terminal is
//!    the command's, not the mount's) with `PR_SET_PDEATHSIG` (if `run` dies, the mount
//!    unmounts), its log (warnings and every audit decision) going to `STORE/runs/<stamp>.log`,
//!    and waits for its "mounted" line;
//! 3. runs the command with the mount as its working directory (optionally inside bubblewrap,
//!    see [`sandbox_command`]), also with `PR_SET_PDEATHSIG`: a busy mount cannot be unmounted;
//! 4. forwards SIGINT/SIGTERM/SIGHUP sent to `run` to the command (signals the terminal sent
//!    to the whole foreground group already reached it, and are not sent twice), and when the
//!    command exits, however it exits, unmounts, reaps the mount and removes the mount point;
//! 5. prints a summary from the session journal and the audit log, with the commands that
//!    review and undo the session; its exit code is the command's (128+N when signal N
//!    killed it).
//!
//! The mount point is never removed recursively: a directory that is still a mount would take
//! the agent's view, and in snapshot mode the real files, with it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::journal::Event;
use crate::mount::{MountRequest, is_mount_point, store_dir, unmount};
use crate::profile::{Profile, WriteMode};
use crate::store::Store;

/// What `veilfs run` was asked to do.
pub(crate) struct RunRequest {
    pub profile: Option<PathBuf>,
    pub mode: Option<WriteMode>,
    pub store: Option<PathBuf>,
    pub sandbox: bool,
    /// The agent's manifest, passed to the mount (`mount --manifest`).
    pub manifest: Option<PathBuf>,
    pub scope: PathBuf,
    /// The command and its arguments (at least the command).
    pub command: Vec<OsString>,
}

pub(crate) use crate::control::ENV_MOUNT;

/// Runs one session; returns the exit code `veilfs run` exits with.
pub(crate) fn run(req: RunRequest) -> anyhow::Result<u8> {
    // Before any thread or child exists: only the signal thread receives these. Children get
    // a clean mask (std resets it at spawn).
    let signals = block_signals();
    let Some(program) = req.command.first().cloned() else {
        bail!("no command given: veilfs run SCOPE -- COMMAND [ARGS...]");
    };
    let bwrap = if req.sandbox {
        Some(find_in_path("bwrap").context(
            "--sandbox needs bubblewrap, which is not installed (`apt-get install bubblewrap`)",
        )?)
    } else {
        None
    };
    let profile = match &req.profile {
        Some(p) => Profile::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Profile::builtin_default(),
    };
    let mode = req.mode.unwrap_or(profile.write.mode);
    let scope = req
        .scope
        .canonicalize()
        .with_context(|| format!("scope {}: does not exist", req.scope.display()))?;
    let name = scope
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "view".into());
    let base = tempfile::Builder::new()
        .prefix("veilfs-run-")
        .tempdir()
        .context("create a private mount point")?
        .keep();
    // Only we (and so the command, run as us) may enter it.
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("chmod {}", base.display()))?;
    let mp = base.join(name);
    let cleanup = MountDir {
        base: base.clone(),
        mp: mp.clone(),
    };
    std::fs::create_dir(&mp).with_context(|| format!("create {}", mp.display()))?;
    // Checked here too, so a bad manifest is reported before anything is mounted.
    let manifest = req
        .manifest
        .as_deref()
        .map(crate::manifest::Manifest::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Network egress (see `egress`): only in the sandbox (outside it veilfs does not control
    // the network), and only when the profile, narrowed by the manifest, allows something.
    let egress = if req.sandbox {
        let allow = crate::egress::AllowList::new(
            &profile.network.allow,
            manifest
                .as_ref()
                .map(|m| m.capabilities.network.egress.as_slice()),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        (!allow.is_empty())
            .then(|| -> anyhow::Result<Egress> {
                Ok(Egress {
                    socket: base.join(EGRESS_SOCKET),
                    exe: std::env::current_exe().context("find the veilfs binary")?,
                    relay: base.join("veilfs-egress-relay"),
                })
            })
            .transpose()?
    } else {
        None
    };
    let store = store_dir(
        &MountRequest {
            scope: scope.clone(),
            mountpoint: mp.clone(),
            profile,
            mode: req.mode,
            store: req.store.clone(),
            allow_other: false,
            expires: None,
            audit_log: None,
            audit_key: None,
            manifest: None,
            egress_socket: None,
        },
        &scope,
        &mp,
    )?;
    Store::create_or_open(&store).map_err(|e| anyhow::anyhow!("store {}: {e}", store.display()))?;
    let runs = store.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("create {}", runs.display()))?;
    let log_path = runs.join(format!(
        "{}-{}.log",
        crate::time::session_stamp(crate::time::now_ns()),
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;

    let mut mount_cmd = Command::new(std::env::current_exe().context("find the veilfs binary")?);
    mount_cmd
        .arg("mount")
        .arg("--log-json")
        .arg("--store")
        .arg(&store);
    if let Some(p) = &req.profile {
        mount_cmd.arg("--profile").arg(p);
    }
    if let Some(m) = req.mode {
        mount_cmd.arg("--mode").arg(m.as_str());
    }
    if let Some(m) = &req.manifest {
        mount_cmd.arg("--manifest").arg(std::path::absolute(m)?);
    }
    if let Some(e) = &egress {
        mount_cmd.arg("--egress-socket").arg(&e.socket);
    }
    mount_cmd
        .arg(&scope)
        .arg(&mp)
        .env("RUST_LOG", "warn,veilfs::audit=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0);
    die_with_parent(&mut mount_cmd, libc::SIGTERM);
    let mut mount = mount_cmd.spawn().context("start veilfs mount")?;
    let mut line = String::new();
    if let Some(out) = mount.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if !line.starts_with("veilfs: mounted") {
        let _ = mount.wait();
        let why = std::fs::read_to_string(&log_path).unwrap_or_default();
        let why: Vec<String> = why.lines().map(log_message).collect();
        drop(cleanup);
        bail!("the mount did not come up:\n{}", why.join("\n"));
    }

    let state = Arc::new(SignalState::default());
    spawn_signal_thread(signals, state.clone(), req.sandbox);
    let status = if let Some(sig) = state.before_start() {
        eprintln!("veilfs: signal {sig} before the command started: not running it");
        None
    } else {
        let mut cmd = match &bwrap {
            Some(b) => sandbox_command(b, &scope, &store, &mp, egress.as_ref(), &req.command),
            None => {
                let mut c = Command::new(&program);
                c.args(&req.command[1..]).current_dir(&mp);
                c
            }
        };
        cmd.env(ENV_MOUNT, &mp).env(
            crate::control::ENV_CONTROL,
            crate::control::socket_path(&mp),
        );
        die_with_parent(&mut cmd, libc::SIGKILL);
        match cmd.spawn() {
            Ok(child) => Some(wait_child(child, &state)),
            Err(e) => {
                eprintln!("veilfs: cannot run {}: {e}", Path::new(&program).display());
                None
            }
        }
    };
    let code = match status {
        Some(s) => exit_code(s),
        None => state.received().map_or(127, |s| 128 + s as u8),
    };

    take_down(&mp, &mut mount);
    drop(cleanup);
    let summary = Summary::collect(&store, mount.id(), &log_path, mode);
    eprint!("{}", summary.render(&store, &log_path));
    Ok(code)
}

/// The private mount point and its parent, removed (never recursively) when the run ends.
struct MountDir {
    base: PathBuf,
    mp: PathBuf,
}

impl Drop for MountDir {
    fn drop(&mut self) {
        if is_mount_point(&self.mp) {
            eprintln!(
                "veilfs: {} is still mounted; left in place",
                self.mp.display()
            );
            return;
        }
        let _ = std::fs::remove_dir(&self.mp);
        // The egress proxy's socket, when a revoked mount exited without removing it.
        let _ = std::fs::remove_file(self.base.join(EGRESS_SOCKET));
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// Unmounts `mp` (retrying while processes the command left behind still use it, then
/// detaching it) and reaps the mount process.
fn take_down(mp: &Path, mount: &mut Child) {
    let mut last = None;
    for _ in 0..50 {
        if !is_mount_point(mp) {
            last = None;
            break;
        }
        match unmount(mp) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(e) = last {
        eprintln!("veilfs: {e:#}; detaching the mount (umount -l)");
        let _ = Command::new("umount").arg("-l").arg(mp).status();
    }
    // The mount process ends by itself once its mount is gone.
    for _ in 0..100 {
        if let Ok(Some(_)) = mount.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("veilfs: the mount process did not exit; stopping it");
    // Our own unreaped child: the pid cannot have been reused.
    crate::sys::kill(mount.id() as i32, libc::SIGTERM);
    let _ = mount.wait();
}

/// The egress proxy's socket, in the run's private directory.
const EGRESS_SOCKET: &str = "egress.sock";

/// The sandbox's way out when the profile allows egress (see `egress`): the proxy's socket
/// (served by the mount process) and this binary, both bound into the sandbox, where the
/// binary runs as the relay in front of the command.
pub(crate) struct Egress {
    /// The proxy's Unix socket, in the run's private directory.
    pub socket: PathBuf,
    /// This binary, outside.
    pub exe: PathBuf,
    /// Where the sandbox sees it (the run's private directory: /tmp is the sandbox's own).
    pub relay: PathBuf,
}

/// The bubblewrap command for `--sandbox`: no network, the whole system read-only, a private
/// /tmp, /dev and /proc (in its own pid namespace, so no `/proc/PID/root` of a process outside
/// leads back to the real folder), the scope, the store and the admin sockets covered by empty
/// directories, and
/// only the mount writable, as the working directory. It dies with `run`. With `egress`, the
/// network namespace stays as private (only a loopback); the command runs behind the relay
/// (`veilfs __egress-relay`), whose proxy variables lead to the proxy's socket.
pub(crate) fn sandbox_command(
    bwrap: &Path,
    scope: &Path,
    store: &Path,
    mp: &Path,
    egress: Option<&Egress>,
    command: &[OsString],
) -> Command {
    let mut c = Command::new(bwrap);
    c.args(["--die-with-parent", "--unshare-net", "--unshare-pid"])
        .args(["--unshare-ipc", "--unshare-uts", "--new-session"])
        .args(["--ro-bind", "/", "/"])
        .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
    // The admin sockets too: the agent may not answer its own approvals or resume a
    // breaker it tripped (see `admin`); the agent-facing control socket stays reachable.
    let admin = crate::admin::admin_dir();
    for hidden in [scope, store] {
        c.arg("--tmpfs").arg(hidden);
    }
    if admin.is_dir() {
        c.arg("--tmpfs").arg(&admin);
    }
    c.arg("--bind").arg(mp).arg(mp);
    // The agent-facing control socket (`veilfs why`, `checkpoint`): a normal user without
    // XDG_RUNTIME_DIR has it under /tmp, which is the sandbox's own.
    let control = crate::control::socket_path(mp);
    if control.exists() {
        c.arg("--bind").arg(&control).arg(&control);
    }
    if let Some(e) = egress {
        c.arg("--bind").arg(&e.socket).arg(&e.socket);
        c.arg("--ro-bind").arg(&e.exe).arg(&e.relay);
    }
    c.arg("--chdir").arg(mp).arg("--");
    match egress {
        Some(e) => c
            .arg(&e.relay)
            .args(crate::egress::relay::helper_args(&e.socket, command)),
        None => c.args(command),
    };
    c
}

/// Makes the kernel send `sig` to the child when the thread that spawned it (the main thread
/// of `run`) ends, whatever ends it (see `sys::die_with_parent`).
fn die_with_parent(cmd: &mut Command, sig: i32) {
    crate::sys::die_with_parent(cmd, sig);
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The exit code of a process that ended with `s`: its own, or 128+N for signal N.
pub(crate) fn exit_code(s: ExitStatus) -> u8 {
    match (s.code(), s.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    }
}

/// What the signal thread and the main thread share.
#[derive(Default)]
struct SignalState {
    /// The command's pid once it runs (0 before).
    child: AtomicI32,
    /// The last signal received (0: none).
    received: AtomicI32,
}

impl SignalState {
    fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    fn before_start(&self) -> Option<i32> {
        self.received()
    }
}

fn wait_child(mut child: Child, state: &SignalState) -> ExitStatus {
    state.child.store(child.id() as i32, Ordering::SeqCst);
    // A signal that came between the check before spawning and now is not lost.
    if let Some(sig) = state.received() {
        // Our own unreaped child.
        crate::sys::kill(child.id() as i32, sig);
    }
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break ExitStatus::from_raw(1 << 8),
        }
    };
    state.child.store(0, Ordering::SeqCst);
    status
}

fn spawn_signal_thread(set: libc::sigset_t, state: Arc<SignalState>, always_forward: bool) {
    let _ = std::thread::Builder::new()
        .name("veilfs-run-signals".into())
        .spawn(move || {
            loop {
                let (sig, from_kernel) = wait_signal(&set);
                state.received.store(sig, Ordering::SeqCst);
                let pid = state.child.load(Ordering::SeqCst);
                // A terminal's Ctrl-C reaches the whole foreground group, the command too
                // (unless it runs in its own session, as in the sandbox): not twice.
                if pid > 0 && (!from_kernel || always_forward) {
                    // The command's pid, which stays ours until reaped.
                    crate::sys::kill(pid, sig);
                }
            }
        });
}

fn block_signals() -> libc::sigset_t {
    crate::sys::block_run_signals()
}

/// The next blocked signal, and whether the kernel sent it (a terminal) rather than a process.
fn wait_signal(set: &libc::sigset_t) -> (i32, bool) {
    crate::sys::wait_signal_info(set)
}

/// The message of one JSON log line (the line itself when it is not JSON).
fn log_message(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => {
            let f = &v["fields"];
            let mut s = f["message"].as_str().unwrap_or(line).to_string();
            if let Some(obj) = f.as_object() {
                for (k, val) in obj.iter().filter(|(k, _)| *k != "message") {
                    let val = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
                    s.push_str(&format!(" {k}={val}"));
                }
            }
            s
        }
        Err(_) => line.to_string(),
    }
}

/// One denial from the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Denial {
    pub what: String,
    pub path: String,
    pub reason: String,
}

/// What a session did, from its journal and its audit log.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub mode: Option<WriteMode>,
    pub session: Option<String>,
    pub files_read: usize,
    pub files_redacted: usize,
    pub paths_changed: usize,
    pub renames: usize,
    pub checkpoints: u64,
    pub denials: Vec<Denial>,
}

impl Summary {
    /// Reads the journal of the session the mount process `pid` wrote (if any) and the log.
    pub(crate) fn collect(store: &Path, pid: u32, log: &Path, mode: WriteMode) -> Summary {
        let mut s = Summary {
            mode: Some(mode),
            ..Summary::default()
        };
        if let Ok(st) = Store::open(store)
            && let Ok(list) = st.sessions()
        {
            for info in list.iter().rev() {
                let Ok(l) = st.load_session(&info.id) else {
                    continue;
                };
                if !matches!(l.records.first().map(|r| &r.event),
                    Some(Event::SessionStart { pid: p, .. }) if *p == pid)
                {
                    continue;
                }
                let mut changed = BTreeSet::new();
                for r in &l.records {
                    match &r.event {
                        Event::Capture { path, .. } | Event::Change { path, .. }
                            if !path.as_os_str().is_empty() =>
                        {
                            changed.insert(path.clone());
                        }
                        Event::Rename { from, to, .. } => {
                            s.renames += 1;
                            changed.insert(from.clone());
                            changed.insert(to.clone());
                        }
                        Event::Checkpoint { .. } => s.checkpoints += 1,
                        _ => {}
                    }
                }
                s.paths_changed = changed.len();
                s.session = Some(info.id.clone());
                break;
            }
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let audit = parse_audit(&text);
        let mut read = BTreeSet::new();
        let mut masked = BTreeSet::new();
        let mut overlay_changes = BTreeSet::new();
        for a in audit {
            if a.message == "read" || a.message == "open" || a.message.starts_with("open:") {
                if a.masked {
                    masked.insert(a.path.clone());
                }
                read.insert(a.path);
            } else if a.message == "changed" || a.message == "renamed" {
                overlay_changes.insert(a.path);
            } else if a.message.contains("denied") || a.message.contains("refused") {
                s.denials.push(Denial {
                    what: a.message,
                    path: a.path,
                    reason: a.reason,
                });
            }
        }
        s.files_read = read.len();
        s.files_redacted = masked.len();
        if mode == WriteMode::Overlay {
            s.paths_changed = overlay_changes.len();
        }
        s
    }

    /// The summary as printed to stderr after the command.
    pub(crate) fn render(&self, store: &Path, log: &Path) -> String {
        let mode = self.mode.unwrap_or_default();
        let mut o = format!(
            "veilfs: session summary ({mode} mode{})\n",
            self.session
                .as_ref()
                .map(|s| format!(", session {s}"))
                .unwrap_or_default()
        );
        o.push_str(&format!(
            "  files read:        {}\n  redacted views:    {}\n",
            self.files_read, self.files_redacted
        ));
        if mode != WriteMode::ReadOnly {
            o.push_str(&format!(
                "  paths changed:     {} ({} renames)\n",
                self.paths_changed, self.renames
            ));
        }
        o.push_str(&format!("  denials:           {}\n", self.denials.len()));
        for d in self.denials.iter().rev().take(5).rev() {
            o.push_str(&format!("    {}: {} ({})\n", d.what, d.path, d.reason));
        }
        o.push_str(&format!("  audit log:         {}\n", log.display()));
        let st = store.display();
        let sess = self
            .session
            .as_ref()
            .map(|s| format!(" --session {s}"))
            .unwrap_or_default();
        match mode {
            WriteMode::ReadOnly => o.push_str("  read-only: nothing in the folder could change\n"),
            WriteMode::Snapshot => {
                o.push_str(&format!("  review:    veilfs diff --store {st}{sess}\n"));
                o.push_str(&format!(
                    "  roll back: veilfs rollback --store {st}{sess}\n"
                ));
                if self.checkpoints > 0 {
                    o.push_str(&format!(
                        "  {} checkpoint(s): undo the turns after one with `veilfs rollback --store {st}{sess} --to N` (`veilfs log --store {st}` lists them)\n",
                        self.checkpoints
                    ));
                }
            }
            WriteMode::Overlay => {
                o.push_str(&format!("  review:    veilfs diff --store {st}{sess}\n"));
                o.push_str(&format!("  apply:     veilfs commit --store {st}{sess}\n"));
                o.push_str(&format!(
                    "  throw away: veilfs discard --store {st}{sess}\n"
                ));
            }
        }
        o
    }
}

/// One audit decision from a `--log-json` log.
#[derive(Debug, Default)]
pub(crate) struct AuditLine {
    pub message: String,
    pub path: String,
    pub reason: String,
    pub masked: bool,
}

/// The `veilfs::audit` lines of a `--log-json` log, oldest first (other lines skipped).
pub(crate) fn parse_audit(text: &str) -> Vec<AuditLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if !v["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("veilfs::audit"))
        {
            continue;
        }
        let f = &v["fields"];
        let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
        let field = |k: &str| f[k].as_str().filter(|x| !x.is_empty());
        let path = match (field("path"), field("from"), field("to")) {
            (Some(p), _, _) => p.to_string(),
            (None, Some(a), Some(b)) => format!("{a} -> {b}"),
            _ => String::new(),
        };
        // Typed audit events (`audit::AuditEvent`) say what they are in `event`; a denial's
        // message repeats its reason, so it is told as "OP denied".
        let message = match field("event") {
            Some("denied") => format!("{} denied", s("op")),
            Some(e) => e.to_string(),
            None => s("message"),
        };
        out.push(AuditLine {
            message,
            path,
            reason: s("reason"),
            masked: f["masked"].as_bool().unwrap_or(false),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_are_counted_by_kind() {
        let log = r#"{"timestamp":"x","level":"INFO","fields":{"message":"read","path":"a","masked":true},"target":"veilfs::audit"}
{"timestamp":"x","level":"INFO","fields":{"message":"read","path":"a","masked":true},"target":"veilfs::audit"}
{"timestamp":"x","level":"INFO","fields":{"message":"open","path":"b","masked":false,"writable":false},"target":"veilfs::audit"}
{"timestamp":"x","level":"WARN","fields":{"message":"write denied","path":"c","op":"write","reason":"not writable under the profile"},"target":"veilfs::audit"}
{"timestamp":"x","level":"WARN","fields":{"message":"something else"},"target":"veilfs::fs"}
not json
"#;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, log).unwrap();
        let s = Summary::collect(&d.path().join("none"), 1, &p, WriteMode::ReadOnly);
        assert_eq!((s.files_read, s.files_redacted), (2, 1));
        assert_eq!(
            s.denials,
            vec![Denial {
                what: "write denied".into(),
                path: "c".into(),
                reason: "not writable under the profile".into()
            }]
        );
        let r = s.render(Path::new("/s"), &p);
        assert!(r.contains("denials:           1"), "{r}");
    }

    #[test]
    fn exit_codes_pass_through_and_signals_add_128() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
