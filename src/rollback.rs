//! Undo a session from its journal and the store.
//!
//! A rollback replays the session's events in reverse: `Capture{path, before}` restores `path` to
//! `before` exactly (content, mode, owner, times, xattrs), `Rename{from, to}` renames `to` back to
//! `from`; everything else is informational. Directory times are restored last, since restoring
//! children changes them.
//!
//! Rules this module keeps:
//! - **Nothing changes before everything is validated**: every journal chain, every object a
//!   restore needs (decompressed and hash-checked), the scope, and the conflict check. A problem
//!   found there refuses the whole rollback.
//! - **Conflicts**: a path whose last `PostImage` (not followed by a Capture, Rename or Change
//!   touching it) differs from what is on disk now was changed by someone else since. Without
//!   `force` the rollback is refused; with it the current state is overwritten, but captured
//!   first. Paths without a post-image (a crash) are not checked.
//! - **A rollback is a session too** (mode `rollback`, first event `Undo{of}`): it captures each
//!   path before changing it, so it can itself be rolled back, and it records
//!   `Change{op: "undo <seq>"}` after finishing the step for record `seq`. Steps recorded as done
//!   by an undo session that is not itself undone are skipped: rolling back twice is a no-op, and
//!   a rollback that crashed half-way resumes where it stopped.
//! - **Every step is idempotent on its own**: restoring a path already in its `before` state does
//!   nothing; a rename is undone only if `from` is free and `to` exists (if `from` exists, the
//!   rename never happened or failed, since later re-creations at `from` were undone before).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::backing::{self, Kind, SetTime};
use crate::journal::{Event, JournalError, Meta, SessionLog, SessionWriter, State};
use crate::store::{Store, StoreError};

/// Errors that stop a rollback (before or during the apply). Each names its file or path.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// A journal cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The plan cannot be carried out (each line says why); nothing was changed.
    #[error("refusing to roll back, nothing was changed:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    /// The scope cannot be opened.
    #[error("scope {}: {source}", scope.display())]
    Scope {
        /// The scope.
        scope: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A path could not be restored.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No session matches the selection (the message says what was asked).
    #[error("no session to roll back{0}")]
    NothingSelected(String),
    /// The session is still being written: rolling back under a running mount would leave it
    /// believing the restored paths are captured, so its later writes would go unrecorded.
    #[error(
        "refusing to roll back, nothing was changed: session {session} is still live ({where_}); stop it first: {stop}"
    )]
    Live {
        /// The session.
        session: String,
        /// Which process or mount holds it.
        where_: String,
        /// How to stop it.
        stop: String,
    },
}

/// Refuses a session some process still writes (a running mount, commit or rollback), naming
/// where it is mounted and how to stop it.
pub fn refuse_live(store: &Store, log: &SessionLog) -> Result<(), RollbackError> {
    if !store.session_is_live(&log.id)? {
        return Ok(());
    }
    let (pid, scope) = match log.records.first().map(|r| &r.event) {
        Some(Event::SessionStart { pid, scope, .. }) => (*pid, scope.clone()),
        _ => (0, PathBuf::new()),
    };
    let mode = log
        .start()
        .map(|(_, _, m)| m.to_string())
        .unwrap_or_default();
    let (where_, stop) = match crate::mountinfo::find_mountpoint(pid, &scope) {
        Some(mp) if mode == "snapshot" || mode == "overlay" => (
            format!("mounted at {} by `veilfs mount`, pid {pid}", mp.display()),
            format!("veilfs unmount {}", mp.display()),
        ),
        _ => (
            format!("a veilfs {mode} process, pid {pid}, is still writing it"),
            format!("wait for it to finish, or end it: kill {pid}"),
        ),
    };
    Err(RollbackError::Live {
        session: log.id.clone(),
        where_,
        stop,
    })
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RollbackError + '_ {
    move |source| RollbackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One undo step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put `path` back into `before`.
    Restore {
        /// The path.
        path: PathBuf,
        /// The state to put back.
        before: State,
    },
    /// Undo `Rename{from, to}`: rename `to` back to `from` (or exchange them again).
    UndoRename {
        /// The rename's old name.
        from: PathBuf,
        /// The rename's new name.
        to: PathBuf,
        /// It was a `RENAME_EXCHANGE`.
        exchange: bool,
    },
}

/// One step of a rollback plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// The session whose record this step undoes, and the record's seq.
    pub session: String,
    /// The seq of that record.
    pub seq: u64,
    /// What the step does.
    pub action: Action,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.action {
            Action::Restore {
                path,
                before: State::Absent,
            } => write!(f, "remove   {}", path.display()),
            Action::Restore { path, before } => {
                let what = match before {
                    State::File { hash, meta, .. } => {
                        format!("content {}…, {:04o}", hash.short(), meta.mode & 0o7777)
                    }
                    State::Dir { meta } => format!("dir, {:04o}", meta.mode & 0o7777),
                    State::Symlink { target, .. } => format!("symlink -> {}", target.display()),
                    other => other.describe(),
                };
                write!(f, "restore  {}  ({what})", path.display())
            }
            Action::UndoRename { from, to, exchange } => write!(
                f,
                "rename   {} -> {}{}",
                to.display(),
                from.display(),
                if *exchange { "  (exchange)" } else { "" }
            ),
        }
    }
}

/// A path someone else changed after the session left it.
#[derive(Clone, Debug)]
pub struct Conflict {
    /// The path.
    pub path: PathBuf,
    /// What the session left there.
    pub expected: State,
    /// What is there now.
    pub found: State,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conflict {}: the session left {}, now {}",
            self.path.display(),
            self.expected.describe(),
            self.found.describe()
        )
    }
}

/// What a rollback will do; built by [`plan`] without changing anything.
#[derive(Debug)]
pub struct Plan {
    /// The real folder the sessions changed.
    pub scope: PathBuf,
    /// The sessions undone, newest first.
    pub sessions: Vec<String>,
    /// Pending steps, in the order they run.
    pub steps: Vec<Step>,
    /// Paths changed since the session by someone else (restored only with `force`).
    pub conflicts: Vec<Conflict>,
    /// Torn journal tails, steps already done by an earlier rollback, etc.
    pub warnings: Vec<String>,
    /// The oldest captured metadata of each directory (to re-create a missing parent early).
    dir_times: BTreeMap<PathBuf, Meta>,
    /// Per session: every undo action by seq (done or not), and the live rollback sessions
    /// that already did some of them (to resume their directory-time bookkeeping).
    actions: HashMap<String, BTreeMap<u64, Action>>,
    resume: HashMap<String, Vec<SessionLog>>,
}

impl Plan {
    /// True if a rollback of `session` crashed (its directory times may still need setting).
    fn crashed_undo(&self, session: &str) -> bool {
        self.resume
            .get(session)
            .is_some_and(|v| v.iter().any(|u| !u.ended()))
    }

    /// Whether [`apply`] has anything to do: pending steps, or a crashed rollback to finish.
    pub fn needs_apply(&self) -> bool {
        !self.steps.is_empty() || self.sessions.iter().any(|s| self.crashed_undo(s))
    }
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Paths put back into their earlier state.
    pub restored: usize,
    /// Paths the sessions created, removed again.
    pub removed: usize,
    /// Renames undone.
    pub renamed: usize,
    /// Paths already in their earlier state.
    pub unchanged: usize,
    /// Paths skipped because someone else changed them since.
    pub conflicts: usize,
    /// Things worth telling (e.g. an xattr that could not be restored).
    pub warnings: Vec<String>,
    /// The rollback sessions written (one per undone session).
    pub undo_sessions: Vec<String>,
    /// The fdatasyncs of their journals: the durability cost a rollback is measured by.
    pub journal_syncs: u64,
}

/// Which sessions to undo. With `named`, those (in any order, repeats ignored); with `since`
/// (unix ns), every session that started at or after it; otherwise the newest session with
/// changes. Rollback sessions and sessions already undone are only chosen when named
/// explicitly. Newest first (by start time), the order their changes must be undone in.
pub fn select_sessions(
    store: &Store,
    named: &[String],
    since: Option<i128>,
) -> Result<Vec<String>, RollbackError> {
    if !named.is_empty() {
        let mut picked: Vec<(i128, String)> = Vec::new();
        for id in named {
            let log = store.load_session(id)?; // a clear error for a missing or broken session
            if picked.iter().any(|(_, p)| p == id) {
                continue;
            }
            picked.push((log.records.first().map_or(0, |r| r.time_ns), id.clone()));
        }
        picked.sort();
        return Ok(picked.into_iter().rev().map(|(_, id)| id).collect());
    }
    let infos = store.sessions()?;
    let graph = UndoGraph::load(store)?;
    let mut candidates: Vec<_> = infos
        .iter()
        .filter(|i| i.problem.is_none() && i.mode != "rollback")
        .filter(|i| i.captures + i.renames > 0)
        .filter(|i| !graph.fully_undone(&i.id))
        .collect();
    candidates.reverse();
    match since {
        Some(t) => {
            let v: Vec<String> = candidates
                .into_iter()
                .filter(|i| i.start_ns >= t)
                .map(|i| i.id.clone())
                .collect();
            if v.is_empty() {
                return Err(RollbackError::NothingSelected(
                    " started since that time".into(),
                ));
            }
            Ok(v)
        }
        None => candidates
            .first()
            .map(|i| vec![i.id.clone()])
            .ok_or_else(|| RollbackError::NothingSelected(" (no session with changes)".into())),
    }
}

/// Which sessions undid which, and which undo steps are done.
struct UndoGraph {
    logs: HashMap<String, SessionLog>,
    /// session → sessions that undo it
    undoers: HashMap<String, Vec<String>>,
}

impl UndoGraph {
    fn load(store: &Store) -> Result<UndoGraph, RollbackError> {
        let mut logs = HashMap::new();
        let mut undoers: HashMap<String, Vec<String>> = HashMap::new();
        for info in store.sessions()? {
            if info.problem.is_some() {
                continue;
            }
            let log = store.load_session(&info.id)?;
            if let Some(of) = log.undo_of() {
                undoers
                    .entry(of.to_string())
                    .or_default()
                    .push(info.id.clone());
            }
            logs.insert(info.id.clone(), log);
        }
        Ok(UndoGraph { logs, undoers })
    }

    fn is_undone(&self, id: &str, depth: usize) -> bool {
        depth < 64
            && self
                .undoers
                .get(id)
                .is_some_and(|us| us.iter().any(|u| !self.is_undone(u, depth + 1)))
    }

    /// The live (not themselves undone) sessions that undid `id`.
    fn live_undoers(&self, id: &str) -> Vec<&SessionLog> {
        self.undoers
            .get(id)
            .into_iter()
            .flatten()
            .filter(|u| !self.is_undone(u, 0))
            .filter_map(|u| self.logs.get(u))
            .collect()
    }

    /// seqs of `id` whose undo step is done.
    fn done_steps(&self, id: &str) -> BTreeSet<u64> {
        let mut done = BTreeSet::new();
        for log in self.live_undoers(id) {
            for r in &log.records {
                if let Event::Change { op, .. } = &r.event
                    && let Some(n) = op.strip_prefix("undo ").and_then(|n| n.parse().ok())
                {
                    done.insert(n);
                }
            }
        }
        done
    }

    fn fully_undone(&self, id: &str) -> bool {
        let Some(log) = self.logs.get(id) else {
            return false;
        };
        let done = self.done_steps(id);
        log.records.iter().all(|r| {
            !matches!(r.event, Event::Capture { .. } | Event::Rename { .. })
                || done.contains(&r.seq)
        })
    }
}

/// Normalises a user-given path filter to a path relative to the scope.
pub fn normalize_filter(scope: &Path, p: &Path) -> PathBuf {
    let p = p.strip_prefix(scope).unwrap_or(p);
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn under(p: &Path, prefix: &Path) -> bool {
    prefix.as_os_str().is_empty() || p.starts_with(prefix)
}

/// Builds the plan for undoing `sessions` (newest first), limited to `filter` paths (and
/// their subtrees, followed through renames) when non-empty. Validates every journal and every
/// object a step needs, and checks for conflicts; changes nothing.
pub fn plan(store: &Store, sessions: &[String], filter: &[PathBuf]) -> Result<Plan, RollbackError> {
    plan_after(store, sessions, filter, None)
}

/// [`plan`], leaving out every record of session `after.0` up to and including seq `after.1`
/// (a checkpoint): what `rollback --to` undoes is only what came after it.
pub fn plan_after(
    store: &Store,
    sessions: &[String],
    filter: &[PathBuf],
    after: Option<(&str, u64)>,
) -> Result<Plan, RollbackError> {
    let graph = UndoGraph::load(store)?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut logs = Vec::new();
    for id in sessions {
        let log = match graph.logs.get(id) {
            Some(l) => l.clone(),
            None => store.load_session(id)?, // gives the precise error
        };
        refuse_live(store, &log)?;
        if let Some(t) = &log.tail {
            warnings.push(t.msg.clone());
        }
        logs.push(log);
    }
    let mut scope: Option<PathBuf> = None;
    for log in &logs {
        let Some((_, s, _)) = log.start() else {
            problems.push(format!("{}: no SessionStart record", log.path.display()));
            continue;
        };
        match &scope {
            None => scope = Some(s.to_path_buf()),
            Some(prev) if prev != s => problems.push(format!(
                "session {} is of scope {}, not {}: roll back one scope at a time",
                log.id,
                s.display(),
                prev.display()
            )),
            _ => {}
        }
    }
    if !problems.is_empty() {
        return Err(RollbackError::Invalid(problems));
    }
    let scope = scope.ok_or_else(|| RollbackError::NothingSelected(String::new()))?;
    let root = backing::open_root(&scope).map_err(|source| RollbackError::Scope {
        scope: scope.clone(),
        source,
    })?;
    let filter: Vec<PathBuf> = filter.iter().map(|p| normalize_filter(&scope, p)).collect();

    // Chronological pass (oldest session first): filter through renames, conflicts, dir times.
    let mut included: HashMap<(String, u64), bool> = HashMap::new();
    let mut filters = filter.clone();
    let mut expected: BTreeMap<PathBuf, State> = BTreeMap::new();
    let mut dir_times = BTreeMap::new();
    for log in logs.iter().rev() {
        for r in &log.records {
            let kept = after.is_none_or(|(sid, cut)| sid != log.id || r.seq > cut);
            let inc = kept
                && (filter.is_empty()
                    || match &r.event {
                        Event::Rename { from, to, .. } => filters.iter().any(|f| {
                            under(from, f) || under(to, f) || under(f, from) || under(f, to)
                        }),
                        e => e
                            .paths()
                            .iter()
                            .any(|p| filters.iter().any(|f| under(p, f))),
                    });
            if let Event::Rename { from, to, exchange } = &r.event
                && !filter.is_empty()
            {
                let mut add = Vec::new();
                for f in &filters {
                    for (a, b) in [(from, to), (to, from)] {
                        if b == to || *exchange {
                            if let Ok(rest) = f.strip_prefix(a) {
                                add.push(b.join(rest));
                            } else if under(a, f) {
                                add.push(b.clone());
                            }
                        }
                    }
                }
                filters.extend(add);
            }
            included.insert((log.id.clone(), r.seq), inc);
            if !inc {
                continue;
            }
            match &r.event {
                Event::PostImage { path, after } => {
                    expected.insert(path.clone(), after.clone());
                }
                Event::Capture { path, before } => {
                    expected.remove(path);
                    if let State::Dir { meta } = before {
                        dir_times
                            .entry(path.clone())
                            .or_insert_with(|| meta.clone());
                    }
                }
                Event::Rename { from, to, .. } => {
                    expected.retain(|p, _| !under(p, from) && !under(p, to));
                }
                // A later change (an unlink, an rmdir, a write whose post-image never came)
                // makes an earlier post-image stale.
                Event::Change { path, .. } => {
                    expected.retain(|p, _| !under(p, path));
                }
                _ => {}
            }
        }
    }

    // Steps: newest session first, each in reverse.
    let mut steps = Vec::new();
    let mut actions: HashMap<String, BTreeMap<u64, Action>> = HashMap::new();
    let mut resume: HashMap<String, Vec<SessionLog>> = HashMap::new();
    for log in &logs {
        let done = graph.done_steps(&log.id);
        let mut undoers: Vec<SessionLog> =
            graph.live_undoers(&log.id).into_iter().cloned().collect();
        undoers.sort_by_key(|u| u.records.first().map(|r| r.time_ns));
        resume.insert(log.id.clone(), undoers);
        let mut skipped = 0;
        for r in log.records.iter().rev() {
            if !included
                .get(&(log.id.clone(), r.seq))
                .copied()
                .unwrap_or(false)
            {
                continue;
            }
            let action = match &r.event {
                Event::Capture { path, before } => Action::Restore {
                    path: path.clone(),
                    before: before.clone(),
                },
                Event::Rename { from, to, exchange } => {
                    if *exchange && exchange_never_happened(&root, log, r.seq) {
                        warnings.push(format!(
                            "{}: rename exchange {} <-> {} (last record of a crashed session) did not happen; skipped",
                            log.id,
                            from.display(),
                            to.display()
                        ));
                        continue;
                    }
                    Action::UndoRename {
                        from: from.clone(),
                        to: to.clone(),
                        exchange: *exchange,
                    }
                }
                _ => continue,
            };
            actions
                .entry(log.id.clone())
                .or_default()
                .insert(r.seq, action.clone());
            if done.contains(&r.seq) {
                skipped += 1;
                continue;
            }
            steps.push(Step {
                session: log.id.clone(),
                seq: r.seq,
                action,
            });
        }
        if skipped > 0 {
            let by: Vec<&str> = graph
                .live_undoers(&log.id)
                .iter()
                .map(|l| l.id.as_str())
                .collect();
            warnings.push(format!(
                "session {}: {skipped} step(s) already undone by {}",
                log.id,
                by.join(", ")
            ));
        }
    }

    // Validate every object a step needs.
    let mut checked = BTreeSet::new();
    for s in &steps {
        if let Action::Restore { path, before } = &s.action
            && let Some(id) = before.object()
            && checked.insert(*id)
            && let Err(e) = store.verify_object(id)
        {
            problems.push(format!(
                "{} (needed to restore {}): {e}",
                id,
                path.display()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(RollbackError::Invalid(problems));
    }

    // Conflicts: only for paths a pending step restores.
    let pending: BTreeSet<&Path> = steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Restore { path, .. } => Some(path.as_path()),
            _ => None,
        })
        .collect();
    // Paths an earlier (crashed or partial) rollback of these sessions already changed are
    // expected to differ from the session's post-image.
    let mut touched_by_undo = BTreeSet::new();
    for log in &logs {
        for u in graph.live_undoers(&log.id) {
            for r in &u.records {
                if let Event::Capture { path, .. } = &r.event {
                    touched_by_undo.insert(path.clone());
                }
            }
        }
    }
    // A file restored in place changes every hard link of it, and the guard journals one
    // post-image per name: a name whose post-image is one a touched path shares was touched
    // too (by content: the undo may since have removed the link that joined them).
    let touched_after: Vec<&State> = touched_by_undo
        .iter()
        .filter_map(|p| expected.get(p))
        .collect();
    let mut conflicts = Vec::new();
    for (path, exp) in &expected {
        if !pending.contains(path.as_path())
            || touched_by_undo.contains(path)
            || touched_after.iter().any(|t| t.same_content(exp))
        {
            continue;
        }
        let found = State::read(root.as_fd(), path, None)?;
        if !found.same_content(exp) {
            conflicts.push(Conflict {
                path: path.clone(),
                expected: exp.clone(),
                found,
            });
        }
    }

    Ok(Plan {
        scope,
        sessions: logs.iter().map(|l| l.id.clone()).collect(),
        steps,
        conflicts,
        warnings,
        dir_times,
        actions,
        resume,
    })
}

/// For an exchange recorded as the last record of a crashed session: true if the captured
/// states show it did not happen (the destination still holds its captured content).
fn exchange_never_happened(root: &OwnedFd, log: &SessionLog, seq: u64) -> bool {
    let last = log.records.last().map(|r| r.seq) == Some(seq);
    if !last || log.ended() {
        return false;
    }
    let Some(Event::Rename { from, to, .. }) =
        log.records.iter().find(|r| r.seq == seq).map(|r| &r.event)
    else {
        return false;
    };
    let captured = |p: &Path| {
        log.records.iter().rev().find_map(|r| match &r.event {
            Event::Capture { path, before } if path == p && r.seq < seq => Some(before.clone()),
            _ => None,
        })
    };
    let (Some(bf), Some(bt)) = (captured(from), captured(to)) else {
        return false;
    };
    if bf.same_content(&bt) {
        return false; // indistinguishable; exchanging identical things again is harmless
    }
    let now_to = State::read(root.as_fd(), to, None).unwrap_or(State::Absent);
    now_to.same_content(&bt)
}

/// Runs a plan. Refuses (changing nothing) when there are conflicts and not `force`. `tick` is
/// called after each step (for a progress bar).
pub fn apply(
    store: &Store,
    plan: &Plan,
    force: bool,
    tick: &dyn Fn(&Step),
) -> Result<Report, RollbackError> {
    let mut report = Report {
        conflicts: plan.conflicts.len(),
        warnings: plan.warnings.clone(),
        ..Report::default()
    };
    if !plan.conflicts.is_empty() && !force {
        return Ok(report);
    }
    if !plan.needs_apply() {
        return Ok(report);
    }
    let root = backing::open_root(&plan.scope).map_err(|source| RollbackError::Scope {
        scope: plan.scope.clone(),
        source,
    })?;
    let mut ctx = Applier {
        store,
        root,
        report: &mut report,
        captured: BTreeSet::new(),
        times: BTreeMap::new(),
        known_dirs: &plan.dir_times,
        in_place_links: true,
        session: String::new(),
        sync_files: true,
        lazy_objects: false,
        staging: None,
    };
    ctx.staging = same_fs_staging(store, ctx.root.as_fd());
    let mut writers: Vec<SessionWriter> = Vec::new();
    for sid in &plan.sessions {
        let steps: Vec<&Step> = plan.steps.iter().filter(|s| &s.session == sid).collect();
        if steps.is_empty() && !plan.crashed_undo(sid) {
            continue;
        }
        let w = store.new_session(Event::SessionStart {
            scope: plan.scope.clone(),
            mode: "rollback".into(),
            profile: String::new(),
            pid: std::process::id(),
            user: current_uid(),
        })?;
        w.append(Event::Undo { of: sid.clone() })?;
        ctx.session = w.id().to_string();
        ctx.captured.clear();
        // A rollback of this session killed earlier may have left temporary files where it
        // was restoring: they go before anything else happens there.
        for u in plan
            .resume
            .get(sid)
            .into_iter()
            .flatten()
            .filter(|u| !u.ended())
        {
            let dirs: Vec<&Path> = steps
                .iter()
                .flat_map(|s| match &s.action {
                    Action::Restore { path, .. } => vec![path.as_path()],
                    Action::UndoRename { from, to, .. } => vec![from.as_path(), to.as_path()],
                })
                .filter_map(|p| p.parent())
                .collect();
            remove_temps(ctx.root.as_fd(), dirs, &u.id)?;
        }
        // Resuming: redo the directory-time bookkeeping of the steps already done.
        let none = BTreeMap::new();
        let acts = plan.actions.get(sid).unwrap_or(&none);
        for u in plan.resume.get(sid).into_iter().flatten() {
            let mut seen = BTreeSet::new();
            for r in &u.records {
                match &r.event {
                    Event::Capture {
                        path,
                        before: State::Dir { meta },
                    } if seen.insert(path.clone()) => {
                        ctx.times
                            .entry(path.clone())
                            .or_insert_with(|| meta.clone());
                    }
                    Event::Change { op, .. } => {
                        let seq = op.strip_prefix("undo ").and_then(|n| n.parse::<u64>().ok());
                        if let Some(a) = seq.and_then(|n| acts.get(&n)) {
                            ctx.bookkeep(a);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut i = 0;
        while i < steps.len() {
            // A run of removals, or of files put back where nothing is, shares its syncs; any
            // other step runs alone.
            let removals = ctx.removal_run(&steps[i..])?;
            let restores = if removals == 0 {
                ctx.restore_run(&steps[i..])?
            } else {
                0
            };
            let run = &steps[i..i + removals.max(restores).max(1)];
            let mut staged = Vec::new().into_iter();
            if removals > 0 {
                ctx.capture_removals(&w, run)?;
            } else if restores > 0 {
                staged = ctx.stage_restores(&w, run)?.into_iter();
            }
            for step in run {
                if removals > 0 {
                    ctx.remove_captured(step)?;
                } else if let Some(s) = staged.next() {
                    ctx.place_staged(step, s)?;
                } else {
                    ctx.step(&w, step)?;
                }
                // Not synced here: the next change waits for a sync that covers it
                // ([`Applier::durable`]), so the markers a power cut loses belong to the last
                // step, or to the last run of removals, done: a resume redoes them, and each
                // is idempotent (a run's removals, of distinct non-directories, also commute).
                w.append_lazy(Event::Change {
                    path: step_path(step).to_path_buf(),
                    op: format!("undo {}", step.seq),
                })?;
                test_kill_point();
                tick(step);
            }
            i += run.len();
        }
        // The next session's steps must not run before this one's markers are durable: a
        // resume would redo this session's last step after them, out of order.
        w.sync()?;
        writers.push(w);
    }
    // Directory times last: restoring children changed them.
    if let Some(w) = writers.last() {
        let times = std::mem::take(&mut ctx.times);
        let mut dirs = Vec::new();
        for (path, meta) in &times {
            let Ok(fd) = backing::open_path(ctx.root.as_fd(), path) else {
                continue;
            };
            if backing::stat_fd(fd.as_fd()).map(|s| s.kind()).ok() != Some(Kind::Dir) {
                continue;
            }
            ctx.capture(w, path)?;
            dirs.push((fd, path, meta));
        }
        // One sync for every directory's capture, before the first time is set.
        w.sync()?;
        for (fd, path, meta) in dirs {
            if let Err(e) = backing::utimens_fd(
                fd.as_fd(),
                SetTime::At(meta.atime.0, meta.atime.1),
                SetTime::At(meta.mtime.0, meta.mtime.1),
            ) {
                ctx.report
                    .warnings
                    .push(format!("{}: cannot restore times: {e}", path.display()));
            }
        }
    }
    // An ended session's object files are trusted by readers (no rebuild from the journal):
    // the ones written without an fsync go to disk first.
    if ctx.lazy_objects {
        crate::store::syncfs(store.dir())?;
    }
    for w in &writers {
        w.append(Event::SessionEnd)?;
        report.undo_sessions.push(w.id().to_string());
        report.journal_syncs += w.syncs();
    }
    Ok(report)
}

/// Puts `path` beneath `root` into `target` exactly (content from the store, mode, owner,
/// xattrs, and times except for directories), replacing what is there: a non-directory, or an
/// empty directory. A file with other hard links is replaced by a new inode, not rewritten in
/// place. Captures nothing: the caller journals the pre-image first. Used by `overlay` commit;
/// returns warnings (an owner or xattr that could not be set).
pub fn put_state(
    store: &Store,
    root: BorrowedFd<'_>,
    path: &Path,
    target: &State,
    session: &str,
) -> Result<Vec<String>, RollbackError> {
    put_state_with(store, root, path, target, false, session)
}

/// [`put_state`], choosing whether a file with other hard links is rewritten in place (every
/// name sees the new bytes) or replaced by a new inode. Restored bytes are not fsync'd one by
/// one: the caller flushes the filesystem (`store::syncfs`) before relying on them.
pub fn put_state_with(
    store: &Store,
    root: BorrowedFd<'_>,
    path: &Path,
    target: &State,
    in_place_links: bool,
    session: &str,
) -> Result<Vec<String>, RollbackError> {
    let known = BTreeMap::new();
    let mut report = Report::default();
    let mut a = Applier {
        store,
        root: backing::dup(root).map_err(io_at(path))?,
        report: &mut report,
        captured: BTreeSet::new(),
        times: BTreeMap::new(),
        known_dirs: &known,
        in_place_links,
        session: session.to_string(),
        sync_files: false,
        lazy_objects: false,
        staging: None,
    };
    a.restore(path, target)?;
    Ok(report.warnings)
}

/// The staging directory of a run of restores, which only runs when there is one.
fn staging(s: &Option<OwnedFd>) -> BorrowedFd<'_> {
    s.as_ref()
        .expect("restore_run requires the staging directory")
        .as_fd()
}

/// The most removals that share one journal sync (bounds the captures held un-synced).
const REMOVAL_RUN_MAX: usize = 512;

fn step_path(s: &Step) -> &Path {
    match &s.action {
        Action::Restore { path, .. } => path,
        Action::UndoRename { from, .. } => from,
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        })
        .unwrap_or(u32::MAX)
}

struct Applier<'a> {
    store: &'a Store,
    root: OwnedFd,
    report: &'a mut Report,
    /// Paths the current rollback session captured (the guard's rule).
    captured: BTreeSet<PathBuf>,
    /// Directory times to set at the end, keyed by where the directory is *now* (re-keyed when a
    /// rename is undone). Restore steps overwrite (older captures win, they run later);
    /// directories whose entries we change without a capture keep their time from first touch.
    times: BTreeMap<PathBuf, Meta>,
    known_dirs: &'a BTreeMap<PathBuf, Meta>,
    /// Rewrite a file with other hard links in place (rollback: every name sees the restored
    /// bytes) or replace it by a new inode (overlay commit: the other names keep theirs, as the
    /// overlay showed them).
    in_place_links: bool,
    /// The session (rollback or commit) on whose behalf changes are made: names temp files.
    session: String,
    /// fsync each restored file before it replaces the old one. A commit turns this off and
    /// flushes the filesystem once before it records that everything was applied (its resume
    /// re-checks every step, so a file lost to a power cut is simply written again).
    sync_files: bool,
    /// Some captured object file was written without an fsync (see [`Applier::capture`]).
    lazy_objects: bool,
    /// The store's staging directory, when it is on the real folder's filesystem: where a run
    /// of restores writes its files before moving them to their names (written next to them,
    /// hundreds of temporary names at once would grow the directory for good).
    staging: Option<OwnedFd>,
}

/// The store's staging directory (see `Applier::staging`), if a rename can move a file from it
/// into the real folder beneath `root`.
fn same_fs_staging(store: &Store, root: BorrowedFd<'_>) -> Option<OwnedFd> {
    let sfd = backing::open_root(store.staging_dir()).ok()?;
    let dev = |fd| backing::stat_fd(fd).ok().map(|s| s.dev);
    (dev(sfd.as_fd())? == dev(root)?).then_some(sfd)
}

/// Test-only kill switch (README, "Overlay mode"): with `VEILFS_TEST_KILL_AFTER=N`, a commit
/// or rollback process SIGKILLs itself right after its N-th durable step (a change to the real
/// folder, a commit's "applied" record, an overlay removal). Unset in production, where this is
/// one cached environment lookup.
pub fn test_kill_point() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    static DONE: AtomicU64 = AtomicU64::new(0);
    let after = AFTER.get_or_init(|| {
        std::env::var("VEILFS_TEST_KILL_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = after
        && DONE.fetch_add(1, Ordering::Relaxed) + 1 >= *n
    {
        // SIGKILL to this very process, so nothing (no unwinding, no destructor, no core
        // dump) runs after the step, exactly as an external kill.
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// The prefix of every temporary name session `session` makes in the real folder.
pub fn temp_prefix(session: &str) -> String {
    format!(".veilfs-tmp-{session}-")
}

/// A fresh temporary name for session `session` (see [`temp_prefix`]).
pub fn temp_name(session: &str) -> OsString {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!(
        "{}{}-{n}",
        temp_prefix(session),
        std::process::id()
    ))
}

/// Removes the temporary files a killed run of `session` left in the directories `dirs`
/// (relative to `root`; each directory once). Returns the removed paths.
pub fn remove_temps<'p>(
    root: BorrowedFd<'_>,
    dirs: impl IntoIterator<Item = &'p Path>,
    session: &str,
) -> Result<Vec<PathBuf>, RollbackError> {
    use std::os::unix::ffi::OsStrExt;
    let prefix = temp_prefix(session);
    let mut seen = BTreeSet::new();
    let mut removed = Vec::new();
    for dir in dirs {
        if !seen.insert(dir.to_path_buf()) {
            continue;
        }
        let Ok(fd) = backing::open_path(root, dir) else {
            continue; // not there (any more): nothing left in it
        };
        let Ok(entries) = backing::list_dir(fd.as_fd()) else {
            continue; // not a directory
        };
        for e in entries {
            if !e.name.as_bytes().starts_with(prefix.as_bytes()) {
                continue;
            }
            let p = dir.join(&e.name);
            let r = match backing::lookup(fd.as_fd(), &e.name)
                .and_then(|f| backing::stat_fd(f.as_fd()))
            {
                Ok(st) if st.kind() == Kind::Dir => backing::rmdir(fd.as_fd(), &e.name),
                Ok(_) => backing::unlink(fd.as_fd(), &e.name),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => removed.push(p),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(io_at(&p)(e)),
            }
        }
    }
    Ok(removed)
}

fn rekey(times: &mut BTreeMap<PathBuf, Meta>, from: &Path, to: &Path) -> Vec<(PathBuf, Meta)> {
    let keys: Vec<PathBuf> = times.keys().filter(|k| under(k, from)).cloned().collect();
    keys.into_iter()
        .filter_map(|k| {
            let m = times.remove(&k)?;
            let rest = k.strip_prefix(from).ok()?;
            Some((to.join(rest), m))
        })
        .collect()
}

/// A removed or renamed-away path and everything captured below it stop counting as captured
/// (the guard's rule, mirrored so the rollback session can itself be undone).
fn uncapture(captured: &mut BTreeSet<PathBuf>, p: &Path) {
    captured.retain(|c| !under(c, p));
}

impl Applier<'_> {
    fn lookup(&self, path: &Path) -> Result<Option<(OwnedFd, backing::Stat)>, RollbackError> {
        match backing::open_path(self.root.as_fd(), path) {
            Ok(fd) => {
                let st = backing::stat_fd(fd.as_fd()).map_err(io_at(path))?;
                Ok(Some((fd, st)))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(io_at(path)(e)),
        }
    }

    /// Captures `path` in the rollback session before its first change there. The record is
    /// not synced here: [`Applier::durable`] is, before the change it guards, so the captures of
    /// one step (the path, its parent, missing ancestors) and the previous step's `undo` marker
    /// share one fdatasync. A small pre-image travels in the journal (an `Object` record, as
    /// the write path's captures do) and its object file is written without an fsync: an
    /// unended session's objects are rebuilt from those records by every reader, and [`apply`]
    /// flushes the filesystem before it ends the session.
    fn capture(&mut self, w: &SessionWriter, path: &Path) -> Result<(), RollbackError> {
        if self.captured.insert(path.to_path_buf()) {
            let (cur, inline) = State::read_for_capture(self.root.as_fd(), path, self.store)?;
            let object = inline.as_ref().map(|(id, z)| Event::Object {
                id: *id,
                zstd_hex: hex::encode(z),
            });
            let capture = Event::Capture {
                path: path.to_path_buf(),
                before: cur,
            };
            w.append_all_lazy(object.into_iter().chain([capture]))?;
            if let Some((id, z)) = inline {
                self.store.place_lazy(&id, &z)?;
                self.lazy_objects = true;
            }
        }
        Ok(())
    }

    /// Makes every record appended so far durable: called before each change to the real
    /// folder, so the change's captures (and the previous step's marker) are on disk before it.
    /// Free when nothing was appended since the last sync.
    fn durable(&self, w: &SessionWriter) -> Result<(), RollbackError> {
        Ok(w.sync()?)
    }

    /// Remembers the times of the directory holding `path` before we change its entries (and
    /// captures it, so undoing this rollback restores them too).
    fn touch_parent(&mut self, w: &SessionWriter, path: &Path) -> Result<(), RollbackError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if self.times.contains_key(parent) {
            return Ok(());
        }
        if let State::Dir { meta } = State::read(self.root.as_fd(), parent, None)? {
            self.times.insert(parent.to_path_buf(), meta);
            self.capture(w, parent)?;
        }
        Ok(())
    }

    /// Re-creates missing ancestors of `path` from their captured metadata. Needed when the
    /// session removed a directory it had already captured: its only Capture comes before its
    /// children's, so in reverse order the children come first.
    fn ensure_parents(&mut self, w: &SessionWriter, path: &Path) -> Result<(), RollbackError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut missing = Vec::new();
        let mut p = parent;
        while !p.as_os_str().is_empty() && self.lookup(p)?.is_none() {
            missing.push(p.to_path_buf());
            p = p.parent().unwrap_or(Path::new(""));
        }
        for dir in missing.into_iter().rev() {
            self.touch_parent(w, &dir)?;
            self.capture(w, &dir)?;
            self.durable(w)?;
            let (pfd, name) = backing::open_parent(self.root.as_fd(), &dir).map_err(io_at(&dir))?;
            match self.known_dirs.get(&dir).cloned() {
                Some(meta) => {
                    backing::mkdir(pfd.as_fd(), &name, meta.mode & 0o7777).map_err(io_at(&dir))?;
                    let fd = backing::lookup(pfd.as_fd(), &name).map_err(io_at(&dir))?;
                    self.apply_meta(fd.as_fd(), None, &meta, false, &dir)?;
                    self.times.entry(dir.clone()).or_insert(meta);
                }
                // A directory the session created and later removed (its only capture says
                // "absent"): it has to exist again for the steps undone inside it, and the
                // undo of its creation, later in reverse order, removes it again.
                None => backing::mkdir(pfd.as_fd(), &name, 0o700).map_err(io_at(&dir))?,
            }
        }
        Ok(())
    }

    /// The directory-time bookkeeping of one finished step.
    fn bookkeep(&mut self, a: &Action) {
        match a {
            Action::Restore {
                path,
                before: State::Dir { meta },
            } => {
                self.times.insert(path.clone(), meta.clone());
            }
            Action::Restore {
                path,
                before: State::Absent,
            } => self.times.retain(|k, _| !under(k, path)),
            Action::Restore { .. } => {}
            Action::UndoRename { from, to, exchange } => {
                let moved = rekey(&mut self.times, to, from);
                let back = if *exchange {
                    rekey(&mut self.times, from, to)
                } else {
                    vec![]
                };
                self.times.extend(moved);
                self.times.extend(back);
            }
        }
    }

    /// How many of the leading `steps` form a run of removals that can share one journal sync:
    /// each removes (restores as absent) a non-directory that exists now, at a path no other
    /// step of the run names. Their captures and removals do not interact, so capturing all
    /// first and then removing all equals doing them one by one. 0 when fewer than two qualify.
    fn removal_run(&self, steps: &[&Step]) -> Result<usize, RollbackError> {
        let mut seen = BTreeSet::new();
        let mut n = 0;
        for step in steps.iter().take(REMOVAL_RUN_MAX) {
            let Action::Restore {
                path,
                before: State::Absent,
            } = &step.action
            else {
                break;
            };
            if path.as_os_str().is_empty() || !seen.insert(path.as_path()) {
                break;
            }
            match self.lookup(path)? {
                Some((_, st)) if st.kind() != Kind::Dir => n += 1,
                _ => break,
            }
        }
        Ok(if n >= 2 { n } else { 0 })
    }

    /// The first half of a run of removals ([`Applier::removal_run`]): every capture (each path
    /// and its directory), then one sync making them durable before anything is removed.
    fn capture_removals(&mut self, w: &SessionWriter, run: &[&Step]) -> Result<(), RollbackError> {
        for step in run {
            let path = step_path(step);
            self.times.retain(|k, _| !under(k, path));
            self.touch_parent(w, path)?;
            self.capture(w, path)?;
        }
        self.durable(w)
    }

    /// How many of the leading `steps` form a run of files put back: each restores a regular
    /// file, in a directory that exists, at a path that is absent or holds a regular file with
    /// one link and other bytes, and no other step of the run names it. 0 when fewer than two
    /// qualify.
    fn restore_run(&self, steps: &[&Step]) -> Result<usize, RollbackError> {
        if self.staging.is_none() {
            return Ok(0);
        }
        let mut seen = BTreeSet::new();
        let mut n = 0;
        for step in steps.iter().take(REMOVAL_RUN_MAX) {
            let Action::Restore {
                path,
                before: before @ State::File { .. },
            } = &step.action
            else {
                break;
            };
            let parent = path.parent().unwrap_or(Path::new(""));
            if path.as_os_str().is_empty()
                || !seen.insert(path.as_path())
                || !matches!(self.lookup(parent)?, Some((_, st)) if st.kind() == Kind::Dir)
            {
                break;
            }
            match self.lookup(path)? {
                None => {}
                // An edit undone: replaced whole, as a lone step would (one link only: a
                // file with others is rewritten in place, alone).
                Some((fd, st)) if st.kind() == Kind::File && st.nlink == 1 => {
                    let now = State::read_fd(fd.as_fd(), path, None)?;
                    if now.same_content(before) {
                        break; // metadata only: a lone step
                    }
                }
                _ => break,
            }
            n += 1;
        }
        Ok(if n >= 2 { n } else { 0 })
    }

    /// The first half of a run of restores ([`Applier::restore_run`]): every capture (each
    /// path and its directory) made durable by one sync; then each file written under a
    /// temporary name in the store's staging directory with its metadata, and one `syncfs` for
    /// all their bytes, instead of an fsync each. Returns each step's (directory, temporary
    /// name); no path of the run has changed yet. A kill leaves files in the staging directory
    /// only, which the next open of the store removes.
    fn stage_restores(
        &mut self,
        w: &SessionWriter,
        run: &[&Step],
    ) -> Result<Vec<(Rc<OwnedFd>, OsString)>, RollbackError> {
        for step in run {
            let path = step_path(step);
            self.touch_parent(w, path)?;
            self.capture(w, path)?;
        }
        self.durable(w)?;
        let mut staged: Vec<(Rc<OwnedFd>, OsString)> = Vec::new();
        // One descriptor per directory, shared by its files (a run may hold hundreds).
        let mut dirs: HashMap<&Path, Rc<OwnedFd>> = HashMap::new();
        let res = (|| {
            // Any open file of the real folder's filesystem names it to `syncfs`.
            let mut any = None;
            for step in run {
                let Action::Restore {
                    path,
                    before: State::File { hash, meta, .. },
                } = &step.action
                else {
                    unreachable!("restore_run takes regular files only");
                };
                let parent = path.parent().unwrap_or(Path::new(""));
                let pfd = match dirs.get(parent) {
                    Some(d) => d.clone(),
                    None => {
                        let (d, _) =
                            backing::open_parent(self.root.as_fd(), path).map_err(io_at(path))?;
                        let d = Rc::new(d);
                        dirs.insert(parent, d.clone());
                        d
                    }
                };
                let sfd = backing::dup(staging(&self.staging)).map_err(io_at(path))?;
                let tmp = self.temp_name();
                let mut f = backing::create_file(sfd.as_fd(), &tmp, libc::O_WRONLY, 0o600)
                    .map_err(io_at(path))?;
                staged.push((pfd, tmp));
                let (_, tmp) = staged.last().expect("just pushed");
                self.store.restore_into(hash, &mut f)?;
                any = Some(f);
                let tfd = backing::lookup(sfd.as_fd(), tmp).map_err(io_at(path))?;
                self.apply_meta(tfd.as_fd(), Some((sfd.as_fd(), tmp)), meta, true, path)?;
            }
            if self.sync_files
                && let Some(f) = &any
            {
                rustix::fs::syncfs(f).map_err(|e| io_at(Path::new("."))(io::Error::from(e)))?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            for (_, tmp) in &staged {
                let _ = backing::unlink(staging(&self.staging), tmp);
            }
            return Err(e);
        }
        Ok(staged)
    }

    /// The second half: one staged file of the run moved to its name (replacing what is there,
    /// captured already).
    fn place_staged(
        &mut self,
        step: &Step,
        (pfd, tmp): (Rc<OwnedFd>, OsString),
    ) -> Result<(), RollbackError> {
        let path = step_path(step);
        let name = path.file_name().unwrap_or_default();
        let sfd = staging(&self.staging);
        if let Err(e) = backing::rename(sfd, &tmp, pfd.as_fd(), name, 0) {
            let _ = backing::unlink(sfd, &tmp);
            return Err(io_at(path)(e));
        }
        self.report.restored += 1;
        Ok(())
    }

    /// The second half: one removal of the run, its capture durable already.
    fn remove_captured(&mut self, step: &Step) -> Result<(), RollbackError> {
        let path = step_path(step);
        self.restore(path, &State::Absent)?;
        uncapture(&mut self.captured, path);
        Ok(())
    }

    fn step(&mut self, w: &SessionWriter, step: &Step) -> Result<(), RollbackError> {
        match &step.action {
            Action::Restore { path, before } => {
                if let State::Dir { meta } = before {
                    self.times.insert(path.clone(), meta.clone());
                }
                let now = State::read(self.root.as_fd(), path, None)?;
                if *before == State::Absent {
                    self.times.retain(|k, _| !under(k, path));
                }
                if now == *before || (now.same_content(before) && meta_eq(&now, before)) {
                    self.report.unchanged += 1;
                    return Ok(());
                }
                if *before != State::Absent {
                    self.ensure_parents(w, path)?;
                }
                if !(now == State::Absent && *before == State::Absent) {
                    self.touch_parent(w, path)?;
                }
                self.capture(w, path)?;
                self.durable(w)?;
                self.restore(path, before)?;
                if *before == State::Absent {
                    uncapture(&mut self.captured, path);
                }
            }
            Action::UndoRename { from, to, exchange } => {
                let f = self.lookup(from)?;
                let t = self.lookup(to)?;
                let flags = if *exchange {
                    libc::RENAME_EXCHANGE
                } else {
                    libc::RENAME_NOREPLACE
                };
                let go = if *exchange {
                    f.is_some() && t.is_some()
                } else {
                    f.is_none() && t.is_some()
                };
                if !go {
                    if f.is_none() && t.is_none() {
                        self.report.warnings.push(format!(
                            "rename {} -> {}: neither exists; skipped",
                            to.display(),
                            from.display()
                        ));
                    }
                    if !*exchange && f.is_some() && t.is_none() {
                        // Done before a crash, or never happened: either way nothing is at
                        // `to`, so what we track there belongs at `from`.
                        self.bookkeep(&step.action);
                    }
                    self.report.unchanged += 1;
                    return Ok(());
                }
                // The session may have removed the directory it moved `from` out of (`mv P/f g;
                // rmdir P`): that directory's own restore comes later in reverse order, so
                // re-create it (and any missing ancestor) from its captured metadata first.
                self.ensure_parents(w, from)?;
                if *exchange {
                    self.ensure_parents(w, to)?;
                }
                self.touch_parent(w, to)?;
                self.touch_parent(w, from)?;
                for (p, st) in [(to, &t), (from, &f)] {
                    if let Some((_, s)) = st
                        && s.kind() == Kind::File
                    {
                        self.capture(w, p)?;
                    }
                }
                w.append(Event::Rename {
                    from: to.clone(),
                    to: from.clone(),
                    exchange: *exchange,
                })?;
                let (tp, tn) = backing::open_parent(self.root.as_fd(), to).map_err(io_at(to))?;
                let (fp, fname) =
                    backing::open_parent(self.root.as_fd(), from).map_err(io_at(from))?;
                backing::rename(tp.as_fd(), &tn, fp.as_fd(), &fname, flags).map_err(io_at(to))?;
                uncapture(&mut self.captured, to);
                uncapture(&mut self.captured, from);
                self.bookkeep(&step.action);
                self.report.renamed += 1;
            }
        }
        Ok(())
    }

    fn restore(&mut self, path: &Path, before: &State) -> Result<(), RollbackError> {
        if path.as_os_str().is_empty() {
            // The scope root: only its metadata can be restored.
            if let State::Dir { meta } = before {
                let r = backing::dup(self.root.as_fd()).map_err(io_at(path))?;
                self.apply_meta(r.as_fd(), None, meta, false, path)?;
                self.report.restored += 1;
            }
            return Ok(());
        }
        let (parent, name) =
            backing::open_parent(self.root.as_fd(), path).map_err(|e| RollbackError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(e.kind(), format!("parent directory: {e}")),
            })?;
        let cur = match backing::lookup(parent.as_fd(), &name) {
            Ok(fd) => {
                let st = backing::stat_fd(fd.as_fd()).map_err(io_at(path))?;
                Some((fd, st))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(io_at(path)(e)),
        };
        let pfd = parent.as_fd();
        match before {
            State::Absent => {
                if let Some((_, st)) = cur {
                    if st.kind() == Kind::Dir
                        && backing::list_dir(pfd)
                            .ok()
                            .and_then(|_| backing::lookup(pfd, &name).ok())
                            .and_then(|fd| backing::list_dir(fd.as_fd()).ok())
                            .is_some_and(|entries| !entries.is_empty())
                    {
                        // Entries no record names: another program's, or ones the session
                        // made in a directory it made, whose records an OS crash may have
                        // lost (the guard does not wait for those, see `Guard::made_dir`).
                        // Either way the folder must lose the directory and keep the bytes.
                        let w = match self.set_aside(pfd, &name) {
                            Ok(to) => {
                                self.report.removed += 1;
                                format!(
                                    "{}: directory created by the session held entries no record names; moved whole to {}",
                                    path.display(),
                                    to.display()
                                )
                            }
                            Err(e) => format!(
                                "{}: directory created by the session is not empty and cannot be moved into the store ({e}); left in place",
                                path.display()
                            ),
                        };
                        self.report.warnings.push(w);
                        return Ok(());
                    }
                    self.remove(pfd, &name, st.kind(), path)?;
                    self.report.removed += 1;
                }
            }
            State::Dir { meta } => {
                let fd = match cur {
                    Some((fd, st)) if st.kind() == Kind::Dir => fd,
                    other => {
                        if let Some((_, st)) = other {
                            self.remove(pfd, &name, st.kind(), path)?;
                        }
                        backing::mkdir(pfd, &name, meta.mode & 0o7777).map_err(io_at(path))?;
                        backing::lookup(pfd, &name).map_err(io_at(path))?
                    }
                };
                self.apply_meta(fd.as_fd(), None, meta, false, path)?;
                self.report.restored += 1;
            }
            State::File { hash, meta, .. } => {
                if let Some((fd, st)) = &cur
                    && st.kind() == Kind::File
                    && State::read_fd(fd.as_fd(), path, None)?.object() == Some(hash)
                {
                    self.apply_meta(fd.as_fd(), Some((pfd, &name)), meta, true, path)?;
                    self.report.restored += 1;
                    return Ok(());
                }
                let tmp = self.temp_name();
                let mut f =
                    backing::create_file(pfd, &tmp, libc::O_WRONLY, 0o600).map_err(io_at(path))?;
                let filled = self
                    .store
                    .restore_into(hash, &mut f)
                    .map_err(RollbackError::from)
                    .and_then(|_| {
                        if self.sync_files {
                            f.sync_all().map_err(io_at(path))
                        } else {
                            Ok(())
                        }
                    });
                drop(f);
                // A file with other hard links is restored in place, so every name sees the
                // restored bytes (a rename would leave the other names with the session's).
                if let Some((fd, st)) = &cur
                    && st.kind() == Kind::File
                    && st.nlink > 1
                    && self.in_place_links
                {
                    let done = filled.and_then(|_| {
                        let tfd = backing::lookup(pfd, &tmp).map_err(io_at(path))?;
                        let mut src =
                            backing::reopen(tfd.as_fd(), libc::O_RDONLY).map_err(io_at(path))?;
                        let mut dst = backing::reopen(fd.as_fd(), libc::O_WRONLY | libc::O_TRUNC)
                            .map_err(io_at(path))?;
                        io::copy(&mut src, &mut dst).map_err(io_at(path))?;
                        if self.sync_files {
                            dst.sync_all().map_err(io_at(path))?;
                        }
                        self.apply_meta(fd.as_fd(), Some((pfd, &name)), meta, true, path)
                    });
                    let _ = backing::unlink(pfd, &tmp);
                    done?;
                    self.report.restored += 1;
                    return Ok(());
                }
                let done = filled.and_then(|_| {
                    let tfd = backing::lookup(pfd, &tmp).map_err(io_at(path))?;
                    self.apply_meta(tfd.as_fd(), Some((pfd, &tmp)), meta, true, path)?;
                    if let Some((_, st)) = &cur
                        && st.kind() == Kind::Dir
                    {
                        backing::rmdir(pfd, &name).map_err(io_at(path))?;
                    }
                    backing::rename(pfd, &tmp, pfd, &name, 0).map_err(io_at(path))
                });
                if let Err(e) = done {
                    let _ = backing::unlink(pfd, &tmp);
                    return Err(e);
                }
                self.report.restored += 1;
            }
            State::Symlink { target, meta } => {
                if let Some((fd, st)) = &cur
                    && st.kind() == Kind::Symlink
                    && backing::readlink_fd(fd.as_fd()).ok().as_deref() == Some(target.as_os_str())
                {
                    self.apply_meta(fd.as_fd(), Some((pfd, &name)), meta, true, path)?;
                    self.report.restored += 1;
                    return Ok(());
                }
                let tmp = self.temp_name();
                backing::symlink(pfd, &tmp, target.as_os_str()).map_err(io_at(path))?;
                self.replace_with(pfd, &tmp, &name, cur.map(|c| c.1.kind()), meta, path)?;
            }
            State::Special { rdev, meta } => {
                if let Some((fd, st)) = &cur
                    && st.kind() == Kind::from_mode(meta.mode)
                    && st.rdev == *rdev
                {
                    self.apply_meta(fd.as_fd(), Some((pfd, &name)), meta, true, path)?;
                    self.report.restored += 1;
                    return Ok(());
                }
                let tmp = self.temp_name();
                backing::mknod(pfd, &tmp, meta.mode, *rdev).map_err(io_at(path))?;
                self.replace_with(pfd, &tmp, &name, cur.map(|c| c.1.kind()), meta, path)?;
            }
        }
        Ok(())
    }

    /// Moves the freshly made `tmp` over `name` (removing an empty directory there first).
    fn replace_with(
        &mut self,
        pfd: BorrowedFd<'_>,
        tmp: &OsStr,
        name: &OsStr,
        cur: Option<Kind>,
        meta: &Meta,
        path: &Path,
    ) -> Result<(), RollbackError> {
        let res = (|| {
            let tfd = backing::lookup(pfd, tmp).map_err(io_at(path))?;
            self.apply_meta(tfd.as_fd(), Some((pfd, tmp)), meta, true, path)?;
            if cur == Some(Kind::Dir) {
                backing::rmdir(pfd, name).map_err(io_at(path))?;
            }
            backing::rename(pfd, tmp, pfd, name, 0).map_err(io_at(path))
        })();
        if let Err(e) = res {
            let _ = backing::unlink(pfd, tmp);
            return Err(e);
        }
        self.report.restored += 1;
        Ok(())
    }

    fn remove(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        kind: Kind,
        path: &Path,
    ) -> Result<(), RollbackError> {
        if kind == Kind::Dir {
            backing::rmdir(pfd, name).map_err(|e| RollbackError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(
                    e.kind(),
                    format!("cannot remove directory the session created: {e}"),
                ),
            })
        } else {
            backing::unlink(pfd, name).map_err(io_at(path))
        }
    }

    /// Moves `name` (beneath `pfd`) into the store, `set-aside/<rollback session>/<n>-<name>`,
    /// by one rename: the store must be on the real folder's filesystem (EXDEV otherwise).
    /// Nothing else in the store reads it: it is the user's to look through and delete.
    fn set_aside(&mut self, pfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<PathBuf> {
        let dir = self.store.dir().join("set-aside").join(&self.session);
        std::fs::create_dir_all(&dir)?;
        let dfd = backing::open_root(&dir)?;
        // Numbered by the warning that will name it: unique in this rollback session.
        let mut to = OsString::from(self.report.warnings.len().to_string());
        if name.len() < 200 {
            to.push("-");
            to.push(name);
        }
        backing::rename(pfd, name, dfd.as_fd(), &to, libc::RENAME_NOREPLACE)?;
        Ok(dir.join(to))
    }

    /// A fresh temporary name in the real folder, `.veilfs-tmp-<session>-<pid>-<n>`: a kill can
    /// leave one behind, and the session's id in it is how a resumed rollback or commit finds
    /// and removes it ([`remove_temps`]).
    fn temp_name(&self) -> OsString {
        temp_name(&self.session)
    }

    /// Applies owner, mode, xattrs and (if `times`) atime/mtime. `at` is (parent, name) for
    /// setting times without following a symlink.
    fn apply_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        at: Option<(BorrowedFd<'_>, &OsStr)>,
        meta: &Meta,
        times: bool,
        path: &Path,
    ) -> Result<(), RollbackError> {
        let st = backing::stat_fd(fd).map_err(io_at(path))?;
        if (st.uid != meta.uid || st.gid != meta.gid)
            && let Err(e) = backing::chown(fd, meta.uid, meta.gid)
        {
            self.report.warnings.push(format!(
                "{}: cannot restore owner {}:{}: {e}",
                path.display(),
                meta.uid,
                meta.gid
            ));
        }
        let kind = st.kind();
        if kind != Kind::Symlink {
            // After chown, which may clear setuid bits.
            let st = backing::stat_fd(fd).map_err(io_at(path))?;
            if st.perm() != meta.mode & 0o7777 || st.uid != meta.uid {
                backing::chmod(fd, meta.mode & 0o7777).map_err(io_at(path))?;
            }
        }
        if matches!(kind, Kind::File | Kind::Dir) {
            let have = backing::all_xattrs(fd).map_err(io_at(path))?;
            let want: BTreeMap<&str, Vec<u8>> = meta
                .xattrs
                .iter()
                .map(|(n, v)| (n.as_str(), hex::decode(v).unwrap_or_default()))
                .collect();
            for (n, v) in &have {
                let key = n.to_string_lossy();
                if !want.contains_key(key.as_ref())
                    && let Err(e) = backing::removexattr(fd, n)
                {
                    self.report.warnings.push(format!(
                        "{}: cannot remove xattr {key}: {e}",
                        path.display()
                    ));
                }
                let _ = v;
            }
            for (n, v) in &want {
                let same = have
                    .iter()
                    .any(|(hn, hv)| hn.to_string_lossy() == *n && hv == v);
                if !same && let Err(e) = backing::setxattr(fd, OsStr::new(n), v, 0) {
                    self.report
                        .warnings
                        .push(format!("{}: cannot restore xattr {n}: {e}", path.display()));
                }
            }
        }
        if times {
            let (a, m) = (
                SetTime::At(meta.atime.0, meta.atime.1),
                SetTime::At(meta.mtime.0, meta.mtime.1),
            );
            match at {
                Some((p, n)) => backing::utimens_at(p, n, a, m),
                None => backing::utimens_fd(fd, a, m),
            }
            .map_err(io_at(path))?;
        }
        Ok(())
    }
}

/// Metadata equal as far as a restore cares (kind-specific: no mode for symlinks, no times for
/// directories, which are restored at the end anyway).
fn meta_eq(now: &State, before: &State) -> bool {
    let (Some(a), Some(b)) = (now.meta(), before.meta()) else {
        return now == before;
    };
    let base = a.uid == b.uid && a.gid == b.gid && a.xattrs == b.xattrs;
    match before {
        State::Dir { .. } => base && a.mode == b.mode,
        State::Symlink { .. } => base && a.mtime == b.mtime,
        _ => base && a.mode == b.mode && a.mtime == b.mtime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const FILES: usize = 40;

    /// A new snapshot session of `scope` in `store`.
    fn snapshot_session(store: &Store, scope: &Path) -> SessionWriter {
        store
            .new_session(Event::SessionStart {
                scope: scope.to_path_buf(),
                mode: "snapshot".into(),
                profile: String::new(),
                pid: 0,
                user: current_uid(),
            })
            .unwrap()
    }

    /// A finished session that created `d/` and `FILES` small files in it, with their captures;
    /// returns (tempdir, scope, store).
    fn created_files_session() -> (tempfile::TempDir, PathBuf, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let scope = tmp.path().join("scope");
        fs::create_dir_all(&scope).unwrap();
        fs::write(scope.join("keep"), "kept before\n").unwrap();
        let store = Store::create_or_open(&tmp.path().join("store")).unwrap();
        let w = snapshot_session(&store, &scope);
        w.append(Event::Capture {
            path: "d".into(),
            before: State::Absent,
        })
        .unwrap();
        fs::create_dir(scope.join("d")).unwrap();
        for i in 0..FILES {
            let p = PathBuf::from(format!("d/f{i}"));
            w.append(Event::Capture {
                path: p.clone(),
                before: State::Absent,
            })
            .unwrap();
            fs::write(scope.join(&p), format!("made by the session {i}\n")).unwrap();
        }
        w.append(Event::SessionEnd).unwrap();
        (tmp, scope, store)
    }

    /// Putting back many removed files costs a handful of journal syncs too (their captures,
    /// absent, share one), and their bytes one `syncfs` per run instead of an fsync each.
    #[test]
    fn restoring_removed_files_shares_journal_syncs() {
        restoring_files_shares_journal_syncs(false);
    }

    /// The same for files the session rewrote: put back over the session's bytes.
    #[test]
    fn restoring_edited_files_shares_journal_syncs() {
        restoring_files_shares_journal_syncs(true);
    }

    fn restoring_files_shares_journal_syncs(edit: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let scope = tmp.path().join("scope");
        fs::create_dir_all(scope.join("d")).unwrap();
        let store = Store::create_or_open(&tmp.path().join("store")).unwrap();
        let root = backing::open_root(&scope).unwrap();
        let w = snapshot_session(&store, &scope);
        for i in 0..FILES {
            let p = PathBuf::from(format!("d/f{i}"));
            fs::write(scope.join(&p), format!("removed by the session {i}\n")).unwrap();
            let before = State::read(root.as_fd(), &p, Some(&store)).unwrap();
            w.append(Event::Capture { path: p, before }).unwrap();
            if edit {
                fs::write(scope.join(format!("d/f{i}")), format!("agent {i}\n")).unwrap();
            } else {
                fs::remove_file(scope.join(format!("d/f{i}"))).unwrap();
            }
        }
        w.append(Event::SessionEnd).unwrap();
        drop(w);
        let ids = select_sessions(&store, &[], None).unwrap();
        let p = plan(&store, &ids, &[]).unwrap();
        let r = apply(&store, &p, false, &|_| {}).unwrap();
        assert_eq!(r.restored, FILES, "{r:?}");
        assert!(r.journal_syncs <= 8, "{} journal syncs", r.journal_syncs);
        assert_eq!(
            fs::read_to_string(scope.join("d/f9")).unwrap(),
            "removed by the session 9\n"
        );
        // No temporary name is left behind.
        assert_eq!(names(&scope.join("d")).len(), FILES);
    }

    fn names(dir: &Path) -> BTreeSet<OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    /// Undoing the creation of many small files costs a handful of journal syncs, not two per
    /// file: their captures share one sync before the removals, each pre-image travels in the
    /// journal (no object fsyncs), and the `undo` markers wait for the next sync. The rollback
    /// can itself be rolled back.
    #[test]
    fn removing_created_files_shares_journal_syncs() {
        let (_tmp, scope, store) = created_files_session();
        let ids = select_sessions(&store, &[], None).unwrap();
        let p = plan(&store, &ids, &[]).unwrap();
        let r = apply(&store, &p, false, &|_| {}).unwrap();
        assert_eq!(r.removed, FILES + 1, "{r:?}");
        assert_eq!(names(&scope), BTreeSet::from([OsString::from("keep")]));
        assert!(
            r.journal_syncs <= 8,
            "{} journal syncs for {FILES} removed files",
            r.journal_syncs
        );
        // The pre-images are journalled inline, and their object files are whole.
        let undo = store.load_session(&r.undo_sessions[0]).unwrap();
        let objects = undo
            .records
            .iter()
            .filter(|r| matches!(r.event, Event::Object { .. }))
            .count();
        assert_eq!(objects, FILES, "{:#?}", undo.records);
        // Undoing the rollback brings every file back.
        let p = plan(&store, &r.undo_sessions, &[]).unwrap();
        apply(&store, &p, false, &|_| {}).unwrap();
        assert_eq!(names(&scope.join("d")).len(), FILES);
        assert_eq!(
            fs::read_to_string(scope.join("d/f7")).unwrap(),
            "made by the session 7\n"
        );
    }
}
