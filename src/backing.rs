//! Safe access to the real folder. This is the only module that makes syscalls on the scope, and
//! every one of them is relative to a file descriptor we already hold, never to a path string.
//!
//! Why: every escape found in FUSE/virtio file servers came from resolving a name twice, or
//! resolving it through a symlink or `..` that the attacker controls. So:
//! - each object is held as an `O_PATH | O_NOFOLLOW` fd, opened beneath its parent's fd with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`
//!   (falling back to `openat(O_NOFOLLOW)` of one validated component where openat2 is missing);
//! - names from the kernel are validated ([`check_name`]) before they reach a syscall;
//! - stats are taken through the fd (`AT_EMPTY_PATH`), links read with `readlinkat(fd, "")`;
//! - I/O reopens only regular files and directories through `/proc/self/fd/N` (never a device,
//!   fifo or socket), and never with `O_CREAT`; new files are made with `O_CREAT | O_EXCL |
//!   O_NOFOLLOW` beneath the parent fd.
//!
//! The syscalls themselves go through `rustix`, whose wrappers are safe: this module has no
//! `unsafe` (the crate denies it; the little that cannot be done safely is in `sys`). rustix
//! answers `rustix::io::Errno`, turned into `io::Error` with the same raw errno, so the FUSE
//! layer's errno mapping sees exactly what the kernel said.

use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The longest name a Linux filesystem accepts.
pub(crate) const NAME_MAX: usize = 255;

/// The kind of a real object, from its mode bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub(crate) fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => Kind::File,
        }
    }
}

/// What we need of `struct stat`, with nanosecond times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stat {
    pub(crate) fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }
    pub(crate) fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    // The field types of `struct stat` differ between architectures; some casts are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    fn from_raw(st: &rustix::fs::Stat) -> Stat {
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u64,
            size: st.st_size.max(0) as u64,
            blocks: (st.st_blocks as i64).max(0) as u64,
            blksize: (st.st_blksize as i64).max(0) as u64,
            atime: (st.st_atime as i64, st.st_atime_nsec as i64),
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

/// A name as a C string; a NUL inside answers EINVAL (rustix's own conversion says the same).
fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Open flags as the kernel takes them; bits rustix does not name are passed on unchanged.
fn oflags(flags: i32) -> OFlags {
    OFlags::from_bits_retain(flags as u32)
}

/// Validates one name handed to us by the kernel. Returns the errno a native filesystem would
/// give for it: ENAMETOOLONG for names over 255 bytes, EINVAL for `/`, NUL, `.`, `..` and "".
pub(crate) fn check_name(name: &OsStr) -> Result<(), i32> {
    let b = name.as_bytes();
    if b.len() > NAME_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// Opens the scope root itself. The caller passes a canonical path (the admin's, not the
/// agent's); everything below it is reached through fds.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    Ok(rustix::fs::open(
        &*c,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// One `openat2` of `path` beneath `dir` as an `O_PATH | O_NOFOLLOW` fd, with the resolve flags
/// that hold for every component (no symlink, magic link, `..` above `dir` or mount point),
/// retried when the kernel asks. A kernel without openat2 is remembered, so callers take
/// their fallback at once from then on.
fn openat2_beneath(dir: BorrowedFd<'_>, path: &CStr) -> Result<OwnedFd, rustix::io::Errno> {
    use rustix::fs::ResolveFlags;
    use rustix::io::Errno;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV;
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            Err(Errno::NOSYS) => {
                OPENAT2_MISSING.store(true, Ordering::Relaxed);
                return Err(Errno::NOSYS);
            }
            other => return other,
        }
    }
}

/// Opens `name` (one validated component) beneath `dir` as an `O_PATH | O_NOFOLLOW` fd.
/// Fails with EXDEV for a mount point (a bind mount inside the scope is not part of it).
pub(crate) fn lookup(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    if !OPENAT2_MISSING.load(Ordering::Relaxed) {
        match openat2_beneath(dir, &c) {
            Ok(fd) => return Ok(fd),
            // A symlink as the final component with O_PATH|O_NOFOLLOW is opened, not
            // followed, so ELOOP only means a kernel that disagrees: use the fallback.
            Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::LOOP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Fallback: a single validated component with O_NOFOLLOW cannot climb out of `dir`;
    // the device check stands in for RESOLVE_NO_XDEV.
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &*c, flags, Mode::empty())?;
    let parent = stat_fd(dir)?;
    let child = stat_fd(fd.as_fd())?;
    if parent.dev != child.dev {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(fd)
}

/// Stats the object behind an fd (works on O_PATH fds, never follows a symlink).
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // An empty path with AT_EMPTY_PATH stats the object the fd refers to.
    let st = rustix::fs::statat(fd, c"", AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(Stat::from_raw(&st))
}

/// Stats one validated name beneath `dir` without following it. A mount point (a bind mount
/// inside the scope) answers EXDEV: it is not part of the scope, exactly as [`lookup`] says.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    use rustix::fs::{StatxAttributes, StatxFlags};
    let c = cstr(name)?;
    let x = rustix::fs::statx(
        dir,
        &*c,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_SYNC_AS_STAT,
        StatxFlags::BASIC_STATS,
    )?;
    if x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(Stat {
        dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
        mode: x.stx_mode as u32,
        nlink: x.stx_nlink as u64,
        uid: x.stx_uid,
        gid: x.stx_gid,
        rdev: rustix::fs::makedev(x.stx_rdev_major, x.stx_rdev_minor),
        size: x.stx_size,
        blocks: x.stx_blocks,
        blksize: x.stx_blksize as u64,
        atime: (x.stx_atime.tv_sec, x.stx_atime.tv_nsec as i64),
        mtime: (x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec as i64),
        ctime: (x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec as i64),
    })
}

/// Reads a symlink's target through its O_PATH fd.
pub(crate) fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<OsString> {
    // An empty path reads the link the fd refers to.
    let target = rustix::fs::readlinkat(fd, c"", Vec::new())?;
    Ok(OsString::from_vec(target.into_bytes()))
}

/// Reads the target of the symlink `name` beneath `dir`.
pub(crate) fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    let fd = lookup(dir, name)?;
    readlink_fd(fd.as_fd())
}

/// Where the object behind `fd` is now, as the kernel names it (the link `/proc/self/fd/N`
/// reads as): the path a rename moved it to, by anyone, since it was opened. Only text: the
/// caller walks it again beneath the scope and compares identities before trusting it. An
/// object with no name left reads as its last path with ` (deleted)` appended.
pub(crate) fn current_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    let target = rustix::fs::readlink(proc_path(fd), Vec::new())?;
    Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Cannot contain NUL: digits only.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reopens a held object for I/O with `flags` (O_RDONLY, O_WRONLY, O_RDWR, O_APPEND, O_TRUNC,
/// O_DIRECTORY...). Refuses anything but regular files and directories (CVE-2020-35517), and
/// strips O_CREAT/O_EXCL/O_NOFOLLOW which make no sense on a reopen.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    reopen_as(fd, stat_fd(fd)?.kind(), flags)
}

/// [`reopen`] for a caller that already knows the object's kind (an fd's object never changes
/// kind), saving a stat on the open path.
pub(crate) fn reopen_as(fd: BorrowedFd<'_>, kind: Kind, flags: i32) -> io::Result<File> {
    match kind {
        Kind::File | Kind::Dir => {}
        _ => return Err(io::Error::from_raw_os_error(libc::EACCES)),
    }
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_PATH))
        | libc::O_CLOEXEC;
    let p = proc_path(fd);
    let nfd = rustix::fs::open(&*p, oflags(flags), Mode::empty())?;
    Ok(File::from(nfd))
}

/// One directory entry as listed by the kernel.
#[derive(Clone, Debug)]
pub(crate) struct DirEntry {
    pub name: OsString,
    pub ino: u64,
}

/// Lists a directory held as an O_PATH fd (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    let d = reopen_as(dir, Kind::Dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut out = Vec::new();
    for ent in rustix::fs::Dir::new(d)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        // glibc's readdir, which this replaced, skips entries with inode 0 (deleted slots).
        if name == b"." || name == b".." || ent.ino() == 0 {
            continue;
        }
        out.push(DirEntry {
            name: OsString::from_vec(name.to_vec()),
            ino: ent.ino(),
        });
    }
    Ok(out)
}

/// `statfs` of the filesystem holding `fd`.
pub(crate) fn statfs(fd: BorrowedFd<'_>) -> io::Result<rustix::fs::StatFs> {
    Ok(rustix::fs::statfs(&*proc_path(fd))?)
}

// ---------------------------------------------------------------------------------------------
// Mutations. Each takes the parent's fd and one validated name; none follows a symlink.

/// Creates a regular file beneath `dir` (`O_CREAT | O_EXCL | O_NOFOLLOW`), returned open with
/// `flags`' access mode.
pub(crate) fn create_file(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: i32,
    mode: u32,
) -> io::Result<File> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let flags = (flags & !(libc::O_PATH | libc::O_DIRECTORY))
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC;
    let fd = rustix::fs::openat(dir, &*c, oflags(flags), Mode::from_raw_mode(mode))?;
    Ok(File::from(fd))
}

pub(crate) fn mkdir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    Ok(rustix::fs::mkdirat(dir, &*c, Mode::from_raw_mode(mode))?)
}

pub(crate) fn mknod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    // No type bits means a regular file, as mknod(2) says.
    let kind = match mode & libc::S_IFMT {
        0 => rustix::fs::FileType::RegularFile,
        t => rustix::fs::FileType::from_raw_mode(t),
    };
    Ok(rustix::fs::mknodat(
        dir,
        &*c,
        kind,
        Mode::from_raw_mode(mode),
        rdev,
    )?)
}

pub(crate) fn symlink(dir: BorrowedFd<'_>, name: &OsStr, target: &OsStr) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let t = cstr(target)?;
    Ok(rustix::fs::symlinkat(&*t, dir, &*c)?)
}

/// Makes a new hard link to the object held by `fd` (via its /proc path, so no name is
/// re-resolved).
pub(crate) fn link(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, newname: &OsStr) -> io::Result<()> {
    check_name(newname).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(newname)?;
    let p = proc_path(fd);
    // AT_SYMLINK_FOLLOW resolves the /proc magic link to the object itself (for a symlink
    // object it links the symlink, not its target).
    Ok(rustix::fs::linkat(
        rustix::fs::CWD,
        &*p,
        newdir,
        &*c,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

pub(crate) fn unlink(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    Ok(rustix::fs::unlinkat(dir, &*c, AtFlags::empty())?)
}

pub(crate) fn rmdir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    Ok(rustix::fs::unlinkat(dir, &*c, AtFlags::REMOVEDIR)?)
}

/// `renameat2` with the caller's flags (RENAME_NOREPLACE, RENAME_EXCHANGE).
pub fn rename(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
    flags: u32,
) -> io::Result<()> {
    check_name(oldname).map_err(io::Error::from_raw_os_error)?;
    check_name(newname).map_err(io::Error::from_raw_os_error)?;
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // Unknown flag bits go to the kernel as they came, which answers EINVAL as it always did.
    let flags = rustix::fs::RenameFlags::from_bits_retain(flags);
    Ok(rustix::fs::renameat_with(olddir, &*o, newdir, &*n, flags)?)
}

/// chmod of the held object (symlinks have no mode on Linux: EOPNOTSUPP, like native).
pub(crate) fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    chmod_as(fd, stat_fd(fd)?.kind(), mode)
}

/// [`chmod`] of an object of known kind (an fd's object never changes kind).
pub(crate) fn chmod_as(fd: BorrowedFd<'_>, kind: Kind, mode: u32) -> io::Result<()> {
    let p = proc_path(fd);
    if kind == Kind::Symlink {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(rustix::fs::chmod(&*p, Mode::from_raw_mode(mode))?)
}

/// chown of the held object itself (never a symlink's target). u32::MAX leaves a field as is.
pub(crate) fn chown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    use rustix::fs::{Gid, Uid};
    let uid = (uid != u32::MAX).then(|| Uid::from_raw(uid));
    let gid = (gid != u32::MAX).then(|| Gid::from_raw(gid));
    // AT_EMPTY_PATH with "" operates on the fd itself.
    Ok(rustix::fs::chownat(
        fd,
        c"",
        uid,
        gid,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// A time to set: a value, "now", or "leave alone".
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    /// Leave the time as it is.
    Omit,
    /// The current time.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, i64),
}

fn timespec(t: SetTime) -> rustix::fs::Timespec {
    match t {
        SetTime::Omit => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        SetTime::Now => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        SetTime::At(s, ns) => rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    }
}

fn timestamps(atime: SetTime, mtime: SetTime) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: timespec(atime),
        last_modification: timespec(mtime),
    }
}

/// utimensat on one validated name beneath `dir`, never following it.
pub fn utimens_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: SetTime,
    mtime: SetTime,
) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let ts = timestamps(atime, mtime);
    Ok(rustix::fs::utimensat(
        dir,
        &*c,
        &ts,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// utimens of a held regular file or directory (through its /proc path).
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let p = proc_path(fd);
    let ts = timestamps(atime, mtime);
    // The /proc magic link resolves to the held object.
    Ok(rustix::fs::utimensat(
        rustix::fs::CWD,
        &*p,
        &ts,
        AtFlags::empty(),
    )?)
}

/// Truncates a held regular file.
pub(crate) fn truncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let f = reopen(fd, libc::O_WRONLY)?;
    f.set_len(size)
}

// xattrs: O_PATH fds do not support the f*xattr calls, so go through /proc/self/fd/N, which
// resolves to the held object. Symlinks: Linux allows only trusted./security. xattrs on them and
// the /proc link would follow, so refuse (as user.* on a symlink would be refused natively).

fn xattr_path(fd: BorrowedFd<'_>) -> io::Result<CString> {
    xattr_path_as(fd, stat_fd(fd)?.kind())
}

/// [`xattr_path`] for a caller that knows the object's kind (an fd's object never changes
/// kind): the xattr requests of an inode then cost one syscall, not a stat and one.
fn xattr_path_as(fd: BorrowedFd<'_>, kind: Kind) -> io::Result<CString> {
    match kind {
        Kind::File | Kind::Dir => Ok(proc_path(fd)),
        _ => Err(io::Error::from_raw_os_error(libc::EPERM)),
    }
}

pub(crate) fn getxattr(fd: BorrowedFd<'_>, name: &OsStr, size: usize) -> io::Result<Vec<u8>> {
    let kind = stat_fd(fd).map_err(|_| io::Error::from_raw_os_error(libc::ENODATA))?;
    getxattr_as(fd, kind.kind(), name, size)
}

/// [`getxattr`] of an object of known kind (see [`xattr_path_as`]).
pub(crate) fn getxattr_as(
    fd: BorrowedFd<'_>,
    kind: Kind,
    name: &OsStr,
    size: usize,
) -> io::Result<Vec<u8>> {
    let p = xattr_path_as(fd, kind).map_err(|_| io::Error::from_raw_os_error(libc::ENODATA))?;
    let n = cstr(name)?;
    // Size 0 asks for the length (rustix's `getxattr` answers 0 for an empty buffer: the
    // length comes from `getxattr_query`).
    if size == 0 {
        return Ok(vec![0u8; rustix::fs::getxattr_query(&*p, &*n)?]);
    }
    let mut buf = vec![0u8; size];
    let r = rustix::fs::getxattr(&*p, &*n, &mut buf[..])?;
    buf.truncate(r);
    Ok(buf)
}

/// The whole value of xattr `name` (sized first; retried if it grows in between).
pub(crate) fn getxattr_value(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let kind = stat_fd(fd).map_err(|_| io::Error::from_raw_os_error(libc::ENODATA))?;
    getxattr_value_as(fd, kind.kind(), name)
}

/// [`getxattr_value`] of an object of known kind (see [`xattr_path_as`]).
pub(crate) fn getxattr_value_as(
    fd: BorrowedFd<'_>,
    kind: Kind,
    name: &OsStr,
) -> io::Result<Vec<u8>> {
    for _ in 0..4 {
        let len = getxattr_as(fd, kind, name, 0)?.len();
        if len == 0 {
            return Ok(Vec::new());
        }
        match getxattr_as(fd, kind, name, len) {
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            r => return r,
        }
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

/// The names of the xattrs of an object of known kind (see [`xattr_path_as`]).
pub(crate) fn listxattr_as(fd: BorrowedFd<'_>, kind: Kind, size: usize) -> io::Result<Vec<u8>> {
    let p = match xattr_path_as(fd, kind) {
        Ok(p) => p,
        Err(_) => return Ok(Vec::new()),
    };
    // Size 0 asks for the length (rustix's `listxattr` answers 0 for an empty buffer: the
    // length comes from `listxattr_query`).
    if size == 0 {
        return Ok(vec![0u8; rustix::fs::listxattr_query(&*p)?]);
    }
    let mut buf = vec![0u8; size];
    let r = rustix::fs::listxattr(&*p, &mut buf[..])?;
    buf.truncate(r);
    Ok(buf)
}

/// Sets extended attribute `name` of the file held by `fd`.
pub fn setxattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let p = xattr_path(fd)?;
    let n = cstr(name)?;
    // XATTR_CREATE / XATTR_REPLACE; unknown bits go to the kernel as they came.
    let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    Ok(rustix::fs::setxattr(&*p, &*n, value, flags)?)
}

pub(crate) fn removexattr(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let p = xattr_path(fd)?;
    let n = cstr(name)?;
    Ok(rustix::fs::removexattr(&*p, &*n)?)
}

/// All xattrs of a held object as (name, value) pairs, for snapshots.
pub fn all_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    match stat_fd(fd) {
        Ok(st) => all_xattrs_as(fd, st.kind()),
        Err(_) => Ok(Vec::new()),
    }
}

/// [`all_xattrs`] of an object of known kind (see [`xattr_path_as`]).
pub(crate) fn all_xattrs_as(
    fd: BorrowedFd<'_>,
    kind: Kind,
) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let len = listxattr_as(fd, kind, 0)?.len();
    if len == 0 {
        return Ok(Vec::new());
    }
    let list = listxattr_as(fd, kind, len)?;
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let vlen = getxattr_as(fd, kind, name, 0)?.len();
        let v = if vlen == 0 {
            Vec::new()
        } else {
            getxattr_as(fd, kind, name, vlen)?
        };
        out.push((name.to_os_string(), v));
    }
    Ok(out)
}

/// [`all_xattrs`] of a regular file or directory open for I/O (not O_PATH): through the fd
/// itself, without the walk of its `/proc/self/fd` link.
pub(crate) fn all_xattrs_open(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let len = rustix::fs::flistxattr_query(fd)?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; len];
    let n = rustix::fs::flistxattr(fd, &mut list[..])?;
    list.truncate(n);
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let c = cstr(name)?;
        let vlen = rustix::fs::fgetxattr_query(fd, &*c)?;
        let mut v = vec![0u8; vlen];
        if vlen > 0 {
            let n = rustix::fs::fgetxattr(fd, &*c, &mut v[..])?;
            v.truncate(n);
        }
        out.push((name.to_os_string(), v));
    }
    Ok(out)
}

/// Raises the soft fd limit to the hard limit (and the hard limit to `nr_open` when we may):
/// every cached inode holds one O_PATH fd.
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // rustix says "unlimited" (RLIM_INFINITY) as None.
    let max = getrlimit(Resource::Nofile)
        .maximum
        .unwrap_or(libc::RLIM_INFINITY);
    let limit = |n: u64| (n != libc::RLIM_INFINITY).then_some(n);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(max);
    let want = nr_open.max(max);
    // Raising the hard limit needs CAP_SYS_RESOURCE; fall back below.
    let both = |n| Rlimit {
        current: limit(n),
        maximum: limit(n),
    };
    if setrlimit(Resource::Nofile, both(want)).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::Nofile, both(max));
    max
}

/// Walks a relative path beneath `root` one validated component at a time (each through
/// [`lookup`], so no symlink, `..` or mount point is ever crossed). For admin-side tools such as
/// rollback that start from a recorded relative path. "" is the root itself.
pub fn open_path(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let mut depth = 0;
    for comp in rel.components() {
        match comp {
            std::path::Component::Normal(name) => {
                check_name(name).map_err(io::Error::from_raw_os_error)?;
                depth += 1;
            }
            std::path::Component::CurDir => {}
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
    // The write path walks a path per change: one openat2 for all of it, whose resolve flags
    // hold for every component, instead of an open and a close per component. Anything it
    // refuses for a reason the walk would word differently (a symlink on the way) is walked.
    if depth > 0 && !OPENAT2_MISSING.load(Ordering::Relaxed) {
        let c = cstr(rel.as_os_str())?;
        match openat2_beneath(root, &c) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) => {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            Err(_) => {}
        }
    }
    let mut cur = root.try_clone_to_owned()?;
    for comp in rel.components() {
        match comp {
            std::path::Component::Normal(name) => cur = lookup(cur.as_fd(), name)?,
            std::path::Component::CurDir => {}
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
    Ok(cur)
}

/// Opens the parent directory of `rel` beneath `root` and returns it with the final name.
pub fn open_parent(root: BorrowedFd<'_>, rel: &Path) -> io::Result<(OwnedFd, OsString)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
        .to_os_string();
    let parent = rel.parent().unwrap_or(Path::new(""));
    let fd = open_path(root, parent)?;
    if stat_fd(fd.as_fd())?.kind() != Kind::Dir {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok((fd, name))
}

/// Duplicates a borrowed fd into an owned one.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink as mk_symlink;

    #[test]
    fn names_are_validated_like_a_native_fs() {
        assert_eq!(check_name(OsStr::new("ok")), Ok(()));
        assert_eq!(check_name(OsStr::new("..")), Err(libc::EINVAL));
        assert_eq!(check_name(OsStr::new(".")), Err(libc::EINVAL));
        assert_eq!(check_name(OsStr::new("a/b")), Err(libc::EINVAL));
        assert_eq!(check_name(OsStr::new("")), Err(libc::EINVAL));
        assert_eq!(
            check_name(OsStr::new(&"x".repeat(256))),
            Err(libc::ENAMETOOLONG)
        );
        assert_eq!(check_name(OsStr::new(&"x".repeat(255))), Ok(()));
    }

    #[test]
    fn lookup_never_follows_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        mk_symlink("/etc", d.path().join("out")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let root = open_root(d.path()).unwrap();
        let l = lookup(root.as_fd(), OsStr::new("out")).unwrap();
        assert_eq!(stat_fd(l.as_fd()).unwrap().kind(), Kind::Symlink);
        assert_eq!(readlink_fd(l.as_fd()).unwrap(), OsString::from("/etc"));
        assert!(reopen(l.as_fd(), libc::O_RDONLY).is_err());
        assert!(lookup(root.as_fd(), OsStr::new("..")).is_err());
        let names: Vec<_> = list_dir(root.as_fd())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn xattr_size_0_answers_the_length() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let root = open_root(d.path()).unwrap();
        let f = lookup(root.as_fd(), OsStr::new("f")).unwrap();
        let name = OsStr::new("user.veilfs-test");
        match setxattr(f.as_fd(), name, b"hello", 0) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            r => r.unwrap(),
        }
        assert_eq!(getxattr(f.as_fd(), name, 0).unwrap().len(), 5);
        assert_eq!(getxattr_value(f.as_fd(), name).unwrap(), b"hello");
        let list = listxattr_as(f.as_fd(), Kind::File, 0).unwrap().len();
        assert_eq!(
            list,
            listxattr_as(f.as_fd(), Kind::File, list).unwrap().len()
        );
        let all = all_xattrs(f.as_fd()).unwrap();
        assert!(all.contains(&(name.to_os_string(), b"hello".to_vec())));
        assert_eq!(
            getxattr(f.as_fd(), name, 2).unwrap_err().raw_os_error(),
            Some(libc::ERANGE)
        );
    }

    #[test]
    fn create_and_rename_beneath_parent() {
        let d = tempfile::tempdir().unwrap();
        let root = open_root(d.path()).unwrap();
        let mut f = create_file(root.as_fd(), OsStr::new("a"), libc::O_WRONLY, 0o644).unwrap();
        use std::io::Write;
        f.write_all(b"hi").unwrap();
        rename(
            root.as_fd(),
            OsStr::new("a"),
            root.as_fd(),
            OsStr::new("b"),
            0,
        )
        .unwrap();
        assert_eq!(std::fs::read(d.path().join("b")).unwrap(), b"hi");
        assert!(create_file(root.as_fd(), OsStr::new("b"), libc::O_WRONLY, 0o644).is_err());
    }
}
