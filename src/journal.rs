//! The session journal: one append-only JSON-lines file per session, hash-chained.
//!
//! Why a chain: the journal is the only evidence of what an agent did and the only recipe for
//! undoing it, so an edited, removed or reordered record must be detectable. Each [`Record`]
//! carries `prev`, the blake3 (hex) of the previous line's exact bytes (without its newline;
//! 64 zeros for the first line), and `seq`, its 0-based index.
//!
//! Why fsync per record: "the journal is written before the write it guards". [`SessionWriter::append`]
//! returns only after the line is on disk (`sync_data`), and the guard lets a change through only
//! after that. So after a crash the last line may be torn (a partial write), but the change it
//! guarded cannot have happened: a torn *last* line is ignored with a warning by readers
//! ([`SessionLog::tail`]), while anything wrong before it is a chain error naming file:line.
//!
//! Why zeros ahead of the records: the file is grown by zeros ([`PREALLOC`]) and each record is
//! written over them, so its fdatasync flushes data without a metadata commit. That widens
//! what a crash can leave after the last synced record (zeros, or a later page without the
//! earlier one), all of it ignored as a torn tail; the `synced` claims tell such a tail from
//! zeros where synced records were ([`parse_journal`]).
//! A writer whose write or fsync failed refuses every further append (the file may end in a
//! partial line that a later line must not follow).
//!
//! Paths in events are relative to the scope root and serialised losslessly: a JSON string when
//! they are UTF-8, `{"bytes_hex": "…"}` otherwise. The empty path is the scope root itself.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::backing;
use crate::store::{ObjectId, Store, StoreError};
use crate::time::{now_ns, session_stamp};

/// `prev` of the first record of a session.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of the journal; every variant names the file (and line) it is about.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}:{line}: {msg}", file.display())]
    Corrupt {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("no session {id:?} in {} (see `veilfs log`)", dir.display())]
    NoSession { id: String, dir: PathBuf },
    #[error("{}: an earlier append failed; the journal refuses further records", file.display())]
    Poisoned { file: PathBuf },
    #[error("a session must start with a SessionStart event")]
    NotStart,
    #[error("cannot serialise a journal record: {0}")]
    Serialize(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lossless serde for paths: a string when UTF-8, `{"bytes_hex": …}` otherwise.
pub(crate) mod relpath {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Str(String),
        Bytes { bytes_hex: String },
    }

    pub(crate) fn serialize<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(t) => Repr::Str(t.to_owned()),
            None => Repr::Bytes {
                bytes_hex: hex::encode(p.as_os_str().as_bytes()),
            },
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Str(s) => Ok(PathBuf::from(s)),
            Repr::Bytes { bytes_hex } => hex::decode(&bytes_hex)
                .ok()
                .map(|b| PathBuf::from(OsString::from_vec(b)))
                .ok_or_else(|| serde::de::Error::custom("bad bytes_hex path")),
        }
    }
}

/// Metadata of one object at one moment. `mode` includes the file-type bits; `xattrs` are
/// (name, hex value) pairs, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(String, String)>,
}

/// The state of one path at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum State {
    /// Nothing at the path.
    Absent,
    /// A regular file.
    File {
        /// Its content's object id.
        hash: ObjectId,
        /// Its size.
        size: u64,
        /// Its metadata.
        meta: Meta,
    },
    /// A directory (its entries are captured on their own).
    Dir {
        /// Its metadata.
        meta: Meta,
    },
    /// A symbolic link.
    Symlink {
        #[serde(with = "relpath")]
        /// Where it points.
        target: PathBuf,
        /// Its metadata.
        meta: Meta,
    },
    /// A device, fifo or socket.
    Special {
        /// Its device number.
        rdev: u64,
        /// Its metadata.
        meta: Meta,
    },
}

impl State {
    /// The metadata of anything but `Absent`.
    pub fn meta(&self) -> Option<&Meta> {
        match self {
            State::Absent => None,
            State::File { meta, .. }
            | State::Dir { meta }
            | State::Symlink { meta, .. }
            | State::Special { meta, .. } => Some(meta),
        }
    }

    /// The object this state refers to, if any.
    pub fn object(&self) -> Option<&ObjectId> {
        match self {
            State::File { hash, .. } => Some(hash),
            _ => None,
        }
    }

    /// Same kind and same content (file hash, link target, device number); metadata ignored.
    pub fn same_content(&self, other: &State) -> bool {
        match (self, other) {
            (State::Absent, State::Absent) => true,
            (State::File { hash: a, .. }, State::File { hash: b, .. }) => a == b,
            (State::Dir { .. }, State::Dir { .. }) => true,
            (State::Symlink { target: a, .. }, State::Symlink { target: b, .. }) => a == b,
            (State::Special { rdev: a, meta: m }, State::Special { rdev: b, meta: n }) => {
                a == b && m.mode & libc::S_IFMT == n.mode & libc::S_IFMT
            }
            _ => false,
        }
    }

    /// A short human description: `file 3f2a1b0c 0644 (12 B)`, `dir 0755`, `absent`…
    pub fn describe(&self) -> String {
        match self {
            State::Absent => "absent".into(),
            State::File { hash, size, meta } => {
                format!(
                    "file {} {:04o} ({size} B)",
                    hash.short(),
                    meta.mode & 0o7777
                )
            }
            State::Dir { meta } => format!("dir {:04o}", meta.mode & 0o7777),
            State::Symlink { target, .. } => format!("symlink -> {}", target.display()),
            State::Special { rdev, meta } => format!("special {:o} rdev {rdev}", meta.mode),
        }
    }

    /// Reads the current state of `rel` beneath `root`. With a store, a regular file's content
    /// is stored (`put_file`) so the state can be restored later; without one it is only hashed
    /// (for comparisons). A missing path (or parent) is `Absent`.
    pub fn read(
        root: BorrowedFd<'_>,
        rel: &Path,
        store: Option<&Store>,
    ) -> Result<State, JournalError> {
        let fd = match backing::open_path(root, rel) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(State::Absent);
            }
            Err(e) => return Err(io_err(rel)(e)),
        };
        Self::read_fd(fd.as_fd(), rel, store)
    }

    /// [`State::read`] for a capture: a regular file of at most [`crate::store::INLINE_MAX`]
    /// bytes is read whole and packed ([`Store::pack`], not stored), and its compressed bytes
    /// returned for the caller to journal in an [`Event::Object`] before the `Capture` and
    /// then to have written by a [`crate::store::LazyWriter`].
    pub fn read_for_capture(
        root: BorrowedFd<'_>,
        rel: &Path,
        store: &Store,
    ) -> Result<(State, Option<Inline>), JournalError> {
        let fd = match backing::open_path(root, rel) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok((State::Absent, None));
            }
            Err(e) => return Err(io_err(rel)(e)),
        };
        let st = backing::stat_fd(fd.as_fd()).map_err(io_err(rel))?;
        Self::capture_held(fd.as_fd(), &st, None, rel, store)
    }

    /// [`State::read_for_capture`] of an object the caller already holds (an O_PATH `fd` of
    /// `rel`, with its stat `st`): the capture does not walk the path a second time.
    /// `open`: the object open for reading (a write handle the caller opened already), read
    /// through instead of a reopen.
    pub(crate) fn capture_held(
        fd: BorrowedFd<'_>,
        st: &backing::Stat,
        open: Option<BorrowedFd<'_>>,
        rel: &Path,
        store: &Store,
    ) -> Result<(State, Option<Inline>), JournalError> {
        if st.kind() != backing::Kind::File || st.size > crate::store::INLINE_MAX {
            return Ok((Self::read_fd_as(fd, st, rel, Some(store))?, None));
        }
        let reopened;
        let f = match open {
            Some(f) => f,
            None => {
                reopened = backing::reopen_as(fd, backing::Kind::File, libc::O_RDONLY)
                    .map_err(io_err(rel))?;
                reopened.as_fd()
            }
        };
        let meta = meta_of_open(f, st).map_err(io_err(rel))?;
        let data = read_at_most(f, st.size, crate::store::INLINE_MAX + 1).map_err(io_err(rel))?;
        if data.len() as u64 > crate::store::INLINE_MAX {
            // It grew since the stat: store it the ordinary (durable) way.
            return Ok((Self::read_fd(fd, rel, Some(store))?, None));
        }
        let (hash, z) = store.pack(&data)?;
        let state = State::File {
            hash,
            size: data.len() as u64,
            meta,
        };
        Ok((state, Some((hash, z))))
    }

    /// [`State::read`] of an object already held as an (O_PATH) fd.
    pub fn read_fd(
        fd: BorrowedFd<'_>,
        rel: &Path,
        store: Option<&Store>,
    ) -> Result<State, JournalError> {
        let st = backing::stat_fd(fd).map_err(io_err(rel))?;
        Self::read_fd_as(fd, &st, rel, store)
    }

    /// The post-image state of a regular file the caller holds open for reading as `fd` and
    /// has just stated (`st`): hashed through that descriptor, with no reopen.
    pub(crate) fn read_open_file(
        fd: BorrowedFd<'_>,
        st: &backing::Stat,
        rel: &Path,
    ) -> Result<State, JournalError> {
        let meta = meta_of_open(fd, st).map_err(io_err(rel))?;
        let (hash, size) = hash_fd(fd, st.size).map_err(io_err(rel))?;
        Ok(State::File { hash, size, meta })
    }

    /// [`State::read_fd`] of an object the caller has just stated (`st`), in the same request:
    /// its kind, metadata and size hint come from that stat instead of another.
    pub(crate) fn read_fd_as(
        fd: BorrowedFd<'_>,
        st: &backing::Stat,
        rel: &Path,
        store: Option<&Store>,
    ) -> Result<State, JournalError> {
        let meta = meta_of(fd, st).map_err(io_err(rel))?;
        Ok(match st.kind() {
            backing::Kind::File => {
                let f = backing::reopen_as(fd, backing::Kind::File, libc::O_RDONLY)
                    .map_err(io_err(rel))?;
                let (hash, size) = match store {
                    Some(s) => s.put_file(&f)?,
                    None => hash_fd(f.as_fd(), st.size).map_err(io_err(rel))?,
                };
                State::File { hash, size, meta }
            }
            backing::Kind::Dir => State::Dir { meta },
            backing::Kind::Symlink => State::Symlink {
                target: backing::readlink_fd(fd).map_err(io_err(rel))?.into(),
                meta,
            },
            _ => State::Special {
                rdev: st.rdev,
                meta,
            },
        })
    }
}

/// A pre-image's id and compressed bytes, to journal in an [`Event::Object`].
pub(crate) type Inline = (ObjectId, Vec<u8>);

/// The [`Meta`] of a held object (xattrs only for regular files and directories).
pub(crate) fn meta_of(fd: BorrowedFd<'_>, st: &backing::Stat) -> io::Result<Meta> {
    let xattrs = if matches!(st.kind(), backing::Kind::File | backing::Kind::Dir) {
        backing::all_xattrs_as(fd, st.kind())?
    } else {
        Vec::new()
    };
    Ok(meta_with(st, xattrs))
}

/// The [`Meta`] of an object with stat `st` and extended attributes `xattrs`.
fn meta_with(st: &backing::Stat, xattrs: Vec<(std::ffi::OsString, Vec<u8>)>) -> Meta {
    let mut xattrs: Vec<(String, String)> = xattrs
        .into_iter()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), hex::encode(&value)))
        .collect();
    xattrs.sort();
    Meta {
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        atime: st.atime,
        mtime: st.mtime,
        xattrs,
    }
}

/// The bytes of the regular file open for reading as `fd` from its start, up to `max` (with
/// positioned reads: the descriptor's offset, a handle's, is left alone); `size` (its size at
/// the last stat) only sizes the buffer.
fn read_at_most(fd: BorrowedFd<'_>, size: u64, max: u64) -> io::Result<Vec<u8>> {
    let mut data = vec![0u8; size.min(max) as usize + 32];
    let mut n = 0;
    loop {
        if n == data.len() {
            if n as u64 >= max {
                break;
            }
            data.resize((data.len() * 2).min(max as usize), 0);
        }
        match rustix::io::pread(fd, &mut data[n..], n as u64).map_err(io::Error::from) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    data.truncate(n);
    Ok(data)
}

/// [`meta_of`] of a regular file open for reading (not O_PATH): its xattrs are read through
/// the fd itself.
fn meta_of_open(fd: BorrowedFd<'_>, st: &backing::Stat) -> io::Result<Meta> {
    Ok(meta_with(st, backing::all_xattrs_open(fd)?))
}

/// The id and length of the bytes of the regular file open for reading as `fd`, from its
/// start (positioned reads: the descriptor's offset is left alone); `size` (its size at the
/// last stat) only sizes the buffer.
fn hash_fd(fd: BorrowedFd<'_>, size: u64) -> io::Result<(ObjectId, u64)> {
    // A post-image of a large file is read in 1 MiB reads, not `io::copy`'s 8 KiB.
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; (size as usize).clamp(8 << 10, 1 << 20)];
    let mut n = 0u64;
    loop {
        match rustix::io::pread(fd, &mut buf[..], n).map_err(io::Error::from) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((ObjectId(*h.finalize().as_bytes()), n))
}

/// One thing that happened in a session (see the module docs of `guard` for who writes what).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The first record of a session.
    SessionStart {
        /// The real folder.
        #[serde(with = "relpath")]
        scope: PathBuf,
        /// The write mode (`snapshot`, `overlay`, `commit`, `rollback`).
        mode: String,
        /// The profile's name.
        profile: String,
        /// The process that wrote the session.
        pid: u32,
        /// Its user.
        user: u32,
    },
    /// The state of `path` right before the first change the session makes to it. Durable
    /// before that change.
    Capture {
        /// The scope-relative path.
        #[serde(with = "relpath")]
        path: PathBuf,
        /// What it was.
        before: State,
    },
    /// Recorded before a rename is attempted (an intent: after a crash it may not have happened).
    Rename {
        /// The old name.
        #[serde(with = "relpath")]
        from: PathBuf,
        /// The new name.
        #[serde(with = "relpath")]
        to: PathBuf,
        /// `RENAME_EXCHANGE`: the two names swapped.
        exchange: bool,
    },
    /// The compressed bytes (`zstd_hex`) of a small pre-image object, journalled (in the same
    /// fsync as the `Capture` after it) instead of fsyncing the object and its directory:
    /// readers of a session that did not end cleanly rebuild the object from it
    /// ([`Store::repair`]).
    Object {
        /// The object's id (the hash of its plain bytes).
        id: ObjectId,
        /// Its zstd-compressed bytes, in hex.
        zstd_hex: String,
    },
    /// Informational: write, truncate, chmod, unlink, mkdir, create, symlink, link…
    Change {
        /// The scope-relative path.
        #[serde(with = "relpath")]
        path: PathBuf,
        /// What was done.
        op: String,
    },
    /// The state the session left a path in (after a written handle is released, or after a
    /// metadata op).
    PostImage {
        /// The scope-relative path.
        #[serde(with = "relpath")]
        path: PathBuf,
        /// What it is now.
        after: State,
    },
    /// The path's writes went to the overlay instead; `reason` says why.
    Diverted {
        /// The scope-relative path.
        #[serde(with = "relpath")]
        path: PathBuf,
        /// Why it could not be snapshotted.
        reason: String,
    },
    /// The end of an agent's turn (`veilfs checkpoint`): `rollback --to` undoes every record
    /// after it. The guard captures each path again at its first change after a checkpoint, so
    /// the captures after it hold the state at the checkpoint. `n` counts from 1 per session.
    Checkpoint {
        /// Its number in the session.
        n: u64,
        /// The label given with `veilfs checkpoint --label`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// This session undid session `of`.
    Undo {
        /// The session undone.
        of: String,
    },
    /// The session ended cleanly: everything it refers to is durable.
    SessionEnd,
}

impl Event {
    /// The path(s) an event is about.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Event::Capture { path, .. }
            | Event::Change { path, .. }
            | Event::PostImage { path, .. }
            | Event::Diverted { path, .. } => vec![path],
            Event::Rename { from, to, .. } => vec![from, to],
            _ => vec![],
        }
    }
}

/// One line of a journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its 0-based position in the session.
    pub seq: u64,
    /// Unix time in nanoseconds.
    pub time_ns: i128,
    /// blake3 hex of the previous line's bytes (without newline); [`GENESIS`] for the first.
    pub prev: String,
    /// What happened.
    pub event: Event,
    /// How many bytes of the journal were known durable (fdatasynced) when this record was
    /// written; set on the first record after each sync. A reader that finds zeros (a
    /// preallocated block the disk never got) before that offset knows the disk lost synced
    /// records, not an unsynced tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<u64>,
}

/// Appends to one session's journal. Thread-safe.
#[derive(Debug)]
pub struct SessionWriter {
    id: String,
    path: PathBuf,
    inner: Mutex<WriterState>,
    /// Group commit: the number of records known durable, held across each fsync. A writer
    /// that waited here while another's fsync ran finds its records covered and returns
    /// without one of its own; appends go on meanwhile (the fsync runs on `sync_file`).
    durable: Mutex<u64>,
    /// A second descriptor of the journal, to fsync without holding `inner`.
    sync_file: File,
    /// The journal's bytes known durable (the length covered by the last fdatasync).
    durable_bytes: AtomicU64,
    /// The fdatasyncs made so far: the durability cost the write path is measured by.
    syncs: AtomicU64,
}

#[derive(Debug)]
struct WriterState {
    file: File,
    next_seq: u64,
    prev: String,
    poisoned: bool,
    /// Where the next record goes: the end of the records.
    len: u64,
    /// The file's size: records, then zeros written ahead of them ([`PREALLOC`]).
    allocated: u64,
    /// The largest `synced` claim written so far.
    claimed: u64,
    /// The filesystem had no room for zeros ahead: records are appended.
    no_room: bool,
}

/// The journal grows by this many zero bytes ahead of its records. An `fdatasync` after an
/// append that grows the file must commit the filesystem's metadata (the size, new blocks); one
/// after an overwrite of blocks already written needs only the data and the device's cache
/// flush: measured on ext4, 115-120 us instead of 170-180 us per first-touched file.
const PREALLOC: u64 = 1 << 20;

impl SessionWriter {
    /// Appends `e` and makes it durable (`sync_data`) before returning its sequence number.
    pub fn append(&self, e: Event) -> Result<u64, JournalError> {
        self.append_with(e, true)
    }

    /// Appends `e` without waiting for the disk: for informational records (`Change`,
    /// `PostImage`) whose loss in a crash costs nothing but detail. The next durable append
    /// (a `Capture` guarding a change) makes it durable too, since the file is append-only.
    pub fn append_lazy(&self, e: Event) -> Result<u64, JournalError> {
        self.append_with(e, false)
    }

    /// [`SessionWriter::append_lazy`] of several records in one `write` (the records of one
    /// change: a pre-image's `Object`, its `Capture` and the change's marker), in order;
    /// returns the first one's seq.
    pub(crate) fn append_all_lazy(
        &self,
        es: impl IntoIterator<Item = Event>,
    ) -> Result<u64, JournalError> {
        self.append_unsynced(es).map(|(first, _)| first)
    }

    fn append_with(&self, e: Event, sync: bool) -> Result<u64, JournalError> {
        let end = matches!(e, Event::SessionEnd);
        let (seq, _) = self.append_unsynced([e])?;
        if sync {
            self.sync_to(seq + 1)?;
        }
        if end {
            self.trim()?;
        }
        Ok(seq)
    }

    /// Appends `es` as consecutive lines with one `write`; returns the first and last seq.
    fn append_unsynced(
        &self,
        es: impl IntoIterator<Item = Event>,
    ) -> Result<(u64, u64), JournalError> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.poisoned {
            return Err(JournalError::Poisoned {
                file: self.path.clone(),
            });
        }
        // Chained into a copy first: nothing changes unless the write succeeded.
        let (mut seq, mut prev) = (st.next_seq, st.prev.clone());
        let durable = self.durable_bytes.load(Ordering::Acquire);
        let mut claim = (durable > st.claimed).then_some(durable);
        let mut buf = Vec::new();
        let mut last = None;
        for e in es {
            let rec = Record {
                seq,
                time_ns: now_ns(),
                prev,
                event: e,
                synced: claim.take(),
            };
            let start = buf.len();
            serde_json::to_writer(&mut buf, &rec)?;
            prev = blake3::hash(&buf[start..]).to_hex().to_string();
            buf.push(b'\n');
            last = Some(seq);
            seq += 1;
        }
        let first = st.next_seq;
        let Some(last) = last else {
            return Ok((first, first.saturating_sub(1)));
        };
        if let Err(e) = st.write_records(&buf) {
            st.poisoned = true;
            return Err(io_err(&self.path)(e));
        }
        st.claimed = st.claimed.max(durable);
        st.prev = prev;
        st.next_seq = seq;
        Ok((first, last))
    }

    /// Makes every record appended so far durable (for a batch of [`SessionWriter::append_lazy`]
    /// captures that guard changes made only after this returns).
    pub fn sync(&self) -> Result<(), JournalError> {
        let n = {
            let st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            st.next_seq
        };
        self.sync_to(n)
    }

    /// Makes the first `n` records durable, sharing an fsync with concurrent callers.
    fn sync_to(&self, n: u64) -> Result<(), JournalError> {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        let poisoned = || JournalError::Poisoned {
            file: self.path.clone(),
        };
        // Everything appended so far is covered by the fsync below (appends are whole lines
        // written under `inner`); a poisoned writer's file may end in a torn line.
        let (upto, upto_bytes) = {
            let st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if st.poisoned {
                return Err(poisoned());
            }
            (st.next_seq, st.len)
        };
        if *durable >= n {
            return Ok(());
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.sync_file.sync_data() {
            let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            st.poisoned = true;
            return Err(io_err(&self.path)(e));
        }
        *durable = upto;
        self.durable_bytes.store(upto_bytes, Ordering::Release);
        Ok(())
    }

    /// Cuts the zeros written ahead of the records (at the session's end: the file then holds
    /// exactly its records). A crash before this leaves them; readers skip them.
    fn trim(&self) -> Result<(), JournalError> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.poisoned || st.allocated == st.len {
            return Ok(());
        }
        st.file.set_len(st.len).map_err(io_err(&self.path))?;
        st.allocated = st.len;
        Ok(())
    }

    /// The number of records known durable.
    pub(crate) fn durable(&self) -> u64 {
        *self.durable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many times the journal was fdatasynced.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The session id (also the journal's file stem).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl WriterState {
    /// Writes whole records at the end of the records, zero-filling ahead first when they
    /// would not fit: the records then always overwrite blocks the file already has.
    fn write_records(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let need = self.len + buf.len() as u64;
        if need > self.allocated && !self.no_room {
            let to = (need / PREALLOC + 1) * PREALLOC;
            let zeros = vec![0u8; (to - self.allocated) as usize];
            match self.file.write_all_at(&zeros, self.allocated) {
                Ok(()) => self.allocated = to,
                // No room for zeros ahead (a nearly full store): the records are appended
                // alone, each fdatasync then commits metadata as well. Only the records'
                // own lack of room is an error.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
                    ) =>
                {
                    tracing::debug!("journal: no room for zeros ahead ({e}): appending");
                    self.file.set_len(self.allocated)?;
                    // Not tried again in this session: each try would write and cut zeros.
                    self.no_room = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(buf, self.len)?;
        self.len = need;
        self.allocated = self.allocated.max(need);
        Ok(())
    }
}

/// A problem with the last line of a journal (a crash mid-append), tolerated by readers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TailIssue {
    /// The 1-based line.
    pub line: usize,
    /// `true`: the line was torn and is ignored; `false`: it is complete but lacks its newline
    /// (accepted).
    pub ignored: bool,
    /// What is wrong, naming file and line.
    pub msg: String,
}

impl std::fmt::Display for TailIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// A session's records after the chain was verified.
#[derive(Clone, Debug)]
pub struct SessionLog {
    /// The session id.
    pub id: String,
    /// The journal file.
    pub path: PathBuf,
    /// Every record, in order.
    pub records: Vec<Record>,
    /// A torn or unterminated last line, tolerated.
    pub tail: Option<TailIssue>,
    /// The bytes the records take (an unterminated last record included).
    pub end: usize,
}

impl SessionLog {
    /// The `SessionStart` record, with its scope and mode.
    pub fn start(&self) -> Option<(&Record, &Path, &str)> {
        let r = self.records.first()?;
        match &r.event {
            Event::SessionStart { scope, mode, .. } => Some((r, scope, mode)),
            _ => None,
        }
    }
    /// Whether the session ended cleanly (its last record is `SessionEnd`).
    pub fn ended(&self) -> bool {
        matches!(
            self.records.last().map(|r| &r.event),
            Some(Event::SessionEnd)
        )
    }
    /// The session this one undid, if it is a rollback.
    pub fn undo_of(&self) -> Option<&str> {
        self.records.iter().find_map(|r| match &r.event {
            Event::Undo { of } => Some(of.as_str()),
            _ => None,
        })
    }
}

/// What `log` shows per session.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub start_ns: i128,
    pub mode: String,
    #[serde(with = "relpath")]
    pub scope: PathBuf,
    pub profile: String,
    pub records: usize,
    pub captures: usize,
    pub changes: usize,
    pub renames: usize,
    pub ended: bool,
    pub undo_of: Option<String>,
    /// A torn last line (crash mid-append).
    pub tail_warning: Option<String>,
    /// The journal could not be read or its chain is broken.
    pub problem: Option<String>,
}

impl SessionInfo {
    fn of(log: &SessionLog) -> SessionInfo {
        let (start_ns, scope, mode, profile) = match log.records.first().map(|r| (r, &r.event)) {
            Some((
                r,
                Event::SessionStart {
                    scope,
                    mode,
                    profile,
                    ..
                },
            )) => (r.time_ns, scope.clone(), mode.clone(), profile.clone()),
            _ => (0, PathBuf::new(), String::new(), String::new()),
        };
        let count = |f: fn(&Event) -> bool| log.records.iter().filter(|r| f(&r.event)).count();
        SessionInfo {
            id: log.id.clone(),
            start_ns,
            mode,
            scope,
            profile,
            records: log.records.len(),
            captures: count(|e| matches!(e, Event::Capture { .. })),
            changes: count(|e| matches!(e, Event::Change { .. })),
            renames: count(|e| matches!(e, Event::Rename { .. })),
            ended: log.ended(),
            undo_of: log.undo_of().map(str::to_owned),
            tail_warning: log.tail.as_ref().map(|t| t.msg.clone()),
            problem: None,
        }
    }
}

/// Parses and verifies a journal's bytes.
///
/// Returns the records, a tolerated problem at the end, and how many bytes the records take
/// (where a writer that continues the journal appends).
///
/// The writer zero-fills ahead of its records ([`PREALLOC`]), and a record never contains a
/// zero byte (JSON escapes it), so the records end at the line where the first zero byte is.
/// Zeros to the end of the file are the clean case. Anything else there was written after the
/// last fdatasync that completed (a crash can persist a later page and lose an earlier one):
/// the changes those records guarded cannot have happened, so it is ignored like a torn last
/// line. Unless a record found there says more bytes had been made durable than the records
/// before the zeros take: then the disk lost synced records, and the journal is corrupt.
pub(crate) fn parse_journal(
    file: &Path,
    data: &[u8],
) -> Result<(Vec<Record>, Option<TailIssue>, usize), JournalError> {
    let corrupt = |line: usize, msg: String| JournalError::Corrupt {
        file: file.to_path_buf(),
        line,
        msg,
    };
    let (data, ahead) = match data.iter().position(|b| *b == 0) {
        None => (data, &[][..]),
        Some(z) => data.split_at(
            data[..z]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1),
        ),
    };
    let mut records = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut tail = None;
    let mut pieces: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    // `split` yields a final "" when the data ends with '\n' (or is empty).
    let unterminated = match pieces.pop() {
        Some(last) if !last.is_empty() => Some(last),
        _ => None,
    };
    let n_complete = pieces.len();
    let check = |i: usize, line: &[u8], prev: &str| -> Result<Record, String> {
        let rec: Record =
            serde_json::from_slice(line).map_err(|e| format!("not a journal record: {e}"))?;
        if rec.seq != i as u64 {
            return Err(format!(
                "record has seq {} where {i} was expected (a record was removed or reordered)",
                rec.seq
            ));
        }
        if rec.prev != prev {
            return Err(
                "hash chain broken: `prev` does not match the previous line (a record was edited, removed or reordered)"
                    .to_string(),
            );
        }
        if (i == 0) != matches!(rec.event, Event::SessionStart { .. }) {
            return Err("SessionStart must be exactly the first record".to_string());
        }
        Ok(rec)
    };
    for (i, line) in pieces.into_iter().enumerate() {
        let rec = check(i, line, &prev).map_err(|m| corrupt(i + 1, m))?;
        prev = blake3::hash(line).to_hex().to_string();
        records.push(rec);
    }
    if let Some(last) = unterminated {
        let lineno = n_complete + 1;
        match check(n_complete, last, &prev) {
            Ok(rec) => {
                tail = Some(TailIssue {
                    line: lineno,
                    ignored: false,
                    msg: format!(
                        "{}:{lineno}: last record lacks its newline (crash after the write); accepted",
                        file.display()
                    ),
                });
                records.push(rec);
            }
            Err(m) if serde_json::from_slice::<serde_json::Value>(last).is_err() => {
                tail = Some(TailIssue {
                    line: lineno,
                    ignored: true,
                    msg: format!(
                        "{}:{lineno}: last record is truncated (crash mid-append; the change it guarded cannot have happened), ignored: {m}",
                        file.display()
                    ),
                });
            }
            // A complete JSON value that fails the chain is tampering, not a torn write.
            Err(m) => return Err(corrupt(lineno, m)),
        }
    }
    if ahead.iter().any(|b| *b != 0) {
        let lineno = n_complete + 1;
        let unsynced = ahead.split(|b| *b == b'\n' || *b == 0);
        if let Some(r) = unsynced
            .filter_map(|p| serde_json::from_slice::<Record>(p).ok())
            .find(|r| r.synced.is_some_and(|n| n > data.len() as u64))
        {
            return Err(corrupt(
                lineno,
                format!(
                    "zeros from byte {} on, but record {} after them says {} bytes had been made durable: the disk lost synced records",
                    data.len(),
                    r.seq,
                    r.synced.unwrap_or_default()
                ),
            ));
        }
        tail = Some(TailIssue {
            line: lineno,
            ignored: true,
            msg: format!(
                "{}:{lineno}: last record is truncated or was never made durable (crash mid-append; the changes it guarded cannot have happened), ignored",
                file.display()
            ),
        });
    }
    Ok((records, tail, data.len()))
}

fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    /// Opens a new session journal and appends `start` (which must be a `SessionStart`).
    pub fn new_session(&self, start: Event) -> Result<SessionWriter, JournalError> {
        if !matches!(start, Event::SessionStart { .. }) {
            return Err(JournalError::NotStart);
        }
        let dir = self.sessions_dir();
        let (id, path, file) = loop {
            let now = now_ns();
            let salt = blake3::hash(
                format!(
                    "{now}-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                )
                .as_bytes(),
            );
            let id = format!("{}-{}", session_stamp(now), &salt.to_hex()[..4]);
            let path = dir.join(format!("{id}.jsonl"));
            // Not O_APPEND: records are written at their offset, over zeros written ahead.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => break (id, path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        };
        // Held for the writer's lifetime (the mount's, for a mount's session; the kernel drops
        // it when the process dies, even by SIGKILL): how `rollback` and `commit` tell a
        // session that is still being written from one that ended or crashed.
        file.try_lock().map_err(|e| {
            io_err(&path)(match e {
                fs::TryLockError::Error(e) => e,
                fs::TryLockError::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
            })
        })?;
        crate::store::fsync_dir(&dir)?;
        let sync_file = file.try_clone().map_err(io_err(&path))?;
        let w = SessionWriter {
            id,
            path,
            durable: Mutex::new(0),
            sync_file,
            durable_bytes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            inner: Mutex::new(WriterState {
                file,
                next_seq: 0,
                prev: GENESIS.to_string(),
                poisoned: false,
                len: 0,
                allocated: 0,
                claimed: 0,
                no_room: false,
            }),
        };
        w.append(start)?;
        Ok(w)
    }

    /// Re-opens the journal of a session whose writer died (a killed commit being resumed) to
    /// append to it: a torn last line is cut off, a complete one lacking its newline gets it,
    /// and the chain continues from the last complete record. Refused while the session is live.
    pub fn reopen_session(&self, id: &str) -> Result<SessionWriter, JournalError> {
        // Verified (and its objects repaired) before anything is touched.
        let path = self.load_verified(id)?.path;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.try_lock().map_err(|e| {
            io_err(&path)(match e {
                fs::TryLockError::Error(e) => e,
                fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the session is still being written by another process",
                ),
            })
        })?;
        // Read again under the lock: what was verified is what gets continued.
        let data = fs::read(&path).map_err(io_err(&path))?;
        let (records, _, keep) = parse_journal(&path, &data)?;
        // Cut the torn or unsynced tail and the zeros written ahead.
        file.set_len(keep as u64).map_err(io_err(&path))?;
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0)).map_err(io_err(&path))?;
        let body = &data[..keep];
        let mut len = keep as u64;
        if keep > 0 && data[keep - 1] != b'\n' {
            file.write_all(b"\n").map_err(io_err(&path))?;
            len += 1;
        }
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        let last = body.rsplit(|b| *b == b'\n').next().unwrap_or(b"");
        let prev = if records.is_empty() {
            GENESIS.to_string()
        } else {
            blake3::hash(last).to_hex().to_string()
        };
        file.sync_data().map_err(io_err(&path))?;
        let sync_file = file.try_clone().map_err(io_err(&path))?;
        Ok(SessionWriter {
            id: id.to_string(),
            durable: Mutex::new(records.len() as u64),
            sync_file,
            durable_bytes: AtomicU64::new(len),
            syncs: AtomicU64::new(0),
            path,
            inner: Mutex::new(WriterState {
                file,
                next_seq: records.len() as u64,
                prev,
                poisoned: false,
                len,
                allocated: len,
                claimed: 0,
                no_room: false,
            }),
        })
    }

    /// True while a process still writes session `id` (a running mount, commit or rollback):
    /// its writer holds an exclusive `flock` on the journal (see [`Store::new_session`]).
    pub fn session_is_live(&self, id: &str) -> Result<bool, JournalError> {
        let path = self.session_path(id);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&path)(e)),
        };
        match f.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(fs::TryLockError::WouldBlock) => Ok(true),
            Err(fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
        }
    }

    /// The journal file of session `id`.
    pub fn session_path(&self, id: &str) -> PathBuf {
        self.sessions_dir().join(format!("{id}.jsonl"))
    }

    /// Reads and verifies one session (chain, sequence, first record). A torn last line is
    /// tolerated and reported in [`SessionLog::tail`]. A session that did not end and left
    /// files in the store's aside area (a crash) is completed first: the records of parked
    /// files that the journal lost are rebuilt from the files ([`Store::recover_aside`]).
    pub fn load_session(&self, id: &str) -> Result<SessionLog, JournalError> {
        let log = self.load_verified(id)?;
        let aside = crate::aside::session_dir(self.dir(), id);
        if !aside.exists() || self.session_is_live(id)? {
            return Ok(log);
        }
        let parked = crate::aside::list(self.dir(), id).map_err(io_err(&aside))?;
        if log.ended() || parked.is_empty() {
            // Nothing parked, or an ended session's records are all durable: what is left
            // aside is a copy.
            crate::aside::remove_session(self.dir(), id).map_err(io_err(&aside))?;
            return Ok(log);
        }
        let w = match self.reopen_session(id) {
            Ok(w) => w,
            // Another reader is recovering it (or a writer took it meanwhile).
            Err(JournalError::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => {
                return Ok(log);
            }
            Err(e) => return Err(e),
        };
        self.recover_aside(&log, &w, parked)?;
        drop(w);
        self.load_verified(id)
    }

    /// Appends, to the journal of a session that did not end, the records of every file it
    /// parked aside (see `aside.rs`) that the durable journal lacks: an OS crash lost the
    /// un-synced tail that held them, while the rename that parked the file persisted. Each
    /// gets an `Object` (small files), a `Capture` at its original path (its directory named by
    /// the durable capture `c`, its bytes and metadata read from the parked file) and a
    /// `Change` marker naming the parked file, by which a recovery interrupted after its sync
    /// knows it done. At the end is right: nothing durable followed the lost records (any
    /// later sync would have covered them). Then the parked files are removed.
    fn recover_aside(
        &self,
        log: &SessionLog,
        w: &SessionWriter,
        found: Vec<crate::aside::Found>,
    ) -> Result<(), JournalError> {
        let dir = crate::aside::session_dir(self.dir(), &log.id);
        let mut done = Vec::new();
        let mut kept = 0;
        for f in found {
            // The directory's capture names its path at the time (it may say `absent`: a
            // directory made in the session, its files created outside the mount).
            let origin = match log.records.get(f.c as usize).map(|r| &r.event) {
                Some(Event::Capture { path, .. }) => path.join(&f.name),
                _ => {
                    tracing::warn!(
                        "{}: no durable directory capture {} in session {}: kept",
                        f.path.display(),
                        f.c,
                        log.id
                    );
                    kept += 1;
                    continue;
                }
            };
            let marker = format!(
                "unlink (recovered from the store's aside area, {}/{})",
                f.c, f.s
            );
            let present = matches!(log.records.get(f.s as usize).map(|r| &r.event),
                    Some(Event::Capture { path, .. }) if *path == origin)
                || log.records.iter().any(|r| {
                    matches!(&r.event, Event::Change { path, op } if *path == origin && *op == marker)
                });
            if !present {
                let parent = f.path.parent().unwrap_or(Path::new("/"));
                let fd = backing::open_root(parent)
                    .and_then(|d| {
                        backing::lookup(d.as_fd(), f.path.file_name().unwrap_or_default())
                    })
                    .map_err(io_err(&f.path))?;
                let st = backing::stat_fd(fd.as_fd()).map_err(io_err(&f.path))?;
                let (before, inline) = State::capture_held(fd.as_fd(), &st, None, &origin, self)?;
                if let Some((id, z)) = inline {
                    w.append_lazy(Event::Object {
                        id,
                        zstd_hex: hex::encode(&z),
                    })?;
                }
                w.append_lazy(Event::Capture {
                    path: origin.clone(),
                    before,
                })?;
                w.append_lazy(Event::Change {
                    path: origin.clone(),
                    op: marker,
                })?;
                tracing::info!(
                    "session {}: the removal of {} was recovered from the store's aside area",
                    log.id,
                    origin.display()
                );
            }
            done.push(f.path);
        }
        w.sync()?;
        for p in done {
            match std::fs::remove_file(&p) {
                // Unlinked meanwhile by the session's own reaper (its records were durable):
                // a reader may run while the mount, or its last thread, still does.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r.map_err(io_err(&p))?,
            }
        }
        if kept == 0 {
            crate::aside::remove_session(self.dir(), &log.id).map_err(io_err(&dir))?;
        }
        Ok(())
    }

    /// [`Store::load_session`] without the aside recovery.
    fn load_verified(&self, id: &str) -> Result<SessionLog, JournalError> {
        let path = self.session_path(id);
        if !valid_session_id(id) || !path.is_file() {
            return Err(JournalError::NoSession {
                id: id.to_string(),
                dir: self.sessions_dir(),
            });
        }
        let data = fs::read(&path).map_err(io_err(&path))?;
        let (records, tail, end) = parse_journal(&path, &data)?;
        let ended = matches!(records.last().map(|r| &r.event), Some(Event::SessionEnd));
        if !ended {
            self.repair_objects(&path, &records)?;
        }
        Ok(SessionLog {
            id: id.to_string(),
            path,
            records,
            tail,
            end,
        })
    }

    /// Rebuilds every lazily stored object of a session that did not end cleanly (a crash, or
    /// still live) from its `Object` record, so rollback finds each pre-image whole. A session
    /// that ended flushed its objects first ([`crate::guard::Guard::end`]).
    fn repair_objects(&self, path: &Path, records: &[Record]) -> Result<(), JournalError> {
        for r in records {
            if let Event::Object { id, zstd_hex } = &r.event {
                let z = hex::decode(zstd_hex).map_err(|e| JournalError::Corrupt {
                    file: path.to_path_buf(),
                    line: r.seq as usize + 1,
                    msg: format!("object {id}: {e}"),
                })?;
                self.repair(id, &z)?;
            }
        }
        Ok(())
    }

    /// The verified records of session `id` (a torn last line is left out).
    pub fn read_session(&self, id: &str) -> Result<Vec<Record>, JournalError> {
        Ok(self.load_session(id)?.records)
    }

    /// Every session, oldest first (by start time). A journal that cannot be read is listed
    /// with `problem` set rather than failing the whole listing.
    pub fn sessions(&self) -> Result<Vec<SessionInfo>, JournalError> {
        let dir = self.sessions_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".jsonl") else {
                continue;
            };
            match self.load_session(id) {
                Ok(log) => out.push(SessionInfo::of(&log)),
                Err(err) => {
                    let mut info = SessionInfo::of(&SessionLog {
                        id: id.to_string(),
                        path: e.path(),
                        records: vec![],
                        tail: None,
                        end: 0,
                    });
                    info.problem = Some(err.to_string());
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| (a.start_ns, &a.id).cmp(&(b.start_ns, &b.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Event {
        Event::SessionStart {
            scope: "/tmp/x".into(),
            mode: "snapshot".into(),
            profile: "default".into(),
            pid: 1,
            user: 0,
        }
    }

    /// Group commit: concurrent durable appends share fsyncs and still leave one intact
    /// chain, every record in it.
    #[test]
    fn concurrent_durable_appends_keep_one_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create_or_open(&tmp.path().join("s")).unwrap();
        let w = store.new_session(start()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = &w;
                s.spawn(move || {
                    for i in 0..25 {
                        let e = Event::Change {
                            path: format!("t{t}/{i}").into(),
                            op: "write".into(),
                        };
                        if i % 2 == 0 {
                            w.append(e).unwrap();
                        } else {
                            w.append_lazy(e).unwrap();
                            w.sync().unwrap();
                        }
                    }
                });
            }
        });
        let recs = store.read_session(w.id()).unwrap();
        assert_eq!(recs.len(), 101);
        assert_eq!(*w.durable.lock().unwrap(), 101);
    }

    #[test]
    fn writers_and_stores_are_shareable() {
        fn check<T: Send + Sync>() {}
        check::<SessionWriter>();
        check::<Store>();
    }

    #[test]
    fn paths_roundtrip_losslessly() {
        let odd = PathBuf::from(OsString::from_vec(b"a/\xffb".to_vec()));
        let e = Event::Change {
            path: odd.clone(),
            op: "write".into(),
        };
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains("bytes_hex"), "{j}");
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
        let e2 = Event::Change {
            path: "src/ä.rs".into(),
            op: "write".into(),
        };
        let j2 = serde_json::to_string(&e2).unwrap();
        assert!(j2.contains("\"src/ä.rs\""), "{j2}");
        assert_eq!(serde_json::from_str::<Event>(&j2).unwrap(), e2);
    }

    #[test]
    fn chain_detects_edits_and_tolerates_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create_or_open(d.path()).unwrap();
        let w = s.new_session(start()).unwrap();
        for i in 0..3 {
            w.append(Event::Change {
                path: format!("f{i}").into(),
                op: "write".into(),
            })
            .unwrap();
        }
        let id = w.id().to_string();
        assert_eq!(s.read_session(&id).unwrap().len(), 4);
        let p = s.session_path(&id);
        let good = fs::read(&p).unwrap();
        // torn tail
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"seq\":4,\"time_");
        fs::write(&p, &torn).unwrap();
        let log = s.load_session(&id).unwrap();
        assert_eq!(log.records.len(), 4);
        assert!(log.tail.unwrap().ignored);
        // edit in the middle
        let text = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"f1\"", "\"f9\"");
        fs::write(&p, text).unwrap();
        let err = s.load_session(&id).unwrap_err().to_string();
        assert!(err.contains(".jsonl:4:"), "{err}");
        // removed line
        let lines: Vec<&str> = std::str::from_utf8(&good).unwrap().lines().collect();
        fs::write(&p, format!("{}\n{}\n{}\n", lines[0], lines[1], lines[3])).unwrap();
        let err = s.load_session(&id).unwrap_err().to_string();
        assert!(err.contains(".jsonl:3:"), "{err}");
        assert!(matches!(
            s.load_session("nope"),
            Err(JournalError::NoSession { .. })
        ));
    }

    fn change(p: &str) -> Event {
        Event::Change {
            path: p.into(),
            op: "write".into(),
        }
    }

    /// A new session in a temp store with one synced record after its start, and its file.
    fn session_with_one_synced_record() -> (tempfile::TempDir, Store, SessionWriter, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create_or_open(d.path()).unwrap();
        let w = s.new_session(start()).unwrap();
        w.append(change("a")).unwrap();
        let p = s.session_path(w.id());
        (d, s, w, p)
    }

    /// Records overwrite zeros written ahead of them (an fdatasync then commits no metadata);
    /// the end of the session cuts the zeros, and every sync is claimed by the next record.
    #[test]
    fn records_go_over_zeros_written_ahead_and_the_end_trims_them() {
        let (_d, s, w, p) = session_with_one_synced_record();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, PREALLOC, "zeros ahead of the records");
        let end = data.iter().position(|b| *b == 0).unwrap();
        assert!(data[end..].iter().all(|b| *b == 0));
        w.append_lazy(change("b")).unwrap();
        let log = s.load_session(w.id()).unwrap();
        assert_eq!(log.records.len(), 3);
        assert!(log.tail.is_none(), "{:?}", log.tail);
        assert_eq!(
            log.records[2].synced,
            Some(end as u64),
            "claims the last sync"
        );
        // A batch larger than what is left ahead grows the zeros, and still parses.
        let big: Vec<Event> = (0..5000).map(|i| change(&format!("{i:0>300}"))).collect();
        w.append_all_lazy(big).unwrap();
        w.append(Event::SessionEnd).unwrap();
        let data = fs::read(&p).unwrap();
        assert!(
            !data.contains(&0) && data.ends_with(b"\n"),
            "trimmed at the end"
        );
        let log = s.load_session(w.id()).unwrap();
        assert!(log.ended() && log.tail.is_none());
        assert_eq!(log.records.len(), 5004);
    }

    /// What a disk that lost a page leaves: the record starting at byte `at` reads as zeros.
    fn zero_line_at(p: &Path, at: usize) {
        let mut data = fs::read(p).unwrap();
        let end = at + data[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
        data[at..end].fill(0);
        fs::write(p, &data).unwrap();
    }

    /// A power cut can persist a later page of the journal and lose an earlier one that was
    /// never synced: the records behind the zeros are ignored. Zeros where a later record says
    /// the bytes had been synced are the disk losing durable records: corrupt, naming the line.
    #[test]
    fn zeros_before_unsynced_records_are_a_torn_tail_and_before_synced_ones_corruption() {
        let (_d, s, w, p) = session_with_one_synced_record();
        let synced = fs::read(&p).unwrap().iter().position(|b| *b == 0).unwrap();
        w.append_lazy(change("b")).unwrap();
        w.append_lazy(change("c")).unwrap();
        let id = w.id().to_string();
        drop(w);
        zero_line_at(&p, synced);
        let log = s.load_session(&id).unwrap();
        assert_eq!(log.records.len(), 2, "only what was synced");
        let tail = log.tail.unwrap();
        assert!(tail.ignored && tail.line == 3, "{tail:?}");
        // The same zeros, but "b" had been synced: "c" says so.
        let w = s.reopen_session(&id).unwrap();
        w.append(change("b")).unwrap();
        w.append_lazy(change("c")).unwrap();
        drop(w);
        zero_line_at(&p, synced);
        let err = s.load_session(&id).unwrap_err().to_string();
        assert!(
            err.contains(".jsonl:3:") && err.contains("lost synced records"),
            "{err}"
        );
    }

    /// A killed commit is resumed into its own session: the torn tail is cut, the chain goes
    /// on, and a live writer's session cannot be reopened (nor is it reported dead).
    #[test]
    fn a_dead_writers_session_reopens_and_a_live_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create_or_open(d.path()).unwrap();
        let w = s.new_session(start()).unwrap();
        w.append(Event::Change {
            path: "a".into(),
            op: "write".into(),
        })
        .unwrap();
        let id = w.id().to_string();
        assert!(s.session_is_live(&id).unwrap());
        assert!(
            s.reopen_session(&id).is_err(),
            "a live session is not reopened"
        );
        drop(w);
        assert!(!s.session_is_live(&id).unwrap());
        let p = s.session_path(&id);
        let mut torn = fs::read(&p).unwrap();
        torn.extend_from_slice(b"{\"seq\":2,\"ti");
        fs::write(&p, &torn).unwrap();
        let w2 = s.reopen_session(&id).unwrap();
        assert!(s.session_is_live(&id).unwrap());
        w2.append(Event::SessionEnd).unwrap();
        drop(w2);
        let log = s.load_session(&id).unwrap();
        assert!(log.tail.is_none(), "{:?}", log.tail);
        assert_eq!(log.records.len(), 3);
        assert!(log.ended());
    }
}
