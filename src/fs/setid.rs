//! The set-user-ID and set-group-ID bits a change clears.
//!
//! veilfs asks the kernel for `FUSE_HANDLE_KILLPRIV_V2` (see `init`). Without it, the kernel
//! asks the filesystem for `security.capability` (a GETXATTR round trip) before *every* write,
//! to decide whether the write must strip privileges: two round trips per `write(2)` instead of
//! one. With it the kernel asks once per inode and then leaves the stripping to the filesystem,
//! as Linux does for a native one:
//! - a write, truncate or `fallocate` by a process without `CAP_FSETID` clears the
//!   set-user-ID bit, and the set-group-ID bit when the group may execute the file;
//! - file capabilities (`security.capability`) go with any write: the real filesystem removes
//!   them itself when veilfs writes the real file;
//! - a `chown` clears both bits: the real filesystem does that too.
//!
//! The kernel tells veilfs whether the writer holds `CAP_FSETID` on a WRITE only (a flag); for
//! a truncate, an `O_TRUNC` open, `fallocate` and `copy_file_range` veilfs reads it from
//! `/proc/PID/status`, only when the file has a bit to clear, and counts it only for a process
//! in veilfs's own user namespace. A caller it cannot read is taken to lack it: the bits are
//! cleared, which is the safe side.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// CAP_FSETID's bit in the capability sets of `/proc/PID/status`.
const CAP_FSETID: u32 = 4;

/// The bits a change by a process without `CAP_FSETID` clears from `mode`: set-user-ID always,
/// set-group-ID only with group execute (without it, the bit marks mandatory locking).
pub(crate) fn bits_to_clear(mode: u32) -> u32 {
    let mut bits = mode & libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        bits |= libc::S_ISGID;
    }
    bits
}

/// Whether a process whose `/proc/PID/status` reads `status` holds `CAP_FSETID` in its
/// effective set; None when the line is missing or malformed.
pub(crate) fn status_has_fsetid(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_FSETID) != 0)
}

/// Who made a change, as far as clearing set-id bits goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Changer {
    /// The kernel said (a WRITE's `FUSE_WRITE_KILL_SUIDGID`): true when the bits go.
    Told(bool),
    /// The process with this pid (the request's): its capabilities decide.
    Process(u32),
}

impl Changer {
    /// Whether this change clears the set-id bits (asked only of a file that has some).
    pub(super) fn clears(self) -> bool {
        match self {
            Changer::Told(clear) => clear,
            // pid 0: the caller is outside veilfs's pid namespace.
            Changer::Process(0) => true,
            Changer::Process(pid) => {
                !(in_our_user_namespace(pid)
                    && std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|s| status_has_fsetid(&s))
                        .unwrap_or(false))
            }
        }
    }
}

/// Whether the process `pid` is in veilfs's user namespace. The capabilities its status shows
/// are relative to its own namespace: root in a namespace it made (`unshare -r`) shows every
/// capability, and the kernel, which checks against the initial namespace, would still clear
/// the bits. Unreadable: no.
fn in_our_user_namespace(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/user")),
        std::fs::read_link("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => false,
    }
}

/// Runs `register` (the ioctl that registers a backing file for FUSE passthrough) with
/// `CAP_FSETID` out of this thread's effective set, and puts it back after.
///
/// The kernel performs a passthrough file's reads and writes with the credentials of the
/// thread that registered its backing file, never asking veilfs. Registered by root as is,
/// every write through it would keep the set-id bits: a bit set on the file after the agent
/// opened it (by root, on a file the agent may write) would survive the agent's writes, where
/// Linux clears it for a writer without the capability. Without `CAP_FSETID` the real
/// filesystem clears the bits on each such write itself, as for any unprivileged writer.
/// (Files with a bit to clear when opened never pass through: see `open_file`.) Nothing else
/// those credentials do needs the capability. When the capability cannot be dropped, the file
/// is not registered (the caller serves it through veilfs instead).
pub(super) fn registered_without_fsetid<T>(
    register: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let held = capabilities(None)?;
    if !held.effective.contains(CapabilitySet::FSETID) {
        return register();
    }
    let mut without = held;
    without.effective.remove(CapabilitySet::FSETID);
    set_capabilities(None, without)?;
    let registered = register();
    if let Err(e) = set_capabilities(None, held) {
        // This thread's own writes to real files would clear set-id bits from now on.
        tracing::error!("cannot take CAP_FSETID back after registering a passthrough file: {e}");
    }
    registered
}

/// `security.capability` lookups answered: the kernel's check before a write, once per inode
/// when `FUSE_HANDLE_KILLPRIV_V2` took (reported at unmount).
static CAPABILITY_LOOKUPS: AtomicU64 = AtomicU64::new(0);

pub(super) fn note_lookup(name: &OsStr) {
    if name.as_encoded_bytes() == b"security.capability" {
        CAPABILITY_LOOKUPS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `security.capability` lookups answered so far in this process.
pub(crate) fn capability_lookups() -> u64 {
    CAPABILITY_LOOKUPS.load(Ordering::Relaxed)
}

impl VeilFs {
    /// After a change by `who` to the file `fd` (any descriptor of it, O_PATH too) of inode
    /// `ino`, whose stat after the change is `st`: clears the bits such a change clears.
    /// Returns the stat after that (`st` itself when nothing was cleared).
    pub(super) fn clear_setid_bits(
        &self,
        ino: u64,
        fd: BorrowedFd<'_>,
        st: Stat,
        who: Changer,
    ) -> Result<Stat, Errno> {
        let bits = bits_to_clear(st.mode);
        if st.kind() != Kind::File || bits == 0 || !who.clears() {
            return Ok(st);
        }
        backing::chmod_as(fd, Kind::File, st.perm() & !bits).map_err(|e| errno_of(&e))?;
        let after = backing::stat_fd(fd).map_err(|e| errno_of(&e))?;
        self.copies.note_own_change(&after);
        // The kernel keeps the old mode until its attributes expire: drop them (attributes
        // only, offset -1; a WRITE in progress holds the pages an invalidation would wait on).
        if let Some(n) = self.notifier.get() {
            let _ = n.inval_inode(INodeNo(ino), -1, 0);
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passthrough_file_is_registered_without_cap_fsetid_and_the_thread_gets_it_back() {
        use rustix::thread::{CapabilitySet, capabilities};
        let before = capabilities(None).unwrap();
        let during = registered_without_fsetid(|| Ok(capabilities(None)?)).unwrap();
        assert!(!during.effective.contains(CapabilitySet::FSETID));
        assert_eq!(capabilities(None).unwrap(), before);
    }

    #[test]
    fn setuid_always_goes_and_setgid_only_with_group_execute() {
        assert_eq!(bits_to_clear(libc::S_IFREG | 0o4755), libc::S_ISUID);
        assert_eq!(
            bits_to_clear(libc::S_IFREG | 0o6775),
            libc::S_ISUID | libc::S_ISGID
        );
        // Set-group-ID without group execute marks mandatory locking: kept.
        assert_eq!(bits_to_clear(libc::S_IFREG | 0o2764), 0);
        assert_eq!(bits_to_clear(libc::S_IFREG | 0o2774), libc::S_ISGID);
        assert_eq!(bits_to_clear(libc::S_IFREG | 0o1777), 0);
        assert_eq!(bits_to_clear(libc::S_IFREG | 0o0777), 0);
    }

    #[test]
    fn fsetid_is_read_from_the_effective_set() {
        let status = |eff: &str| format!("Name:\tsh\nCapInh:\t0\nCapPrm:\t1ff\nCapEff:\t{eff}\n");
        assert_eq!(status_has_fsetid(&status("000001ffffffffff")), Some(true));
        assert_eq!(status_has_fsetid(&status("0000000000000010")), Some(true));
        assert_eq!(status_has_fsetid(&status("0000000000000000")), Some(false));
        // Everything but CAP_FSETID.
        assert_eq!(status_has_fsetid(&status("000001ffffffffef")), Some(false));
        assert_eq!(status_has_fsetid("Name:\tsh\n"), None);
        assert_eq!(status_has_fsetid(&status("zz")), None);
    }

    #[test]
    fn a_caller_that_cannot_be_read_loses_the_bits() {
        assert!(Changer::Process(0).clears());
        // No such process (pids stop well below this).
        assert!(Changer::Process(u32::MAX - 1).clears());
        assert!(Changer::Told(true).clears());
        assert!(!Changer::Told(false).clears());
        // This test process: as root it holds CAP_FSETID, as a normal user not.
        let me = Changer::Process(std::process::id());
        assert_eq!(me.clears(), !rustix::process::geteuid().is_root());
    }

    /// Root of a user namespace of its own shows every capability in its status, but the
    /// kernel would clear the bits for it: so does veilfs.
    #[test]
    fn root_of_another_user_namespace_loses_the_bits() {
        assert!(in_our_user_namespace(std::process::id()));
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["-r", "sleep", "5"])
            .spawn()
        else {
            panic!("unshare (util-linux) is needed");
        };
        let pid = child.id();
        // The child is `sleep` in its namespace once /proc shows a namespace other than ours.
        let moved = (0..1000).any(|_| {
            let done = !in_our_user_namespace(pid)
                && std::fs::read_link(format!("/proc/{pid}/ns/user")).is_ok();
            if !done {
                std::thread::park_timeout(std::time::Duration::from_millis(5));
            }
            done
        });
        let clears = Changer::Process(pid).clears();
        let _ = child.kill();
        let _ = child.wait();
        assert!(moved, "unshare -r never entered a namespace of its own");
        assert!(clears);
    }
}
