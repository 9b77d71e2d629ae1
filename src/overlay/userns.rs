//! Overlay mode for a normal user: kernel overlayfs mounted in a user namespace of its own.
//!
//! Since Linux 5.11 overlayfs may be mounted by a user who holds CAP_SYS_ADMIN in the user
//! namespace that owns the mount namespace, with `userxattr` (its bookkeeping as user.overlay.*
//! xattrs, no directory redirects). A process joins a new user namespace only while it has one
//! thread, so a helper (`veilfs __overlay-userns`, this same binary) does it: it unshares a user
//! and a mount namespace (the user's own uid and gid mapped to themselves), mounts the overlay
//! with the new mount API and sends the detached mount's root fd back over a socket, then exits.
//! The mount is attached to no path in any namespace and lives as long as that fd: veilfs, in
//! the user's own namespaces, serves its view through it exactly as a root mount's.
//!
//! What a normal user's overlay gives up: renaming a directory that exists in the real folder
//! answers EXDEV (no redirects; `mv` falls back to copy and delete), and files the user does not
//! own cannot be copied up (their owner is not mapped in the namespace).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::Layout;

/// The hidden subcommand the helper runs as.
pub(crate) const HELPER_ARG: &str = "__overlay-userns";

/// The marker of a store whose overlay a normal user mounted (its xattrs are user.overlay.*).
fn marker(upper: &Path) -> PathBuf {
    upper
        .parent()
        .map_or_else(|| PathBuf::from("userxattr"), |p| p.join("userxattr"))
}

/// Does the overlay whose upper layer is `upper` keep its xattrs as user.overlay.*?
pub(crate) fn marked(upper: &Path) -> bool {
    marker(upper).exists()
}

/// Records (or clears, for root on clean layers) which xattrs the overlay of `layout` uses.
pub(super) fn set_marked(layout: &Layout, on: bool) -> super::Result<()> {
    use super::IoContext;
    let m = marker(&layout.upper);
    if on {
        std::fs::write(&m, b"").io("write", &m)
    } else {
        match std::fs::remove_file(&m) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).io("remove", &m),
            _ => Ok(()),
        }
    }
}

/// Mounts the overlay of `scope` kept in `store` through the helper; returns its root fd.
pub(super) fn mount(scope: &Path, store: &Path) -> io::Result<OwnedFd> {
    // The helper's stdin is its end of the socket.
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let exe = std::env::current_exe()?;
    let out = {
        let child = Command::new(&exe)
            .arg(HELPER_ARG)
            .arg(scope)
            .arg(store)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let fd = crate::fusermount::receive_fd(&ours);
        (fd, child.wait_with_output()?)
    };
    match out {
        (Ok(Some(fd)), o) if o.status.success() => Ok(fd),
        (_, o) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "in a user namespace ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        )),
    }
}

/// The helper's whole life: `veilfs __overlay-userns SCOPE STORE`, the socket as stdin.
pub(crate) fn helper_main(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    match helper(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn helper(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let [scope, store] = args else {
        anyhow::bail!("usage: veilfs {HELPER_ARG} SCOPE STORE (with a socket as stdin)");
    };
    let sock = std::io::stdin();
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
    )
    .context("unshare a user and mount namespace (are unprivileged user namespaces enabled?)")?;
    std::fs::write("/proc/self/setgroups", b"deny").context("/proc/self/setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).context("uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).context("gid_map")?;
    let layout = Layout::in_store(Path::new(store));
    let root = super::mount_overlay(Path::new(scope), &layout, true)
        .context("mount overlayfs (userxattr; Linux 5.11 or later)")?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds = [root.as_fd()];
    anc.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock.as_fd(),
        &[IoSlice::new(b"o")],
        &mut anc,
        SendFlags::empty(),
    )
    .context("send the overlay's fd")?;
    Ok(())
}
