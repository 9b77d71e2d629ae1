//! The mount's control socket: how `veilfs checkpoint MOUNTPOINT` reaches a live session.
//!
//! Why a socket and not a file the CLI appends to: the journal is hash-chained and its live
//! writer holds the chain's head (and an exclusive lock) in memory, and a checkpoint must also
//! make the guard capture every path again. Only the mount process can do both, so it listens
//! on a Unix socket and the CLI asks it.
//!
//! Where: `$XDG_RUNTIME_DIR/veilfs/` (else `/run/veilfs/` for root, else
//! `/tmp/veilfs-<uid>/`), directory 0700, socket 0600, named after the blake3 of the mount
//! point's canonical path, so the mount point alone finds it and no agent-chosen name is
//! involved. `veilfs run` exports it to its command as `VEILFS_CONTROL` (next to
//! `VEILFS_MOUNT`), and the sandbox keeps it reachable (the system is bound read-only; a
//! socket still accepts connections there). The socket is removed when the mount ends; one
//! left by a killed mount (nothing listens on it) is removed by the next mount.
//!
//! Protocol: one JSON line each way. `{"op":"checkpoint","label":"…"}` →
//! `{"ok":true,"checkpoint":3,"seq":57,"session":"…","store":"…"}`, `{"op":"status"}` →
//! `{"ok":true,"session":…,"store":…}`, `{"op":"why","path":"src"}` → `{"ok":true,"denials":[…]}`
//! (see [`crate::denials`]); errors are `{"ok":false,"error":"…"}`. Requests are
//! at most 64 KiB and must arrive within 5 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::guard::Guard;

/// Environment variable naming the mount point, for `veilfs run`'s command (and its harness).
pub(crate) const ENV_MOUNT: &str = "VEILFS_MOUNT";

/// Environment variable naming the control socket, for `veilfs run`'s command.
pub(crate) const ENV_CONTROL: &str = "VEILFS_CONTROL";

const MAX_REQUEST: u64 = 64 * 1024;

/// The directory holding control sockets for this user.
pub(crate) fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("veilfs");
    }
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        PathBuf::from("/run/veilfs")
    } else {
        std::env::temp_dir().join(format!("veilfs-{uid}"))
    }
}

/// The control socket of a mount at `mountpoint` (canonicalised when it exists).
pub(crate) fn socket_path(mountpoint: &Path) -> PathBuf {
    socket_in(&runtime_dir(), "ctl-", mountpoint)
}

/// `dir/PREFIX<hash of the canonical mount point>.sock`: one socket per mount and kind.
pub(crate) fn socket_in(dir: &Path, prefix: &str, mountpoint: &Path) -> PathBuf {
    let mp = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let h = blake3::hash(mp.as_os_str().as_bytes()).to_hex();
    dir.join(format!("{prefix}{}.sock", &h[..16]))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Checkpoint {
        #[serde(default)]
        label: Option<String>,
    },
    Status,
    /// The last denials (at most `limit`, default 20) about `path` (relative to the mount's
    /// root; absent or empty: all), as the agent may see them.
    Why {
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<crate::denials::Denial>,
}

/// A listening control socket; removed when dropped (at unmount).
pub(crate) struct Server {
    path: PathBuf,
}

impl Server {}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts answering requests for the mount at `mountpoint` (already canonical). `guard` is
/// the session's, absent in read-only mode (a checkpoint is then refused: nothing can change).
pub(crate) fn serve(
    mountpoint: &Path,
    guard: Option<Arc<Guard>>,
    mode: &str,
) -> anyhow::Result<Server> {
    let path = socket_path(mountpoint);
    let listener = bind_private(&path, "ctl-")?;
    let mode = mode.to_string();
    // Weak: the socket must not keep the session's journal writer alive past the unmount.
    let guard: Option<Weak<Guard>> = guard.as_ref().map(Arc::downgrade);
    std::thread::Builder::new()
        .name("veilfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        let g = guard.as_ref().map(|w| w.upgrade());
                        match g {
                            // The session is over (unmounting): nothing answers for it.
                            Some(None) => drop(s),
                            Some(Some(g)) => handle(s, Some(&g), &mode),
                            None => handle(s, None, &mode),
                        }
                    }
                    Err(e) => warn!("control socket: {e}"),
                }
            }
        })
        .context("spawn the control thread")?;
    Ok(Server { path })
}

/// Removes the sockets of mounts that were killed (nothing listens: ECONNREFUSED), so they
/// do not pile up in the runtime directory.
/// Listens on `path` (mode 0600, in a 0700 directory), after removing sockets named
/// `prefix*.sock` beside it that no process answers (dead mounts'). The mount point was checked
/// not to be mounted, so a socket at `path` itself is a dead mount's too.
pub(crate) fn bind_private(path: &Path, prefix: &str) -> anyhow::Result<UnixListener> {
    let dir = path.parent().context("socket path")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    remove_dead_sockets(dir, prefix);
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

fn remove_dead_sockets(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(prefix) && name.ends_with(".sock")) {
            continue;
        }
        if let Err(err) = UnixStream::connect(e.path())
            && err.kind() == std::io::ErrorKind::ConnectionRefused
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn handle(stream: UnixStream, guard: Option<&Guard>, mode: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let resp = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()))
    {
        Err(e) => Response {
            error: Some(format!("bad request: {e}")),
            ..Response::default()
        },
        Ok(req) => answer(req, guard, mode),
    };
    let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    let _ = (&stream).write_all(out.as_bytes());
}

fn answer(req: Request, guard: Option<&Guard>, mode: &str) -> Response {
    let base = Response {
        session: guard.map(|g| g.session_id().to_string()),
        store: guard.map(|g| g.store_dir().to_path_buf()),
        mode: Some(mode.to_string()),
        ..Response::default()
    };
    match req {
        Request::Status => Response { ok: true, ..base },
        Request::Why { path, limit } => {
            let path = path.unwrap_or_default();
            let mut d: Vec<_> = crate::denials::recent()
                .into_iter()
                .filter(|d| d.concerns(&path))
                .map(|d| d.for_agent())
                .collect();
            let keep = limit.unwrap_or(20).max(1);
            d.drain(..d.len().saturating_sub(keep));
            Response {
                ok: true,
                denials: d,
                ..base
            }
        }
        Request::Checkpoint { label } => {
            let Some(g) = guard else {
                return Response {
                    error: Some(
                        "a read-only mount changes nothing: there is no turn to undo".into(),
                    ),
                    ..base
                };
            };
            let label = label.filter(|l| !l.is_empty());
            match g.checkpoint(label.as_deref()) {
                Ok((n, seq)) => {
                    info!(target: "veilfs::audit", checkpoint = n, label = label.as_deref().unwrap_or(""), "checkpoint");
                    Response {
                        ok: true,
                        checkpoint: Some(n),
                        seq: Some(seq),
                        ..base
                    }
                }
                Err(e) => Response {
                    error: Some(e.to_string()),
                    ..base
                },
            }
        }
    }
}

/// Sends one request to the control socket at `socket` and returns the mount's answer
/// (an `ok: false` answer is an error).
pub(crate) fn request(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "no veilfs mount answers on {} (is it mounted, by this user?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut resp = String::new();
    BufReader::new(&stream).read_line(&mut resp)?;
    let r: Response = serde_json::from_str(&resp)
        .with_context(|| format!("unexpected answer from {}: {resp:?}", socket.display()))?;
    if !r.ok {
        bail!("{}", r.error.as_deref().unwrap_or("the mount refused"));
    }
    Ok(r)
}

/// The control socket for a mount point given on the command line, or, with none, the one
/// `veilfs run` exported (`VEILFS_CONTROL`, else the socket of `VEILFS_MOUNT`).
pub(crate) fn locate(mountpoint: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(mp) = mountpoint {
        let sock = socket_path(mp);
        // Inside `veilfs run` the exported path wins for its own mount point.
        if !sock.exists()
            && let (Some(c), Some(m)) = (std::env::var_os(ENV_CONTROL), std::env::var_os(ENV_MOUNT))
            && Path::new(&m).canonicalize().ok() == mp.canonicalize().ok()
        {
            return Ok(PathBuf::from(c));
        }
        return Ok(sock);
    }
    if let Some(c) = std::env::var_os(ENV_CONTROL) {
        return Ok(PathBuf::from(c));
    }
    if let Some(m) = std::env::var_os(ENV_MOUNT) {
        return Ok(socket_path(Path::new(&m)));
    }
    bail!("which mount? give MOUNTPOINT (or run inside `veilfs run`, which sets VEILFS_MOUNT)")
}
