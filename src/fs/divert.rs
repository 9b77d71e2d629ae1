//! Snapshot mode's fallback: when a file's pre-image cannot be stored (above
//! `snapshot_max_size`, store quota reached, store I/O error), its writes are diverted to a
//! private copy in the store's overlay upper layer (`STORE/overlay/upper/<path>`) instead of
//! being refused, and the real file is never touched. The mount then serves that copy under the
//! file's name; `veilfs diff`, `commit` and `discard` treat it like any overlay change.
//!
//! A diverted file can be read, written, truncated, chmod-ed; renaming, linking or removing it
//! is refused until it is committed or discarded (the real file still sits under its name).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::backing::{self, Kind};

pub(crate) struct Divert {
    /// Held for the mount's lifetime: `commit`/`discard` refuse while the mount runs.
    _lock: File,
    upper_dir: PathBuf,
    upper: OwnedFd,
    paths: RwLock<HashSet<PathBuf>>,
    /// Serialises making and removing copies (and their directories) in the upper layer.
    layout: std::sync::Mutex<()>,
}

impl Divert {
    /// Opens (creating it) the upper layer of `store`, recording `scope` as the folder it
    /// belongs to, and remembers every file already diverted there (a remount resumes).
    pub(crate) fn open(store: &Path, scope: &Path) -> anyhow::Result<Divert> {
        let layout = crate::overlay::Layout::in_store(store);
        let lock = crate::overlay::lock(store, "mount")?;
        std::fs::create_dir_all(&layout.upper)?;
        crate::overlay::record_scope(store, scope)?;
        let upper = backing::open_root(&layout.upper)?;
        let mut paths = HashSet::new();
        collect_files(&layout.upper, Path::new(""), &mut paths);
        Ok(Divert {
            _lock: lock,
            upper_dir: layout.upper,
            upper,
            paths: RwLock::new(paths),
            layout: std::sync::Mutex::new(()),
        })
    }

    pub(crate) fn contains(&self, rel: &Path) -> bool {
        self.paths
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(rel)
    }

    /// The O_PATH fd of the diverted copy of `rel`.
    pub(crate) fn open_copy(&self, rel: &Path) -> io::Result<OwnedFd> {
        backing::open_path(self.upper.as_fd(), rel)
    }

    /// Copies the real file (held as `real`, an O_PATH fd) to the upper layer, with its mode,
    /// owner, times and xattrs, durably; returns the copy's O_PATH fd.
    pub(crate) fn divert(&self, real: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
        self.copy(real, rel, true)
    }

    /// [`Divert::divert`] without making the copy durable: deferred apply's private copy
    /// (`fs/deferred.rs`), which holds writes the agent has not fsynced. A crash that loses it
    /// loses only those, as on a native filesystem; one that keeps it leaves an ordinary
    /// diverted file for a person (`veilfs diff`/`commit`/`discard`).
    pub(crate) fn stage(&self, real: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
        self.copy(real, rel, false)
    }

    /// Removes the copy of `rel` (its writes were applied to the real file) and the
    /// directories that held only it.
    pub(crate) fn drop_copy(&self, rel: &Path) -> io::Result<()> {
        let _l = self.layout.lock().unwrap_or_else(|e| e.into_inner());
        self.paths
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(rel);
        let (dir, name) = backing::open_parent(self.upper.as_fd(), rel)?;
        backing::unlink(dir.as_fd(), &name)?;
        let mut up = rel.parent();
        while let Some(d) = up.filter(|d| !d.as_os_str().is_empty()) {
            let Ok((pd, name)) = backing::open_parent(self.upper.as_fd(), d) else {
                break;
            };
            if backing::rmdir(pd.as_fd(), &name).is_err() {
                break;
            }
            up = d.parent();
        }
        Ok(())
    }

    fn copy(&self, real: BorrowedFd<'_>, rel: &Path, durable: bool) -> io::Result<OwnedFd> {
        let _l = self.layout.lock().unwrap_or_else(|e| e.into_inner());
        let st = backing::stat_fd(real)?;
        let src = backing::reopen_as(real, Kind::File, libc::O_RDONLY)?;
        let dest_path = self.upper_dir.join(rel);
        if let Some(parent) = dest_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = dest_path.with_file_name(format!(
            ".veilfs-divert-{}",
            rel.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let dest = File::create(&tmp)?;
        clone_or_copy(&src, &dest, st.size)?;
        dest.set_permissions(std::fs::Permissions::from_mode(st.perm()))?;
        std::os::unix::fs::fchown(&dest, Some(st.uid), Some(st.gid))?;
        for (name, value) in backing::all_xattrs(real)? {
            let _ = backing::setxattr(dest.as_fd(), &name, &value, 0);
        }
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: st.atime.0,
                tv_nsec: st.atime.1,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: st.mtime.0,
                tv_nsec: st.mtime.1,
            },
        };
        let _ = rustix::fs::futimens(&dest, &times);
        if durable {
            dest.sync_all()?;
        }
        std::fs::rename(&tmp, &dest_path)?;
        if durable && let Some(parent) = dest_path.parent() {
            File::open(parent)?.sync_all()?;
        }
        self.paths
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_path_buf());
        self.open_copy(rel)
    }
}

/// Reflink where the filesystem can (O(1)), else an in-kernel copy.
fn clone_or_copy(src: &File, dest: &File, len: u64) -> io::Result<()> {
    if rustix::fs::ioctl_ficlone(dest, src).is_ok() {
        return Ok(());
    }
    let mut left = len;
    while left > 0 {
        // No offsets: the copy uses and advances the file positions.
        let n = rustix::fs::copy_file_range(src, None, dest, None, left.min(1 << 30) as usize)?;
        if n == 0 {
            break;
        }
        left -= n as u64;
    }
    Ok(())
}

fn collect_files(dir: &Path, rel: &Path, out: &mut HashSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        let r = rel.join(e.file_name());
        if md.is_dir() {
            collect_files(dir, &r, out);
        } else if md.is_file()
            && md.nlink() >= 1
            && !r.to_string_lossy().contains(".veilfs-divert-")
        {
            out.insert(r);
        }
    }
}
