//! The inode table: veilfs's own inode numbers mapped to held O_PATH fds of real objects.
//!
//! Numbers are monotonic and never reused while the mount lives. A real object seen through two
//! names (a hardlink) is one inode, keyed by `(st_dev, st_ino)`. Lookup counts follow the kernel
//! exactly: +1 per entry reply, -n per forget; at 0 the inode (and its fd) is dropped and never
//! revived. Insert-or-get happens under one write lock so two racing lookups agree.
//!
//! Fd budget (CVE-2020-10717 was an fd exhaustion): an inode holds its O_PATH fd only while the
//! number of held fds is under budget. An evicted inode is re-opened on use from its parent's fd
//! and its current name (beneath the parent, never following anything), and accepted only if it
//! is still the same object (`st_dev`, `st_ino`); otherwise the request gets ESTALE.
//!
//! Lock order, one for the whole table (a thread holding a later lock never asks for an
//! earlier one): `tables` (the RwLock) → `held_order` (the eviction queue) → an inode's `fd`
//! slot → an inode's `loc`. `evict` takes the queue then slots; `hold` takes the same two in
//! the same order (it used to take its slot first: two threads could each hold what the other
//! waited for). `forget` takes `tables` then a slot; `lookup_insert` releases `tables` before
//! holding the new fd.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::backing::{self, Kind};

pub(super) const ROOT: u64 = 1;

/// Where an inode currently lives: its parent inode and its name there. Policy is decided from
/// this *current* location on every request, never from a path cached earlier.
#[derive(Clone, Debug)]
pub(super) struct Location {
    pub parent: u64,
    pub name: OsString,
}

pub(super) struct Inode {
    pub ino: u64,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Its writes go to a copy in the overlay (see `divert`): `fd` then holds the copy, and is
    /// never evicted (re-resolving by name would find the real file).
    diverted: std::sync::atomic::AtomicBool,
    /// Removed by parking it in the store's aside area (`aside.rs`): its real link count is
    /// one more than a removed file's, which is what the agent is shown.
    parked: std::sync::atomic::AtomicBool,
    pub key: (u64, u64),
    pub kind: Kind,
    pub loc: Mutex<Location>,
    nlookup: AtomicU64,
    /// Identity of the file at its last open: the kernel's page cache may be kept only when
    /// the file is unchanged since then.
    pub last_open: Mutex<Option<crate::redact::FileId>>,
    /// When this directory was last listed to the kernel (its children's entries and
    /// attributes were refreshed then): milliseconds since [`epoch`] plus one, 0 for never.
    /// (Inodes are per file of the tree: every field counts towards the mount's memory.)
    last_listed: AtomicU64,
    /// Read-only mounts: the count of renames outside the mount (seen by the watcher) when
    /// its path was last found to lead to it (see `moved`); 0 for never.
    path_checked: AtomicU64,
    /// No-open mode: a listing the kernel has not finished reading (it asked for more than
    /// one READDIR buffer holds, or has yet to ask for the empty reply that ends it); the next
    /// READDIR at a non-zero offset continues it.
    pub partial_listing: Mutex<Option<Arc<Listing>>>,
    /// See [`Inode::detach_from`].
    lost_path: Mutex<Option<PathBuf>>,
}

/// A directory's visible entries with the stat each was listed with.
pub(super) type Listing = Vec<(OsString, backing::Stat)>;

/// The zero of [`Inode`]'s compact timestamps.
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl Inode {
    /// See [`Inode::path_checked`].
    pub(super) fn path_checked(&self) -> u64 {
        self.path_checked.load(Ordering::Acquire)
    }

    pub(super) fn note_path_checked(&self, moves: u64) {
        self.path_checked.fetch_max(moves, Ordering::AcqRel);
    }

    pub(super) fn note_listed(&self) {
        let ms = epoch().elapsed().as_millis() as u64 + 1;
        self.last_listed.store(ms, Ordering::Relaxed);
    }

    /// How long ago this directory was last listed, if ever.
    pub(super) fn listed_ago(&self) -> Option<std::time::Duration> {
        match self.last_listed.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                epoch()
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_millis(ms - 1)),
            ),
        }
    }

    /// Forgets the listing kept for the next READDIR (the directory changed).
    pub(super) fn drop_partial_listing(&self) {
        *self
            .partial_listing
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(super) fn is_diverted(&self) -> bool {
        self.diverted.load(Ordering::Relaxed)
    }

    fn held_fd(&self) -> Option<Arc<OwnedFd>> {
        self.fd.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub(super) fn location(&self) -> Location {
        self.loc
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
    /// The object lost its name (unlinked, or replaced by a rename): it has no path any more.
    pub(super) fn detach(&self) {
        let mut l = self.loc.lock().unwrap_or_else(|e| e.into_inner());
        l.parent = 0;
    }

    /// [`Inode::detach`] by the agent's own removal (or rename over it) of `rel`, through the
    /// mount: reads through a descriptor it still holds are judged by that path.
    pub(super) fn detach_from(&self, rel: &Path) {
        self.detach();
        *self.lost_path.lock().unwrap_or_else(|e| e.into_inner()) = Some(rel.to_path_buf());
    }

    /// The path the object had when the agent removed it (see [`Inode::detach_from`]).
    pub(super) fn lost_path(&self) -> Option<PathBuf> {
        self.lost_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_location(&self, parent: u64, name: &OsStr) {
        let mut l = self.loc.lock().unwrap_or_else(|e| e.into_inner());
        l.parent = parent;
        l.name = name.to_os_string();
    }
}

#[derive(Default)]
struct Tables {
    by_ino: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

pub(super) struct InodeTable {
    tables: RwLock<Tables>,
    next: AtomicU64,
    held_fds: AtomicUsize,
    fd_budget: usize,
    /// Inodes in the order they were given an fd: eviction takes the oldest first.
    held_order: Mutex<VecDeque<Weak<Inode>>>,
    /// Whether any inode was ever parked (see [`Inode::parked`]): until then no attribute
    /// reply looks an inode up for it.
    any_parked: std::sync::atomic::AtomicBool,
}

impl InodeTable {
    pub(super) fn new(root_fd: OwnedFd, root_key: (u64, u64), fd_budget: usize) -> InodeTable {
        let root = Arc::new(Inode {
            ino: ROOT,
            fd: Mutex::new(Some(Arc::new(root_fd))),
            key: root_key,
            kind: Kind::Dir,
            loc: Mutex::new(Location {
                parent: ROOT,
                name: OsString::new(),
            }),
            // The root is never forgotten.
            nlookup: AtomicU64::new(1 << 62),
            last_open: Mutex::new(None),
            last_listed: AtomicU64::new(0),
            path_checked: AtomicU64::new(0),
            partial_listing: Mutex::new(None),
            lost_path: Mutex::new(None),
            diverted: std::sync::atomic::AtomicBool::new(false),
            parked: std::sync::atomic::AtomicBool::new(false),
        });
        let mut t = Tables::default();
        t.by_ino.insert(ROOT, root);
        t.by_key.insert(root_key, ROOT);
        InodeTable {
            tables: RwLock::new(t),
            next: AtomicU64::new(ROOT + 1),
            held_fds: AtomicUsize::new(1),
            fd_budget: fd_budget.max(64),
            held_order: Mutex::new(VecDeque::new()),
            any_parked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The object `ino` was removed by parking it aside (see [`Inode::parked`]).
    pub(super) fn mark_parked(&self, inode: &Inode) {
        inode.parked.store(true, Ordering::Relaxed);
        self.any_parked.store(true, Ordering::Relaxed);
    }

    /// The link count the agent is shown for `ino` with real count `nlink`: one less for a
    /// parked object, whose parked name is not one of its names.
    pub(super) fn shown_links(&self, ino: u64, nlink: u64) -> u64 {
        if self.any_parked.load(Ordering::Relaxed)
            && self
                .get(ino)
                .is_some_and(|i| i.parked.load(Ordering::Relaxed))
        {
            nlink.saturating_sub(1)
        } else {
            nlink
        }
    }

    /// The inode's O_PATH fd, re-opened beneath its parent if it was evicted.
    pub(super) fn fd(&self, inode: &Arc<Inode>) -> Result<Arc<OwnedFd>, i32> {
        if let Some(fd) = inode.held_fd() {
            return Ok(fd);
        }
        let loc = inode.location();
        let parent = self.get(loc.parent).ok_or(libc::ESTALE)?;
        if parent.ino == inode.ino {
            return Err(libc::ESTALE);
        }
        let pfd = self.fd(&parent)?;
        let fd = backing::lookup(pfd.as_fd(), &loc.name).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => libc::ESTALE,
            Some(c) => c,
            None => libc::EIO,
        })?;
        let st = backing::stat_fd(fd.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if (st.dev, st.ino) != inode.key {
            return Err(libc::ESTALE);
        }
        let fd = Arc::new(fd);
        self.hold(inode, fd.clone());
        Ok(fd)
    }

    /// Gives the inode `fd`, an O_PATH fd of its object that a request just opened and
    /// checked (its (dev, ino) is the inode's key), when it holds none: its next use then
    /// needs no lookup and stat of its own.
    pub(super) fn offer(&self, inode: &Arc<Inode>, fd: OwnedFd) {
        if inode.held_fd().is_none() {
            self.hold(inode, Arc::new(fd));
        }
    }

    /// Keeps `fd` as the inode's held fd (counted against the budget). An inode the kernel
    /// already forgot is not held: the request in flight uses its fd and drops it, since no
    /// `forget` would ever give the count back.
    fn hold(&self, inode: &Arc<Inode>, fd: Arc<OwnedFd>) {
        if self.held_fds.load(Ordering::Relaxed) >= self.fd_budget {
            self.evict();
        }
        // Lock order (module docs): tables, then the queue, then the slot.
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        if !t
            .by_ino
            .get(&inode.ino)
            .is_some_and(|i| Arc::ptr_eq(i, inode))
        {
            if inode.is_diverted() {
                // Never re-resolved by name (that would find the real file): keep the copy,
                // uncounted, for the requests still holding this inode.
                *inode.fd.lock().unwrap_or_else(|e| e.into_inner()) = Some(fd);
            }
            return;
        }
        let mut order = self.held_order.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = inode.fd.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            self.held_fds.fetch_add(1, Ordering::Relaxed);
            order.push_back(Arc::downgrade(inode));
        }
        *slot = Some(fd);
    }

    /// From now on the inode is served from `copy` (its diverted copy in the overlay).
    pub(super) fn divert(&self, inode: &Arc<Inode>, copy: OwnedFd) {
        inode.diverted.store(true, Ordering::Relaxed);
        self.hold(inode, Arc::new(copy));
    }

    /// The inode is served from the real file again (`real`, its O_PATH fd): deferred
    /// apply copied its diverted copy into it.
    pub(super) fn undivert(&self, inode: &Arc<Inode>, real: OwnedFd) {
        let mut slot = inode.fd.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(real));
        inode.diverted.store(false, Ordering::Relaxed);
    }

    /// Drops the fds of the eighth of the budget that was opened longest ago (never the
    /// root's); they are re-opened on their next use.
    fn evict(&self) {
        let mut want = self.fd_budget / 8 + 1;
        let mut order = self.held_order.lock().unwrap_or_else(|e| e.into_inner());
        while want > 0 {
            let Some(weak) = order.pop_front() else {
                break;
            };
            let Some(inode) = weak.upgrade() else {
                continue;
            };
            if inode.ino == ROOT || inode.is_diverted() {
                continue;
            }
            let mut slot = inode.fd.lock().unwrap_or_else(|e| e.into_inner());
            if slot.take().is_some() {
                self.held_fds.fetch_sub(1, Ordering::Relaxed);
                want -= 1;
            }
        }
    }

    /// A fresh inode number from the same counter as real inodes (for virtual entries, see
    /// `virtual_fs`): never one a real inode has or will have.
    pub(super) fn allocate(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.by_ino.get(&ino).cloned()
    }

    /// Every inode the kernel currently knows.
    pub(super) fn all(&self) -> Vec<Arc<Inode>> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.by_ino.values().cloned().collect()
    }

    pub(super) fn ino_of_key(&self, key: (u64, u64)) -> Option<u64> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.by_key.get(&key).copied()
    }

    /// Returns the inode for `key`, creating it from `fd` if absent, and counts one lookup.
    /// Moves it to (parent, name): the name the kernel just resolved is its current one.
    pub(super) fn lookup_insert(
        &self,
        key: (u64, u64),
        kind: Kind,
        fd: Option<OwnedFd>,
        parent: u64,
        name: &OsStr,
    ) -> Arc<Inode> {
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if let Some(ino) = t.by_key.get(&key).copied()
            && let Some(inode) = t.by_ino.get(&ino).cloned()
            && inode.kind == kind
        {
            inode.nlookup.fetch_add(1, Ordering::Relaxed);
            if ino != ROOT {
                inode.set_location(parent, name);
            }
            return inode;
        }
        let ino = self.next.fetch_add(1, Ordering::Relaxed);
        let inode = Arc::new(Inode {
            ino,
            fd: Mutex::new(None),
            key,
            kind,
            loc: Mutex::new(Location {
                parent,
                name: name.to_os_string(),
            }),
            nlookup: AtomicU64::new(1),
            last_open: Mutex::new(None),
            last_listed: AtomicU64::new(0),
            path_checked: AtomicU64::new(0),
            partial_listing: Mutex::new(None),
            lost_path: Mutex::new(None),
            diverted: std::sync::atomic::AtomicBool::new(false),
            parked: std::sync::atomic::AtomicBool::new(false),
        });
        t.by_ino.insert(ino, inode.clone());
        t.by_key.insert(key, ino);
        drop(t);
        // Without an fd (readdirplus) the inode is opened beneath its parent on first use.
        if let Some(fd) = fd {
            self.hold(&inode, Arc::new(fd));
        }
        inode
    }

    /// Drops `n` lookups; the inode goes away at zero.
    pub(super) fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let Some(inode) = t.by_ino.get(&ino).cloned() else {
            return;
        };
        // Every change of nlookup happens under the write lock, so load+store is exact.
        let left = inode.nlookup.load(Ordering::Relaxed).saturating_sub(n);
        inode.nlookup.store(left, Ordering::Relaxed);
        if left == 0 {
            if inode
                .fd
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .is_some()
            {
                self.held_fds.fetch_sub(1, Ordering::Relaxed);
            }
            t.by_ino.remove(&ino);
            if t.by_key.get(&inode.key) == Some(&ino) {
                t.by_key.remove(&inode.key);
            }
        }
    }

    /// The inode's current path relative to the scope root ("" for the root), or None when an
    /// ancestor is gone (the inode was unlinked or its parent forgotten).
    pub(super) fn rel_path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts: Vec<OsString> = Vec::new();
        let mut cur = ino;
        let mut guard = 0;
        while cur != ROOT {
            let inode = self.get(cur)?;
            let loc = inode.location();
            parts.push(loc.name);
            cur = loc.parent;
            guard += 1;
            if guard > 4096 {
                return None;
            }
        }
        let mut p = PathBuf::new();
        for part in parts.iter().rev() {
            p.push(part);
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A table over a temp dir holding `a`, a hard link `b` to it, and a directory `d`.
    fn table(budget: usize) -> (tempfile::TempDir, InodeTable) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"a").unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let root = backing::open_root(dir.path()).unwrap();
        let rst = backing::stat_fd(root.as_fd()).unwrap();
        (dir, InodeTable::new(root, (rst.dev, rst.ino), budget))
    }

    /// Looks `name` up beneath `parent` the way `lookup` does.
    fn look(t: &InodeTable, parent: u64, name: &str) -> Arc<Inode> {
        let p = t.get(parent).unwrap();
        let pfd = t.fd(&p).unwrap();
        let fd = backing::lookup(pfd.as_fd(), OsStr::new(name)).unwrap();
        let st = backing::stat_fd(fd.as_fd()).unwrap();
        t.lookup_insert(
            (st.dev, st.ino),
            st.kind(),
            Some(fd),
            parent,
            OsStr::new(name),
        )
    }

    #[test]
    fn a_hard_link_seen_under_two_names_is_one_inode_at_its_latest_name() {
        let (_d, t) = table(0);
        let a = look(&t, ROOT, "a");
        let b = look(&t, ROOT, "b");
        assert_eq!(a.ino, b.ino);
        assert_eq!(a.nlookup.load(Ordering::Relaxed), 2);
        assert_eq!(t.rel_path(a.ino), Some(PathBuf::from("b")));
        assert_eq!(t.ino_of_key(a.key), Some(a.ino));
    }

    /// Lookup counts follow the kernel: the inode lives until forgets give back every lookup,
    /// and a number is never handed out again, even for the same object looked up anew.
    #[test]
    fn an_inode_is_dropped_at_zero_lookups_and_its_number_never_reused() {
        let (_d, t) = table(0);
        let a = look(&t, ROOT, "a");
        look(&t, ROOT, "a");
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_some(), "one lookup left");
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_none());
        assert_eq!(t.ino_of_key(a.key), None);
        let again = look(&t, ROOT, "a");
        assert!(again.ino > a.ino, "{} reused {}", again.ino, a.ino);
        // Forgetting more than was looked up, an unknown inode, or the root changes nothing.
        t.forget(again.ino, 5);
        t.forget(9999, 1);
        t.forget(ROOT, u64::MAX);
        assert!(t.get(ROOT).is_some());
        assert!(t.get(again.ino).is_none());
    }

    /// A forgotten inode that an in-flight request still holds must not be served a new fd
    /// counted against the budget (no forget would ever give it back).
    #[test]
    fn a_forgotten_inode_reopened_by_a_request_in_flight_does_not_leak_budget() {
        let (_d, t) = table(0);
        let a = look(&t, ROOT, "a");
        let held = t.held_fds.load(Ordering::Relaxed);
        t.forget(a.ino, 1);
        assert_eq!(t.held_fds.load(Ordering::Relaxed), held - 1);
        assert!(t.fd(&a).is_ok());
        assert_eq!(t.held_fds.load(Ordering::Relaxed), held - 1);
    }

    /// Past the fd budget the oldest fds are dropped and re-opened by name on use, but only
    /// when that name still is the same object: one replaced outside answers ESTALE.
    #[test]
    fn an_evicted_inode_replaced_outside_is_stale_not_the_new_file() {
        let (d, t) = table(0);
        let a = look(&t, ROOT, "a");
        for i in 0..200 {
            std::fs::write(d.path().join(format!("f{i}")), b"").unwrap();
            look(&t, ROOT, &format!("f{i}"));
        }
        assert!(t.held_fds.load(Ordering::Relaxed) <= t.fd_budget);
        assert!(a.held_fd().is_none(), "the oldest fd was evicted");
        // Still the same object: re-opened beneath its parent.
        assert!(t.fd(&a).is_ok());
        for i in 200..400 {
            std::fs::write(d.path().join(format!("f{i}")), b"").unwrap();
            look(&t, ROOT, &format!("f{i}"));
        }
        assert!(a.held_fd().is_none());
        // `b` keeps the old object alive, so the new `a` cannot get its inode number back.
        std::fs::remove_file(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a"), b"a stranger").unwrap();
        assert_eq!(t.fd(&a).unwrap_err(), libc::ESTALE);
        // A name that is gone is stale too.
        std::fs::remove_file(d.path().join("a")).unwrap();
        assert_eq!(t.fd(&a).unwrap_err(), libc::ESTALE);
    }

    #[test]
    fn rel_path_follows_renames_and_ends_at_a_detached_ancestor() {
        let (_d, t) = table(0);
        let dir = look(&t, ROOT, "d");
        let a = look(&t, ROOT, "a");
        a.set_location(dir.ino, OsStr::new("moved"));
        assert_eq!(t.rel_path(a.ino), Some(PathBuf::from("d/moved")));
        assert_eq!(t.rel_path(ROOT), Some(PathBuf::new()));
        dir.detach();
        assert_eq!(t.rel_path(a.ino), None, "its parent has no name any more");
    }

    /// A new object at the same (dev, ino) but of another kind (inode numbers are recycled
    /// by the real filesystem) gets a new inode, never the old one's kind.
    #[test]
    fn a_recycled_real_inode_number_of_another_kind_is_a_new_inode() {
        let (_d, t) = table(0);
        let a = look(&t, ROOT, "a");
        let other = t.lookup_insert(a.key, Kind::Dir, None, ROOT, OsStr::new("x"));
        assert_ne!(other.ino, a.ino);
        assert_eq!(other.kind, Kind::Dir);
        assert_eq!(t.ino_of_key(a.key), Some(other.ino));
    }

    /// Regression (issue #15 item 6): `hold` took an inode's fd slot, then the eviction queue;
    /// `evict` took the queue, then slots. A request re-opening an inode the kernel just forgot
    /// (its queue entry is still there) while another thread evicts deadlocked both. Many
    /// threads of lookup / forget / re-open under the smallest fd budget; a watchdog fails the
    /// test instead of hanging forever.
    #[test]
    fn lookup_forget_reopen_under_tiny_budget_never_deadlocks() {
        const FILES: usize = 300;
        const THREADS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<OsString> = (0..FILES)
            .map(|i| {
                let n = OsString::from(format!("f{i}"));
                std::fs::write(dir.path().join(&n), b"x").unwrap();
                n
            })
            .collect();
        let root = backing::open_root(dir.path()).unwrap();
        let rst = backing::stat_fd(root.as_fd()).unwrap();
        let table = Arc::new(InodeTable::new(root, (rst.dev, rst.ino), 0));
        let names = Arc::new(names);
        let (tx, rx) = mpsc::channel();
        for t in 0..THREADS {
            let (table, names, tx) = (table.clone(), names.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let deadline = Instant::now() + Duration::from_millis(2500);
                let mut rounds = 0u64;
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let name = &names[(x % FILES as u64) as usize];
                    let Some(root) = table.get(ROOT) else { break };
                    let rfd = table.fd(&root).unwrap();
                    let fd = backing::lookup(rfd.as_fd(), name).unwrap();
                    let st = backing::stat_fd(fd.as_fd()).unwrap();
                    let inode =
                        table.lookup_insert((st.dev, st.ino), Kind::File, Some(fd), ROOT, name);
                    let _ = table.fd(&inode);
                    table.forget(inode.ino, 1);
                    // An open still in flight after the forget re-opens the inode.
                    let _ = table.fd(&inode);
                    rounds += 1;
                }
                let _ = tx.send(rounds);
            });
        }
        drop(tx);
        let mut total = 0;
        for _ in 0..THREADS {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(n) => total += n,
                Err(_) => {
                    panic!("inode table deadlocked (lock order between fd slot and eviction queue)")
                }
            }
        }
        assert!(
            total > 1000,
            "too little work to mean anything: {total} rounds"
        );
        assert!(
            table.held_fds.load(Ordering::Relaxed) <= table.fd_budget + THREADS,
            "fd budget overrun: {}",
            table.held_fds.load(Ordering::Relaxed)
        );
    }
}
