//! Human approval: operations the profile's `[approval]` section names wait, with their FUSE
//! reply held, until a person answers through the mount's admin socket ([`crate::admin`]:
//! `veilfs approve ID` / `veilfs deny ID`) or the timeout refuses them.
//!
//! Why block the worker thread rather than move the reply to a waiter: the operation that
//! follows an approval is the ordinary write path (capture, journal, change), which borrows
//! the filesystem; moving it off the worker would mean a second, detached copy of that path.
//! fuser runs several workers (`n_threads`, at least 4), so a held request blocks one of them;
//! at most [`Queue::max_held`] requests are held at a time (half the workers), and a request
//! beyond that is refused at once, so other requests always find a free worker.
//!
//! A held request ends early when the process that made it is killed or signalled. The kernel
//! would tell a filesystem with FUSE_INTERRUPT, but fuser 0.18 answers that message itself
//! (ENOSYS, after which the kernel sends no more), so the waiting request checks the caller on a
//! timer ([`POLL`]): its thread gone, or a signal pending for it that is not blocked
//! ([`signal_pending`], from `/proc/TID/status`), releases the request as `cancelled`, and the
//! caller gets EINTR. A killed process needs this to die at all: a FUSE request already read
//! by the filesystem waits for its reply uninterruptibly, so without it the process would
//! hang, unkillable, until the timeout.
//!
//! A grant ([`Grant`]) answers later requests without asking: "this path" (the same kind of
//! operation on that path or below it, for the session) or "this kind for N minutes". The
//! matching is pure ([`Grant::covers`]) and unit-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditEvent};
use crate::profile::ApprovalOp;

/// What a person (or the clock) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Approved,
    Denied,
    TimedOut,
    /// The mount is ending (revoke, expiry, unmount).
    Cancelled,
    /// The requesting process was killed or signalled (why).
    Interrupted(&'static str),
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Denied => "denied",
            Verdict::TimedOut => "timed-out",
            Verdict::Cancelled | Verdict::Interrupted(_) => "cancelled",
        }
    }
}

/// How often a held request checks that its caller still waits for it.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// A request that was not approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub reason: String,
    /// The caller was killed or signalled while it waited (EINTR rather than EACCES).
    pub interrupted: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<String> for Refused {
    fn from(reason: String) -> Self {
        Refused {
            reason,
            interrupted: false,
        }
    }
}

/// Whether a `/proc/TID/status` text shows a signal that interrupts a FUSE request: one pending
/// for the thread (`SigPnd`) or its process (`ShdPnd`) and not blocked (`SigBlk`). A fatal
/// signal shows as SIGKILL pending for every thread. Stop and continue signals do not count:
/// a stopped process resumes its call.
pub(crate) fn signal_pending(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let bit = |sig: i32| 1u64 << (sig - 1);
    let stops = bit(libc::SIGSTOP)
        | bit(libc::SIGTSTP)
        | bit(libc::SIGTTIN)
        | bit(libc::SIGTTOU)
        | bit(libc::SIGCONT);
    (field("SigPnd:") | field("ShdPnd:")) & !field("SigBlk:") & !stops != 0
}

/// Why the thread `tid` no longer waits for its request, if it does not.
fn caller_interrupted(tid: u32) -> Option<&'static str> {
    use std::io::Read;
    if tid == 0 {
        return None;
    }
    let mut text = String::new();
    match std::fs::File::open(format!("/proc/{tid}/status")) {
        // `status` is a few KiB; never read more than 16.
        Ok(f) => {
            if f.take(16 * 1024).read_to_string(&mut text).is_err() {
                return None;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some("the requesting process is gone");
        }
        Err(_) => return None,
    }
    signal_pending(&text).then_some("the requesting process was killed or signalled")
}

/// A standing answer: requests of kind `op` on a path at or below `path` (any path when
/// `None`) until `until` (for the session when `None`) are approved without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub op: ApprovalOp,
    pub path: Option<PathBuf>,
    pub until: Option<Instant>,
}

impl Grant {
    /// Does this grant answer a request of `op` on `paths` at `now`? Every path of the
    /// request (both names of a rename) must lie at or below the granted path.
    pub(crate) fn covers(&self, op: ApprovalOp, paths: &[&Path], now: Instant) -> bool {
        op == self.op
            && self.until.is_none_or(|u| now < u)
            && match &self.path {
                None => true,
                Some(g) => paths.iter().all(|p| p.starts_with(g)),
            }
    }

    pub(crate) fn describe(&self) -> String {
        let what = match &self.path {
            Some(p) => format!("{} of {} (and below)", self.op, p.display()),
            None => format!("every {}", self.op),
        };
        match self.until {
            Some(u) => format!(
                "{what} for {} s",
                u.saturating_duration_since(Instant::now()).as_secs()
            ),
            None => format!("{what} for the session"),
        }
    }
}

/// What `veilfs pending` shows of a held request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingInfo {
    pub id: u64,
    pub op: String,
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PathBuf>,
    pub pid: u32,
    pub uid: u32,
    pub exe: String,
    pub age_secs: u64,
    /// Seconds until the timeout refuses it.
    pub expires_in_secs: u64,
}

struct Pending {
    op: ApprovalOp,
    path: PathBuf,
    to: Option<PathBuf>,
    pid: u32,
    uid: u32,
    exe: String,
    asked: Instant,
    deadline: Instant,
    answer: Option<(Verdict, Option<Grant>)>,
}

#[derive(Default)]
struct State {
    next: u64,
    pending: BTreeMap<u64, Pending>,
    grants: Vec<Grant>,
    closed: bool,
}

/// A mount's approval queue.
pub(crate) struct Queue {
    timeout: Duration,
    max_held: usize,
    notify: bool,
    st: Mutex<State>,
    cv: Condvar,
}

/// How an answer should stand for later requests (`veilfs approve ID --path` / `--for`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Scope {
    /// The same kind of operation on this request's path (and below) needs no new answer.
    #[serde(default)]
    pub path: bool,
    /// The grant lasts this long (seconds); with `path` false it covers every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_secs: Option<u64>,
}

/// The standing grant an approval with `scope` leaves behind, if any.
pub(crate) fn grant_of(op: ApprovalOp, path: &Path, scope: Scope, now: Instant) -> Option<Grant> {
    if !scope.path && scope.for_secs.is_none() {
        return None;
    }
    Some(Grant {
        op,
        path: scope.path.then(|| path.to_path_buf()),
        until: scope.for_secs.map(|s| now + Duration::from_secs(s)),
    })
}

impl Queue {
    /// `workers` is the FUSE session's thread count; `notify`: call `notify-send` per request.
    pub(crate) fn new(timeout: Duration, workers: usize, notify: bool) -> Queue {
        Queue {
            timeout,
            max_held: (workers / 2).max(1),
            notify,
            st: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            cv: Condvar::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn max_held(&self) -> usize {
        self.max_held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a person's answer to `op` on `path` (and `to`, for a rename) by the current
    /// request's actor. `Ok` when approved (now or by a standing grant), `Err(reason)` otherwise.
    pub(crate) fn ask(
        &self,
        op: ApprovalOp,
        path: &Path,
        to: Option<&Path>,
    ) -> Result<(), Refused> {
        let now = Instant::now();
        let paths: Vec<&Path> = std::iter::once(path).chain(to).collect();
        let actor = audit::Actor::current();
        let mut st = self.lock();
        if st.closed {
            return Err(String::from("the mount is ending").into());
        }
        st.grants.retain(|g| g.until.is_none_or(|u| now < u));
        if let Some(g) = st.grants.iter().find(|g| g.covers(op, &paths, now)) {
            let why = format!("covered by a standing approval: {}", g.describe());
            drop(st);
            audit::emit(&AuditEvent::Approval {
                id: 0,
                action: "approved",
                op: op.as_str(),
                path: path.to_path_buf(),
                to: to.map(Path::to_path_buf),
                reason: why,
            });
            return Ok(());
        }
        if st.pending.len() >= self.max_held {
            drop(st);
            let why = format!(
                "{} requests already wait for an answer (the most held at once)",
                self.max_held
            );
            audit::emit(&AuditEvent::Approval {
                id: 0,
                action: "denied",
                op: op.as_str(),
                path: path.to_path_buf(),
                to: to.map(Path::to_path_buf),
                reason: why.clone(),
            });
            return Err(why.into());
        }
        let id = st.next;
        st.next += 1;
        let (pid, exe) = audit::process_of(actor.pid);
        st.pending.insert(
            id,
            Pending {
                op,
                path: path.to_path_buf(),
                to: to.map(Path::to_path_buf),
                pid,
                uid: actor.uid,
                exe: exe.clone(),
                asked: now,
                deadline: now + self.timeout,
                answer: None,
            },
        );
        drop(st);
        audit::emit(&AuditEvent::Approval {
            id,
            action: "requested",
            op: op.as_str(),
            path: path.to_path_buf(),
            to: to.map(Path::to_path_buf),
            reason: format!(
                "waiting for `veilfs approve {id}` or `veilfs deny {id}` (timeout {} s)",
                self.timeout.as_secs()
            ),
        });
        if self.notify {
            notify_send(id, op, path, &exe);
        }
        let deadline = now + self.timeout;
        let mut st = self.lock();
        let verdict = loop {
            if let Some(p) = st.pending.get(&id)
                && let Some((v, _)) = &p.answer
            {
                break *v;
            }
            if st.closed {
                break Verdict::Cancelled;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Verdict::TimedOut;
            }
            st = self
                .cv
                .wait_timeout(st, left.min(POLL))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if st.pending.get(&id).is_some_and(|p| p.answer.is_none()) && !st.closed {
                drop(st);
                let gone = caller_interrupted(actor.pid);
                st = self.lock();
                if let Some(why) = gone
                    && st.pending.get(&id).is_some_and(|p| p.answer.is_none())
                {
                    break Verdict::Interrupted(why);
                }
            }
        };
        st.pending.remove(&id);
        drop(st);
        // Answers by a person were audited where they were given (with who gave them).
        if matches!(
            verdict,
            Verdict::TimedOut | Verdict::Cancelled | Verdict::Interrupted(_)
        ) {
            audit::emit(&AuditEvent::Approval {
                id,
                action: verdict.as_str(),
                op: op.as_str(),
                path: path.to_path_buf(),
                to: to.map(Path::to_path_buf),
                reason: match verdict {
                    Verdict::TimedOut => {
                        format!("nobody answered within {} s", self.timeout.as_secs())
                    }
                    Verdict::Interrupted(why) => why.to_string(),
                    _ => "the mount is ending".into(),
                },
            });
        }
        match verdict {
            Verdict::Approved => Ok(()),
            Verdict::Interrupted(why) => Err(Refused {
                reason: format!("approval {id}: {why}"),
                interrupted: true,
            }),
            v => Err(format!("approval {id}: {}", v.as_str()).into()),
        }
    }

    /// A person's answer to request `id`; audited with the current actor (the answering peer).
    pub(crate) fn answer(
        &self,
        id: u64,
        approve: bool,
        scope: Scope,
    ) -> Result<PendingInfo, String> {
        let now = Instant::now();
        let mut st = self.lock();
        let p = st.pending.get_mut(&id).ok_or_else(|| {
            format!("no request {id} waits (answered, timed out, or never asked)")
        })?;
        if p.answer.is_some() {
            return Err(format!("request {id} was already answered"));
        }
        let grant = if approve {
            grant_of(p.op, &p.path, scope, now)
        } else {
            None
        };
        let verdict = if approve {
            Verdict::Approved
        } else {
            Verdict::Denied
        };
        p.answer = Some((verdict, grant.clone()));
        let info = info_of(id, p, now);
        let (op, path, to) = (p.op, p.path.clone(), p.to.clone());
        if let Some(g) = &grant {
            st.grants.push(g.clone());
        }
        drop(st);
        self.cv.notify_all();
        audit::emit(&AuditEvent::Approval {
            id,
            action: verdict.as_str(),
            op: op.as_str(),
            path,
            to,
            reason: match &grant {
                Some(g) => format!("answered by a person; standing approval: {}", g.describe()),
                None => "answered by a person".into(),
            },
        });
        Ok(info)
    }

    /// The requests waiting now, oldest first.
    pub(crate) fn pending(&self) -> Vec<PendingInfo> {
        let now = Instant::now();
        let st = self.lock();
        st.pending
            .iter()
            .filter(|(_, p)| p.answer.is_none())
            .map(|(id, p)| info_of(*id, p, now))
            .collect()
    }

    /// The standing grants, described.
    pub(crate) fn grants(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .grants
            .iter()
            .filter(|g| g.until.is_none_or(|u| now < u))
            .map(Grant::describe)
            .collect()
    }

    /// The mount is ending: every held request is refused now, and every later one at once.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }
}

fn info_of(id: u64, p: &Pending, now: Instant) -> PendingInfo {
    PendingInfo {
        id,
        op: p.op.as_str().to_string(),
        path: p.path.clone(),
        to: p.to.clone(),
        pid: p.pid,
        uid: p.uid,
        exe: p.exe.clone(),
        age_secs: now.saturating_duration_since(p.asked).as_secs(),
        expires_in_secs: p.deadline.saturating_duration_since(now).as_secs(),
    }
}

/// Tells the desktop user a request waits, when `notify-send` is installed. Never blocks the
/// request: the child is reaped by a thread of its own.
fn notify_send(id: u64, op: ApprovalOp, path: &Path, exe: &str) {
    let Some(bin) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("notify-send"))
            .find(|p| p.is_file())
    }) else {
        return;
    };
    let body = format!(
        "{exe} wants to {op} {}\nveilfs approve {id}  |  veilfs deny {id}",
        path.display()
    );
    match std::process::Command::new(bin)
        .args(["--app-name=veilfs", "veilfs: approval needed"])
        .arg(body)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut c) => {
            let _ = std::thread::Builder::new()
                .name("veilfs-notify".into())
                .spawn(move || c.wait());
        }
        Err(e) => tracing::debug!("notify-send: {e}"),
    }
}

/// Seconds since the epoch of `now + d` (what `veilfs status` shows as expiry).
pub(crate) fn epoch_after(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_grant_covers_the_same_kind_at_or_below_its_path_only() {
        let now = Instant::now();
        let g = grant_of(
            ApprovalOp::Delete,
            Path::new("build"),
            Scope {
                path: true,
                for_secs: None,
            },
            now,
        )
        .unwrap();
        assert!(g.covers(ApprovalOp::Delete, &[Path::new("build")], now));
        assert!(g.covers(ApprovalOp::Delete, &[Path::new("build/a/b.o")], now));
        // Component-wise: `buildx` is not below `build`.
        assert!(!g.covers(ApprovalOp::Delete, &[Path::new("buildx")], now));
        assert!(!g.covers(ApprovalOp::Rename, &[Path::new("build/a")], now));
        // Both names of a rename must be inside.
        assert!(!g.covers(
            ApprovalOp::Delete,
            &[Path::new("build/a"), Path::new("src/a")],
            now
        ));
        assert!(g.covers(
            ApprovalOp::Delete,
            &[Path::new("build/x")],
            now + Duration::from_secs(86400)
        ));
    }

    #[test]
    fn a_pending_unblocked_signal_interrupts_and_stops_do_not() {
        let st = |pnd: &str, shd: &str, blk: &str| {
            format!("Name:\tx\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\n")
        };
        assert!(!signal_pending(&st(
            "0000000000000000",
            "0000000000000000",
            "0"
        )));
        // SIGKILL (9) on the thread: a fatal signal being delivered.
        assert!(signal_pending(&st(
            "0000000000000100",
            "0000000000000000",
            "0"
        )));
        // SIGINT (2) to the process, not blocked / blocked.
        assert!(signal_pending(&st("0", "0000000000000002", "0")));
        assert!(!signal_pending(&st(
            "0",
            "0000000000000002",
            "0000000000000002"
        )));
        // SIGSTOP (19) and SIGCONT (18) alone: the call resumes.
        assert!(!signal_pending(&st("0000000000060000", "0", "0")));
        assert!(!signal_pending("garbage"));
        // This thread: nothing pending.
        assert_eq!(caller_interrupted(std::process::id()), None);
        assert_eq!(
            caller_interrupted(u32::MAX - 1),
            Some("the requesting process is gone")
        );
    }

    #[test]
    fn a_kind_grant_covers_every_path_until_it_runs_out() {
        let now = Instant::now();
        let g = grant_of(
            ApprovalOp::Rename,
            Path::new("a"),
            Scope {
                path: false,
                for_secs: Some(600),
            },
            now,
        )
        .unwrap();
        assert!(g.covers(ApprovalOp::Rename, &[Path::new("x"), Path::new("y/z")], now));
        assert!(g.covers(
            ApprovalOp::Rename,
            &[Path::new("x")],
            now + Duration::from_secs(599)
        ));
        assert!(!g.covers(
            ApprovalOp::Rename,
            &[Path::new("x")],
            now + Duration::from_secs(600)
        ));
        assert!(!g.covers(ApprovalOp::Delete, &[Path::new("x")], now));
    }

    #[test]
    fn a_plain_approval_leaves_no_grant() {
        assert_eq!(
            grant_of(
                ApprovalOp::Delete,
                Path::new("a"),
                Scope::default(),
                Instant::now()
            ),
            None
        );
    }

    #[test]
    fn an_unanswered_request_times_out_and_an_answer_releases_a_waiter() {
        let q = std::sync::Arc::new(Queue::new(Duration::from_millis(50), 8, false));
        assert!(q.ask(ApprovalOp::Delete, Path::new("a"), None).is_err());
        assert!(q.pending().is_empty());
        let q2 = std::sync::Arc::new(Queue::new(Duration::from_secs(30), 8, false));
        let w = {
            let q2 = q2.clone();
            std::thread::spawn(move || q2.ask(ApprovalOp::Delete, Path::new("a/b"), None))
        };
        let id = loop {
            if let Some(p) = q2.pending().first() {
                break p.id;
            }
            std::thread::yield_now();
        };
        q2.answer(
            id,
            true,
            Scope {
                path: true,
                for_secs: None,
            },
        )
        .unwrap();
        assert_eq!(w.join().unwrap(), Ok(()));
        // The grant answers the next request below the path without holding it.
        assert_eq!(q2.ask(ApprovalOp::Delete, Path::new("a/b/c"), None), Ok(()));
        assert!(q2.answer(id, true, Scope::default()).is_err());
    }

    #[test]
    fn close_refuses_held_and_later_requests() {
        let q = std::sync::Arc::new(Queue::new(Duration::from_secs(30), 8, false));
        let w = {
            let q = q.clone();
            std::thread::spawn(move || q.ask(ApprovalOp::Chmod, Path::new("f"), None))
        };
        while q.pending().is_empty() {
            std::thread::yield_now();
        }
        q.close();
        assert!(w.join().unwrap().is_err());
        assert!(q.ask(ApprovalOp::Chmod, Path::new("f"), None).is_err());
    }

    #[test]
    fn at_most_half_the_workers_are_held() {
        let q = Queue::new(Duration::from_secs(30), 2, false);
        assert_eq!(q.max_held(), 1);
        assert_eq!(Queue::new(Duration::from_secs(1), 16, false).max_held(), 8);
    }
}
