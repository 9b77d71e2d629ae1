//! Snapshot-before-write: the write path's promise that nothing the agent does is
//! irreversible.
//!
//! Order for every change (design.md, "the journal is written before the write it guards"):
//! read the pre-image, blake3 it, store it durably (zstd object, fsync, rename, dir fsync),
//! append the `Capture` record and fsync the journal — and only then let the change through.
//! Only the first change of a path in a session captures it; a path that is renamed away or
//! removed stops counting as captured (a later re-create there records `Absent` again), and so
//! does everything below a renamed or removed directory. `rollback` replays the journal in
//! reverse, which is why each capture must describe the path *at the moment of its first change*.
//!
//! When a pre-image cannot be stored (a file above `snapshot_max_size`, the store quota
//! reached, a store I/O error) the change is refused (fail closed) and the reason journalled
//! and logged; the copy-on-write overlay fallback is not built yet.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use crate::backing;
use crate::journal::{Event, JournalError, SessionWriter, State};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{path}: {size} bytes is above snapshot_max_size {max}: cannot snapshot, change refused"
    )]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("store quota of {quota} bytes reached: cannot snapshot {path}, change refused")]
    Quota { path: String, quota: u64 },
    #[error("snapshot of {path} failed: {source}")]
    Journal {
        path: String,
        #[source]
        source: JournalError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl GuardError {
    /// The errno the agent sees. A refused snapshot is a refused change: EACCES for policy-like
    /// refusals, ENOSPC for the quota, the original errno for I/O.
    pub fn errno(&self) -> i32 {
        match self {
            GuardError::TooLarge { .. } => libc::EFBIG,
            GuardError::Quota { .. } => libc::ENOSPC,
            GuardError::Journal { source, .. } => match source {
                JournalError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
                _ => libc::EIO,
            },
            GuardError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

pub struct Guard {
    /// In overlay mode changes land in the upper layer, never in the real folder: there is
    /// nothing to snapshot, only a record to keep.
    overlay: bool,
    store: Store,
    session: SessionWriter,
    captured: Mutex<HashSet<PathBuf>>,
    snapshot_max_size: u64,
    quota: Option<u64>,
    stored_bytes: AtomicU64,
}

impl Guard {
    /// Opens a new session in `store` for a mount of `scope` (`mode`: "snapshot" or "overlay").
    pub fn start(
        store: Store,
        scope: &Path,
        mode: &str,
        profile: &str,
        snapshot_max_size: u64,
        quota: Option<u64>,
    ) -> Result<Guard, JournalError> {
        let stored = if quota.is_some() {
            store.size_on_disk()
        } else {
            0
        };
        let session = store.new_session(Event::SessionStart {
            scope: scope.to_path_buf(),
            mode: mode.to_string(),
            profile: profile.to_string(),
            pid: std::process::id(),
            // SAFETY: getuid cannot fail.
            user: unsafe { libc::getuid() },
        })?;
        Ok(Guard {
            overlay: mode == "overlay",
            store,
            session,
            captured: Mutex::new(HashSet::new()),
            snapshot_max_size,
            quota,
            stored_bytes: AtomicU64::new(stored),
        })
    }

    pub fn session_id(&self) -> &str {
        self.session.id()
    }

    fn is_captured(&self, rel: &Path) -> bool {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(rel)
    }

    fn journal(&self, rel: &Path, e: Event) -> Result<(), GuardError> {
        self.session
            .append(e)
            .map(|_| ())
            .map_err(|source| GuardError::Journal {
                path: rel.display().to_string(),
                source,
            })
    }

    /// Makes sure the state of `rel` before this session's first change to it is durably
    /// recorded. Call before every change; it is free after the first.
    pub fn capture(&self, root: BorrowedFd<'_>, rel: &Path) -> Result<(), GuardError> {
        if self.overlay || self.is_captured(rel) {
            return Ok(());
        }
        let io = |source| GuardError::Io {
            path: rel.display().to_string(),
            source,
        };
        // Refuse before reading a byte when the pre-image is too large for the store.
        let mut size = 0;
        match backing::open_path(root, rel) {
            Ok(fd) => {
                let st = backing::stat_fd(fd.as_fd()).map_err(io)?;
                if st.kind() == backing::Kind::File {
                    size = st.size;
                    if st.size > self.snapshot_max_size {
                        let e = GuardError::TooLarge {
                            path: rel.display().to_string(),
                            size: st.size,
                            max: self.snapshot_max_size,
                        };
                        self.refused(rel, &e);
                        return Err(e);
                    }
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT)) => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(quota) = self.quota
            && self.stored_bytes.load(Ordering::Relaxed) + size > quota
        {
            let e = GuardError::Quota {
                path: rel.display().to_string(),
                quota,
            };
            self.refused(rel, &e);
            return Err(e);
        }
        let before = State::read(root, rel, Some(&self.store)).map_err(|source| {
            let e = GuardError::Journal {
                path: rel.display().to_string(),
                source,
            };
            self.refused(rel, &e);
            e
        })?;
        if let State::File { size, .. } = &before {
            self.stored_bytes.fetch_add(*size, Ordering::Relaxed);
        }
        self.journal(
            rel,
            Event::Capture {
                path: rel.to_path_buf(),
                before,
            },
        )?;
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_path_buf());
        Ok(())
    }

    fn refused(&self, rel: &Path, e: &GuardError) {
        warn!(target: "veilfs::audit", path = %rel.display(), reason = %e, "write refused: no snapshot");
        let _ = self.session.append(Event::Change {
            path: rel.to_path_buf(),
            op: format!("refused: {e}"),
        });
    }

    /// Records (durably) that `rel`'s writes now go to the overlay, and why.
    pub fn diverted(&self, rel: &Path, reason: &str) -> Result<(), GuardError> {
        self.journal(
            rel,
            Event::Diverted {
                path: rel.to_path_buf(),
                reason: reason.to_string(),
            },
        )
    }

    /// `rel` (and everything below it) no longer holds what was captured there.
    pub fn forget_subtree(&self, rel: &Path) {
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|p| !p.starts_with(rel));
    }

    /// Records a rename before it is attempted.
    pub fn rename_intent(&self, from: &Path, to: &Path, exchange: bool) -> Result<(), GuardError> {
        if self.overlay {
            return Ok(());
        }
        self.journal(
            from,
            Event::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                exchange,
            },
        )
    }

    /// Records what was done (informational, for `veilfs log`).
    pub fn record_change(&self, rel: &Path, op: &str) {
        if self.overlay {
            return;
        }
        if let Err(e) = self.session.append_lazy(Event::Change {
            path: rel.to_path_buf(),
            op: op.to_string(),
        }) {
            warn!("journal: {e}");
        }
    }

    /// Records the state the session left `rel` in, after a written file is closed.
    pub fn post_image(&self, fd: BorrowedFd<'_>, rel: &Path) {
        if self.overlay {
            return;
        }
        match State::read_fd(fd, rel, None) {
            Ok(after) => {
                if let Err(e) = self.session.append_lazy(Event::PostImage {
                    path: rel.to_path_buf(),
                    after,
                }) {
                    warn!("journal: {e}");
                }
            }
            Err(e) => warn!("post-image of {}: {e}", rel.display()),
        }
    }

    /// Marks the session as cleanly ended (on unmount).
    pub fn end(&self) {
        if let Err(e) = self.session.append(Event::SessionEnd) {
            warn!("journal: {e}");
        }
    }
}

impl From<StoreError> for GuardError {
    fn from(e: StoreError) -> Self {
        GuardError::Io {
            path: String::new(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}
