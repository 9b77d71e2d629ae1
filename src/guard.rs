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
//! Two kinds of change destroy nothing, so their records are journalled before them but not
//! fsynced: a new name directly in a directory the session made ([`Guard::made_dir`]: rollback
//! removes that directory whole), and a small file's removal parked in the store's aside area
//! ([`Guard::remove_aside`]: the parked file itself is the pre-image until a sync covers it).
//!
//! The agent picks the name a change arrives on, so a file with several hard links is captured
//! under every name the session knows before it changes ([`Guard::capture_object`]), and one
//! with names veilfs never saw is refused ([`GuardError::UnknownLinks`]): a change through one
//! name must not reach another that was never checked or snapshotted.
//!
//! When a pre-image cannot be stored (a file above `snapshot_max_size`, the store quota
//! reached, a store I/O error) the change is refused (fail closed) and the reason journalled
//! and logged; a mount with a divert layer diverts the file instead (`fs::write`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::backing;
use crate::journal::{Event, JournalError, SessionWriter, State};
use crate::profile::WriteMode;
use crate::store::{LazyWriter, Store};

/// Why the guard refused or could not record a change.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{path}: {size} bytes is above snapshot_max_size {max}: cannot snapshot, change refused"
    )]
    /// The file is larger than the profile lets veilfs snapshot.
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// `snapshot_max_size`.
        max: u64,
    },
    #[error("store quota of {quota} bytes reached: cannot snapshot {path}, change refused")]
    /// The store is full (`store_quota`).
    Quota {
        /// The file that could not be snapshotted.
        path: String,
        /// The quota in bytes.
        quota: u64,
    },
    #[error("snapshot of {path} failed: {source}")]
    /// The pre-image or its journal record could not be stored.
    Journal {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: JournalError,
    },
    #[error("{path}: cannot read its current state")]
    /// The file's current state could not be read.
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has {nlink} hard links and veilfs knows {known} of its names: it cannot check or snapshot the others, change refused (replace the file instead of writing it in place)"
    )]
    /// The file has hard links veilfs has not seen, so their pre-images cannot be vouched for.
    UnknownLinks {
        /// The file.
        path: String,
        /// Its link count.
        nlink: u64,
        /// The names veilfs knows.
        known: usize,
    },
    #[error(
        "the session journal could not record a change ({reason}): the mount accepts no more changes"
    )]
    /// An earlier journal failure stopped the session: no change is accepted any more.
    Stopped {
        /// The errno of that failure.
        errno: i32,
        /// What failed.
        reason: String,
    },
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

/// The paths captured in this checkpoint generation, and the directories the session made.
#[derive(Default)]
struct Captured {
    /// Each captured path, with its `Capture` record.
    paths: HashMap<PathBuf, Entry>,
    /// Directories made by `mkdir` after an `Absent` capture in this generation, not renamed
    /// or removed since: rollback removes them whole, whatever their entries' records say
    /// (see [`Guard::made_dir`]).
    born: HashSet<PathBuf>,
}

/// A captured path's `Capture` record.
#[derive(Clone, Copy)]
struct Entry {
    /// Its seq in the journal.
    seq: u64,
    /// It records `State::Absent`.
    absent: bool,
}

/// A path whose `Capture` was appended, to mark captured once it may be relied on.
struct Mark {
    rel: PathBuf,
    /// The checkpoint generation it was captured in.
    generation: u64,
    /// The record.
    entry: Entry,
}

/// An object a caller holds for its capture: an fd (O_PATH or open) and its stat, and
/// optionally the same object open for reading.
type Held<'a> = (BorrowedFd<'a>, &'a backing::Stat, Option<BorrowedFd<'a>>);

/// Parked files at which a removal syncs the journal and reaps them (see
/// [`Guard::remove_aside`]).
const ASIDE_PENDING_MAX: usize = 4096;

/// Snapshot-before-write for one session: every change is captured (pre-image stored,
/// journalled, durable) before it reaches the real folder.
pub struct Guard {
    /// In overlay mode changes land in the upper layer, never in the real folder: there is
    /// nothing to snapshot, only a record to keep.
    overlay: bool,
    store: Arc<Store>,
    /// Writes the object files of small pre-images, whose bytes the journal already holds,
    /// off the request path.
    objects: LazyWriter,
    session: SessionWriter,
    captured: Mutex<Captured>,
    /// Where removed files are parked instead of unlinked (see `aside.rs`); None when the
    /// store is on another filesystem than the scope, and in overlay mode.
    aside: Option<crate::aside::Area>,
    /// Bumped by every checkpoint (under the `captured` lock): a capture that started before
    /// a checkpoint does not mark its path captured after it.
    generation: AtomicU64,
    /// Checkpoints written so far.
    checkpoints: AtomicU64,
    /// Every name of each object that has more than one in this session (made by `link`
    /// through the mount), keyed by `(st_dev, st_ino)`: a change through one name changes them
    /// all, so all of them are captured first (see [`Guard::capture_object`]).
    names: Mutex<HashMap<(u64, u64), BTreeSet<PathBuf>>>,
    /// See [`Guard::namespace`].
    namespace: Mutex<()>,
    /// Set when a record that must not be lost (a post-image, a change marker) could not be
    /// journalled: from then on every change is refused with this errno (see
    /// [`GuardError::Stopped`]), so rollback's picture of the session stays true.
    stopped: Mutex<Option<(i32, String)>>,
    snapshot_max_size: u64,
    quota: Option<u64>,
    stored_bytes: AtomicU64,
}

impl Guard {
    /// Opens a new session in `store` for a mount of `scope` in a writable `mode`.
    pub fn start(
        store: Store,
        scope: &Path,
        mode: WriteMode,
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
            mode: mode.as_str().to_string(),
            profile: profile.to_string(),
            pid: std::process::id(),
            user: rustix::process::getuid().as_raw(),
        })?;
        let aside = if mode == WriteMode::Overlay {
            None
        } else {
            let io = |source| JournalError::Io {
                path: scope.to_path_buf(),
                source,
            };
            let root = backing::open_root(scope).map_err(io)?;
            crate::aside::Area::open(store.dir(), session.id(), root.as_fd()).map_err(io)?
        };
        let store = Arc::new(store);
        let objects = LazyWriter::start(store.clone()).map_err(|source| JournalError::Io {
            path: store.dir().join("objects"),
            source,
        })?;
        Ok(Guard {
            overlay: mode == WriteMode::Overlay,
            store,
            objects,
            session,
            captured: Mutex::new(Captured::default()),
            aside,
            generation: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            names: Mutex::new(HashMap::new()),
            namespace: Mutex::new(()),
            stopped: Mutex::new(None),
            snapshot_max_size,
            quota,
            stored_bytes: AtomicU64::new(stored),
        })
    }

    /// The journal session this guard writes.
    pub fn session_id(&self) -> &str {
        self.session.id()
    }

    fn is_captured(&self, rel: &Path) -> bool {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paths
            .contains_key(rel)
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
        self.capture_then(root, &[rel], None)
    }

    /// [`Guard::capture`] of every path one change touches (a file and its directory, say),
    /// then `then` (a rename intent), all made durable by one journal fsync. A path counts as
    /// captured only once that fsync returned, so no other thread's change gets ahead of it.
    pub fn capture_then(
        &self,
        root: BorrowedFd<'_>,
        rels: &[&Path],
        then: Option<Event>,
    ) -> Result<(), GuardError> {
        self.capture_staged(root, rels, None, None, then)
    }

    /// [`Guard::capture`] of `rel` before a change `op`, whose marker ([`Guard::record_change`])
    /// goes in the same journal write as the capture's records (or alone when `rel` was
    /// captured before). `held`: the object the caller has just found at `rel` (an O_PATH or
    /// open fd, with its stat, both from this request's check that `rel`, walked from the
    /// root, leads to it): the capture then does not walk the path again.
    /// `open`: the same object open for reading (a regular file's handle), whose bytes the
    /// capture then reads through it.
    pub(crate) fn capture_for_change(
        &self,
        root: BorrowedFd<'_>,
        rel: &Path,
        held: Option<(BorrowedFd<'_>, &backing::Stat)>,
        open: Option<BorrowedFd<'_>>,
        op: &str,
    ) -> Result<(), GuardError> {
        self.capture_staged(
            root,
            &[rel],
            held.map(|(fd, st)| (fd, st, open)),
            Some(op),
            None,
        )
    }

    /// [`Guard::capture_then`]; `held` and `mark` concern `rels[0]` (see
    /// [`Guard::capture_for_change`]).
    fn capture_staged(
        &self,
        root: BorrowedFd<'_>,
        rels: &[&Path],
        held: Option<Held<'_>>,
        mark: Option<&str>,
        then: Option<Event>,
    ) -> Result<(), GuardError> {
        self.check_running()?;
        if self.overlay {
            return Ok(());
        }
        let mut marks = Vec::new();
        for (i, rel) in rels.iter().enumerate() {
            let (held, mark) = if i == 0 { (held, mark) } else { (None, None) };
            let marker = mark.map(|op| Event::Change {
                path: rel.to_path_buf(),
                op: op.to_string(),
            });
            match self.stage_capture(root, rel, held, marker)? {
                Some(m) => marks.push(m),
                None => {
                    if let Some(op) = mark {
                        self.record_change(rel, op);
                    }
                }
            }
        }
        let Some(first) = marks
            .first()
            .map(|m| m.rel.clone())
            .or_else(|| match &then {
                Some(e) => e.paths().first().map(|p| p.to_path_buf()),
                None => None,
            })
        else {
            return Ok(()); // all captured before: nothing to write
        };
        let intent = then.is_some();
        if let Some(e) = then {
            self.journal_lazy(&first, e)?;
        }
        if !intent && self.mark_if_nothing_to_lose(&marks) {
            return Ok(());
        }
        if let Err(source) = self.session.sync() {
            // Records may sit in the file without having reached the disk: accept no more
            // changes, or a path marked captured by a later sync could change unguarded.
            self.stop(&source);
            return Err(GuardError::Journal {
                path: first.display().to_string(),
                source,
            });
        }
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        for m in marks {
            if self.generation.load(Ordering::SeqCst) == m.generation {
                c.paths.insert(m.rel, m.entry);
            }
        }
        drop(c);
        self.reap();
        Ok(())
    }

    /// Marks `marks` captured without waiting for the disk when losing their records in a
    /// crash loses nothing rollback needs: each is the creation of a new name (`Absent`)
    /// directly in a directory the session made in this generation ([`Guard::made_dir`]),
    /// whose own durable `Absent` capture makes rollback remove it with everything in it
    /// (moved aside into the store when it holds entries no record names). Decided under the
    /// `captured` lock, which a checkpoint holds from its record to its generation bump, so
    /// either the checkpoint's fsync covers these records or the generation check fails.
    fn mark_if_nothing_to_lose(&self, marks: &[Mark]) -> bool {
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::SeqCst);
        let lazy = marks.iter().all(|m| {
            m.entry.absent
                && m.generation == generation
                && m.rel.parent().is_some_and(|d| c.born.contains(d))
        });
        if lazy {
            for m in marks {
                c.paths.insert(m.rel.clone(), m.entry);
            }
        }
        lazy
    }

    /// `rel` was just made by `mkdir`. When its capture in this generation was `Absent`, the
    /// session owns everything that will be created directly in it, until a checkpoint or
    /// until it is renamed or removed: a rename into it arrives with a durable intent, and a
    /// directory renamed into it is not one the session made, so entries created in *that*
    /// are journalled durably as before.
    pub fn made_dir(&self, rel: &Path) {
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        if c.paths.get(rel).is_some_and(|e| e.absent) {
            c.born.insert(rel.to_path_buf());
        }
    }

    fn journal_lazy(&self, rel: &Path, e: Event) -> Result<u64, GuardError> {
        self.session
            .append_lazy(e)
            .map_err(|source| GuardError::Journal {
                path: rel.display().to_string(),
                source,
            })
    }

    /// Reads `rel`'s state and appends its `Capture` without syncing; returns what to mark
    /// captured once the record is durable (None when it is captured already, and then
    /// nothing is appended). `known`: the object at `rel` and its stat, held by the caller
    /// (else the path is walked here). `marker`: appended after the capture, in its write.
    fn stage_capture(
        &self,
        root: BorrowedFd<'_>,
        rel: &Path,
        known: Option<Held<'_>>,
        marker: Option<Event>,
    ) -> Result<Option<Mark>, GuardError> {
        if self.is_captured(rel) {
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let io = |source| GuardError::Io {
            path: rel.display().to_string(),
            source,
        };
        // Refuse before reading a byte when the pre-image is too large for the store.
        let mut size = 0;
        // Held for the capture below: the path is walked once (or not at all when the caller
        // holds the object).
        let opened;
        let open = known.and_then(|(_, _, open)| open);
        let held = match known {
            Some((fd, st, _)) => Some((fd, *st)),
            None => match backing::open_path(root, rel) {
                Ok(fd) => {
                    let st = backing::stat_fd(fd.as_fd()).map_err(io)?;
                    opened = fd;
                    Some((opened.as_fd(), st))
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT)) => None,
                Err(e) => return Err(io(e)),
            },
        };
        if let Some((_, st)) = &held
            && st.kind() == backing::Kind::File
        {
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
        let refuse = |source| {
            let e = GuardError::Journal {
                path: rel.display().to_string(),
                source,
            };
            self.refused(rel, &e);
            e
        };
        let (before, inline) = match &held {
            Some((fd, st)) => State::capture_held(*fd, st, open, rel, &self.store),
            None => Ok((State::Absent, None)),
        }
        .map_err(refuse)?;
        // A small pre-image travels in the journal: the one fsync of `capture_then` makes it
        // durable together with its Capture; the object file is written by the `objects`
        // thread (an object file that is not, or not yet, there is rebuilt from the record).
        if let State::File { size, .. } = &before {
            self.stored_bytes.fetch_add(*size, Ordering::Relaxed);
        }
        let absent = before == State::Absent;
        // The object, its capture and the change's marker in one write.
        let object = inline.as_ref().map(|(id, z)| Event::Object {
            id: *id,
            zstd_hex: hex::encode(z),
        });
        let capture = Event::Capture {
            path: rel.to_path_buf(),
            before,
        };
        let first = self
            .session
            .append_all_lazy(object.into_iter().chain([capture]).chain(marker))
            .map_err(refuse)?;
        let seq = first + u64::from(inline.is_some());
        if let Some((id, z)) = inline {
            self.objects.queue(id, z);
        }
        Ok(Some(Mark {
            rel: rel.to_path_buf(),
            generation,
            entry: Entry { seq, absent },
        }))
    }

    /// Removes the regular file or symlink `name` of the directory `pfd` (at `rel`, the object
    /// `obj`, with one link, held by the caller as an fd opened beneath `pfd` and its stat) by
    /// parking it in the store's aside area instead of unlinking it
    /// (see `aside.rs`): its capture is journalled without an fsync, since the rename destroys
    /// nothing. Only the first removal in a directory waits for one (the directory's capture,
    /// whose seq names the parked file's origin). Returns false, having removed nothing, when
    /// this does not apply (no aside area, `rel` captured already, a name too long, the name
    /// swapped meanwhile): the caller then removes it the synchronous way.
    pub(crate) fn remove_aside(
        &self,
        root: BorrowedFd<'_>,
        pfd: BorrowedFd<'_>,
        rel: &Path,
        name: &OsStr,
        obj: (BorrowedFd<'_>, &backing::Stat),
    ) -> Result<bool, GuardError> {
        let key = (obj.1.dev, obj.1.ino);
        let Some(area) = &self.aside else {
            return Ok(false);
        };
        if self.is_captured(rel) {
            // Its pre-session state is durable already: the plain unlink costs no fsync.
            return Ok(false);
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.capture_then(root, &[parent], None)?;
        let c = self
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paths
            .get(parent)
            .map(|e| e.seq);
        let Some(c) = c else {
            return Ok(false); // a checkpoint came in between
        };
        if self.session.durable() <= c {
            // Captured without an fsync (in a directory the session made): `<c>/` may name
            // the parked file's origin only once its record is durable.
            self.sync_and_reap(parent)?;
        }
        let Some(Mark {
            entry: Entry { seq: s, .. },
            ..
        }) = self.stage_capture(root, rel, Some((obj.0, obj.1, None)), None)?
        else {
            return Ok(false);
        };
        // The object captured must be the one moved: an outside process may swap the name.
        let still = |k: Option<(u64, u64)>| k == Some(key);
        if !still(backing::stat_at(pfd, name).ok().map(|st| (st.dev, st.ino))) {
            return Ok(false);
        }
        let moved = match area.park(c, s, pfd, name) {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(false),
            Err(e) => {
                // The aside area failed (full, say): the synchronous path may still work.
                warn!("aside: parking {}: {e}", rel.display());
                return Ok(false);
            }
        };
        if !still(Some(moved)) {
            // Swapped in the instant between the check and the rename: put it back, or else
            // capture what was moved, durably, so nothing is lost.
            if area.unpark(s, pfd, name) {
                return Ok(false);
            }
            self.capture_parked(area, rel, s)?;
        }
        if area.pending() >= ASIDE_PENDING_MAX {
            // Bound what a crash leaves for readers to rebuild.
            self.sync_and_reap(rel)?;
        }
        Ok(true)
    }

    /// Journals (durably) the state of the file parked for capture `s`, as `rel`'s capture.
    fn capture_parked(
        &self,
        area: &crate::aside::Area,
        rel: &Path,
        s: u64,
    ) -> Result<(), GuardError> {
        let fd = area.parked_fd(s).map_err(|source| GuardError::Io {
            path: rel.display().to_string(),
            source,
        })?;
        let before = State::read_fd(fd.as_fd(), rel, Some(&self.store)).map_err(|source| {
            GuardError::Journal {
                path: rel.display().to_string(),
                source,
            }
        })?;
        self.journal(
            rel,
            Event::Capture {
                path: rel.to_path_buf(),
                before,
            },
        )
    }

    /// Makes every record appended so far durable (the agent fsynced a directory).
    pub fn sync(&self) -> Result<(), GuardError> {
        self.check_running()?;
        if self.overlay {
            return Ok(());
        }
        self.sync_and_reap(Path::new(""))
    }

    /// Makes every record durable and unlinks the parked files they cover.
    fn sync_and_reap(&self, rel: &Path) -> Result<(), GuardError> {
        if let Err(source) = self.session.sync() {
            self.stop(&source);
            return Err(GuardError::Journal {
                path: rel.display().to_string(),
                source,
            });
        }
        self.reap();
        Ok(())
    }

    /// Unlinks the parked files whose records a sync has covered.
    fn reap(&self) {
        if let Some(area) = &self.aside {
            area.reap(self.session.durable());
        }
    }

    /// Ends an agent's turn: journals a durable `Checkpoint` and forgets what was captured, so
    /// the first change of each path after it is captured again (its state at the checkpoint,
    /// which `rollback --to` restores). Returns the checkpoint's number and record seq. A file
    /// held open for writing across a checkpoint is not captured again until its next
    /// write-open: take checkpoints between turns, when the agent is idle.
    pub fn checkpoint(&self, label: Option<&str>) -> Result<(u64, u64), GuardError> {
        self.check_running()?;
        if self.overlay {
            return Err(GuardError::Io {
                path: String::new(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "checkpoints need snapshot mode: an overlay session changes nothing to undo",
                ),
            });
        }
        let mut c = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.checkpoints.load(Ordering::SeqCst) + 1;
        let seq = self
            .session
            .append(Event::Checkpoint {
                n,
                label: label.map(str::to_owned),
            })
            .map_err(|source| GuardError::Journal {
                path: String::new(),
                source,
            })?;
        self.checkpoints.store(n, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        c.paths.clear();
        c.born.clear();
        drop(c);
        self.reap();
        Ok((n, seq))
    }

    /// The store this session writes to.
    pub fn store_dir(&self) -> &Path {
        self.store.dir()
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
            crate::audit::emit(&crate::audit::AuditEvent::Stopped {
                reason: e.to_string(),
                errno,
            });
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
            crate::audit::denied("change", current, &e);
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
        let rels: Vec<&Path> = names.iter().map(PathBuf::as_path).collect();
        self.capture_then(root, &rels, None)?;
        Ok(names)
    }

    /// `new` became another name of the object `key`, which is at `src`.
    /// How many names of object `key` the session linked (0 when it linked none): the link
    /// count the agent is shown, since other names may be hidden from it.
    pub fn linked_names(&self, key: (u64, u64)) -> usize {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map_or(0, |s| s.len())
    }

    /// Records that the object `key` (dev, ino) known at `src` gained the name `new`.
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
        crate::audit::denied("write", rel, format_args!("no snapshot: {e}"));
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
        c.paths.retain(|p, _| !p.starts_with(rel));
        c.born.retain(|p| !p.starts_with(rel));
    }

    /// Captures `rels` and records a rename before it is attempted, with one journal fsync.
    pub fn capture_for_rename(
        &self,
        root: BorrowedFd<'_>,
        rels: &[&Path],
        from: &Path,
        to: &Path,
        exchange: bool,
    ) -> Result<(), GuardError> {
        let intent = Event::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            exchange,
        };
        self.capture_then(root, rels, Some(intent))
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

    /// Held while a name changes (unlink, rmdir, rename: from its journal record through the
    /// syscall) and while a post-image checks and records names: the kernel sends RELEASE
    /// after close(2) returns, so a post-image may race an unlink of the same name, and one
    /// journalled after the unlink would tell rollback the session left a file that is gone.
    pub fn namespace(&self) -> std::sync::MutexGuard<'_, ()> {
        self.namespace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Guard::post_image`] under the names of `fd`'s object that still lead to it beneath
    /// `root` (a name unlinked or renamed away since is skipped), checked and recorded under
    /// [`Guard::namespace`].
    pub fn post_image_current(&self, root: BorrowedFd<'_>, fd: BorrowedFd<'_>, names: &[PathBuf]) {
        match backing::stat_fd(fd) {
            Ok(st) => self.post_image_current_as(root, fd, &st, false, names),
            Err(_) => self.post_image(fd, names),
        }
    }

    /// [`Guard::post_image_current`] of a file the caller has just stated (`st`, in the same
    /// request): the post-image's metadata and kind come from that one stat. `readable`: `fd`
    /// is open for reading (not O_PATH, not write-only), so the bytes are read through it.
    pub(crate) fn post_image_current_as(
        &self,
        root: BorrowedFd<'_>,
        fd: BorrowedFd<'_>,
        st: &backing::Stat,
        readable: bool,
        names: &[PathBuf],
    ) {
        if self.overlay {
            return; // nothing to record (see `post_image`): no names to check either
        }
        let _ns = self.namespace();
        let current: Vec<PathBuf> = names
            .iter()
            .filter(|p| {
                backing::open_path(root, p)
                    .and_then(|f| backing::stat_fd(f.as_fd()))
                    .is_ok_and(|s| (s.dev, s.ino) == (st.dev, st.ino))
            })
            .cloned()
            .collect();
        self.post_image_as(fd, Some((st, readable)), &current);
    }

    /// Whether the agent's changes reach the real folder (snapshot mode). In overlay mode they
    /// land in the upper layer, which names files by overlayfs's own lookups.
    pub(crate) fn changes_real_folder(&self) -> bool {
        !self.overlay
    }

    /// Whether written files get post-images (snapshot mode; an overlay session records none).
    pub(crate) fn keeps_post_images(&self) -> bool {
        !self.overlay
    }

    /// Records the state the session left a written file in, under each of its `names`, after
    /// it is closed. A post-image that cannot be journalled is never dropped silently: the
    /// mount stops accepting writes (ENOSPC when the disk is full) and says why.
    pub fn post_image(&self, fd: BorrowedFd<'_>, names: &[PathBuf]) {
        self.post_image_as(fd, None, names)
    }

    /// [`Guard::post_image`], with the file's stat when the caller has just taken it (and
    /// whether `fd` is open for reading).
    fn post_image_as(
        &self,
        fd: BorrowedFd<'_>,
        st: Option<(&backing::Stat, bool)>,
        names: &[PathBuf],
    ) {
        if self.overlay || names.is_empty() {
            return;
        }
        let after = match st {
            Some((st, true)) if st.kind() == backing::Kind::File => {
                State::read_open_file(fd, st, &names[0])
            }
            Some((st, _)) => State::read_fd_as(fd, st, &names[0], None),
            None => State::read_fd(fd, &names[0], None),
        };
        match after {
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

    /// Marks the session as cleanly ended (on unmount), once every lazily stored object is on
    /// disk: readers trust an ended session's objects without rebuilding them from the journal.
    pub fn end(&self) {
        if let Some(area) = &self.aside {
            // Every parked file's records made durable, then the files themselves dropped:
            // an ended session leaves nothing aside.
            match self.session.sync() {
                Ok(()) => {
                    self.reap();
                    area.finish();
                }
                Err(e) => warn!("journal: {e}: parked files are left for the session's readers"),
            }
        }
        tracing::info!(
            session = self.session.id(),
            "journal: {} fdatasyncs",
            self.session.syncs()
        );
        if !self.objects.settle() {
            warn!(
                "store: an object file could not be written: session left unended, its objects are rebuilt from the journal"
            );
            return;
        }
        if !self.overlay
            && let Err(e) = crate::store::syncfs(self.store.dir())
        {
            warn!("store: {e}: session left unended, its objects are rebuilt from the journal");
            return;
        }
        if let Err(e) = self.session.append(Event::SessionEnd) {
            warn!("journal: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The guard without FUSE: a real store and a real scope in a temp dir, driven the way the
    //! write path drives it (`capture_object` before a change, `linked`/`renamed`/`unlinked`
    //! after one), then the journal read back.
    use super::*;
    use std::fs;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::MetadataExt;

    struct Env {
        _tmp: tempfile::TempDir,
        scope: PathBuf,
        store_dir: PathBuf,
        root: OwnedFd,
    }

    fn env() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let scope = tmp.path().join("scope");
        let store_dir = tmp.path().join("store");
        fs::create_dir_all(scope.join("d")).unwrap();
        fs::write(scope.join("a"), "a before\n").unwrap();
        fs::write(scope.join("d/f"), "f before\n").unwrap();
        let root = backing::open_root(&scope).unwrap();
        Env {
            _tmp: tmp,
            scope,
            store_dir,
            root,
        }
    }

    fn guard(e: &Env, mode: WriteMode, max: u64, quota: Option<u64>) -> Guard {
        let store = Store::create_or_open(&e.store_dir).unwrap();
        Guard::start(store, &e.scope, mode, "test", max, quota).unwrap()
    }

    fn key(p: &Path) -> (u64, u64) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// The paths of the session's `Capture` records, in order.
    fn captures(e: &Env, g: &Guard) -> Vec<PathBuf> {
        let store = Store::open(&e.store_dir).unwrap();
        store
            .read_session(g.session_id())
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.event {
                Event::Capture { path, .. } => Some(path),
                _ => None,
            })
            .collect()
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// Makes every later write to the session's journal fail with ENOSPC, as on a full disk:
    /// the journal's fd is pointed at /dev/full.
    fn fill_disk_under_journal(g: &Guard) {
        let journal = g.session.path().to_path_buf();
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut done = false;
        for e in fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if fs::read_link(e.path()).ok().as_deref() == Some(journal.as_path()) {
                let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
                // `n` is the journal's open fd (owned by the guard, which outlives this call).
                crate::sys::replace_fd(n, std::os::fd::AsFd::as_fd(&full)).unwrap();
                done = true;
            }
        }
        assert!(done, "journal fd of {} not found", journal.display());
    }

    /// A first change's marker goes in the capture's journal write, so the capture's fsync
    /// makes it durable too; a later change of the captured path appends its marker alone,
    /// without an fsync.
    #[test]
    fn a_first_change_marker_is_durable_with_its_capture() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        let fd = backing::open_path(e.root.as_fd(), Path::new("a")).unwrap();
        let st = backing::stat_fd(fd.as_fd()).unwrap();
        let held = Some((fd.as_fd(), &st));
        let events = || {
            let store = Store::open(&e.store_dir).unwrap();
            store
                .read_session(g.session_id())
                .unwrap()
                .into_iter()
                .map(|r| r.event)
                .collect::<Vec<_>>()
        };
        let before = events().len();
        g.capture_for_change(e.root.as_fd(), Path::new("a"), held, None, "open-write")
            .unwrap();
        let recs = events();
        let tail = &recs[before..];
        assert!(
            matches!(
                tail,
                [
                    Event::Object { .. },
                    Event::Capture { .. },
                    Event::Change { op, .. }
                ] if op == "open-write"
            ),
            "{tail:?}"
        );
        assert_eq!(g.session.durable(), recs.len() as u64, "marker not durable");
        let syncs = g.session.syncs();
        g.capture_for_change(e.root.as_fd(), Path::new("a"), held, None, "setattr")
            .unwrap();
        let recs = events();
        assert!(matches!(recs.last(), Some(Event::Change { op, .. }) if op == "setattr"));
        assert_eq!(
            g.session.syncs(),
            syncs,
            "a captured path's marker costs no fsync"
        );
    }

    #[test]
    fn first_change_captures_once_and_later_changes_are_free() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        fs::write(e.scope.join("a"), "a after\n").unwrap();
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        assert_eq!(captures(&e, &g), vec![p("a")]);
        // The capture holds the state before the first change, not after it.
        let store = Store::open(&e.store_dir).unwrap();
        let recs = store.read_session(g.session_id()).unwrap();
        let before = recs
            .iter()
            .find_map(|r| match &r.event {
                Event::Capture { before, .. } => Some(before.clone()),
                _ => None,
            })
            .unwrap();
        let State::File { size, .. } = before else {
            panic!("{before:?}")
        };
        assert_eq!(size, "a before\n".len() as u64);
    }

    /// Design, "the agent chooses every name": a first change through any name captures the
    /// object under all of its names; a second change through another name captures nothing.
    #[test]
    fn second_write_through_another_hard_link_name_is_not_captured_twice() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        fs::hard_link(e.scope.join("a"), e.scope.join("d/b")).unwrap();
        let k = key(&e.scope.join("a"));
        g.linked(k, Path::new("a"), Path::new("d/b"));
        let names = g
            .capture_object(e.root.as_fd(), k, Path::new("a"), 2)
            .unwrap();
        assert_eq!(names, vec![p("a"), p("d/b")]);
        let names = g
            .capture_object(e.root.as_fd(), k, Path::new("d/b"), 2)
            .unwrap();
        assert_eq!(names, vec![p("a"), p("d/b")]);
        assert_eq!(captures(&e, &g), vec![p("a"), p("d/b")]);
    }

    #[test]
    fn hard_link_made_outside_the_mount_is_refused_not_written_through() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        fs::hard_link(e.scope.join("a"), e.scope.join("elsewhere")).unwrap();
        let k = key(&e.scope.join("a"));
        let err = g
            .capture_object(e.root.as_fd(), k, Path::new("a"), 2)
            .unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::UnknownLinks {
                    nlink: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.errno(), libc::EACCES);
        assert!(captures(&e, &g).is_empty());
    }

    /// A name the guard remembered but that an outside rename moved away no longer counts:
    /// the object is then refused instead of captured under a stale name.
    #[test]
    fn a_remembered_link_name_moved_away_outside_is_not_trusted() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        fs::hard_link(e.scope.join("a"), e.scope.join("b")).unwrap();
        let k = key(&e.scope.join("a"));
        g.linked(k, Path::new("a"), Path::new("b"));
        fs::rename(e.scope.join("b"), e.scope.join("hidden")).unwrap();
        let err = g
            .capture_object(e.root.as_fd(), k, Path::new("a"), 2)
            .unwrap_err();
        assert!(
            matches!(err, GuardError::UnknownLinks { known: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn link_names_follow_a_directory_rename_and_an_unlink() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        fs::hard_link(e.scope.join("a"), e.scope.join("d/b")).unwrap();
        let k = key(&e.scope.join("a"));
        g.linked(k, Path::new("a"), Path::new("d/b"));
        fs::rename(e.scope.join("d"), e.scope.join("e")).unwrap();
        g.renamed(Path::new("d"), Path::new("e"), false);
        let names = g.names_of(e.root.as_fd(), k, Path::new("a"), 2).unwrap();
        assert_eq!(names, vec![p("a"), p("e/b")]);
        fs::remove_file(e.scope.join("e/b")).unwrap();
        g.unlinked(k, Path::new("e/b"));
        assert!(
            g.names.lock().unwrap().is_empty(),
            "one name left: forgotten"
        );
        let names = g.names_of(e.root.as_fd(), k, Path::new("a"), 1).unwrap();
        assert_eq!(names, vec![p("a")]);
    }

    #[test]
    fn a_name_replaced_by_a_rename_is_no_longer_a_link_name() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        let k = (1, 2);
        g.linked(k, Path::new("a"), Path::new("b"));
        g.linked(k, Path::new("a"), Path::new("c"));
        g.renamed(Path::new("x"), Path::new("b"), false);
        assert_eq!(
            g.names.lock().unwrap()[&k],
            BTreeSet::from([p("a"), p("c")])
        );
        g.renamed(Path::new("a"), Path::new("c"), true);
        assert_eq!(
            g.names.lock().unwrap()[&k],
            BTreeSet::from([p("a"), p("c")]),
            "an exchange swaps the names, both stay"
        );
    }

    /// A path that was removed or renamed away is captured again on its next change: the new
    /// object there must be recorded (as it is now), or rollback would restore the wrong one.
    #[test]
    fn a_path_re_created_after_its_directory_was_removed_is_captured_again() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("d/f")).unwrap();
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        g.forget_subtree(Path::new("d"));
        g.capture(e.root.as_fd(), Path::new("d/f")).unwrap();
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        assert_eq!(captures(&e, &g), vec![p("d/f"), p("a"), p("d/f")]);
    }

    /// Parks `rel` (a name in `dir`) the way the write path does, returning whether it did.
    fn park(e: &Env, g: &Guard, dir: &str, rel: &str) -> bool {
        let pfd = backing::open_path(e.root.as_fd(), Path::new(dir)).unwrap();
        let name = Path::new(rel).file_name().unwrap();
        let fd = backing::lookup(pfd.as_fd(), name).unwrap();
        let st = backing::stat_fd(fd.as_fd()).unwrap();
        g.remove_aside(
            e.root.as_fd(),
            pfd.as_fd(),
            Path::new(rel),
            name,
            (fd.as_fd(), &st),
        )
        .unwrap()
    }

    /// A removal parked aside costs no journal fsync, and the records a crash lost with the
    /// journal's un-synced tail are rebuilt by the session's readers from the parked file, at
    /// its path, also in a directory the session made (captured `absent`). A path captured
    /// already is removed the plain way.
    #[test]
    fn parked_removals_whose_records_a_crash_lost_are_rebuilt_by_readers() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("n")).unwrap();
        fs::create_dir(e.scope.join("n")).unwrap();
        fs::write(e.scope.join("n/x"), "made outside\n").unwrap();
        assert!(park(&e, &g, "d", "d/f"));
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        assert!(!park(&e, &g, "", "a"), "captured already: the plain way");
        let durable = std::fs::read_to_string(g.session.path()).unwrap();
        let syncs = g.session.syncs();
        assert!(park(&e, &g, "n", "n/x"));
        assert_eq!(g.session.syncs(), syncs, "a parked removal does not sync");
        assert!(!e.scope.join("n/x").exists() && !e.scope.join("d/f").exists());
        let id = g.session_id().to_string();
        drop(g); // a crash: no end
        let store = Store::open(&e.store_dir).unwrap();
        let lost = std::fs::read_to_string(store.session_path(&id)).unwrap();
        let records = |s: &str| s.trim_end_matches('\0').len();
        assert!(records(&lost) > records(&durable));
        std::fs::write(store.session_path(&id), &durable).unwrap();
        let recs = store.read_session(&id).unwrap();
        let caps: Vec<(PathBuf, State)> = recs
            .iter()
            .filter_map(|r| match &r.event {
                Event::Capture { path, before } => Some((path.clone(), before.clone())),
                _ => None,
            })
            .collect();
        let of = |p: &str| caps.iter().filter(|(q, _)| q == Path::new(p)).count();
        assert_eq!((of("d/f"), of("n/x")), (1, 1), "{caps:?}");
        let Some((_, State::File { hash, .. })) = caps.last() else {
            panic!("{caps:?}")
        };
        assert_eq!(store.read_bytes(hash).unwrap(), b"made outside\n");
        assert!(!crate::aside::session_dir(&e.store_dir, &id).exists());
        // Read again: nothing more to rebuild.
        assert_eq!(store.read_session(&id).unwrap().len(), recs.len());
    }

    /// A clean end syncs, drops every parked file and the session's aside directory.
    #[test]
    fn a_clean_end_leaves_nothing_aside() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        assert!(park(&e, &g, "d", "d/f"));
        let dir = crate::aside::session_dir(&e.store_dir, g.session_id());
        assert!(dir.exists());
        g.end();
        assert!(!dir.exists());
    }

    /// A small pre-image is journalled with its capture, so a crash that loses (or tears) the
    /// lazily written object file costs nothing: reading the unended session rebuilds it.
    #[test]
    fn a_small_pre_image_lost_in_a_crash_is_rebuilt_from_the_journal() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        // Written off the request path, and rebuilt from the journal until then.
        assert!(g.objects.settle());
        let store = Store::open(&e.store_dir).unwrap();
        let recs = store.read_session(g.session_id()).unwrap();
        let id = recs
            .iter()
            .find_map(|r| match &r.event {
                Event::Object { id, .. } => Some(*id),
                _ => None,
            })
            .expect("an Object record");
        let (cap, obj) = (
            recs.iter()
                .position(|r| matches!(r.event, Event::Capture { .. }))
                .unwrap(),
            recs.iter()
                .position(|r| matches!(r.event, Event::Object { .. }))
                .unwrap(),
        );
        assert!(obj < cap, "the object is journalled before the capture");
        for damage in ["remove", "truncate", "garble"] {
            let path = store.object_path(&id);
            match damage {
                "remove" => fs::remove_file(&path).unwrap(),
                "truncate" => fs::write(&path, b"").unwrap(),
                _ => fs::write(&path, b"\x28\xb5\x2f\xfd garbage").unwrap(),
            }
            assert!(store.verify_object(&id).is_err(), "{damage}");
            store.read_session(g.session_id()).unwrap();
            assert_eq!(store.read_bytes(&id).unwrap(), b"a before\n", "{damage}");
        }
        // A later capture of the same bytes does not trust a torn copy it finds.
        fs::write(store.object_path(&id), b"").unwrap();
        fs::write(e.scope.join("b"), "a before\n").unwrap();
        g.capture(e.root.as_fd(), Path::new("b")).unwrap();
        assert!(g.objects.settle());
        assert_eq!(store.verify_object(&id).unwrap(), 9);
        // A session that ended cleanly flushed its objects and is not rebuilt.
        g.end();
        fs::remove_file(store.object_path(&id)).unwrap();
        store.read_session(g.session_id()).unwrap();
        assert!(!store.has(&id));
    }

    /// An object file the writer thread could not write leaves the session unended, so its
    /// readers rebuild the object from the journal instead of trusting the missing file.
    #[test]
    fn an_object_file_that_could_not_be_written_leaves_the_session_unended() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        let id = crate::store::ObjectId::of(b"a before\n");
        let store = Store::open(&e.store_dir).unwrap();
        let sub = store.object_path(&id).parent().unwrap().to_path_buf();
        // Its fan-out directory is taken by a file: the object cannot be placed.
        fs::write(&sub, b"").unwrap();
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        g.end();
        fs::remove_file(&sub).unwrap();
        let recs = store.read_session(g.session_id()).unwrap();
        assert!(
            !recs.iter().any(|r| matches!(r.event, Event::SessionEnd)),
            "a session with a lost object file must not be marked ended"
        );
        // Reading the unended session rebuilt the object from its record.
        assert_eq!(store.read_bytes(&id).unwrap(), b"a before\n");
    }

    #[test]
    fn a_pre_image_above_snapshot_max_size_is_refused_before_it_is_read() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, 4, None);
        let err = g.capture(e.root.as_fd(), Path::new("a")).unwrap_err();
        assert!(matches!(err, GuardError::TooLarge { max: 4, .. }), "{err}");
        assert_eq!(err.errno(), libc::EFBIG);
        assert!(captures(&e, &g).is_empty());
        // The refusal is journalled; an absent path (a create) needs no pre-image at all.
        let store = Store::open(&e.store_dir).unwrap();
        let recs = store.read_session(g.session_id()).unwrap();
        assert!(recs.iter().any(|r| matches!(&r.event,
            Event::Change { path, op } if path == Path::new("a") && op.starts_with("refused: "))));
        g.capture(e.root.as_fd(), Path::new("new")).unwrap();
        assert_eq!(captures(&e, &g), vec![p("new")]);
    }

    #[test]
    fn the_store_quota_refuses_a_capture_with_enospc() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, Some(0));
        let err = g.capture(e.root.as_fd(), Path::new("a")).unwrap_err();
        assert!(matches!(err, GuardError::Quota { quota: 0, .. }), "{err}");
        assert_eq!(err.errno(), libc::ENOSPC);
    }

    #[test]
    fn overlay_mode_snapshots_nothing() {
        let e = env();
        let g = guard(&e, WriteMode::Overlay, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        fs::hard_link(e.scope.join("a"), e.scope.join("outside-link")).unwrap();
        let names = g
            .capture_object(e.root.as_fd(), key(&e.scope.join("a")), Path::new("a"), 2)
            .unwrap();
        assert_eq!(names, vec![p("a")]);
        assert!(captures(&e, &g).is_empty());
    }

    /// A change marker that could not be journalled (disk full) must stop the session: a
    /// rollback reading a journal without it would take the agent's bytes for the original.
    #[test]
    fn a_lost_change_record_stops_every_later_change_with_its_errno() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        g.check_running().unwrap();
        fill_disk_under_journal(&g);
        g.record_change(Path::new("a"), "write");
        let err = g.check_running().unwrap_err();
        assert!(matches!(err, GuardError::Stopped { .. }), "{err}");
        assert_eq!(err.errno(), libc::ENOSPC);
        // Every later change is refused, even one to a path captured before.
        for rel in ["a", "d/f"] {
            let err = g.capture(e.root.as_fd(), Path::new(rel)).unwrap_err();
            assert_eq!(err.errno(), libc::ENOSPC, "{rel}: {err}");
        }
        let err = g
            .capture_object(e.root.as_fd(), key(&e.scope.join("a")), Path::new("a"), 1)
            .unwrap_err();
        assert!(matches!(err, GuardError::Stopped { .. }), "{err}");
    }

    #[test]
    fn a_lost_post_image_stops_the_guard() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        g.capture(e.root.as_fd(), Path::new("a")).unwrap();
        fill_disk_under_journal(&g);
        let fd = backing::open_path(e.root.as_fd(), Path::new("a")).unwrap();
        g.post_image(fd.as_fd(), &[p("a")]);
        assert_eq!(g.check_running().unwrap_err().errno(), libc::ENOSPC);
    }

    /// What the write path does for a create: the directory and the new name, then the create.
    /// Renames `from` to `to` in the scope the way the write path does (intent, rename, both
    /// subtrees forgotten).
    fn rename(e: &Env, g: &Guard, from: &str, to: &str) {
        g.capture_for_rename(
            e.root.as_fd(),
            &[Path::new(from), Path::new(to)],
            &p(from),
            &p(to),
            false,
        )
        .unwrap();
        fs::rename(e.scope.join(from), e.scope.join(to)).unwrap();
        g.forget_subtree(&p(from));
        g.forget_subtree(&p(to));
    }

    fn create(e: &Env, g: &Guard, rel: &str, dir: bool) {
        let rel = Path::new(rel);
        let parent = rel.parent().unwrap();
        g.capture_then(e.root.as_fd(), &[parent, rel], None)
            .unwrap();
        if dir {
            fs::create_dir(e.scope.join(rel)).unwrap();
            g.made_dir(rel);
        } else {
            fs::write(e.scope.join(rel), "new\n").unwrap();
        }
    }

    /// The untar case: a directory made by the session costs one fsync, everything created in
    /// it (and in directories made in it) none, since rollback removes it whole.
    #[test]
    fn entries_made_in_a_directory_the_session_made_cost_no_fsync() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        create(&e, &g, "un", true);
        let after_mkdir = g.session.syncs();
        assert!(after_mkdir >= 1);
        create(&e, &g, "un/sub", true);
        for i in 0..20 {
            create(&e, &g, &format!("un/f{i}"), false);
            create(&e, &g, &format!("un/sub/g{i}"), false);
        }
        assert_eq!(g.session.syncs(), after_mkdir);
        // Every one of them is journalled all the same (for `log`, `diff`, and rollback).
        assert_eq!(captures(&e, &g).len(), 1 + 1 + 1 + 40); // "", un, un/sub, files
        // In a directory that was there before the session, each create waits for its record.
        create(&e, &g, "d/new1", false);
        create(&e, &g, "d/new2", false);
        assert_eq!(g.session.syncs(), after_mkdir + 2);
    }

    /// A directory the session did not make gets no such licence by being moved into one it
    /// did, nor does a made one once it moves or a checkpoint ends the turn (rollback --to then
    /// keeps it), nor an existing file (its pre-image must be durable).
    #[test]
    fn only_new_names_directly_in_a_made_directory_skip_the_fsync() {
        let e = env();
        let g = guard(&e, WriteMode::Snapshot, u64::MAX, None);
        create(&e, &g, "un", true);
        // `d` (there before) renamed into `un`: entries made in it are journalled durably.
        let n = g.session.syncs();
        rename(&e, &g, "d", "un/d");
        assert_eq!(
            g.session.syncs(),
            n + 1,
            "a rename intent is always durable"
        );
        create(&e, &g, "un/d/x", false);
        assert_eq!(g.session.syncs(), n + 2);
        // An existing file in a made directory: its pre-image is durable first.
        fs::write(e.scope.join("un/outside-made"), "someone else's\n").unwrap();
        g.capture(e.root.as_fd(), &p("un/outside-made")).unwrap();
        assert_eq!(g.session.syncs(), n + 3);
        // The made directory renamed: no longer trusted under either name.
        create(&e, &g, "un/y", false);
        assert_eq!(g.session.syncs(), n + 3);
        rename(&e, &g, "un", "un2");
        create(&e, &g, "un2/z", false);
        assert_eq!(g.session.syncs(), n + 5);
        // A checkpoint ends the licence of directories made before it.
        create(&e, &g, "fresh", true);
        g.checkpoint(None).unwrap();
        let n = g.session.syncs();
        create(&e, &g, "fresh/after", false);
        assert_eq!(g.session.syncs(), n + 1);
    }
}
