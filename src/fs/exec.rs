//! Files being executed, and the one open the kernel lets through to us before it checks them.
//!
//! The kernel refuses to open a file for writing while a process executes it (ETXTBSY): exec
//! denies write access to the inode, and an open that wants write access asks for it before
//! the filesystem sees the OPEN. One open is checked *after* the OPEN instead: a read-only
//! open that truncates (`O_RDONLY | O_TRUNC`) gets write access only in the kernel's
//! `handle_truncate`, once the filesystem has opened the file. With `FUSE_ATOMIC_O_TRUNC`
//! (which veilfs asks for, see `init`) the OPEN itself carries O_TRUNC and the write path
//! applies it, so before this check veilfs cut a running program to 0 bytes and only then did
//! the kernel answer ETXTBSY; the program died of SIGBUS at its next page fault, and when it
//! died before the kernel's check, the open even succeeded (pjdfstest's `open::etxtbsy`, which
//! failed about one run in six, more often with `cache.write_ttl_ms` on only because fewer
//! LOOKUPs slowed the opener down). The same holds for a CREATE that finds the file already
//! there: the kernel asks for write access after the CREATE reply.
//!
//! So veilfs keeps the kernel's rule itself for those opens: it remembers the handles opened
//! for exec (their OPEN carries `FMODE_EXEC`; the kernel keeps that file open, with write
//! access denied, for as long as the program runs) and refuses a truncating open of their
//! inode with ETXTBSY before anything changes. Opens the kernel checks first are left to it:
//! this table learns of a program's end only at the RELEASE, which the kernel sends
//! asynchronously after the exit, and must not refuse a rebuild of a binary that just exited.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

/// `__FMODE_EXEC` in the OPEN flags: the kernel opens a file to execute it.
const FMODE_EXEC: i32 = 0x20;

/// Whether an OPEN with `flags` is an exec.
pub(super) fn is_exec_open(flags: i32) -> bool {
    flags & FMODE_EXEC != 0
}

/// Whether an open with `flags` must answer ETXTBSY before it truncates anything: it truncates
/// at OPEN, the kernel has not yet checked it for write access (`kernel_checked`: a plain OPEN
/// that asks for write access was checked before it reached us), and the file is executing.
pub(super) fn refuse_truncate(flags: i32, kernel_checked: bool, executing: bool) -> bool {
    let truncates = flags & libc::O_TRUNC != 0;
    let checked = kernel_checked && flags & libc::O_ACCMODE != libc::O_RDONLY;
    truncates && !checked && executing
}

/// Handles opened for exec, by handle, with their inode (one per running program of the mount).
#[derive(Default)]
pub(super) struct Executing {
    handles: Mutex<HashMap<u64, u64>>,
}

impl Executing {
    /// The handle `fh` of inode `ino` was opened for exec (called before the OPEN is answered,
    /// since the kernel denies write access right after the reply).
    pub(super) fn opened(&self, fh: u64, ino: u64) {
        self.lock().insert(fh, ino);
    }

    pub(super) fn released(&self, fh: u64) {
        let mut h = self.lock();
        if !h.is_empty() {
            h.remove(&fh);
        }
    }

    pub(super) fn is_executing(&self, ino: u64) -> bool {
        self.lock().values().any(|&i| i == ino)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl VeilFs {
    /// ETXTBSY for an open of `inode` that would truncate a running program before the kernel
    /// checked it ([`refuse_truncate`]); `kernel_checked`: a plain OPEN (not a CREATE).
    pub(super) fn check_not_executing(
        &self,
        inode: &Inode,
        flags: i32,
        kernel_checked: bool,
    ) -> Result<(), Errno> {
        if flags & libc::O_TRUNC == 0 {
            return Ok(());
        }
        if refuse_truncate(
            flags,
            kernel_checked,
            self.executing.is_executing(inode.ino),
        ) {
            debug!(
                ino = inode.ino,
                flags, "truncating open of a running program: ETXTBSY"
            );
            return Err(Errno::ETXTBSY);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_truncating_opens_the_kernel_has_not_checked_are_refused_while_executing() {
        let ro_trunc = libc::O_RDONLY | libc::O_TRUNC;
        let wo_trunc = libc::O_WRONLY | libc::O_TRUNC;
        // OPEN: write access was checked by the kernel before, except for O_RDONLY | O_TRUNC.
        assert!(refuse_truncate(ro_trunc, true, true));
        assert!(!refuse_truncate(wo_trunc, true, true));
        assert!(!refuse_truncate(libc::O_RDWR | libc::O_TRUNC, true, true));
        // CREATE of a name that exists: the kernel checks only after our reply.
        assert!(refuse_truncate(wo_trunc, false, true));
        assert!(refuse_truncate(ro_trunc, false, true));
        // Nothing is cut without O_TRUNC, and nothing is refused for a file not executing.
        assert!(!refuse_truncate(libc::O_WRONLY, false, true));
        assert!(!refuse_truncate(ro_trunc, true, false));
        assert!(!refuse_truncate(wo_trunc, false, false));
    }

    #[test]
    fn an_inode_executes_until_its_last_exec_handle_is_released() {
        let e = Executing::default();
        assert!(!e.is_executing(7));
        e.opened(1, 7);
        e.opened(2, 7);
        e.opened(3, 8);
        e.released(1);
        assert!(e.is_executing(7));
        e.released(2);
        assert!(!e.is_executing(7));
        assert!(e.is_executing(8));
        e.released(99);
        assert!(e.is_executing(8));
        assert!(is_exec_open(libc::O_RDONLY | libc::O_LARGEFILE | 0x20));
        assert!(!is_exec_open(libc::O_RDONLY | libc::O_LARGEFILE));
    }
}
