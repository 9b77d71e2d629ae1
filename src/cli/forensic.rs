//! Forensic commands over a snapshot store: log, diff, rollback, verify, commit, discard.
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit;
use crate::diff;
use crate::journal::{Event, Record};
use crate::overlay;
use crate::rollback::{self, Action};
use crate::store::Store;
use crate::time::{format_time, parse_time};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct LogArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub json: bool,
}
#[derive(clap::Args, Debug)]
pub(crate) struct DiffArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    pub paths: Vec<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub(crate) struct RollbackArgs {
    #[arg(long)]
    pub store: PathBuf,
    /// Session(s) to undo: repeat the option or separate ids with commas (the "undo with"
    /// hint after a rollback of several sessions lists them so).
    #[arg(long, value_delimiter = ',')]
    pub session: Vec<String>,
    /// RFC 3339 time or unix seconds: undo every session that started at or after it.
    #[arg(long, conflicts_with = "session")]
    pub since: Option<String>,
    /// Undo everything after this checkpoint (its label, or its number: `veilfs log` lists
    /// them): the rest of its session and every later session. With `--session`, the
    /// checkpoint is looked up in that session; otherwise in the newest that has it.
    #[arg(long, conflicts_with = "since")]
    pub to: Option<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub force: bool,
    /// Sign the audit record of this rollback with this Ed25519 key.
    #[arg(long, value_name = "PATH")]
    pub audit_key: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub(crate) struct VerifyArgs {
    #[arg(long)]
    pub store: PathBuf,
    /// Check the audit trail's signatures with this Ed25519 public key (64 hex digits, or a
    /// file of 32 raw bytes or 64 hex digits).
    #[arg(long, value_name = "HEX|PATH")]
    pub audit_pubkey: Option<String>,
    /// Check the audit trail's signatures with the public key of this signing key.
    #[arg(long, value_name = "PATH", conflicts_with = "audit_pubkey")]
    pub audit_key: Option<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub(crate) struct CommitArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub force: bool,
    /// Undo what an interrupted commit applied, instead of finishing it (the overlay keeps
    /// every change).
    #[arg(long, conflicts_with_all = ["dry_run", "force"])]
    pub abort: bool,
    /// Sign the audit record of this commit with this Ed25519 key.
    #[arg(long, value_name = "PATH")]
    pub audit_key: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub(crate) struct DiscardArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    pub paths: Vec<PathBuf>,
}

fn short(h: &str) -> &str {
    h.get(..8).unwrap_or(h)
}

fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {wide_msg:.dim}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

pub(super) fn run_log(a: LogArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&a.store)?;
    if let Some(p) = overlay::pending_commit(&store)? {
        eprintln!("veilfs: warning: {}", p.describe(&a.store));
    }
    let mut out = std::io::stdout().lock();
    match a.session {
        None => {
            for s in store.sessions()? {
                if a.json {
                    writeln!(out, "{}", serde_json::to_string(&s)?)?;
                    continue;
                }
                let status = if s.problem.is_some() {
                    "CORRUPT"
                } else if s.ended {
                    "ended"
                } else if store.session_is_live(&s.id).unwrap_or(false) {
                    "running"
                } else {
                    "crashed"
                };
                let undo = s
                    .undo_of
                    .as_ref()
                    .map(|o| format!("  undo of {o}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  {}  {:<8}  {}  {} captures, {} changes, {} renames  {status}{undo}",
                    s.id,
                    format_time(s.start_ns),
                    s.mode,
                    s.scope.display(),
                    s.captures,
                    s.changes,
                    s.renames
                )?;
                if s.problem.is_none()
                    && let Ok(log) = store.load_session(&s.id)
                    && !crate::checkpoint::checkpoints(&log).is_empty()
                {
                    for (i, t) in crate::checkpoint::turns(&log).iter().enumerate() {
                        let head = match &t.end {
                            Some(c) => format!(
                                "turn {}, up to checkpoint {} at {}",
                                i + 1,
                                c.describe(),
                                format_time(c.time_ns)
                            ),
                            None => format!("after the last checkpoint (turn {})", i + 1),
                        };
                        let mut paths: Vec<String> =
                            t.changed.iter().map(|p| p.display().to_string()).collect();
                        let more = paths.len().saturating_sub(8);
                        paths.truncate(8);
                        writeln!(
                            out,
                            "    {head}: {} path(s) changed{}{}{}",
                            t.changed.len(),
                            if paths.is_empty() { "" } else { ": " },
                            paths.join(", "),
                            if more > 0 {
                                format!(" (+{more} more)")
                            } else {
                                String::new()
                            }
                        )?;
                    }
                }
                if let Some(p) = &s.problem {
                    eprintln!("veilfs: warning: {p}");
                }
                if let Some(t) = &s.tail_warning {
                    eprintln!("veilfs: warning: {t}");
                }
            }
        }
        Some(id) => {
            let log = store.load_session(&id)?;
            if let Some(t) = &log.tail {
                eprintln!("veilfs: warning: {t}");
            }
            for r in &log.records {
                if a.json {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                } else {
                    writeln!(out, "{}", describe_record(r))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_record(r: &Record) -> String {
    let what = match &r.event {
        Event::SessionStart {
            scope,
            mode,
            profile,
            pid,
            user,
        } => format!(
            "start    {} mode={mode} profile={profile} pid={pid} uid={user}",
            scope.display()
        ),
        Event::Capture { path, before } => {
            format!("capture  {}  before: {}", path.display(), before.describe())
        }
        Event::Rename { from, to, exchange } => format!(
            "rename   {} -> {}{}",
            from.display(),
            to.display(),
            if *exchange { " (exchange)" } else { "" }
        ),
        Event::Change { path, op } => format!("{op:<8} {}", path.display()),
        Event::PostImage { path, after } => {
            format!("after    {}  {}", path.display(), after.describe())
        }
        Event::Diverted { path, reason } => {
            format!("diverted {}  ({reason})", path.display())
        }
        Event::Checkpoint { n, label } => format!(
            "checkpoint #{n}{}",
            label
                .as_ref()
                .map(|l| format!(" {l:?}"))
                .unwrap_or_default()
        ),
        Event::Undo { of } => format!("undo     session {of}"),
        Event::Object { id, .. } => format!("object   {} (journalled pre-image)", id.short()),
        Event::SessionEnd => "end".to_string(),
    };
    format!(
        "{}  #{:<4} {}  {what}",
        format_time(r.time_ns),
        r.seq,
        short(&r.prev)
    )
}

pub(super) fn run_diff(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&a.store)?;
    let overlay_session = match &a.session {
        Some(id) => {
            store
                .load_session(id)?
                .start()
                .map(|(_, _, m)| m == "overlay")
                == Some(true)
        }
        None => false,
    };
    if overlay_session || (a.session.is_none() && overlay::has_changes(&a.store)) {
        return overlay_diff(&store, &a);
    }
    let id = match a.session {
        Some(s) => s,
        None => rollback::select_sessions(&store, &[], None)?.remove(0),
    };
    let log = store.load_session(&id)?;
    if let Some(t) = &log.tail {
        eprintln!("veilfs: warning: {t}");
    }
    let (_, scope, _) = log
        .start()
        .with_context(|| format!("{}: no SessionStart", log.path.display()))?;
    let filters: Vec<PathBuf> = a
        .paths
        .iter()
        .map(|p| rollback::normalize_filter(scope, p))
        .collect();
    print_changes(&diff::session_changes(&store, &log, &filters)?)
}

/// What committing the overlay would change in the real folder.
fn overlay_diff(store: &Store, a: &DiffArgs) -> anyhow::Result<ExitCode> {
    let scope = overlay_scope(store, &a.store, a.session.as_deref())?;
    let filters = filters(&scope, &a.paths);
    let (changes, warnings) = diff::overlay_changes(&a.store, &scope, &filters)?;
    for w in &warnings {
        eprintln!("veilfs: warning: {w}");
    }
    print_changes(&changes)
}

fn print_changes(changes: &[diff::Change]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for c in changes {
        writeln!(out, "{c}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_rollback(a: RollbackArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&a.store)?;
    let since = match &a.since {
        Some(s) => Some(parse_time(s).with_context(|| {
            format!("--since {s:?}: expected RFC 3339 (2026-11-25T17:00:00Z) or unix seconds")
        })?),
        None => None,
    };
    let (sessions, cut) = match &a.to {
        Some(spec) => {
            if a.session.len() > 1 {
                anyhow::bail!("--to looks in one session: give at most one --session");
            }
            let cp = crate::checkpoint::find(&store, a.session.first().map(String::as_str), spec)?;
            let start = store.load_session(&cp.session)?.records[0].time_ns;
            let sessions = match rollback::select_sessions(&store, &[], Some(start)) {
                Ok(s) => s,
                Err(rollback::RollbackError::NothingSelected(_)) => vec![cp.session.clone()],
                Err(e) => return Err(e.into()),
            };
            eprintln!(
                "veilfs: rolling back to checkpoint {} of session {}",
                cp.describe(),
                cp.session
            );
            (sessions, Some(cp))
        }
        None => (rollback::select_sessions(&store, &a.session, since)?, None),
    };
    let plan = rollback::plan_after(
        &store,
        &sessions,
        &a.paths,
        cut.as_ref().map(|c| (c.session.as_str(), c.seq)),
    )?;
    for w in &plan.warnings {
        eprintln!("veilfs: warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    for c in &plan.conflicts {
        writeln!(out, "{c}")?;
    }
    if !plan.needs_apply() {
        writeln!(
            out,
            "nothing to roll back in session(s) {}",
            plan.sessions.join(", ")
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.dry_run {
        writeln!(
            out,
            "plan for session(s) {} in {} (dry run, nothing changed):",
            plan.sessions.join(", "),
            plan.scope.display()
        )?;
        for s in &plan.steps {
            writeln!(out, "{s}")?;
        }
        return Ok(if plan.conflicts.is_empty() || a.force {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if !plan.conflicts.is_empty() && !a.force {
        writeln!(
            out,
            "refusing to roll back: {} path(s) changed since the session (use --force to overwrite them; their current state is captured first)",
            plan.conflicts.len()
        )?;
        return Ok(ExitCode::from(1));
    }
    let pb = progress(plan.steps.len(), "rollback");
    let report = rollback::apply(&store, &plan, a.force, &|s| {
        pb.set_message(match &s.action {
            Action::Restore { path, .. } => path.display().to_string(),
            Action::UndoRename { from, .. } => from.display().to_string(),
        });
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    for w in &report.warnings[plan.warnings.len().min(report.warnings.len())..] {
        eprintln!("veilfs: warning: {w}");
    }
    if let Some(undo) = report.undo_sessions.first()
        && let Err(e) = audit::record_once(
            &a.store,
            undo,
            a.audit_key.as_deref(),
            &plan.scope,
            &audit::AuditEvent::Rollback {
                of: plan.sessions.join(","),
                session: report.undo_sessions.join(","),
                changes: report.restored + report.removed + report.renamed,
            },
        )
    {
        eprintln!("veilfs: warning: audit record of the rollback: {e:#}");
    }
    writeln!(
        out,
        "rolled back {}: {} restored, {} removed, {} renamed, {} unchanged, {} conflict(s){}; undo with: veilfs rollback --store {} --session {}",
        plan.sessions.join(", "),
        report.restored,
        report.removed,
        report.renamed,
        report.unchanged,
        report.conflicts,
        if report.conflicts > 0 {
            " overwritten"
        } else {
            ""
        },
        a.store.display(),
        report.undo_sessions.join(",")
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let audit_key = match (&a.audit_pubkey, &a.audit_key) {
        (Some(p), _) => Some(audit::load_verifying_key(p)?),
        (None, Some(k)) => Some(audit::load_signing_key(k)?.verifying_key()),
        (None, None) => None,
    };
    let mut pb: Option<indicatif::ProgressBar> = None;
    let report = crate::verify::verify_store(&a.store, audit_key.as_ref(), &mut |done, total| {
        pb.get_or_insert_with(|| progress(total, "objects"))
            .set_position(done as u64)
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    for w in &report.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for f in &report.findings {
        writeln!(out, "error: {f}")?;
    }
    if report.is_ok() {
        writeln!(
            out,
            "ok: {} objects, {} references, all journals intact, {} audit events chained{}",
            report.objects,
            report.references,
            report.audit_events,
            if report.signed { " and signed" } else { "" }
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{} problem(s) found", report.findings.len())?;
        Ok(ExitCode::from(1))
    }
}

/// The scope of the overlay in `store`: the one recorded at mount time, checked against the
/// named overlay session (or, for stores from before the record, the newest overlay session's).
fn overlay_scope(store: &Store, dir: &Path, session: Option<&str>) -> anyhow::Result<PathBuf> {
    let recorded = overlay::recorded_scope(dir);
    let from_session = match session {
        Some(id) => {
            let log = store.load_session(id)?;
            let (_, scope, mode) = log
                .start()
                .with_context(|| format!("{}: no SessionStart", log.path.display()))?;
            if mode != "overlay" {
                anyhow::bail!("session {id} is a {mode} session, not an overlay session");
            }
            Some(scope.to_path_buf())
        }
        None => store
            .sessions()?
            .into_iter()
            .rev()
            .find(|s| s.mode == "overlay" && s.problem.is_none())
            .map(|s| s.scope),
    };
    match (recorded, from_session) {
        (Some(r), Some(s)) if r != s => anyhow::bail!(
            "the overlay in {} belongs to {}, but the session names {}",
            dir.display(),
            r.display(),
            s.display()
        ),
        (Some(r), _) => Ok(r),
        (None, Some(s)) => Ok(s),
        (None, None) => anyhow::bail!(
            "{}: no overlay here (mount with `veilfs mount --mode overlay --store {}` first)",
            dir.display(),
            dir.display()
        ),
    }
}

fn filters(scope: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| rollback::normalize_filter(scope, p))
        .collect()
}

pub(super) fn run_commit(a: CommitArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&a.store)?;
    // An interrupted commit is ended first, one way or the other, before anything new.
    if let Some(p) = overlay::pending_commit(&store)? {
        let mut out = std::io::stdout().lock();
        if a.dry_run {
            writeln!(out, "{}", p.describe(&a.store))?;
            return Ok(ExitCode::from(1));
        }
        if a.abort {
            let r = overlay::abort_commit(&a.store, &store, &p)?;
            for w in &r.warnings {
                eprintln!("veilfs: warning: {w}");
            }
            writeln!(
                out,
                "aborted interrupted commit {}: {} restored, {} removed, {} renamed, {} unchanged; the real folder is as before the commit and the overlay keeps every change (the restored paths are newer than the agent's copies, so a new commit lists them as conflicts: review with `veilfs commit --store {} --dry-run`, then commit with --force)",
                p.session,
                r.restored,
                r.removed,
                r.renamed,
                r.unchanged,
                a.store.display()
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("veilfs: {}: resuming it", p.describe(&a.store));
        let report = overlay::resume_commit(&a.store, &store, &p)?;
        for w in &report.warnings {
            eprintln!("veilfs: warning: {w}");
        }
        writeln!(
            out,
            "resumed interrupted commit to {}: {} changed now, {} already done; {} conflict(s) skipped, {} refused as planned; session {}; undo with: veilfs rollback --store {} --session {}",
            p.scope.display(),
            report.changed,
            report.unchanged,
            report.skipped_conflicts.len(),
            report.refused.len(),
            report.session,
            a.store.display(),
            report.session
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.abort {
        anyhow::bail!(
            "nothing to abort: no interrupted commit in {}",
            a.store.display()
        );
    }
    let scope = overlay_scope(&store, &a.store, a.session.as_deref())?;
    let filters = filters(&scope, &a.paths);
    let mut out = std::io::stdout().lock();
    // Refuse before planning (planning stores content) while a mount runs.
    let lock = if a.dry_run {
        None
    } else {
        Some(overlay::exclusive(&a.store, "commit")?)
    };
    let plan = overlay::plan_commit(
        &a.store,
        if a.dry_run { None } else { Some(&store) },
        &scope,
        &filters,
    )?;
    for w in &plan.warnings {
        eprintln!("veilfs: warning: {w}");
    }
    if plan.steps.is_empty() && !overlay::has_changes(&a.store) {
        writeln!(out, "nothing to commit: the overlay has no changes")?;
        return Ok(ExitCode::SUCCESS);
    }
    let problems = |out: &mut dyn Write| -> anyhow::Result<(usize, usize)> {
        let (mut c, mut r) = (0, 0);
        for u in plan.units.iter().filter(|u| u.selected) {
            if let Some(m) = &u.refused {
                writeln!(out, "{m}")?;
                r += 1;
            } else if let Some(m) = &u.conflict {
                writeln!(
                    out,
                    "{m}{}",
                    if a.force {
                        " (--force: committed anyway)"
                    } else {
                        " (skipped; --force commits it)"
                    }
                )?;
                c += 1;
            }
        }
        Ok((c, r))
    };
    if a.dry_run {
        writeln!(
            out,
            "commit plan for {} (dry run, nothing changed):",
            scope.display()
        )?;
        for s in plan.steps.iter().filter(|s| plan.runs(s, a.force)) {
            if !matches!(s.op, overlay::Op::DirTimes { .. }) {
                writeln!(out, "{s}")?;
            }
        }
        let (c, r) = problems(&mut out)?;
        return Ok(if r > 0 || (c > 0 && !a.force) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    let (c, r) = problems(&mut out)?;
    drop(lock);
    let report = overlay::apply_commit(&a.store, &store, &plan, a.force)?;
    for w in &report.warnings[plan.warnings.len().min(report.warnings.len())..] {
        eprintln!("veilfs: warning: {w}");
    }
    if let Err(e) = audit::record_once(
        &a.store,
        &report.session,
        a.audit_key.as_deref(),
        &scope,
        &audit::AuditEvent::Commit {
            of: a.session.clone().unwrap_or_else(|| "overlay".into()),
            changes: report.changed,
        },
    ) {
        eprintln!("veilfs: warning: audit record of the commit: {e:#}");
    }
    writeln!(
        out,
        "committed to {}: {} changed, {} unchanged, {} conflict(s) skipped, {} refused; session {}; undo with: veilfs rollback --store {} --session {}",
        scope.display(),
        report.changed,
        report.unchanged,
        if a.force { 0 } else { c },
        r,
        report.session,
        a.store.display(),
        report.session
    )?;
    Ok(if r > 0 || (c > 0 && !a.force) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn run_discard(a: DiscardArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&a.store)?;
    let scope = overlay_scope(&store, &a.store, a.session.as_deref())?;
    let filters = filters(&scope, &a.paths);
    let removed = overlay::discard(&a.store, &filters)?;
    let mut out = std::io::stdout().lock();
    for p in &removed {
        writeln!(out, "discarded {}", p.display())?;
    }
    writeln!(
        out,
        "discarded {} overlay entr{}",
        removed.len(),
        if removed.len() == 1 { "y" } else { "ies" }
    )?;
    Ok(ExitCode::SUCCESS)
}
