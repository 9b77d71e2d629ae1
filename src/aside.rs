//! The aside area: files the agent removes, parked in the store instead of unlinked.
//!
//! Why: a removal must not destroy a pre-image that is not yet durable, and fsyncing the
//! journal for every removed file made `rm -rf` cost one fdatasync per file. When the store is
//! on the same filesystem as the real folder, a removed regular file or symlink is renamed
//! (`RENAME_NOREPLACE`) into `DIR/aside/<session>/<c>/<s>-<name>` instead. The rename destroys
//! nothing, so its journal records (the inline `Object` and the `Capture`, at seq `s`) may stay
//! un-synced: after an OS crash either the rename did not persist (the file is still in the real
//! folder: the removal did not happen, as POSIX allows for an un-fsynced change) or it did and
//! the bytes are here.
//!
//! What must survive is where the file came from. `c` is the seq of the `Capture` of its
//! directory, which is durable (synced) before `<c>/` is made, so a parked name that persisted
//! implies a durable record naming its directory: the filesystem's own metadata ordering carries
//! the origin. A parked file is redundant once a later journal sync covers seq `s`, and is then
//! unlinked ("reaped"); a clean session end leaves nothing here. A reader of a session that did
//! not end (see `journal.rs`, `recover_aside`) appends the records of parked files the durable
//! journal lacks, rebuilt from the files themselves, and then removes them.
//!
//! The area is inside the store, which veilfs refuses inside the scope or the mount: nothing
//! here is reachable through the mount, and no journal record names an aside path.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backing;

/// The store's subdirectory holding one directory per session with parked files.
const DIR: &str = "aside";

/// The directory of session `session`'s parked files in the store at `store_dir`.
pub(crate) fn session_dir(store_dir: &Path, session: &str) -> PathBuf {
    store_dir.join(DIR).join(session)
}

/// The parked name of `name` whose `Capture` is record `s`: `<s>-<name>`, or None when that
/// would be longer than a name may be (the removal then takes the synchronous path).
pub(crate) fn parked_name(s: u64, name: &OsStr) -> Option<OsString> {
    let mut out = format!("{s}-").into_bytes();
    out.extend_from_slice(name.as_bytes());
    (out.len() <= 255).then(|| OsString::from_vec(out))
}

/// The inverse of [`parked_name`].
pub(crate) fn parse_parked(parked: &OsStr) -> Option<(u64, OsString)> {
    let b = parked.as_bytes();
    let dash = b.iter().position(|c| *c == b'-')?;
    let s = std::str::from_utf8(&b[..dash]).ok()?.parse().ok()?;
    let name = &b[dash + 1..];
    (!name.is_empty()).then(|| (s, OsString::from_vec(name.to_vec())))
}

/// One parked file of a session, as found on disk.
#[derive(Debug)]
pub(crate) struct Found {
    /// The seq of its directory's `Capture`.
    pub(crate) c: u64,
    /// The seq of its own `Capture`.
    pub(crate) s: u64,
    /// Its name in the real folder.
    pub(crate) name: OsString,
    /// Where it is parked.
    pub(crate) path: PathBuf,
}

/// Every parked file of `session`, ordered by the seq of its capture (the order the removals
/// happened in). Entries that are not parked files are skipped.
pub(crate) fn list(store_dir: &Path, session: &str) -> io::Result<Vec<Found>> {
    let dir = session_dir(store_dir, session);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for sub in rd {
        let sub = sub?;
        let Some(c) = sub.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        for e in std::fs::read_dir(sub.path())? {
            let e = e?;
            if let Some((s, name)) = parse_parked(&e.file_name()) {
                out.push(Found {
                    c,
                    s,
                    name,
                    path: e.path(),
                });
            }
        }
    }
    out.sort_by_key(|f| f.s);
    Ok(out)
}

/// Removes `session`'s aside directory (after its files were recovered or reaped).
pub(crate) fn remove_session(store_dir: &Path, session: &str) -> io::Result<()> {
    match std::fs::remove_dir_all(session_dir(store_dir, session)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A file parked by this session and not yet reaped.
struct Parked {
    dir: Arc<OwnedFd>,
    name: OsString,
    s: u64,
}

/// A live session's aside area.
pub(crate) struct Area {
    path: PathBuf,
    dir: OwnedFd,
    /// `<c>/` directories made so far.
    subdirs: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    parked: Mutex<Vec<Parked>>,
    /// Parked files to unlink, handed to the reaper thread: freeing a file's blocks (with a
    /// discard, on a filesystem mounted so) took a sixth of an `rm -rf`'s time when done on
    /// the request that synced.
    reaper: Mutex<Option<(std::sync::mpsc::Sender<Parked>, std::thread::JoinHandle<()>)>>,
}

/// How long the reaper waits for the removals to pause before it unlinks what it was given.
const REAP_IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Unlinks the parked files it receives, once they stop coming for [`REAP_IDLE`], at a low
/// priority: they are redundant (their records are durable), so this only frees space.
fn reaper(rx: std::sync::mpsc::Receiver<Parked>, path: PathBuf) {
    let _ = rustix::process::setpriority_process(None, 19);
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(next) = rx.recv_timeout(REAP_IDLE) {
            batch.push(next);
        }
        for p in batch.drain(..) {
            match backing::unlink(p.dir.as_fd(), &p.name) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Its records are durable: a leftover costs space, never data.
                Err(e) => tracing::warn!("aside {}: {e}", path.display()),
            }
        }
    }
}

impl Area {
    /// The aside area of `session` in `store_dir`, when the store is on the same filesystem as
    /// the scope (`root`); None otherwise.
    pub(crate) fn open(
        store_dir: &Path,
        session: &str,
        root: BorrowedFd<'_>,
    ) -> io::Result<Option<Area>> {
        let store = backing::open_root(store_dir)?;
        if backing::stat_fd(store.as_fd())?.dev != backing::stat_fd(root)?.dev {
            return Ok(None);
        }
        let path = session_dir(store_dir, session);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)?;
        let dir = backing::open_root(&path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let thread = std::thread::Builder::new()
            .name("veilfs-aside".into())
            .spawn(move || reaper(rx, p))?;
        Ok(Some(Area {
            path,
            dir,
            subdirs: Mutex::new(HashMap::new()),
            parked: Mutex::new(Vec::new()),
            reaper: Mutex::new(Some((tx, thread))),
        }))
    }

    fn subdir(&self, c: u64) -> io::Result<Arc<OwnedFd>> {
        let mut m = self.subdirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = m.get(&c) {
            return Ok(d.clone());
        }
        let name = OsString::from(c.to_string());
        match backing::mkdir(self.dir.as_fd(), &name, 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let d = Arc::new(backing::lookup(self.dir.as_fd(), &name)?);
        m.insert(c, d.clone());
        Ok(d)
    }

    /// Moves `name` out of the directory `pfd` (whose durable `Capture` is record `c`) to its
    /// parked name for capture record `s`, never replacing anything. Returns the (dev, ino) of
    /// what was moved, or None when it was not (another filesystem, the parked name taken, a
    /// name too long): the caller then takes the synchronous path.
    pub(crate) fn park(
        &self,
        c: u64,
        s: u64,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
    ) -> io::Result<Option<(u64, u64)>> {
        let Some(parked) = parked_name(s, name) else {
            return Ok(None);
        };
        let dir = self.subdir(c)?;
        match backing::rename(pfd, name, dir.as_fd(), &parked, libc::RENAME_NOREPLACE) {
            Ok(()) => {}
            // Another filesystem after all (a bind mount), or the name taken: not here.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EEXIST)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let st = backing::stat_at(dir.as_fd(), &parked);
        self.parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Parked {
                dir,
                name: parked,
                s,
            });
        // Unknown (never in practice): the caller takes it for a swapped object.
        Ok(Some(st.map_or((0, 0), |st| (st.dev, st.ino))))
    }

    /// Moves the file parked for capture `s` back to `name` in `pfd` (never replacing
    /// anything); false when it could not be.
    pub(crate) fn unpark(&self, s: u64, pfd: BorrowedFd<'_>, name: &OsStr) -> bool {
        let mut v = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = v.iter().position(|p| p.s == s) else {
            return false;
        };
        let p = &v[i];
        if backing::rename(p.dir.as_fd(), &p.name, pfd, name, libc::RENAME_NOREPLACE).is_err() {
            return false;
        }
        v.remove(i);
        true
    }

    /// An O_PATH fd of the file parked for capture `s`.
    pub(crate) fn parked_fd(&self, s: u64) -> io::Result<OwnedFd> {
        let v = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        match v.iter().find(|p| p.s == s) {
            Some(p) => backing::lookup(p.dir.as_fd(), &p.name),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    /// Has every parked file whose records are durable (`s < durable`, the number of journal
    /// records known on disk) unlinked, in the background. Returns how many are left.
    pub(crate) fn reap(&self, durable: u64) -> usize {
        let mut v = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if !v.iter().any(|p| p.s < durable) {
            return v.len();
        }
        let reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner());
        let mut keep = Vec::new();
        for p in v.drain(..) {
            if p.s >= durable {
                keep.push(p);
                continue;
            }
            let p = match &*reaper {
                Some((tx, _)) => match tx.send(p) {
                    Ok(()) => continue,
                    Err(std::sync::mpsc::SendError(p)) => p,
                },
                None => p,
            };
            // No reaper (finished, or it panicked): unlink it here.
            let _ = backing::unlink(p.dir.as_fd(), &p.name);
        }
        *v = keep;
        v.len()
    }

    /// Files parked and not reaped yet.
    pub(crate) fn pending(&self) -> usize {
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// After the last reap: removes the session's aside directory (its `<c>/` dirs are empty
    /// then). Left in place when anything is still parked.
    pub(crate) fn finish(&self) {
        if self.pending() > 0 {
            return;
        }
        self.stop_reaper();
        let m = self.subdirs.lock().unwrap_or_else(|e| e.into_inner());
        for c in m.keys() {
            let _ = backing::rmdir(self.dir.as_fd(), OsStr::new(&c.to_string()));
        }
        let _ = std::fs::remove_dir(&self.path);
    }

    /// Lets the reaper unlink what it was given and waits for it to end.
    fn stop_reaper(&self) {
        let reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, thread)) = reaper {
            drop(tx);
            let _ = thread.join();
        }
    }
}

impl Drop for Area {
    /// An area let go of without [`Area::finish`] (a session ended by an error) still has
    /// its reaper end with it: nothing unlinks in the store after its owner is gone, where a
    /// reader of the session could meet it half-way.
    fn drop(&mut self) {
        self.stop_reaper();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropping an area waits for its reaper: the files handed to it are gone, not still
    /// waiting out its idle timer.
    #[test]
    fn an_area_dropped_has_reaped_what_it_handed_over() {
        let scope = tempfile::tempdir().unwrap();
        let store = scope.path().join(".store");
        std::fs::create_dir(&store).unwrap();
        let root = backing::open_root(scope.path()).unwrap();
        let area = Area::open(&store, "s1", root.as_fd()).unwrap().unwrap();
        let names: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            std::fs::write(scope.path().join(n), b"x").unwrap();
            let parked = area.park(1, i as u64 + 2, root.as_fd(), OsStr::new(n));
            assert!(parked.unwrap().is_some());
        }
        assert_eq!(area.reap(u64::MAX), 0);
        let dir = session_dir(&store, "s1").join("1");
        drop(area);
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            left, 0,
            "parked files still there after the area was dropped"
        );
    }

    #[test]
    fn parked_names_round_trip_and_long_names_are_not_parked() {
        let n = OsStr::from_bytes(b"a-b\xff.txt");
        let p = parked_name(42, n).unwrap();
        assert_eq!(p.as_bytes(), b"42-a-b\xff.txt");
        assert_eq!(parse_parked(&p), Some((42, n.to_os_string())));
        assert!(parked_name(7, OsStr::new(&"x".repeat(253))).is_some());
        assert!(parked_name(7, OsStr::new(&"x".repeat(254))).is_none());
        assert_eq!(parse_parked(OsStr::new("x-y")), None);
        assert_eq!(parse_parked(OsStr::new("12-")), None);
    }
}
