//! Mounting as a normal user. mount(2) of a FUSE filesystem needs CAP_SYS_ADMIN, so a normal
//! user's mount goes through the setuid `fusermount3` helper: it opens /dev/fuse, mounts it at
//! the mount point with the options it allows a user (`allow_other` only with `user_allow_other`
//! in /etc/fuse.conf), and hands the device fd back over a socket (`_FUSE_COMMFD`, SCM_RIGHTS).
//!
//! fuser can do this too, but only after opening /dev/fuse itself and seeing mount(2) fail
//! with EPERM: where /dev/fuse is `crw-------` (containers, hardened hosts) its open fails
//! first with EACCES and fuser gives up. So veilfs asks `fusermount3` directly whenever it is
//! not root, and serves the fd with `fuser::Session::from_fd`. The unmount is veilfs's own
//! either way (see [`crate::mount::unmount`], which falls back to `fusermount3 -u`).

use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

/// The environment variable through which `fusermount3` finds the socket to send the fd on.
const COMM_ENV: &str = "_FUSE_COMMFD";

/// Whether this process mounts through `fusermount3` (it is not root).
pub(crate) fn needed() -> bool {
    !rustix::process::geteuid().is_root()
}

/// One `-o` option string for `fusermount3`: `,` separates options and `\` escapes, as libfuse
/// reads them, so a scope path with a comma in the fsname stays one option.
pub(crate) fn option_string(options: &[String]) -> String {
    options
        .iter()
        .map(|o| o.replace('\\', "\\\\").replace(',', "\\,"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Mounts the FUSE device at `mountpoint` through `fusermount3` and returns the device fd.
pub(crate) fn mount(mountpoint: &Path, options: &[String]) -> io::Result<OwnedFd> {
    // The child's end must survive exec (no CLOEXEC); ours must not leak into other children.
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::empty(),
        None,
    )?;
    rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC)?;
    let bin = std::env::var_os("FUSERMOUNT_PATH").unwrap_or_else(|| "fusermount3".into());
    let mut cmd = Command::new(&bin);
    cmd.arg("-o")
        .arg(option_string(options))
        .arg("--")
        .arg(mountpoint)
        .env(COMM_ENV, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "run {} (install fuse3, or mount as root): {e}",
                bin.to_string_lossy()
            ),
        )
    })?;
    drop(theirs);
    let received = receive_fd(&ours);
    drop(ours);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait()?;
    match received {
        Ok(Some(fd)) if status.success() => Ok(fd),
        Ok(_) | Err(_) => {
            // fusermount3 opens /dev/fuse as the user on purpose: distributions ship it 0666,
            // some containers 0600.
            let hint = if stderr.contains("/dev/fuse") {
                " (a normal user's mount needs /dev/fuse readable and writable by the user, as distributions ship it: chmod 0666 /dev/fuse)"
            } else {
                ""
            };
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} failed ({status}): {}{hint}",
                    bin.to_string_lossy(),
                    stderr.trim()
                ),
            ))
        }
    }
}

/// The fd `fusermount3` sends (one byte of data carries it), or None when it exits without.
pub(crate) fn receive_fd(sock: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    for m in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_escape_commas_and_backslashes() {
        let o = option_string(&[
            "fsname=veilfs:/a,b\\c".to_string(),
            "default_permissions".to_string(),
        ]);
        assert_eq!(o, "fsname=veilfs:/a\\,b\\\\c,default_permissions");
    }
}
