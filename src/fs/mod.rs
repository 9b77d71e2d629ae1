//! The `fuser::Filesystem` implementation: translate kernel requests into calls on
//! [`backing`](crate::backing) (real folder), [`policy`](crate::policy) (may the agent see or
//! change this?), [`view`] (what bytes may it read) and the write [`guard`](crate::guard).
//!
//! Every handler replies on every path (an unanswered request hangs the agent) and never
//! panics (a panic kills a worker thread). Errors keep their errno.

mod ahead;
mod attr;
mod deferred;
mod dir;
pub(crate) mod divert;
mod exec;
mod handles;
mod inode;
mod invalidate;
pub(crate) mod ioctls;
pub(crate) mod masked_edit;
mod moved;
mod negative;
mod read;
mod served;
mod setid;
pub(crate) mod view;
pub(crate) mod virtual_fs;
mod write;

use attr::attr_of;
use handles::checked_handle;
pub(crate) use invalidate::CacheInvalidator;
pub(crate) use setid::capability_lookups;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use tracing::{debug, info};

use crate::audit;
use crate::backing::{self, Kind, Stat};
use crate::guard::Guard;
use crate::live::LivePolicy;
use crate::policy::EntryKind;
use inode::{Inode, InodeTable, Listing, ROOT};
use view::{View, Viewer};

/// Files at least this large are served by FUSE passthrough when their view is their content.
const PASSTHROUGH_MIN_SIZE: u64 = 1 << 20;
/// The longest a hard-linked file's attributes are cached by the kernel (see `ttl_for`).
const LINKED_TTL: Duration = Duration::from_secs(1);

/// A read that keeps finding the file changed underneath gives up after this many tries.
const READ_ATTEMPTS: usize = 8;

/// Everything the filesystem needs, decided before mounting.
pub(crate) struct FsConfig {
    /// The policy in force, replaceable live ([`crate::reload`]).
    pub policy: Arc<LivePolicy>,
    pub viewer: Arc<Viewer>,
    /// Kernel entry/attribute cache lifetime (`cache.write_ttl_ms` in write modes: the kernel
    /// updates or drops what it keeps after every change made through the mount, and
    /// [`VeilFs::check_still_at`] catches names moved outside).
    pub ttl: Duration,
    /// The write path; `None` means read-only: every mutation answers EROFS.
    pub guard: Option<Arc<Guard>>,
    /// Try FUSE passthrough for files served raw.
    pub passthrough: bool,
    /// Snapshot mode's fallback for files whose pre-image cannot be stored.
    pub divert: Option<Arc<divert::Divert>>,
    /// Overlay mode: overlayfs reserves the 0:0 character device for whiteouts, so one the
    /// agent makes is kept as an empty regular file marked with [`DEV0_XATTR`](crate::overlay::DEV0_XATTR) and shown as
    /// the device (`commit` turns it back into one).
    pub emulate_dev0: bool,
    /// Read-only mounts whose caches the folder watcher keeps fresh: answer the first OPEN
    /// and OPENDIR with ENOSYS, which puts the kernel in FUSE's no-open mode for the whole
    /// connection. Files and listings are then served from the kernel's caches with no
    /// round trip per open or close (the cost of `cat` and `grep -r` over many small files);
    /// READ and READDIR arrive without a handle and decide the view themselves.
    pub no_open: bool,
    /// Where scan verdicts are saved at unmount (and were loaded from at mount).
    pub scan_cache_file: Option<PathBuf>,
    /// Write modes: edits of masked files are merged, never written as masks
    /// ([`masked_edit`]); every masked view served is recorded first.
    pub masked: Option<Arc<masked_edit::MaskedEdits>>,
    /// Rate limits on deletes, renames, overwrites and mass reads ([`crate::breaker`]).
    pub breaker: Option<Arc<crate::breaker::Breaker>>,
    /// Operations held for a person's answer ([`crate::approval`]).
    pub approvals: Option<Arc<crate::approval::Queue>>,
    /// Read-only mounts with redaction: background threads that scan the files a listing
    /// shows before they are read ([`ahead`]); 0 = none.
    pub scan_ahead: usize,
    /// Snapshot mode: small files' writes wait in private copies and reach the real folder
    /// in batches ([`deferred`]).
    pub deferred_apply: bool,
    /// `[write] passthrough_writes`: write handles may use FUSE passthrough.
    pub passthrough_writes: bool,
    /// Entries the view shows with no real file behind them ([`virtual_fs`]).
    pub virtuals: Arc<virtual_fs::VirtualCfg>,
    /// Overlay mode: the upper layer's directory. The overlay is `volatile` (it ignores
    /// fsyncs, see [`crate::overlay`]), so an agent's fsync `syncfs`es the upper layer's
    /// filesystem instead.
    pub upper: Option<File>,
}

/// An open file.
struct Handle {
    ino: u64,
    file: File,
    writable: bool,
    /// `file` was opened for reading too: its post-image is read through it, not a reopen.
    readable: bool,
    wrote: AtomicBool,
    /// A close(2) of one of its descriptors was seen (FLUSH): its RELEASE, which the kernel
    /// sends asynchronously, may be on its way.
    flushed: AtomicBool,
    /// How the kernel does its I/O ([`handles::Io`]).
    io: handles::Io,
    /// A write handle on a scratch copy of a masked view ([`masked_edit`]).
    masked: Option<masked_edit::MaskedEdit>,
    /// A change through a masked-edit handle must clear the real file's set-id bits when it is
    /// merged ([`setid`]).
    clear_setid: AtomicBool,
}

/// An open directory: a snapshot of its visible entries, so offsets are stable while read.
struct DirHandle {
    ino: u64,
    /// Listed on the first readdir, not at opendir: with a kept kernel cache there may be none.
    entries: std::sync::OnceLock<Arc<Listing>>,
}

pub(crate) struct VeilFs {
    cfg: FsConfig,
    inodes: Arc<InodeTable>,
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// The longest TTL (ms) replies may carry from now on: lowered to the unwatched TTL when
    /// the folder watcher can no longer see every change (`CacheInvalidator::watch_lost`).
    ttl_cap_ms: Arc<AtomicU64>,
    /// The absent names the kernel was told to keep ([`negative`]).
    absent: Arc<negative::Absent>,
    /// Renames outside the mount the folder watcher reported (read-only mounts, [`moved`]).
    outside_moves: Arc<AtomicU64>,
    handles: RwLock<std::collections::HashMap<u64, Arc<Handle>>>,
    dirs: RwLock<std::collections::HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    passthrough_ok: AtomicBool,
    /// The I/O modes of open inodes: passthrough backing ids, shared by all passthrough
    /// handles of the inode, and page-cache opens, with their counts (a side table: few
    /// inodes are open at once, every inode would pay for a field).
    io_modes: Mutex<std::collections::HashMap<u64, handles::InodeIo>>,
    /// The scanned copies reads are served from (see [`served`]).
    copies: Arc<served::Copies>,
    /// Scan-ahead workers, when `scan_ahead` asks for them.
    ahead: Option<ahead::Ahead>,
    /// Directory listings that count a hard-linked file's visible names (see [`attr`]).
    link_dirs: attr::LinkDirs,
    /// Hidden-subdirectory counts of directories, by version (see [`attr`]).
    hidden_dirs: attr::HiddenDirs,
    /// Writes waiting in private copies (`[write] apply = "deferred"`).
    deferred: Option<deferred::Deferred>,
    /// Handles opened to execute a file ([`exec`]).
    executing: exec::Executing,
    /// Virtual inodes and their open handles ([`virtual_fs`]).
    vinodes: virtual_fs::VirtualTable,
    vhandles: RwLock<std::collections::HashMap<u64, Arc<virtual_fs::VHandle>>>,
    /// The scope root's stat at mount: what virtual entries are owned and dated like.
    root_stat: Stat,
    /// Reads of files moved outside the mount while open, already audited ([`moved`]).
    moved_reads: moved::MovedReads,
}

/// Bytes of scanned copies kept for reads (see [`served`]).
const COPIES_BUDGET: usize = 32 << 20;

/// Test-only (`VEILFS_TEST_RELEASE_DELAY_MS`): every RELEASE is handled this much later, as
/// on a loaded machine, where the kernel's asynchronous RELEASE of a closed file can arrive
/// after the agent's next request about it.
fn test_release_delay() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let d = DELAY.get_or_init(|| {
        std::env::var("VEILFS_TEST_RELEASE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(d) = d {
        std::thread::sleep(*d);
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn systime(t: (i64, i64)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0 as u64, t.1 as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-t.0) as u64) + Duration::from_nanos(t.1 as u64)
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

pub(crate) fn entry_kind(k: Kind) -> EntryKind {
    match k {
        Kind::File => EntryKind::File,
        Kind::Dir => EntryKind::Dir,
        Kind::Symlink => EntryKind::Symlink,
        _ => EntryKind::Special,
    }
}

impl VeilFs {
    pub(crate) fn new(
        root_fd: OwnedFd,
        cfg: FsConfig,
        fd_budget: usize,
    ) -> std::io::Result<VeilFs> {
        let st = backing::stat_fd(root_fd.as_fd())?;
        let copies = Arc::new(served::Copies::new(COPIES_BUDGET));
        let ahead = (cfg.scan_ahead > 0 && cfg.guard.is_none() && cfg.viewer.redaction_enabled())
            .then(|| ahead::Ahead::start(cfg.scan_ahead, cfg.viewer.clone(), copies.clone()));
        let deferred = (cfg.deferred_apply && cfg.guard.is_some() && cfg.divert.is_some())
            .then(deferred::Deferred::default);
        Ok(VeilFs {
            deferred,
            cfg,
            inodes: Arc::new(InodeTable::new(root_fd, (st.dev, st.ino), fd_budget)),
            notifier: Arc::new(std::sync::OnceLock::new()),
            ttl_cap_ms: Arc::new(AtomicU64::new(u64::MAX)),
            absent: Default::default(),
            outside_moves: Default::default(),
            handles: RwLock::new(Default::default()),
            dirs: RwLock::new(Default::default()),
            next_fh: AtomicU64::new(1),
            passthrough_ok: AtomicBool::new(false),
            io_modes: Mutex::new(Default::default()),
            copies,
            ahead,
            link_dirs: Default::default(),
            hidden_dirs: Default::default(),
            executing: Default::default(),
            vinodes: Default::default(),
            vhandles: Default::default(),
            root_stat: st,
            moved_reads: Default::default(),
        })
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// The inode's fd (re-opened if it was evicted under the fd budget).
    fn fd(&self, inode: &Arc<Inode>) -> Result<Arc<OwnedFd>, Errno> {
        self.inodes.fd(inode).map_err(Errno::from_i32)
    }

    /// The inode's current path; in write modes checked to still lead to its object (see
    /// [`Self::check_still_at`]).
    fn rel(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.rel_checked(ino).map(|(rel, _)| rel)
    }

    /// [`Self::rel`], with the stat of the object the check found at the path (None where no
    /// check is made): the request's later steps use it instead of stating the object again.
    fn rel_checked(&self, ino: u64) -> Result<(PathBuf, Option<Stat>), Errno> {
        let rel = self.inodes.rel_path(ino).ok_or(self.no_path_errno())?;
        let st = self.check_still_at(ino, &rel)?;
        Ok((rel, st))
    }

    /// An inode with no path in the table: read-only mounts answer ENOENT; write modes ESTALE,
    /// since the kernel may reach it through a name it keeps (for `write_ttl_ms`) that the
    /// table lost, e.g. the other name of a hard link whose last-seen name was removed or
    /// renamed over: the kernel then looks the name up again, which gives the inode its path.
    fn no_path_errno(&self) -> Errno {
        if self.cfg.guard.is_some() {
            Errno::ESTALE
        } else {
            Errno::ENOENT
        }
    }

    /// Write modes: the path the inode table holds for `ino` must still lead to its object,
    /// or ESTALE. Policy and snapshots are decided by path, and the table learns of renames
    /// made outside the mount only at the next lookup: with the kernel keeping entries for
    /// `write_ttl_ms` (or a process holding a directory as its cwd), a write through a name
    /// an outside writer moved away would be judged, and captured, at the old path while it
    /// changes the object at the new one. ESTALE makes the kernel walk the path again with
    /// every entry revalidated (a path-based syscall retries once with LOOKUP_REVAL), so the
    /// agent sees what a native filesystem shows after the rename. Read-only mounts keep the
    /// watcher for this instead. Reads through a descriptor the agent already holds are not
    /// refused for a failed check: see [`moved`].
    ///
    /// Returns the stat the check took of the object at `rel` (the inode's object, at the
    /// moment of the check), or None where nothing was checked (read-only, the root, a
    /// diverted file).
    fn check_still_at(&self, ino: u64, rel: &Path) -> Result<Option<Stat>, Errno> {
        if self.cfg.guard.is_none() || ino == ROOT {
            return Ok(None);
        }
        let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
        if inode.is_diverted() {
            // Served from its private copy; the real file is never touched through it.
            return Ok(None);
        }
        let root = self.inodes.get(ROOT).ok_or(Errno::EIO)?;
        let rfd = self.fd(&root)?;
        let found = backing::open_path(rfd.as_fd(), rel)
            .and_then(|fd| backing::stat_fd(fd.as_fd()).map(|st| (fd, st)));
        match found {
            Ok((fd, st)) if (st.dev, st.ino) == inode.key => {
                // The object itself, just found at its path: the inode's fd if it has none
                // (an inode from a directory listing is opened at its first use).
                self.inodes.offer(&inode, fd);
                Ok(Some(st))
            }
            _ => {
                debug!(path = %rel.display(), "moved outside the mount: ESTALE");
                Err(Errno::ESTALE)
            }
        }
    }

    /// Overlay mode: makes the upper layer durable (a `volatile` overlay ignores fsyncs).
    fn sync_upper(&self) -> std::io::Result<()> {
        match &self.cfg.upper {
            Some(u) => rustix::fs::syncfs(u).map_err(std::io::Error::from),
            None => Ok(()),
        }
    }

    fn ttl(&self) -> Duration {
        self.cfg.ttl.min(Duration::from_millis(
            self.ttl_cap_ms.load(Ordering::Relaxed),
        ))
    }

    /// The TTL of an entry or attributes with stat `st`. A file with several links is kept at
    /// most [`LINKED_TTL`]: the watcher cannot tell its inode when another of its names is
    /// removed outside (that name no longer leads to it), so its link count would stay stale
    /// for the whole watched TTL.
    fn ttl_for(&self, st: &Stat) -> Duration {
        if st.kind() == Kind::File && st.nlink > 1 {
            self.ttl().min(LINKED_TTL)
        } else {
            self.ttl()
        }
    }

    /// Policy verdict for `name` (stat `st`, already opened as `fd`) inside visible dir `rel_parent`.
    fn visible(&self, rel: &Path, st: &Stat, fd: Option<&OwnedFd>) -> Result<(), Errno> {
        if let Some(name) = rel.file_name()
            && self.cfg.viewer.name_holds_secret(name)
        {
            debug!(path = "<a name holding a secret>", "hidden");
            return Err(Errno::ENOENT);
        }
        let target = if st.kind() == Kind::Symlink && self.cfg.policy.needs_symlink_targets() {
            match fd {
                Some(fd) => backing::readlink_fd(fd.as_fd()).ok(),
                None => None,
            }
        } else {
            None
        };
        let target_path = target.as_ref().map(Path::new);
        match self
            .cfg
            .policy
            .visibility(rel, entry_kind(st.kind()), st.size, target_path)
        {
            Ok(()) => Ok(()),
            Err(why) => {
                debug!(path = %rel.display(), reason = %why, "hidden");
                Err(Errno::ENOENT)
            }
        }
    }

    /// Opens `name` beneath the directory `pfd` (whose child path is `rel`) and checks that
    /// the agent may see it: a hidden entry, like a mount point inside the scope, is ENOENT.
    fn visible_child(
        &self,
        pfd: &OwnedFd,
        rel: &Path,
        name: &OsStr,
    ) -> Result<(OwnedFd, Stat), Errno> {
        let fd = backing::lookup(pfd.as_fd(), name).map_err(|e| match e.raw_os_error() {
            Some(libc::EXDEV) => Errno::ENOENT,
            _ => errno_of(&e),
        })?;
        self.visible_held(fd, rel)
    }

    /// [`Self::visible_child`] of an entry already opened beneath its directory (`fd`).
    fn visible_held(&self, fd: OwnedFd, rel: &Path) -> Result<(OwnedFd, Stat), Errno> {
        let st = self.present(
            fd.as_fd(),
            backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?,
        );
        self.visible(rel, &st, Some(&fd))?;
        Ok((fd, st))
    }

    /// The open directory `fh`, checked to belong to `ino`.
    fn dir_handle(&self, fh: FileHandle, ino: INodeNo) -> Result<Arc<DirHandle>, Errno> {
        checked_handle(&self.dirs, fh, ino, |d| d.ino)
    }

    /// Answers a LOOKUP of a name that is absent from the view: an entry with node id 0,
    /// which the kernel keeps for the TTL like any other ([`negative`]), or a plain ENOENT
    /// when no TTL applies or too many absences are out.
    /// `generation`: the absences' generation read before the LOOKUP decided.
    fn reply_absent(&self, generation: u64, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let ttl = self.ttl();
        let now = std::time::Instant::now();
        if ttl.is_zero() || !self.absent.remember(generation, parent, name, ttl, now) {
            return reply.error(Errno::ENOENT);
        }
        reply.entry(&ttl, &attr_of(0, &self.root_stat), Generation(0))
    }

    /// Resolves `name` in `parent`, applies policy and counts a lookup.
    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<(Arc<Inode>, Stat), Errno> {
        backing::check_name(name).map_err(Errno::from_i32)?;
        let p = self.inodes.get(parent).ok_or(Errno::ESTALE)?;
        if p.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let rel = self.rel(parent)?.join(name);
        self.lookup_child(&p, name, rel)
    }

    /// [`Self::do_lookup`] of `name` in directory `p` at `rel`, a path the caller checked in
    /// this request (a write that just made the name: checking it again costs an `openat2`
    /// and an `fstat` and adds nothing).
    fn lookup_child(
        &self,
        p: &Arc<Inode>,
        name: &OsStr,
        rel: PathBuf,
    ) -> Result<(Arc<Inode>, Stat), Errno> {
        self.lookup_child_held(p, name, rel, None)
    }

    /// [`Self::lookup_child`]; `held`: `name` already opened beneath `p`'s fd in this request
    /// (a new directory the write path opened to give it its owner).
    fn lookup_child_held(
        &self,
        p: &Arc<Inode>,
        name: &OsStr,
        rel: PathBuf,
        held: Option<OwnedFd>,
    ) -> Result<(Arc<Inode>, Stat), Errno> {
        let parent = p.ino;
        let (fd, st) = match held {
            Some(fd) => self.visible_held(fd, &rel)?,
            None => self.visible_child(&*self.fd(p)?, &rel, name)?,
        };
        let st = self.shown_nlink(&rel, fd.as_fd(), st);
        let inode = self
            .inodes
            .lookup_insert((st.dev, st.ino), st.kind(), Some(fd), parent, name);
        if let Some(d) = &self.cfg.divert
            && st.kind() == Kind::File
            && d.contains(&rel)
        {
            // Served from its diverted copy (attributes included).
            if !inode.is_diverted() {
                let copy = d.open_copy(&rel).map_err(|e| errno_of(&e))?;
                self.inodes.divert(&inode, copy);
            }
            let fd = self.fd(&inode)?;
            let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
            return Ok((inode, st));
        }
        Ok((inode, st))
    }
}

impl Filesystem for VeilFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_EXPORT_SUPPORT
            // O_TRUNC arrives with OPEN (the write path applies it) instead of as a separate
            // SETATTR without a handle: a masked file's truncate-and-write then truncates its
            // scratch view, never the real file (masked_edit.rs).
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            // The kernel asks for `security.capability` once per inode instead of before every
            // write (a round trip each), and veilfs clears set-id bits itself (setid.rs).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if let Err(missing) = config.add_capabilities(wanted) {
            info!("kernel did not grant: {missing:?}");
        }
        // No-open mode keeps every page cache across opens: let a changed mtime or size seen
        // in fresh attributes drop it too, in case the watcher missed a change.
        if self.cfg.no_open
            && config
                .add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA)
                .is_err()
        {
            info!("kernel did not grant FUSE_AUTO_INVAL_DATA");
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        if self.cfg.passthrough {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => match config.set_max_stack_depth(self.backing_stack_depth()) {
                    Ok(_) => {
                        self.passthrough_ok.store(true, Ordering::Relaxed);
                        info!("FUSE passthrough enabled for unredacted files");
                    }
                    Err(e) => {
                        info!("passthrough stack depth refused ({e}); serving reads in userspace")
                    }
                },
                Err(_) => info!("kernel has no FUSE passthrough; serving reads in userspace"),
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.deferred_flush_all();
        if let Some(g) = &self.cfg.guard {
            g.end();
        }
        if let Some(p) = &self.cfg.scan_cache_file {
            self.cfg.viewer.save_scans(p);
            if let Some(h) = self.cfg.viewer.history() {
                h.save(&p.with_file_name(crate::history::VERDICTS_FILE));
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.virtual_inode(parent.0).is_some() {
            // A virtual directory holds only virtual entries.
            return match self.lookup_virtual(parent.0, name) {
                Some((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                None => reply.error(Errno::ENOENT),
            };
        }
        let generation = self.absent.generation();
        match self.do_lookup(parent.0, name) {
            Ok((inode, st)) => reply.entry(
                &self.ttl_for(&st),
                &self.attr(inode.ino, &st),
                Generation(0),
            ),
            // No visible real entry: a virtual one may stand there.
            Err(e) if e == Errno::ENOENT && self.places_virtual() => {
                match self.lookup_virtual(parent.0, name) {
                    Some((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                    None => reply.error(e),
                }
            }
            Err(e) if e == Errno::ENOENT => self.reply_absent(generation, parent.0, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.virtual_inode(ino.0).is_some() {
            return self.forget_virtual(ino.0, nlookup);
        }
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(v) = self.virtual_inode(ino.0) {
            return match self.getattr_virtual(&v) {
                Ok((attr, ttl)) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(e),
            };
        }
        let st = match fh.and_then(|fh| self.handle(fh, ino).ok()) {
            Some(h) if h.masked.is_some() => match self.masked_edit_stat(&h) {
                Ok(Some(st)) => Ok(st),
                Ok(None) => backing::stat_fd(h.file.as_fd()),
                Err(e) => return reply.error(e),
            },
            Some(h) => backing::stat_fd(h.file.as_fd()).map(|st| self.present(h.file.as_fd(), st)),
            None => match self.inode(ino) {
                Ok(i) => match self.fd(&i) {
                    Ok(fd) => backing::stat_fd(fd.as_fd()).map(|st| {
                        let st = self.present(fd.as_fd(), st);
                        // Only a count: not worth a check that the path still leads here.
                        match self.inodes.rel_path(ino.0) {
                            Some(rel) => self.shown_nlink(&rel, fd.as_fd(), st),
                            None => st,
                        }
                    }),
                    Err(e) => return reply.error(e),
                },
                Err(e) => return reply.error(e),
            },
        };
        match st {
            Ok(st) => reply.attr(&self.ttl_for(&st), &self.attr(ino.0, &st)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        if self.virtual_inode(ino.0).is_some() {
            return reply.error(Errno::EINVAL);
        }
        match self.inode(ino) {
            Ok(i) => match self
                .fd(&i)
                .and_then(|fd| backing::readlink_fd(fd.as_fd()).map_err(|e| errno_of(&e)))
            {
                Ok(t) => {
                    let raw = std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str());
                    // A target is metadata the agent reads: masked like content, length kept.
                    match self.cfg.viewer.mask_metadata(raw) {
                        view::MetaView::Masked(masked) => reply.data(&masked),
                        view::MetaView::Clean | view::MetaView::Binary => reply.data(raw),
                    }
                }
                Err(e) => reply.error(e),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _actor = audit::Actor::of(req).enter();
        if self.cfg.no_open {
            // The kernel then opens every file without asking (and never sends RELEASE).
            return reply.error(Errno::ENOSYS);
        }
        if let Some(v) = self.virtual_inode(ino.0) {
            // The page cache is dropped at each open (no FOPEN_KEEP_CACHE): every open of a
            // decoy reaches veilfs and is audited.
            return match self.open_virtual(&v, flags.0) {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            };
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if inode.kind != Kind::File {
            return reply.error(if inode.kind == Kind::Dir {
                Errno::EISDIR
            } else {
                Errno::EACCES
            });
        }
        let f = flags.0;
        let wants_write = (f & libc::O_ACCMODE) != libc::O_RDONLY || f & libc::O_TRUNC != 0;
        if let Err(e) = self.check_not_executing(&inode, f, true) {
            return reply.error(e);
        }
        // A masked file is edited through a scratch copy of its view (masked_edit.rs);
        // direct I/O keeps the kernel's page cache of the real file out of it.
        if wants_write && let Err(e) = self.approve_write_open(&inode, f) {
            return reply.error(e);
        }
        let wrel = if wants_write {
            match self.write_open_path(&inode) {
                Ok(r) => r,
                Err(e) => return reply.error(e),
            }
        } else {
            None
        };
        if wants_write {
            let who = setid::Changer::Process(req.pid());
            match self.open_masked_edit(&inode, wrel.as_ref().map(|w| (w.0.as_path(), w.1)), f, who)
            {
                Ok(Some(fh)) => {
                    return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
                }
                Ok(None) => {}
                Err(e) => return reply.error(e),
            }
        }
        let (deferred, pre) = if wants_write {
            match self.prepare_write_open(req, &inode, wrel.as_ref(), f) {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            }
        } else {
            (false, None)
        };
        // O_CREAT/O_EXCL are the kernel's business; O_TRUNC was applied by the write path.
        let open_flags = f & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
        // The stat of the write path's check still describes the file when nothing changed it
        // since (no truncate, no divert, no deferred apply, which may truncate).
        let known = wrel
            .as_ref()
            .and_then(|w| w.1)
            .filter(|_| !deferred && f & libc::O_TRUNC == 0 && !inode.is_diverted());
        if let Err((e, reply)) = self.open_file(&inode, open_flags, reply, wants_write, known, pre)
        {
            if deferred {
                self.deferred_closed(inode.ino);
            }
            reply.error(e);
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let _actor = audit::Actor::of(req).enter();
        let r = if let Some(h) = self.virtual_handle(fh) {
            if h.ino == ino.0 {
                Ok(read::Served::Own(virtual_fs::slice(&h.bytes, offset, size)))
            } else {
                Err(Errno::EBADF)
            }
        } else if fh.0 == 0
            && self.cfg.no_open
            && let Some(v) = self.virtual_inode(ino.0)
        {
            self.read_virtual_unopened(&v, offset, size)
                .map(read::Served::Own)
        } else if fh.0 == 0 && self.cfg.no_open {
            self.read_unopened(ino, offset, size)
        } else {
            self.handle(fh, ino)
                .and_then(|h| self.read_view(h.ino, &h.file, offset, size, h.writable))
        };
        match r {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        let h = self.handle(fh, ino);
        if let Ok(h) = &h {
            h.flushed.store(true, Ordering::Relaxed);
        }
        // Nothing to do at close(2) for most files (writes go straight to the real file;
        // post-images are taken at release). Read-only mounts answer ENOSYS, which makes the
        // kernel stop sending FLUSH: one round trip less per closed file. Write modes merge a
        // masked edit here, so close(2) returns only once the real file holds it (or fails).
        if self.cfg.masked.is_none() {
            return reply.error(Errno::ENOSYS);
        }
        match h {
            Ok(h) if h.masked.is_some() => match self
                .finish_masked_edit(&h)
                .and_then(|()| self.sync_upper().map_err(|e| errno_of(&e)))
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            _ => reply.ok(),
        }
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        test_release_delay();
        if self.release_virtual(fh) {
            return reply.ok();
        }
        self.executing.released(fh.0);
        if let Some(h) = self.release_handle(fh.0) {
            if h.masked.is_some() {
                if let Err(e) = self.finish_masked_edit(&h) {
                    debug!("masked edit at release: {e:?}");
                }
            } else if h.wrote.load(Ordering::Relaxed) {
                if h.io == handles::Io::Passthrough {
                    // Its writes bypassed `do_write`, which records each as veilfs's own.
                    self.note_own_change_of(h.file.as_fd());
                }
                self.after_write_release(&h);
            }
            // Answered first: the agent's close never waits for a batch.
            reply.ok();
            if h.writable {
                self.deferred_closed(h.ino);
            }
            return;
        }
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if fh.0 == 0 && self.cfg.no_open {
            // Read-only: there is nothing of ours to flush.
            return reply.ok();
        }
        if self.virtual_handle(fh).is_some() {
            return reply.ok();
        }
        match self.handle(fh, ino) {
            Ok(h) if h.masked.is_some() => match self.finish_masked_edit(&h) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            },
            Ok(h) if self.deferred.is_some() => match self.deferred_fsync(h.ino) {
                Ok(true) => reply.ok(),
                Ok(false) => match if datasync {
                    h.file.sync_data()
                } else {
                    h.file.sync_all()
                } {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno_of(&e)),
                },
                Err(e) => reply.error(e),
            },
            Ok(h) => {
                let r = if datasync {
                    h.file.sync_data()
                } else {
                    h.file.sync_all()
                };
                match r.and_then(|()| self.sync_upper()) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno_of(&e)),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.cfg.no_open {
            // As for files: the kernel keeps every listing in its cache (FOPEN_CACHE_DIR |
            // FOPEN_KEEP_CACHE) until the watcher invalidates it or the mtime changes.
            return reply.error(Errno::ENOSYS);
        }
        if let Some(v) = self.virtual_inode(ino.0) {
            if v.kind != crate::virtual_entries::VirtualKind::Dir {
                return reply.error(Errno::ENOTDIR);
            }
            let fh = self.new_fh();
            self.dirs.write().unwrap_or_else(|e| e.into_inner()).insert(
                fh,
                Arc::new(DirHandle {
                    ino: ino.0,
                    entries: std::sync::OnceLock::new(),
                }),
            );
            return reply.opened(FileHandle(fh), FopenFlags::empty());
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if inode.kind != Kind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        // The kernel may keep its cached listing while the directory is unchanged (same mtime
        // and ctime as at the last opendir) and the entries and attributes its last listing
        // gave are still within their TTL; after that a fresh READDIRPLUS refreshes all children
        // in one request, which beats one LOOKUP per child (`du`, `ls -l`). Read-only mounts only.
        let unchanged = self.cfg.guard.is_none()
            && self
                .fd(&inode)
                .ok()
                .and_then(|fd| backing::stat_fd(fd.as_fd()).ok())
                .map(|st| self.note_open(&inode, &st, false))
                .unwrap_or(false);
        let fresh = inode.listed_ago().is_some_and(|t| t < self.ttl());
        let keep = unchanged && fresh;
        let fh = self.new_fh();
        self.dirs.write().unwrap_or_else(|e| e.into_inner()).insert(
            fh,
            Arc::new(DirHandle {
                ino: ino.0,
                entries: std::sync::OnceLock::new(),
            }),
        );
        let flags = match (self.cfg.guard.is_none(), keep) {
            (true, true) => FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            (true, false) => FopenFlags::FOPEN_CACHE_DIR,
            (false, _) => FopenFlags::empty(),
        };
        reply.opened(FileHandle(fh), flags);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let parent = match self.virtual_inode(ino.0) {
            Some(v) => v.parent,
            None => self
                .inodes
                .get(ino.0)
                .map(|i| i.location().parent)
                .unwrap_or(ROOT),
        };
        // Offsets: 1 = ".", 2 = "..", 3.. = entries[off-3].
        let mut off = offset;
        if off == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        let entries = match self.dir_entries(fh, ino, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let mut full = false;
        for (i, (name, st)) in entries.iter().enumerate().skip((off - 2) as usize) {
            // d_ino is informational for readdir; use ours when known.
            let dino = self
                .inodes
                .ino_of_key((st.dev, st.ino))
                .unwrap_or(u64::MAX >> 1);
            if reply.add(INodeNo(dino), i as u64 + 3, file_type(st.kind()), name) {
                full = true;
                break;
            }
        }
        self.keep_partial_listing(fh, ino, full, off, entries);
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl();
        let mut off = offset;
        if off < 2 {
            // The kernel does not count lookups for "." and "..".
            // (`off` is 0 or 1 here; both entries are sent from where the reader left off.)
            if let Some(v) = self.virtual_inode(ino.0) {
                let Ok((attr, _)) = self.getattr_virtual(&v) else {
                    return reply.error(Errno::ESTALE);
                };
                if off == 0 && reply.add(ino, 1, ".", &ttl, &attr, Generation(0)) {
                    return reply.ok();
                }
                let pattr = match self.virtual_inode(v.parent) {
                    Some(p) => self.getattr_virtual(&p).ok().map(|(a, _)| a),
                    None => self
                        .inodes
                        .get(v.parent)
                        .and_then(|p| self.fd(&p).ok())
                        .and_then(|fd| backing::stat_fd(fd.as_fd()).ok())
                        .map(|s| attr_of(v.parent, &s)),
                }
                .unwrap_or(attr);
                if reply.add(INodeNo(v.parent), 2, "..", &ttl, &pattr, Generation(0)) {
                    return reply.ok();
                }
                off = 2;
            }
        }
        if off < 2 {
            let Ok(me) = self.inode(ino) else {
                return reply.error(Errno::ESTALE);
            };
            let Ok(st) = self
                .fd(&me)
                .and_then(|fd| backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e)))
            else {
                return reply.error(Errno::ESTALE);
            };
            let attr = self.attr(ino.0, &st);
            if off == 0 && reply.add(ino, 1, ".", &ttl, &attr, Generation(0)) {
                return reply.ok();
            }
            let parent = me.location().parent;
            let pattr = self
                .inodes
                .get(parent)
                .and_then(|p| self.fd(&p).ok())
                .and_then(|fd| backing::stat_fd(fd.as_fd()).ok())
                .map(|s| attr_of(parent, &s))
                .unwrap_or(attr);
            if reply.add(INodeNo(parent), 2, "..", &ttl, &pattr, Generation(0)) {
                return reply.ok();
            }
            off = 2;
        }
        let entries = match self.dir_entries(fh, ino, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let mut full = false;
        for (i, (name, st)) in entries.iter().enumerate().skip((off - 2) as usize) {
            if st.dev == virtual_fs::VIRTUAL_DEV {
                // Counted as a lookup; one no longer placed is skipped.
                let Some((attr, vttl)) = self.lookup_virtual(ino.0, name) else {
                    continue;
                };
                let vino = attr.ino.0;
                if reply.add(
                    INodeNo(vino),
                    i as u64 + 3,
                    name,
                    &ttl.min(vttl),
                    &attr,
                    Generation(0),
                ) {
                    self.forget_virtual(vino, 1);
                    full = true;
                    break;
                }
                continue;
            }
            // The stat and the policy verdict were taken at opendir; the inode opens its fd
            // beneath this directory on first use (checking it is still the same object).
            let inode = self
                .inodes
                .lookup_insert((st.dev, st.ino), st.kind(), None, ino.0, name);
            let attr = self.attr(inode.ino, st);
            if reply.add(
                INodeNo(inode.ino),
                i as u64 + 3,
                name,
                &ttl.min(self.ttl_for(st)),
                &attr,
                Generation(0),
            ) {
                // Not sent: undo the lookup count we took for it.
                self.inodes.forget(inode.ino, 1);
                full = true;
                break;
            }
        }
        self.keep_partial_listing(fh, ino, full, off, entries);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    /// An agent fsyncs a directory to make the names it created, renamed or removed there
    /// durable (git, package managers and databases do): the journal's records come first
    /// (removals parked aside are then settled), then the real directory.
    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        let Some(g) = self.cfg.guard.as_ref() else {
            // Read-only: nothing of the agent's to make durable.
            return reply.ok();
        };
        if self.virtual_inode(ino.0).is_some() {
            return reply.ok();
        }
        let r = g
            .sync()
            .map_err(|e| Errno::from_i32(e.errno()))
            .and_then(|()| self.inode(ino))
            .and_then(|i| self.fd(&i))
            .and_then(|fd| {
                let d =
                    backing::reopen_as(fd.as_fd(), Kind::Dir, libc::O_RDONLY | libc::O_DIRECTORY)
                        .map_err(|e| errno_of(&e))?;
                if datasync {
                    d.sync_data()
                } else {
                    d.sync_all()
                }
                .and_then(|()| self.sync_upper())
                .map_err(|e| errno_of(&e))
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let Some(root) = self.inodes.get(ROOT) else {
            return reply.error(Errno::EIO);
        };
        let Ok(fd) = self.fd(&root) else {
            return reply.error(Errno::EIO);
        };
        match backing::statfs(fd.as_fd()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        setid::note_lookup(name);
        if self.virtual_inode(ino.0).is_some() {
            return reply.error(Errno::ENODATA);
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let fd = match self.fd(&inode) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        // The whole value is read and masked even for a size probe, so both answers agree.
        let v = match backing::getxattr_value_as(fd.as_fd(), inode.kind, name) {
            Ok(v) => v,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let v = match self.cfg.viewer.mask_metadata(&v) {
            view::MetaView::Masked(masked) => masked,
            view::MetaView::Clean => v,
            // A binary value in the user namespace could hold anything: refused. System and
            // security attributes (ACLs, capabilities, labels) are binary by design.
            view::MetaView::Binary if name.as_encoded_bytes().starts_with(b"user.") => {
                return reply.error(Errno::EACCES);
            }
            view::MetaView::Binary => v,
        };
        if size == 0 {
            reply.size(v.len() as u32)
        } else if (size as usize) < v.len() {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&v)
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.virtual_inode(ino.0).is_some() {
            return if size == 0 {
                reply.size(0)
            } else {
                reply.data(&[])
            };
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let fd = match self.fd(&inode) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match backing::listxattr_as(fd.as_fd(), inode.kind, size as usize) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if self.virtual_inode(ino.0).is_some() {
            return match (mask.contains(AccessFlags::W_OK), self.cfg.guard.is_none()) {
                (false, _) => reply.ok(),
                (true, true) => reply.error(Errno::EROFS),
                (true, false) => reply.error(Errno::EACCES),
            };
        }
        if let Err(e) = self.inode(ino) {
            return reply.error(e);
        }
        if mask.contains(AccessFlags::W_OK) && self.cfg.guard.is_none() {
            return reply.error(Errno::EROFS);
        }
        reply.ok();
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        if let Some(h) = self.virtual_handle(fh) {
            let size = h.bytes.len() as i64;
            return match whence {
                libc::SEEK_SET if offset >= 0 => reply.offset(offset),
                libc::SEEK_END => reply.offset(size.saturating_add(offset)),
                libc::SEEK_DATA if offset >= 0 && offset < size => reply.offset(offset),
                libc::SEEK_HOLE if offset >= 0 && offset < size => reply.offset(size),
                libc::SEEK_DATA | libc::SEEK_HOLE => reply.error(Errno::ENXIO),
                _ => reply.error(Errno::EINVAL),
            };
        }
        let reopened;
        let handle;
        let file: &File = if fh.0 == 0 && self.cfg.no_open {
            reopened = match self.inode(ino).and_then(|i| self.fd(&i)).and_then(|fd| {
                backing::reopen_as(fd.as_fd(), Kind::File, libc::O_RDONLY).map_err(|e| errno_of(&e))
            }) {
                Ok(f) => f,
                Err(e) => return reply.error(e),
            };
            &reopened
        } else {
            handle = match self.handle(fh, ino) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            &handle.file
        };
        // A synthesized view is all data, up to its own size (not the real file's: `cp` would
        // otherwise copy a hole, or stop short).
        if let Ok(st) = backing::stat_fd(file.as_fd())
            && let Some(size) = self.synthesized_size(ino.0, &st)
            && matches!(whence, libc::SEEK_DATA | libc::SEEK_HOLE | libc::SEEK_END)
        {
            let off = offset.max(0) as u64;
            return match whence {
                libc::SEEK_END => reply.offset((size as i64).saturating_add(offset)),
                _ if off >= size => reply.error(Errno::ENXIO),
                libc::SEEK_DATA => reply.offset(offset),
                _ => reply.offset(size as i64),
            };
        }
        // SEEK_DATA/SEEK_HOLE on the real file (sparse-aware cp/tar).
        // A negative offset reaches the kernel as it came (cast back), which answers EINVAL.
        let pos = match whence {
            libc::SEEK_SET => rustix::fs::SeekFrom::Start(offset as u64),
            libc::SEEK_CUR => rustix::fs::SeekFrom::Current(offset),
            libc::SEEK_END => rustix::fs::SeekFrom::End(offset),
            libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset as u64),
            libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset as u64),
            _ => return reply.error(Errno::EINVAL),
        };
        match rustix::fs::seek(file, pos) {
            Ok(r) => reply.offset(r as i64),
            Err(e) => reply.error(errno_of(&std::io::Error::from(e))),
        }
    }

    // ---- mutations: delegated to write.rs, which answers EROFS in read-only mode ----

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_if_virtual("setattr", ino.0) {
            return reply.error(e);
        }
        // Truncating a masked-edit handle truncates its scratch copy (masked_edit.rs).
        let mut size = size;
        if let Some(h) = fh.and_then(|fh| self.handle(fh, ino).ok())
            && let Some(edit) = &h.masked
            && let Some(len) = size.take()
        {
            if let Err(e) = h.file.set_len(len) {
                return reply.error(errno_of(&e));
            }
            edit.dirty.store(true, Ordering::Relaxed);
            let rest = mode.is_some()
                || uid.is_some()
                || gid.is_some()
                || atime.is_some()
                || mtime.is_some();
            if !rest {
                return match self.masked_edit_stat(&h) {
                    Ok(Some(st)) => reply.attr(&self.ttl(), &self.attr(ino.0, &st)),
                    Ok(None) => reply.error(Errno::EIO),
                    Err(e) => reply.error(e),
                };
            }
        }
        if let Some(len) = size
            && let Err(e) = self.check_masked_truncate(ino, len)
        {
            return reply.error(e);
        }
        let r = self.do_setattr(req, ino, mode, uid, gid, size, atime, mtime, fh);
        match r {
            Ok(st) => {
                let st = match self.inode(ino).and_then(|i| self.fd(&i)) {
                    Ok(fd) => self.present(fd.as_fd(), st),
                    Err(_) => st,
                };
                reply.attr(&self.ttl(), &self.attr(ino.0, &st))
            }
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_virtual_name("mknod", parent.0, name) {
            return reply.error(e);
        }
        let r = self.do_create_node(
            req,
            parent,
            name,
            write::NewNode::Node {
                mode: mode & !umask | (mode & libc::S_IFMT),
                rdev,
            },
        );
        self.reply_entry(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_virtual_name("mkdir", parent.0, name) {
            return reply.error(e);
        }
        let r = self.do_create_node(
            req,
            parent,
            name,
            write::NewNode::Dir {
                mode: mode & !umask,
            },
        );
        self.reply_entry(r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_virtual_name("symlink", parent.0, link_name) {
            return reply.error(e);
        }
        let r = self.do_create_node(
            req,
            parent,
            link_name,
            write::NewNode::Symlink {
                target: target.as_os_str().to_os_string(),
            },
        );
        self.reply_entry(r, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self
            .refuse_if_virtual("link", ino.0)
            .and_then(|()| self.refuse_virtual_name("link", newparent.0, newname))
        {
            return reply.error(e);
        }
        let r = self.do_create_node(req, newparent, newname, write::NewNode::Link { ino: ino.0 });
        self.reply_entry(r, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_virtual_name("unlink", parent.0, name) {
            return reply.error(e);
        }
        match self.do_remove(req, parent, name, false) {
            Ok(()) => {
                self.count(crate::breaker::Op::Delete);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_virtual_name("rmdir", parent.0, name) {
            return reply.error(e);
        }
        if self.holds_virtual(parent.0, name) {
            // The view shows entries in it: not empty, as a native directory would answer.
            return reply.error(Errno::ENOTEMPTY);
        }
        match self.do_remove(req, parent, name, true) {
            Ok(()) => {
                self.count(crate::breaker::Op::Delete);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self
            .refuse_virtual_name("rename", parent.0, name)
            .and_then(|()| self.refuse_virtual_name("rename", newparent.0, newname))
        {
            return reply.error(e);
        }
        match self.do_rename(req, parent, name, newparent, newname, flags.bits()) {
            Ok(()) => {
                self.count(crate::breaker::Op::Rename);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_virtual_name("create", parent.0, name) {
            return reply.error(e);
        }
        match self.do_create_file(req, parent, name, mode & !umask, flags) {
            Ok((inode, st, fh)) => {
                self.copies.note_own_change(&st);
                // Only a masked edit or a deferred write has work to do at close(2) (see
                // `flush`).
                let h = self.handle(FileHandle(fh), INodeNo(inode.ino));
                let masked =
                    self.flushes_on_close(true) || h.as_ref().is_ok_and(|h| h.masked.is_some());
                let mut flags = if masked {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_NOFLUSH
                };
                if h.is_ok_and(|h| h.io == handles::Io::Direct && h.masked.is_none()) {
                    // An existing file that other handles pass through (see `handles::Io`).
                    flags |= FopenFlags::FOPEN_DIRECT_IO;
                }
                reply.created(
                    &self.ttl(),
                    &self.attr(inode.ino, &st),
                    Generation(0),
                    FileHandle(fh),
                    flags,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        let _actor = audit::Actor::of(req).enter();
        let who =
            setid::Changer::Told(write_flags.contains(fuser::WriteFlags::FUSE_WRITE_KILL_SUIDGID));
        match self.do_write(ino, fh, offset, data, who) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        let who = setid::Changer::Process(req.pid());
        match self.do_fallocate(ino, fh, offset, length, mode, who) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        let _actor = audit::Actor::of(req).enter();
        // Through our own read (masking) and write (guarded) paths, never a kernel copy that
        // would bypass the view.
        let who = setid::Changer::Process(req.pid());
        let r = (|| {
            if let Some(h) = self.virtual_handle(fh_in) {
                let buf = virtual_fs::slice(&h.bytes, offset_in, len.min(1 << 20) as u32);
                return self.do_write(ino_out, fh_out, offset_out, &buf, who);
            }
            let hin = self.handle(fh_in, ino_in)?;
            let buf = self.read_view(
                hin.ino,
                &hin.file,
                offset_in,
                len.min(1 << 20) as u32,
                hin.writable,
            )?;
            self.do_write(ino_out, fh_out, offset_out, &buf, who)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_if_virtual("setxattr", ino.0) {
            return reply.error(e);
        }
        match self.do_setxattr(ino, name, Some(value), flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _actor = audit::Actor::of(req).enter();
        if let Err(e) = self.refuse_if_virtual("removexattr", ino.0) {
            return reply.error(e);
        }
        match self.do_setxattr(ino, name, None, 0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// No ioctl is passed through (the agent's `less` and Python probe every file with TCGETS):
    /// each gets ENOTTY, as on a regular file of a native filesystem, counted rather than logged
    /// (the count is logged at unmount).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        ioctls::note_unsupported_ioctl(cmd);
        reply.error(Errno::from_i32(libc::ENOTTY));
    }
}

impl VeilFs {
    /// Answers an operation that made or linked an entry (so changed its ctime).
    fn reply_entry(&self, r: Result<(Arc<Inode>, Stat), Errno>, reply: ReplyEntry) {
        match r {
            Ok((inode, st)) => {
                self.copies.note_own_change(&st);
                reply.entry(&self.ttl(), &self.attr(inode.ino, &st), Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    /// Changes the kernel cache TTL (before mounting; see `watch`).
    pub(crate) fn set_ttl(&mut self, ttl: Duration) {
        self.cfg.ttl = ttl;
    }

    /// Turns on no-open mode (see [`FsConfig::no_open`]); read-only mounts only.
    pub(crate) fn set_no_open(&mut self, on: bool) {
        self.cfg.no_open = on && self.cfg.guard.is_none();
    }

    /// A handle the folder watcher uses to push outside changes into the kernel's caches.
    /// It does nothing until [`CacheInvalidator::set_notifier`] is given the session's notifier.
    pub(crate) fn invalidator(&self) -> CacheInvalidator {
        CacheInvalidator {
            inodes: self.inodes.clone(),
            notifier: self.notifier.clone(),
            ttl_cap_ms: self.ttl_cap_ms.clone(),
            absent: self.absent.clone(),
            outside_moves: self.outside_moves.clone(),
        }
    }
}
