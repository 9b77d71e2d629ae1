//! Commit, discard, diff: reading the upper layer back.
//!
//! The upper dir is veilfs's own (inside the store), so it is read with plain paths (never
//! following symlinks); the real folder is only touched through `backing`, beneath the scope fd.
//!
//! How the upper dir encodes the merged tree (overlayfs, `redirect_dir=on`, `index=off`,
//! `metacopy=off`):
//! - a regular file, symlink or special file is the whole object (copy-up copies all data);
//! - a 0:0 character device is a whiteout: the lower object at that name is deleted;
//! - a directory is merged with the lower directory at the same path, unless it is opaque
//!   (`trusted.overlay.opaque` = "y": nothing below it comes from the lower layer) or redirected
//!   (`trusted.overlay.redirect`: a renamed directory, merged with the lower directory it names,
//!   absolute from the root or relative to the parent's lower directory).
//!
//! A commit turns that into steps on the real folder. Where an upper directory is merged with
//! the real directory at the same path ("base-same"), only the upper entries change anything.
//! Otherwise (opaque, redirected, new) the real directory's entries are replaced by the merged
//! set: lower entries not shadowed are copied from the lower directory (the real folder), real
//! entries not in the merged set are deleted.
//!
//! Conflict rule (the kernel's copy-up cannot be hooked, and `trusted.overlay.origin` only names
//! the lower inode, not its content at copy-up): a path conflicts when its real object, or for a
//! deletion anything in the real subtree, has a ctime newer than the birth time (statx btime) of
//! the upper entry that changes it — the copy-up, the whiteout, or the new object. The upper
//! object is born at copy-up, so this catches every change made to the real file after the
//! agent's copy was taken (and, conservatively, a chmod or rename of it too). Where btime is not
//! supported, the upper entry's ctime is used (later than the copy-up, so changes made between
//! the copy-up and the agent's last change are then missed). Directory metadata is not checked.
//! Equal times count as a conflict: timestamps are taken at clock-tick granularity, so a change
//! in the same tick as the copy-up may have come after it, and a false conflict only asks for
//! `--force` where a missed one would overwrite somebody's change.

use super::*;

pub(super) const OVL_PREFIX: &str = "trusted.overlay.";
/// The same xattrs of an overlay a normal user mounted (`userxattr`, see `userns`). Both are
/// overlayfs's own bookkeeping, never committed to the real folder.
pub(super) const OVL_USER_PREFIX: &str = "user.overlay.";

pub(super) fn ovl_private(name: &str) -> bool {
    name.starts_with(OVL_PREFIX) || name.starts_with(OVL_USER_PREFIX)
}
pub(super) const MASK: &[u8] = b"<redacted:";

/// Where a step's content comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Source {
    /// The upper layer (absolute path inside the store).
    Upper(#[serde(with = "relpath")] PathBuf),
    /// The real folder (lower layer), relative to the scope: a renamed directory's content.
    Real(#[serde(with = "relpath")] PathBuf),
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Op {
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
pub(crate) struct Step {
    #[serde(with = "relpath")]
    pub path: PathBuf,
    pub op: Op,
    pub unit: usize,
}

/// Why a unit is skipped unless `commit --force`: the real folder changed after the agent's
/// copy was taken (times in nanoseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Conflict {
    /// The real file at `path` changed after the agent's copy of it was taken.
    ChangedAfterCopy {
        #[serde(with = "relpath")]
        path: PathBuf,
        real_ctime: i128,
        copied: i128,
    },
    /// Something in the real subtree the agent deleted changed after the deletion.
    ChangedAfterDelete {
        #[serde(with = "relpath")]
        path: PathBuf,
        real_ctime: i128,
    },
    /// Inside a renamed directory: the real file the agent's copy came from changed.
    OriginChanged {
        #[serde(with = "relpath")]
        path: PathBuf,
        #[serde(with = "relpath")]
        origin: PathBuf,
        real_ctime: i128,
        copied: i128,
    },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::time::format_time as t;
        match self {
            Conflict::ChangedAfterCopy {
                path,
                real_ctime,
                copied,
            } => write!(
                f,
                "conflict {}: the real file changed (ctime {}) after the agent's copy was taken ({})",
                path.display(),
                t(*real_ctime),
                t(*copied)
            ),
            Conflict::ChangedAfterDelete { path, real_ctime } => write!(
                f,
                "conflict {}: changed in the real folder after the agent's change (real ctime {}); not deleted",
                path.display(),
                t(*real_ctime)
            ),
            Conflict::OriginChanged {
                path,
                origin,
                real_ctime,
                copied,
            } => write!(
                f,
                "conflict {}: its origin {} changed in the real folder (ctime {}) after the agent's copy was taken ({})",
                path.display(),
                origin.display(),
                t(*real_ctime),
                t(*copied)
            ),
        }
    }
}

/// A unit of a commit: applied or skipped as a whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Unit {
    #[serde(with = "relpath")]
    pub path: PathBuf,
    /// The upper entry this unit commits (removed from the upper layer afterwards).
    #[serde(with = "paths::opt")]
    pub upper: Option<PathBuf>,
    /// The real object changed after the agent's copy (skipped unless `force`).
    pub conflict: Option<Conflict>,
    /// Never committed (a redaction mask over different real bytes).
    pub refused: Option<String>,
    pub selected: bool,
}

/// What a commit would do; built without changing anything.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CommitPlan {
    #[serde(with = "relpath")]
    pub scope: PathBuf,
    #[serde(with = "relpath")]
    pub upper: PathBuf,
    pub steps: Vec<Step>,
    pub units: Vec<Unit>,
    pub warnings: Vec<String>,
    /// (lower origin, renamed directory) of every redirected directory.
    #[serde(with = "paths::pairs")]
    pub(super) origins: Vec<(PathBuf, PathBuf)>,
    /// Upper directories whose content replaces the real directory's (opaque, redirected, new).
    #[serde(with = "paths::vec")]
    pub(super) replacing: Vec<PathBuf>,
    /// overlayfs index entries (regular files) seen when planning, with the unit that writes
    /// one through a real name only (see `index_orphans`).
    #[serde(with = "paths::index")]
    pub(super) index: Vec<(PathBuf, Option<usize>)>,
}

/// Lossless serde (see `journal::relpath`) for the path containers of a [`CommitPlan`], which is
/// journaled as JSON before a commit changes anything.
pub(super) mod paths {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct P(#[serde(with = "relpath")] PathBuf);

    pub(crate) mod opt {
        use super::*;
        pub(crate) fn serialize<S: serde::Serializer>(
            v: &Option<PathBuf>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.clone().map(P).serialize(s)
        }
        pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<PathBuf>, D::Error> {
            Ok(Option::<P>::deserialize(d)?.map(|p| p.0))
        }
    }
    pub(crate) mod vec {
        use super::*;
        pub(crate) fn serialize<S: serde::Serializer>(
            v: &[PathBuf],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.iter().cloned().map(P).collect::<Vec<_>>().serialize(s)
        }
        pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<PathBuf>, D::Error> {
            Ok(Vec::<P>::deserialize(d)?.into_iter().map(|p| p.0).collect())
        }
    }
    pub(crate) mod pairs {
        use super::*;
        pub(crate) fn serialize<S: serde::Serializer>(
            v: &[(PathBuf, PathBuf)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.iter()
                .map(|(a, b)| (P(a.clone()), P(b.clone())))
                .collect::<Vec<_>>()
                .serialize(s)
        }
        pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(PathBuf, PathBuf)>, D::Error> {
            Ok(Vec::<(P, P)>::deserialize(d)?
                .into_iter()
                .map(|(a, b)| (a.0, b.0))
                .collect())
        }
    }
    pub(crate) mod index {
        use super::*;
        pub(crate) fn serialize<S: serde::Serializer>(
            v: &[(PathBuf, Option<usize>)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            v.iter()
                .map(|(a, u)| (P(a.clone()), *u))
                .collect::<Vec<_>>()
                .serialize(s)
        }
        pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
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
    pub(crate) fn runs(&self, step: &Step, force: bool) -> bool {
        let u = &self.units[step.unit];
        u.selected && u.refused.is_none() && (force || u.conflict.is_none())
    }
}

/// What [`apply_commit`] did.
#[derive(Debug, Default)]
pub(crate) struct CommitReport {
    pub session: String,
    pub changed: usize,
    pub unchanged: usize,
    pub skipped_conflicts: Vec<Conflict>,
    pub refused: Vec<String>,
    pub warnings: Vec<String>,
}

pub(super) fn under(p: &Path, filter: &Path) -> bool {
    filter.as_os_str().is_empty() || p.starts_with(filter)
}

pub(super) fn xattr(root: BorrowedFd<'_>, rel: &Path, name: &str) -> Option<Vec<u8>> {
    let fd = backing::open_path(root, rel).ok()?;
    backing::getxattr(fd.as_fd(), std::ffi::OsStr::new(name), 0)
        .ok()
        .and_then(|v| {
            backing::getxattr(fd.as_fd(), std::ffi::OsStr::new(name), v.len().max(1)).ok()
        })
}

/// Reads `path` in the upper layer as a [`State`] (content stored when `store` is given),
/// without overlayfs's private xattrs.
pub(super) fn upper_state(
    upper_root: BorrowedFd<'_>,
    rel: &Path,
    store: Option<&Store>,
) -> Result<State> {
    let mut s = State::read(upper_root, rel, store)?;
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
        | State::Special { meta, .. } => meta.xattrs.retain(|(n, _)| !ovl_private(n)),
        State::Absent => {}
    }
    Ok(s)
}

/// Birth time of an upper entry in unix ns (its ctime where btime is not supported).
pub(super) fn born(abs: &Path) -> i128 {
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

pub(super) fn ns((s, n): (i64, i64)) -> i128 {
    s as i128 * 1_000_000_000 + n as i128
}

pub(super) struct Planner<'a> {
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
pub(super) struct IndexEntry {
    abs: PathBuf,
    /// The lower (real) inode number, decoded from the handle when its type is known
    /// (FILEID_INO32_GEN and _PARENT: ext4, xfs, tmpfs...).
    origin_ino: Option<u64>,
}

pub(super) fn index_entries(layout: &Layout) -> HashMap<(u64, u64), IndexEntry> {
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
    fn index_orphans(&mut self, covered: &HashSet<(u64, u64)>) -> Result<HashMap<PathBuf, usize>> {
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
                self.units[u].conflict = Some(Conflict::ChangedAfterCopy {
                    path: p.clone(),
                    real_ctime: ns(st.ctime),
                    copied: since,
                });
            }
            let f = std::fs::File::open(&e.abs).io("read index", &e.abs)?;
            let st = backing::stat_fd(f.as_fd())?;
            let mut meta = crate::journal::meta_of(f.as_fd(), &st)?;
            meta.xattrs.retain(|(n, _)| !ovl_private(n));
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
    fn delete_tree(&mut self, rel: &Path, unit: usize, since: i128) -> Result<()> {
        let Some(st) = self.real_stat(rel) else {
            return Ok(());
        };
        if ns(st.ctime) >= since && self.units[unit].conflict.is_none() {
            self.units[unit].conflict = Some(Conflict::ChangedAfterDelete {
                path: rel.to_path_buf(),
                real_ctime: ns(st.ctime),
            });
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
    fn copy_tree(&mut self, src: &Path, dst: &Path, unit: usize) -> Result<()> {
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
    fn dir(&mut self, rel: &Path, lower: Option<PathBuf>, dir_unit: usize) -> Result<()> {
        let abs = self.upper.join(rel);
        let mut entries: Vec<(std::ffi::OsString, std::fs::Metadata)> = Vec::new();
        for e in std::fs::read_dir(&abs).io("list", &abs)? {
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
                    self.units[u].conflict = Some(Conflict::ChangedAfterCopy {
                        path: p.clone(),
                        real_ctime: ns(st.ctime),
                        copied: since,
                    });
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
                self.units[u].conflict = Some(Conflict::OriginChanged {
                    path: p.clone(),
                    origin: cl.to_path_buf(),
                    real_ctime: ns(st.ctime),
                    copied: since,
                });
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
                // A normal user's overlay keeps them as user.* xattrs (and makes no
                // redirects); only that store's marker lets a user.* xattr count.
                let prefix = if super::userns::marked(&self.upper) {
                    OVL_USER_PREFIX
                } else {
                    OVL_PREFIX
                };
                let opaque = xattr(self.upper_root.as_fd(), &p, &format!("{prefix}opaque"))
                    .as_deref()
                    == Some(b"y");
                let redirect = xattr(self.upper_root.as_fd(), &p, &format!("{prefix}redirect"));
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
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(abs).io("read", abs)?;
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
            Ok(fd) => backing::reopen(fd.as_fd(), libc::O_RDONLY).io("read real", real_rel)?,
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

pub(super) fn unreachable_meta() -> Meta {
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
pub(crate) fn plan_commit(
    store_dir: &Path,
    store: Option<&Store>,
    scope: &Path,
    filters: &[PathBuf],
) -> Result<CommitPlan> {
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

pub(super) fn plan_commit_inner(
    store_dir: &Path,
    store: Option<&Store>,
    scope: &Path,
    filters: &[PathBuf],
) -> Result<CommitPlan> {
    let layout = Layout::in_store(store_dir);
    let root = backing::open_root(scope).io("scope", scope)?;
    let upper_root = backing::open_root(&layout.upper).io("upper layer", &layout.upper)?;
    let mut p = Planner {
        store,
        root,
        upper_root,
        upper: layout.upper.clone(),
        steps: vec![],
        units: vec![],
        warnings: match super::last_mount(store_dir) {
            super::LastMount::Restarted => vec![super::restarted_warning(store_dir)],
            _ => vec![],
        },
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

pub(super) fn meta_same(a: &State, b: &State) -> bool {
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

#[cfg(test)]
mod tests {
    //! The commit planner without a mount: an upper layer laid out by hand the way overlayfs
    //! leaves it (whiteouts are 0:0 character devices, `trusted.overlay.opaque` and
    //! `trusted.overlay.redirect` xattrs; root is needed for both), planned against a real
    //! folder in a temp dir.
    use super::*;
    use std::ffi::OsStr;
    use std::fs;

    struct Env {
        _tmp: tempfile::TempDir,
        scope: PathBuf,
        store: PathBuf,
        upper: PathBuf,
    }

    /// A real folder with `gone.txt`, `keep.txt`, `olddir/{x,sub/y}`, `d/f`, `o/old`.
    fn env() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let scope = tmp.path().join("scope");
        let store = tmp.path().join("store");
        for d in ["olddir/sub", "d", "o"] {
            fs::create_dir_all(scope.join(d)).unwrap();
        }
        for f in [
            "gone.txt",
            "keep.txt",
            "olddir/x",
            "olddir/sub/y",
            "d/f",
            "o/old",
        ] {
            fs::write(scope.join(f), format!("real {f}\n")).unwrap();
        }
        let upper = Layout::in_store(&store).upper;
        fs::create_dir_all(&upper).unwrap();
        // The agent's copies come strictly after the real files' last change: equal times
        // count as a conflict (timestamps have clock-tick granularity).
        std::thread::sleep(std::time::Duration::from_millis(30));
        Env {
            _tmp: tmp,
            scope,
            store,
            upper,
        }
    }

    impl Env {
        fn whiteout(&self, rel: &str) {
            let (parent, name) = split(rel);
            let dir = backing::open_root(&self.upper.join(parent)).unwrap();
            backing::mknod(dir.as_fd(), OsStr::new(name), libc::S_IFCHR | 0o600, 0).unwrap();
        }
        fn dir(&self, rel: &str) {
            fs::create_dir_all(self.upper.join(rel)).unwrap();
        }
        fn file(&self, rel: &str, data: &str) {
            fs::write(self.upper.join(rel), data).unwrap();
        }
        fn xattr(&self, rel: &str, name: &str, value: &[u8]) {
            let root = backing::open_root(&self.upper).unwrap();
            let fd = backing::open_path(root.as_fd(), Path::new(rel)).unwrap();
            backing::setxattr(fd.as_fd(), OsStr::new(name), value, 0).unwrap();
        }
        fn plan(&self, filters: &[&str]) -> CommitPlan {
            let f: Vec<PathBuf> = filters.iter().map(PathBuf::from).collect();
            plan_commit(&self.store, None, &self.scope, &f).unwrap()
        }
    }

    fn split(rel: &str) -> (&str, &str) {
        rel.rsplit_once('/').unwrap_or(("", rel))
    }

    /// `kind path` for every step, in plan order.
    fn steps(plan: &CommitPlan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| {
                let kind = match &s.op {
                    Op::Put {
                        src: Source::Real(r),
                        ..
                    } => format!("put<{}", r.display()),
                    Op::Put { .. } => "put".to_string(),
                    Op::Delete { .. } => "delete".to_string(),
                    Op::Link { to, .. } => format!("link>{}", to.display()),
                    Op::DirTimes { .. } => "times".to_string(),
                };
                format!("{kind} {}", s.path.display())
            })
            .collect()
    }

    fn pos(steps: &[String], s: &str) -> usize {
        steps
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no step {s:?} in {steps:#?}"))
    }

    /// Deletes run children first (rmdir needs an empty directory); a new directory is made
    /// before its entries and gets its times after them (adding entries moves its mtime).
    #[test]
    fn plan_deletes_children_first_and_sets_directory_times_last() {
        let e = env();
        e.whiteout("gone.txt");
        e.whiteout("olddir");
        e.file("keep.txt", "edited\n");
        e.dir("newdir/inner");
        e.file("newdir/inner/n.txt", "new\n");
        let plan = e.plan(&[]);
        let s = steps(&plan);
        assert!(pos(&s, "delete olddir/sub/y") < pos(&s, "delete olddir/sub"));
        assert!(pos(&s, "delete olddir/sub") < pos(&s, "delete olddir"));
        assert!(pos(&s, "delete olddir/x") < pos(&s, "delete olddir"));
        assert!(pos(&s, "put newdir") < pos(&s, "put newdir/inner"));
        assert!(pos(&s, "put newdir/inner") < pos(&s, "put newdir/inner/n.txt"));
        assert!(pos(&s, "put newdir/inner/n.txt") < pos(&s, "times newdir/inner"));
        assert!(pos(&s, "times newdir/inner") < pos(&s, "times newdir"));
        pos(&s, "delete gone.txt");
        pos(&s, "put keep.txt");
        // Only what the upper layer holds: the untouched real entries are not in the plan.
        assert!(
            !s.iter()
                .any(|x| x.ends_with(" d/f") || x.ends_with(" o/old")),
            "{s:#?}"
        );
        assert!(
            plan.units.iter().all(|u| u.conflict.is_none()),
            "{:?}",
            plan.units
        );
        // Every step of a deleted tree belongs to the one unit of its whiteout.
        let u = plan.steps[pos(&s, "delete olddir")].unit;
        assert_eq!(plan.steps[pos(&s, "delete olddir/sub/y")].unit, u);
        assert_eq!(plan.units[u].path, Path::new("olddir"));
    }

    #[test]
    fn a_real_file_changed_after_the_agents_copy_is_a_conflict() {
        let e = env();
        e.file("keep.txt", "agent's\n");
        e.whiteout("gone.txt");
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs::write(e.scope.join("keep.txt"), "someone else's\n").unwrap();
        fs::write(e.scope.join("gone.txt"), "someone else's\n").unwrap();
        let plan = e.plan(&[]);
        for p in ["keep.txt", "gone.txt"] {
            let u = plan.units.iter().find(|u| u.path == Path::new(p)).unwrap();
            assert!(
                u.conflict
                    .as_ref()
                    .is_some_and(|c| c.to_string().contains(p)),
                "{u:?}"
            );
            let step = plan.steps.iter().find(|s| s.path == Path::new(p)).unwrap();
            assert!(!plan.runs(step, false), "skipped without --force");
            assert!(plan.runs(step, true), "applied with --force");
        }
    }

    /// An opaque upper directory replaces the real one's content: real entries it does not
    /// hold are deleted, before its own entries are put.
    #[test]
    fn an_opaque_directory_deletes_the_real_entries_it_hides() {
        let e = env();
        e.dir("o");
        e.xattr("o", "trusted.overlay.opaque", b"y");
        e.file("o/new", "new\n");
        let plan = e.plan(&[]);
        let s = steps(&plan);
        assert!(pos(&s, "put o") < pos(&s, "delete o/old"));
        assert!(pos(&s, "delete o/old") < pos(&s, "put o/new"));
        assert!(pos(&s, "put o/new") < pos(&s, "times o"));
    }

    /// A directory renamed in the overlay (`d` → `e`: a whiteout at `d`, a redirect on `e`)
    /// is committed from its real origin, and the plan says so, so applying keeps `d`'s
    /// content until `e` holds it.
    #[test]
    fn a_renamed_directory_is_copied_from_its_real_origin() {
        let e = env();
        e.whiteout("d");
        e.dir("e");
        e.xattr("e", "trusted.overlay.redirect", b"d");
        let plan = e.plan(&[]);
        let s = steps(&plan);
        assert_eq!(plan.origins, vec![(PathBuf::from("d"), PathBuf::from("e"))]);
        assert!(pos(&s, "delete d/f") < pos(&s, "delete d"));
        assert!(pos(&s, "put e") < pos(&s, "put<d/f e/f"));
        assert!(pos(&s, "put<d/f e/f") < pos(&s, "times e"));
    }

    /// Committing only the origin of a renamed directory (`veilfs commit d`) must not delete
    /// it while its new name stays uncommitted: that would lose the directory's content.
    #[test]
    fn committing_only_a_renamed_directorys_origin_keeps_it() {
        let e = env();
        e.whiteout("d");
        e.dir("e");
        e.xattr("e", "trusted.overlay.redirect", b"d");
        let plan = e.plan(&["d"]);
        let d = plan
            .units
            .iter()
            .find(|u| u.path == Path::new("d"))
            .unwrap();
        assert!(!d.selected, "{:?}", plan.units);
        assert!(
            plan.warnings.iter().any(|w| w.starts_with("kept d:")),
            "{:?}",
            plan.warnings
        );
        let both = e.plan(&["d", "e"]);
        let d = both
            .units
            .iter()
            .find(|u| u.path == Path::new("d"))
            .unwrap();
        assert!(d.selected);
    }

    /// Two upper names of one inode (a hard link made in the overlay) commit as one file and a
    /// link to it, not as two copies.
    #[test]
    fn a_hard_link_made_in_the_overlay_commits_as_a_link() {
        let e = env();
        e.file("h1", "linked\n");
        fs::hard_link(e.upper.join("h1"), e.upper.join("h2")).unwrap();
        let s = steps(&e.plan(&[]));
        assert!(pos(&s, "put h1") < pos(&s, "link>h1 h2"), "{s:#?}");
    }
}
