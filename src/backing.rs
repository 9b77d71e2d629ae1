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
//! All `unsafe` of the crate lives here (and in the passthrough call in `fs`).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The longest name a Linux filesystem accepts.
pub const NAME_MAX: usize = 255;

/// The kind of a real object, from its mode bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
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

    pub fn is_special(self) -> bool {
        !matches!(self, Kind::File | Kind::Dir | Kind::Symlink)
    }
}

/// What we need of `struct stat`, with nanosecond times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
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
    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size.max(0) as u64,
            blocks: st.st_blocks.max(0) as u64,
            blksize: st.st_blksize.max(0) as u64,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Validates one name handed to us by the kernel. Returns the errno a native filesystem would
/// give for it: ENAMETOOLONG for names over 255 bytes, EINVAL for `/`, NUL, `.`, `..` and "".
pub fn check_name(name: &OsStr) -> Result<(), i32> {
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
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// Opens `name` (one validated component) beneath `dir` as an `O_PATH | O_NOFOLLOW` fd.
/// Fails with EXDEV for a mount point (a bind mount inside the scope is not part of it).
pub fn lookup(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if !OPENAT2_MISSING.load(Ordering::Relaxed) {
        let how = OpenHow {
            flags: flags as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS
                | libc::RESOLVE_NO_XDEV,
        };
        loop {
            // SAFETY: all pointers are valid for the call; size matches the struct.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if ret >= 0 {
                // SAFETY: the kernel returned a new fd that nobody else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                Some(libc::ENOSYS) => {
                    OPENAT2_MISSING.store(true, Ordering::Relaxed);
                    break;
                }
                // A symlink as the final component with O_PATH|O_NOFOLLOW is opened, not
                // followed, so ELOOP only means a kernel that disagrees: use the fallback.
                Some(libc::ELOOP) => break,
                _ => return Err(err),
            }
        }
    }
    // Fallback: a single validated component with O_NOFOLLOW cannot climb out of `dir`;
    // the device check stands in for RESOLVE_NO_XDEV.
    // SAFETY: valid fd and NUL-terminated name.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    // SAFETY: fresh fd from openat.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let parent = stat_fd(dir)?;
    let child = stat_fd(fd.as_fd())?;
    if parent.dev != child.dev {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(fd)
}

/// Stats the object behind an fd (works on O_PATH fds, never follows a symlink).
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: empty path with AT_EMPTY_PATH operates on fd; st is written by the kernel.
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so st is initialised.
    let st = unsafe { st.assume_init() };
    Ok(Stat::from_raw(&st))
}

/// Stats one validated name beneath `dir` without following it. A mount point (a bind mount
/// inside the scope) answers EXDEV: it is not part of the scope, exactly as [`lookup`] says.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: valid fd, NUL-terminated single-component name, stx written by the kernel.
    cvt(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: statx succeeded (and the buffer was zeroed before).
    let x = unsafe { stx.assume_init() };
    if x.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
        && x.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
    {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(Stat {
        dev: libc::makedev(x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
        mode: x.stx_mode as u32,
        nlink: x.stx_nlink as u64,
        uid: x.stx_uid,
        gid: x.stx_gid,
        rdev: libc::makedev(x.stx_rdev_major, x.stx_rdev_minor),
        size: x.stx_size,
        blocks: x.stx_blocks,
        blksize: x.stx_blksize as u64,
        atime: (x.stx_atime.tv_sec, x.stx_atime.tv_nsec as i64),
        mtime: (x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec as i64),
        ctime: (x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec as i64),
    })
}

/// Reads a symlink's target through its O_PATH fd.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is valid for buf.len() bytes; empty path reads the link the fd refers to.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

/// Reads the target of the symlink `name` beneath `dir`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    let fd = lookup(dir, name)?;
    readlink_fd(fd.as_fd())
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Cannot contain NUL: digits only.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Reopens a held object for I/O with `flags` (O_RDONLY, O_WRONLY, O_RDWR, O_APPEND, O_TRUNC,
/// O_DIRECTORY...). Refuses anything but regular files and directories (CVE-2020-35517), and
/// strips O_CREAT/O_EXCL/O_NOFOLLOW which make no sense on a reopen.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    reopen_as(fd, stat_fd(fd)?.kind(), flags)
}

/// [`reopen`] for a caller that already knows the object's kind (an fd's object never changes
/// kind), saving a stat on the open path.
pub fn reopen_as(fd: BorrowedFd<'_>, kind: Kind, flags: i32) -> io::Result<File> {
    match kind {
        Kind::File | Kind::Dir => {}
        _ => return Err(io::Error::from_raw_os_error(libc::EACCES)),
    }
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_PATH))
        | libc::O_CLOEXEC;
    let p = proc_path(fd);
    // SAFETY: p is a valid C string; the new fd is owned by the returned File.
    let nfd = cvt(unsafe { libc::open(p.as_ptr(), flags) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { File::from_raw_fd(nfd) })
}

/// One directory entry as listed by the kernel.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
}

/// Lists a directory held as an O_PATH fd (without `.` and `..`).
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    let d = reopen_as(dir, Kind::Dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let raw = d.as_raw_fd();
    // fdopendir takes ownership of the fd, so hand it a dup and let File close the original.
    // SAFETY: raw is valid for the lifetime of d.
    let dup = cvt(unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: dup is a valid directory fd we own; on success DIR owns it.
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own dup.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: dirp is valid until closedir below. errno reset to tell end from error.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: dirp valid; closes dup.
            unsafe { libc::closedir(dirp) };
            if e.raw_os_error().unwrap_or(0) != 0 {
                return Err(e);
            }
            break;
        }
        // SAFETY: readdir64 returned a valid entry whose d_name is NUL-terminated.
        let (name, ino) = unsafe {
            let e = &*ent;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_ino,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push(DirEntry {
            name: OsString::from_vec(name),
            ino,
        });
    }
    Ok(out)
}

/// `statfs` of the filesystem holding `fd`.
pub fn statfs(fd: BorrowedFd<'_>) -> io::Result<libc::statfs> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    let p = proc_path(fd);
    // SAFETY: p valid; st written by the kernel on success.
    cvt(unsafe { libc::statfs(p.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: success means initialised.
    Ok(unsafe { st.assume_init() })
}

// ---------------------------------------------------------------------------------------------
// Mutations. Each takes the parent's fd and one validated name; none follows a symlink.

/// Creates a regular file beneath `dir` (`O_CREAT | O_EXCL | O_NOFOLLOW`), returned open with
/// `flags`' access mode.
pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<File> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let flags = (flags & !(libc::O_PATH | libc::O_DIRECTORY))
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC;
    // SAFETY: valid fd and name; mode passed as the variadic argument.
    let fd =
        cvt(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { File::from_raw_fd(fd) })
}

pub fn mkdir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    // SAFETY: valid fd and name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

pub fn mknod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    // SAFETY: valid fd and name.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, rdev) })
        .map(|_| ())
}

pub fn symlink(dir: BorrowedFd<'_>, name: &OsStr, target: &OsStr) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    let t = cstr(target)?;
    // SAFETY: valid strings and fd.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(|_| ())
}

/// Makes a new hard link to the object held by `fd` (via its /proc path, so no name is
/// re-resolved).
pub fn link(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, newname: &OsStr) -> io::Result<()> {
    check_name(newname).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(newname)?;
    let p = proc_path(fd);
    // SAFETY: valid strings and fds. AT_SYMLINK_FOLLOW resolves the /proc magic link to the
    // object itself (for a symlink object it links the symlink, not its target).
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            newdir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(|_| ())
}

pub fn unlink(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    // SAFETY: valid fd and name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(|_| ())
}

pub fn rmdir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    check_name(name).map_err(io::Error::from_raw_os_error)?;
    let c = cstr(name)?;
    // SAFETY: valid fd and name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
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
    // SAFETY: valid fds and names.
    cvt(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            o.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })
    .map(|_| ())
}

/// chmod of the held object (symlinks have no mode on Linux: EOPNOTSUPP, like native).
pub fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let p = proc_path(fd);
    if stat_fd(fd)?.kind() == Kind::Symlink {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    // SAFETY: valid path string.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// chown of the held object itself (never a symlink's target). u32::MAX leaves a field as is.
pub fn chown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: AT_EMPTY_PATH with "" operates on fd itself.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

/// A time to set: a value, "now", or "leave alone".
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Omit,
    Now,
    At(i64, i64),
}

fn timespec(t: SetTime) -> libc::timespec {
    match t {
        SetTime::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        SetTime::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        SetTime::At(s, ns) => libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
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
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid fd, name and two timespecs.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

/// utimens of a held regular file or directory (through its /proc path).
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let p = proc_path(fd);
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid path and timespecs; the /proc magic link resolves to the held object.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) }).map(|_| ())
}

/// Truncates a held regular file.
pub fn truncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let f = reopen(fd, libc::O_WRONLY)?;
    f.set_len(size)
}

// xattrs: O_PATH fds do not support the f*xattr calls, so go through /proc/self/fd/N, which
// resolves to the held object. Symlinks: Linux allows only trusted./security. xattrs on them and
// the /proc link would follow, so refuse (as user.* on a symlink would be refused natively).

fn xattr_path(fd: BorrowedFd<'_>) -> io::Result<CString> {
    match stat_fd(fd)?.kind() {
        Kind::File | Kind::Dir => Ok(proc_path(fd)),
        _ => Err(io::Error::from_raw_os_error(libc::EPERM)),
    }
}

pub fn getxattr(fd: BorrowedFd<'_>, name: &OsStr, size: usize) -> io::Result<Vec<u8>> {
    let p = xattr_path(fd).map_err(|_| io::Error::from_raw_os_error(libc::ENODATA))?;
    let n = cstr(name)?;
    let mut buf = vec![0u8; size];
    // SAFETY: valid strings; buf valid for size bytes (size 0 asks for the length).
    let r = unsafe {
        libc::getxattr(
            p.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            size,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        buf.resize(r as usize, 0);
        return Ok(buf);
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// The whole value of xattr `name` (sized first; retried if it grows in between).
pub fn getxattr_value(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    for _ in 0..4 {
        let len = getxattr(fd, name, 0)?.len();
        if len == 0 {
            return Ok(Vec::new());
        }
        match getxattr(fd, name, len) {
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            r => return r,
        }
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

pub fn listxattr(fd: BorrowedFd<'_>, size: usize) -> io::Result<Vec<u8>> {
    let p = match xattr_path(fd) {
        Ok(p) => p,
        Err(_) => return Ok(Vec::new()),
    };
    let mut buf = vec![0u8; size];
    // SAFETY: valid path; buf valid for size bytes.
    let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        buf.resize(r as usize, 0);
        return Ok(buf);
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn setxattr(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let p = xattr_path(fd)?;
    let n = cstr(name)?;
    // SAFETY: valid strings and buffer.
    cvt(unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

pub fn removexattr(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let p = xattr_path(fd)?;
    let n = cstr(name)?;
    // SAFETY: valid strings.
    cvt(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(|_| ())
}

/// All xattrs of a held object as (name, value) pairs, for snapshots.
pub fn all_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let len = listxattr(fd, 0)?.len();
    if len == 0 {
        return Ok(Vec::new());
    }
    let list = listxattr(fd, len)?;
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let vlen = getxattr(fd, name, 0)?.len();
        let v = if vlen == 0 {
            Vec::new()
        } else {
            getxattr(fd, name, vlen)?
        };
        out.push((name.to_os_string(), v));
    }
    Ok(out)
}

/// Raises the soft fd limit to the hard limit (and the hard limit to `nr_open` when we may):
/// every cached inode holds one O_PATH fd.
pub fn raise_fd_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(rl.rlim_max);
    let want = libc::rlimit {
        rlim_cur: nr_open.max(rl.rlim_max),
        rlim_max: nr_open.max(rl.rlim_max),
    };
    // SAFETY: valid pointer. Raising the hard limit needs CAP_SYS_RESOURCE; fall back below.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return want.rlim_cur;
    }
    let soft = libc::rlimit {
        rlim_cur: rl.rlim_max,
        rlim_max: rl.rlim_max,
    };
    // SAFETY: valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    rl.rlim_max
}

/// Walks a relative path beneath `root` one validated component at a time (each through
/// [`lookup`], so no symlink, `..` or mount point is ever crossed). For admin-side tools such as
/// rollback that start from a recorded relative path. "" is the root itself.
pub fn open_path(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
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
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
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
