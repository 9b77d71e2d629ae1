//! The audit trail: one structured event per decision, for people and for SIEMs.
//!
//! Why one module: every allow, deny, change, divert, mount and journal failure goes through
//! [`emit`] as a typed [`AuditEvent`], so the field names cannot drift between call sites and
//! no decision can reach the log without reaching the audit file too. [`emit`] does two things:
//! - logs through `tracing` (target `veilfs::audit`) with the same fields every time
//!   (`event`, `op`, `path`, `to`, `reason`, `masked`, `redactions`, `rules`, `pid`, `uid`);
//! - when a [`Sink`] is installed (a mount), appends one OCSF "File System Activity" object
//!   (class_uid 1001) as one JSON line to `<store>/audit/<session>.jsonl`, and optionally to
//!   `--audit-log PATH|-`.
//!
//! Who did it: FUSE tells each request's pid/uid/gid. The filesystem's entry points set the
//! request's [`Actor`] for their thread ([`Actor::enter`]) and [`emit`] picks it up, so the
//! layers in between (write path, guard) need no extra argument. The process name and
//! executable are read from `/proc/PID/{comm,exe}` with bounded reads; a process that is
//! already gone is "unknown". FUSE's "pid" is the calling thread's id: it is kept as
//! `actor.process.tid` and `pid` is its thread group (`Tgid:` in `/proc/TID/status`).
//! Events outside a request (mount, unmount) are veilfs's own.
//!
//! Why a chain and signatures: the audit file is evidence, so it must not be quietly editable.
//! Like the journal (see `journal.rs`), each line carries `prev`, the blake3 hex of the previous
//! line's exact bytes ([`GENESIS`] for the first), and `metadata.sequence`, its 0-based index:
//! an edited, removed or reordered line breaks the chain at that line. A chain alone can be
//! rebuilt by whoever can write the file, so with a key (`--audit-key`, 32-byte Ed25519 seed,
//! raw or hex) a signature line is appended every [`SIGN_EVERY`] events and at close; it signs
//! the chain head (the hash of the line before it) with the session id and its sequence number.
//! `veilfs verify --audit-pubkey` checks both and names the first bad line.
//!
//! Secrets never enter the trail: events carry rule ids and counts, never matched bytes.
//!
//! Cost: lines go through a mutex-protected `BufWriter` (the chain needs one order anyway).
//! Allowed opens and reads are flushed at most once a second, at every signature and at close;
//! denials and changes are flushed at once, so a live SIEM tail sees them promptly.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};

mod file_line;
use tracing::{info, warn};

/// `prev` of the first line of an audit file.
pub(crate) const GENESIS: &str = crate::journal::GENESIS;
/// Events between two signature lines.
pub(crate) const SIGN_EVERY: u64 = 256;
/// The OCSF schema version the events follow.
pub(crate) const OCSF_VERSION: &str = "1.3.0";
/// What a signature signs: `DOMAIN session seq head`.
const SIG_DOMAIN: &str = "veilfs-audit-v1";

// ---------------------------------------------------------------------------------------------
// Who

/// The process a request came from (FUSE's `Request::pid()/uid()/gid()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Actor {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

thread_local! {
    static CURRENT: Cell<Option<Actor>> = const { Cell::new(None) };
}

impl Actor {
    pub(crate) fn of(req: &fuser::Request) -> Actor {
        Actor {
            pid: req.pid(),
            uid: req.uid(),
            gid: req.gid(),
        }
    }

    /// veilfs itself (mount, unmount, commands).
    pub(crate) fn this_process() -> Actor {
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        Actor {
            pid: std::process::id(),
            uid,
            gid,
        }
    }

    /// Makes this the actor of the events the current thread emits until the guard drops.
    pub(crate) fn enter(self) -> ActorScope {
        ActorScope(CURRENT.with(|c| c.replace(Some(self))))
    }

    /// The actor of the current thread's request, or veilfs itself outside one.
    pub(crate) fn current() -> Actor {
        CURRENT
            .with(|c| c.get())
            .unwrap_or_else(Actor::this_process)
    }
}

/// Restores the previous actor when dropped (see [`Actor::enter`]).
pub(crate) struct ActorScope(Option<Actor>);

impl Drop for ActorScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// The process (thread group) of FUSE's pid, which is the calling *thread*'s id.
fn tgid_of(tid: u32) -> Option<u32> {
    let f = File::open(format!("/proc/{tid}/status")).ok()?;
    let mut buf = Vec::with_capacity(1024);
    // `Tgid:` is the fourth line; 4 KiB always reaches it.
    f.take(4096).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Name and executable of a process, read with size bounds; "unknown" once it is gone.
fn process_info(pid: u32) -> (String, String) {
    if pid == 0 {
        return ("unknown".into(), "unknown".into());
    }
    let mut name = String::from("unknown");
    if let Ok(f) = File::open(format!("/proc/{pid}/comm")) {
        let mut buf = Vec::with_capacity(32);
        // comm is at most 16 bytes; never read more than 64.
        if f.take(64).read_to_end(&mut buf).is_ok() && !buf.is_empty() {
            name = String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(&buf)).into_owned();
        }
    }
    // readlink: the kernel caps the answer at PATH_MAX.
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    (name, exe)
}

// ---------------------------------------------------------------------------------------------
// What

/// One decision. Paths are relative to the scope root (what the agent sees below the mount).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuditEvent {
    /// A file handle was handed out. `rules` are the ids of the rules whose matches the view
    /// masks (never the secrets), `redactions` how many spans are masked.
    Open {
        path: PathBuf,
        writable: bool,
        masked: bool,
        rules: Vec<String>,
        redactions: usize,
    },
    /// No-open mode has no OPEN: the first read of each version of a file instead. Also the
    /// first read through an open descriptor of a file moved outside the mount meanwhile
    /// (`moved_outside`; `path` is the one whose view was served: see `fs::moved`).
    Read {
        path: PathBuf,
        masked: bool,
        rules: Vec<String>,
        redactions: usize,
        moved_outside: bool,
    },
    /// A synthesized view was served instead of the file's bytes (`view`: what it is, e.g.
    /// `document`, an office document rebuilt with `redactions` spans masked by `rules`).
    Synthesized {
        path: PathBuf,
        view: String,
        rules: Vec<String>,
        redactions: usize,
    },
    /// A request refused, with the reason the agent-facing errno stands for.
    Denied {
        op: String,
        path: PathBuf,
        to: Option<PathBuf>,
        reason: String,
    },
    /// A write-class operation went through (create, mkdir, unlink, masked-edit merge, …).
    Changed {
        op: String,
        path: PathBuf,
    },
    Renamed {
        from: PathBuf,
        to: PathBuf,
        exchange: bool,
    },
    /// The path's changes went to the overlay instead of the real folder.
    Diverted {
        path: PathBuf,
        reason: String,
    },
    Mounted {
        scope: PathBuf,
        mountpoint: PathBuf,
        mode: String,
        profile: String,
    },
    Unmounted {
        mountpoint: PathBuf,
    },
    /// `veilfs rollback` undid session `of` (as session `session`).
    Rollback {
        of: String,
        session: String,
        changes: usize,
    },
    /// `veilfs commit` applied overlay session `of` to the real folder.
    Commit {
        of: String,
        changes: usize,
    },
    /// The journal failed: the mount refuses every further change.
    Stopped {
        reason: String,
        errno: i32,
    },
    /// A decision about the whole mount: `breaker-tripped`, `breaker-resumed`, `revoked`
    /// (or expired), `policy-reloaded`, `policy-rejected` (a live profile change),
    /// `admin-refused` (a peer the admin socket turned away).
    Control {
        action: &'static str,
        reason: String,
    },
    /// A decoy (`[decoys]`, see [`crate::decoy`]): `action` is `placed` (at mount, one per
    /// decoy, naming its canary so a leaked value can be traced to this session) or `opened`
    /// (critical: something opened or read a file no honest task needs; the actor names the
    /// process). `tripped`: the open tripped the damage breaker.
    Decoy {
        action: &'static str,
        path: PathBuf,
        canary: String,
        tripped: bool,
    },
    /// Human approval ([`crate::approval`]): `action` is `requested`, `approved`, `denied`,
    /// `timed-out` or `cancelled`; `id` 0 is a request answered at once (a standing grant, or
    /// too many held). The actor of an answer is the process that gave it.
    Approval {
        id: u64,
        action: &'static str,
        op: &'static str,
        path: PathBuf,
        to: Option<PathBuf>,
        reason: String,
    },
    /// A connection through the egress proxy of `veilfs run --sandbox` (see `egress`): to
    /// `host:port`, allowed or refused, and why. A request too malformed to name a destination
    /// has an empty host and port 0.
    Egress {
        host: String,
        port: u16,
        allowed: bool,
        reason: String,
    },
}

fn rel_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// OCSF activity of a write-class operation name.
fn activity_of_op(op: &str) -> u8 {
    let op = op.to_ascii_lowercase();
    if op.contains("rename") {
        5
    } else if op.contains("unlink") || op.contains("rmdir") || op.contains("delete") {
        4
    } else if op.contains("create")
        || op.contains("mkdir")
        || op.contains("mknod")
        || op.contains("symlink")
        || op.contains("link")
    {
        1
    } else if op.contains("chmod") || op.contains("chown") || op.contains("acl") {
        7
    } else if op.contains("setattr") || op.contains("xattr") || op.contains("utime") {
        6
    } else if op == "read" || op.starts_with("read ") {
        2
    } else if op.contains("open") && !op.contains("write") {
        14
    } else {
        3
    }
}

pub(crate) fn activity_name(id: u8) -> &'static str {
    match id {
        1 => "Create",
        2 => "Read",
        3 => "Update",
        4 => "Delete",
        5 => "Rename",
        6 => "Set Attributes",
        7 => "Set Security",
        8 => "Get Attributes",
        9 => "Get Security",
        12 => "Mount",
        13 => "Unmount",
        14 => "Open",
        _ => "Other",
    }
}

fn disposition_name(id: u8) -> &'static str {
    match id {
        1 => "Allowed",
        2 => "Blocked",
        3 => "Quarantined",
        8 => "Approved",
        14 => "Delayed",
        _ => "Other",
    }
}

fn severity_name(id: u8) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        _ => "Unknown",
    }
}

/// The OCSF classification of an event.
struct Class {
    activity: u8,
    /// Overrides [`activity_name`] (for "Other").
    name: Option<&'static str>,
    disposition: u8,
    severity: u8,
    /// OCSF file type_id: 1 regular file, 2 folder.
    file_type: u8,
}

impl AuditEvent {
    /// Short kind, for logs and the `veilfs audit` table.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Open { .. } => "open",
            AuditEvent::Read { .. } => "read",
            AuditEvent::Synthesized { .. } => "synthesized",
            AuditEvent::Denied { .. } => "denied",
            AuditEvent::Changed { .. } => "changed",
            AuditEvent::Renamed { .. } => "renamed",
            AuditEvent::Diverted { .. } => "diverted",
            AuditEvent::Mounted { .. } => "mounted",
            AuditEvent::Unmounted { .. } => "unmounted",
            AuditEvent::Rollback { .. } => "rollback",
            AuditEvent::Commit { .. } => "commit",
            AuditEvent::Stopped { .. } => "stopped",
            AuditEvent::Control { action, .. } => action,
            AuditEvent::Decoy { action, .. } => match *action {
                "placed" => "decoy-placed",
                _ => "decoy-opened",
            },
            AuditEvent::Approval { action, .. } => match *action {
                "requested" => "approval-requested",
                "approved" => "approval-approved",
                "denied" => "approval-denied",
                "timed-out" => "approval-timed-out",
                _ => "approval-cancelled",
            },
            AuditEvent::Egress { allowed: true, .. } => "egress-allowed",
            AuditEvent::Egress { allowed: false, .. } => "egress-refused",
        }
    }

    fn class(&self) -> Class {
        let c = |activity, disposition, severity, file_type| Class {
            activity,
            name: None,
            disposition,
            severity,
            file_type,
        };
        match self {
            AuditEvent::Open { .. } => c(14, 1, 1, 1),
            AuditEvent::Read { .. } | AuditEvent::Synthesized { .. } => c(2, 1, 1, 1),
            AuditEvent::Denied { op, .. } => c(activity_of_op(op), 2, 2, 1),
            AuditEvent::Changed { op, .. } => {
                let dir = op.contains("mkdir") || op.contains("rmdir");
                c(activity_of_op(op), 1, 1, if dir { 2 } else { 1 })
            }
            AuditEvent::Renamed { .. } => c(5, 1, 1, 1),
            AuditEvent::Diverted { .. } => c(3, 3, 3, 1),
            AuditEvent::Mounted { .. } => c(12, 1, 1, 2),
            AuditEvent::Unmounted { .. } => c(13, 1, 1, 2),
            AuditEvent::Rollback { .. } => Class {
                name: Some("Rollback"),
                ..c(99, 1, 1, 2)
            },
            AuditEvent::Commit { .. } => Class {
                name: Some("Commit"),
                ..c(99, 1, 1, 2)
            },
            AuditEvent::Stopped { .. } => Class {
                name: Some("Journal Failure"),
                ..c(99, 2, 4, 2)
            },
            // A trip or a revoke is critical (severity 5) and blocks; a resume is informational.
            AuditEvent::Control { action, .. } => match *action {
                "breaker-resumed" => Class {
                    name: Some("Breaker Resumed"),
                    ..c(99, 1, 1, 2)
                },
                "breaker-tripped" => Class {
                    name: Some("Breaker Tripped"),
                    ..c(99, 2, 5, 2)
                },
                "policy-reloaded" => Class {
                    name: Some("Policy Reloaded"),
                    ..c(99, 1, 1, 2)
                },
                "policy-rejected" => Class {
                    name: Some("Policy Rejected"),
                    ..c(99, 2, 3, 2)
                },
                // Someone who may not administer the mount tried (another user, a sandbox).
                "admin-refused" => Class {
                    name: Some("Admin Refused"),
                    ..c(99, 2, 4, 2)
                },
                _ => Class {
                    name: Some("Mount Revoked"),
                    ..c(99, 2, 5, 2)
                },
            },
            // A decoy opened is critical (severity 5), and blocked when it tripped the mount.
            AuditEvent::Decoy {
                action, tripped, ..
            } => match *action {
                "placed" => Class {
                    name: Some("Decoy Placed"),
                    ..c(99, 1, 1, 1)
                },
                _ => c(14, if *tripped { 2 } else { 1 }, 5, 1),
            },
            // The file activity in question; the disposition says where the question stands:
            // 14 Delayed while a person is asked, 8 Approved, 2 Blocked.
            AuditEvent::Approval { action, op, .. } => {
                let a = activity_of_op(op);
                match *action {
                    "requested" => c(a, 14, 3, 1),
                    "approved" => c(a, 8, 1, 1),
                    _ => c(a, 2, 2, 1),
                }
            }
            // Written as OCSF Network Activity (4001) "Open" by `Sink::ocsf`.
            AuditEvent::Egress { allowed, .. } => Class {
                name: Some("Open"),
                ..if *allowed {
                    c(1, 1, 1, 0)
                } else {
                    c(1, 2, 2, 0)
                }
            },
        }
    }

    /// The main path (relative to the scope; "" for the root) and, for renames, the new one.
    fn paths(&self) -> (String, Option<String>) {
        match self {
            AuditEvent::Open { path, .. }
            | AuditEvent::Read { path, .. }
            | AuditEvent::Synthesized { path, .. }
            | AuditEvent::Changed { path, .. }
            | AuditEvent::Diverted { path, .. }
            | AuditEvent::Decoy { path, .. } => (rel_str(path), None),
            AuditEvent::Denied { path, to, .. } => (rel_str(path), to.as_deref().map(rel_str)),
            AuditEvent::Renamed { from, to, .. } => (rel_str(from), Some(rel_str(to))),
            AuditEvent::Approval { path, to, .. } => (rel_str(path), to.as_deref().map(rel_str)),
            // `host:port`, an IPv6 address in brackets.
            AuditEvent::Egress { host, port, .. } if host.contains(':') => {
                (format!("[{host}]:{port}"), None)
            }
            AuditEvent::Egress { host, port, .. } => (format!("{host}:{port}"), None),
            _ => (String::new(), None),
        }
    }

    /// Human-readable summary (OCSF `message`).
    fn message(&self) -> String {
        match self {
            AuditEvent::Open {
                writable,
                masked,
                redactions,
                ..
            } => format!(
                "open for {}{}",
                if *writable { "write" } else { "read" },
                if *masked {
                    format!(", {redactions} span(s) masked")
                } else {
                    String::new()
                }
            ),
            AuditEvent::Read {
                masked,
                redactions,
                moved_outside,
                ..
            } => {
                let what = if *moved_outside {
                    "read of a file moved outside the mount while open"
                } else {
                    "read"
                };
                if *masked {
                    format!("{what}, {redactions} span(s) masked")
                } else {
                    what.into()
                }
            }
            AuditEvent::Synthesized {
                view, redactions, ..
            } => format!("served a synthesized {view} view, {redactions} span(s) masked"),
            AuditEvent::Denied { op, reason, .. } => format!("{op} denied: {reason}"),
            AuditEvent::Changed { op, .. } => op.clone(),
            AuditEvent::Renamed { exchange, .. } => {
                if *exchange {
                    "exchanged".into()
                } else {
                    "renamed".into()
                }
            }
            AuditEvent::Diverted { reason, .. } => format!("diverted to the overlay: {reason}"),
            AuditEvent::Mounted { mode, profile, .. } => {
                format!("mounted ({mode} mode, profile {profile})")
            }
            AuditEvent::Unmounted { .. } => "unmounted".into(),
            AuditEvent::Rollback {
                of,
                session,
                changes,
            } => format!("session {of} rolled back by {session} ({changes} change(s))"),
            AuditEvent::Commit { of, changes } => {
                format!("overlay session {of} committed ({changes} change(s))")
            }
            AuditEvent::Stopped { reason, .. } => {
                format!("journal write failed, every further change is refused: {reason}")
            }
            AuditEvent::Control { action, reason } => format!("{action}: {reason}"),
            AuditEvent::Decoy {
                action: "placed",
                canary,
                ..
            } => format!("decoy placed (canary {canary})"),
            AuditEvent::Decoy {
                canary, tripped, ..
            } => format!(
                "DECOY OPENED: a file no task needs was opened (canary {canary}){}",
                if *tripped {
                    "; the damage breaker tripped"
                } else {
                    ""
                }
            ),
            AuditEvent::Approval {
                id,
                action,
                op,
                reason,
                ..
            } => format!("{op} {action} (approval {id}): {reason}"),
            AuditEvent::Egress {
                allowed, reason, ..
            } => {
                let (p, _) = self.paths();
                if *allowed {
                    format!("connect to {p} allowed: {reason}")
                } else {
                    format!("connect to {p} refused: {reason}")
                }
            }
        }
    }

    /// veilfs's own fields (OCSF `unmapped`).
    fn details(&self) -> Value {
        let (path, to) = self.paths();
        let mut d = json!({ "event": self.kind(), "path": path });
        let m = d.as_object_mut().expect("object");
        if let Some(to) = to {
            m.insert("to".into(), json!(to));
        }
        match self {
            AuditEvent::Open {
                writable,
                masked,
                rules,
                redactions,
                ..
            } => {
                m.insert("writable".into(), json!(writable));
                m.insert("masked".into(), json!(masked));
                m.insert("rules".into(), json!(rules));
                m.insert("redactions".into(), json!(redactions));
            }
            AuditEvent::Read {
                masked,
                rules,
                redactions,
                moved_outside,
                ..
            } => {
                m.insert("masked".into(), json!(masked));
                m.insert("rules".into(), json!(rules));
                m.insert("redactions".into(), json!(redactions));
                if *moved_outside {
                    m.insert("moved_outside".into(), json!(true));
                }
            }
            AuditEvent::Synthesized {
                view,
                rules,
                redactions,
                ..
            } => {
                m.insert("view".into(), json!(view));
                m.insert("masked".into(), json!(true));
                m.insert("rules".into(), json!(rules));
                m.insert("redactions".into(), json!(redactions));
            }
            AuditEvent::Denied { op, reason, .. } => {
                m.insert("op".into(), json!(op));
                m.insert("reason".into(), json!(reason));
            }
            AuditEvent::Changed { op, .. } => {
                m.insert("op".into(), json!(op));
            }
            AuditEvent::Renamed { exchange, .. } => {
                m.insert("exchange".into(), json!(exchange));
            }
            AuditEvent::Diverted { reason, .. } => {
                m.insert("reason".into(), json!(reason));
            }
            AuditEvent::Mounted {
                scope,
                mountpoint,
                mode,
                profile,
            } => {
                m.insert("scope".into(), json!(scope.to_string_lossy()));
                m.insert("mountpoint".into(), json!(mountpoint.to_string_lossy()));
                m.insert("mode".into(), json!(mode));
                m.insert("profile".into(), json!(profile));
            }
            AuditEvent::Unmounted { mountpoint } => {
                m.insert("mountpoint".into(), json!(mountpoint.to_string_lossy()));
            }
            AuditEvent::Rollback {
                of,
                session,
                changes,
            } => {
                m.insert("of".into(), json!(of));
                m.insert("session".into(), json!(session));
                m.insert("changes".into(), json!(changes));
            }
            AuditEvent::Commit { of, changes } => {
                m.insert("of".into(), json!(of));
                m.insert("changes".into(), json!(changes));
            }
            AuditEvent::Stopped { reason, errno } => {
                m.insert("reason".into(), json!(reason));
                m.insert("errno".into(), json!(errno));
            }
            AuditEvent::Control { reason, .. } => {
                m.insert("reason".into(), json!(reason));
            }
            AuditEvent::Decoy {
                canary, tripped, ..
            } => {
                m.insert("canary".into(), json!(canary));
                m.insert("tripped".into(), json!(tripped));
            }
            AuditEvent::Approval {
                id,
                action,
                op,
                reason,
                ..
            } => {
                m.insert("op".into(), json!(op));
                m.insert("approval".into(), json!(id));
                m.insert("decision".into(), json!(action));
                m.insert("reason".into(), json!(reason));
            }
            AuditEvent::Egress {
                host,
                port,
                allowed,
                reason,
            } => {
                m.insert("op".into(), json!("connect"));
                m.insert("host".into(), json!(host));
                m.insert("port".into(), json!(port));
                m.insert("allowed".into(), json!(allowed));
                m.insert("reason".into(), json!(reason));
            }
        }
        d
    }

    fn log(&self, actor: &Actor) {
        let class = self.class();
        // A critical event is a warning even when it was let through (a decoy opened).
        let allowed = class.disposition == 1 && class.severity < 4;
        // Allowed events are INFO, which the default filter drops: build no strings for them.
        if allowed && !tracing::enabled!(target: "veilfs::audit", tracing::Level::INFO) {
            return;
        }
        let (path, to) = self.paths();
        let to = to.unwrap_or_default();
        let (op, reason, masked, redactions, rules) = match self {
            AuditEvent::Open {
                masked,
                rules,
                redactions,
                writable,
                ..
            } => (
                if *writable { "open-write" } else { "open" }.to_string(),
                String::new(),
                *masked,
                *redactions,
                rules.join(","),
            ),
            AuditEvent::Read {
                masked,
                rules,
                redactions,
                ..
            } => (
                "read".into(),
                String::new(),
                *masked,
                *redactions,
                rules.join(","),
            ),
            AuditEvent::Synthesized {
                rules, redactions, ..
            } => (
                "read".into(),
                String::new(),
                true,
                *redactions,
                rules.join(","),
            ),
            AuditEvent::Denied { op, reason, .. } => {
                (op.clone(), reason.clone(), false, 0, String::new())
            }
            AuditEvent::Changed { op, .. } => (op.clone(), String::new(), false, 0, String::new()),
            AuditEvent::Diverted { reason, .. } => {
                ("divert".into(), reason.clone(), false, 0, String::new())
            }
            AuditEvent::Stopped { reason, .. } => {
                ("journal".into(), reason.clone(), false, 0, String::new())
            }
            AuditEvent::Control { action, reason } => {
                (action.to_string(), reason.clone(), false, 0, String::new())
            }
            AuditEvent::Approval { op, reason, .. } => {
                (op.to_string(), reason.clone(), false, 0, String::new())
            }
            AuditEvent::Egress { reason, .. } => {
                ("connect".into(), reason.clone(), false, 0, String::new())
            }
            _ => (self.kind().into(), String::new(), false, 0, String::new()),
        };
        let event = self.kind();
        let (pid, uid) = (actor.pid, actor.uid);
        let msg = self.message();
        if allowed {
            info!(target: "veilfs::audit", event, op, path, to, reason, masked, redactions, rules, pid, uid, "{msg}");
        } else {
            warn!(target: "veilfs::audit", event, op, path, to, reason, masked, redactions, rules, pid, uid, "{msg}");
        }
    }
}

/// The distinct rule ids of a masked view and how many spans it masks.
pub(crate) fn rules_fired(r: &crate::redact::Redactions) -> (Vec<String>, usize) {
    let mut ids: Vec<String> = r.spans().iter().map(|s| s.rule_id.to_string()).collect();
    ids.sort();
    ids.dedup();
    (ids, r.spans().len())
}

// ---------------------------------------------------------------------------------------------
// Where

/// Where the events of a mount go.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditConfig {
    /// The store: events go to `<store>/audit/<session>.jsonl`.
    pub store_dir: Option<PathBuf>,
    /// The journal session id (writable mounts) or a read-only mount's own id.
    pub session: String,
    /// Where the agent sees the scope (for absolute `file.path`s).
    pub mountpoint: PathBuf,
    /// A copy of every line: a file, or `-` for stdout.
    pub log: Option<PathBuf>,
    /// Ed25519 seed (32 bytes raw or 64 hex digits) that signs the chain.
    pub key: Option<PathBuf>,
}

/// The audit directory of a store.
pub(crate) fn audit_dir(store: &Path) -> PathBuf {
    store.join("audit")
}

/// Loads an Ed25519 signing key: a file of 32 raw bytes, or of 64 hex digits.
pub(crate) fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let data = fs::read(path).with_context(|| format!("audit key {}", path.display()))?;
    let seed = parse_key_bytes(&data).with_context(|| {
        format!(
            "audit key {}: want 32 raw bytes or 64 hex digits",
            path.display()
        )
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A public key: 64 hex digits, or a file holding 32 raw bytes or 64 hex digits.
pub(crate) fn load_verifying_key(arg: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = match parse_key_bytes(arg.as_bytes()) {
        Some(b) => b,
        None => {
            let data = fs::read(arg).with_context(|| format!("audit public key {arg}"))?;
            parse_key_bytes(&data).with_context(|| {
                format!("audit public key {arg}: want 32 raw bytes or 64 hex digits")
            })?
        }
    };
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("audit public key {arg}: {e}"))
}

fn parse_key_bytes(data: &[u8]) -> Option<[u8; 32]> {
    let trimmed = data.trim_ascii();
    if trimmed.len() == 64
        && let Some(v) = unhex(trimmed)
    {
        return v.try_into().ok();
    }
    if data.len() == 32 {
        return data.try_into().ok();
    }
    None
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    s.chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}

fn tohex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sig_message(session: &str, seq: u64, head: &str) -> String {
    format!("{SIG_DOMAIN} {session} {seq} {head}")
}

/// Appends a mount's events (see the module docs). Thread-safe.
pub(crate) struct Sink {
    session: String,
    mountpoint: PathBuf,
    host: String,
    key: Option<SigningKey>,
    /// The audit file in the store; only tests ask for it.
    #[cfg_attr(not(test), allow(dead_code))]
    path: Option<PathBuf>,
    procs: Mutex<ProcCache>,
    st: Mutex<SinkState>,
}

type ProcCache = std::collections::HashMap<u32, (Instant, Arc<ProcInfo>)>;

/// What the trail says about the process behind a request.
pub(crate) struct ProcInfo {
    /// Thread group of FUSE's thread id.
    pid: u32,
    name: String,
    exe: String,
    /// The executable's file name ("unknown" when there is none).
    exe_name: String,
}

/// How long [`Sink::process`] trusts what it read about a thread.
const PROC_TTL: Duration = Duration::from_millis(200);

struct SinkState {
    file: Option<BufWriter<File>>,
    copy: Option<Box<dyn Write + Send>>,
    prev: String,
    seq: u64,
    unsigned: u64,
    last_flush: Instant,
    failed: bool,
    /// The line being written, reused (one allocation for the whole session).
    line: Vec<u8>,
}

impl Sink {
    pub(crate) fn open(cfg: &AuditConfig) -> anyhow::Result<Sink> {
        let key = cfg.key.as_deref().map(load_signing_key).transpose()?;
        let (path, file) = match &cfg.store_dir {
            Some(store) => {
                let dir = audit_dir(store);
                fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
                let path = dir.join(format!("{}.jsonl", cfg.session));
                let f = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("create {}", path.display()))?;
                (Some(path), Some(BufWriter::with_capacity(64 * 1024, f)))
            }
            None => (None, None),
        };
        let copy: Option<Box<dyn Write + Send>> = match &cfg.log {
            Some(p) if p.as_os_str() == "-" => Some(Box::new(io::stdout())),
            Some(p) => Some(Box::new(BufWriter::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(p)
                    .with_context(|| format!("audit log {}", p.display()))?,
            ))),
            None => None,
        };
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Sink {
            session: cfg.session.clone(),
            mountpoint: cfg.mountpoint.clone(),
            host,
            key,
            path,
            procs: Mutex::new(ProcCache::new()),
            st: Mutex::new(SinkState {
                file,
                copy,
                prev: GENESIS.to_string(),
                seq: 0,
                unsigned: 0,
                last_flush: Instant::now(),
                failed: false,
                line: Vec::with_capacity(2048),
            }),
        })
    }

    /// Process id, name and executable of FUSE's `tid`. Remembered for [`PROC_TTL`]: a
    /// `grep -r` opens thousands of files from one thread, and three `/proc` reads per open
    /// cost more than the rest of the event. A pid cannot be reused that fast (pid_max is
    /// millions), but an `exec` in that window is shown under the name from before it.
    fn process(&self, tid: u32) -> Arc<ProcInfo> {
        let now = Instant::now();
        {
            let c = self.procs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, info)) = c.get(&tid)
                && now.duration_since(*t) < PROC_TTL
            {
                return info.clone();
            }
        }
        let pid = tgid_of(tid).unwrap_or(tid);
        let (name, exe) = process_info(pid);
        let exe_name = Path::new(&exe)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into());
        let info = Arc::new(ProcInfo {
            pid,
            name,
            exe,
            exe_name,
        });
        let mut c = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= 1024 {
            c.retain(|_, (t, _)| now.duration_since(*t) < PROC_TTL);
        }
        c.insert(tid, (now, info.clone()));
        info
    }

    /// The audit file in the store, if any.
    #[cfg(test)]
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The OCSF object of `e` without the chain fields, as process `p` did it at `time` (ms).
    fn ocsf(&self, e: &AuditEvent, actor: &Actor, p: &ProcInfo, time: i64) -> Value {
        let class = e.class();
        let (pid, name, exe) = (p.pid, &p.name, &p.exe);
        let (rel, to) = e.paths();
        let file_obj = |rel: &str, type_id: u8| {
            let abs = if rel.is_empty() {
                self.mountpoint.clone()
            } else {
                self.mountpoint.join(rel)
            };
            json!({
                "path": abs.to_string_lossy(),
                "name": abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                "parent_folder": abs.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
                "type_id": type_id,
                "type": if type_id == 2 { "Folder" } else { "Regular File" },
            })
        };
        let activity_name = class.name.unwrap_or(activity_name(class.activity));
        let blocked = class.disposition == 2;
        let exe_name = &p.exe_name;
        let mut v = json!({
            "class_uid": 1001,
            "class_name": "File System Activity",
            "category_uid": 1,
            "category_name": "System Activity",
            "activity_id": class.activity,
            "activity_name": activity_name,
            "type_uid": 1001 * 100 + class.activity as u32,
            "type_name": format!("File System Activity: {activity_name}"),
            "time": time,
            "severity_id": class.severity,
            "severity": severity_name(class.severity),
            "status_id": if blocked { 2 } else { 1 },
            "status": if blocked { "Failure" } else { "Success" },
            "disposition_id": class.disposition,
            "disposition": disposition_name(class.disposition),
            "message": e.message(),
            "metadata": {
                "version": OCSF_VERSION,
                "product": {
                    "name": "veilfs",
                    "vendor_name": "veilfs",
                    "version": env!("CARGO_PKG_VERSION"),
                },
                "log_name": "audit",
                "correlation_uid": self.session,
            },
            "actor": {
                "process": {
                    "pid": pid,
                    "tid": actor.pid,
                    "name": name,
                    "file": { "path": exe, "name": exe_name, "type_id": 1, "type": "Regular File" },
                    "user": { "uid": actor.uid.to_string() },
                },
                "user": { "uid": actor.uid.to_string() },
            },
            "device": { "type_id": 0, "type": "Unknown", "hostname": self.host },
            "file": file_obj(&rel, class.file_type),
            "unmapped": { "veilfs": e.details() },
        });
        if let AuditEvent::Denied { reason, .. } = e
            && let Some(m) = v.as_object_mut()
        {
            m.insert("status_detail".into(), json!(reason));
        }
        if let Some(to) = to
            && let Some(m) = v.as_object_mut()
        {
            m.insert("file_result".into(), file_obj(&to, class.file_type));
        }
        // A connection is not file activity: OCSF's Network Activity class, with the
        // destination the agent named (resolved by the proxy, so no address here).
        if let AuditEvent::Egress {
            host,
            port,
            reason,
            allowed,
        } = e
            && let Some(m) = v.as_object_mut()
        {
            m.remove("file");
            m.insert("class_uid".into(), json!(4001));
            m.insert("class_name".into(), json!("Network Activity"));
            m.insert("category_uid".into(), json!(4));
            m.insert("category_name".into(), json!("Network Activity"));
            m.insert("type_uid".into(), json!(4001 * 100 + 1));
            m.insert("type_name".into(), json!("Network Activity: Open"));
            m.insert(
                "dst_endpoint".into(),
                json!({ "hostname": host, "port": port }),
            );
            m.insert(
                "connection_info".into(),
                json!({ "protocol_name": "tcp", "direction_id": 2, "direction": "Outbound" }),
            );
            if !allowed {
                m.insert("status_detail".into(), json!(reason));
            }
        }
        v
    }

    fn write(&self, e: &AuditEvent, actor: &Actor) {
        let p = self.process(actor.pid);
        let time = crate::time::now_ns().div_euclid(1_000_000) as i64;
        // The events of reads take the allocation-free path (see `file_line`); the rest are
        // built as a `Value` outside the lock.
        let general = (!file_line::covers(e)).then(|| self.ocsf(e, actor, &p, time));
        let urgent = !matches!(
            e,
            AuditEvent::Open { .. }
                | AuditEvent::Read { .. }
                | AuditEvent::Synthesized { .. }
                | AuditEvent::Changed { .. }
        );
        let mut st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        let mut line = std::mem::take(&mut st.line);
        match general {
            Some(mut v) => {
                chain_fields(&mut v, &st.prev, st.seq);
                line.clear();
                // Writing a `Value` into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut line, &v);
            }
            None => {
                let session = file_line::Session {
                    id: &self.session,
                    host: &self.host,
                    mountpoint: &self.mountpoint,
                };
                let at = file_line::Place {
                    prev: &st.prev,
                    seq: st.seq,
                    time,
                };
                file_line::write(&mut line, &session, e, actor, &p, &at);
            }
        }
        self.append(&mut st, &line);
        st.line = line;
        st.unsigned += 1;
        if st.unsigned >= SIGN_EVERY && self.key.is_some() {
            self.sign(&mut st);
            self.flush(&mut st);
        } else if urgent || st.last_flush.elapsed() > Duration::from_secs(1) {
            self.flush(&mut st);
        }
    }

    fn append(&self, st: &mut SinkState, line: &[u8]) {
        let mut res = Ok(());
        if let Some(f) = st.file.as_mut()
            && !st.failed
        {
            res = f.write_all(line).and_then(|_| f.write_all(b"\n"));
        }
        if let Some(c) = st.copy.as_mut() {
            let _ = c.write_all(line).and_then(|_| c.write_all(b"\n"));
        }
        if let Err(e) = res {
            st.failed = true;
            tracing::error!(target: "veilfs::audit", "audit file write failed, further events are only logged: {e}");
        }
        st.prev.clear();
        st.prev.push_str(blake3::hash(line).to_hex().as_str());
        st.seq += 1;
    }

    fn sign(&self, st: &mut SinkState) {
        let Some(key) = &self.key else { return };
        if st.unsigned == 0 {
            return;
        }
        let seq = st.seq;
        let head = st.prev.clone();
        let sig = key.sign(sig_message(&self.session, seq, &head).as_bytes());
        let line = json!({
            "prev": head,
            "veilfs_signature": {
                "alg": "ed25519",
                "sequence": seq,
                "session": self.session,
                "events": st.unsigned,
                "public_key": tohex(key.verifying_key().as_bytes()),
                "sig": tohex(&sig.to_bytes()),
            },
        })
        .to_string();
        self.append(st, line.as_bytes());
        st.unsigned = 0;
    }

    fn flush(&self, st: &mut SinkState) {
        if let Some(f) = st.file.as_mut()
            && !st.failed
            && let Err(e) = f.flush()
        {
            st.failed = true;
            tracing::error!(target: "veilfs::audit", "audit file write failed: {e}");
        }
        if let Some(c) = st.copy.as_mut() {
            let _ = c.flush();
        }
        st.last_flush = Instant::now();
    }

    /// Signs what is unsigned and makes everything durable.
    pub(crate) fn close(&self) {
        let mut st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        self.sign(&mut st);
        self.flush(&mut st);
        if let Some(f) = st.file.as_mut() {
            let _ = f.get_ref().sync_data();
        }
    }
}

/// Adds the chain fields (`prev`, `metadata.sequence`) to an event's OCSF object.
fn chain_fields(v: &mut Value, prev: &str, seq: u64) {
    if let Some(m) = v.as_object_mut() {
        m.insert("prev".into(), json!(prev));
        if let Some(md) = m.get_mut("metadata").and_then(|x| x.as_object_mut()) {
            md.insert("sequence".into(), json!(seq));
        }
    }
}

static SINK: RwLock<Option<Arc<Sink>>> = RwLock::new(None);

/// Makes `sink` the destination of every [`emit`] until [`uninstall`].
pub(crate) fn install(sink: Arc<Sink>) {
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
}

/// Closes (signs, flushes) and removes the installed sink.
pub(crate) fn uninstall() {
    let s = SINK.write().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(s) = s {
        s.close();
    }
}

/// What a mount has done so far (`veilfs status`): opens and first reads, changes, denials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Counters {
    pub reads: u64,
    pub writes: u64,
    pub denials: u64,
}

static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static DENIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The counts of the events emitted by this process (one mount per process).
pub(crate) fn counters() -> Counters {
    use std::sync::atomic::Ordering::Relaxed;
    Counters {
        reads: READS.load(Relaxed),
        writes: WRITES.load(Relaxed),
        denials: DENIALS.load(Relaxed),
    }
}

/// The process (thread group) behind FUSE's thread id, and its executable.
pub(crate) fn process_of(tid: u32) -> (u32, String) {
    let pid = tgid_of(tid).unwrap_or(tid);
    (pid, process_info(pid).1)
}

/// Records one decision: logs it and appends it to the installed sink.
pub(crate) fn emit(e: &AuditEvent) {
    {
        use std::sync::atomic::Ordering::Relaxed;
        match e {
            AuditEvent::Open {
                writable: false, ..
            }
            | AuditEvent::Read { .. } => READS.fetch_add(1, Relaxed),
            AuditEvent::Open { writable: true, .. }
            | AuditEvent::Changed { .. }
            | AuditEvent::Renamed { .. } => WRITES.fetch_add(1, Relaxed),
            AuditEvent::Denied { .. } | AuditEvent::Egress { allowed: false, .. } => {
                DENIALS.fetch_add(1, Relaxed)
            }
            _ => 0,
        };
    }
    let actor = Actor::current();
    e.log(&actor);
    let sink = SINK.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(s) = sink {
        s.write(e, &actor);
    }
}

/// Shorthand: emits [`AuditEvent::Denied`].
pub(crate) fn denied(op: &str, path: &Path, reason: impl std::fmt::Display) {
    emit(&AuditEvent::Denied {
        op: op.to_string(),
        path: path.to_path_buf(),
        to: None,
        reason: reason.to_string(),
    });
}

/// Shorthand: emits [`AuditEvent::Denied`] for an operation on two names.
pub(crate) fn denied2(op: &str, from: &Path, to: &Path, reason: impl std::fmt::Display) {
    emit(&AuditEvent::Denied {
        op: op.to_string(),
        path: from.to_path_buf(),
        to: Some(to.to_path_buf()),
        reason: reason.to_string(),
    });
}

/// Shorthand: emits [`AuditEvent::Changed`].
pub(crate) fn changed(op: &str, path: &Path) {
    emit(&AuditEvent::Changed {
        op: op.to_string(),
        path: path.to_path_buf(),
    });
}

/// Records one event of a command run outside a mount (rollback, commit) in its own audit file
/// `<store>/audit/<session>.jsonl`, signed when `key` is given; `scope` is the folder it changed
/// (the event's `file`).
pub(crate) fn record_once(
    store: &Path,
    session: &str,
    key: Option<&Path>,
    scope: &Path,
    e: &AuditEvent,
) -> anyhow::Result<()> {
    let sink = Sink::open(&AuditConfig {
        store_dir: Some(store.to_path_buf()),
        session: session.to_string(),
        mountpoint: scope.to_path_buf(),
        log: None,
        key: key.map(Path::to_path_buf),
    })?;
    let actor = Actor::current();
    e.log(&actor);
    sink.write(e, &actor);
    sink.close();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Checking

/// What [`verify_file`] found in one audit file.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    pub events: usize,
    pub signatures: usize,
    /// Problems (`file:line: …`); the first chain problem ends the check of the file.
    pub errors: Vec<String>,
    /// Notes that are not proof of tampering (a torn last line, signatures not checked).
    pub warnings: Vec<String>,
}

/// Checks an audit file's chain and, with `key`, its signatures.
pub(crate) fn verify_file(path: &Path, key: Option<&VerifyingKey>) -> io::Result<Verified> {
    let data = fs::read(path)?;
    let mut out = Verified::default();
    let mut prev = GENESIS.to_string();
    let session = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut pieces: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let torn = match pieces.pop() {
        Some(last) if !last.is_empty() => Some(last),
        _ => None,
    };
    let n = pieces.len();
    let mut unsigned = 0usize;
    let bad = |line: usize, msg: &str| format!("{}:{line}: {msg}", path.display());
    for (i, line) in pieces.into_iter().enumerate() {
        let lineno = i + 1;
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                out.errors
                    .push(bad(lineno, &format!("not a JSON object ({e}): edited?")));
                return Ok(out);
            }
        };
        if v.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            out.errors.push(bad(
                lineno,
                "hash chain broken: `prev` does not match the previous line (this line or the one before was edited, removed or reordered)",
            ));
            return Ok(out);
        }
        let seq = v
            .pointer("/metadata/sequence")
            .or_else(|| v.pointer("/veilfs_signature/sequence"))
            .and_then(Value::as_u64);
        if seq != Some(i as u64) {
            out.errors.push(bad(
                lineno,
                &format!(
                    "sequence {seq:?} where {i} was expected (a line was removed or inserted)"
                ),
            ));
            return Ok(out);
        }
        if let Some(s) = v.get("veilfs_signature") {
            out.signatures += 1;
            if let Some(key) = key {
                let sig = s
                    .get("sig")
                    .and_then(Value::as_str)
                    .and_then(|h| unhex(h.as_bytes()))
                    .and_then(|b| <[u8; 64]>::try_from(b).ok())
                    .map(|b| Signature::from_bytes(&b));
                let sess = s.get("session").and_then(Value::as_str).unwrap_or("");
                let ok = sess == session
                    && sig.is_some_and(|sig| {
                        key.verify(sig_message(sess, i as u64, &prev).as_bytes(), &sig)
                            .is_ok()
                    });
                if !ok {
                    out.errors.push(bad(
                        lineno,
                        "bad signature: the chain head it signs was not signed by the audit key",
                    ));
                    return Ok(out);
                }
            }
            unsigned = 0;
        } else {
            out.events += 1;
            unsigned += 1;
        }
        prev = blake3::hash(line).to_hex().to_string();
    }
    if let Some(last) = torn {
        out.warnings.push(bad(
            n + 1,
            &format!(
                "last line is incomplete ({} bytes, the mount stopped mid-write?); not checked",
                last.len()
            ),
        ));
    }
    match key {
        Some(_) if out.signatures == 0 && out.events > 0 => out.errors.push(format!(
            "{}: no signature at all (written without --audit-key, or stripped)",
            path.display()
        )),
        Some(_) if unsigned > 0 => out.warnings.push(format!(
            "{}: the last {unsigned} event(s) are not signed (the mount did not close cleanly?)",
            path.display()
        )),
        None if out.signatures > 0 => out.warnings.push(format!(
            "{}: {} signature(s) not checked (pass --audit-pubkey or --audit-key)",
            path.display(),
            out.signatures
        )),
        _ => {}
    }
    Ok(out)
}

/// The audit files of a store, oldest first (ids sort by start time).
pub(crate) fn audit_files(store: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = audit_dir(store);
    let mut out = Vec::new();
    match fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "jsonl") {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// An id for the audit file of a mount without a journal session (read-only mode).
pub(crate) fn readonly_session_id() -> String {
    let ns = crate::time::now_ns();
    format!(
        "ro-{}-{}",
        crate::time::format_time(ns)
            .replace([':', '-', '.'], "")
            .trim_end_matches('Z'),
        std::process::id()
    )
}

/// Events per second [`emit`] sustains into a fresh store's trail from `threads` threads, each
/// with the actor of a FUSE request (for `examples/audit_emit.rs`).
pub fn bench_emit(threads: usize, events: usize) -> io::Result<f64> {
    let store = tempfile::tempdir()?;
    let sink = Sink::open(&AuditConfig {
        store_dir: Some(store.path().to_path_buf()),
        session: format!("bench-{threads}"),
        mountpoint: PathBuf::from("/mnt/view"),
        log: None,
        key: None,
    })
    .map_err(io::Error::other)?;
    install(Arc::new(sink));
    let per = events / threads.max(1);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let _actor = Actor::this_process().enter();
                for i in 0..per {
                    emit(&AuditEvent::Open {
                        path: PathBuf::from(format!(
                            "d{:04}/f{:03}.txt",
                            (t * per + i) / 100,
                            i % 100
                        )),
                        writable: false,
                        masked: false,
                        rules: Vec::new(),
                        redactions: 0,
                    });
                }
            });
        }
    });
    uninstall();
    Ok((per * threads) as f64 / t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, key: Option<PathBuf>) -> Sink {
        Sink::open(&AuditConfig {
            store_dir: Some(dir.to_path_buf()),
            session: "s1".into(),
            mountpoint: "/mnt/view".into(),
            log: None,
            key,
        })
        .expect("sink")
    }

    #[test]
    fn chain_and_signatures_verify_and_an_edit_is_named() {
        let d = tempfile::tempdir().unwrap();
        let kp = d.path().join("key");
        fs::write(&kp, tohex(&[7u8; 32])).unwrap();
        let s = sink(d.path(), Some(kp.clone()));
        let a = Actor::this_process();
        for i in 0..300 {
            s.write(
                &AuditEvent::Changed {
                    op: "create".into(),
                    path: format!("f{i}").into(),
                },
                &a,
            );
        }
        s.close();
        let pk = load_signing_key(&kp).unwrap().verifying_key();
        let path = s.path().unwrap().to_path_buf();
        let v = verify_file(&path, Some(&pk)).unwrap();
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        assert_eq!((v.events, v.signatures), (300, 2));
        let text = fs::read_to_string(&path).unwrap();
        let edited = text.replacen("\"f10\"", "\"g10\"", 1);
        fs::write(&path, edited).unwrap();
        let v = verify_file(&path, Some(&pk)).unwrap();
        assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
        assert!(v.errors[0].contains(":12:"), "{:?}", v.errors);
        let other = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        fs::write(&path, text).unwrap();
        let v = verify_file(&path, Some(&other)).unwrap();
        assert!(v.errors[0].contains(":257:"), "{:?}", v.errors);
    }

    /// The allocation-free line of the events of reads (`file_line`) is byte for byte what
    /// the general path writes for them.
    #[test]
    fn read_events_write_the_same_bytes_as_the_general_path() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let s = sink(d.path(), None);
        let a = Actor {
            pid: std::process::id(),
            uid: 1000,
            gid: 1000,
        };
        let p = s.process(a.pid);
        let rules = vec!["aws-access-key".to_string(), "github-pat".to_string()];
        let odd = PathBuf::from("d \"q\"/back\\slash\n\u{e9}\u{1f600}.txt");
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"dir/bad\xffname"));
        let mut events = Vec::new();
        for path in [PathBuf::from("src/main.rs"), PathBuf::new(), odd, bad] {
            events.push(AuditEvent::Open {
                path: path.clone(),
                writable: false,
                masked: false,
                rules: Vec::new(),
                redactions: 0,
            });
            events.push(AuditEvent::Open {
                path: path.clone(),
                writable: true,
                masked: true,
                rules: rules.clone(),
                redactions: 3,
            });
            events.push(AuditEvent::Read {
                path: path.clone(),
                masked: false,
                rules: Vec::new(),
                redactions: 0,
                moved_outside: false,
            });
            events.push(AuditEvent::Read {
                path: path.clone(),
                masked: true,
                rules: rules.clone(),
                redactions: 7,
                moved_outside: false,
            });
            events.push(AuditEvent::Synthesized {
                path: path.clone(),
                view: "document".into(),
                rules: rules.clone(),
                redactions: 2,
            });
            for op in [
                "unlink",
                "rmdir",
                "mkdir",
                "create",
                "setattr",
                "open-write",
                "chmod",
                "truncate",
                "masked-edit merged",
                "odd \"op\"\n",
            ] {
                events.push(AuditEvent::Changed {
                    op: op.into(),
                    path: path.clone(),
                });
            }
        }
        for (i, e) in events.iter().enumerate() {
            assert!(file_line::covers(e));
            let (prev, seq, time) = (
                format!("{i:064x}"),
                i as u64 * 7,
                1_765_000_000_123 + i as i64,
            );
            let mut v = s.ocsf(e, &a, &p, time);
            chain_fields(&mut v, &prev, seq);
            let want = v.to_string();
            let mut got = Vec::new();
            let session = file_line::Session {
                id: &s.session,
                host: &s.host,
                mountpoint: &s.mountpoint,
            };
            let at = file_line::Place {
                prev: &prev,
                seq,
                time,
            };
            assert!(file_line::write(&mut got, &session, e, &a, &p, &at));
            assert_eq!(String::from_utf8(got).unwrap(), want, "{e:?}");
        }
        assert!(!file_line::covers(&AuditEvent::Renamed {
            from: "f".into(),
            to: "g".into(),
            exchange: false,
        }));
        // Rare, and its `moved_outside` field is the general path's to write.
        assert!(!file_line::covers(&AuditEvent::Read {
            path: "f".into(),
            masked: false,
            rules: Vec::new(),
            redactions: 0,
            moved_outside: true,
        }));
    }

    #[test]
    fn ops_map_to_ocsf_activities() {
        for (op, id) in [
            ("create", 1),
            ("mkdir", 1),
            ("symlink", 1),
            ("link", 1),
            ("unlink", 4),
            ("rmdir", 4),
            ("rename", 5),
            ("setattr", 6),
            ("setxattr", 6),
            ("chmod", 7),
            ("chown", 7),
            ("utimens", 6),
            ("truncate", 3),
            ("open for write", 3),
            ("read", 2),
            ("masked-edit merged", 3),
        ] {
            assert_eq!(activity_of_op(op), id, "{op}");
        }
    }
}
