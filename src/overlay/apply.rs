//! Applying a commit plan to the real folder: journaled first (so an interrupted commit can
//! be resumed or aborted), then step by step, then the upper layer cleaned.

use super::*;

/// The op of the durable record that names a commit's journaled plan (a store object).
pub(super) const PLAN_OP: &str = "commit-plan";
/// The op of the durable record written once every step of a commit is applied (only the
/// overlay clean-up remains; from then on the commit can only be finished, not aborted).
pub(super) const APPLIED_OP: &str = "commit-applied";
pub(super) const ABORTED_OP: &str = "commit-aborted";

/// A commit's plan as journaled before its first change.
#[derive(Serialize, Deserialize)]
pub(super) struct JournaledPlan {
    force: bool,
    plan: CommitPlan,
}

/// A commit whose process died before it finished (found by `commit`, `log` and `mount`).
#[derive(Debug, Clone)]
pub(crate) struct PendingCommit {
    pub session: String,
    pub scope: PathBuf,
    /// Every step was applied; only the overlay clean-up is left.
    pub applied: bool,
    plan: crate::store::ObjectId,
}

impl PendingCommit {
    /// What an admin reads: what happened and the two commands that end it.
    pub(crate) fn describe(&self, store_dir: &Path) -> String {
        let s = store_dir.display();
        if self.applied {
            format!(
                "commit session {} into {} was interrupted after applying every change, while cleaning the overlay: finish it with `veilfs commit --store {s}`",
                self.session,
                self.scope.display()
            )
        } else {
            format!(
                "commit session {} into {} was interrupted part-way (the real folder holds part of it): finish it with `veilfs commit --store {s}`, or undo what it applied with `veilfs commit --store {s} --abort`",
                self.session,
                self.scope.display()
            )
        }
    }
}

/// The interrupted commit in `store`, if any: a commit session that journaled its plan, did
/// not end, and that no process is writing any more.
pub(crate) fn pending_commit(store: &Store) -> Result<Option<PendingCommit>> {
    let infos = store.sessions()?;
    // A crashed commit someone rolled back with `veilfs rollback` is settled too.
    let undone: HashSet<String> = infos.iter().filter_map(|i| i.undo_of.clone()).collect();
    for info in infos.into_iter().rev() {
        if info.mode != "commit"
            || info.ended
            || info.problem.is_some()
            || undone.contains(&info.id)
        {
            continue;
        }
        if store.session_is_live(&info.id)? {
            continue;
        }
        let log = store.load_session(&info.id)?;
        let mut plan = None;
        let mut applied = false;
        for r in &log.records {
            if let Event::Change { op, .. } = &r.event {
                if let Some(id) = op.strip_prefix(PLAN_OP).map(str::trim) {
                    plan = id.parse().ok();
                } else if op == APPLIED_OP {
                    applied = true;
                }
            }
        }
        // Without a journaled plan nothing was changed yet (killed while planning) or the
        // session predates resumable commits: nothing can be resumed from it.
        if let Some(plan) = plan {
            return Ok(Some(PendingCommit {
                session: info.id,
                scope: info.scope,
                applied,
                plan,
            }));
        }
    }
    Ok(None)
}

pub(super) fn kill_point() {
    rollback::test_kill_point();
}

/// Applies a plan as a resumable transaction. The plan (with `force`) is stored as an object
/// and named by a durable record of a new journal session (mode "commit") before the first
/// change; every affected path's pre-image (and its parent's) is captured and fsync'd before
/// its change, so `veilfs rollback --session <it>` undoes the commit. Committed entries are
/// then removed from the upper layer. A commit killed at any point is found by
/// [`pending_commit`] and ended by [`resume_commit`] (all applied) or [`abort_commit`] (none).
/// Refuses while the overlay is mounted, and while an interrupted commit is pending.
pub(crate) fn apply_commit(
    store_dir: &Path,
    store: &Store,
    plan: &CommitPlan,
    force: bool,
) -> Result<CommitReport> {
    let _lock = exclusive(store_dir, "commit")?;
    if let Some(p) = pending_commit(store)? {
        return Err(OverlayError::Refused(p.describe(store_dir)));
    }
    let w = store.new_session(Event::SessionStart {
        scope: plan.scope.clone(),
        mode: "commit".into(),
        profile: String::new(),
        pid: std::process::id(),
        user: std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX),
    })?;
    let journaled = serde_json::to_vec(&JournaledPlan {
        force,
        plan: CommitPlan {
            scope: plan.scope.clone(),
            upper: plan.upper.clone(),
            steps: plan.steps.clone(),
            units: plan.units.clone(),
            warnings: plan.warnings.clone(),
            origins: plan.origins.clone(),
            replacing: plan.replacing.clone(),
            index: plan.index.clone(),
        },
    })
    .map_err(|source| OverlayError::Plan {
        session: w.id().to_string(),
        source,
    })?;
    let obj = store.put_bytes(&journaled)?;
    w.append(Event::Change {
        path: PathBuf::new(),
        op: format!("{PLAN_OP} {obj}"),
    })?;
    run_commit(store_dir, store, plan, force, &w, HashSet::new(), false)
}

/// Finishes an interrupted commit exactly as planned: every step again (each is idempotent:
/// a path already in its target state is left alone), the overlay clean-up, the end record.
/// Temporary files the killed process left in the real folder are removed first.
pub(crate) fn resume_commit(
    store_dir: &Path,
    store: &Store,
    pending: &PendingCommit,
) -> Result<CommitReport> {
    let _lock = exclusive(store_dir, "commit")?;
    let JournaledPlan { force, plan } = load_plan(store, pending)?;
    let log = store.load_session(&pending.session)?;
    let captured: HashSet<PathBuf> = log
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Capture { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let w = store.reopen_session(&pending.session)?;
    let root = backing::open_root(&plan.scope).io("scope", &plan.scope)?;
    let dirs: Vec<&Path> = plan.steps.iter().filter_map(|s| s.path.parent()).collect();
    rollback::remove_temps(root.as_fd(), dirs, &pending.session)?;
    w.append(Event::Change {
        path: PathBuf::new(),
        op: "commit-resumed".into(),
    })?;
    run_commit(
        store_dir,
        store,
        &plan,
        force,
        &w,
        captured,
        pending.applied,
    )
}

/// Undoes what an interrupted commit applied (a rollback of its session) and ends it, leaving
/// the overlay as it was: the state before the commit. Refused once every change was applied
/// (the overlay may already be partly cleaned: only finishing is safe then).
pub(crate) fn abort_commit(
    store_dir: &Path,
    store: &Store,
    pending: &PendingCommit,
) -> Result<rollback::Report> {
    let _lock = exclusive(store_dir, "commit --abort")?;
    if pending.applied {
        return Err(OverlayError::Refused(format!(
            "cannot abort: {}",
            pending.describe(store_dir)
        )));
    }
    let JournaledPlan { plan, .. } = load_plan(store, pending)?;
    let root = backing::open_root(&plan.scope).io("scope", &plan.scope)?;
    let dirs: Vec<&Path> = plan.steps.iter().filter_map(|s| s.path.parent()).collect();
    rollback::remove_temps(root.as_fd(), dirs, &pending.session)?;
    let rplan = rollback::plan(store, std::slice::from_ref(&pending.session), &[])?;
    // The commit's own post-images are what is on disk; anything else is someone's change,
    // which the rollback captures before overwriting (it can be undone too).
    let report = rollback::apply(store, &rplan, true, &|_| {})?;
    let w = store.reopen_session(&pending.session)?;
    w.append(Event::Change {
        path: PathBuf::new(),
        op: ABORTED_OP.into(),
    })?;
    w.append(Event::SessionEnd)?;
    Ok(report)
}

pub(super) fn load_plan(store: &Store, pending: &PendingCommit) -> Result<JournaledPlan> {
    let bytes = store.read_bytes(&pending.plan)?;
    serde_json::from_slice(&bytes).map_err(|source| OverlayError::Plan {
        session: pending.session.clone(),
        source,
    })
}

pub(super) fn run_commit(
    store_dir: &Path,
    store: &Store,
    plan: &CommitPlan,
    force: bool,
    w: &crate::journal::SessionWriter,
    mut captured: HashSet<PathBuf>,
    already_applied: bool,
) -> Result<CommitReport> {
    let mut report = CommitReport {
        warnings: plan.warnings.clone(),
        ..CommitReport::default()
    };
    for u in &plan.units {
        if !u.selected {
            continue;
        }
        if let Some(r) = &u.refused {
            report.refused.push(r.clone());
        } else if let Some(c) = &u.conflict
            && !force
        {
            report.skipped_conflicts.push(c.clone());
        }
    }
    let root = backing::open_root(&plan.scope).io("scope", &plan.scope)?;
    report.session = w.id().to_string();
    let capture = |captured: &mut HashSet<PathBuf>, p: &Path| -> Result<()> {
        if captured.insert(p.to_path_buf()) {
            let before = State::read(root.as_fd(), p, Some(store))?;
            w.append(Event::Capture {
                path: p.to_path_buf(),
                before,
            })?;
        }
        Ok(())
    };
    let capture_with_parent = |captured: &mut HashSet<PathBuf>, p: &Path| -> Result<()> {
        if let Some(parent) = p.parent() {
            capture(captured, parent)?;
        }
        capture(captured, p)
    };
    let mut applied = vec![false; plan.units.len()];
    for (i, u) in plan.units.iter().enumerate() {
        applied[i] = u.selected && u.refused.is_none() && (force || u.conflict.is_none());
    }
    // Steps run in chunks: first the pre-images of every path a chunk may change are captured
    // as one batch (objects flushed with one syncfs, then the journal with one fsync), then the
    // chunk's changes run. A path a step finds uncaptured then (one a delete earlier in the
    // chunk emptied) is captured on its own, durably, as before.
    const CHUNK: usize = 512;
    let steps: &[Step] = if already_applied { &[] } else { &plan.steps };
    for (k, step) in steps.iter().enumerate() {
        if k % CHUNK == 0 {
            store.defer_sync();
            let batch: Result<()> = (|| {
                for s in steps[k..].iter().take(CHUNK).filter(|s| applied[s.unit]) {
                    for q in s.path.parent().into_iter().chain([s.path.as_path()]) {
                        if captured.insert(q.to_path_buf()) {
                            let before = State::read(root.as_fd(), q, Some(store))?;
                            w.append_lazy(Event::Capture {
                                path: q.to_path_buf(),
                                before,
                            })?;
                        }
                    }
                }
                Ok(())
            })();
            store.flush()?;
            batch?;
            w.sync()?;
        }
        if !applied[step.unit] {
            continue;
        }
        let p = &step.path;
        let mut changed = false;
        let res: Result<()> = (|| {
            match &step.op {
                Op::Put {
                    target, in_place, ..
                } => {
                    let in_place = *in_place;
                    let now = State::read(root.as_fd(), p, None)?;
                    if now.same_content(target) && meta_same(&now, target) {
                        report.unchanged += 1;
                        return Ok(());
                    }
                    if let State::File { hash, .. } = target
                        && !store.has(hash)
                    {
                        return Err(OverlayError::MissingContent {
                            path: p.clone(),
                            hash: *hash,
                        });
                    }
                    capture_with_parent(&mut captured, p)?;
                    let warns =
                        rollback::put_state_with(store, root.as_fd(), p, target, in_place, w.id())?;
                    report.warnings.extend(warns);
                    report.changed += 1;
                    changed = true;
                }
                Op::Delete { .. } => {
                    let Ok((pfd, name)) = backing::open_parent(root.as_fd(), p) else {
                        return Ok(());
                    };
                    let Ok(fd) = backing::lookup(pfd.as_fd(), &name) else {
                        return Ok(());
                    };
                    let kind = backing::stat_fd(fd.as_fd())?.kind();
                    capture_with_parent(&mut captured, p)?;
                    if kind == Kind::Dir {
                        backing::rmdir(pfd.as_fd(), &name)
                    } else {
                        backing::unlink(pfd.as_fd(), &name)
                    }
                    .io("delete", p)?;
                    captured.retain(|c| !c.starts_with(p));
                    report.changed += 1;
                    changed = true;
                }
                Op::Link { to, .. } => {
                    let src = backing::open_path(root.as_fd(), to).io("link source", to)?;
                    let (pfd, name) = backing::open_parent(root.as_fd(), p)?;
                    if let Ok(cur) = backing::lookup(pfd.as_fd(), &name) {
                        let (a, b) = (
                            backing::stat_fd(cur.as_fd())?,
                            backing::stat_fd(src.as_fd())?,
                        );
                        if (a.dev, a.ino) == (b.dev, b.ino) {
                            report.unchanged += 1;
                            return Ok(());
                        }
                    }
                    capture_with_parent(&mut captured, p)?;
                    let tmp = rollback::temp_name(w.id());
                    backing::link(src.as_fd(), pfd.as_fd(), &tmp)?;
                    if let Err(e) = backing::rename(pfd.as_fd(), &tmp, pfd.as_fd(), &name, 0) {
                        let _ = backing::unlink(pfd.as_fd(), &tmp);
                        return Err(e).io("link", p);
                    }
                    report.changed += 1;
                    changed = true;
                }
                Op::DirTimes { meta } => {
                    if p.as_os_str().is_empty() {
                        return Ok(());
                    }
                    let Ok(fd) = backing::open_path(root.as_fd(), p) else {
                        return Ok(()); // not created (a skipped unit below it)
                    };
                    let st = backing::stat_fd(fd.as_fd())?;
                    if st.kind() == Kind::Dir && st.mtime != meta.mtime {
                        capture_with_parent(&mut captured, p)?;
                        backing::utimens_fd(
                            fd.as_fd(),
                            SetTime::At(meta.atime.0, meta.atime.1),
                            SetTime::At(meta.mtime.0, meta.mtime.1),
                        )?;
                        changed = true;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            // The session stays open (not ended): it is the interrupted commit that the next
            // `veilfs commit` finishes, or `--abort` undoes.
            let _ = w.append(Event::Change {
                path: p.clone(),
                op: format!("commit failed: {}", crate::error::chain(&e)),
            });
            return Err(OverlayError::CommitStopped {
                path: p.clone(),
                session: w.id().to_string(),
                store: store_dir.to_path_buf(),
                source: Box::new(e),
            });
        }
        if !matches!(step.op, Op::DirTimes { .. })
            && captured.contains(p)
            && let Ok(after) = State::read(root.as_fd(), p, None)
        {
            // Not fsync'd on its own: the next capture (or the "applied" record) makes it
            // durable; a post-image lost in a crash only costs a conflict check.
            w.append_lazy(Event::PostImage {
                path: p.clone(),
                after,
            })?;
        }
        if changed {
            kill_point();
        }
    }
    if !already_applied {
        // The restored files were not fsync'd one by one: all of them before "applied", after
        // which the overlay copies go.
        crate::store::syncfs(&plan.scope)?;
        w.append(Event::Change {
            path: PathBuf::new(),
            op: APPLIED_OP.into(),
        })?;
        kill_point();
    }
    // Drop what is now in the real folder from the upper layer, and index entries no upper
    // name links any more (their bytes are in the real inode now).
    clean_upper(plan, &applied)?;
    for (abs, unit) in &plan.index {
        if unit.is_none_or(|u| applied[u]) {
            remove_orphan_index(abs)?;
        }
    }
    w.append(Event::SessionEnd)?;
    Ok(report)
}

/// Removes committed entries from the upper layer: in a directory merged with the real one at
/// the same path, each committed entry; a replacing (opaque, redirected, new) directory only as
/// a whole, once everything in and below it was committed (removing a part would change the
/// merged view).
pub(super) fn clean_upper(plan: &CommitPlan, applied: &[bool]) -> Result<()> {
    let complete = |d: &Path| {
        plan.units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.path.starts_with(d) && !u.path.as_os_str().is_empty())
            .all(|(i, _)| applied[i])
    };
    let unit_of: HashMap<&Path, usize> = plan
        .units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.upper.as_deref().map(|p| (p, i)))
        .collect();
    fn walk(
        plan: &CommitPlan,
        applied: &[bool],
        rel: &Path,
        unit_of: &HashMap<&Path, usize>,
        complete: &dyn Fn(&Path) -> bool,
    ) -> Result<()> {
        let abs = plan.upper.join(rel);
        let mut names: Vec<_> = std::fs::read_dir(&abs)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            let p = rel.join(&n);
            let a = plan.upper.join(&p);
            let Some(&u) = unit_of.get(p.as_path()) else {
                continue; // appeared after planning
            };
            if !applied[u] {
                continue;
            }
            let m = std::fs::symlink_metadata(&a)?;
            if m.is_dir() {
                if plan.replacing.iter().any(|r| r == &p) {
                    if complete(&p) {
                        std::fs::remove_dir_all(&a).io("remove", &a)?;
                        kill_point();
                    }
                    continue;
                }
                walk(plan, applied, &p, unit_of, complete)?;
                let _ = std::fs::remove_dir(&a); // only when empty
            } else {
                std::fs::remove_file(&a).io("remove", &a)?;
                kill_point();
            }
        }
        Ok(())
    }
    walk(plan, applied, Path::new(""), &unit_of, &complete)
}

/// Removes an index entry no upper name links any more (nlink 1: only the index itself).
pub(super) fn remove_orphan_index(abs: &Path) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(abs)
        && m.is_file()
        && m.nlink() == 1
    {
        std::fs::remove_file(abs).io("remove", abs)?;
    }
    Ok(())
}
