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
//! The agent picks the name a change arrives on, so a file with several hard links is captured
//! under every name the session knows before it changes ([`Guard::capture_object`]), and one
//! with names veilfs never saw is refused ([`GuardError::UnknownLinks`]): a change through one
//! name must not reach another that was never checked or snapshotted.
//!
//! When a pre-image cannot be stored (a file above `snapshot_max_size`, the store quota
//! reached, a store I/O error) the change is refused (fail closed) and the reason journalled
//! and logged; the copy-on-write overlay fallback is not built yet.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use crate::backing;
use crate::journal::{Event, JournalError, SessionWriter, State};
use crate::store::Store;

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
    #[error("{path}: cannot read its current state")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has {nlink} hard links and veilfs knows {known} of its names: it cannot check or snapshot the others, change refused (replace the file instead of writing it in place)"
    )]
    UnknownLinks {
        path: String,
        nlink: u64,
        known: usize,
    },
    #[error(
        "the session journal could not record a change ({reason}): the mount accepts no more changes"
    )]
    Stopped { errno: i32, reason: String },
}

impl GuardError {
    /// The errno the agent sees. A refused snapshot is a refused change: EFBIG for a file too
    /// large to snapshot, ENOSPC for the quota, EACCES for a file whose other names veilfs cannot
    /// check, and otherwise the cause's own errno (ENOSPC, EDQUOT, EROFS… of the store), found
    /// through every wrapper.
    pub fn errno(&self) -> i32 {
        match self {
            GuardError::TooLarge { .. } => libc::EFBIG,
            GuardError::Quota { .. } => libc::ENOSPC,
            GuardError::UnknownLinks { .. } => libc::EACCES,
            GuardError::Stopped { errno, .. } => *errno,
            _ => crate::error::errno(self, libc::EIO),
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
    /// Every name of each object that has more than one in this session (made by `link`
    /// through the mount), keyed by `(st_dev, st_ino)`: a change through one name changes them
    /// all, so all of them are captured first (see [`Guard::capture_object`]).
    names: Mutex<HashMap<(u64, u64), BTreeSet<PathBuf>>>,
    /// Set when a record that must not be lost (a post-image, a change marker) could not be
    /// journalled: from then on every change is refused with this errno (see
    /// [`GuardError::Stopped`]), so rollback's picture of the session stays true.
    stopped: Mutex<Option<(i32, String)>>,
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
            user: rustix::process::getuid().as_raw(),
        })?;
        Ok(Guard {
            overlay: mode == "overlay",
            store,
            session,
            captured: Mutex::new(HashSet::new()),
            names: Mutex::new(HashMap::new()),
            stopped: Mutex::new(None),
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
        self.check_running()?;
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

    /// Refuses every change once the journal lost a record it must keep.
    pub fn check_running(&self) -> Result<(), GuardError> {
        match &*self.stopped.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((errno, reason)) => Err(GuardError::Stopped {
                errno: *errno,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A record that must not be lost was not written: stop accepting changes.
    fn stop(&self, e: &JournalError) {
        let errno = crate::error::errno(e, libc::EIO);
        let mut s = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            warn!(target: "veilfs::audit", reason = %e, errno, "journal write failed: the mount refuses every further change");
            *s = Some((errno, e.to_string()));
        }
    }

    /// Every current name of the object `key` (a regular file with `nlink` links) that the
    /// session knows, `current` included. The agent picks the name a change arrives on, so a
    /// change must be checked and captured under all of them; a file with names veilfs never
    /// saw (links made outside the mount) cannot be, and is refused.
    pub fn names_of(
        &self,
        root: BorrowedFd<'_>,
        key: (u64, u64),
        current: &Path,
        nlink: u64,
    ) -> Result<Vec<PathBuf>, GuardError> {
        if self.overlay {
            // Changes land in the upper layer (which keeps hard links together); the real
            // folder is only changed by `commit`.
            return Ok(vec![current.to_path_buf()]);
        }
        let mut known: BTreeSet<PathBuf> = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or_default();
        known.insert(current.to_path_buf());
        // Names are re-checked against the real folder: an outside rename or unlink may have
        // moved one since.
        let still = |p: &Path| {
            backing::open_path(root, p)
                .and_then(|fd| backing::stat_fd(fd.as_fd()))
                .is_ok_and(|st| (st.dev, st.ino) == key)
        };
        let names: Vec<PathBuf> = known
            .into_iter()
            .filter(|p| p == current || still(p))
            .collect();
        if nlink > names.len() as u64 {
            let e = GuardError::UnknownLinks {
                path: current.display().to_string(),
                nlink,
                known: names.len(),
            };
            warn!(target: "veilfs::audit", path = %current.display(), reason = %e, "change refused");
            return Err(e);
        }
        Ok(names)
    }

    /// Captures every name of the object about to change in content or metadata (see
    /// [`Guard::names_of`]) and returns them.
    pub fn capture_object(
        &self,
        root: BorrowedFd<'_>,
        key: (u64, u64),
        current: &Path,
        nlink: u64,
    ) -> Result<Vec<PathBuf>, GuardError> {
        self.check_running()?;
        let names = if nlink > 1 {
            self.names_of(root, key, current, nlink)?
        } else {
            vec![current.to_path_buf()]
        };
        for n in &names {
            self.capture(root, n)?;
        }
        Ok(names)
    }

    /// `new` became another name of the object `key`, which is at `src`.
    pub fn linked(&self, key: (u64, u64), src: &Path, new: &Path) {
        let mut m = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let set = m.entry(key).or_default();
        set.insert(src.to_path_buf());
        set.insert(new.to_path_buf());
    }

    /// `rel` was unlinked.
    pub fn unlinked(&self, key: (u64, u64), rel: &Path) {
        let mut m = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = m.get_mut(&key) {
            set.remove(rel);
            if set.len() < 2 {
                m.remove(&key);
            }
        }
    }

    /// Keeps the known names in step with a rename (`from` and everything below it moved to
    /// `to`; what was at `to` moved to `from` for an exchange, or is gone).
    pub fn renamed(&self, from: &Path, to: &Path, exchange: bool) {
        let mut m = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for set in m.values_mut() {
            let moved: BTreeSet<PathBuf> = set
                .iter()
                .map(|p| {
                    if let Ok(rest) = p.strip_prefix(from) {
                        to.join(rest)
                    } else if let Ok(rest) = p.strip_prefix(to) {
                        if exchange {
                            from.join(rest)
                        } else {
                            PathBuf::new() // replaced: no longer a name
                        }
                    } else {
                        p.clone()
                    }
                })
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            *set = moved;
        }
        m.retain(|_, s| s.len() > 1);
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
        // Marks earlier post-images of `rel` stale: losing it would make rollback see a
        // conflict that is not one, so a failure stops the session's writes.
        if let Err(e) = self.session.append_lazy(Event::Change {
            path: rel.to_path_buf(),
            op: op.to_string(),
        }) {
            self.stop(&e);
        }
    }

    /// Records the state the session left a written file in, under each of its `names`, after
    /// it is closed. A post-image that cannot be journalled is never dropped silently: the
    /// mount stops accepting writes (ENOSPC when the disk is full) and says why.
    pub fn post_image(&self, fd: BorrowedFd<'_>, names: &[PathBuf]) {
        if self.overlay || names.is_empty() {
            return;
        }
        match State::read_fd(fd, &names[0], None) {
            Ok(after) => {
                for rel in names {
                    if let Err(e) = self.session.append_lazy(Event::PostImage {
                        path: rel.to_path_buf(),
                        after: after.clone(),
                    }) {
                        self.stop(&e);
                        return;
                    }
                }
            }
            Err(e) => {
                // Without it rollback would compare against nothing: mark the names changed.
                warn!("post-image of {}: {e}", names[0].display());
                for rel in names {
                    self.record_change(rel, "write (post-image unreadable)");
                }
            }
        }
    }

    /// Marks the session as cleanly ended (on unmount).
    pub fn end(&self) {
        if let Err(e) = self.session.append(Event::SessionEnd) {
            warn!("journal: {e}");
        }
    }
}
