//! The filtering proxy: runs in the mount process, outside the sandbox, on a Unix socket that
//! `veilfs run --sandbox` binds into the sandbox (see the [module doc](super)).
//!
//! What it accepts, and nothing else: `CONNECT host:port HTTP/1.x` (any TLS: the tunnel is
//! opened only to an allowed destination and never looked into) and `GET`/`HEAD` with an
//! absolute `http://` URI (forwarded with `Host` set from the URI, so an allowed address cannot
//! be asked for another virtual host, and `Connection: close`, so one connection is one
//! request). Any other method is 405, anything malformed 400, a header block over
//! [`MAX_HEAD`] bytes 431, a destination off the allow-list 403 with the reason in the body.
//! The request head must arrive within [`HEAD_TIMEOUT`]; a tunnel idle for [`IDLE_TIMEOUT`]
//! is closed. At most [`MAX_CONNECTIONS`] connections at once (503 beyond). Every decision is
//! handed to the caller's [`Report`] (the mount audits it as `AuditEvent::Egress`, with the
//! relay's process as the actor), so this module needs nothing of the audit trail.
//!
//! Names are resolved here, outside the sandbox (or by the upstream proxy, `[network] proxy`,
//! when one is set: then every allowed request goes through it).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tracing::warn;

use super::{AllowList, Decision, Dest, normal_host, split_host_port};

/// The largest request head (request line and headers) accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send its request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection to a destination (or the upstream proxy) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A tunnel with no traffic either way for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 128;

/// An upstream proxy (`[network] proxy = "http://host:port"`) every allowed request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    host: String,
    port: u16,
}

/// Parses `http://host:port` (the only form: veilfs speaks plain HTTP to the upstream proxy).
pub(crate) fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{s}`: the upstream proxy must be `http://host:port`"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = split_host_port(rest)?;
    let port = port.ok_or_else(|| format!("`{s}`: the upstream proxy needs a port"))?;
    let host = normal_host(host).ok_or_else(|| format!("`{host}` is not a host name"))?;
    Ok(Upstream { host, port })
}

/// One decision of the proxy. A request too malformed to name a destination has an empty
/// host and port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    pub host: String,
    pub port: u16,
    pub allowed: bool,
    pub reason: String,
    /// The connecting process (pid, uid, gid), from the socket's peer credentials.
    pub peer: Option<(u32, u32, u32)>,
}

/// Where the proxy reports each decision (on the connection's thread).
pub(crate) type Report = Arc<dyn Fn(&Connection) + Send + Sync>;

/// The listening proxy; its socket is removed when dropped.
pub(crate) struct Proxy {
    path: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `socket` (mode 0600) and serves every connection on its own thread.
pub(crate) fn serve(
    socket: &Path,
    allow: AllowList,
    upstream: Option<Upstream>,
    report: Report,
) -> anyhow::Result<Proxy> {
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("egress proxy: listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("chmod {}", socket.display()))?;
    let ctx = Arc::new(Ctx {
        allow,
        upstream,
        report,
        live: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("veilfs-egress".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                let ctx = ctx.clone();
                if ctx.live.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    ctx.live.fetch_sub(1, Ordering::SeqCst);
                    let mut s = s;
                    let _ = reply(&mut s, 503, "too many connections through the proxy");
                    continue;
                }
                let spawned = std::thread::Builder::new()
                    .name("veilfs-egress-conn".into())
                    .spawn({
                        let ctx = ctx.clone();
                        move || {
                            handle(s, &ctx);
                            ctx.live.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                if spawned.is_err() {
                    ctx.live.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .context("spawn the egress proxy thread")?;
    Ok(Proxy {
        path: socket.to_path_buf(),
    })
}

struct Ctx {
    allow: AllowList,
    upstream: Option<Upstream>,
    report: Report,
    live: AtomicUsize,
}

/// One parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Connect(Dest),
    /// `GET`/`HEAD` of `path` at `dest`; `headers` are the client's, minus the hop-by-hop ones
    /// and `Host`.
    Http {
        method: String,
        dest: Dest,
        path: String,
        headers: Vec<(String, String)>,
    },
}

/// A request the proxy will not serve: the status and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bad(pub u16, pub String);

/// Parses a request head (without its final empty line).
pub(crate) fn parse_head(head: &[u8]) -> Result<Head, Bad> {
    let bad = |m: &str| Bad(400, m.to_string());
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad("malformed request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("only HTTP/1.0 and HTTP/1.1 are spoken"));
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            return Err(bad("folded header lines are refused"));
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| bad("malformed header line"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(bad("malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let dest = |authority: &str, default_port: Option<u16>| -> Result<Dest, Bad> {
        if authority.contains('@') {
            return Err(bad("credentials in the target are refused"));
        }
        let (h, p) = split_host_port(authority).map_err(|m| bad(&m))?;
        let port = p
            .or(default_port)
            .ok_or_else(|| bad("CONNECT needs host:port"))?;
        let host = normal_host(h).ok_or_else(|| bad("the target is not a host name"))?;
        Ok(Dest { host, port })
    };
    match method {
        "CONNECT" => Ok(Head::Connect(dest(target, None)?)),
        "GET" | "HEAD" => {
            let rest = target
                .get(..7)
                .filter(|s| s.eq_ignore_ascii_case("http://"))
                .map(|_| &target[7..])
                .ok_or_else(|| {
                    bad("not a proxy request: want an absolute http:// URI (use CONNECT for https)")
                })?;
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let path = match path {
                "" => "/".to_string(),
                p if p.starts_with('/') => p.to_string(),
                p => format!("/{p}"),
            };
            let path = path.split('#').next().unwrap_or("/").to_string();
            let hop = [
                "host",
                "connection",
                "proxy-connection",
                "proxy-authorization",
                "keep-alive",
                "upgrade",
                "te",
            ];
            headers.retain(|(n, _)| !hop.iter().any(|h| n.eq_ignore_ascii_case(h)));
            Ok(Head::Http {
                method: method.to_string(),
                dest: dest(authority, Some(80))?,
                path,
                headers,
            })
        }
        m => Err(Bad(
            405,
            format!("`{m}` is not served: only CONNECT and GET/HEAD of http:// URIs"),
        )),
    }
}

/// Reads up to the end of the request head: (head without the blank line, bytes after it).
fn read_head(s: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>), Bad> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            buf.truncate(i);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(Bad(
                431,
                format!("the request head exceeds {MAX_HEAD} bytes"),
            ));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(Bad(400, "the connection closed inside the head".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Bad(408, format!("no complete request head: {e}"))),
        }
    }
}

fn reply(s: &mut impl Write, status: u16, why: &str) -> io::Result<()> {
    let text = match status {
        200 => "Connection Established",
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    if status == 200 {
        return s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    }
    let body = format!("veilfs: {why}\n");
    let allow = if status == 405 {
        "Allow: CONNECT, GET, HEAD\r\n"
    } else {
        ""
    };
    write!(
        s,
        "HTTP/1.1 {status} {text}\r\n{allow}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn handle(mut client: UnixStream, ctx: &Ctx) {
    // The relay in the sandbox (its pid as seen from here).
    let peer = rustix::net::sockopt::socket_peercred(client.as_fd())
        .ok()
        .map(|c| {
            (
                c.pid.as_raw_nonzero().get() as u32,
                c.uid.as_raw(),
                c.gid.as_raw(),
            )
        });
    let audit = |host: &str, port: u16, allowed: bool, reason: &str| {
        (ctx.report)(&Connection {
            host: host.to_string(),
            port,
            allowed,
            reason: reason.to_string(),
            peer,
        })
    };
    let _ = client.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = client.set_write_timeout(Some(HEAD_TIMEOUT));
    let head = read_head(&mut client).and_then(|(h, rest)| Ok((parse_head(&h)?, rest)));
    let (head, rest) = match head {
        Ok(x) => x,
        Err(Bad(status, why)) => {
            audit("", 0, false, &format!("{status}: {why}"));
            let _ = reply(&mut client, status, &why);
            return;
        }
    };
    let dest = match &head {
        Head::Connect(d) | Head::Http { dest: d, .. } => d.clone(),
    };
    match ctx.allow.decide(&dest) {
        Decision::Refused(why) => {
            audit(&dest.host, dest.port, false, &why);
            let _ = reply(&mut client, 403, &why);
        }
        Decision::Allowed(why) => {
            audit(&dest.host, dest.port, true, &why);
            if let Err(e) = forward(client, head, rest, ctx.upstream.as_ref()) {
                warn!("egress to {dest}: {e}");
            }
        }
    }
}

/// Connects to the first address of `host:port` that answers.
fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn forward(
    mut client: UnixStream,
    head: Head,
    rest: Vec<u8>,
    upstream: Option<&Upstream>,
) -> io::Result<()> {
    let (host, port) = match (upstream, &head) {
        (Some(u), _) => (u.host.as_str(), u.port),
        (None, Head::Connect(d) | Head::Http { dest: d, .. }) => (d.host.as_str(), d.port),
    };
    let mut server = match connect(host, port) {
        Ok(s) => s,
        Err(e) => {
            let _ = reply(
                &mut client,
                502,
                &format!("cannot connect to {host}:{port}: {e}"),
            );
            return Err(e);
        }
    };
    let _ = server.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = server.set_write_timeout(Some(HEAD_TIMEOUT));
    let mut early = Vec::new();
    match head {
        Head::Connect(d) => {
            if upstream.is_some() {
                write!(server, "CONNECT {d} HTTP/1.1\r\nHost: {d}\r\n\r\n")?;
                let (h, after) = read_head(&mut server).map_err(|Bad(_, m)| io::Error::other(m))?;
                let status = String::from_utf8_lossy(&h);
                let ok = status
                    .split(' ')
                    .nth(1)
                    .is_some_and(|c| c.len() == 3 && c.starts_with('2'));
                if !ok {
                    let line = status.lines().next().unwrap_or("").to_string();
                    let _ = reply(
                        &mut client,
                        502,
                        &format!("the upstream proxy said: {line}"),
                    );
                    return Err(io::Error::other(format!("upstream refused: {line}")));
                }
                early = after;
            }
            reply(&mut client, 200, "")?;
        }
        Head::Http {
            method,
            dest,
            path,
            headers,
        } => {
            // The default port is left out, as clients write it.
            let authority = match dest.port {
                80 => dest.uri_host(),
                _ => dest.to_string(),
            };
            let target = if upstream.is_some() {
                format!("http://{authority}{path}")
            } else {
                path
            };
            let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {authority}\r\n");
            for (n, v) in headers {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
            out.push_str("Connection: close\r\n\r\n");
            server.write_all(out.as_bytes())?;
        }
    }
    server.write_all(&rest)?;
    client.write_all(&early)?;
    splice(client, server)
}

/// A stream [`splice`] can copy both ways.
pub(crate) trait Duplex: Read + Write + Send + Sized + 'static {
    fn clone_stream(&self) -> io::Result<Self>;
    fn shut_write(&self);
    fn idle_after(&self, d: Duration);
}

impl Duplex for TcpStream {
    fn clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shut_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
    fn idle_after(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}

impl Duplex for UnixStream {
    fn clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shut_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
    fn idle_after(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions end (or idle out).
pub(crate) fn splice<A: Duplex, B: Duplex>(a: A, b: B) -> io::Result<()> {
    a.idle_after(IDLE_TIMEOUT);
    b.idle_after(IDLE_TIMEOUT);
    let (mut a2, mut b2) = (a.clone_stream()?, b.clone_stream()?);
    let back = std::thread::Builder::new()
        .name("veilfs-egress-copy".into())
        .spawn(move || {
            let _ = io::copy(&mut b2, &mut a2);
            a2.shut_write();
        })?;
    let (mut a, mut b) = (a, b);
    let _ = io::copy(&mut a, &mut b);
    b.shut_write();
    let _ = back.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_get_parse() {
        assert_eq!(
            parse_head(b"CONNECT api.Example.com:443 HTTP/1.1\r\nHost: x"),
            Ok(Head::Connect(Dest {
                host: "api.example.com".into(),
                port: 443
            }))
        );
        match parse_head(
            b"GET http://127.0.0.1:8080/a?b HTTP/1.1\r\nHost: evil\r\nProxy-Connection: keep-alive\r\nAccept: */*",
        ) {
            Ok(Head::Http {
                dest,
                path,
                headers,
                ..
            }) => {
                assert_eq!(dest.to_string(), "127.0.0.1:8080");
                assert_eq!(path, "/a?b");
                assert_eq!(headers, vec![("Accept".to_string(), "*/*".to_string())]);
            }
            x => panic!("{x:?}"),
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let status = |h: &[u8]| parse_head(h).err().map(|Bad(s, _)| s);
        assert_eq!(status(b"POST http://a.com/ HTTP/1.1"), Some(405));
        assert_eq!(status(b"GET /local HTTP/1.1"), Some(400));
        assert_eq!(status(b"GET https://a.com/ HTTP/1.1"), Some(400));
        assert_eq!(status(b"CONNECT a.com HTTP/1.1"), Some(400));
        assert_eq!(status(b"CONNECT user@a.com:443 HTTP/1.1"), Some(400));
        assert_eq!(status(b"CONNECT a.com:443 HTTP/2"), Some(400));
        assert_eq!(status(b"CONNECT a.com:443  HTTP/1.1"), Some(400));
        assert_eq!(status(b"CONNECT a.com:443 HTTP/1.1\r\n folded"), Some(400));
        assert_eq!(status(b"CONNECT a/b:443 HTTP/1.1"), Some(400));
    }

    #[test]
    fn heads_are_bounded() {
        let mut big = b"GET http://a.com/ HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_HEAD + 10));
        let r = read_head(&mut &big[..]);
        assert_eq!(r.err().map(|Bad(s, _)| s), Some(431));
        let (h, rest) = read_head(&mut &b"CONNECT a:1 HTTP/1.1\r\n\r\nTLS"[..]).unwrap();
        assert_eq!(
            (h.as_slice(), rest.as_slice()),
            (&b"CONNECT a:1 HTTP/1.1"[..], &b"TLS"[..])
        );
    }

    /// A fake upstream proxy on 127.0.0.1: records the head it gets, answers `answer`, then
    /// sends `after`.
    fn fake_upstream(
        answer: &'static str,
        after: &'static str,
    ) -> (Upstream, std::sync::mpsc::Receiver<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let (head, _) = read_head(&mut c).unwrap();
            tx.send(String::from_utf8(head).unwrap()).unwrap();
            c.write_all(answer.as_bytes()).unwrap();
            c.write_all(after.as_bytes()).unwrap();
        });
        (
            Upstream {
                host: "127.0.0.1".into(),
                port,
            },
            rx,
        )
    }

    fn through_proxy(upstream: Upstream, request: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("p.sock");
        let allow = AllowList::new(&["*.example.org".into()], None).unwrap();
        let _p = serve(&sock, allow, Some(upstream), Arc::new(|_: &Connection| {})).unwrap();
        let mut c = UnixStream::connect(&sock).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn allowed_requests_go_on_through_the_upstream_proxy() {
        let (up, heads) = fake_upstream("HTTP/1.1 200 OK\r\n\r\n", "from-upstream");
        let out = through_proxy(
            up,
            "GET http://www.example.org/x HTTP/1.1\r\nHost: other\r\nProxy-Authorization: no\r\n\r\n",
        );
        assert!(out.ends_with("from-upstream"), "{out}");
        let head = heads.recv().unwrap();
        assert_eq!(
            head,
            "GET http://www.example.org/x HTTP/1.1\r\nHost: www.example.org\r\nConnection: close"
        );
        let (up, heads) = fake_upstream("HTTP/1.1 200 Connection established\r\n\r\n", "tls");
        let out = through_proxy(up, "CONNECT api.example.org:443 HTTP/1.1\r\n\r\n");
        assert_eq!(out, "HTTP/1.1 200 Connection Established\r\n\r\ntls");
        assert!(
            heads
                .recv()
                .unwrap()
                .starts_with("CONNECT api.example.org:443 HTTP/1.1\r\n")
        );
        // The upstream refuses: the client gets 502, nothing else.
        let (up, _heads) = fake_upstream("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "x");
        let out = through_proxy(up, "CONNECT api.example.org:443 HTTP/1.1\r\n\r\n");
        assert!(
            out.starts_with("HTTP/1.1 502 ") && out.contains("407"),
            "{out}"
        );
        // Refused destinations never reach the upstream.
        let (up, heads) = fake_upstream("HTTP/1.1 200 OK\r\n\r\n", "");
        let out = through_proxy(up, "CONNECT evil.org:443 HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 403 Forbidden"), "{out}");
        assert!(heads.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn upstream_is_http_host_port() {
        assert_eq!(
            parse_upstream("http://proxy.corp:3128/"),
            Ok(Upstream {
                host: "proxy.corp".into(),
                port: 3128
            })
        );
        assert!(parse_upstream("https://proxy.corp:3128").is_err());
        assert!(parse_upstream("http://proxy.corp").is_err());
    }
}
