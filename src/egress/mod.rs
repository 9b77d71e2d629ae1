//! Network egress for `veilfs run --sandbox`: which destinations the agent may reach, and the
//! proxy through which it reaches them.
//!
//! The sandbox has no network of its own (`bwrap --unshare-net`: only a loopback). When the
//! profile's `[network] allow` names destinations, veilfs is the proxy: the mount process
//! ([`proxy`]) listens on a Unix socket outside the sandbox, the socket is bound into the
//! sandbox, and a relay inside ([`relay`], this binary in a hidden mode) bridges it to a
//! loopback TCP port that `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` name. Only HTTP CONNECT (for
//! https and any TLS) and plain-HTTP `GET`/`HEAD` with an absolute URI pass; every request is
//! decided here ([`AllowList::decide`]) and audited, and names are resolved by the proxy,
//! outside, so the sandbox needs no DNS.
//!
//! Why a proxy and not a network namespace with firewall rules: rules work on addresses, an
//! allow-list names hosts, and only a proxy sees the name the agent asked for (CONNECT's
//! authority) before anything is resolved or connected. It also needs no privileges.
//!
//! Allow-list entries (profile `[network] allow`, manifest `capabilities.network.egress`):
//! `host`, `host:port`, `*.domain[:port]` (any name below `domain`, not `domain` itself),
//! `[v6]:port`, or a URL `scheme://host[:port][/...]` (the path is ignored; `https` means port
//! 443, `http` 80). Without a port an entry allows 80 and 443. A destination is allowed when an
//! entry of the profile matches it and, under a manifest, an entry of the manifest too: the
//! agent gets at most what both allow.

pub(crate) mod proxy;
pub(crate) mod relay;

use std::fmt;

/// A host pattern of an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPat {
    /// This name or address exactly (lowercase, no trailing dot; IPv6 without brackets).
    Exact(String),
    /// Any name ending in `.<domain>` (the entry `*.domain`).
    Below(String),
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    host: HostPat,
    /// `None`: ports 80 and 443.
    port: Option<u16>,
    /// The entry as written, for messages.
    text: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A destination the agent asked for: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    pub host: String,
    pub port: u16,
}

impl Dest {
    /// The host as a URI writes it (an IPv6 address in brackets).
    pub(crate) fn uri_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uri_host(), self.port)
    }
}

/// A host name as the proxy compares it: lowercase, without a trailing dot; `None` when it is
/// neither a DNS name (letters, digits, `-`, `_`, dots) nor an IP address.
fn normal_host(h: &str) -> Option<String> {
    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    if h.is_empty() || h.len() > 253 {
        return None;
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Some(h);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    h.split('.').all(label_ok).then_some(h)
}

/// Splits `host[:port]` / `[v6][:port]`; the port must be 1..=65535 when present.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("`{p}` is not a port (1-65535)")),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_string())?;
        return match after {
            "" => Ok((h, None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((h, port(p)?)),
                None => Err(format!("unexpected `{a}` after the address")),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h, port(p)?)),
        // A bare IPv6 address (several colons) without brackets: no port.
        Some(_) if s.parse::<std::net::Ipv6Addr>().is_ok() => Ok((s, None)),
        Some(_) => Err("write an IPv6 address in brackets: `[::1]:8080`".into()),
        None => Ok((s, None)),
    }
}

/// Parses one allow-list entry (see the module doc for the forms).
pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let t = text.trim();
    let (scheme_port, rest) = match t.split_once("://") {
        Some((scheme, rest)) => {
            let p = match scheme.to_ascii_lowercase().as_str() {
                "https" | "wss" => 443,
                "http" | "ws" => 80,
                other => return Err(format!("unknown scheme `{other}` (http or https)")),
            };
            // The path, query and user part of a URL do not narrow a CONNECT: ignored.
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let authority = authority.rsplit('@').next().unwrap_or("");
            (Some(p), authority)
        }
        None => (None, t),
    };
    let (host, port) = split_host_port(rest)?;
    let port = port.or(scheme_port);
    let host = if let Some(domain) = host.strip_prefix("*.") {
        let d = normal_host(domain).ok_or_else(|| format!("`{domain}` is not a host name"))?;
        if !d.contains('.') && d.parse::<std::net::IpAddr>().is_err() {
            // `*.com`: a whole top-level domain is not an allow-list.
            return Err(format!("`*.{d}` is too wide (name a domain below a TLD)"));
        }
        HostPat::Below(d)
    } else if host.contains('*') {
        return Err("`*` is only allowed as a leading `*.` (e.g. `*.example.com`)".into());
    } else {
        HostPat::Exact(normal_host(host).ok_or_else(|| format!("`{host}` is not a host name"))?)
    };
    Ok(Endpoint {
        host,
        port,
        text: t.to_string(),
    })
}

impl Endpoint {
    fn matches(&self, d: &Dest) -> bool {
        let port_ok = match self.port {
            Some(p) => p == d.port,
            None => d.port == 80 || d.port == 443,
        };
        port_ok
            && match &self.host {
                HostPat::Exact(h) => *h == d.host,
                HostPat::Below(dom) => below(&d.host, dom),
            }
    }
}

/// Whether `name` is a name below `domain` (`a.example.com` below `example.com`).
fn below(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|pre| pre.len() > 1 && pre.ends_with('.'))
}

/// What the proxy answers a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Allowed by these entries (the profile's, and the manifest's when there is one).
    Allowed(String),
    Refused(String),
}

/// The destinations the agent may reach: the profile's entries, narrowed by the manifest's.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowList {
    profile: Vec<Endpoint>,
    /// `None`: no manifest (the profile alone decides); `Some(empty)`: it asks for nothing.
    manifest: Option<Vec<Endpoint>>,
}

impl AllowList {
    /// Compiles the profile's `[network] allow` and, when there is a manifest, its egress list.
    pub(crate) fn new(profile: &[String], manifest: Option<&[String]>) -> Result<Self, String> {
        let parse = |list: &[String], whose: &str| {
            list.iter()
                .map(|e| parse_endpoint(e).map_err(|m| format!("{whose} network entry `{e}`: {m}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(AllowList {
            profile: parse(profile, "profile")?,
            manifest: manifest.map(|m| parse(m, "manifest")).transpose()?,
        })
    }

    /// Whether anything at all can be allowed (else no proxy is started).
    pub(crate) fn is_empty(&self) -> bool {
        self.profile.is_empty() || self.manifest.as_ref().is_some_and(Vec::is_empty)
    }

    /// The decision for one destination, with the reason in plain words.
    pub(crate) fn decide(&self, d: &Dest) -> Decision {
        let Some(p) = self.profile.iter().find(|e| e.matches(d)) else {
            return Decision::Refused(format!(
                "{d} is not on the profile's network allow-list ([network] allow)"
            ));
        };
        match &self.manifest {
            None => Decision::Allowed(format!("profile allows `{p}`")),
            Some(m) => match m.iter().find(|e| e.matches(d)) {
                Some(e) => Decision::Allowed(format!("profile allows `{p}`, manifest asks `{e}`")),
                None => Decision::Refused(format!(
                    "{d} is not on the agent's manifest (capabilities.network.egress)"
                )),
            },
        }
    }
}

/// How much of one manifest egress entry the profile's allow-list grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// All of it (the reason names the profile entry).
    All(String),
    /// Only what the profile allows too.
    Part(String),
    None(String),
}

/// The profile's answer to one manifest egress entry, for the consent screen.
pub(crate) fn coverage(profile: &[String], asked: &str) -> Coverage {
    let Ok(a) = parse_endpoint(asked) else {
        return Coverage::None("not an endpoint veilfs understands".into());
    };
    let profile: Vec<Endpoint> = profile
        .iter()
        .filter_map(|p| parse_endpoint(p).ok())
        .collect();
    if profile.is_empty() {
        return Coverage::None(
            "the profile allows no network ([network] allow is empty); under `veilfs run \
             --sandbox` the agent has none"
                .into(),
        );
    }
    let ports = |e: &Endpoint| e.port.map_or(vec![80, 443], |p| vec![p]);
    let covers = |p: &Endpoint| {
        let host = match (&p.host, &a.host) {
            (HostPat::Exact(x), HostPat::Exact(y)) => x == y,
            (HostPat::Below(x), HostPat::Exact(y)) => below(y, x),
            (HostPat::Below(x), HostPat::Below(y)) => x == y || below(y, x),
            (HostPat::Exact(_), HostPat::Below(_)) => false,
        };
        host && ports(&a).iter().all(|q| ports(p).contains(q))
    };
    let overlaps = |p: &Endpoint| {
        let host = match (&p.host, &a.host) {
            (HostPat::Exact(x), HostPat::Exact(y)) => x == y,
            (HostPat::Below(x), HostPat::Exact(y)) => below(y, x),
            (HostPat::Exact(x), HostPat::Below(y)) => below(x, y),
            (HostPat::Below(x), HostPat::Below(y)) => x == y || below(y, x) || below(x, y),
        };
        host && ports(&a).iter().any(|q| ports(p).contains(q))
    };
    if let Some(p) = profile.iter().find(|p| covers(p)) {
        Coverage::All(format!(
            "through veilfs' proxy under `veilfs run --sandbox` (profile allows `{p}`); every \
             connection is audited"
        ))
    } else if let Some(p) = profile.iter().find(|p| overlaps(p)) {
        Coverage::Part(format!(
            "only what the profile allows too (e.g. `{p}`), through veilfs' proxy under \
             `veilfs run --sandbox`"
        ))
    } else {
        Coverage::None("not on the profile's network allow-list ([network] allow)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(h: &str, p: u16) -> Dest {
        Dest {
            host: h.into(),
            port: p,
        }
    }

    fn allowed(l: &AllowList, h: &str, p: u16) -> bool {
        matches!(l.decide(&d(h, p)), Decision::Allowed(_))
    }

    #[test]
    fn entries_parse_and_match() {
        let l = AllowList::new(
            &[
                "https://api.example.com/v1".into(),
                "*.pypi.org".into(),
                "127.0.0.1:8080".into(),
                "[::1]:9000".into(),
                "Plain.Example.NET.".into(),
            ],
            None,
        )
        .unwrap();
        assert!(allowed(&l, "api.example.com", 443));
        assert!(!allowed(&l, "api.example.com", 80), "https means 443 only");
        assert!(!allowed(&l, "example.com", 443));
        assert!(!allowed(&l, "evil-api.example.com", 443));
        assert!(allowed(&l, "files.pypi.org", 443));
        assert!(allowed(&l, "a.b.pypi.org", 80));
        assert!(
            !allowed(&l, "pypi.org", 443),
            "*. does not cover the domain itself"
        );
        assert!(!allowed(&l, "xpypi.org", 443));
        assert!(
            !allowed(&l, "files.pypi.org", 22),
            "no port: 80 and 443 only"
        );
        assert!(allowed(&l, "127.0.0.1", 8080));
        assert!(!allowed(&l, "127.0.0.1", 8081));
        assert!(allowed(&l, "::1", 9000));
        assert!(allowed(&l, "plain.example.net", 80));
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in [
            "*.com",
            "a*b.com",
            "ftp://x.com",
            "x.com:0",
            "x.com:99999",
            "fe80::1%eth0",
            "[::1",
            "exa mple.com",
            "",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_manifest_narrows_and_never_widens() {
        let profile = vec!["*.example.com".to_string(), "127.0.0.1:8080".to_string()];
        let l = AllowList::new(&profile, Some(&["https://api.example.com".into()])).unwrap();
        assert!(allowed(&l, "api.example.com", 443));
        assert!(!allowed(&l, "www.example.com", 443), "not asked for");
        assert!(!allowed(&l, "127.0.0.1", 8080), "not asked for");
        let l = AllowList::new(&profile, Some(&["evil.org".into()])).unwrap();
        assert!(!allowed(&l, "evil.org", 443), "asked for, not granted");
        match l.decide(&d("evil.org", 443)) {
            Decision::Refused(why) => assert!(why.contains("profile"), "{why}"),
            x => panic!("{x:?}"),
        }
        assert!(AllowList::new(&profile, Some(&[])).unwrap().is_empty());
        assert!(AllowList::new(&[], None).unwrap().is_empty());
        assert!(!AllowList::new(&profile, None).unwrap().is_empty());
    }

    #[test]
    fn consent_coverage() {
        let profile = vec!["*.corp.internal".to_string(), "pypi.org:443".to_string()];
        assert!(matches!(
            coverage(&profile, "https://llm.corp.internal"),
            Coverage::All(_)
        ));
        assert!(matches!(
            coverage(&profile, "https://evil.org"),
            Coverage::None(_)
        ));
        assert!(matches!(
            coverage(&[], "https://llm.corp.internal"),
            Coverage::None(_)
        ));
        // Asks 80 and 443, the profile allows 443 only: partly.
        assert!(matches!(coverage(&profile, "pypi.org"), Coverage::Part(_)));
    }
}
