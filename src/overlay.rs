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
//! `metacopy=off` (every copied-up file holds all its bytes), `xino=off`.
//!
//! Layout in the store: `overlay/upper`, `overlay/work` (with overlayfs's `index`),
//! `overlay/merged`, `overlay/scope` (the scope the upper layer belongs to: another scope is
//! refused while changes are pending) and `overlay/lock` (flock'd by the mount process for its
//! lifetime: `commit` and `discard` refuse while it is held, and detach the stale merged mount a
//! SIGKILLed mount leaves behind). When nothing is pending, a mount starts from clean layers.
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
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::backing::{self, Kind, SetTime};
use crate::journal::{Event, Meta, State, relpath};
use crate::rollback;
use crate::store::Store;

/// Marks an empty regular file in the upper layer that stands for a 0:0 character device
/// (overlayfs reserves that device for whiteouts; the filesystem keeps and shows the agent's
/// one as this file, and `commit` turns it back into the device).
pub const DEV0_XATTR: &str = "trusted.veilfs.chrdev0";

/// Layout of one overlay inside a store directory.
pub struct Layout {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// The scope the overlay was created for (its path's bytes).
    pub scope_file: PathBuf,
    /// overlayfs's inode index (`index=on`): lower hard links copied up as one inode.
    pub index: PathBuf,
}

impl Layout {
    pub fn in_store(store: &Path) -> Layout {
        let base = store.join("overlay");
        Layout {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
            scope_file: base.join("scope"),
            index: base.join("work/index"),
        }
    }
}

/// A mounted overlay; unmounted on drop. Holds the store's overlay lock (`overlay/lock`,
/// `flock`) for its lifetime, so `commit`/`discard` can tell a running mount from the stale
/// merged mount a SIGKILLed one leaves behind, and two mounts never share one upper layer.
pub struct OverlayMount {
    layout: Layout,
    _lock: std::fs::File,
}

/// Takes the store's overlay lock, or says who holds it.
pub(crate) fn lock(store: &Path, what: &str) -> anyhow::Result<std::fs::File> {
    let base = store.join("overlay");
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let p = base.join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .with_context(|| format!("open {}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{what}: the overlay of {} is still mounted by a running `veilfs mount`: stop it first (veilfs unmount MOUNTPOINT)",
            store.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("lock {}", p.display()))
        }
    }
}

/// Lazily detaches the merged mount a killed mount process left behind.
fn detach_stale(layout: &Layout) {
    if crate::mountinfo::is_mount_point(&layout.merged) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&layout.merged)
            .status();
    }
}

impl OverlayMount {
    /// Mounts (or, after a crash, re-mounts) the overlay of `scope` kept in `store`.
    pub fn mount(store: &Path, scope: &Path) -> anyhow::Result<OverlayMount> {
        let layout = Layout::in_store(store);
        let lock = lock(store, "mount")?;
        // The upper layer belongs to one scope: applying it to another would be nonsense.
        match recorded_scope(store) {
            Some(s) if s != scope && has_changes(store) => bail!(
                "store {} holds overlay changes for {}, not {}: commit or discard them first, or use another store",
                store.display(),
                s.display(),
                scope.display()
            ),
            _ => {}
        }
        let fresh = !layout.upper.exists();
        for d in [&layout.upper, &layout.work, &layout.merged] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        write_atomic(&layout.scope_file, scope.as_os_str().as_bytes())?;
        if fresh || !has_changes(store) {
            // Nothing pending: start clean, so a scope that was replaced (a new root inode)
            // does not fail overlayfs's index=on origin check. The merged root shows the upper
            // root's attributes: make them the scope's.
            reset_layers(&layout)?;
            copy_root_attrs(scope, &layout.upper)?;
        }
        // A previous mount process killed with SIGKILL leaves its overlay mounted.
        detach_stale(&layout);
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=on,xino=off,redirect_dir=on,metacopy=off",
            escape(scope),
            escape(&layout.upper),
            escape(&layout.work)
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&layout.merged)
            .output()
            .context("run mount -t overlay")?;
        if !out.status.success() {
            bail!(
                "cannot mount the overlay at {}: {} (see dmesg; if the scope was replaced since these changes were made, commit or discard them first)",
                layout.merged.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(OverlayMount {
            layout,
            _lock: lock,
        })
    }

    pub fn merged(&self) -> &Path {
        &self.layout.merged
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.layout.merged)
            .status()
            .is_ok_and(|st| st.success());
        if !ok {
            // Still busy (an fd the FUSE layer holds): detach; it goes when the last fd closes.
            detach_stale(&self.layout);
        }
    }
}

/// Records which folder the upper layer in `store` belongs to (snapshot mode's divert layer
/// uses the same upper dir, so `diff`/`commit`/`discard` work on diverted files too). Refuses a
/// store whose pending changes belong to another folder.
pub fn record_scope(store: &Path, scope: &Path) -> anyhow::Result<()> {
    let layout = Layout::in_store(store);
    match recorded_scope(store) {
        Some(s) if s != scope && has_changes(store) => bail!(
            "the overlay in {} holds changes for {}, not {}: commit or discard them first",
            store.display(),
            s.display(),
            scope.display()
        ),
        Some(s) if s == scope => Ok(()),
        _ => write_atomic(&layout.scope_file, scope.as_os_str().as_bytes()),
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Forgets overlayfs's bookkeeping of an overlay with no pending changes: the work dir (with
/// the hard-link index) and the overlay xattrs of the upper root (the lower root's origin).
fn reset_layers(layout: &Layout) -> anyhow::Result<()> {
    if let Ok(rd) = std::fs::read_dir(&layout.work) {
        for e in rd.flatten() {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.with_context(|| format!("remove {}", p.display()))?;
        }
    }
    let fd = backing::open_root(&layout.upper)?;
    for (name, _) in backing::all_xattrs(fd.as_fd())? {
        if name.as_bytes().starts_with(OVL_PREFIX.as_bytes()) {
            backing::removexattr(fd.as_fd(), &name)
                .with_context(|| format!("{}: remove xattr {name:?}", layout.upper.display()))?;
        }
    }
    Ok(())
}

fn copy_root_attrs(scope: &Path, upper: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(scope).with_context(|| format!("stat {}", scope.display()))?;
    std::os::unix::fs::lchown(upper, Some(m.uid()), Some(m.gid()))
        .with_context(|| format!("chown {}", upper.display()))?;
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
fn escape(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

// ---------------------------------------------------------------------------------------------
// Commit, discard, diff: reading the upper layer back.
//
// The upper dir is veilfs's own (inside the store), so it is read with plain paths (never
// following symlinks); the real folder is only touched through `backing`, beneath the scope fd.
//
// How the upper dir encodes the merged tree (overlayfs, `redirect_dir=on`, `index=off`,
// `metacopy=off`):
// - a regular file, symlink or special file is the whole object (copy-up copies all data);
// - a 0:0 character device is a whiteout: the lower object at that name is deleted;
// - a directory is merged with the lower directory at the same path, unless it is opaque
//   (`trusted.overlay.opaque` = "y": nothing below it comes from the lower layer) or redirected
//   (`trusted.overlay.redirect`: a renamed directory, merged with the lower directory it names,
//   absolute from the root or relative to the parent's lower directory).
//
// A commit turns that into steps on the real folder. Where an upper directory is merged with
// the real directory at the same path ("base-same"), only the upper entries change anything.
// Otherwise (opaque, redirected, new) the real directory's entries are replaced by the merged
// set: lower entries not shadowed are copied from the lower directory (the real folder), real
// entries not in the merged set are deleted.
//
// Conflict rule (the kernel's copy-up cannot be hooked, and `trusted.overlay.origin` only names
// the lower inode, not its content at copy-up): a path conflicts when its real object, or for a
// deletion anything in the real subtree, has a ctime newer than the birth time (statx btime) of
// the upper entry that changes it — the copy-up, the whiteout, or the new object. The upper
// object is born at copy-up, so this catches every change made to the real file after the
// agent's copy was taken (and, conservatively, a chmod or rename of it too). Where btime is not
// supported, the upper entry's ctime is used (later than the copy-up, so changes made between
// the copy-up and the agent's last change are then missed). Directory metadata is not checked.
// Equal times count as a conflict: timestamps are taken at clock-tick granularity, so a change
// in the same tick as the copy-up may have come after it, and a false conflict only asks for
// `--force` where a missed one would overwrite somebody's change.

const OVL_PREFIX: &str = "trusted.overlay.";
const MASK: &[u8] = b"<redacted:";

/// Where a step's content comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Source {
    /// The upper layer (absolute path inside the store).
    Upper(#[serde(with = "relpath")] PathBuf),
    /// The real folder (lower layer), relative to the scope: a renamed directory's content.
    Real(#[serde(with = "relpath")] PathBuf),
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    /// Make the real path hold `target` (a directory's times are set by a later `DirTimes`).
    Put {
        target: State,
        src: Source,
        /// Rewrite the real file in place: it is the origin of an indexed (hard-linked) copy-up,
        /// so every real name of it must see the new bytes.
        in_place: bool,
    },
    /// Remove the real path (a non-directory or a directory emptied by earlier steps).
    Delete { was: State },
    /// Make the real path a hard link to `to` (committed earlier in the same commit).
    Link {
        #[serde(with = "relpath")]
        to: PathBuf,
        target: State,
    },
    /// Set a committed directory's times (after its entries were changed).
    DirTimes { meta: Meta },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    #[serde(with = "relpath")]
    pub path: PathBuf,
    pub op: Op,
    pub unit: usize,
}

/// A unit of a commit: applied or skipped as a whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unit {
    #[serde(with = "relpath")]
    pub path: PathBuf,
    /// The upper entry this unit commits (removed from the upper layer afterwards).
    #[serde(with = "paths::opt")]
    pub upper: Option<PathBuf>,
    /// The real object changed after the agent's copy (skipped unless `force`).
    pub conflict: Option<String>,
    /// Never committed (a redaction mask over different real bytes).
    pub refused: Option<String>,
    pub selected: bool,
}

/// What a commit would do; built without changing anything.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommitPlan {
    #[serde(with = "relpath")]
    pub scope: PathBuf,
    #[serde(with = "relpath")]
    pub upper: PathBuf,
    pub steps: Vec<Step>,
    pub units: Vec<Unit>,
    pub warnings: Vec<String>,
    /// (lower origin, renamed directory) of every redirected directory.
    #[serde(with = "paths::pairs")]
    origins: Vec<(PathBuf, PathBuf)>,
    /// Upper directories whose content replaces the real directory's (opaque, redirected, new).
    #[serde(with = "paths::vec")]
    replacing: Vec<PathBuf>,
    /// overlayfs index entries (regular files) seen when planning, with the unit that writes
    /// one through a real name only (see `index_orphans`).
    #[serde(with = "paths::index")]
    index: Vec<(PathBuf, Option<usize>)>,
}

/// Lossless serde (see `journal::relpath`) for the path containers of a [`CommitPlan`], which is
/// journaled as JSON before a commit changes anything.
mod paths {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct P(#[serde(with = "relpath")] PathBuf);

    pub mod opt {
        use super::*;
        pub fn serialize<S: serde::Serializer>(
            v: &Option<PathBuf>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.clone().map(P).serialize(s)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<PathBuf>, D::Error> {
            Ok(Option::<P>::deserialize(d)?.map(|p| p.0))
        }
    }
    pub mod vec {
        use super::*;
        pub fn serialize<S: serde::Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
            v.iter().cloned().map(P).collect::<Vec<_>>().serialize(s)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<PathBuf>, D::Error> {
            Ok(Vec::<P>::deserialize(d)?.into_iter().map(|p| p.0).collect())
        }
    }
    pub mod pairs {
        use super::*;
        pub fn serialize<S: serde::Serializer>(
            v: &[(PathBuf, PathBuf)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.iter()
                .map(|(a, b)| (P(a.clone()), P(b.clone())))
                .collect::<Vec<_>>()
                .serialize(s)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(PathBuf, PathBuf)>, D::Error> {
            Ok(Vec::<(P, P)>::deserialize(d)?
                .into_iter()
                .map(|(a, b)| (a.0, b.0))
                .collect())
        }
    }
    pub mod index {
        use super::*;
        pub fn serialize<S: serde::Serializer>(
            v: &[(PathBuf, Option<usize>)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.iter()
                .map(|(a, u)| (P(a.clone()), *u))
                .collect::<Vec<_>>()
                .serialize(s)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(PathBuf, Option<usize>)>, D::Error> {
            Ok(Vec::<(P, Option<usize>)>::deserialize(d)?
                .into_iter()
                .map(|(a, u)| (a.0, u))
                .collect())
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        match &self.op {
            Op::Put { target, src, .. } => {
                let from = match src {
                    Source::Real(r) => format!("  (copied from {})", r.display()),
                    _ => String::new(),
                };
                write!(f, "put      {p}  ({}){from}", target.describe())
            }
            Op::Delete { was } => write!(f, "delete   {p}  (was {})", was.describe()),
            Op::Link { to, .. } => write!(f, "link     {p}  (hard link to {})", to.display()),
            Op::DirTimes { .. } => write!(f, "times    {p}"),
        }
    }
}

impl CommitPlan {
    /// The steps that would run (selected, not refused, not in conflict unless `force`).
    pub fn runs(&self, step: &Step, force: bool) -> bool {
        let u = &self.units[step.unit];
        u.selected && u.refused.is_none() && (force || u.conflict.is_none())
    }
}

/// What [`apply_commit`] did.
#[derive(Debug, Default)]
pub struct CommitReport {
    pub session: String,
    pub changed: usize,
    pub unchanged: usize,
    pub skipped_conflicts: Vec<String>,
    pub refused: Vec<String>,
    pub warnings: Vec<String>,
}

/// Is the overlay of `store` mounted (a `veilfs mount --mode overlay` still running, or a stale
/// mount left by a killed one)?
pub fn is_mounted(store: &Path) -> bool {
    let merged = Layout::in_store(store).merged;
    let merged = merged.canonicalize().unwrap_or(merged);
    crate::mountinfo::is_mount_point(&merged)
}

/// The scope the overlay in `store` was created for (recorded at mount time).
pub fn recorded_scope(store: &Path) -> Option<PathBuf> {
    let b = std::fs::read(Layout::in_store(store).scope_file).ok()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(b)))
}

/// Does `store` hold an overlay with pending changes?
pub fn has_changes(store: &Path) -> bool {
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
pub fn exclusive(store: &Path, what: &str) -> anyhow::Result<std::fs::File> {
    let l = lock(store, what)?;
    let layout = Layout::in_store(store);
    detach_stale(&layout);
    if is_mounted(store) {
        bail!(
            "{what}: {} is still a mount point and could not be detached",
            layout.merged.display()
        );
    }
    Ok(l)
}

fn under(p: &Path, filter: &Path) -> bool {
    filter.as_os_str().is_empty() || p.starts_with(filter)
}

fn xattr(root: BorrowedFd<'_>, rel: &Path, name: &str) -> Option<Vec<u8>> {
    let fd = backing::open_path(root, rel).ok()?;
    backing::getxattr(fd.as_fd(), std::ffi::OsStr::new(name), 0)
        .ok()
        .and_then(|v| {
            backing::getxattr(fd.as_fd(), std::ffi::OsStr::new(name), v.len().max(1)).ok()
        })
}

/// Reads `path` in the upper layer as a [`State`] (content stored when `store` is given),
/// without overlayfs's private xattrs.
fn upper_state(
    upper_root: BorrowedFd<'_>,
    rel: &Path,
    store: Option<&Store>,
) -> anyhow::Result<State> {
    let mut s = State::read(upper_root, rel, store)
        .with_context(|| format!("read upper {}", rel.display()))?;
    // An empty file standing for a 0:0 character device (overlayfs cannot hold one).
    if let State::File { size: 0, meta, .. } = &s
        && meta.xattrs.iter().any(|(n, _)| n == DEV0_XATTR)
    {
        let mut meta = meta.clone();
        meta.mode = (meta.mode & !libc::S_IFMT) | libc::S_IFCHR;
        meta.xattrs.retain(|(n, _)| n != DEV0_XATTR);
        s = State::Special { rdev: 0, meta };
    }
    match &mut s {
        State::File { meta, .. }
        | State::Dir { meta }
        | State::Symlink { meta, .. }
        | State::Special { meta, .. } => meta.xattrs.retain(|(n, _)| !n.starts_with(OVL_PREFIX)),
        State::Absent => {}
    }
    Ok(s)
}

/// Birth time of an upper entry in unix ns (its ctime where btime is not supported).
fn born(abs: &Path) -> i128 {
    let Ok(m) = std::fs::symlink_metadata(abs) else {
        return i128::MAX;
    };
    if let Ok(t) = m.created()
        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
    {
        return d.as_nanos() as i128;
    }
    m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
}

fn ns((s, n): (i64, i64)) -> i128 {
    s as i128 * 1_000_000_000 + n as i128
}

struct Planner<'a> {
    store: Option<&'a Store>,
    root: OwnedFd,
    upper_root: OwnedFd,
    upper: PathBuf,
    steps: Vec<Step>,
    units: Vec<Unit>,
    warnings: Vec<String>,
    links: HashMap<(u64, u64), PathBuf>,
    origins: Vec<(PathBuf, PathBuf)>,
    replacing: Vec<PathBuf>,
    /// Index entries (regular files) by the (dev, ino) of their upper inode.
    index: HashMap<(u64, u64), IndexEntry>,
}

/// An entry of overlayfs's inode index (`work/index`, `index=on`): the upper inode a copied-up
/// lower hard link shares among all its names. Named by the hex of the origin's file handle.
#[derive(Clone, Debug)]
struct IndexEntry {
    abs: PathBuf,
    /// The lower (real) inode number, decoded from the handle when its type is known
    /// (FILEID_INO32_GEN and _PARENT: ext4, xfs, tmpfs...).
    origin_ino: Option<u64>,
}

fn index_entries(layout: &Layout) -> HashMap<(u64, u64), IndexEntry> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(&layout.index) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        let name = e.file_name();
        let fh = hex::decode(name.as_bytes()).ok();
        // struct ovl_fb: version, magic 0xfb, len, flags, type, uuid[16], fid[]
        let origin_ino = fh.and_then(|b| {
            (b.len() >= 25 && b[1] == 0xfb && matches!(b[4], 1 | 2))
                .then(|| u32::from_le_bytes([b[21], b[22], b[23], b[24]]) as u64)
        });
        out.insert(
            (m.dev(), m.ino()),
            IndexEntry {
                abs: e.path(),
                origin_ino,
            },
        );
    }
    out
}

impl Planner<'_> {
    /// Index entries whose content is reachable only through real (lower) names of the origin:
    /// no upper name of the inode is committed in place. Writes the content in place at one
    /// real name that no upper entry shadows.
    fn index_orphans(
        &mut self,
        covered: &HashSet<(u64, u64)>,
    ) -> anyhow::Result<HashMap<PathBuf, usize>> {
        let mut units = HashMap::new();
        let want: HashMap<u64, (u64, u64)> = self
            .index
            .iter()
            .filter(|(k, _)| !covered.contains(k))
            .filter_map(|(k, e)| e.origin_ino.map(|i| (i, *k)))
            .collect();
        if want.is_empty() {
            return Ok(units);
        }
        let mut found: HashMap<u64, PathBuf> = HashMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(d) = stack.pop() {
            for n in self.real_names(&d) {
                let p = d.join(&n);
                let Some(st) = self.real_stat(&p) else {
                    continue;
                };
                if st.kind() == Kind::Dir {
                    stack.push(p);
                } else if st.kind() == Kind::File
                    && want.contains_key(&st.ino)
                    && !found.contains_key(&st.ino)
                    && std::fs::symlink_metadata(self.upper.join(&p)).is_err()
                    && !p
                        .ancestors()
                        .skip(1)
                        .any(|a| self.replacing.iter().any(|r| r == a))
                {
                    found.insert(st.ino, p);
                }
            }
        }
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        for (ino, p) in found {
            let e = self.index[&want[&ino]].clone();
            let u = self.unit(&p, None);
            units.insert(e.abs.clone(), u);
            let since = born(&e.abs);
            if let Some(st) = self.real_stat(&p)
                && ns(st.ctime) >= since
            {
                self.units[u].conflict = Some(format!(
                    "conflict {}: the real file changed (ctime {}) after the agent's copy was taken ({})",
                    p.display(),
                    crate::time::format_time(ns(st.ctime)),
                    crate::time::format_time(since)
                ));
            }
            let f = std::fs::File::open(&e.abs)
                .with_context(|| format!("read index {}", e.abs.display()))?;
            let st = backing::stat_fd(f.as_fd())?;
            let mut meta = crate::journal::meta_of(f.as_fd(), &st)?;
            meta.xattrs.retain(|(n, _)| !n.starts_with(OVL_PREFIX));
            let (hash, size) = match self.store {
                Some(s) => s.put_file(&f)?,
                None => {
                    let mut h = blake3::Hasher::new();
                    let n = std::io::copy(&mut &f, &mut h)?;
                    (crate::store::ObjectId(*h.finalize().as_bytes()), n)
                }
            };
            self.step(
                &p,
                Op::Put {
                    target: State::File { hash, size, meta },
                    src: Source::Upper(e.abs.clone()),
                    in_place: true,
                },
                u,
            );
        }
        Ok(units)
    }

    fn unit(&mut self, path: &Path, upper: Option<PathBuf>) -> usize {
        self.units.push(Unit {
            path: path.to_path_buf(),
            upper,
            conflict: None,
            refused: None,
            selected: true,
        });
        self.units.len() - 1
    }

    fn step(&mut self, path: &Path, op: Op, unit: usize) {
        self.steps.push(Step {
            path: path.to_path_buf(),
            op,
            unit,
        });
    }

    fn real_stat(&self, rel: &Path) -> Option<backing::Stat> {
        let fd = backing::open_path(self.root.as_fd(), rel).ok()?;
        backing::stat_fd(fd.as_fd()).ok()
    }

    fn real_names(&self, rel: &Path) -> Vec<std::ffi::OsString> {
        let Ok(fd) = backing::open_path(self.root.as_fd(), rel) else {
            return vec![];
        };
        if backing::stat_fd(fd.as_fd()).map(|s| s.kind()).ok() != Some(Kind::Dir) {
            return vec![];
        }
        let mut v: Vec<_> = backing::list_dir(fd.as_fd())
            .map(|es| es.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Deletes the real subtree at `rel` (children first); a conflict when anything in it
    /// changed after `since`.
    fn delete_tree(&mut self, rel: &Path, unit: usize, since: i128) -> anyhow::Result<()> {
        let Some(st) = self.real_stat(rel) else {
            return Ok(());
        };
        if ns(st.ctime) >= since && self.units[unit].conflict.is_none() {
            self.units[unit].conflict = Some(format!(
                "conflict {}: changed in the real folder after the agent's change (real ctime {}); not deleted",
                rel.display(),
                crate::time::format_time(ns(st.ctime))
            ));
        }
        if st.kind() == Kind::Dir {
            for n in self.real_names(rel) {
                self.delete_tree(&rel.join(n), unit, since)?;
            }
        }
        let was = State::read(self.root.as_fd(), rel, None)?;
        self.step(rel, Op::Delete { was }, unit);
        Ok(())
    }

    /// Copies the real subtree at `src` to `dst` (a renamed directory's lower content).
    fn copy_tree(&mut self, src: &Path, dst: &Path, unit: usize) -> anyhow::Result<()> {
        let s = State::read(self.root.as_fd(), src, self.store)?;
        if let Some(st) = self.real_stat(dst)
            && st.kind() == Kind::Dir
            && !matches!(s, State::Dir { .. })
        {
            self.delete_tree(dst, unit, i128::MAX)?;
        }
        match &s {
            State::Dir { meta } => {
                if let Some(st) = self.real_stat(dst)
                    && st.kind() != Kind::Dir
                {
                    self.delete_tree(dst, unit, i128::MAX)?;
                }
                let meta = meta.clone();
                self.step(
                    dst,
                    Op::Put {
                        target: s.clone(),
                        src: Source::Real(src.to_path_buf()),
                        in_place: false,
                    },
                    unit,
                );
                let names = self.real_names(src);
                let existing = self.real_names(dst);
                for n in existing.iter().filter(|n| !names.contains(n)) {
                    self.delete_tree(&dst.join(n), unit, i128::MAX)?;
                }
                for n in names {
                    self.copy_tree(&src.join(&n), &dst.join(&n), unit)?;
                }
                self.step(dst, Op::DirTimes { meta }, unit);
            }
            State::Absent => {}
            _ => self.step(
                dst,
                Op::Put {
                    target: s.clone(),
                    src: Source::Real(src.to_path_buf()),
                    in_place: false,
                },
                unit,
            ),
        }
        Ok(())
    }

    /// Plans upper directory `rel`, merged with the real directory `lower` (None: nothing below
    /// comes from the lower layer).
    fn dir(&mut self, rel: &Path, lower: Option<PathBuf>, dir_unit: usize) -> anyhow::Result<()> {
        let abs = self.upper.join(rel);
        let mut entries: Vec<(std::ffi::OsString, std::fs::Metadata)> = Vec::new();
        for e in std::fs::read_dir(&abs).with_context(|| format!("list {}", abs.display()))? {
            let e = e?;
            let m = std::fs::symlink_metadata(e.path())?;
            entries.push((e.file_name(), m));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let base_same = lower.as_deref() == Some(rel);
        let is_whiteout = |m: &std::fs::Metadata| m.file_type().is_char_device() && m.rdev() == 0;
        let upper_names: HashSet<&std::ffi::OsString> = entries.iter().map(|e| &e.0).collect();

        // 1. Deletions.
        if base_same {
            for (name, m) in &entries {
                if is_whiteout(m) {
                    let p = rel.join(name);
                    let u = self.unit(&p, Some(p.clone()));
                    self.delete_tree(&p, u, born(&abs.join(name)))?;
                }
            }
        } else {
            self.replacing.push(rel.to_path_buf());
            let lower_names: Vec<_> = lower
                .as_deref()
                .map(|l| self.real_names(l))
                .unwrap_or_default();
            let since = born(&abs);
            for n in self.real_names(rel) {
                let keep = entries.iter().any(|(un, um)| *un == n && !is_whiteout(um))
                    || (!upper_names.contains(&n) && lower_names.contains(&n));
                if !keep {
                    let p = rel.join(&n);
                    let u = self.unit(&p, None);
                    self.delete_tree(&p, u, since)?;
                }
            }
        }
        // 2. The upper entries.
        for (name, m) in &entries {
            if is_whiteout(m) {
                continue;
            }
            let p = rel.join(name);
            let uabs = abs.join(name);
            let u = self.unit(&p, Some(p.clone()));
            let since = born(&uabs);
            let real = self.real_stat(&p);
            if let Some(st) = real {
                if (st.kind() == Kind::Dir) != m.is_dir() {
                    self.delete_tree(&p, u, since)?;
                } else if !m.is_dir() && ns(st.ctime) >= since {
                    self.units[u].conflict = Some(format!(
                        "conflict {}: the real file changed (ctime {}) after the agent's copy was taken ({})",
                        p.display(),
                        crate::time::format_time(ns(st.ctime)),
                        crate::time::format_time(since)
                    ));
                }
            }
            let child_lower = lower.as_ref().map(|l| l.join(name));
            // Inside a renamed directory the agent's copy came from the lower path: check it too.
            if !m.is_dir()
                && self.units[u].conflict.is_none()
                && let Some(cl) = child_lower.as_deref().filter(|cl| *cl != p)
                && let Some(st) = self.real_stat(cl)
                && ns(st.ctime) >= since
            {
                self.units[u].conflict = Some(format!(
                    "conflict {}: its origin {} changed in the real folder (ctime {}) after the agent's copy was taken ({})",
                    p.display(),
                    cl.display(),
                    crate::time::format_time(ns(st.ctime)),
                    crate::time::format_time(since)
                ));
            }
            if m.is_dir() {
                let target = upper_state(self.upper_root.as_fd(), &p, None)?;
                let meta = target.meta().cloned().unwrap_or_else(unreachable_meta);
                self.step(
                    &p,
                    Op::Put {
                        target,
                        src: Source::Upper(uabs.clone()),
                        in_place: false,
                    },
                    u,
                );
                let opaque = xattr(self.upper_root.as_fd(), &p, "trusted.overlay.opaque")
                    .as_deref()
                    == Some(b"y");
                let redirect = xattr(self.upper_root.as_fd(), &p, "trusted.overlay.redirect");
                let lower_dir = if opaque {
                    None
                } else if let Some(r) = redirect {
                    let r = PathBuf::from(std::ffi::OsString::from_vec(r));
                    let o = match r.strip_prefix("/") {
                        Ok(abs_r) => Some(abs_r.to_path_buf()),
                        Err(_) => lower.as_ref().map(|l| l.join(&r)),
                    };
                    if let Some(o) = &o {
                        self.origins.push((o.clone(), p.clone()));
                    }
                    o
                } else {
                    child_lower
                };
                let lower_dir =
                    lower_dir.filter(|l| self.real_stat(l).is_some_and(|s| s.kind() == Kind::Dir));
                self.dir(&p, lower_dir, u)?;
                self.step(&p, Op::DirTimes { meta }, u);
                continue;
            }
            // An edit of a file the agent saw masked is merged onto the real bytes against the
            // recorded view (served.rs); the mask-text check below only covers views that were
            // never recorded (served by a read-only mount, or before records existed).
            let mut merged = None;
            if m.is_file() {
                match crate::served::commit_content(
                    &self.upper,
                    self.root.as_fd(),
                    &p,
                    child_lower.as_deref(),
                    &uabs,
                )? {
                    crate::served::CommitContent::Merged(b) => merged = Some(b),
                    crate::served::CommitContent::Refused(r) => self.units[u].refused = Some(r),
                    crate::served::CommitContent::AsIs => {
                        self.check_masks(&uabs, &p, child_lower.as_deref(), u)?
                    }
                }
                if m.nlink() > 1 {
                    let key = (m.dev(), m.ino());
                    if let Some(first) = self.links.get(&key).cloned() {
                        let target = upper_state(self.upper_root.as_fd(), &p, None)?;
                        self.step(&p, Op::Link { to: first, target }, u);
                        continue;
                    }
                    self.links.insert(key, p.clone());
                }
            }
            // An indexed copy-up of a lower hard link: write the real inode in place when the
            // real name still is that inode, so its other names see the bytes too.
            let in_place = m.is_file()
                && self.index.get(&(m.dev(), m.ino())).is_some_and(|e| {
                    real.is_some_and(|r| r.kind() == Kind::File && Some(r.ino) == e.origin_ino)
                });
            let mut target = upper_state(self.upper_root.as_fd(), &p, self.store)?;
            if let Some(b) = merged {
                crate::served::set_content(&mut target, &b, self.store)?;
            }
            self.step(
                &p,
                Op::Put {
                    target,
                    src: Source::Upper(uabs),
                    in_place,
                },
                u,
            );
        }
        // 3. Lower entries of a replaced directory that still show through.
        if !base_same && let Some(l) = &lower {
            for n in self.real_names(l) {
                if upper_names.contains(&n) {
                    continue;
                }
                let dst = rel.join(&n);
                let u = self.unit(&dst, None);
                self.copy_tree(&l.join(&n), &dst, u)?;
            }
        }
        let _ = dir_unit;
        Ok(())
    }

    /// Refuses a file that carries a redaction mask where the lower file has other bytes.
    fn check_masks(
        &mut self,
        abs: &Path,
        rel: &Path,
        lower: Option<&Path>,
        unit: usize,
    ) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(abs).with_context(|| format!("read {}", abs.display()))?;
        let at = |off: u64, len: usize| -> std::io::Result<Vec<u8>> {
            let mut v = vec![0u8; len];
            let mut n = 0;
            while n < len {
                let r = f.read_at(&mut v[n..], off + n as u64)?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            v.truncate(n);
            Ok(v)
        };
        // Stream the file in chunks (overlapping by the marker's length) for mask markers.
        const CHUNK: usize = 1 << 20;
        let finder = memchr::memmem::Finder::new(MASK);
        let mut starts = Vec::new();
        let mut off = 0u64;
        loop {
            let buf = at(off, CHUNK + MASK.len() - 1)?;
            // The marker has no border (no proper prefix that is also a suffix), so its
            // matches never overlap and non-overlapping search finds them all.
            for k in finder.find_iter(&buf) {
                if k < CHUNK || buf.len() < CHUNK {
                    starts.push(off + k as u64);
                }
            }
            if buf.len() < CHUNK + MASK.len() - 1 {
                break;
            }
            off += CHUNK as u64;
        }
        starts.dedup();
        if starts.is_empty() {
            return Ok(());
        }
        // Each mask: the label up to `>`, then its `*` padding.
        let mut hits = Vec::new();
        for s in starts {
            let head = at(s, MASK.len() + 128)?;
            let mut e = s + MASK.len() as u64;
            if let Some(gt) = head[MASK.len()..].iter().position(|b| *b == b'>') {
                e = s + (MASK.len() + gt + 1) as u64;
                loop {
                    let more = at(e, 4096)?;
                    let stars = more.iter().take_while(|b| **b == b'*').count();
                    e += stars as u64;
                    if stars < more.len() || more.is_empty() {
                        break;
                    }
                }
            }
            hits.push((s, e, at(s, (e - s) as usize)?));
        }
        let real_rel = lower.filter(|l| self.real_stat(l).is_some()).unwrap_or(rel);
        let real = match backing::open_path(self.root.as_fd(), real_rel) {
            Ok(fd) => backing::reopen(fd.as_fd(), libc::O_RDONLY)
                .with_context(|| format!("read real {}", real_rel.display()))?,
            Err(_) => {
                self.warnings.push(format!(
                    "{}: new file contains a redaction mask `{}` (copied from a masked view?); committed as is",
                    rel.display(),
                    String::from_utf8_lossy(&hits[0].2)
                ));
                return Ok(());
            }
        };
        for (s, e, bytes) in hits {
            let mut theirs = vec![0u8; bytes.len()];
            let same = real.read_exact_at(&mut theirs, s).is_ok() && theirs == bytes;
            if !same {
                self.units[unit].refused = Some(format!(
                    "refused {}: bytes {s}..{e} hold the redaction mask `{}` where the real file has other bytes; committing would overwrite the real content with the mask (edit the file in the overlay, or `veilfs discard` it)",
                    rel.display(),
                    String::from_utf8_lossy(&bytes)
                ));
                return Ok(());
            }
        }
        Ok(())
    }
}

fn unreachable_meta() -> Meta {
    Meta {
        mode: libc::S_IFDIR | 0o755,
        uid: 0,
        gid: 0,
        atime: (0, 0),
        mtime: (0, 0),
        xattrs: vec![],
    }
}

/// Plans the commit of the overlay in `store_dir` onto `scope`, limited to `filters` (paths
/// relative to the scope; empty: everything). With `store`, every content a step needs is
/// stored first (so applying never reads the upper layer twice); without, only hashed.
pub fn plan_commit(
    store_dir: &Path,
    store: Option<&Store>,
    scope: &Path,
    filters: &[PathBuf],
) -> anyhow::Result<CommitPlan> {
    // Planning stores the content of every file the commit writes: in bulk, one flush at the
    // end instead of an fsync per object (nothing refers to them durably before the flush).
    if let Some(s) = store {
        s.defer_sync();
    }
    let plan = plan_commit_inner(store_dir, store, scope, filters);
    if let Some(s) = store {
        s.flush()?;
    }
    plan
}

fn plan_commit_inner(
    store_dir: &Path,
    store: Option<&Store>,
    scope: &Path,
    filters: &[PathBuf],
) -> anyhow::Result<CommitPlan> {
    let layout = Layout::in_store(store_dir);
    let root = backing::open_root(scope).with_context(|| format!("scope {}", scope.display()))?;
    let upper_root = backing::open_root(&layout.upper)
        .with_context(|| format!("upper layer {}", layout.upper.display()))?;
    let mut p = Planner {
        store,
        root,
        upper_root,
        upper: layout.upper.clone(),
        steps: vec![],
        units: vec![],
        warnings: vec![],
        links: HashMap::new(),
        origins: vec![],
        replacing: vec![],
        index: index_entries(&layout),
    };
    let root_unit = p.unit(Path::new(""), None);
    p.dir(Path::new(""), Some(PathBuf::new()), root_unit)?;
    let covered: HashSet<(u64, u64)> = p
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::Put {
                src: Source::Upper(a),
                in_place: true,
                ..
            } => std::fs::symlink_metadata(a)
                .ok()
                .map(|m| (m.dev(), m.ino())),
            _ => None,
        })
        .collect();
    let orphan_units = p.index_orphans(&covered)?;
    for e in p.index.values() {
        if e.origin_ino.is_none() {
            p.warnings.push(format!(
                "{}: an overlay hard-link index entry of unknown handle type; its lower names are not committed",
                e.abs.display()
            ));
        }
    }
    let index = p.index.clone();
    let mut plan = CommitPlan {
        scope: scope.to_path_buf(),
        upper: layout.upper,
        steps: p.steps,
        units: p.units,
        warnings: p.warnings,
        origins: p.origins,
        replacing: p.replacing,
        index: index
            .into_values()
            .map(|e| {
                let u = orphan_units.get(&e.abs).copied();
                (e.abs, u)
            })
            .collect(),
    };
    if !filters.is_empty() {
        for u in plan.units.iter_mut() {
            u.selected = filters.iter().any(|f| under(&u.path, f));
        }
        // Missing ancestors of a selected path are created too.
        let selected: Vec<PathBuf> = plan
            .units
            .iter()
            .filter(|u| u.selected)
            .map(|u| u.path.clone())
            .collect();
        let root = backing::open_root(scope)?;
        for u in plan.units.iter_mut() {
            if !u.selected
                && u.upper.is_some()
                && selected
                    .iter()
                    .any(|s| s.starts_with(&u.path) && *s != u.path)
                && !backing::open_path(root.as_fd(), &u.path)
                    .and_then(|fd| backing::stat_fd(fd.as_fd()))
                    .is_ok_and(|s| s.kind() == Kind::Dir)
            {
                u.selected = true;
            }
        }
        // Never delete the origin of a renamed directory that is not committed with it.
        let origins = plan.origins.clone();
        for i in 0..plan.units.len() {
            let u = &plan.units[i];
            if !u.selected {
                continue;
            }
            let deletes = plan
                .steps
                .iter()
                .any(|s| s.unit == i && matches!(s.op, Op::Delete { .. }));
            if !deletes {
                continue;
            }
            for (o, d) in &origins {
                let dir_selected = plan
                    .units
                    .iter()
                    .any(|x| x.path == *d && x.upper.is_some() && x.selected);
                if o.starts_with(&plan.units[i].path) && !dir_selected {
                    let msg = format!(
                        "kept {}: it holds the content of renamed directory {}, which is not part of this commit",
                        plan.units[i].path.display(),
                        d.display()
                    );
                    plan.warnings.push(msg);
                    plan.units[i].selected = false;
                    break;
                }
            }
        }
    }
    Ok(plan)
}

fn meta_same(a: &State, b: &State) -> bool {
    let (Some(x), Some(y)) = (a.meta(), b.meta()) else {
        return a == b;
    };
    let base = x.uid == y.uid && x.gid == y.gid && x.xattrs == y.xattrs;
    match b {
        State::Dir { .. } => base && x.mode == y.mode,
        State::Symlink { .. } => base && x.mtime == y.mtime,
        _ => base && x.mode == y.mode && x.mtime == y.mtime,
    }
}

/// The op of the durable record that names a commit's journaled plan (a store object).
const PLAN_OP: &str = "commit-plan";
/// The op of the durable record written once every step of a commit is applied (only the
/// overlay clean-up remains; from then on the commit can only be finished, not aborted).
const APPLIED_OP: &str = "commit-applied";
const ABORTED_OP: &str = "commit-aborted";

/// A commit's plan as journaled before its first change.
#[derive(Serialize, Deserialize)]
struct JournaledPlan {
    force: bool,
    plan: CommitPlan,
}

/// A commit whose process died before it finished (found by `commit`, `log` and `mount`).
#[derive(Debug, Clone)]
pub struct PendingCommit {
    pub session: String,
    pub scope: PathBuf,
    /// Every step was applied; only the overlay clean-up is left.
    pub applied: bool,
    plan: crate::store::ObjectId,
}

impl PendingCommit {
    /// What an admin reads: what happened and the two commands that end it.
    pub fn describe(&self, store_dir: &Path) -> String {
        let s = store_dir.display();
        if self.applied {
            format!(
                "commit session {} into {} was interrupted after applying every change, while cleaning the overlay: finish it with `veilfs commit --store {s}`",
                self.session,
                self.scope.display()
            )
        } else {
            format!(
                "commit session {} into {} was interrupted part-way (the real folder holds part of it): finish it with `veilfs commit --store {s}`, or undo what it applied with `veilfs commit --store {s} --abort`",
                self.session,
                self.scope.display()
            )
        }
    }
}

/// The interrupted commit in `store`, if any: a commit session that journaled its plan, did
/// not end, and that no process is writing any more.
pub fn pending_commit(store: &Store) -> anyhow::Result<Option<PendingCommit>> {
    let infos = store.sessions()?;
    // A crashed commit someone rolled back with `veilfs rollback` is settled too.
    let undone: HashSet<String> = infos.iter().filter_map(|i| i.undo_of.clone()).collect();
    for info in infos.into_iter().rev() {
        if info.mode != "commit"
            || info.ended
            || info.problem.is_some()
            || undone.contains(&info.id)
        {
            continue;
        }
        if store.session_is_live(&info.id)? {
            continue;
        }
        let log = store.load_session(&info.id)?;
        let mut plan = None;
        let mut applied = false;
        for r in &log.records {
            if let Event::Change { op, .. } = &r.event {
                if let Some(id) = op.strip_prefix(PLAN_OP).map(str::trim) {
                    plan = id.parse().ok();
                } else if op == APPLIED_OP {
                    applied = true;
                }
            }
        }
        // Without a journaled plan nothing was changed yet (killed while planning) or the
        // session predates resumable commits: nothing can be resumed from it.
        if let Some(plan) = plan {
            return Ok(Some(PendingCommit {
                session: info.id,
                scope: info.scope,
                applied,
                plan,
            }));
        }
    }
    Ok(None)
}

fn kill_point() {
    rollback::test_kill_point();
}

/// Applies a plan as a resumable transaction. The plan (with `force`) is stored as an object
/// and named by a durable record of a new journal session (mode "commit") before the first
/// change; every affected path's pre-image (and its parent's) is captured and fsync'd before
/// its change, so `veilfs rollback --session <it>` undoes the commit. Committed entries are
/// then removed from the upper layer. A commit killed at any point is found by
/// [`pending_commit`] and ended by [`resume_commit`] (all applied) or [`abort_commit`] (none).
/// Refuses while the overlay is mounted, and while an interrupted commit is pending.
pub fn apply_commit(
    store_dir: &Path,
    store: &Store,
    plan: &CommitPlan,
    force: bool,
) -> anyhow::Result<CommitReport> {
    let _lock = exclusive(store_dir, "commit")?;
    if let Some(p) = pending_commit(store)? {
        bail!("{}", p.describe(store_dir));
    }
    let w = store.new_session(Event::SessionStart {
        scope: plan.scope.clone(),
        mode: "commit".into(),
        profile: String::new(),
        pid: std::process::id(),
        user: std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX),
    })?;
    let journaled = serde_json::to_vec(&JournaledPlan {
        force,
        plan: CommitPlan {
            scope: plan.scope.clone(),
            upper: plan.upper.clone(),
            steps: plan.steps.clone(),
            units: plan.units.clone(),
            warnings: plan.warnings.clone(),
            origins: plan.origins.clone(),
            replacing: plan.replacing.clone(),
            index: plan.index.clone(),
        },
    })
    .context("serialise the commit plan")?;
    let obj = store.put_bytes(&journaled)?;
    w.append(Event::Change {
        path: PathBuf::new(),
        op: format!("{PLAN_OP} {obj}"),
    })?;
    run_commit(store_dir, store, plan, force, &w, HashSet::new(), false)
}

/// Finishes an interrupted commit exactly as planned: every step again (each is idempotent:
/// a path already in its target state is left alone), the overlay clean-up, the end record.
/// Temporary files the killed process left in the real folder are removed first.
pub fn resume_commit(
    store_dir: &Path,
    store: &Store,
    pending: &PendingCommit,
) -> anyhow::Result<CommitReport> {
    let _lock = exclusive(store_dir, "commit")?;
    let JournaledPlan { force, plan } = load_plan(store, pending)?;
    let log = store.load_session(&pending.session)?;
    let captured: HashSet<PathBuf> = log
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Capture { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let w = store.reopen_session(&pending.session)?;
    let root = backing::open_root(&plan.scope)
        .with_context(|| format!("scope {}", plan.scope.display()))?;
    let dirs: Vec<&Path> = plan.steps.iter().filter_map(|s| s.path.parent()).collect();
    rollback::remove_temps(root.as_fd(), dirs, &pending.session)?;
    w.append(Event::Change {
        path: PathBuf::new(),
        op: "commit-resumed".into(),
    })?;
    run_commit(
        store_dir,
        store,
        &plan,
        force,
        &w,
        captured,
        pending.applied,
    )
}

/// Undoes what an interrupted commit applied (a rollback of its session) and ends it, leaving
/// the overlay as it was: the state before the commit. Refused once every change was applied
/// (the overlay may already be partly cleaned: only finishing is safe then).
pub fn abort_commit(
    store_dir: &Path,
    store: &Store,
    pending: &PendingCommit,
) -> anyhow::Result<rollback::Report> {
    let _lock = exclusive(store_dir, "commit --abort")?;
    if pending.applied {
        bail!("cannot abort: {}", pending.describe(store_dir));
    }
    let JournaledPlan { plan, .. } = load_plan(store, pending)?;
    let root = backing::open_root(&plan.scope)
        .with_context(|| format!("scope {}", plan.scope.display()))?;
    let dirs: Vec<&Path> = plan.steps.iter().filter_map(|s| s.path.parent()).collect();
    rollback::remove_temps(root.as_fd(), dirs, &pending.session)?;
    let rplan = rollback::plan(store, std::slice::from_ref(&pending.session), &[])?;
    // The commit's own post-images are what is on disk; anything else is someone's change,
    // which the rollback captures before overwriting (it can be undone too).
    let report = rollback::apply(store, &rplan, true, &|_| {})?;
    let w = store.reopen_session(&pending.session)?;
    w.append(Event::Change {
        path: PathBuf::new(),
        op: ABORTED_OP.into(),
    })?;
    w.append(Event::SessionEnd)?;
    Ok(report)
}

fn load_plan(store: &Store, pending: &PendingCommit) -> anyhow::Result<JournaledPlan> {
    let bytes = store
        .read_bytes(&pending.plan)
        .with_context(|| format!("the journaled plan of commit session {}", pending.session))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the journaled plan of commit session {} ({})",
            pending.session, pending.plan
        )
    })
}

fn run_commit(
    _store_dir: &Path,
    store: &Store,
    plan: &CommitPlan,
    force: bool,
    w: &crate::journal::SessionWriter,
    mut captured: HashSet<PathBuf>,
    already_applied: bool,
) -> anyhow::Result<CommitReport> {
    let mut report = CommitReport {
        warnings: plan.warnings.clone(),
        ..CommitReport::default()
    };
    for u in &plan.units {
        if !u.selected {
            continue;
        }
        if let Some(r) = &u.refused {
            report.refused.push(r.clone());
        } else if let Some(c) = &u.conflict
            && !force
        {
            report.skipped_conflicts.push(c.clone());
        }
    }
    let root = backing::open_root(&plan.scope)
        .with_context(|| format!("scope {}", plan.scope.display()))?;
    report.session = w.id().to_string();
    let capture = |captured: &mut HashSet<PathBuf>, p: &Path| -> anyhow::Result<()> {
        if captured.insert(p.to_path_buf()) {
            let before = State::read(root.as_fd(), p, Some(store))?;
            w.append(Event::Capture {
                path: p.to_path_buf(),
                before,
            })?;
        }
        Ok(())
    };
    let capture_with_parent = |captured: &mut HashSet<PathBuf>, p: &Path| -> anyhow::Result<()> {
        if let Some(parent) = p.parent() {
            capture(captured, parent)?;
        }
        capture(captured, p)
    };
    let mut applied = vec![false; plan.units.len()];
    for (i, u) in plan.units.iter().enumerate() {
        applied[i] = u.selected && u.refused.is_none() && (force || u.conflict.is_none());
    }
    // Steps run in chunks: first the pre-images of every path a chunk may change are captured
    // as one batch (objects flushed with one syncfs, then the journal with one fsync), then the
    // chunk's changes run. A path a step finds uncaptured then (one a delete earlier in the
    // chunk emptied) is captured on its own, durably, as before.
    const CHUNK: usize = 512;
    let steps: &[Step] = if already_applied { &[] } else { &plan.steps };
    for (k, step) in steps.iter().enumerate() {
        if k % CHUNK == 0 {
            store.defer_sync();
            let batch: anyhow::Result<()> = (|| {
                for s in steps[k..].iter().take(CHUNK).filter(|s| applied[s.unit]) {
                    for q in s.path.parent().into_iter().chain([s.path.as_path()]) {
                        if captured.insert(q.to_path_buf()) {
                            let before = State::read(root.as_fd(), q, Some(store))?;
                            w.append_lazy(Event::Capture {
                                path: q.to_path_buf(),
                                before,
                            })?;
                        }
                    }
                }
                Ok(())
            })();
            store.flush()?;
            batch?;
            w.sync()?;
        }
        if !applied[step.unit] {
            continue;
        }
        let p = &step.path;
        let mut changed = false;
        let res: anyhow::Result<()> = (|| {
            match &step.op {
                Op::Put {
                    target, in_place, ..
                } => {
                    let in_place = *in_place;
                    let now = State::read(root.as_fd(), p, None)?;
                    if now.same_content(target) && meta_same(&now, target) {
                        report.unchanged += 1;
                        return Ok(());
                    }
                    if let State::File { hash, .. } = target
                        && !store.has(hash)
                    {
                        bail!(
                            "{}: content {} is not in the store",
                            p.display(),
                            hash.short()
                        );
                    }
                    capture_with_parent(&mut captured, p)?;
                    let warns =
                        rollback::put_state_with(store, root.as_fd(), p, target, in_place, w.id())?;
                    report.warnings.extend(warns);
                    report.changed += 1;
                    changed = true;
                }
                Op::Delete { .. } => {
                    let Ok((pfd, name)) = backing::open_parent(root.as_fd(), p) else {
                        return Ok(());
                    };
                    let Ok(fd) = backing::lookup(pfd.as_fd(), &name) else {
                        return Ok(());
                    };
                    let kind = backing::stat_fd(fd.as_fd())?.kind();
                    capture_with_parent(&mut captured, p)?;
                    if kind == Kind::Dir {
                        backing::rmdir(pfd.as_fd(), &name)
                    } else {
                        backing::unlink(pfd.as_fd(), &name)
                    }
                    .with_context(|| format!("delete {}", p.display()))?;
                    captured.retain(|c| !c.starts_with(p));
                    report.changed += 1;
                    changed = true;
                }
                Op::Link { to, .. } => {
                    let src = backing::open_path(root.as_fd(), to)
                        .with_context(|| format!("link source {}", to.display()))?;
                    let (pfd, name) = backing::open_parent(root.as_fd(), p)?;
                    if let Ok(cur) = backing::lookup(pfd.as_fd(), &name) {
                        let (a, b) = (
                            backing::stat_fd(cur.as_fd())?,
                            backing::stat_fd(src.as_fd())?,
                        );
                        if (a.dev, a.ino) == (b.dev, b.ino) {
                            report.unchanged += 1;
                            return Ok(());
                        }
                    }
                    capture_with_parent(&mut captured, p)?;
                    let tmp = rollback::temp_name(w.id());
                    backing::link(src.as_fd(), pfd.as_fd(), &tmp)?;
                    if let Err(e) = backing::rename(pfd.as_fd(), &tmp, pfd.as_fd(), &name, 0) {
                        let _ = backing::unlink(pfd.as_fd(), &tmp);
                        return Err(e).with_context(|| format!("link {}", p.display()));
                    }
                    report.changed += 1;
                    changed = true;
                }
                Op::DirTimes { meta } => {
                    if p.as_os_str().is_empty() {
                        return Ok(());
                    }
                    let Ok(fd) = backing::open_path(root.as_fd(), p) else {
                        return Ok(()); // not created (a skipped unit below it)
                    };
                    let st = backing::stat_fd(fd.as_fd())?;
                    if st.kind() == Kind::Dir && st.mtime != meta.mtime {
                        capture_with_parent(&mut captured, p)?;
                        backing::utimens_fd(
                            fd.as_fd(),
                            SetTime::At(meta.atime.0, meta.atime.1),
                            SetTime::At(meta.mtime.0, meta.mtime.1),
                        )?;
                        changed = true;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            // The session stays open (not ended): it is the interrupted commit that the next
            // `veilfs commit` finishes, or `--abort` undoes.
            let _ = w.append(Event::Change {
                path: p.clone(),
                op: format!("commit failed: {e:#}"),
            });
            return Err(e.context(format!(
                "commit stopped at {}: nothing was removed from the overlay, and session {} holds the pre-image of every change made so far; fix the cause, then finish it with `veilfs commit --store {}`, or undo it with `veilfs commit --store {} --abort`",
                p.display(),
                w.id(),
                _store_dir.display(),
                _store_dir.display()
            )));
        }
        if !matches!(step.op, Op::DirTimes { .. })
            && captured.contains(p)
            && let Ok(after) = State::read(root.as_fd(), p, None)
        {
            // Not fsync'd on its own: the next capture (or the "applied" record) makes it
            // durable; a post-image lost in a crash only costs a conflict check.
            w.append_lazy(Event::PostImage {
                path: p.clone(),
                after,
            })?;
        }
        if changed {
            kill_point();
        }
    }
    if !already_applied {
        // The restored files were not fsync'd one by one: all of them before "applied", after
        // which the overlay copies go.
        crate::store::syncfs(&plan.scope)?;
        w.append(Event::Change {
            path: PathBuf::new(),
            op: APPLIED_OP.into(),
        })?;
        kill_point();
    }
    // Drop what is now in the real folder from the upper layer, and index entries no upper
    // name links any more (their bytes are in the real inode now).
    clean_upper(plan, &applied)?;
    for (abs, unit) in &plan.index {
        if unit.is_none_or(|u| applied[u]) {
            remove_orphan_index(abs)?;
        }
    }
    w.append(Event::SessionEnd)?;
    Ok(report)
}

/// Removes committed entries from the upper layer: in a directory merged with the real one at
/// the same path, each committed entry; a replacing (opaque, redirected, new) directory only as
/// a whole, once everything in and below it was committed (removing a part would change the
/// merged view).
fn clean_upper(plan: &CommitPlan, applied: &[bool]) -> anyhow::Result<()> {
    let complete = |d: &Path| {
        plan.units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.path.starts_with(d) && !u.path.as_os_str().is_empty())
            .all(|(i, _)| applied[i])
    };
    let unit_of: HashMap<&Path, usize> = plan
        .units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.upper.as_deref().map(|p| (p, i)))
        .collect();
    fn walk(
        plan: &CommitPlan,
        applied: &[bool],
        rel: &Path,
        unit_of: &HashMap<&Path, usize>,
        complete: &dyn Fn(&Path) -> bool,
    ) -> anyhow::Result<()> {
        let abs = plan.upper.join(rel);
        let mut names: Vec<_> = std::fs::read_dir(&abs)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            let p = rel.join(&n);
            let a = plan.upper.join(&p);
            let Some(&u) = unit_of.get(p.as_path()) else {
                continue; // appeared after planning
            };
            if !applied[u] {
                continue;
            }
            let m = std::fs::symlink_metadata(&a)?;
            if m.is_dir() {
                if plan.replacing.iter().any(|r| r == &p) {
                    if complete(&p) {
                        std::fs::remove_dir_all(&a)
                            .with_context(|| format!("remove {}", a.display()))?;
                        kill_point();
                    }
                    continue;
                }
                walk(plan, applied, &p, unit_of, complete)?;
                let _ = std::fs::remove_dir(&a); // only when empty
            } else {
                std::fs::remove_file(&a).with_context(|| format!("remove {}", a.display()))?;
                kill_point();
            }
        }
        Ok(())
    }
    walk(plan, applied, Path::new(""), &unit_of, &complete)
}

/// Removes an index entry no upper name links any more (nlink 1: only the index itself).
fn remove_orphan_index(abs: &Path) -> anyhow::Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(abs)
        && m.is_file()
        && m.nlink() == 1
    {
        std::fs::remove_file(abs).with_context(|| format!("remove {}", abs.display()))?;
    }
    Ok(())
}

/// Throws away the agent's changes under `filters` (everything when empty) by removing them
/// from the upper layer. A path inside a replaced (opaque or renamed) directory disappears from
/// the merged view rather than showing the real one again. Returns the removed upper paths.
pub fn discard(store_dir: &Path, filters: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let _lock = exclusive(store_dir, "discard")?;
    let layout = Layout::in_store(store_dir);
    let upper = layout.upper.clone();
    let mut removed = Vec::new();
    fn rm(p: &Path) -> std::io::Result<()> {
        if std::fs::symlink_metadata(p)?.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        }
    }
    if filters.is_empty() || filters.iter().any(|f| f.as_os_str().is_empty()) {
        let Ok(rd) = std::fs::read_dir(&upper) else {
            return Ok(removed);
        };
        for e in rd {
            let e = e?;
            rm(&e.path()).with_context(|| format!("remove {}", e.path().display()))?;
            removed.push(PathBuf::from(e.file_name()));
        }
        // The hard-link index holds edits visible through lower names: gone with the rest.
        if let Ok(rd) = std::fs::read_dir(&layout.index) {
            for e in rd.flatten() {
                rm(&e.path()).with_context(|| format!("remove {}", e.path().display()))?;
            }
        }
        return Ok(removed);
    }
    let links_before: HashMap<PathBuf, u64> = std::fs::read_dir(&layout.index)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.path(), e.metadata().ok()?.nlink())))
                .collect()
        })
        .unwrap_or_default();
    for f in filters {
        let a = upper.join(f);
        if std::fs::symlink_metadata(&a).is_ok() {
            rm(&a).with_context(|| format!("remove {}", a.display()))?;
            removed.push(f.clone());
        }
    }
    // A discarded name of a hard-linked copy-up discards the edit for every name.
    for (abs, before) in links_before {
        if before > 1 {
            remove_orphan_index(&abs)?;
        }
    }
    Ok(removed)
}
