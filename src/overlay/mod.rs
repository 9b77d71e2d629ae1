//! Copy-on-write overlay: the agent's writes land in an upper layer kept in the store; the real
//! folder stays byte-for-byte untouched until `veilfs commit`.
//!
//! The merged view is the kernel's overlayfs (lower = the scope, upper/work = inside the store),
//! mounted privately under the store; veilfs serves its filtered, redacted view on top of that
//! merged tree. The kernel gives us copy-up (reflink where the filesystem supports it), whiteouts,
//! opaque directories, renames, hard links, xattrs and a stable merged readdir, all of which are
//! easy to get subtly wrong by hand.
//!
//! Options: `redirect_dir=on` (directory renames), `index=on` (a copied-up lower hard link stays
//! one inode for all its names, as veilfs's inode table, keyed by (st_dev, st_ino), shows it),
//! `metacopy=off` (every copied-up file holds all its bytes), `xino=off`, and `volatile`.
//!
//! Why `volatile`: without it overlayfs fsyncs every file it copies up, and a first write to an
//! existing file costs a journal commit (700 us per file on a disk-backed ext4 here, against 33
//! us volatile). Nothing of the real folder depends on that fsync (it is the lower layer, never
//! written before `commit`, whose pre-images are journalled as always); it only makes the
//! agent's own unsynced writes survive a power loss better than POSIX requires. What `volatile`
//! would otherwise give up is kept by veilfs: an agent's `fsync`/`fdatasync` of a file or
//! directory `syncfs`es the upper layer's filesystem (overlayfs ignores them), and so does the
//! mount's end, which then removes `overlay/mounted` (the kernel's boot id, written at mount).
//! Found at the next mount, it means the mount process died: if the machine did not restart
//! since, the page cache held every write and the upper layer is made durable and used; after a
//! restart the files the agent was writing may be torn, which the mount, `diff` and `commit`
//! say (`overlay/restarted`) until those changes are committed or discarded, as after a power
//! cut on any folder. The next mount also removes overlayfs's `work/work` (its
//! `incompat/volatile` marker would refuse the mount).
//!
//! Layout in the store: `overlay/upper`, `overlay/work` (with overlayfs's `index`),
//! `overlay/merged`, `overlay/scope` (the scope the upper layer belongs to: another scope is
//! refused while changes are pending) and `overlay/lock` (flock'd by the mount process for its
//! lifetime: `commit` and `discard` refuse while it is held, and detach the stale merged mount a
//! SIGKILLed mount leaves behind), `overlay/mounted` and `overlay/restarted` (above). When
//! nothing is pending, a mount starts from clean layers.
//!
//! `commit` ([`plan_commit`], [`apply_commit`]) applies the upper layer to the real folder with
//! every pre-image journalled first (a session of mode "commit", undone by `veilfs rollback`),
//! skips conflicts unless forced, never writes a redaction mask over other real bytes, and then
//! removes what it committed from the upper layer. `discard` ([`discard`]) removes changes from
//! the upper layer. Both need the mount stopped.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backing::{self, Kind, SetTime};
use crate::journal::{Event, Meta, State, relpath};
use crate::rollback;
use crate::store::Store;

mod apply;
mod discard;
mod error;
mod plan;
pub(crate) mod userns;

pub(crate) use apply::*;
pub(crate) use discard::*;
use error::IoContext;
pub(crate) use error::OverlayError;
pub(crate) use plan::*;

/// What overlay functions return.
pub(crate) type Result<T, E = OverlayError> = std::result::Result<T, E>;

/// Marks an empty regular file in the upper layer that stands for a 0:0 character device
/// (overlayfs reserves that device for whiteouts; the filesystem keeps and shows the agent's
/// one as this file, and `commit` turns it back into the device).
pub(crate) const DEV0_XATTR: &str = "trusted.veilfs.chrdev0";

/// Layout of one overlay inside a store directory.
pub(crate) struct Layout {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// The scope the overlay was created for (its path's bytes).
    pub scope_file: PathBuf,
    /// overlayfs's inode index (`index=on`): lower hard links copied up as one inode.
    pub index: PathBuf,
    /// Present while mounted (or after a mount that died): the machine's boot id then.
    pub mounted: PathBuf,
    /// Present once a mount found that the machine restarted under the last one.
    pub restarted: PathBuf,
}

impl Layout {
    pub(crate) fn in_store(store: &Path) -> Layout {
        let base = store.join("overlay");
        Layout {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
            scope_file: base.join("scope"),
            index: base.join("work/index"),
            mounted: base.join("mounted"),
            restarted: base.join("restarted"),
        }
    }

    /// overlayfs's scratch directory (mode 0), where a `volatile` mount leaves its marker.
    fn scratch(&self) -> PathBuf {
        self.work.join("work")
    }
}

/// The kernel's id of this boot: the same while the machine has not restarted.
fn boot_id() -> Option<Vec<u8>> {
    std::fs::read("/proc/sys/kernel/random/boot_id").ok()
}

/// How the last mount of the overlay in a store ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastMount {
    /// Cleanly, or never: the upper layer was synced at its end.
    Clean,
    /// Its process died (or it is running), the machine did not restart: every write is in
    /// the page cache, or nothing is pending.
    Died,
    /// The machine restarted under it, and changes are pending: some may be torn.
    Restarted,
}

/// Reads `overlay/mounted` (the boot id, written at mount, removed once the upper layer was
/// synced at the mount's end) and `overlay/restarted` (kept while the changes a restart may
/// have torn are pending).
/// A restart matters only while changes are pending: with none, nothing can be torn.
pub(crate) fn last_mount(store: &Path) -> LastMount {
    let layout = Layout::in_store(store);
    let died = match std::fs::read(&layout.mounted) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Ok(then) => Some(boot_id().is_none_or(|now| now != then)),
        Err(_) => Some(true),
    };
    if (layout.restarted.exists() || died == Some(true)) && has_changes(store) {
        LastMount::Restarted
    } else if died.is_some() {
        LastMount::Died
    } else {
        LastMount::Clean
    }
}

/// The warning for an upper layer that a machine restart may have torn.
pub(crate) fn restarted_warning(store: &Path) -> String {
    format!(
        "the machine restarted while the overlay in {} was mounted: files the agent was writing then (and had not fsynced) may be torn or empty in the upper layer; review `veilfs diff --store {}` before `commit`",
        store.display(),
        store.display()
    )
}

/// `syncfs` of the upper layer's filesystem.
fn sync_upper(layout: &Layout) -> Result<()> {
    let upper = std::fs::File::open(&layout.upper).io("open", &layout.upper)?;
    rustix::fs::syncfs(&upper)
        .map_err(std::io::Error::from)
        .io("syncfs", &layout.upper)
}

/// Before a mount: makes what the last one left durable, and removes overlayfs's scratch
/// directory, whose `incompat/volatile` marker would refuse the mount (overlayfs makes it
/// anew).
fn settle_last_mount(store: &Path, layout: &Layout) -> Result<()> {
    match last_mount(store) {
        LastMount::Clean => {}
        LastMount::Died => sync_upper(layout)?,
        LastMount::Restarted => {
            tracing::warn!("{}", restarted_warning(store));
            sync_upper(layout)?;
            // Said again by every mount, `diff` and `commit` until the changes are gone.
            write_atomic(&layout.restarted, b"")?;
        }
    }
    let scratch = layout.scratch();
    if scratch.exists() {
        let _ = open_up(&scratch);
        std::fs::remove_dir_all(&scratch).io("remove", &scratch)?;
    }
    Ok(())
}

/// A mounted overlay, held only by its root fd (gone with the last fd, also after SIGKILL).
/// Holds the store's overlay lock (`overlay/lock`, `flock`) for its lifetime, so `commit` and
/// `discard` refuse while a mount runs, and two mounts never share one upper layer.
pub(crate) struct OverlayMount {
    root: OwnedFd,
    layout: Layout,
    _lock: std::fs::File,
}

impl Drop for OverlayMount {
    /// The mount's end: the upper layer is made durable, then `overlay/mounted` removed. A
    /// failure leaves it, and the next mount syncs again.
    fn drop(&mut self) {
        let r = sync_upper(&self.layout).and_then(|()| {
            std::fs::remove_file(&self.layout.mounted).io("remove", &self.layout.mounted)
        });
        if let Err(e) = r {
            tracing::warn!("overlay: {e}: the next mount makes the upper layer durable");
        }
    }
}

/// Takes the store's overlay lock, or says who holds it.
pub(crate) fn lock(store: &Path, what: &str) -> Result<std::fs::File> {
    let base = store.join("overlay");
    std::fs::create_dir_all(&base).io("create", &base)?;
    let p = base.join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .io("open", &p)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(OverlayError::Refused(format!(
            "{what}: the overlay of {} is still mounted by a running `veilfs mount`: stop it first (veilfs unmount MOUNTPOINT)",
            store.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e).io("lock", &p),
    }
}

/// Lazily detaches the merged mount a killed mount process left behind.
fn detach_stale(layout: &Layout) {
    if crate::mountinfo::is_mount_point(&layout.merged) {
        let _ = rustix::mount::unmount(&layout.merged, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Mounts kernel overlayfs through the new mount API (`fsopen`/`fsconfig`/`fsmount`) and
/// returns the mount's root as a detached fd: it is never attached to a path, so nothing else
/// can reach it, and it goes away with the last fd (a SIGKILLed mount process leaves nothing
/// mounted). Each option is its own string, so paths need no escaping and no `mount(8)` runs.
pub(crate) fn mount_overlay(
    scope: &Path,
    layout: &Layout,
    userxattr: bool,
) -> std::io::Result<OwnedFd> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_string, fsmount,
        fsopen,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // `lowerdir+` (Linux 6.8) takes one path as is; older kernels parse `lowerdir` as a
    // `:`-separated list with `\` escapes.
    if fsconfig_set_string(&fs, "lowerdir+", scope).is_err() {
        fsconfig_set_string(&fs, "lowerdir", escape(scope))?;
    }
    fsconfig_set_string(&fs, "upperdir", &layout.upper)?;
    fsconfig_set_string(&fs, "workdir", &layout.work)?;
    // In a user namespace overlayfs keeps its xattrs as user.overlay.* (`userxattr`) and
    // refuses redirects: renaming a directory of the real folder answers EXDEV (`mv` copies).
    let redirect = if userxattr { "nofollow" } else { "on" };
    for (k, v) in [
        ("index", "on"),
        ("xino", "off"),
        ("redirect_dir", redirect),
        ("metacopy", "off"),
    ] {
        fsconfig_set_string(&fs, k, v)?;
    }
    if userxattr {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
    }
    // Linux 5.10 and later (see the module docs); older kernels keep their syncs.
    if let Err(e) = rustix::mount::fsconfig_set_flag(&fs, "volatile") {
        tracing::debug!("overlayfs without `volatile`: {e}");
    }
    fsconfig_create(&fs)?;
    Ok(fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )?)
}

impl OverlayMount {
    /// Mounts (or, after a crash, re-mounts) the overlay of `scope` kept in `store`.
    pub(crate) fn mount(store: &Path, scope: &Path) -> Result<OverlayMount> {
        let layout = Layout::in_store(store);
        let lock = lock(store, "mount")?;
        // The upper layer belongs to one scope: applying it to another would be nonsense.
        match recorded_scope(store) {
            Some(s) if s != scope && has_changes(store) => {
                return Err(OverlayError::Refused(format!(
                    "store {} holds overlay changes for {}, not {}: commit or discard them first, or use another store",
                    store.display(),
                    s.display(),
                    scope.display()
                )));
            }
            _ => {}
        }
        let fresh = !layout.upper.exists();
        for d in [&layout.upper, &layout.work, &layout.merged] {
            std::fs::create_dir_all(d).io("create", d)?;
        }
        write_atomic(&layout.scope_file, scope.as_os_str().as_bytes())?;
        if fresh || !has_changes(store) {
            // Nothing pending: start clean, so a scope that was replaced (a new root inode)
            // does not fail overlayfs's index=on origin check. The merged root shows the upper
            // root's attributes: make them the scope's.
            reset_layers(&layout)?;
            copy_root_attrs(scope, &layout.upper)?;
            match std::fs::remove_file(&layout.restarted) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).io("remove", &layout.restarted);
                }
                _ => {}
            }
        }
        // Versions before the detached mount left a SIGKILLed mount's overlay at `merged`.
        detach_stale(&layout);
        settle_last_mount(store, &layout)?;
        write_atomic(&layout.mounted, &boot_id().unwrap_or_default())?;
        // A normal user cannot mount overlayfs here: it can in a user namespace of its own.
        let user = crate::fusermount::needed();
        if fresh || !has_changes(store) {
            userns::set_marked(&layout, user)?;
        }
        let root = if user {
            userns::mount(scope, store)
        } else {
            mount_overlay(scope, &layout, userns::marked(&layout.upper))
        };
        let root = root.map_err(|source| OverlayError::Mount {
            scope: scope.to_path_buf(),
            upper: layout.upper.clone(),
            source,
        })?;
        Ok(OverlayMount {
            root,
            layout,
            _lock: lock,
        })
    }

    /// The upper layer's directory: an agent's fsync `syncfs`es its filesystem, since a
    /// `volatile` overlay ignores fsyncs.
    pub(crate) fn upper(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&self.layout.upper)
    }

    /// The merged view's root directory (a detached mount: reachable only through this fd).
    pub(crate) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// Records which folder the upper layer in `store` belongs to (snapshot mode's divert layer
/// uses the same upper dir, so `diff`/`commit`/`discard` work on diverted files too). Refuses a
/// store whose pending changes belong to another folder.
pub(crate) fn record_scope(store: &Path, scope: &Path) -> Result<()> {
    let layout = Layout::in_store(store);
    match recorded_scope(store) {
        Some(s) if s != scope && has_changes(store) => Err(OverlayError::Refused(format!(
            "the overlay in {} holds changes for {}, not {}: commit or discard them first",
            store.display(),
            s.display(),
            scope.display()
        ))),
        Some(s) if s == scope => Ok(()),
        _ => write_atomic(&layout.scope_file, scope.as_os_str().as_bytes()),
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).io("write", &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).io("write", path)?;
    Ok(())
}

/// Forgets overlayfs's bookkeeping of an overlay with no pending changes: the work dir (with
/// the hard-link index) and the overlay xattrs of the upper root (the lower root's origin).
fn reset_layers(layout: &Layout) -> Result<()> {
    if let Ok(rd) = std::fs::read_dir(&layout.work) {
        for e in rd.flatten() {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                // overlayfs leaves `work/work` mode 0: root removes it regardless, its owner
                // (a normal user's overlay) must open it up first.
                let _ = open_up(&p);
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.io("remove", &p)?;
        }
    }
    let fd = backing::open_root(&layout.upper)?;
    for (name, _) in backing::all_xattrs(fd.as_fd())? {
        if ovl_private(&name.to_string_lossy()) {
            backing::removexattr(fd.as_fd(), &name)
                .io("remove an overlay xattr of", &layout.upper)?;
        }
    }
    Ok(())
}

/// Gives the owner full access to every directory under `dir` (so it can be removed).
fn open_up(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = open_up(&e.path());
        }
    }
    Ok(())
}

fn copy_root_attrs(scope: &Path, upper: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(scope).io("stat", scope)?;
    let u = std::fs::symlink_metadata(upper).io("stat", upper)?;
    if (u.uid(), u.gid()) != (m.uid(), m.gid()) {
        match std::os::unix::fs::lchown(upper, Some(m.uid()), Some(m.gid())) {
            // A normal user may not give its directory to another owner or a group it is not
            // in: the merged root then shows the user's own (the view is the user's anyway).
            Err(e) if crate::fusermount::needed() => tracing::info!(
                "the overlay's root keeps its owner ({e}): {} is owned by {}:{}",
                scope.display(),
                m.uid(),
                m.gid()
            ),
            r => r.io("chown", upper)?,
        }
    }
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    let fd = backing::open_root(upper)?;
    backing::utimens_fd(
        fd.as_fd(),
        SetTime::At(m.atime(), m.atime_nsec()),
        SetTime::At(m.mtime(), m.mtime_nsec()),
    )?;
    Ok(())
}

/// overlayfs option values separate with `,` and `:`; escape them.
/// `p` as one entry of overlayfs's legacy `lowerdir` list.
fn escape(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// Is the overlay of `store` mounted (a `veilfs mount --mode overlay` still running, or a stale
/// mount left by a killed one)?
pub(crate) fn is_mounted(store: &Path) -> bool {
    let merged = Layout::in_store(store).merged;
    let merged = merged.canonicalize().unwrap_or(merged);
    crate::mountinfo::is_mount_point(&merged)
}

/// The scope the overlay in `store` was created for (recorded at mount time).
pub(crate) fn recorded_scope(store: &Path) -> Option<PathBuf> {
    let b = std::fs::read(Layout::in_store(store).scope_file).ok()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(b)))
}

/// Does `store` hold an overlay with pending changes?
pub(crate) fn has_changes(store: &Path) -> bool {
    let l = Layout::in_store(store);
    let nonempty = |d: &Path, files_only: bool| {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .any(|e| !files_only || e.file_type().is_ok_and(|t| t.is_file()))
            })
            .unwrap_or(false)
    };
    nonempty(&l.upper, false) || nonempty(&l.index, true)
}

/// Takes the overlay lock for a commit or discard (refusing while a mount runs) and detaches
/// a stale merged mount left by a killed mount process. Hold the result while changing the
/// upper layer: no mount can start meanwhile.
pub(crate) fn exclusive(store: &Path, what: &str) -> Result<std::fs::File> {
    let l = lock(store, what)?;
    let layout = Layout::in_store(store);
    detach_stale(&layout);
    if is_mounted(store) {
        return Err(OverlayError::Refused(format!(
            "{what}: {} is still a mount point and could not be detached",
            layout.merged.display()
        )));
    }
    Ok(l)
}
