//! Snapshot mode's deferred apply (`[write] apply = "deferred"`): the durability contract
//! (README, "Durability contract") lets a write reach the real folder later than the agent's
//! `write(2)`, as long as it is there, with its pre-image durable first, when the agent asks
//! (`fsync`) or the mount ends.
//!
//! The first write-open of a small existing file (one name, at most [`DEFER_MAX`] bytes, not
//! diverted for another reason) copies it into the divert layer without any fsync
//! ([`Divert::stage`](super::divert::Divert::stage)) and returns: the agent's writes, reads,
//! getattr and listings see that copy, exactly as for a diverted file. When its last writer
//! closes it, the file joins a queue. The first release that finds no batch running becomes
//! the committer: it takes the whole queue and
//! 1. checks each real file is still what veilfs last saw (device, inode, size, mtime, ctime):
//!    a file changed outside the mount meanwhile is never overwritten — it stays diverted
//!    (for `veilfs diff`/`commit`/`discard`), with the reason audited and journalled;
//! 2. captures every pre-image and makes them durable with **one** journal flush
//!    ([`Guard::capture_then`](crate::guard::Guard::capture_then), small pre-images travel
//!    inside the journal);
//! 3. copies each private copy's bytes, mode, owner, times and xattrs into the *real inode*
//!    (never a rename: the file keeps its inode, hard-link identity and outside watchers),
//!    records the post-image, and serves the real file again.
//!
//! A file written through several names, a large file, and every namespace change take the
//! immediate path. Before a namespace change (unlink, rmdir, rename, link) everything
//! pending is applied synchronously, so those operations always act on the real folder as
//! the agent sees it; one that would move or remove a file still open for writing in a
//! private copy answers EBUSY. The agent's `fsync`/`fdatasync` applies the file's chain
//! (captured, flushed, applied, then the real file synced) before returning, and unmount
//! applies everything.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use fuser::Errno;
use tracing::warn;

use super::inode::Inode;
use super::{VeilFs, errno_of};
use crate::audit;
use crate::backing::{self, Kind, Stat};

/// Files above this size are written in place (their pre-image costs more than the flush it
/// would share); it is also the size under which reads never use passthrough.
pub(super) const DEFER_MAX: u64 = super::PASSTHROUGH_MIN_SIZE;

/// How long a namespace change waits for the RELEASE of a file whose every write handle was
/// closed (FLUSH seen) before it answers EBUSY: the kernel sends RELEASE after close(2)
/// returns, so the agent's next rename can overtake it.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The queue of files whose writes wait in private copies.
#[derive(Default)]
pub(super) struct Deferred {
    state: Mutex<State>,
    /// Written while a batch is captured and applied; read while a namespace change runs, so
    /// none of them sees a half-applied batch.
    batch: RwLock<()>,
    /// Signalled (with `state`) when a write handle closes.
    closed: Condvar,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    queue: Vec<u64>,
    /// A release thread is draining the queue.
    running: bool,
}

struct Pending {
    inode: Arc<Inode>,
    /// Write handles open on the private copy (it is served until the last one closes).
    writers: usize,
    /// The real file as veilfs last saw or left it; anything else at apply time is an
    /// outside writer's change.
    real: RealId,
}

/// What tells an outside change of the real file apart from none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct RealId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl RealId {
    fn of(st: &Stat) -> RealId {
        RealId {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtime: st.mtime,
            ctime: st.ctime,
        }
    }
}

impl Deferred {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ino`'s writes wait in a private copy.
    pub(super) fn is_pending(&self, ino: u64) -> bool {
        self.state().pending.contains_key(&ino)
    }
}

impl VeilFs {
    fn deferred(&self) -> Option<&Deferred> {
        self.deferred.as_ref()
    }

    /// Whether close(2) of a handle must reach veilfs as a FLUSH: in deferred mode a
    /// namespace change waits for a closed write handle's RELEASE instead of refusing it.
    pub(super) fn flushes_on_close(&self, writable: bool) -> bool {
        writable && self.deferred.is_some()
    }

    /// The write handles open on `ino`: how many, and how many of them the agent has already
    /// closed (FLUSH seen, RELEASE on its way).
    pub(super) fn write_handles(&self, ino: u64) -> (usize, usize) {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| h.ino == ino && h.writable)
            .fold((0, 0), |(open, closed), h| {
                let c = h.flushed.load(std::sync::atomic::Ordering::Relaxed);
                (open + 1, closed + usize::from(c))
            })
    }

    /// Deferred write-open of `inode` at `rel`: true when its writes go to a private copy
    /// (made now, or made by an earlier open and not applied yet), false when the immediate
    /// path must take it.
    pub(super) fn defer_write_open(&self, inode: &Arc<Inode>, rel: &Path) -> Result<bool, Errno> {
        let (Some(d), Some(divert)) = (self.deferred(), self.cfg.divert.as_ref()) else {
            return Ok(false);
        };
        if inode.kind != Kind::File {
            return Ok(false);
        }
        let mut st = d.state();
        if let Some(p) = st.pending.get_mut(&inode.ino) {
            p.writers += 1;
            return Ok(true);
        }
        if inode.is_diverted() || divert.contains(rel) {
            return Ok(false);
        }
        let fd = self.fd(inode)?;
        let real = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
        if real.kind() != Kind::File || real.nlink != 1 || real.size > DEFER_MAX {
            return Ok(false);
        }
        // A handle already writing the real file (a create's, say) would keep writing it
        // behind the copy's back.
        if self.write_handles(inode.ino).0 > 0 {
            return Ok(false);
        }
        let copy = match divert.stage(fd.as_fd(), rel) {
            Ok(c) => c,
            Err(e) => {
                // The immediate path still works: nothing is lost by taking it.
                warn!("deferred apply: cannot copy {}: {e}", rel.display());
                return Ok(false);
            }
        };
        self.inodes.divert(inode, copy);
        // `veilfs log` shows the write from now on (the record costs no flush).
        if let Some(g) = self.cfg.guard.as_ref() {
            g.record_change(rel, "write pending (deferred apply)");
        }
        st.pending.insert(
            inode.ino,
            Pending {
                inode: inode.clone(),
                writers: 1,
                real: RealId::of(&real),
            },
        );
        Ok(true)
    }

    /// A write handle of `ino` closed (or its open failed after `defer_write_open`): after
    /// the last one the file joins the queue, and this thread drains the queue unless
    /// another already does.
    pub(super) fn deferred_closed(&self, ino: u64) {
        let Some(d) = self.deferred() else {
            return;
        };
        {
            let mut st = d.state();
            let Some(p) = st.pending.get_mut(&ino) else {
                return;
            };
            p.writers = p.writers.saturating_sub(1);
            d.closed.notify_all();
            if p.writers > 0 {
                return;
            }
            st.queue.push(ino);
            if st.running {
                return;
            }
            st.running = true;
        }
        loop {
            let _w = d.batch.write().unwrap_or_else(|e| e.into_inner());
            let batch = {
                let mut st = d.state();
                if st.queue.is_empty() {
                    st.running = false;
                    return;
                }
                std::mem::take(&mut st.queue)
            };
            self.apply_batch(&batch, false);
        }
    }

    /// Applies every pending file without an open writer, then holds off further batches
    /// while a namespace change touching `paths` runs (the returned guard); EBUSY when one
    /// of `paths` is, or is above, a file still open for writing in a private copy.
    pub(super) fn deferred_quiesce(
        &self,
        paths: &[&Path],
    ) -> Result<Option<RwLockReadGuard<'_, ()>>, Errno> {
        let Some(d) = self.deferred() else {
            return Ok(None);
        };
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            {
                let r = d.batch.read().unwrap_or_else(|e| e.into_inner());
                let st = d.state();
                if !st.pending.values().any(|p| p.writers == 0) {
                    let hit = st.pending.values().find_map(|p| {
                        let rel = self.inodes.rel_path(p.inode.ino)?;
                        let q = paths.iter().find(|q| rel.starts_with(q))?;
                        Some((p.inode.ino, *q))
                    });
                    let Some((ino, at)) = hit else {
                        drop(st);
                        return Ok(Some(r));
                    };
                    let now = Instant::now();
                    // Every write handle closed by the agent: their RELEASE is on its way, so
                    // waiting for it beats refusing.
                    let (open, closed) = self.write_handles(ino);
                    if now < deadline && open == closed {
                        drop(r);
                        drop(
                            d.closed
                                .wait_timeout(st, deadline - now)
                                .unwrap_or_else(|e| e.into_inner()),
                        );
                        continue;
                    }
                    audit::denied(
                        "change",
                        at,
                        "a file there is open for writing with its writes not applied yet",
                    );
                    return Err(Errno::EBUSY);
                }
            }
            self.deferred_flush_all();
        }
    }

    /// Holds off batches while a setattr or setxattr changes what may be a private copy, so
    /// an apply cannot copy it half-changed and then drop it.
    pub(super) fn deferred_hold(&self) -> Option<RwLockReadGuard<'_, ()>> {
        self.deferred()
            .map(|d| d.batch.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies every pending file without an open writer (unmount; namespace changes).
    pub(super) fn deferred_flush_all(&self) {
        let Some(d) = self.deferred() else {
            return;
        };
        let _w = d.batch.write().unwrap_or_else(|e| e.into_inner());
        let batch: Vec<u64> = {
            let mut st = d.state();
            st.queue.clear();
            st.pending
                .iter()
                .filter(|(_, p)| p.writers == 0)
                .map(|(i, _)| *i)
                .collect()
        };
        self.apply_batch(&batch, false);
    }

    /// The agent's fsync of `ino`: its pending writes are captured, flushed and applied
    /// before this returns, even with writers still open (the copy then stays in use and is
    /// applied again after them). Ok(false) when the file had nothing pending.
    pub(super) fn deferred_fsync(&self, ino: u64) -> Result<bool, Errno> {
        let Some(d) = self.deferred() else {
            return Ok(false);
        };
        let _w = d.batch.write().unwrap_or_else(|e| e.into_inner());
        if !d.is_pending(ino) {
            return Ok(false);
        }
        d.state().queue.retain(|i| *i != ino);
        self.apply_batch(&[ino], true);
        let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
        // Served from the real file again, or applied with writers still open (the real
        // file holds the bytes; the copy stays in use), or kept diverted (an outside change,
        // a refused snapshot): sync where the agent's bytes now are.
        let target = if inode.is_diverted() && d.is_pending(ino) {
            let root = self.root_fd()?;
            let rel = self.rel(ino)?;
            backing::open_path(root.as_fd(), &rel).map_err(|e| errno_of(&e))?
        } else {
            let fd = self.fd(&inode)?;
            backing::dup(fd.as_fd()).map_err(|e| errno_of(&e))?
        };
        let f = backing::reopen_as(target.as_fd(), Kind::File, libc::O_RDONLY)
            .map_err(|e| errno_of(&e))?;
        f.sync_all().map_err(|e| errno_of(&e))?;
        Ok(true)
    }

    /// Captures (one flush), then applies, the pending files `inos`; `force` applies files
    /// with writers still open too (they stay served from their copy).
    fn apply_batch(&self, inos: &[u64], force: bool) {
        let (Some(d), Some(g), Some(divert)) = (
            self.deferred(),
            self.cfg.guard.as_ref(),
            self.cfg.divert.as_ref(),
        ) else {
            return;
        };
        let Ok(root) = self.root_fd() else {
            return;
        };
        let mut items: Vec<(u64, Arc<Inode>, PathBuf, std::os::fd::OwnedFd)> = Vec::new();
        for &ino in inos {
            let (inode, seen) = {
                let st = d.state();
                match st.pending.get(&ino) {
                    Some(p) if force || p.writers == 0 => (p.inode.clone(), p.real),
                    _ => continue,
                }
            };
            let Some(rel) = self.inodes.rel_path(ino) else {
                self.keep_diverted(d, ino, None, "its name went away while its writes waited");
                continue;
            };
            let now = backing::open_path(root.as_fd(), &rel)
                .and_then(|fd| backing::stat_fd(fd.as_fd()).map(|st| (fd, st)));
            match now {
                Ok((fd, st)) if RealId::of(&st) == seen && st.nlink == 1 => {
                    items.push((ino, inode, rel, fd))
                }
                Ok(_) => self.keep_diverted(
                    d,
                    ino,
                    Some(rel.as_path()),
                    "the real file changed outside the mount while the agent's writes waited: \
                     kept aside instead of overwriting it",
                ),
                Err(e) => self.keep_diverted(
                    d,
                    ino,
                    Some(rel.as_path()),
                    &format!("the real file cannot be reached to apply the agent's writes: {e}"),
                ),
            }
        }
        if items.is_empty() {
            return;
        }
        // Step 2: every pre-image of the batch durable with one journal flush. If the batch
        // as a whole is refused, each file is tried alone so one refusal keeps only itself.
        let rels: Vec<&Path> = items.iter().map(|(_, _, r, _)| r.as_path()).collect();
        // Test-only kill points (VEILFS_TEST_KILL_AFTER): before the flush, after it, after
        // each file applied.
        crate::rollback::test_kill_point();
        if g.capture_then(root.as_fd(), &rels, None).is_err() {
            items.retain(|(ino, _, rel, _)| match g.capture(root.as_fd(), rel) {
                Ok(()) => true,
                Err(e) => {
                    self.keep_diverted(d, *ino, Some(rel.as_path()), &format!("no snapshot: {e}"));
                    false
                }
            });
        }
        crate::rollback::test_kill_point();
        for (ino, inode, rel, real) in items {
            g.record_change(&rel, "write (deferred apply)");
            let applied = self
                .fd(&inode)
                .map_err(|e| std::io::Error::from_raw_os_error(e.code()))
                .and_then(|copy| copy_into(copy.as_fd(), real.as_fd()));
            let after = match applied {
                Ok(st) => st,
                Err(e) => {
                    self.keep_diverted(
                        d,
                        ino,
                        Some(rel.as_path()),
                        &format!("applying the agent's writes failed: {e}"),
                    );
                    continue;
                }
            };
            crate::rollback::test_kill_point();
            g.post_image(real.as_fd(), std::slice::from_ref(&rel));
            self.copies.note_own_change(&after);
            audit::changed("write", &rel);
            let mut st = d.state();
            let Some(p) = st.pending.get_mut(&ino) else {
                continue;
            };
            p.real = RealId::of(&after);
            if p.writers == 0 {
                st.pending.remove(&ino);
                self.inodes.undivert(&inode, real);
                if let Err(e) = divert.drop_copy(&rel) {
                    warn!("deferred apply: copy of {} not removed: {e}", rel.display());
                }
            }
        }
    }

    /// Stops deferring `ino`: its copy stays diverted, for a person to commit or discard,
    /// and why is audited and journalled.
    fn keep_diverted(&self, d: &Deferred, ino: u64, rel: Option<&Path>, why: &str) {
        d.state().pending.remove(&ino);
        let Some(rel) = rel else {
            warn!("deferred apply: inode {ino}: {why}");
            return;
        };
        if let Some(g) = self.cfg.guard.as_ref()
            && let Err(e) = g.diverted(rel, why)
        {
            warn!("deferred apply: {}: {e}", rel.display());
        }
        audit::emit(&audit::AuditEvent::Diverted {
            path: rel.to_path_buf(),
            reason: format!("{why} (veilfs diff/commit/discard)"),
        });
    }
}

/// Makes the real file (`real`, an O_PATH fd) hold what the copy holds: bytes, mode, owner,
/// times and xattrs, in place (same inode). Returns the real file's new stat.
fn copy_into(
    copy: std::os::fd::BorrowedFd<'_>,
    real: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<Stat> {
    let cst = backing::stat_fd(copy)?;
    let src = backing::reopen_as(copy, Kind::File, libc::O_RDONLY)?;
    let dst = backing::reopen_as(real, Kind::File, libc::O_WRONLY)?;
    dst.set_len(0)?;
    // Test-only kill point: the real file torn between two states.
    crate::rollback::test_kill_point();
    let mut left = cst.size;
    while left > 0 {
        let n = rustix::fs::copy_file_range(&src, None, &dst, None, left.min(1 << 30) as usize)?;
        if n == 0 {
            break;
        }
        left -= n as u64;
    }
    let rst = backing::stat_fd(real)?;
    if (rst.uid, rst.gid) != (cst.uid, cst.gid) {
        backing::chown(real, cst.uid, cst.gid)?;
    }
    if rst.perm() != cst.perm() {
        backing::chmod(real, cst.perm())?;
    }
    let want = backing::all_xattrs(copy)?;
    for (name, _) in backing::all_xattrs(real)? {
        if !want.iter().any(|(n, _)| *n == name) {
            backing::removexattr(real, &name)?;
        }
    }
    for (name, value) in &want {
        if backing::getxattr_value(real, name).ok().as_ref() != Some(value) {
            backing::setxattr(real, name, value, 0)?;
        }
    }
    let t = |t: (i64, i64)| backing::SetTime::At(t.0, t.1);
    backing::utimens_fd(real, t(cst.atime), t(cst.mtime))?;
    backing::stat_fd(real)
}
