//! The inputs of the engine benchmarks, shared by `cargo bench --bench redact` and
//! `examples/redact_speed.rs` so both measure the same bytes (each uses only some of it).
#![allow(dead_code)]

use veilfs::testing::samples::{Rng, cases};

pub const CODE: &[&str] = &[
    "use std::collections::HashMap;",
    "/// Parses one record from the reader and returns the number of bytes consumed.",
    "pub fn parse_record(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<usize> {",
    "    let mut header = [0u8; 16];",
    "    reader.read_exact(&mut header)?;",
    "    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;",
    "    if len > MAX_RECORD_LEN {",
    "        return Err(io::Error::new(io::ErrorKind::InvalidData, \"record too long\"));",
    "    }",
    "    buf.resize(len, 0);",
    "    reader.read_exact(&mut buf[..len])?;",
    "    Ok(len + header.len())",
    "}",
    "",
    "def handle_request(self, request):",
    "    user = self.session.get_user(request.user_id)",
    "    if not user.is_active:",
    "        raise PermissionDenied(\"inactive user\")",
    "    return render(request, \"dashboard.html\", {\"user\": user})",
    "export function debounce(fn, wait = 100) {",
    "  let timer = null;",
    "  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), wait); };",
    "}",
    "func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {",
    "\tctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)",
    "\tdefer cancel()",
    "\t// validate the session token before touching the store",
    "\tif err := s.store.Ping(ctx); err != nil { http.Error(w, err.Error(), 503); return }",
    "}",
];

/// Ordinary lines between secrets: "dense" means one secret every five lines.
pub const CONFIG_FILLER: &[u8] =
    b"log_level: info\nlisten: 0.0.0.0:8080\ntimeout_seconds: 30\nregion: eu-west-1\n";

pub fn source_code(size: usize) -> Vec<u8> {
    let mut rng = Rng::new(7);
    let mut s = Vec::with_capacity(size + 200);
    while s.len() < size {
        s.extend_from_slice(CODE[rng.below(CODE.len() as u64) as usize].as_bytes());
        s.push(b'\n');
    }
    s
}

pub fn dense_config(size: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(size + 4096);
    let mut seed = 1;
    while s.len() < size {
        for c in cases(seed) {
            s.extend_from_slice(c.positive.as_bytes());
            s.push(b'\n');
            s.extend_from_slice(CONFIG_FILLER);
        }
        seed += 1;
    }
    s
}

/// An engine with one provider rule: its scan is about one keyword pass, the floor under every
/// other engine's time on the same machine and minute.
pub fn one_rule_engine() -> veilfs::Engine {
    veilfs::Engine::from_sources(&[(
        "one.toml".into(),
        "version = 1\nname = \"one\"\n[[rules]]\nid = \"gh\"\nkeywords = ['ghp_']\nregex = 'ghp_[A-Za-z0-9]{36}'\n".into(),
    )])
    .expect("one rule")
}

/// A 1 MiB file where every fifth line is one of `rule_id`'s own samples (the per-rule floor).
pub fn dense_for_rule(rule_id: &str) -> Vec<u8> {
    let mut data = Vec::new();
    let mut seed = 2;
    while data.len() < 1 << 20 {
        for d in cases(seed).into_iter().filter(|d| d.rule_id == rule_id) {
            data.extend_from_slice(d.positive.as_bytes());
            data.push(b'\n');
            data.extend_from_slice(CONFIG_FILLER);
        }
        seed += 1;
    }
    data
}
