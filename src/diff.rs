//! `veilfs diff`: what a session changed in the real folder (snapshot mode), or what committing
//! the overlay would change (overlay mode), as typed [`Change`]s. The CLI picks the session and
//! prints each change's `Display`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::backing;
use crate::journal::{Event, JournalError, SessionLog, State};
use crate::overlay;
use crate::store::{ObjectId, Store};

/// Text files larger than this are compared by hash only.
const MAX_TEXT_DIFF: usize = 4 << 20;

/// Why a diff could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The session's journal has no start record (so no scope to compare with).
    #[error("{}: no SessionStart", .0.display())]
    NoStart(PathBuf),
    /// The scope cannot be opened.
    #[error("scope {}", path.display())]
    Scope {
        /// The scope.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path's current state cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The overlay's commit plan cannot be made.
    #[error(transparent)]
    Overlay(#[from] overlay::OverlayError),
}

fn open_scope(scope: &Path) -> Result<std::os::fd::OwnedFd, DiffError> {
    backing::open_root(scope).map_err(|source| DiffError::Scope {
        path: scope.to_path_buf(),
        source,
    })
}

/// One change to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A rename the agent made (snapshot mode lists them before the content changes).
    Renamed {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// The path did not exist before; `now` describes what it is.
    Created {
        /// The path.
        path: PathBuf,
        /// What it is now.
        now: String,
    },
    /// The path existed and is gone.
    Deleted {
        /// The path.
        path: PathBuf,
        /// What it was.
        was: String,
    },
    /// A file's permission bits changed.
    Mode {
        /// The path.
        path: PathBuf,
        /// Old permission bits.
        from: u32,
        /// New permission bits.
        to: u32,
    },
    /// A text file's content changed; `unified` is the diff body (no header).
    Text {
        /// The path.
        path: PathBuf,
        /// A unified diff with three lines of context.
        unified: String,
    },
    /// A binary (or very large) file's content changed.
    Binary {
        /// The path.
        path: PathBuf,
        /// Size before.
        size_before: u64,
        /// Size after.
        size_after: u64,
        /// Content hash before.
        before: ObjectId,
        /// Content hash after.
        after: ObjectId,
    },
    /// The path changed kind or metadata (a file became a symlink, a directory's mode, ...).
    Changed {
        /// The path.
        path: PathBuf,
        /// What it was.
        from: String,
        /// What it is.
        to: String,
    },
    /// Overlay mode: the path becomes a hard link to another committed path.
    Linked {
        /// The new name.
        path: PathBuf,
        /// The name it links to.
        to: PathBuf,
    },
    /// Overlay mode: a unit of changes the commit would refuse, and why.
    Refused(String),
    /// Overlay mode: a unit that conflicts with a change made outside the mount.
    Conflict(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Renamed { from, to } => {
                write!(f, "renamed {} -> {}", from.display(), to.display())
            }
            Change::Created { path, now } => write!(f, "created {} ({now})", path.display()),
            Change::Deleted { path, was } => write!(f, "deleted {} (was {was})", path.display()),
            Change::Mode { path, from, to } => write!(
                f,
                "mode {}: {:04o} -> {:04o}",
                path.display(),
                from & 0o7777,
                to & 0o7777
            ),
            Change::Text { path, unified } => {
                let p = path.display();
                write!(
                    f,
                    "--- a/{p}\n+++ b/{p}\n{}",
                    unified.trim_end_matches('\n')
                )
            }
            Change::Binary {
                path,
                size_before,
                size_after,
                before,
                after,
            } => write!(
                f,
                "binary {}: size {size_before} -> {size_after}, hash {} -> {}",
                path.display(),
                before.short(),
                after.short()
            ),
            Change::Changed { path, from, to } => {
                write!(f, "changed {}: {from} -> {to}", path.display())
            }
            Change::Linked { path, to } => write!(
                f,
                "linked {} (hard link to {})",
                path.display(),
                to.display()
            ),
            Change::Refused(r) | Change::Conflict(r) => f.write_str(r),
        }
    }
}

/// The changes snapshot session `log` made, for paths under one of `filters` (scope-relative;
/// an empty list or an empty filter means everything).
pub(crate) fn session_changes(
    store: &Store,
    log: &SessionLog,
    filters: &[PathBuf],
) -> Result<Vec<Change>, DiffError> {
    let (_, scope, _) = log
        .start()
        .ok_or_else(|| DiffError::NoStart(log.path.clone()))?;
    let root = open_scope(scope)?;
    let wanted = |p: &Path| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| f.as_os_str().is_empty() || p.starts_with(f))
    };
    let mut changes = Vec::new();
    // The first capture of a path is its state before the session.
    let mut before: BTreeMap<PathBuf, State> = BTreeMap::new();
    for r in &log.records {
        match &r.event {
            Event::Capture { path, before: b } if wanted(path) => {
                before.entry(path.clone()).or_insert_with(|| b.clone());
            }
            Event::Rename { from, to, .. } if wanted(from) || wanted(to) => {
                changes.push(Change::Renamed {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            _ => {}
        }
    }
    for (path, b) in &before {
        let now = State::read(root.as_fd(), path, None)?;
        let old = |h: &ObjectId| store.read_bytes(h).ok();
        let new = |_: &ObjectId| read_current(root.as_fd(), path);
        changes.extend(state_changes(path, b, &now, &old, &new));
    }
    Ok(changes)
}

/// What committing the overlay in store `dir` onto `scope` would change, for paths under one of
/// `filters`; also returns the planner's warnings.
pub(crate) fn overlay_changes(
    dir: &Path,
    scope: &Path,
    filters: &[PathBuf],
) -> Result<(Vec<Change>, Vec<String>), DiffError> {
    let plan = overlay::plan_commit(dir, None, scope, filters)?;
    let root = open_scope(scope)?;
    let mut changes = Vec::new();
    for step in plan.steps.iter().filter(|s| plan.units[s.unit].selected) {
        let path = &step.path;
        match &step.op {
            overlay::Op::Put { target, src, .. } => {
                let now = State::read(root.as_fd(), path, None)?;
                if matches!((&now, target), (State::Dir { .. }, State::Dir { .. })) {
                    if now.meta().map(|m| m.mode) != target.meta().map(|m| m.mode) {
                        changes.push(Change::Changed {
                            path: path.clone(),
                            from: now.describe(),
                            to: target.describe(),
                        });
                    }
                    continue;
                }
                let old = |_: &ObjectId| read_current(root.as_fd(), path);
                let new = |_: &ObjectId| match src {
                    overlay::Source::Upper(p) => std::fs::read(p).ok(),
                    overlay::Source::Real(r) => read_current(root.as_fd(), r),
                    overlay::Source::None => None,
                };
                changes.extend(state_changes(path, &now, target, &old, &new));
            }
            overlay::Op::Delete { was } => changes.push(Change::Deleted {
                path: path.clone(),
                was: was.describe(),
            }),
            overlay::Op::Link { to, .. } => changes.push(Change::Linked {
                path: path.clone(),
                to: to.clone(),
            }),
            overlay::Op::DirTimes { .. } => {}
        }
    }
    for u in plan.units.iter().filter(|u| u.selected) {
        if let Some(r) = &u.refused {
            changes.push(Change::Refused(r.clone()));
        } else if let Some(c) = &u.conflict {
            changes.push(Change::Conflict(c.to_string()));
        }
    }
    Ok((changes, plan.warnings))
}

/// How `path` went from `b` to `now`; `old`/`new` fetch the bytes of a file state.
fn state_changes(
    path: &Path,
    b: &State,
    now: &State,
    old: &dyn Fn(&ObjectId) -> Option<Vec<u8>>,
    new: &dyn Fn(&ObjectId) -> Option<Vec<u8>>,
) -> Vec<Change> {
    let path = path.to_path_buf();
    match (b, now) {
        (State::Absent, State::Absent) => vec![],
        (State::Absent, n) => vec![Change::Created {
            path,
            now: n.describe(),
        }],
        (o, State::Absent) => vec![Change::Deleted {
            path,
            was: o.describe(),
        }],
        (
            State::File {
                hash: h1,
                size: s1,
                meta: m1,
            },
            State::File {
                hash: h2,
                size: s2,
                meta: m2,
            },
        ) => {
            let mut out = Vec::new();
            if m1.mode != m2.mode {
                out.push(Change::Mode {
                    path: path.clone(),
                    from: m1.mode,
                    to: m2.mode,
                });
            }
            if h1 == h2 {
                return out;
            }
            let old = old(h1).unwrap_or_default();
            let new = new(h2);
            out.push(match (text(&old), new.as_deref().and_then(text)) {
                (Some(a), Some(bb)) => Change::Text {
                    path,
                    unified: unified_diff(a, bb, 3),
                },
                _ => Change::Binary {
                    path,
                    size_before: *s1,
                    size_after: *s2,
                    before: *h1,
                    after: *h2,
                },
            });
            out
        }
        (o, n) if o.same_content(n) && o.meta().map(|m| m.mode) == n.meta().map(|m| m.mode) => {
            vec![]
        }
        (o, n) => vec![Change::Changed {
            path,
            from: o.describe(),
            to: n.describe(),
        }],
    }
}

/// The current bytes of a file, read through `backing` beneath the scope.
fn read_current(root: BorrowedFd<'_>, path: &Path) -> Option<Vec<u8>> {
    let fd = backing::open_path(root, path).ok()?;
    let mut f = backing::reopen(fd.as_fd(), libc::O_RDONLY).ok()?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).ok()?;
    Some(v)
}

fn text(b: &[u8]) -> Option<&str> {
    if b.len() > MAX_TEXT_DIFF || b.contains(&0) {
        return None;
    }
    std::str::from_utf8(b).ok()
}

/// A unified line diff with `ctx` lines of context (no `---`/`+++` header), from `similar`.
pub(crate) fn unified_diff(a: &str, b: &str, ctx: usize) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(ctx)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_change_displays_as_a_unified_diff_with_its_header() {
        let c = Change::Text {
            path: "a.txt".into(),
            unified: unified_diff("one\ntwo\n", "one\nthree\n", 3),
        };
        let s = c.to_string();
        assert!(s.starts_with("--- a/a.txt\n+++ b/a.txt\n@@"), "{s}");
        assert!(s.contains("-two\n+three"), "{s}");
        assert!(!s.ends_with('\n'));
    }

    #[test]
    fn creation_deletion_and_no_change_are_told_apart() {
        let none = |_: &ObjectId| None;
        assert!(
            state_changes(Path::new("x"), &State::Absent, &State::Absent, &none, &none).is_empty()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hi").unwrap();
        let root = backing::open_root(dir.path()).unwrap();
        let f = State::read(root.as_fd(), Path::new("f"), None).unwrap();
        let c = state_changes(Path::new("f"), &State::Absent, &f, &none, &none);
        assert!(matches!(&c[..], [Change::Created { .. }]), "{c:?}");
        let c = state_changes(Path::new("f"), &f, &State::Absent, &none, &none);
        assert!(matches!(&c[..], [Change::Deleted { .. }]), "{c:?}");
        assert!(state_changes(Path::new("f"), &f, &f, &none, &none).is_empty());
    }

    #[test]
    fn unified_diff_hunks() {
        assert_eq!(unified_diff("a\nb\n", "a\nb\n", 3), "");
        assert_eq!(
            unified_diff("a\nb\nc\n", "a\nB\nc\n", 1),
            "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
        // A one-line range is written without its length, as GNU diff does.
        assert_eq!(unified_diff("", "x\n", 3), "@@ -0,0 +1 @@\n+x\n");
        assert_eq!(
            unified_diff("x", "y", 3),
            "@@ -1 +1 @@\n-x\n\\ No newline at end of file\n+y\n\\ No newline at end of file\n"
        );
        let a: String = (0..20).map(|i| format!("{i}\n")).collect();
        let b = a.replace("2\n", "two\n").replace("17\n", "seventeen\n");
        let d = unified_diff(&a, &b, 2);
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
    }
}
