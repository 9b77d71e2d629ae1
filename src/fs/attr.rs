//! The attributes the agent is shown: link counts that count only visible names, the
//! overlay's 0:0 character devices, and the `FileAttr` the kernel gets.

use super::*;

/// How many directory listings [`LinkDirs`] keeps.
const LINK_DIRS_MAX: usize = 256;

/// The listings of directories that hold hard-linked files, each valid for one version of its
/// directory: its identity and its mtime and ctime (any name added, removed or renamed in it
/// changes both; the kernel's multigrain timestamps tell changes apart once the directory was
/// stat-ed). Without it every LOOKUP and GETATTR of a file with several links lists its
/// directory (pnpm-style node_modules: every file has several). Bounded: cleared when full.
#[derive(Default)]
pub(super) struct LinkDirs {
    map: Mutex<std::collections::HashMap<LinkDirKey, Arc<Vec<backing::DirEntry>>>>,
}

/// (dev, ino, mtime, ctime) of a directory.
type LinkDirKey = (u64, u64, (i64, i64), (i64, i64));

impl LinkDirs {
    /// The entries of the directory held by `dir`, listed again only when it changed.
    pub(super) fn list(&self, dir: BorrowedFd<'_>) -> Option<Arc<Vec<backing::DirEntry>>> {
        let st = backing::stat_fd(dir).ok()?;
        let key = (st.dev, st.ino, st.mtime, st.ctime);
        if let Some(e) = self.lock().get(&key) {
            return Some(e.clone());
        }
        let entries = Arc::new(backing::list_dir(dir).ok()?);
        // Listed after the stat: a change in between makes the next stat miss, never a stale hit.
        let mut map = self.lock();
        if map.len() >= LINK_DIRS_MAX {
            map.clear();
        }
        map.retain(|k, _| (k.0, k.1) != (st.dev, st.ino));
        map.insert(key, entries.clone());
        Some(entries)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<LinkDirKey, Arc<Vec<backing::DirEntry>>>>
    {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many directories' hidden-subdirectory counts [`HiddenDirs`] keeps.
const HIDDEN_DIRS_MAX: usize = 4096;

/// How many subdirectories of a directory the agent cannot see, for one version of the
/// directory (identity, mtime, ctime: any name added, removed or renamed in it changes them),
/// at one path (patterns are anchored), under one policy generation (a live reload changes what
/// is hidden). Without it every LOOKUP and GETATTR of a directory with subdirectories lists it,
/// and write modes keep no attributes in the kernel: every path walk paid for a listing.
/// Bounded: cleared when full.
#[derive(Default)]
pub(super) struct HiddenDirs {
    map: Mutex<std::collections::HashMap<(LinkDirKey, u64, PathBuf), u64>>,
}

impl HiddenDirs {
    fn get(&self, key: &(LinkDirKey, u64, PathBuf)) -> Option<u64> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn put(&self, key: (LinkDirKey, u64, PathBuf), hidden: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= HIDDEN_DIRS_MAX {
            map.clear();
        }
        map.insert(key, hidden);
    }
}

pub(super) fn attr_of(ino: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.size,
        blocks: st.blocks,
        atime: systime(st.atime),
        mtime: systime(st.mtime),
        ctime: systime(st.ctime),
        crtime: systime(st.ctime),
        kind: file_type(st.kind()),
        perm: st.perm() as u16,
        nlink: st.nlink.min(u32::MAX as u64) as u32,
        uid: st.uid,
        gid: st.gid,
        rdev: st.rdev as u32,
        blksize: if st.blksize == 0 {
            4096
        } else {
            st.blksize as u32
        },
        flags: 0,
    }
}

impl VeilFs {
    /// The stat the agent sees: an emulated 0:0 character device (see [`DEV0_XATTR`](crate::overlay::DEV0_XATTR)) shows as
    /// one. Only empty regular files in overlay mode are checked, every time: inode numbers are
    /// reused, so a remembered answer could turn a later ordinary file into a device.
    pub(super) fn present(&self, fd: BorrowedFd<'_>, st: Stat) -> Stat {
        if !self.cfg.emulate_dev0
            || st.kind() != Kind::File
            || st.size != 0
            || backing::getxattr_as(fd, st.kind(), OsStr::new(crate::overlay::DEV0_XATTR), 0)
                .is_err()
        {
            return st;
        }
        Stat {
            mode: (st.mode & !libc::S_IFMT) | libc::S_IFCHR,
            rdev: 0,
            ..st
        }
    }

    /// The attributes the agent is shown for `st` (see [`Self::visible_links`]).
    pub(super) fn attr(&self, ino: u64, st: &Stat) -> FileAttr {
        let mut st = *st;
        // A synthesized view (a rebuilt document) has its own size, built on first lookup.
        if let Some(size) = self.synthesized_size(ino, &st) {
            st.size = size;
            st.blocks = size.div_ceil(512);
        }
        if st.kind() == Kind::File && st.nlink > 1 {
            st.nlink = self.visible_links(ino, &st);
        }
        if st.nlink == 1 {
            st.nlink = self.inodes.shown_links(ino, 1);
        }
        attr_of(ino, &st)
    }

    /// A regular file's link count as the agent sees it: only names it can see are counted
    /// (a count that includes hidden ones tells the agent they exist). veilfs knows two kinds
    /// of visible names without walking the tree: the names beside it in its directory, and
    /// the names the session itself linked. A file whose other names are elsewhere (linked
    /// before the mount) shows fewer links than it has, never more than the agent can see.
    pub(super) fn visible_links(&self, ino: u64, st: &Stat) -> u64 {
        let linked = self
            .cfg
            .guard
            .as_ref()
            .map_or(0, |g| g.linked_names((st.dev, st.ino)));
        let beside = (|| {
            let loc = self.inodes.get(ino)?.location();
            let parent = self.inodes.get(loc.parent)?;
            let pfd = self.fd(&parent).ok()?;
            let prel = self.rel(parent.ino).ok()?;
            let entries = self.link_dirs.list(pfd.as_fd())?;
            let visible = entries
                .iter()
                .filter(|e| e.ino == st.ino)
                .filter(|e| {
                    let rel = prel.join(&e.name);
                    self.cfg
                        .policy
                        .visibility(&rel, crate::policy::EntryKind::File, st.size, None)
                        .is_ok()
                        && !self.cfg.viewer.name_holds_secret(&e.name)
                })
                .count();
            Some(visible)
        })()
        .unwrap_or(1);
        (linked.max(beside) as u64).clamp(1, st.nlink)
    }

    /// A directory's link count as the agent sees it: hidden subdirectories are not counted
    /// (a count that includes them tells the agent they exist). Only directories with
    /// subdirectories pay for the listing.
    pub(super) fn shown_nlink(&self, rel: &Path, fd: BorrowedFd<'_>, st: Stat) -> Stat {
        if st.kind() != Kind::Dir || st.nlink <= 2 {
            return st;
        }
        let generation = self.cfg.policy.with_active(|a| a.generation);
        let key = (
            (st.dev, st.ino, st.mtime, st.ctime),
            generation,
            rel.to_path_buf(),
        );
        let hidden = match self.hidden_dirs.get(&key) {
            Some(h) => h,
            None => {
                let Some(h) = self.count_hidden_subdirs(rel, fd) else {
                    return st;
                };
                // Counted after the stat: a change in between makes the next stat miss, never
                // a stale hit.
                self.hidden_dirs.put(key, h);
                h
            }
        };
        Stat {
            nlink: st.nlink.saturating_sub(hidden).max(2),
            ..st
        }
    }

    /// The subdirectories of the directory `fd` (at `rel`) that the agent cannot see.
    fn count_hidden_subdirs(&self, rel: &Path, fd: BorrowedFd<'_>) -> Option<u64> {
        let entries = backing::list_dir(fd).ok()?;
        let mut hidden = 0;
        for e in entries {
            // Directories are hidden by their names only (patterns, names holding secrets).
            let crel = rel.join(&e.name);
            let by_name = self
                .cfg
                .policy
                .visibility(&crel, crate::policy::EntryKind::Dir, 0, None)
                .is_err()
                || self.cfg.viewer.name_holds_secret(&e.name);
            if by_name && backing::stat_at(fd, &e.name).is_ok_and(|c| c.kind() == Kind::Dir) {
                hidden += 1;
            }
        }
        Some(hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name added beside a hard-linked file shows in the next listing, however soon.
    #[test]
    fn link_listing_follows_the_directory() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"x").unwrap();
        std::fs::hard_link(t.path().join("a"), t.path().join("b")).unwrap();
        let dir = backing::open_root(t.path()).unwrap();
        let dirs = LinkDirs::default();
        assert_eq!(dirs.list(dir.as_fd()).unwrap().len(), 2);
        // Served from the cache while nothing changed (the same Arc).
        let first = dirs.list(dir.as_fd()).unwrap();
        assert!(Arc::ptr_eq(&first, &dirs.list(dir.as_fd()).unwrap()));
        for n in 0..20 {
            std::fs::hard_link(t.path().join("a"), t.path().join(format!("c{n}"))).unwrap();
            assert_eq!(dirs.list(dir.as_fd()).unwrap().len(), 3 + n);
        }
        std::fs::remove_file(t.path().join("b")).unwrap();
        assert_eq!(dirs.list(dir.as_fd()).unwrap().len(), 21);
    }
}
