//! Virtual entries on the FUSE side: the names [`crate::virtual_entries`] places, given inode
//! numbers, served read-only, and refused every change.
//!
//! Inode numbers come from the real table's counter ([`InodeTable::allocate`]): one
//! monotonic counter, so a virtual number can never be a real one's, and the numbers look
//! like every other (a decoy must not stand out by its `st_ino`). A virtual inode is its
//! (parent inode, name, kind); lookup counts follow the kernel as for real ones.
//!
//! Every request on a virtual inode first checks it still is what the placement says at its
//! parent's *current* path, with no visible real entry of its name (a visible real entry
//! wins): otherwise it is stale (ESTALE). Every change (write open, truncate, setattr,
//! unlink, rmdir, rename from or onto, link from or onto, create, mknod, mkdir, symlink,
//! setxattr, removexattr) is refused before anything is touched: EROFS on a read-only mount
//! (as for every entry there), EACCES on a writable one (the entry is not the agent's to
//! change; EROFS would tell the agent the whole mount is read-only). A virtual entry never
//! reaches the real folder, the journal or the overlay.

use super::*;
use crate::virtual_entries::{self, VirtualKind};

/// The `st_dev` of a virtual entry in a listing (no real device is all ones).
pub(super) const VIRTUAL_DEV: u64 = u64::MAX;

/// What the mount places (decided before mounting).
pub(crate) struct VirtualCfg {
    /// Where decoys go.
    pub placement: virtual_entries::Placement,
    /// The mount's random seed: decoy canaries are derived from it.
    pub seed: [u8; 32],
    /// Opening a decoy trips the damage breaker.
    pub trip_breaker: bool,
}

impl VirtualCfg {
    /// The configuration of `[decoys]`, with a fresh random seed.
    pub(crate) fn from_profile(cfg: &crate::profile::DecoysCfg) -> std::io::Result<VirtualCfg> {
        let mut seed = [0u8; 32];
        if cfg.enabled {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        }
        Ok(VirtualCfg {
            placement: virtual_entries::Placement::new(cfg),
            seed,
            trip_breaker: cfg.trip_breaker,
        })
    }

    /// Every decoy with its canary (for the `decoy-placed` audit events and `veilfs scan`).
    pub(crate) fn decoys(&self) -> Vec<(PathBuf, String)> {
        self.placement
            .decoys()
            .iter()
            .map(|p| (p.clone(), crate::decoy::contents(&self.seed, p).canary))
            .collect()
    }
}

/// A virtual inode.
pub(super) struct VEntry {
    pub ino: u64,
    pub parent: u64,
    pub name: OsString,
    pub kind: VirtualKind,
    nlookup: AtomicU64,
}

/// The virtual inodes the kernel knows.
#[derive(Default)]
pub(super) struct VirtualTable {
    inner: RwLock<VTables>,
    /// How many there are: every request asks [`Self::get`] of its inode, and while the
    /// kernel knows none (a mount whose decoys nobody looked up) the answer must not cost a
    /// lock the request threads would pass between CPUs.
    live: AtomicUsize,
}

#[derive(Default)]
struct VTables {
    by_ino: std::collections::HashMap<u64, Arc<VEntry>>,
    by_loc: std::collections::HashMap<(u64, OsString), u64>,
}

/// An open virtual file: the bytes it was opened with.
pub(super) struct VHandle {
    pub ino: u64,
    pub bytes: Arc<Vec<u8>>,
}

impl VirtualTable {
    pub(super) fn get(&self, ino: u64) -> Option<Arc<VEntry>> {
        // The count rises before the kernel is told the inode, so a request naming it sees it.
        if self.live.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_ino
            .get(&ino)
            .cloned()
    }

    /// The inode of (parent, name, kind), made with `new_ino` if absent; counts `n` lookups.
    fn insert(
        &self,
        parent: u64,
        name: &OsStr,
        kind: VirtualKind,
        n: u64,
        new_ino: impl FnOnce() -> u64,
    ) -> Arc<VEntry> {
        let mut t = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let key = (parent, name.to_os_string());
        if let Some(ino) = t.by_loc.get(&key).copied()
            && let Some(v) = t.by_ino.get(&ino).cloned()
            && v.kind == kind
        {
            v.nlookup.fetch_add(n, Ordering::Relaxed);
            return v;
        }
        let v = Arc::new(VEntry {
            ino: new_ino(),
            parent,
            name: name.to_os_string(),
            kind,
            nlookup: AtomicU64::new(n),
        });
        t.by_ino.insert(v.ino, v.clone());
        t.by_loc.insert(key, v.ino);
        self.live.store(t.by_ino.len(), Ordering::Release);
        v
    }

    pub(super) fn forget(&self, ino: u64, n: u64) {
        let mut t = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(v) = t.by_ino.get(&ino).cloned() else {
            return;
        };
        let left = v.nlookup.load(Ordering::Relaxed).saturating_sub(n);
        v.nlookup.store(left, Ordering::Relaxed);
        if left == 0 {
            t.by_ino.remove(&ino);
            self.live.store(t.by_ino.len(), Ordering::Release);
            let key = (v.parent, v.name.clone());
            if t.by_loc.get(&key) == Some(&ino) {
                t.by_loc.remove(&key);
            }
        }
    }
}

impl VeilFs {
    /// Does this mount place any virtual entry? (Every hook below asks first: free when not.)
    pub(super) fn places_virtual(&self) -> bool {
        !self.cfg.virtuals.placement.is_empty() || self.cfg.viewer.presents_any_text()
    }

    /// The virtual inode `ino`, if it is one.
    pub(super) fn virtual_inode(&self, ino: u64) -> Option<Arc<VEntry>> {
        if !self.places_virtual() {
            return None;
        }
        self.vinodes.get(ino)
    }

    /// The current path of directory `ino` (real or virtual), relative to the scope.
    fn dir_rel(&self, ino: u64) -> Option<PathBuf> {
        match self.vinodes.get(ino) {
            Some(v) => Some(self.dir_rel(v.parent)?.join(&v.name)),
            None => self.inodes.rel_path(ino),
        }
    }

    /// Does the view show a real entry `name` in real directory `parent` (policy applied)?
    fn real_shown(&self, parent: &Arc<Inode>, rel_parent: &Path, name: &OsStr) -> bool {
        let Ok(pfd) = self.fd(parent) else {
            return false;
        };
        self.visible_child(&pfd, &rel_parent.join(name), name)
            .is_ok()
    }

    /// What virtual entry `name` of directory `parent` (real or virtual) is, now: placed by
    /// the profile at the directory's current path, and not shadowed by a visible real entry.
    pub(super) fn virtual_child(&self, parent: u64, name: &OsStr) -> Option<VirtualKind> {
        if !self.places_virtual() {
            return None;
        }
        let rel = self.dir_rel(parent)?;
        if let Some(pv) = self.vinodes.get(parent) {
            if pv.kind != VirtualKind::Dir || !self.virtual_current(&pv) {
                return None;
            }
            return self.cfg.virtuals.placement.child(&rel, name);
        }
        let p = self.inodes.get(parent)?;
        if p.kind != Kind::Dir {
            return None;
        }
        let kind = match self.cfg.virtuals.placement.child(&rel, name) {
            Some(k) => k,
            None => {
                // A text view: its source is a visible regular file the profile shows as text.
                let src = virtual_entries::text_source(name)?;
                let rel_src = rel.join(src);
                if !self.cfg.viewer.presents_text(&rel_src) {
                    return None;
                }
                let pfd = self.fd(&p).ok()?;
                let (_, st) = self.visible_child(&pfd, &rel_src, src).ok()?;
                if st.kind() != Kind::File {
                    return None;
                }
                VirtualKind::Text(src.to_os_string())
            }
        };
        if self.real_shown(&p, &rel, name) {
            return None;
        }
        Some(kind)
    }

    /// Is virtual inode `v` still what the placement puts at its location?
    fn virtual_current(&self, v: &VEntry) -> bool {
        self.virtual_child(v.parent, &v.name).as_ref() == Some(&v.kind)
    }

    /// The virtual entries of directory `ino` (real: `real` is its visible listing; virtual:
    /// `real` is empty), as listing entries with a placeholder stat.
    pub(super) fn virtual_listing(&self, ino: u64, real: &[(OsString, Stat)]) -> Listing {
        if !self.places_virtual() {
            return Vec::new();
        }
        let Some(rel) = self.dir_rel(ino) else {
            return Vec::new();
        };
        if let Some(v) = self.vinodes.get(ino)
            && (v.kind != VirtualKind::Dir || !self.virtual_current(&v))
        {
            return Vec::new();
        }
        let mut candidates = self.cfg.virtuals.placement.children(&rel);
        if self.cfg.viewer.presents_any_text() {
            for (n, st) in real {
                if st.kind() == Kind::File
                    && st.dev != VIRTUAL_DEV
                    && self.cfg.viewer.presents_text(&rel.join(n))
                {
                    candidates.push((virtual_entries::text_name(n), VirtualKind::Text(n.clone())));
                }
            }
        }
        // The stat only tells the kind here: readdirplus asks for the attributes by name.
        virtual_entries::resolve(candidates, |n| real.iter().any(|(r, _)| r == n))
            .into_iter()
            .map(|(name, kind)| {
                let st = self.virtual_stat(0, 0, &kind, false);
                (name, st)
            })
            .collect()
    }

    /// The stat a virtual entry shows: owned like the folder, dated like it, read-only for
    /// others (a decoy is `0600` like the credentials it imitates).
    /// `sized`: compute a text view's size (it builds the view; listings do not need it).
    fn virtual_stat(&self, parent: u64, ino: u64, kind: &VirtualKind, sized: bool) -> Stat {
        let root = self.root_stat;
        let (mode, nlink, size) = match kind {
            VirtualKind::Dir => (libc::S_IFDIR | 0o700, 2, 4096),
            VirtualKind::Decoy(p) => (
                libc::S_IFREG | 0o600,
                1,
                crate::decoy::contents(&self.cfg.virtuals.seed, p)
                    .bytes
                    .len() as u64,
            ),
            // A text view is dated like its source. A refused one shows its source's size, as a
            // refused file does: reads then reach veilfs and are refused (at size 0 a
            // no-open mount would read an empty file without asking).
            VirtualKind::Text(src) => {
                let (view, st) = self.text_of(parent, src);
                let size = match view {
                    View::Synth(s) if sized => s.bytes.len() as u64,
                    View::Denied(_) if sized => st.map_or(1, |st| st.size.max(1)),
                    _ => 0,
                };
                if let Some(st) = st {
                    return Stat {
                        dev: VIRTUAL_DEV,
                        ino,
                        mode: libc::S_IFREG | 0o444,
                        nlink: 1,
                        size,
                        blocks: size.div_ceil(512),
                        rdev: 0,
                        ..st
                    };
                }
                (libc::S_IFREG | 0o444, 1, size)
            }
        };
        Stat {
            dev: VIRTUAL_DEV,
            ino,
            mode,
            nlink,
            size,
            blocks: size.div_ceil(512),
            blksize: 4096,
            rdev: 0,
            ..root
        }
    }

    fn virtual_attr(&self, v: &VEntry) -> (FileAttr, Duration) {
        let attr = attr_of(v.ino, &self.virtual_stat(v.parent, v.ino, &v.kind, true));
        // A text view's size follows its source's version: never cached by the kernel.
        let ttl = match v.kind {
            VirtualKind::Text(_) => Duration::ZERO,
            _ => self.ttl(),
        };
        (attr, ttl)
    }

    /// The text view of `src` in real directory `parent`, with the source's stat.
    fn text_of(&self, parent: u64, src: &OsStr) -> (View, Option<Stat>) {
        let refused = |why: &str| (View::Denied(why.to_string()), None);
        let Some(p) = self.inodes.get(parent) else {
            return refused("text view: its directory is gone");
        };
        let Some(rel_src) = self.inodes.rel_path(parent).map(|r| r.join(src)) else {
            return refused("text view: its directory is gone");
        };
        let Ok(pfd) = self.fd(&p) else {
            return refused("text view: its directory is gone");
        };
        match self.visible_child(&pfd, &rel_src, src) {
            Ok((fd, st)) if st.kind() == Kind::File => (
                self.cfg.viewer.text_view(&rel_src, fd.as_fd(), &st),
                Some(st),
            ),
            _ => refused("text view: its source is gone"),
        }
    }

    /// A lookup of `name` in `parent` that found no visible real entry (or `parent` is
    /// virtual): the virtual entry there, counted as one lookup.
    pub(super) fn lookup_virtual(&self, parent: u64, name: &OsStr) -> Option<(FileAttr, Duration)> {
        let kind = self.virtual_child(parent, name)?;
        let v = self
            .vinodes
            .insert(parent, name, kind, 1, || self.inodes.allocate());
        Some(self.virtual_attr(&v))
    }

    pub(super) fn forget_virtual(&self, ino: u64, n: u64) {
        self.vinodes.forget(ino, n);
    }

    /// The attributes of virtual inode `v` (ESTALE when it is no longer placed).
    pub(super) fn getattr_virtual(&self, v: &VEntry) -> Result<(FileAttr, Duration), Errno> {
        if !self.virtual_current(v) {
            return Err(Errno::ESTALE);
        }
        Ok(self.virtual_attr(v))
    }

    /// Why any change of a virtual entry is refused, audited; the errno the agent gets.
    pub(super) fn refuse_virtual(&self, op: &str, parent: u64, name: &OsStr) -> Errno {
        let rel = self.dir_rel(parent).unwrap_or_default().join(name);
        audit::denied(
            op,
            &rel,
            "a virtual entry of the view (no real file): read-only",
        );
        if self.cfg.guard.is_none() {
            Errno::EROFS
        } else {
            Errno::EACCES
        }
    }

    /// The refusal of a change to inode `ino` when it is virtual.
    pub(super) fn refuse_if_virtual(&self, op: &str, ino: u64) -> Result<(), Errno> {
        match self.virtual_inode(ino) {
            Some(v) => Err(self.refuse_virtual(op, v.parent, &v.name)),
            None => Ok(()),
        }
    }

    /// The refusal of a change of entry `name` in `parent` when the directory is virtual or
    /// the name is a virtual entry there (creating, linking or renaming a real file onto a
    /// virtual name would put in the real folder what the view shows as something else).
    pub(super) fn refuse_virtual_name(
        &self,
        op: &str,
        parent: u64,
        name: &OsStr,
    ) -> Result<(), Errno> {
        if !self.places_virtual() {
            return Ok(());
        }
        if self.vinodes.get(parent).is_some() || self.virtual_child(parent, name).is_some() {
            return Err(self.refuse_virtual(op, parent, name));
        }
        Ok(())
    }

    /// Does real directory `name` of `parent` hold virtual entries (so it is not empty)?
    pub(super) fn holds_virtual(&self, parent: u64, name: &OsStr) -> bool {
        self.places_virtual()
            && self.dir_rel(parent).is_some_and(|rel| {
                !self
                    .cfg
                    .virtuals
                    .placement
                    .children(&rel.join(name))
                    .is_empty()
            })
    }

    /// The bytes of virtual file `v`; a decoy's open is audited as critical here (and trips
    /// the breaker when the profile says so). `opened`: a real open (or the first read of
    /// one in no-open mode), which is what the audit reports.
    pub(super) fn virtual_bytes(&self, v: &VEntry, opened: bool) -> Result<Arc<Vec<u8>>, Errno> {
        if !self.virtual_current(v) {
            return Err(Errno::ESTALE);
        }
        match &v.kind {
            VirtualKind::Dir => Err(Errno::EISDIR),
            VirtualKind::Decoy(path) => {
                let d = crate::decoy::contents(&self.cfg.virtuals.seed, path);
                if opened {
                    self.decoy_opened(path, &d.canary)?;
                }
                Ok(Arc::new(d.bytes))
            }
            VirtualKind::Text(src) => {
                let rel = self.dir_rel(v.parent).unwrap_or_default().join(&v.name);
                let (view, st) = self.text_of(v.parent, src);
                match view {
                    View::Synth(s) => {
                        if opened {
                            if let Some(st) = st {
                                self.count_read(&st)?;
                            }
                            audit::emit(&audit::AuditEvent::Synthesized {
                                path: rel,
                                view: "text".into(),
                                rules: s.rules.clone(),
                                redactions: s.redactions,
                            });
                        }
                        Ok(Arc::new(s.bytes.clone()))
                    }
                    View::Denied(why) => {
                        audit::denied("open", &rel, &why);
                        Err(Errno::EACCES)
                    }
                    // Never built for a text view; fail closed.
                    _ => Err(Errno::EACCES),
                }
            }
        }
    }

    /// A decoy was opened: a critical audit event naming it (the actor names the process), and
    /// a breaker trip when configured. While the breaker stops reads, the open is refused like
    /// any other.
    fn decoy_opened(&self, path: &Path, canary: &str) -> Result<(), Errno> {
        let stopped = self
            .cfg
            .breaker
            .as_ref()
            .and_then(|b| b.state())
            .is_some_and(|t| t.stops_reads());
        let trip = if self.cfg.virtuals.trip_breaker && !stopped {
            self.cfg.breaker.as_ref().and_then(|b| b.trip_decoy())
        } else {
            None
        };
        audit::emit(&audit::AuditEvent::Decoy {
            action: "opened",
            path: path.to_path_buf(),
            canary: canary.to_string(),
            tripped: trip.is_some(),
        });
        if let Some(t) = trip {
            audit::emit(&audit::AuditEvent::Control {
                action: "breaker-tripped",
                reason: t.to_string(),
            });
            // Files the kernel holds in its page cache would still be read without asking:
            // drop every cache so each further read reaches veilfs and is refused. From
            // another thread: invalidating from inside a request can deadlock the kernel.
            let inv = self.invalidator();
            let _ = std::thread::Builder::new()
                .name("veilfs-decoy-trip".into())
                .spawn(move || inv.everything_changed());
        }
        if stopped {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// OPEN of virtual inode `v`: read-only opens only.
    pub(super) fn open_virtual(&self, v: &VEntry, flags: i32) -> Result<u64, Errno> {
        if v.kind == VirtualKind::Dir {
            return Err(Errno::EISDIR);
        }
        let wants_write = (flags & libc::O_ACCMODE) != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if wants_write {
            return Err(self.refuse_virtual("open-write", v.parent, &v.name));
        }
        let bytes = self.virtual_bytes(v, true)?;
        let fh = self.new_fh();
        self.vhandles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(VHandle { ino: v.ino, bytes }));
        Ok(fh)
    }

    /// The open virtual file `fh` of inode `ino`, if `fh` is one.
    pub(super) fn virtual_handle(&self, fh: FileHandle) -> Option<Arc<VHandle>> {
        if !self.places_virtual() {
            return None;
        }
        self.vhandles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned()
    }

    pub(super) fn release_virtual(&self, fh: FileHandle) -> bool {
        self.places_virtual()
            && self
                .vhandles
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&fh.0)
                .is_some()
    }

    /// A READ of virtual inode `v` without a handle (no-open mode): the first read of the
    /// file counts as its open.
    pub(super) fn read_virtual_unopened(
        &self,
        v: &VEntry,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let bytes = self.virtual_bytes(v, offset == 0)?;
        Ok(slice(&bytes, offset, size))
    }
}

/// `size` bytes of `bytes` at `offset` (short at the end).
pub(super) fn slice(bytes: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = (offset.min(bytes.len() as u64)) as usize;
    let end = start.saturating_add(size as usize).min(bytes.len());
    bytes[start..end].to_vec()
}
