//! The relay inside the sandbox: `veilfs __egress-relay SOCKET -- COMMAND ARGS...`.
//!
//! The sandbox's network namespace has only a loopback, and HTTP clients want a TCP proxy
//! address, not a Unix socket. So the relay listens on an ephemeral port of `127.0.0.1` (inside
//! the sandbox), starts a copy of itself (`__egress-relay-serve`, the listener as its stdin)
//! that bridges every connection to the proxy's Unix socket, and then *becomes* the command
//! (exec) with `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` (and their lowercase forms) naming the
//! port. Exec rather than a child: the command keeps its place, so signals `veilfs run`
//! forwards and its exit status are the command's own, exactly as without egress. The bridge
//! dies with it (`PR_SET_PDEATHSIG`, and the sandbox's pid namespace ends with the command).
//!
//! Not a user command: `cli::main` intercepts [`HELPER_ARG`] and [`SERVE_ARG`] before parsing.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

/// `veilfs __egress-relay SOCKET -- COMMAND ARGS...`.
pub(crate) const HELPER_ARG: &str = "__egress-relay";
/// `veilfs __egress-relay-serve SOCKET`, the listener as stdin.
pub(crate) const SERVE_ARG: &str = "__egress-relay-serve";

/// The variables that point HTTP clients at the relay.
pub(crate) const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// The relay's arguments after [`HELPER_ARG`]: `SOCKET -- COMMAND ARGS...`.
pub(crate) fn helper_args(socket: &std::path::Path, command: &[OsString]) -> Vec<OsString> {
    let mut v = vec![HELPER_ARG.into(), socket.into(), "--".into()];
    v.extend(command.iter().cloned());
    v
}

/// The relay: listen, start the bridge, become the command. Returns only on failure.
pub(crate) fn helper_main(args: &[OsString]) -> ExitCode {
    let fail = |m: String| {
        eprintln!("veilfs: egress relay: {m}");
        ExitCode::from(127)
    };
    let (socket, command) = match args {
        [socket, dashes, command @ ..] if dashes == "--" && !command.is_empty() => {
            (socket, command)
        }
        _ => return fail("usage: __egress-relay SOCKET -- COMMAND ARGS...".into()),
    };
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
        Ok(l) => l,
        Err(e) => return fail(format!("listen on 127.0.0.1: {e}")),
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => return fail(format!("listen on 127.0.0.1: {e}")),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("find the veilfs binary: {e}")),
    };
    let mut bridge = Command::new(exe);
    bridge
        .arg(SERVE_ARG)
        .arg(socket)
        .stdin(Stdio::from(OwnedFd::from(listener)))
        .stdout(Stdio::null());
    crate::sys::die_with_parent(&mut bridge, libc::SIGKILL);
    if let Err(e) = bridge.spawn() {
        return fail(format!("start the bridge: {e}"));
    }
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    for v in PROXY_VARS {
        cmd.env(v, &url);
    }
    let e = cmd.exec();
    fail(format!("cannot run {}: {e}", command[0].to_string_lossy()))
}

/// The bridge: every connection to the listener (stdin) is copied to and from a new
/// connection to the proxy's Unix socket.
pub(crate) fn serve_main(args: &[OsString]) -> ExitCode {
    let [socket] = args else {
        eprintln!("veilfs: usage: {SERVE_ARG} SOCKET");
        return ExitCode::from(2);
    };
    let listener = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => TcpListener::from(fd),
        Err(e) => {
            eprintln!("veilfs: egress bridge: {e}");
            return ExitCode::from(1);
        }
    };
    for conn in listener.incoming() {
        let Ok(client) = conn else { continue };
        let socket = socket.clone();
        let _ = std::thread::Builder::new()
            .name("veilfs-egress-bridge".into())
            .spawn(move || match UnixStream::connect(&socket) {
                Ok(proxy) => {
                    let _ = super::proxy::splice(client, proxy);
                }
                Err(e) => eprintln!("veilfs: egress bridge: the proxy is gone: {e}"),
            });
    }
    ExitCode::SUCCESS
}
