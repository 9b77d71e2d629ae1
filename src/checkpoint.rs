//! Checkpoints: the ends of an agent's turns inside one snapshot session.
//!
//! A checkpoint is a journal record like the others ([`Event::Checkpoint`], hash-chained),
//! written by the live mount when asked through its control socket ([`crate::control`]). The
//! guard captures every path again at its first change after a checkpoint, so the session's
//! records after a checkpoint are a complete recipe for getting back to it:
//! `veilfs rollback --to CHECKPOINT` plans them alone ([`crate::rollback::plan_after`]), plus
//! every later session. This module finds a checkpoint by label or number and splits a
//! session into turns for `veilfs log`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::journal::{Event, SessionLog};
use crate::store::Store;

/// One checkpoint of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub session: String,
    /// 1-based, per session.
    pub n: u64,
    /// The record's seq: `rollback --to` undoes the records after it.
    pub seq: u64,
    pub label: Option<String>,
    pub time_ns: i128,
}

impl Checkpoint {
    /// `#2 "tests pass"`.
    pub(crate) fn describe(&self) -> String {
        match &self.label {
            Some(l) => format!("#{} {l:?}", self.n),
            None => format!("#{}", self.n),
        }
    }
}

/// The checkpoints of a session, in order.
pub(crate) fn checkpoints(log: &SessionLog) -> Vec<Checkpoint> {
    log.records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Checkpoint { n, label } => Some(Checkpoint {
                session: log.id.clone(),
                n: *n,
                seq: r.seq,
                label: label.clone(),
                time_ns: r.time_ns,
            }),
            _ => None,
        })
        .collect()
}

/// What one turn changed: the records after the previous checkpoint (or the start) up to
/// `end` (None: after the last checkpoint, the turn in progress or unfinished).
#[derive(Clone, Debug)]
pub(crate) struct Turn {
    pub end: Option<Checkpoint>,
    pub changed: BTreeSet<PathBuf>,
    pub renames: Vec<(PathBuf, PathBuf)>,
}

/// The session cut at its checkpoints. A session without checkpoints is one turn.
pub(crate) fn turns(log: &SessionLog) -> Vec<Turn> {
    let cps = checkpoints(log);
    let mut out = Vec::new();
    let mut cur = Turn {
        end: None,
        changed: BTreeSet::new(),
        renames: Vec::new(),
    };
    for r in &log.records {
        match &r.event {
            Event::Checkpoint { .. } => {
                cur.end = cps.iter().find(|c| c.seq == r.seq).cloned();
                out.push(std::mem::replace(
                    &mut cur,
                    Turn {
                        end: None,
                        changed: BTreeSet::new(),
                        renames: Vec::new(),
                    },
                ));
            }
            Event::Capture { path, .. } | Event::Change { path, .. }
                if !path.as_os_str().is_empty() =>
            {
                cur.changed.insert(path.clone());
            }
            Event::Rename { from, to, .. } => {
                cur.renames.push((from.clone(), to.clone()));
                cur.changed.insert(from.clone());
                cur.changed.insert(to.clone());
            }
            _ => {}
        }
    }
    out.push(cur);
    out
}

/// Finds checkpoint `spec` (its label, else its number: `2` or `#2`) in `session`, or in the
/// newest session that has one. With several of the same label in a session, the last.
pub(crate) fn find(store: &Store, session: Option<&str>, spec: &str) -> anyhow::Result<Checkpoint> {
    let ids: Vec<String> = match session {
        Some(s) => vec![s.to_string()],
        None => store
            .sessions()?
            .into_iter()
            .rev()
            .filter(|i| i.problem.is_none() && i.mode == "snapshot")
            .map(|i| i.id)
            .collect(),
    };
    let number: Option<u64> = spec.trim_start_matches('#').parse().ok();
    for id in ids {
        let log = store.load_session(&id)?;
        let cps = checkpoints(&log);
        if let Some(c) = cps
            .iter()
            .rev()
            .find(|c| c.label.as_deref() == Some(spec))
            .or_else(|| cps.iter().rev().find(|c| Some(c.n) == number))
        {
            return Ok(c.clone());
        }
    }
    anyhow::bail!(
        "no checkpoint {spec:?} in {}{} (see `veilfs log --store {}`)",
        store.dir().display(),
        session
            .map(|s| format!(", session {s}"))
            .unwrap_or_default(),
        store.dir().display()
    )
}
