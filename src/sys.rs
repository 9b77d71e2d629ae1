//! The syscalls that cannot be made through a safe API. Everything else goes through `rustix`
//! (or `nix` for the signal mask), whose wrappers are safe; the crate root denies `unsafe` and
//! allows it in this module alone, so each block below is the whole of the crate's `unsafe`.
//!
//! Each function says why no safe wrapper fits, and each block has a `// SAFETY:` line.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Makes the fd number `target` refer to what `src` refers to (`dup2`), closing what `target`
/// held. The mount uses it to put /dev/null in place of the FUSE device fd whose owners (fuser's
/// forgotten mount handle and senders) will never use or close it again. A safe `dup2` needs an
/// `OwnedFd` for `target`, and no one can hand us one: that is the point.
pub(crate) fn replace_fd(target: RawFd, src: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: dup2 only reads its two integer arguments. `src` is a valid fd borrowed for the
    // call; `target` is an fd number this process owns and whose other holders never use it
    // again, so atomically replacing it cannot pull an fd from under live code.
    if unsafe { libc::dup2(src.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to `pid` (best effort: a process already gone is no error here).
pub(crate) fn kill(pid: i32, sig: i32) {
    if let (Some(pid), Some(sig)) = (
        rustix::process::Pid::from_raw(pid),
        rustix::process::Signal::from_named_raw(sig),
    ) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Makes the kernel send `sig` to the child `cmd` spawns when the spawning thread ends, and
/// clears the signal mask the child would inherit. `Command::pre_exec` is unsafe by nature (the
/// closure runs between fork and exec), so this lives here.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command, sig: i32) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (sigprocmask, prctl, getppid, kill on itself).
    unsafe {
        cmd.pre_exec(move || {
            // The parent's blocked SIGINT/SIGTERM/SIGHUP (and whatever the fork left blocked)
            // must not reach the command: it would never see the signals forwarded to it.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody will send the signal.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), sig);
            }
            Ok(())
        });
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (inherited by threads spawned
/// after it) and returns the set, for [`wait_signal_info`]. nix's `SigSet::wait` gives no
/// `siginfo`, which `veilfs run` needs to tell a terminal's signal from a process's.
pub(crate) fn block_run_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zeroed set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// The next signal of `set` (blocked), and whether the kernel sent it (a terminal) rather
/// than a process.
pub(crate) fn wait_signal_info(set: &libc::sigset_t) -> (i32, bool) {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is an initialised sigset; info is a valid out-pointer.
        let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
        if sig > 0 {
            return (sig, info.si_code == libc::SI_KERNEL);
        }
    }
}

/// Starts writing `fd`'s dirty pages to disk without waiting for them (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE` over the whole file): a large object's writeback then overlaps the
/// rest of its compression, and the fsync that makes it durable waits for the tail only. rustix
/// has no wrapper for it. A hint: the caller's fsync is what guarantees durability.
pub(crate) fn start_writeback(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments; `fd` is borrowed, so it is a
    // valid open fd for the whole call.
    if unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
