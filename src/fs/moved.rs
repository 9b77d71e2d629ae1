//! Files moved outside the mount while the agent holds them open.
//!
//! Write modes check, before deciding anything by path, that the path the inode table holds
//! still leads to the object ([`VeilFs::check_still_at`]). A program outside the mount that
//! renames an open file (or one of its directories) breaks that check, and the agent's next
//! request through its descriptor used to fail with ESTALE, where POSIX (and a read-only
//! mount) keeps the descriptor working. What each request gets:
//!
//! - **Reads** (READ, and the synthesized size GETATTR reports) of such a file are served:
//!   the object is the one the descriptor holds (its fd's device and inode, never a name
//!   walked again), and the view is decided for where the file is *now*, as the kernel
//!   names the held fd's object, re-walked beneath the scope and checked to lead to the same
//!   object. A file moved to a path the agent may see is served with that path's view (what a
//!   new open of it would get, so nothing the agent could not read anyway); one moved to a
//!   path the agent may not see (a denied or hidden directory) is refused (EACCES): whoever
//!   moved it there put it out of the agent's reach, and its later bytes must not reach the
//!   agent through an old descriptor. A file moved out of the folder entirely is served with
//!   the view of the path it had, like a removed file (moving to the desktop's trash is how
//!   files are removed; no rule of the profile covers its new place).
//!   A view looser than the old one is no leak: the outside world chose the new name, and the
//!   agent may open it anyway; the agent's own renames go through the mount and its checks.
//!   The kernel's name is only a hint: the walk beneath the scope and the identity
//!   comparison decide, so a name reused by another file never lends it its view.
//! - **Changes** (WRITE, fallocate, SETATTR such as ftruncate, a masked edit's merge at
//!   close) through such a descriptor are refused with ESTALE in snapshot mode (overlay mode
//!   changes only its upper layer, which never sees a move in the real folder): the pre-image was captured,
//!   and the post-image and rollback are recorded, at the path the table holds; a change
//!   reaching the file at another path could not be undone by rollback, and one merged while
//!   another file stands at the old name would be journalled against that file. So every
//!   WRITE checks its path first (an `openat2` and an `fstat`). A write handle in passthrough
//!   (`[write] passthrough_writes`) writes without asking veilfs and cannot be refused; nor
//!   can a write already past the check when the file moves.
//!
//! Every such read is in the audit trail: one `read` event per file and path, with
//! `moved_outside` set and the path whose view was served; a refusal is a `denied` event
//! under the path the agent knew (never the hidden one: `veilfs why` tells denials to the
//! agent).
//!
//! Read-only mounts answer reads the same way, but check a file's path only when the folder
//! watcher has reported a rename outside the mount since that file's path was last found to
//! lead to it ([`VeilFs::check_unmoved`]): no walk at all on a folder nobody renames in, one
//! per file after a rename anywhere. The watcher counts the rename before it drops the kernel's
//! caches of the names involved (page cache included), so the agent's next read of a moved
//! file reaches veilfs and is checked; a read already past that point when the rename happens
//! is served with the old view.

use super::*;

/// How many (inode, path) pairs of moved files' reads are remembered as already audited.
const AUDITED_MAX: usize = 4096;

/// The moved files whose reads were audited, by inode and the path they were served as: the
/// first read of each is logged, not every READ (one per 128 KiB).
#[derive(Default)]
pub(super) struct MovedReads {
    audited: Mutex<std::collections::HashSet<(u64, PathBuf)>>,
}

impl MovedReads {
    /// True the first time `(ino, rel)` is seen.
    fn first(&self, ino: u64, rel: &Path) -> bool {
        let mut a = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        if a.len() >= AUDITED_MAX {
            a.clear();
        }
        a.insert((ino, rel.to_path_buf()))
    }
}

/// Where the object of an open file is, relative to the scope.
enum Whereabouts {
    /// At this path beneath the scope.
    Inside(PathBuf),
    /// No longer beneath the scope: moved out of the folder.
    Outside,
}

/// Where an absolute path the kernel gave is, relative to the scope's (`root`).
#[derive(Debug, PartialEq)]
enum Beneath<'a> {
    /// The scope itself (a file cannot be there: a sign of a race).
    Root,
    Path(&'a Path),
}

/// `now` relative to `root`, compared component by component (`/a/bc` is not beneath
/// `/a/b`); None when it is not beneath it.
fn beneath<'a>(root: &Path, now: &'a Path) -> Option<Beneath<'a>> {
    let rel = now.strip_prefix(root).ok()?;
    Some(if rel.as_os_str().is_empty() {
        Beneath::Root
    } else {
        Beneath::Path(rel)
    })
}

impl VeilFs {
    /// Read-only mounts: that `rel`, inode `ino`'s path in the table, still leads to it, checked
    /// only when the watcher has seen a rename outside since it last did (see the module docs).
    pub(super) fn check_unmoved(&self, ino: u64, rel: &Path) -> Result<(), Errno> {
        let moves = self.outside_moves.load(Ordering::Acquire);
        if moves == 0 || ino == ROOT {
            return Ok(());
        }
        let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
        if inode.path_checked() >= moves {
            return Ok(());
        }
        let rfd = self.root_fd()?;
        match backing::open_path(rfd.as_fd(), rel).and_then(|fd| backing::stat_fd(fd.as_fd())) {
            Ok(st) if (st.dev, st.ino) == inode.key => {
                inode.note_path_checked(moves);
                Ok(())
            }
            _ => Err(Errno::ESTALE),
        }
    }

    /// The path whose view a read of inode `ino` gets when its table path `rel` no longer
    /// leads to it (see the module docs). `held`: the open file the read goes through, or
    /// None to use the inode's own fd. `stale`: the errno the path check answered.
    pub(super) fn moved_read_rel(
        &self,
        ino: u64,
        rel: &Path,
        held: Option<BorrowedFd<'_>>,
        stale: Errno,
    ) -> Result<(PathBuf, bool), Errno> {
        let inode = self.inode(INodeNo(ino))?;
        let own;
        let fd = match held {
            Some(fd) => fd,
            None => {
                own = self.fd(&inode).map_err(|_| stale)?;
                own.as_fd()
            }
        };
        let st = backing::stat_fd(fd).map_err(|_| stale)?;
        if (st.dev, st.ino) != inode.key {
            return Err(stale);
        }
        if st.nlink == 0 {
            // Removed: no other path's rules can apply (see `read_rel`).
            return Ok((rel.to_path_buf(), false));
        }
        match self.whereabouts(fd, inode.key)? {
            Whereabouts::Inside(now) => match self.visible_path(&now, inode.key) {
                Ok(()) => Ok((now, true)),
                // Moved again meanwhile: the agent may retry.
                Err(Errno::ESTALE) => Err(Errno::ESTALE),
                Err(e) => {
                    debug!(path = %now.display(), "moved outside the mount out of sight: {e:?}");
                    audit::denied(
                        "read",
                        rel,
                        "moved outside the mount to a path the agent may not see",
                    );
                    Err(Errno::EACCES)
                }
            },
            Whereabouts::Outside => Ok((rel.to_path_buf(), true)),
        }
    }

    /// Where the object held by `fd` (identity `key`) is now: the kernel's name for it,
    /// walked again beneath the scope and checked to lead to the same object.
    fn whereabouts(&self, fd: BorrowedFd<'_>, key: (u64, u64)) -> Result<Whereabouts, Errno> {
        let rfd = self.root_fd()?;
        let (Ok(root), Ok(now)) = (
            backing::current_path(rfd.as_fd()),
            backing::current_path(fd),
        ) else {
            return Err(Errno::ESTALE);
        };
        let rel = match beneath(&root, &now) {
            Some(Beneath::Path(rel)) => rel,
            Some(Beneath::Root) => return Err(Errno::ESTALE),
            None => return Ok(Whereabouts::Outside),
        };
        match backing::open_path(rfd.as_fd(), rel).and_then(|f| backing::stat_fd(f.as_fd())) {
            Ok(st) if (st.dev, st.ino) == key => Ok(Whereabouts::Inside(rel.to_path_buf())),
            _ => Err(Errno::ESTALE),
        }
    }

    /// Every component of `rel` is one the agent may see (as a walk of lookups through the
    /// mount would find them), and the last is the object `key`; or an error.
    fn visible_path(&self, rel: &Path, key: (u64, u64)) -> Result<(), Errno> {
        let mut cur = PathBuf::new();
        let mut dir = self.root_fd()?;
        let mut last = None;
        for comp in rel.components() {
            let std::path::Component::Normal(name) = comp else {
                return Err(Errno::ENOENT);
            };
            cur.push(name);
            let (fd, st) = self.visible_child(&dir, &cur, name)?;
            last = Some((st.dev, st.ino));
            dir = Arc::new(fd);
        }
        if last == Some(key) {
            Ok(())
        } else {
            Err(Errno::ESTALE)
        }
    }

    /// Audits a read of inode `ino`, moved outside the mount while open, served with the
    /// view of `rel` (`view`: what was decided for it, when known): once per file and path
    /// (see [`MovedReads`]).
    pub(super) fn audit_moved_read(&self, ino: u64, rel: &Path, view: Option<&View>) {
        if !self.moved_reads.first(ino, rel) {
            return;
        }
        let (rules, redactions) = match view {
            Some(View::Masked(r)) => audit::rules_fired(r),
            _ => (Vec::new(), 0),
        };
        audit::emit(&audit::AuditEvent::Read {
            path: rel.to_path_buf(),
            masked: matches!(view, Some(View::Masked(_))),
            rules,
            redactions,
            moved_outside: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beneath_compares_whole_components() {
        let root = Path::new("/home/u/proj");
        assert_eq!(
            beneath(root, Path::new("/home/u/proj/src/a.rs")),
            Some(Beneath::Path(Path::new("src/a.rs")))
        );
        assert_eq!(
            beneath(root, Path::new("/home/u/proj")),
            Some(Beneath::Root)
        );
        // A sibling whose name starts with the scope's is outside it.
        assert_eq!(beneath(root, Path::new("/home/u/project/a.rs")), None);
        assert_eq!(beneath(root, Path::new("/home/u/.trash/a.rs")), None);
        assert_eq!(
            beneath(Path::new("/"), Path::new("/a")),
            Some(Beneath::Path(Path::new("a")))
        );
    }
}
