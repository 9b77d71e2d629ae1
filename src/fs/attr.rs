//! The attributes the agent is shown: link counts that count only visible names, the
//! overlay's 0:0 character devices, and the `FileAttr` the kernel gets.

use super::*;

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
            || backing::getxattr(fd, OsStr::new(crate::overlay::DEV0_XATTR), 0).is_err()
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
            let entries = backing::list_dir(pfd.as_fd()).ok()?;
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
        let Ok(entries) = backing::list_dir(fd) else {
            return st;
        };
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
        Stat {
            nlink: st.nlink.saturating_sub(hidden).max(2),
            ..st
        }
    }
}
