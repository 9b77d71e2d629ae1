//! Network egress under `veilfs run --sandbox` (issue #19): through veilfs' allow-list proxy
//! only, every connection audited; with nothing allowed, no proxy and no network at all.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn have_bwrap() -> bool {
    let ok = Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: bubblewrap (bwrap) is not installed; tests/run-all.sh installs it");
    }
    ok
}

/// The real python3 (not a shim that may want to write outside the sandbox).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tiny HTTP server on the host's 127.0.0.1: answers every request with `body` and keeps
/// each request head it got.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

fn server(body: &'static str) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h = heads.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            h.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Server { port, heads }
}

fn run(scope: &Path, data: &Path, opts: &[&str], script: &str) -> Output {
    Command::new(common::bin())
        .arg("run")
        .arg("--sandbox")
        .args(opts)
        .arg(scope)
        .arg("--")
        .args([&python(), "-c", script])
        .env("XDG_DATA_HOME", data)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .output()
        .expect("run veilfs run")
}

/// Every OCSF line of the store's audit trail.
fn audit_lines(store: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in fs::read_dir(store.join("audit")).unwrap().flatten() {
        for l in fs::read_to_string(e.path()).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                out.push(v);
            }
        }
    }
    out
}

const PROBE: &str = r#"
import os, socket, subprocess, sys, urllib.request, urllib.error
def get(url):
    try:
        return "OK " + urllib.request.urlopen(url, timeout=10).read().decode()
    except urllib.error.HTTPError as e:
        return "HTTP %d %s" % (e.code, e.read().decode().strip())
    except Exception as e:
        return "FAILED %s" % e
for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]:
    print("ENV", v, os.environ.get(v, "-"))
print("RUNDIR", sorted(os.listdir(os.path.dirname(os.getcwd()))))
print("ALLOWED", get("http://127.0.0.1:%s/allowed" % os.environ["P1"]))
print("NOTASKED", get("http://127.0.0.1:%s/other" % os.environ["P2"]))
print("TUNNEL", get("https://blocked.example.org/"))
try:
    socket.create_connection(("127.0.0.1", int(os.environ["P1"])), timeout=5).close()
    print("DIRECT connected")
except Exception as e:
    print("DIRECT failed", e)
sys.stdout.flush()
# The test binary may live under /tmp (the sandbox's own): the relay is the same binary.
v = os.environ["VEILFS"]
if not os.path.exists(v):
    v = os.path.join(os.path.dirname(os.getcwd()), "veilfs-egress-relay")
if os.path.exists(v):
    subprocess.run([v, "why"])
"#;

/// The profile allows two servers, the manifest asks for one: that one is reached through the
/// proxy (with the Host the URI named), the other is refused (403, the manifest's reason), a
/// name on neither list is refused as a CONNECT (the profile's reason), a direct connection
/// finds no network, and every decision is in the audit trail and in `veilfs why`.
#[test]
fn egress_goes_through_the_allow_list_proxy_only() {
    if !have_bwrap() {
        return;
    }
    let ok = server("egress-body-Q7mZr2Kx");
    let other = server("other-body-Vb81TqLw");
    let dir = tempfile::tempdir().unwrap();
    let scope = dir.path().join("scope");
    fs::create_dir(&scope).unwrap();
    fs::write(scope.join("a.txt"), "hello\n").unwrap();
    let data = dir.path().join("data");
    let store = dir.path().join("store");
    let profile = common::write_profile(
        dir.path(),
        "net.toml",
        &format!(
            "version = 1\n[network]\nallow = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            ok.port, other.port
        ),
    );
    let manifest = dir.path().join("m.json");
    fs::write(
        &manifest,
        format!(
            r#"{{"name": "t", "version": "1", "capabilities": {{"files": {{"read": ["**"]}},
               "network": {{"egress": ["http://127.0.0.1:{}"]}}}}}}"#,
            ok.port
        ),
    )
    .unwrap();
    let script = format!(
        "import os; os.environ['P1'] = '{}'; os.environ['P2'] = '{}'; os.environ['VEILFS'] = '{}'\n{PROBE}",
        ok.port,
        other.port,
        common::bin()
    );
    let out = run(
        &scope,
        &data,
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        &script,
    );
    let o = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{o}{err}");
    let line = |k: &str| {
        o.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no {k} in {o}{err}"))
            .to_string()
    };
    assert!(line("ENV HTTPS_PROXY").contains("http://127.0.0.1:"), "{o}");
    assert!(line("ENV all_proxy").contains("http://127.0.0.1:"), "{o}");
    assert_eq!(
        line("ALLOWED"),
        "ALLOWED OK egress-body-Q7mZr2Kx",
        "{o}{err}"
    );
    let not_asked = line("NOTASKED");
    assert!(
        not_asked.starts_with("NOTASKED HTTP 403") && not_asked.contains("manifest"),
        "{o}{err}"
    );
    let tunnel = line("TUNNEL");
    assert!(tunnel.contains("403"), "{o}{err}");
    assert!(line("DIRECT").starts_with("DIRECT failed"), "{o}{err}");
    // The server got exactly one request, the allowed one, with the Host its URI named.
    let heads = ok.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /allowed HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[0].contains(&format!("Host: 127.0.0.1:{}\r\n", ok.port)),
        "{heads:?}"
    );
    assert!(other.heads.lock().unwrap().is_empty());
    // `veilfs why`, from inside the sandbox, explains both refusals.
    assert!(
        o.contains(&format!(
            "network connection refused: 127.0.0.1:{}",
            other.port
        )),
        "{o}"
    );
    assert!(
        o.contains("network connection refused: blocked.example.org:443"),
        "{o}"
    );
    assert!(o.contains("not on the profile's network allow-list"), "{o}");
    // The audit trail: one Network Activity event per decision.
    let net: Vec<_> = audit_lines(&store)
        .into_iter()
        .filter(|v| v["class_uid"] == 4001)
        .collect();
    let find = |host: &str, port: u64| {
        net.iter()
            .find(|v| v["dst_endpoint"]["hostname"] == host && v["dst_endpoint"]["port"] == port)
            .unwrap_or_else(|| panic!("no event for {host}:{port} in {net:#?}"))
    };
    let a = find("127.0.0.1", ok.port.into());
    assert_eq!(a["disposition"], "Allowed", "{a}");
    let r = find("127.0.0.1", other.port.into());
    assert_eq!(r["disposition"], "Blocked", "{r}");
    assert!(
        r["status_detail"]
            .as_str()
            .unwrap()
            .contains("capabilities.network.egress"),
        "{r}"
    );
    let t = find("blocked.example.org", 443);
    assert_eq!(t["disposition"], "Blocked", "{t}");
    assert_eq!(net.len(), 3, "{net:#?}");
    // The run's summary counts the refusals.
    assert!(err.contains("egress-refused"), "{err}");
}

/// Without an allow-list nothing changes: no proxy, no relay, no proxy variables, no network.
#[test]
fn without_an_allow_list_there_is_no_proxy_and_no_network() {
    if !have_bwrap() {
        return;
    }
    let ok = server("egress-body-Zp4Nw8Yc");
    let dir = tempfile::tempdir().unwrap();
    let scope = dir.path().join("scope");
    fs::create_dir(&scope).unwrap();
    let data = dir.path().join("data");
    let store = dir.path().join("store");
    // A manifest that asks for the server changes nothing: the profile allows no network.
    let manifest = dir.path().join("m.json");
    fs::write(
        &manifest,
        format!(
            r#"{{"name": "t", "version": "1", "capabilities": {{"files": {{"read": ["**"]}},
               "network": {{"egress": ["http://127.0.0.1:{}"]}}}}}}"#,
            ok.port
        ),
    )
    .unwrap();
    let script = format!(
        "import os; os.environ['P1'] = '{}'; os.environ['P2'] = '{}'; os.environ['VEILFS'] = '{}'\n{PROBE}",
        ok.port,
        ok.port,
        common::bin()
    );
    let out = run(
        &scope,
        &data,
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        &script,
    );
    let o = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{o}{err}");
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        assert!(o.contains(&format!("ENV {v} -\n")), "{v} set:\n{o}");
    }
    let rundir = o.lines().find(|l| l.starts_with("RUNDIR")).unwrap();
    assert!(
        !rundir.contains("egress") && !rundir.contains("relay"),
        "{rundir}"
    );
    assert!(o.contains("ALLOWED FAILED"), "{o}{err}");
    assert!(o.contains("DIRECT failed"), "{o}{err}");
    assert!(ok.heads.lock().unwrap().is_empty());
    assert!(
        !audit_lines(&store).iter().any(|v| v["class_uid"] == 4001),
        "no proxy, no network events"
    );
}
