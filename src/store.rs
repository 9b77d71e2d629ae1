//! The snapshot store: content-addressed, immutable, compressed objects plus the session
//! journals that refer to them.
//!
//! Layout of a store directory (created 0700, outside the scope and the mount):
//! ```text
//! DIR/store.toml              format version and creation time
//! DIR/objects/ab/cdef…        blake3 (hex) of the plain bytes, zstd-compressed on disk
//! DIR/sessions/<id>.jsonl     one hash-chained journal per session (see `journal`)
//! DIR/tmp/                    objects being written; anything here after a crash is garbage
//! DIR/tmp/p-<id>/             one process's staging dir, live while it holds `p-<id>.lock`
//! ```
//!
//! Temporary files are staged in a directory private to the [`Store`] handle, announced by a
//! lock file it holds (`flock`) for its lifetime. Opening a store removes every staging
//! directory whose lock nobody holds any more (a process killed mid-write), so leftovers are
//! garbage-collected without ever touching the files of a process still writing.
//!
//! Invariants (restic-style):
//! - An object's name is the blake3 of its *plain* bytes, so an object can always be verified on
//!   its own and identical pre-images are stored once.
//! - An object appears under `objects/` only complete and durable: it is written to `tmp/`,
//!   fsynced, renamed into place, and the directory is fsynced before `put_*` returns.
//! - Reading verifies the hash. A corrupt object is an error naming the object and its file;
//!   [`Store::read_to`] never hands out bytes that did not verify.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Current on-disk format of a store.
pub(crate) const FORMAT_VERSION: i64 = 1;
/// zstd level for pre-images: fast, since it sits on the agent's write path.
const ZSTD_LEVEL: i32 = 2;
const BUF: usize = 256 * 1024;
/// Files at least this large are stored by [`Store::put_file`] on two threads (reading and
/// hashing on one, compressing and writing on the other).
const PIPELINE_MIN: u64 = 4 << 20;
/// The unit a large pre-image is read, hashed, compressed and written in.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads (each [`CHUNK`] bytes).
const PIPELINE_BUFS: usize = 4;
/// A large object's writeback is started every this many plain bytes.
const WRITEBACK_EVERY: usize = 8 << 20;
/// zstd's fastest level: incompressible data costs little more than a copy.
const STORE_LEVEL: i32 = -1000;
/// Pre-images up to this size also travel, compressed, inside their journal record (see
/// [`Store::pack`]): one journal fsync then makes them durable instead of three fsyncs.
pub(crate) const INLINE_MAX: u64 = 64 * 1024;

/// Errors of the store. Every variant names the file or object it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No store at this directory.
    #[error("no store at {0} (create one by mounting in snapshot mode)")]
    NoStore(PathBuf),
    /// The directory exists but is not a store.
    #[error("{dir} is not a veilfs store: {reason}")]
    NotAStore {
        /// The directory.
        dir: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A store file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// An object's bytes do not match its id.
    #[error("object {id} is corrupt ({}): {reason}", path.display())]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An object is not in the store.
    #[error("object {id} is missing ({})", path.display())]
    Missing {
        /// The object.
        id: ObjectId,
        /// Where it should be.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The blake3 hash of an object's plain bytes. Displays (and serialises) as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `data` (its blake3 hash).
    pub fn of(data: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(data).as_bytes())
    }
    /// First 8 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&blake3::Hash::from_bytes(self.0).to_hex())
    }
}
impl std::fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let h = blake3::Hash::from_hex(s).map_err(|_| {
            if hex::decode(s).is_ok() {
                format!("object id must be 64 hex digits: {s:?}")
            } else {
                format!("not a hex object id: {s:?}")
            }
        })?;
        Ok(ObjectId(*h.as_bytes()))
    }
}

impl serde::Serialize for ObjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> serde::Deserialize<'de> for ObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A snapshot store. Cheap to share (`Send + Sync`); all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Bytes under `objects/` (approximate under concurrent puts; for quota checks).
    size: AtomicU64,
    /// Deferred durability (see [`Store::defer_sync`]): objects are renamed into place
    /// without their fsyncs, which one `syncfs` in [`Store::flush`] makes up for.
    deferred: std::sync::atomic::AtomicBool,
    /// This handle's staging directory under `tmp/`, and the locked file that says it is live.
    staging: PathBuf,
    staging_lock: PathBuf,
    _staging_lock: File,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
        let _ = fs::remove_file(&self.staging_lock);
    }
}

/// Creates this handle's staging dir under `tmpdir`: its lock file first (locked, and still the
/// file at that name, so a concurrent clean-up cannot have taken it), then the dir.
fn new_staging(tmpdir: &Path) -> Result<(PathBuf, PathBuf, File), StoreError> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let salt = blake3::hash(
            format!(
                "{}-{}-{:?}",
                crate::time::now_ns(),
                std::process::id(),
                std::thread::current().id()
            )
            .as_bytes(),
        );
        let id = format!("p-{}-{}", std::process::id(), &salt.to_hex()[..8]);
        let lock_path = tmpdir.join(format!("{id}.lock"));
        let f = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&lock_path)(e)),
        };
        if f.try_lock().is_err() {
            continue;
        }
        let same = match (f.metadata(), fs::metadata(&lock_path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        if !same {
            continue;
        }
        let dir = tmpdir.join(&id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        return Ok((dir, lock_path, f));
    }
}

/// Removes the staging dirs (and their lock files) of handles that are gone: a lock file
/// nobody holds. Loose files (from before staging dirs) are removed once an hour old.
fn clean_staging(tmpdir: &Path) {
    let Ok(rd) = fs::read_dir(tmpdir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if let Some(id) = name.strip_suffix(".lock")
            && id.starts_with("p-")
        {
            let Ok(f) = File::open(&path) else { continue };
            if f.try_lock().is_ok() {
                let dir = tmpdir.join(id);
                if dir.exists() {
                    match fs::remove_dir_all(&dir) {
                        Ok(()) => {
                            tracing::info!(dir = %dir.display(), "removed temporary files left by a killed process")
                        }
                        Err(e) => tracing::warn!("{}: {e}", dir.display()),
                    }
                }
                let _ = fs::remove_file(&path);
            }
        } else if !name.starts_with("p-")
            && e.file_type().is_ok_and(|t| t.is_file())
            && e.metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600))
        {
            let _ = fs::remove_file(&path);
        }
    }
}

/// A writer that hashes the plain bytes it is given and forwards them to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}
impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Store {
    /// Opens the store at `dir`, creating it (mode 0700) if it does not exist or is an empty
    /// directory. A non-empty directory without `store.toml` is refused. Loose permissions are
    /// warned about (pre-images may hold secrets).
    pub fn create_or_open(dir: &Path) -> Result<Store, StoreError> {
        let exists = dir.exists();
        let empty = exists && fs::read_dir(dir).map_err(io_err(dir))?.next().is_none();
        if !exists || empty {
            if !exists {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err(dir))?;
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
            for sub in ["objects", "sessions", "tmp"] {
                let p = dir.join(sub);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(io_err(&p))?;
            }
            let toml = format!(
                "# veilfs snapshot store\nformat = {FORMAT_VERSION}\ncreated = \"{}\"\n",
                crate::time::format_time(crate::time::now_ns())
            );
            let tmp = dir.join("tmp").join("store.toml");
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(toml.as_bytes()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            let dst = dir.join("store.toml");
            fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
            fsync_dir(dir)?;
        }
        Store::open(dir)
    }

    /// Opens an existing store; "no store at DIR" if there is none.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let meta_path = dir.join("store.toml");
        if !dir.is_dir() {
            return Err(StoreError::NoStore(dir.to_path_buf()));
        }
        let text = match fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoStore(dir.to_path_buf()));
            }
            Err(e) => return Err(io_err(&meta_path)(e)),
        };
        let v: toml::Table = text.parse().map_err(|e| StoreError::NotAStore {
            dir: dir.to_path_buf(),
            reason: format!("{}: {e}", meta_path.display()),
        })?;
        match v.get("format").and_then(|f| f.as_integer()) {
            Some(FORMAT_VERSION) => {}
            other => {
                return Err(StoreError::NotAStore {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "{}: unsupported format {other:?} (this veilfs reads {FORMAT_VERSION})",
                        meta_path.display()
                    ),
                });
            }
        }
        for sub in ["objects", "sessions", "tmp"] {
            let p = dir.join(sub);
            if !p.is_dir() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(io_err(&p))?;
            }
        }
        if let Ok(m) = fs::metadata(dir)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                store = %dir.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o7777),
                "store is accessible to other users; pre-images may hold secrets (chmod 700)"
            );
        }
        let tmpdir = dir.join("tmp");
        clean_staging(&tmpdir);
        let (staging, staging_lock, lock) = new_staging(&tmpdir)?;
        let store = Store {
            dir: dir.to_path_buf(),
            size: AtomicU64::new(0),
            deferred: std::sync::atomic::AtomicBool::new(false),
            staging,
            staging_lock,
            _staging_lock: lock,
        };
        store.size.store(store.scan_size(), Ordering::Relaxed);
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This handle's private staging directory (removed with the handle, or by the next open
    /// of the store after a kill).
    pub(crate) fn staging_dir(&self) -> &Path {
        &self.staging
    }

    pub(crate) fn sessions_dir(&self) -> PathBuf {
        self.dir.join("sessions")
    }

    /// Where the object `id` lives on disk.
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        let h = id.to_string();
        self.dir.join("objects").join(&h[..2]).join(&h[2..])
    }

    /// Reads `src` from offset 0 to EOF (with `pread`, so the caller's file position is left
    /// alone), stores it durably, and returns its id and length.
    pub fn put_file(&self, src: &File) -> Result<(ObjectId, u64), StoreError> {
        if src.metadata().is_ok_and(|m| m.len() >= PIPELINE_MIN) {
            return self.put_large(src);
        }
        let mut off = 0u64;
        let mut buf = vec![0u8; BUF];
        self.put_with(|w| {
            loop {
                let n = match src.read_at(&mut buf, off) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                off += n as u64;
                w.write_all(&buf[..n])?;
            }
        })
    }

    /// Stores `data` durably and returns its id.
    pub fn put_bytes(&self, data: &[u8]) -> Result<ObjectId, StoreError> {
        self.put_with(|w| w.write_all(data)).map(|(id, _)| id)
    }

    fn put_with(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(ObjectId, u64), StoreError> {
        let tmpdir = &self.staging;
        let tmp = tempfile::Builder::new()
            .prefix("obj-")
            .tempfile_in(tmpdir)
            .map_err(io_err(tmpdir))?;
        let tpath = tmp.path().to_path_buf();
        let enc = zstd::Encoder::new(tmp, ZSTD_LEVEL).map_err(io_err(&tpath))?;
        let mut w = HashingWriter {
            inner: enc,
            hasher: blake3::Hasher::new(),
            len: 0,
        };
        fill(&mut w).map_err(io_err(&tpath))?;
        let id = ObjectId(*w.hasher.finalize().as_bytes());
        let len = w.len;
        let tmp = w.inner.finish().map_err(io_err(&tpath))?;
        self.persist(tmp, id, len)
    }

    /// [`Store::put_file`] of a large file, on two threads: this one reads the file in
    /// [`CHUNK`]s and hashes them, while a second compresses and writes each chunk and starts
    /// its writeback (so the final fsync waits for the tail only). Data that does not compress
    /// (probed on its first chunk) is framed at zstd's fastest level, which stores it as is.
    fn put_large(&self, src: &File) -> Result<(ObjectId, u64), StoreError> {
        let tmp = tempfile::Builder::new()
            .prefix("obj-")
            .tempfile_in(&self.staging)
            .map_err(io_err(&self.staging))?;
        let tpath = tmp.path().to_path_buf();
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(PIPELINE_BUFS);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..PIPELINE_BUFS {
            let _ = free_tx.send(vec![0u8; CHUNK]);
        }
        let out = tmp.as_file();
        let (hashed, written) = std::thread::scope(|s| {
            let writer = std::thread::Builder::new()
                .name("veilfs-store".into())
                .spawn_scoped(s, move || -> io::Result<()> {
                    let mut enc = None;
                    let mut since_writeback = 0usize;
                    for (buf, n) in full_rx {
                        let enc = match &mut enc {
                            Some(e) => e,
                            None => enc.insert(zstd::stream::write::Encoder::new(
                                io::BufWriter::with_capacity(CHUNK, out),
                                level_for(&buf[..n]),
                            )?),
                        };
                        enc.write_all(&buf[..n])?;
                        since_writeback += n;
                        if since_writeback >= WRITEBACK_EVERY {
                            enc.flush()?;
                            let _ = crate::sys::start_writeback(out.as_fd());
                            since_writeback = 0;
                        }
                        // The reader may have stopped: a buffer it will not take is dropped.
                        let _ = free_tx.send(buf);
                    }
                    let enc = match enc {
                        Some(e) => e,
                        None => zstd::stream::write::Encoder::new(
                            io::BufWriter::with_capacity(CHUNK, out),
                            ZSTD_LEVEL,
                        )?,
                    };
                    enc.finish()?.flush()
                });
            let writer = match writer {
                Ok(w) => w,
                Err(e) => return (Err(e), Ok(())),
            };
            let mut hasher = blake3::Hasher::new();
            let mut off = 0u64;
            let hashed = loop {
                // No buffer coming back means the writer stopped: its error is the one to tell.
                let Ok(mut buf) = free_rx.recv() else {
                    break Ok((hasher.finalize(), off));
                };
                let n = match read_chunk(src, &mut buf, off) {
                    Ok(n) => n,
                    Err(e) => break Err(e),
                };
                if n == 0 {
                    break Ok((hasher.finalize(), off));
                }
                hasher.update(&buf[..n]);
                off += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    break Ok((hasher.finalize(), off));
                }
            };
            drop(full_tx);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the store's writer thread panicked")));
            (hashed, written)
        });
        let (hash, len) = hashed.map_err(io_err(&tpath))?;
        written.map_err(io_err(&tpath))?;
        self.persist(tmp, ObjectId(*hash.as_bytes()), len)
    }

    /// Makes the finished temporary `tmp` object `id` (of plain length `len`): fsynced, renamed
    /// into place and its directory fsynced (outside deferred mode), unless the store has it.
    fn persist(
        &self,
        tmp: tempfile::NamedTempFile,
        id: ObjectId,
        len: u64,
    ) -> Result<(ObjectId, u64), StoreError> {
        let tpath = tmp.path().to_path_buf();
        if self.has(&id) {
            // A small object may have been stored lazily (its bytes in a journal record) and
            // torn by a power cut that also lost that record: an existing small copy is
            // checked, and a torn one replaced, before this capture relies on it.
            if len > INLINE_MAX || self.verify_object(&id).is_ok() {
                return Ok((id, len)); // dedup: the tempfile is removed on drop
            }
            let dst = self.object_path(&id);
            match fs::remove_file(&dst) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dst)(e)),
            }
        }
        let deferred = self.deferred.load(Ordering::Relaxed);
        if !deferred {
            tmp.as_file().sync_all().map_err(io_err(&tpath))?;
        }
        let dst = self.object_path(&id);
        let sub = dst.parent().unwrap_or(&self.dir).to_path_buf();
        let new_sub = !sub.is_dir();
        if new_sub {
            match fs::DirBuilder::new().mode(0o700).create(&sub) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&sub)(e)),
            }
        }
        let on_disk = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        match tmp.persist_noclobber(&dst) {
            Ok(_) => {
                self.size.fetch_add(on_disk, Ordering::Relaxed);
            }
            // Another writer stored the same object first: same bytes, fine.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dst)(e.error)),
        }
        if !deferred {
            fsync_dir(&sub)?;
            if new_sub {
                fsync_dir(&self.dir.join("objects"))?;
            }
        }
        Ok((id, len))
    }

    /// The id and compressed bytes of `data`, stored nowhere yet. The caller must journal
    /// those bytes durably (an `Object` record) and then hand them to a [`LazyWriter`]: until
    /// the object file is written, and after a crash that tore it, [`Store::repair`] rebuilds
    /// it from the record (every reader of a session that did not end does).
    pub(crate) fn pack(&self, data: &[u8]) -> Result<(ObjectId, Vec<u8>), StoreError> {
        let id = ObjectId::of(data);
        thread_local! {
            // One compression context per thread, not one per pre-image: making it was a
            // twentieth of an `rm -rf`'s time on the request threads.
            static CCTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let z = CCTX
            .with(|c| {
                let mut c = c.borrow_mut();
                let cx = match c.as_mut() {
                    Some(cx) => cx,
                    None => c.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
                };
                cx.compress(data)
            })
            .map_err(io_err(&self.object_path(&id)))?;
        Ok((id, z))
    }

    /// Writes a packed object without waiting for the disk (no fsync of the object or its
    /// directory); see [`Store::pack`].
    pub(crate) fn place_lazy(&self, id: &ObjectId, z: &[u8]) -> Result<(), StoreError> {
        // An existing copy is checked, not trusted: it may be a lazily stored object that a
        // crash tore and no reader has rebuilt yet, and this session may end cleanly (and so
        // never rebuild it) while relying on it.
        if self.verify_object(id).is_err() {
            self.place(id, z, false)?;
        }
        Ok(())
    }

    /// Makes sure object `id` is present, durable and intact, rewriting it from `z` (its
    /// compressed bytes, as journalled) when it is missing or does not verify (a crash before
    /// a lazily stored object reached the disk). Returns whether it was rewritten.
    pub fn repair(&self, id: &ObjectId, z: &[u8]) -> Result<bool, StoreError> {
        if self.verify_object(id).is_ok() {
            return Ok(false);
        }
        let path = self.object_path(id);
        let corrupt = |reason: String| StoreError::Corrupt {
            id: *id,
            path: path.clone(),
            reason,
        };
        let plain = zstd::decode_all(z).map_err(|e| corrupt(format!("journalled copy: {e}")))?;
        if ObjectId::of(&plain) != *id {
            return Err(corrupt("journalled copy does not hash to its id".into()));
        }
        self.place(id, z, true)?;
        Ok(true)
    }

    /// Writes compressed bytes `z` as object `id` (replacing a torn one), durably if `sync`.
    fn place(&self, id: &ObjectId, z: &[u8], sync: bool) -> Result<(), StoreError> {
        let mut tmp = tempfile::Builder::new()
            .prefix("obj-")
            .tempfile_in(&self.staging)
            .map_err(io_err(&self.staging))?;
        let tpath = tmp.path().to_path_buf();
        tmp.write_all(z).map_err(io_err(&tpath))?;
        if sync {
            tmp.as_file().sync_all().map_err(io_err(&tpath))?;
        }
        let dst = self.object_path(id);
        let sub = dst.parent().unwrap_or(&self.dir).to_path_buf();
        let new_sub = !sub.is_dir();
        if new_sub {
            match fs::DirBuilder::new().mode(0o700).create(&sub) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&sub)(e)),
            }
        }
        let existed = dst.exists();
        tmp.persist(&dst).map_err(|e| io_err(&dst)(e.error))?;
        if !existed {
            self.size.fetch_add(z.len() as u64, Ordering::Relaxed);
        }
        if sync {
            fsync_dir(&sub)?;
            if new_sub {
                fsync_dir(&self.dir.join("objects"))?;
            }
        }
        Ok(())
    }

    /// Bulk mode for a caller that stores thousands of objects before it relies on any of them
    /// (commit planning): objects are written and renamed into place without one fsync each.
    /// Until [`Store::flush`] returns, objects stored meanwhile may not survive a power loss
    /// (a process kill loses nothing: the bytes are in the page cache). Nothing may refer to
    /// them durably (a journal record) before the flush.
    pub fn defer_sync(&self) {
        self.deferred.store(true, Ordering::Relaxed);
    }

    /// Makes every object stored in deferred mode durable (one `syncfs` of the store's
    /// filesystem) and leaves deferred mode.
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.deferred.swap(false, Ordering::Relaxed) {
            syncfs(&self.dir)?;
        }
        Ok(())
    }

    /// True if the object exists (not verified).
    pub fn has(&self, id: &ObjectId) -> bool {
        self.object_path(id).is_file()
    }

    /// Decompresses `id` into `out` while hashing; errors (without deleting anything) if the
    /// hash does not match. `out` may hold partial or wrong bytes on error, so use this only
    /// into a temporary the caller discards on error; [`Store::read_to`] is the safe form.
    pub fn restore_into(&self, id: &ObjectId, out: &mut dyn Write) -> Result<u64, StoreError> {
        let path = self.object_path(id);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { id: *id, path });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            id: *id,
            path: path.clone(),
            reason,
        };
        let mut dec = zstd::Decoder::new(f).map_err(io_err(&path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; BUF];
        let mut len = 0u64;
        loop {
            let n = match dec.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(format!("cannot decompress: {e}"))),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&path))?;
            len += n as u64;
        }
        let got = ObjectId(*hasher.finalize().as_bytes());
        if got != *id {
            return Err(corrupt(format!("content hashes to {got}")));
        }
        Ok(len)
    }

    /// Checks that `id` exists, decompresses and hashes to its name; returns its plain length.
    pub fn verify_object(&self, id: &ObjectId) -> Result<u64, StoreError> {
        self.restore_into(id, &mut io::sink())
    }

    /// Writes the plain bytes of `id` to `out`, after verifying them (they are staged in an
    /// unnamed file under `tmp/`, so memory use does not grow with the object).
    pub fn read_to(&self, id: &ObjectId, out: &mut dyn Write) -> Result<u64, StoreError> {
        let tmpdir = self.dir.join("tmp");
        let mut stage = tempfile::tempfile_in(&tmpdir).map_err(io_err(&tmpdir))?;
        let len = self.restore_into(id, &mut stage)?;
        stage.rewind().map_err(io_err(&tmpdir))?;
        io::copy(&mut stage, out).map_err(io_err(&self.object_path(id)))?;
        Ok(len)
    }

    /// Convenience: the verified plain bytes of a (small) object.
    pub fn read_bytes(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        let mut v = Vec::new();
        self.read_to(id, &mut v)?;
        Ok(v)
    }

    /// Bytes used by objects on disk (for a quota check by the caller).
    pub fn size_on_disk(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn scan_size(&self) -> u64 {
        let (ids, _) = self.list_objects().unwrap_or_default();
        ids.iter()
            .filter_map(|id| fs::metadata(self.object_path(id)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Every object under `objects/`, plus files there whose names are not object ids.
    pub fn list_objects(&self) -> Result<(Vec<ObjectId>, Vec<PathBuf>), StoreError> {
        let objects = self.dir.join("objects");
        let mut ids = Vec::new();
        let mut strays = Vec::new();
        for sub in fs::read_dir(&objects).map_err(io_err(&objects))? {
            let sub = sub.map_err(io_err(&objects))?;
            let sname = sub.file_name().to_string_lossy().into_owned();
            if !sub.path().is_dir() {
                strays.push(sub.path());
                continue;
            }
            for e in fs::read_dir(sub.path()).map_err(io_err(&sub.path()))? {
                let e = e.map_err(io_err(&sub.path()))?;
                let name = format!("{sname}{}", e.file_name().to_string_lossy());
                match name.parse::<ObjectId>() {
                    Ok(id) if sname.len() == 2 => ids.push(id),
                    _ => strays.push(e.path()),
                }
            }
        }
        ids.sort();
        Ok((ids, strays))
    }
}

/// Reads up to a whole `buf` of `src` at `off` (short only at end of file).
fn read_chunk(src: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The zstd level for data that starts with `first`: [`ZSTD_LEVEL`], or [`STORE_LEVEL`] when
/// a sample of it does not compress (media, archives, random bytes), where compressing would
/// cost time for nothing.
fn level_for(first: &[u8]) -> i32 {
    let sample = &first[..first.len().min(128 * 1024)];
    match zstd::bulk::compress(sample, ZSTD_LEVEL) {
        Ok(z) if (z.len() as u64) * 100 < sample.len() as u64 * 97 => ZSTD_LEVEL,
        Ok(_) => STORE_LEVEL,
        Err(_) => ZSTD_LEVEL,
    }
}

/// Flushes the whole filesystem holding `path` to disk (`syncfs`): one call for a batch of
/// writes that would otherwise each need their own fsync.
pub(crate) fn syncfs(path: &Path) -> Result<(), StoreError> {
    let d = File::open(path).map_err(io_err(path))?;
    rustix::fs::syncfs(&d).map_err(|e| io_err(path)(io::Error::from(e)))
}

/// fsync a directory so a rename into it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes the object files of packed pre-images ([`Store::pack`]) on a thread of its own, off
/// the request that captured them: their bytes are already durable in the journal, so the
/// file is only a copy until the session ends. [`LazyWriter::settle`] waits for the queue
/// (before a session is marked ended, readers trust its object files and stop rebuilding).
pub(crate) struct LazyWriter {
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<LazyState>,
}

/// The queue shared by the capturing threads and the writer thread.
struct LazyState {
    queue: Mutex<Queued>,
    /// Wakes the writer: only when it sleeps with nothing queued, when the queue passes half
    /// its byte budget, or at shutdown (see [`LazyWriter::queue`]).
    work: Condvar,
    /// Signalled by the writer after each batch (for `settle` and for captures held back by
    /// the byte budget).
    done: Condvar,
}

/// What the writer thread has yet to do.
#[derive(Default)]
struct Queued {
    /// Objects handed over and not yet taken by the writer.
    pending: Vec<(ObjectId, Vec<u8>)>,
    /// Objects queued and not yet written (pending or in the writer's batch).
    count: usize,
    /// Their compressed bytes.
    bytes: usize,
    /// Whether any write failed.
    failed: bool,
    /// When the last object was queued: the writer starts once the queue has been quiet for
    /// [`LAZY_IDLE`].
    last: Option<std::time::Instant>,
    /// The writer sleeps without a timeout (nothing pending): the next object must wake it.
    idle: bool,
    /// The `LazyWriter` was dropped: write what is pending and stop.
    closed: bool,
}

/// Queued compressed bytes past which a capture waits for the writer: bounds the memory an
/// agent writing faster than the disk can pin. A byte budget, not a count: removing thousands
/// of small files queues thousands of objects of a few hundred bytes each, which the writer,
/// running at a low priority, catches up with once the agent pauses.
const LAZY_QUEUE_BYTES: usize = 64 << 20;

/// How long the queue must stay quiet before the writer starts on it.
const LAZY_IDLE: std::time::Duration = std::time::Duration::from_millis(20);

impl LazyWriter {
    /// Starts the writer thread of `store`.
    pub(crate) fn start(store: Arc<Store>) -> io::Result<LazyWriter> {
        let state = Arc::new(LazyState {
            queue: Mutex::new(Queued::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("veilfs-objects".into())
            .spawn(move || {
                // The bytes are durable in the journal already: this copy waits while the agent
                // is busy (a burst of captures, e.g. an `rm -rf`), whose requests it would slow
                // on a small machine (CPU, and the store filesystem's inode allocation), and then
                // runs at a low priority (the thread's nice value; per thread on Linux).
                let _ = rustix::process::setpriority_process(None, 19);
                while let Some(batch) = st.next_batch() {
                    let (n, mut written, mut failed) = (batch.len(), 0, false);
                    for (id, z) in batch {
                        written += z.len();
                        // A panic counts as a failed write: `settle` must never wait forever.
                        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            store.place_lazy(&id, &z)
                        }));
                        match res {
                            Ok(Err(e)) => {
                                tracing::warn!("store: {e} (the journal keeps its bytes)");
                                failed = true;
                            }
                            Ok(Ok(())) => {}
                            Err(_) => failed = true,
                        }
                    }
                    let mut g = st.lock();
                    g.count -= n;
                    g.failed |= failed;
                    g.bytes -= written;
                    drop(g);
                    st.done.notify_all();
                }
            })?;
        Ok(LazyWriter {
            thread: Some(thread),
            state,
        })
    }

    /// Queues object `id` (compressed bytes `z`, already journalled) to be written. Wakes the
    /// writer only when it sleeps with nothing to do, or when half the byte budget is queued:
    /// while it waits for a burst to end it looks again on its own timer, so a burst of
    /// captures costs no wake-up (a futex call and two context switches) each.
    pub(crate) fn queue(&self, id: ObjectId, z: Vec<u8>) {
        let st = &*self.state;
        let len = z.len();
        let mut g = st.lock();
        while g.count > 0 && g.bytes + len > LAZY_QUEUE_BYTES {
            g = st.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if g.closed {
            // The writer is gone: the journal's copy is the only one, which the session, left
            // unended by `settle`, is rebuilt from.
            g.failed = true;
            return;
        }
        g.count += 1;
        g.bytes += len;
        g.pending.push((id, z));
        g.last = Some(std::time::Instant::now());
        let wake = g.idle || g.bytes >= LAZY_QUEUE_BYTES / 2;
        if wake {
            g.idle = false;
        }
        drop(g);
        if wake {
            st.work.notify_one();
        }
    }

    /// Waits until every queued object is written; false if any could not be.
    pub(crate) fn settle(&self) -> bool {
        let st = &*self.state;
        let mut g = st.lock();
        while g.count > 0 {
            if !g.pending.is_empty() {
                // Nothing more is coming from this caller: no need to wait for a quiet spell.
                g.last = None;
                st.work.notify_one();
            }
            g = st.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        !g.failed
    }
}

impl LazyState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer's next batch: waits for objects, then for the queue to stay quiet for
    /// [`LAZY_IDLE`] (or to pass half the byte budget, or for a `settle` or the shutdown).
    /// None once closed with nothing left.
    fn next_batch(&self) -> Option<Vec<(ObjectId, Vec<u8>)>> {
        let mut g = self.lock();
        loop {
            if g.pending.is_empty() {
                if g.closed {
                    return None;
                }
                g.idle = true;
                g = self.work.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g.idle = false;
            let quiet = g.last.map_or(std::time::Duration::MAX, |t| t.elapsed());
            if g.closed || quiet >= LAZY_IDLE || g.bytes >= LAZY_QUEUE_BYTES / 2 {
                return Some(std::mem::take(&mut g.pending));
            }
            g = self
                .work
                .wait_timeout(g, LAZY_IDLE - quiet)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for LazyWriter {
    fn drop(&mut self) {
        self.state.lock().closed = true;
        self.state.work.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The background writer writes a packed object whole, and reports a write that failed
    /// (so the session is left unended and rebuilt from its journal instead of trusted).
    #[test]
    fn lazy_writer_writes_packed_objects_and_reports_a_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create_or_open(&tmp.path().join("s")).unwrap());
        let w = LazyWriter::start(store.clone()).unwrap();
        let (id, z) = store.pack(b"pre-image bytes\n").unwrap();
        w.queue(id, z);
        assert!(w.settle());
        assert_eq!(store.read_bytes(&id).unwrap(), b"pre-image bytes\n");
        // An object whose fan-out directory is taken by a file cannot be written.
        let (bad, z) = store.pack(b"cannot be placed\n").unwrap();
        let sub = store.object_path(&bad).parent().unwrap().to_path_buf();
        if sub.exists() {
            fs::remove_dir_all(&sub).unwrap();
        }
        fs::write(&sub, b"").unwrap();
        w.queue(bad, z);
        assert!(!w.settle());
        drop(w);
        assert!(!store.has(&bad));
    }

    /// A small object stored lazily and torn by a power cut (with the journal record that
    /// could rebuild it lost too) is not trusted by a later durable put of the same bytes:
    /// the put replaces it, so the capture that relies on it restores whole.
    #[test]
    fn a_durable_put_replaces_a_torn_copy_of_a_small_object() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create_or_open(&d.path().join("st")).unwrap();
        let data = b"the pre-image a power cut tore\n".repeat(40);
        let id = ObjectId::of(&data);
        let (_, z) = s.pack(&data).unwrap();
        let path = s.object_path(&id);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &z[..z.len() / 2]).unwrap();
        assert!(s.verify_object(&id).is_err());
        assert_eq!(s.put_bytes(&data).unwrap(), id);
        assert_eq!(s.read_bytes(&id).unwrap(), data);
    }

    /// A large pre-image goes through the two-thread path: its id is the blake3 of its bytes
    /// and it reads back whole, compressible or not (an incompressible start picks the fastest
    /// level for all of it, compressible data after it included), at a chunk boundary or not.
    #[test]
    fn large_objects_are_stored_whole_on_two_threads() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create_or_open(&d.path().join("st")).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect()
        };
        let text = b"let x = compressible(line);\n".repeat(300_000);
        let mut random_then_text = noise(6 << 20);
        random_then_text.extend_from_slice(&text);
        let mut odd = text.clone();
        odd.extend_from_slice(&noise((5 << 20) + 8)[..(5 << 20) + 3]);
        for data in [random_then_text, odd, vec![0u8; PIPELINE_MIN as usize]] {
            assert!(data.len() as u64 >= PIPELINE_MIN);
            let src = d.path().join("src");
            fs::write(&src, &data).unwrap();
            let (id, len) = s.put_file(&File::open(&src).unwrap()).unwrap();
            assert_eq!((id, len), (ObjectId::of(&data), data.len() as u64));
            assert_eq!(s.read_bytes(&id).unwrap(), data);
        }
        let zeros = fs::metadata(s.object_path(&ObjectId::of(&vec![0u8; PIPELINE_MIN as usize])))
            .unwrap()
            .len();
        assert!(zeros < 64 * 1024, "zeros compress: {zeros} bytes");
    }

    #[test]
    fn object_roundtrip_dedup_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::create_or_open(&d.path().join("st")).unwrap();
        let mode = fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let id = s.put_bytes(b"hello world").unwrap();
        assert_eq!(id, ObjectId::of(b"hello world"));
        assert_eq!(s.put_bytes(b"hello world").unwrap(), id);
        assert!(s.has(&id));
        assert_eq!(s.read_bytes(&id).unwrap(), b"hello world");
        assert!(s.size_on_disk() > 0);
        let src = d.path().join("f");
        fs::write(&src, vec![7u8; 1_000_000]).unwrap();
        let (id2, len) = s.put_file(&File::open(&src).unwrap()).unwrap();
        assert_eq!(len, 1_000_000);
        assert_eq!(s.read_bytes(&id2).unwrap(), vec![7u8; 1_000_000]);
        // Corrupt: replace with a valid zstd frame of other bytes.
        let other = zstd::encode_all(&b"evil"[..], 1).unwrap();
        let p = s.object_path(&id);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, other).unwrap();
        let mut out = Vec::new();
        let err = s.read_to(&id, &mut out).unwrap_err();
        assert!(
            out.is_empty(),
            "no bytes of a corrupt object are handed out"
        );
        assert!(err.to_string().contains(&id.to_string()), "{err}");
        let (ids, strays) = s.list_objects().unwrap();
        assert_eq!(ids.len(), 2);
        assert!(strays.is_empty());
    }

    /// Issue #15 item 7: a temp file a killed process left in the store was never removed.
    #[test]
    fn staging_left_by_a_killed_process_is_removed_and_a_live_ones_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let live = Store::create_or_open(&d.path().join("st")).unwrap();
        let tmp = d.path().join("st/tmp");
        // What a process killed while storing an object leaves: its lock file (unlocked now
        // that the process is gone) and a half-written object in its staging dir.
        fs::write(tmp.join("p-1-dead.lock"), "").unwrap();
        fs::create_dir(tmp.join("p-1-dead")).unwrap();
        fs::write(tmp.join("p-1-dead/obj-half"), "half").unwrap();
        let live_staging = live.staging.clone();
        fs::write(live_staging.join("obj-in-progress"), "x").unwrap();
        let other = Store::open(&d.path().join("st")).unwrap();
        assert!(!tmp.join("p-1-dead").exists(), "dead staging dir removed");
        assert!(!tmp.join("p-1-dead.lock").exists());
        assert!(
            live_staging.join("obj-in-progress").exists(),
            "live one kept"
        );
        let id = other.put_bytes(b"abc").unwrap();
        assert_eq!(live.read_bytes(&id).unwrap(), b"abc");
        drop(live);
        assert!(
            !live_staging.exists(),
            "a handle removes its staging dir when dropped"
        );
    }

    #[test]
    fn open_requires_a_store() {
        let d = tempfile::tempdir().unwrap();
        let e = Store::open(&d.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("no store at"), "{e}");
        fs::write(d.path().join("junk"), "x").unwrap();
        assert!(Store::create_or_open(d.path()).is_err());
        let id: ObjectId = ObjectId::of(b"x").to_string().parse().unwrap();
        assert_eq!(id, ObjectId::of(b"x"));
    }
}
