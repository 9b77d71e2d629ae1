//! Pushing changes made outside the mount into the kernel's caches (used by `watch`).

use super::*;

/// Pushes changes made outside the mount into the kernel's caches (entries, attributes, page
/// cache, directory listings), so long TTLs stay correct. Shared with the watcher thread.
#[derive(Clone)]
pub(crate) struct CacheInvalidator {
    pub(super) inodes: Arc<InodeTable>,
    pub(super) notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl CacheInvalidator {
    pub(crate) fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }

    /// The watcher lost events (its queue overflowed): anything may have changed, so every
    /// name, attribute, listing and page the kernel holds is dropped.
    pub(crate) fn everything_changed(&self) {
        let Some(n) = self.notifier.get() else {
            return;
        };
        for inode in self.inodes.all() {
            let loc = inode.location();
            if inode.ino != ROOT {
                let _ = n.inval_entry(INodeNo(loc.parent), &loc.name);
            }
            let _ = n.inval_inode(INodeNo(inode.ino), 0, 0);
        }
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
            let _ = n.inval_entry(INodeNo(pino), name);
            let _ = n.inval_inode(INodeNo(pino), 0, 0);
        }
        if let Some(ino) = ino_of(rel) {
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
        }
    }
}
