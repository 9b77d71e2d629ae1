//! The mount's admin socket: `veilfs status`, `pending`, `approve`, `deny`, `resume` and
//! `revoke` reach a live mount here, and only here.
//!
//! Why a second socket beside the agent-facing one ([`crate::control`]: checkpoint, why): the
//! agent must be able to mark its turns, but must never answer its own approvals or resume a
//! breaker it tripped. Three walls keep it out, each enough on its own for one way the agent
//! may run:
//! - **another user**: the socket is 0600 in a 0700 directory, and every connection's peer
//!   credentials (`SO_PEERCRED`, taken by the kernel at `connect`) must name the mount's uid or
//!   root, whatever the file modes say;
//! - **`veilfs run --sandbox`**: the admin directory (`<runtime dir>/admin`) is covered by an
//!   empty tmpfs in the sandbox, so the socket does not exist there; and a peer in another pid
//!   namespace than the mount's (bubblewrap's `--unshare-pid`) is refused even if it reached it;
//! - **the same user, unsandboxed**: nothing separates the agent from the person then (it
//!   could as well ptrace the mount); that setup trusts the agent with the admin commands.
//!
//! Signals are no longer used for resume or revoke: a signal carries no credentials the mount
//! could check (any process of the user may send it), so SIGUSR1/SIGUSR2 are ignored.
//! SIGINT/SIGTERM/SIGHUP still unmount cleanly (they end the mount, which any process of the
//! user can do with `umount` anyway).
//!
//! Protocol: one JSON line each way, as on the control socket ([`Request`], [`Response`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::approval::{PendingInfo, Queue, Scope};
use crate::audit::{self, AuditEvent, Counters};
use crate::breaker::Breaker;

const MAX_REQUEST: u64 = 64 * 1024;

/// The directory of admin sockets (hidden from the sandbox).
pub(crate) fn admin_dir() -> PathBuf {
    crate::control::runtime_dir().join("admin")
}

/// The admin socket of a mount at `mountpoint` (canonicalised when it exists).
pub(crate) fn socket_path(mountpoint: &Path) -> PathBuf {
    crate::control::socket_in(&admin_dir(), "adm-", mountpoint)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Status,
    Pending,
    Approve {
        id: u64,
        #[serde(default)]
        scope: Scope,
    },
    Deny {
        id: u64,
    },
    Resume,
    Revoke,
}

/// What `veilfs status` shows of one mount.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MountStatus {
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub scope: PathBuf,
    pub mode: String,
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub counters: Counters,
    /// `ok`, or the trip in force.
    pub breaker: String,
    /// Seconds since the epoch when the grant ends, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    #[serde(default)]
    pub pending: Vec<PendingInfo>,
    #[serde(default)]
    pub grants: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MountStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<PendingInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The mount's process (revoke: the caller waits for it to end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Ends the mount now (revoke); never returns in the mount process.
pub(crate) type EndNow = Arc<dyn Fn(&str) + Send + Sync>;

/// What the admin socket answers for.
pub(crate) struct Admin {
    pub status: MountStatus,
    pub breaker: Arc<Breaker>,
    pub approvals: Option<Arc<Queue>>,
    pub expires: Option<Instant>,
    pub end_now: EndNow,
}

/// Who may use the admin commands: the mount's own uid or root, from the mount's pid
/// namespace (`same_ns`: `None` when it could not be told).
pub(crate) fn authorize(peer_uid: u32, owner: u32, same_ns: Option<bool>) -> Result<(), String> {
    if peer_uid != owner && peer_uid != 0 {
        return Err(format!(
            "uid {peer_uid} may not administer a mount of uid {owner}"
        ));
    }
    match same_ns {
        Some(true) => Ok(()),
        // Root may always; its /proc entries may be unreadable to an unprivileged mount.
        None if peer_uid == 0 => Ok(()),
        Some(false) => Err(
            "a process in another pid namespace (a sandbox) may not administer the mount".into(),
        ),
        None => Err("cannot tell the peer's pid namespace".into()),
    }
}

fn same_pid_ns(pid: i32) -> Option<bool> {
    if pid <= 0 {
        // Not visible from here: a namespace we do not contain.
        return Some(false);
    }
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(theirs == ours)
}

/// A listening admin socket; removed when dropped.
pub(crate) struct Server {
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts answering admin requests for the mount at `mountpoint` (canonical).
pub(crate) fn serve(mountpoint: &Path, admin: Admin) -> anyhow::Result<Server> {
    let path = socket_path(mountpoint);
    let listener = crate::control::bind_private(&path, "adm-")?;
    let owner = rustix::process::geteuid().as_raw();
    std::thread::Builder::new()
        .name("veilfs-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => handle(s, &admin, owner),
                    Err(e) => warn!("admin socket: {e}"),
                }
            }
        })
        .context("spawn the admin thread")?;
    Ok(Server { path })
}

fn reply(stream: &UnixStream, resp: &Response) {
    let mut out = serde_json::to_string(resp).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = (&*stream).write_all(out.as_bytes());
}

fn refuse(msg: String) -> Response {
    Response {
        error: Some(msg),
        ..Response::default()
    }
}

fn handle(stream: UnixStream, admin: &Admin, owner: u32) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let cred = match rustix::net::sockopt::socket_peercred(stream.as_fd()) {
        Ok(c) => c,
        Err(e) => return reply(&stream, &refuse(format!("no peer credentials: {e}"))),
    };
    let (pid, uid, gid) = (
        cred.pid.as_raw_nonzero().get(),
        cred.uid.as_raw(),
        cred.gid.as_raw(),
    );
    // Answers are audited as the peer's.
    let _actor = audit::Actor {
        pid: pid as u32,
        uid,
        gid,
    }
    .enter();
    if let Err(why) = authorize(uid, owner, same_pid_ns(pid)) {
        audit::emit(&AuditEvent::Control {
            action: "admin-refused",
            reason: format!("pid {pid}: {why}"),
        });
        return reply(&stream, &refuse(format!("refused: {why}")));
    }
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let req = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return reply(&stream, &refuse(format!("bad request: {e}"))),
    };
    if let Request::Revoke = req {
        reply(
            &stream,
            &Response {
                ok: true,
                pid: Some(std::process::id()),
                ..Response::default()
            },
        );
        drop(stream);
        (admin.end_now)("revoked by `veilfs revoke`");
        return;
    }
    reply(&stream, &answer(req, admin));
}

fn no_approvals() -> Response {
    refuse("this mount's profile asks for no approvals".into())
}

fn answer(req: Request, admin: &Admin) -> Response {
    match req {
        Request::Status => {
            let mut s = admin.status.clone();
            s.counters = audit::counters();
            s.breaker = admin
                .breaker
                .state()
                .map_or_else(|| "ok".to_string(), |t| t.to_string());
            s.expires_in_secs = admin
                .expires
                .map(|e| e.saturating_duration_since(Instant::now()).as_secs());
            if let Some(q) = &admin.approvals {
                s.pending = q.pending();
                s.grants = q.grants();
            }
            Response {
                ok: true,
                status: Some(s),
                ..Response::default()
            }
        }
        Request::Pending => match &admin.approvals {
            Some(q) => Response {
                ok: true,
                pending: q.pending(),
                ..Response::default()
            },
            None => Response {
                ok: true,
                ..Response::default()
            },
        },
        Request::Approve { id, scope } => {
            match admin.approvals.as_ref().map(|q| q.answer(id, true, scope)) {
                Some(Ok(info)) => Response {
                    ok: true,
                    answered: Some(info),
                    ..Response::default()
                },
                Some(Err(e)) => refuse(e),
                None => no_approvals(),
            }
        }
        Request::Deny { id } => {
            match admin
                .approvals
                .as_ref()
                .map(|q| q.answer(id, false, Scope::default()))
            {
                Some(Ok(info)) => Response {
                    ok: true,
                    answered: Some(info),
                    ..Response::default()
                },
                Some(Err(e)) => refuse(e),
                None => no_approvals(),
            }
        }
        Request::Resume => {
            let msg = match admin.breaker.resume() {
                Some(t) => {
                    audit::emit(&AuditEvent::Control {
                        action: "breaker-resumed",
                        reason: format!("`veilfs resume` after: {t}"),
                    });
                    "the breaker was reset".to_string()
                }
                None => "the breaker was not tripped".to_string(),
            };
            Response {
                ok: true,
                message: Some(msg),
                ..Response::default()
            }
        }
        Request::Revoke => refuse("revoke is answered before this".into()),
    }
}

/// Sends one request to the admin socket of the mount at `mountpoint`; an `ok: false` answer
/// is an error.
pub(crate) fn request(mountpoint: &Path, req: &Request) -> anyhow::Result<Response> {
    let socket = socket_path(mountpoint);
    let stream = UnixStream::connect(&socket).with_context(|| {
        format!(
            "no veilfs mount answers on {} (is {} mounted, by this user?)",
            socket.display(),
            mountpoint.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    // A refused peer gets its answer before the mount reads the request: ignore EPIPE here.
    let _ = (&stream).write_all(line.as_bytes());
    let mut resp = String::new();
    BufReader::new(&stream).read_line(&mut resp)?;
    let r: Response = serde_json::from_str(&resp)
        .with_context(|| format!("unexpected answer from {}: {resp:?}", socket.display()))?;
    if !r.ok {
        bail!("{}", r.error.as_deref().unwrap_or("the mount refused"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_or_root_in_the_mounts_pid_namespace_may_administer() {
        assert!(authorize(1000, 1000, Some(true)).is_ok());
        assert!(authorize(0, 1000, Some(true)).is_ok());
        assert!(authorize(0, 1000, None).is_ok());
        assert!(authorize(65534, 0, Some(true)).is_err());
        assert!(authorize(65534, 1000, Some(true)).is_err());
        // The sandboxed agent runs as the user, in its own pid namespace.
        assert!(authorize(1000, 1000, Some(false)).is_err());
        assert!(authorize(0, 0, Some(false)).is_err());
        assert!(authorize(1000, 1000, None).is_err());
    }
}
