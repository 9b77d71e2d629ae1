//! Pushing changes made outside the mount into the kernel's caches (used by `watch`).

use super::*;

/// Pushes changes made outside the mount into the kernel's caches (entries, attributes, page
/// cache, directory listings), so long TTLs stay correct. Shared with the watcher thread.
#[derive(Clone)]
pub(crate) struct CacheInvalidator {
    pub(super) inodes: Arc<InodeTable>,
    pub(super) notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    pub(super) ttl_cap_ms: Arc<AtomicU64>,
    pub(super) absent: Arc<super::negative::Absent>,
    pub(super) outside_moves: Arc<AtomicU64>,
}

impl CacheInvalidator {
    pub(crate) fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }

    /// The watcher lost events (its queue overflowed), or the policy changed: anything may
    /// have changed, so every name (absent ones too), attribute, listing and page the kernel
    /// holds is dropped.
    pub(crate) fn everything_changed(&self) {
        // Renames may be among what was lost: every open file's path is checked again.
        self.moved();
        let Some(n) = self.notifier.get() else {
            return;
        };
        for (parent, name) in self.absent.take(std::time::Instant::now()) {
            let _ = n.inval_entry(INodeNo(parent), &name);
        }
        for inode in self.inodes.all() {
            inode.drop_partial_listing();
            let loc = inode.location();
            if inode.ino != ROOT {
                let _ = n.inval_entry(INodeNo(loc.parent), &loc.name);
            }
            let _ = n.inval_inode(INodeNo(inode.ino), 0, 0);
        }
    }

    /// The watcher can no longer see every change (a new directory could not be watched, or
    /// the watcher stopped): from now on the kernel keeps what it is told for at most `ttl`
    /// (the unwatched `cache.ttl_ms`), and everything it holds now, given under the watched TTL,
    /// is dropped. No-open mode stays (the kernel fixed it at the first open), but contents are
    /// still dropped when the attributes fetched after `ttl` show another size or mtime.
    pub(crate) fn watch_lost(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if self.ttl_cap_ms.fetch_min(ms, Ordering::Relaxed) > ms {
            self.everything_changed();
        }
    }

    /// The mount is being revoked: nothing the kernel holds may outlive the connection. Once
    /// the connection is aborted every request fails, but names, attributes and pages still
    /// valid under their TTL (up to the watched TTL, minutes) would keep serving an agent
    /// working inside it. So replies carry no TTL from now on and everything held is dropped;
    /// twice, for a reply built under the old TTL while the first pass ran.
    pub(crate) fn revoked(&self) {
        self.ttl_cap_ms.store(0, Ordering::SeqCst);
        self.everything_changed();
        self.everything_changed();
    }

    /// Something was renamed outside the mount: before the kernel's caches of it are dropped,
    /// so the reads that follow check where the files they read are now (`moved`).
    pub(crate) fn moved(&self) {
        self.outside_moves.fetch_add(1, Ordering::AcqRel);
    }

    /// `rel` (relative to the scope) was created, changed, removed or renamed.
    pub(crate) fn changed(&self, rel: &Path) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        let Some(root) = self.inodes.get(ROOT) else {
            return;
        };
        let Ok(rfd) = self.inodes.fd(&root) else {
            return;
        };
        // Objects are found by identity, through fds beneath the scope, like every other access.
        let ino_of = |p: &Path| {
            backing::open_path(rfd.as_fd(), p)
                .and_then(|fd| backing::stat_fd(fd.as_fd()))
                .ok()
                .and_then(|st| self.inodes.ino_of_key((st.dev, st.ino)))
        };
        if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name())
            && let Some(pino) = ino_of(parent)
        {
            // A listing kept for the kernel's next READDIR (`keep_partial_listing`) must not
            // finish a read with entries from before the change.
            if let Some(p) = self.inodes.get(pino) {
                p.drop_partial_listing();
            }
            let _ = n.inval_entry(INodeNo(pino), name);
            let _ = n.inval_inode(INodeNo(pino), 0, 0);
        }
        if let Some(ino) = ino_of(rel) {
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
        }
    }
}
