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
pub fn replace_fd(target: RawFd, src: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: dup2 only reads its two integer arguments. `src` is a valid fd borrowed for the
    // call; `target` is an fd number this process owns and whose other holders never use it
    // again, so atomically replacing it cannot pull an fd from under live code.
    if unsafe { libc::dup2(src.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
