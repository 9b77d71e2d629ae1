//! Agent manifests: what an agent declares it needs (files to read and write, network
//! endpoints, commands), in JSON or TOML, validated with FILE:LINE:COLUMN errors.
//!
//! A manifest never grants anything by itself: `mount --manifest` and `run --manifest` intersect
//! it with the profile ([`crate::policy::Policy::with_manifest`]), so the agent gets at most what
//! both allow. `veilfs consent` tells a person, in plain words, what the agent asks for and what
//! it will get ([`consent_screen`]).
//!
//! # Schema
//!
//! ```json
//! {"name": "project-helper", "version": "1.0.0", "description": "optional",
//!  "capabilities": {
//!    "files":   {"read": ["src/**", "*.md"], "write": ["src/**"]},
//!    "network": {"egress": ["https://api.corporate.internal"], "ingress": []},
//!    "exec":    {"allowed_commands": ["cargo", "git"]}}}
//! ```
//! `name` and `version` are required; every list may be left out (empty). File globs use the
//! profile's pattern language, relative to the scope (see [`crate::policy`]): `*.md` matches at
//! any depth, `/docs` or `src/**` are anchored at the scope root, `docs/` covers a directory's
//! whole subtree, `!x` takes back. A path the manifest may write it may also read.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use crate::pattern::compile_pattern;
use crate::policy::{EntryKind, Policy};
use crate::profile::WriteMode;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capabilities {
    #[serde(default)]
    pub files: Files,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub exec: Exec,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Files {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    #[serde(default)]
    pub egress: Vec<String>,
    #[serde(default)]
    pub ingress: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exec {
    #[serde(default)]
    pub allowed_commands: Vec<String>,
}

/// A manifest that cannot be used, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("{path}: cannot read manifest: {message}")]
    Read { path: String, message: String },
    #[error("{origin}:{line}:{column}: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        /// Dotted path of the field (`capabilities.files.read[1]`); "" for syntax errors.
        field: String,
        message: String,
    },
}

#[cfg(test)]
impl ManifestError {
    pub(crate) fn location(&self) -> Option<(usize, usize)> {
        match self {
            ManifestError::Read { .. } => None,
            ManifestError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }

    pub(crate) fn field(&self) -> &str {
        match self {
            ManifestError::Read { .. } => "",
            ManifestError::Invalid { field, .. } => field,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Toml,
}

impl Manifest {
    /// Reads and validates a manifest file (`.json` or `.toml`; otherwise JSON if it starts
    /// with `{`).
    pub(crate) fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let fmt = match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => Format::Toml,
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Toml,
        };
        parse(&text, &path.display().to_string(), fmt)
    }

    /// Parses JSON manifest text; `origin` names it in errors.
    #[cfg(test)]
    pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        parse(text, origin, Format::Json)
    }

    /// Parses TOML manifest text; `origin` names it in errors.
    #[cfg(test)]
    pub(crate) fn parse_toml(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        parse(text, origin, Format::Toml)
    }
}

fn parse(text: &str, origin: &str, fmt: Format) -> Result<Manifest, ManifestError> {
    let index = match fmt {
        Format::Json => json_index(text),
        Format::Toml => toml_index(text),
    };
    let err = |off: usize, field: String, message: String| {
        let (line, column) = line_col(text, off);
        ManifestError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            field,
            message,
        }
    };
    let m: Manifest = match fmt {
        Format::Json => serde_json::from_str(text).map_err(|e| {
            // serde_json points at the last byte it read (a key's closing quote), or just
            // before a value it rejected: skip to that value.
            let mut off = offset_of(text, e.line(), e.column().max(1));
            while text
                .as_bytes()
                .get(off)
                .is_some_and(u8::is_ascii_whitespace)
            {
                off += 1;
            }
            let field = if e.is_syntax() || e.is_eof() {
                String::new()
            } else {
                index.field_at(off)
            };
            // serde_json appends " at line L column C"; the location is already in front.
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            err(off, field, msg)
        })?,
        Format::Toml => toml::from_str(text).map_err(|e| {
            let off = e.span().map_or(0, |s| s.start);
            let msg = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            err(off, index.field_at(off), msg)
        })?,
    };
    // Semantic checks, located by the field's span.
    let at = |field: String, message: String| {
        let off = index.span_of(&field).map_or(0, |s| s.start);
        err(off, field, message)
    };
    if m.name.trim().is_empty() {
        return Err(at("name".into(), "must not be empty".into()));
    }
    if m.version.trim().is_empty() {
        return Err(at("version".into(), "must not be empty".into()));
    }
    let files = &m.capabilities.files;
    for (list, globs) in [("read", &files.read), ("write", &files.write)] {
        for (i, g) in globs.iter().enumerate() {
            if let Err(e) = compile_pattern(g) {
                return Err(at(
                    format!("capabilities.files.{list}[{i}]"),
                    format!("invalid pattern `{g}`: {e}"),
                ));
            }
        }
    }
    let net = &m.capabilities.network;
    for (list, items) in [("egress", &net.egress), ("ingress", &net.ingress)] {
        for (i, s) in items.iter().enumerate() {
            if s.trim().is_empty() || s.chars().any(char::is_whitespace) {
                return Err(at(
                    format!("capabilities.network.{list}[{i}]"),
                    format!("`{s}` is not an endpoint (a URL or host[:port], no spaces)"),
                ));
            }
        }
    }
    for (i, c) in m.capabilities.exec.allowed_commands.iter().enumerate() {
        if c.trim().is_empty() {
            return Err(at(
                format!("capabilities.exec.allowed_commands[{i}]"),
                "must not be empty".into(),
            ));
        }
    }
    Ok(m)
}

/// 1-based (line, column) of byte offset `off` (column counted in characters).
fn line_col(text: &str, off: usize) -> (usize, usize) {
    let off = off.min(text.len());
    let before = &text.as_bytes()[..off];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

/// Byte offset of 1-based `line`, `column`.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let col: usize = l
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(l.len(), |(b, _)| b);
            return off + col;
        }
        off += l.len();
    }
    text.len()
}

/// Where each key and value of a manifest text is, by dotted field path.
#[derive(Default, Debug)]
struct Index {
    spans: Vec<(String, Range<usize>)>,
}

impl Index {
    fn push(&mut self, path: &str, r: Range<usize>) {
        self.spans.push((path.to_string(), r));
    }

    /// The deepest field whose key or value contains `off`.
    fn field_at(&self, off: usize) -> String {
        self.spans
            .iter()
            .filter(|(_, r)| r.start <= off && off <= r.end)
            .max_by_key(|(p, r)| (p.len(), std::cmp::Reverse(r.len())))
            .map(|(p, _)| p.clone())
            .unwrap_or_default()
    }

    fn span_of(&self, path: &str) -> Option<Range<usize>> {
        // The value's span is recorded after the key's; prefer it.
        self.spans
            .iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A tolerant JSON walk recording the span of every key and value; stops at the first thing
/// that is not JSON (serde_json reports that one).
fn json_index(text: &str) -> Index {
    struct W<'a> {
        b: &'a [u8],
        i: usize,
        out: Index,
    }
    impl W<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        /// A string starting at `self.i` (a `"`); returns its contents (escapes kept raw).
        fn string(&mut self) -> Option<String> {
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let start = self.i + 1;
            self.i += 1;
            while self.i < self.b.len() {
                match self.b[self.i] {
                    b'\\' => self.i += 2,
                    b'"' => {
                        let s = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
                        self.i += 1;
                        return Some(s);
                    }
                    _ => self.i += 1,
                }
            }
            None
        }
        fn value(&mut self, path: &str) -> Option<()> {
            self.ws();
            let start = self.i;
            match *self.b.get(self.i)? {
                b'{' => {
                    self.i += 1;
                    loop {
                        self.ws();
                        if self.b.get(self.i) == Some(&b'}') {
                            self.i += 1;
                            break;
                        }
                        let kstart = self.i;
                        let key = self.string()?;
                        let p = join(path, &key);
                        self.out.push(&p, kstart..self.i);
                        self.ws();
                        if self.b.get(self.i) != Some(&b':') {
                            return None;
                        }
                        self.i += 1;
                        self.value(&p)?;
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    let mut n = 0;
                    loop {
                        self.ws();
                        if self.b.get(self.i) == Some(&b']') {
                            self.i += 1;
                            break;
                        }
                        self.value(&format!("{path}[{n}]"))?;
                        n += 1;
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                b'"' => {
                    self.string()?;
                }
                _ => {
                    while self.i < self.b.len() && !b",}] \t\r\n".contains(&self.b[self.i]) {
                        self.i += 1;
                    }
                }
            }
            self.out.push(path, start..self.i);
            Some(())
        }
    }
    let mut w = W {
        b: text.as_bytes(),
        i: 0,
        out: Index::default(),
    };
    let _ = w.value("");
    w.out
}

/// Every key and value of a TOML text with its span (none when the text is not TOML).
fn toml_index(text: &str) -> Index {
    use toml_edit::{ImDocument, Item, TableLike, Value};
    fn value(v: &Value, path: &str, out: &mut Index) {
        match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    value(x, &format!("{path}[{i}]"), out);
                }
            }
            Value::InlineTable(t) => table(t, path, out),
            _ => {}
        }
        if let Some(s) = v.span() {
            out.push(path, s);
        }
    }
    fn table(t: &dyn TableLike, path: &str, out: &mut Index) {
        for (k, _) in t.iter() {
            let Some((key, item)) = t.get_key_value(k) else {
                continue;
            };
            let p = join(path, key.get());
            if let Some(s) = key.span() {
                out.push(&p, s);
            }
            match item {
                Item::Value(v) => value(v, &p, out),
                Item::Table(t) => {
                    table(t, &p, out);
                    if let Some(s) = t.span() {
                        out.push(&p, s);
                    }
                }
                Item::ArrayOfTables(a) => {
                    for (i, t) in a.iter().enumerate() {
                        table(t, &format!("{p}[{i}]"), out);
                    }
                }
                Item::None => {}
            }
        }
    }
    let mut out = Index::default();
    if let Ok(doc) = ImDocument::parse(text.to_string()) {
        table(doc.as_table(), "", &mut out);
    }
    out
}

/// How one thing the agent asks for fares under the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Granted,
    /// Granted, but the profile still hides or protects some of it (the reason says what).
    Partly(String),
    Refused(String),
}

/// A concrete path that a pattern matches, to ask the profile about it (`src/**/*.rs` →
/// `src/any/x.rs`): the consent screen's best guess, labelled as such.
fn sample_path(glob: &str) -> String {
    let g = glob.trim_start_matches('/').trim_end_matches('/');
    let mut out = String::new();
    let mut chars = g.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str("any");
            }
            '*' | '?' => out.push('x'),
            '[' => {
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
                out.push('x');
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The profile's verdict on reading what `glob` asks for.
pub(crate) fn read_verdict(policy: &Policy, glob: &str) -> Verdict {
    if glob.starts_with('!') {
        return Verdict::Granted;
    }
    let sample = sample_path(glob);
    match policy.path_visibility(Path::new(&sample), EntryKind::File, 0, None) {
        Err(why) => Verdict::Refused(format!("the profile hides it (e.g. `{sample}`: {why})")),
        Ok(()) if policy.has_read_limits() => Verdict::Partly(
            "except what the profile hides (its deny list and allow-list still apply)".into(),
        ),
        Ok(()) => Verdict::Granted,
    }
}

/// The profile's verdict on writing what `glob` asks for.
pub(crate) fn write_verdict(policy: &Policy, glob: &str) -> Verdict {
    if glob.starts_with('!') {
        return Verdict::Granted;
    }
    if policy.mode() == WriteMode::ReadOnly {
        return Verdict::Refused("the profile is read-only: nothing can be written".into());
    }
    let sample = sample_path(glob);
    if let Err(why) = policy.path_visibility(Path::new(&sample), EntryKind::File, 0, None) {
        return Verdict::Refused(format!("the profile hides it (e.g. `{sample}`: {why})"));
    }
    if !policy.writable(Path::new(&sample)) {
        return Verdict::Refused(format!(
            "the profile does not let the agent change it (e.g. `{sample}`)"
        ));
    }
    Verdict::Partly(format!(
        "in {} mode: {}",
        policy.mode(),
        match policy.mode() {
            WriteMode::Overlay => "changes are kept apart until a person commits them",
            _ => "every change is snapshotted first and can be rolled back",
        }
    ))
}

/// What the consent screen needs to know besides the manifest and the policy.
pub(crate) struct ConsentContext<'a> {
    /// The profile's name, and where it came from.
    pub profile: &'a str,
    /// The profile's `[network] allow`.
    pub network_allow: &'a [String],
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Granted => f.write_str("granted"),
            Verdict::Partly(why) => write!(f, "granted, {why}"),
            Verdict::Refused(why) => write!(f, "REFUSED: {why}"),
        }
    }
}

/// The plain-language consent screen: what the agent asks for, what the profile grants, what
/// is refused.
pub(crate) fn consent_screen(m: &Manifest, policy: &Policy, ctx: &ConsentContext<'_>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let caps = &m.capabilities;
    let _ = writeln!(s, "Agent \"{}\" version {} asks for:", m.name, m.version);
    if let Some(d) = &m.description {
        let _ = writeln!(s, "  ({d})");
    }
    let _ = writeln!(
        s,
        "Checked against profile \"{}\" ({} mode).",
        ctx.profile,
        policy.mode()
    );
    let mut refused = Vec::new();

    let _ = writeln!(s, "\nFiles it wants to READ:");
    if caps.files.read.is_empty() && caps.files.write.is_empty() {
        let _ = writeln!(s, "  nothing: the agent will see no files at all");
    }
    for g in &caps.files.read {
        let v = read_verdict(policy, g);
        if let Verdict::Refused(why) = &v {
            refused.push(format!("read `{g}`: {why}"));
        }
        let _ = writeln!(s, "  {g:<28} {v}");
    }
    let _ = writeln!(s, "\nFiles it wants to CHANGE:");
    if caps.files.write.is_empty() {
        let _ = writeln!(s, "  nothing: every change will be refused");
    }
    for g in &caps.files.write {
        let v = write_verdict(policy, g);
        if let Verdict::Refused(why) = &v {
            refused.push(format!("change `{g}`: {why}"));
        }
        let _ = writeln!(s, "  {g:<28} {v}");
    }
    let _ = writeln!(
        s,
        "  It sees and changes only what both its manifest and the profile allow; secrets in \
         the files it reads stay masked."
    );

    let _ = writeln!(s, "\nNetwork:");
    let net = &caps.network;
    if net.egress.is_empty() && net.ingress.is_empty() {
        let _ = writeln!(s, "  nothing asked");
    }
    for e in &net.egress {
        let v = match crate::egress::coverage(ctx.network_allow, e) {
            crate::egress::Coverage::All(why) | crate::egress::Coverage::Part(why) => {
                Verdict::Partly(why)
            }
            crate::egress::Coverage::None(why) => Verdict::Refused(why),
        };
        if let Verdict::Refused(why) = &v {
            refused.push(format!("connect to `{e}`: {why}"));
        }
        let _ = writeln!(s, "  connect to {e:<28} {v}");
    }
    for e in &net.ingress {
        let why = "veilfs never lets connections in: the sandbox has no network of its own";
        refused.push(format!("accept connections `{e}`: {why}"));
        let _ = writeln!(s, "  accept connections: {e:<17} REFUSED: {why}");
    }
    if !net.egress.is_empty() || !net.ingress.is_empty() {
        let _ = writeln!(
            s,
            "  Network is granted only under `veilfs run --sandbox`, through veilfs' proxy \
             (every connection audited); without the sandbox veilfs does not control the \
             network at all."
        );
    }

    let _ = writeln!(s, "\nCommands:");
    if caps.exec.allowed_commands.is_empty() {
        let _ = writeln!(s, "  nothing asked");
    } else {
        for c in &caps.exec.allowed_commands {
            let _ = writeln!(s, "  run `{c}`");
        }
        let _ = writeln!(
            s,
            "  NOT DECIDED BY VEILFS: which commands an agent runs is outside veilfs' scope \
             (veilfs only guards files); use a sandbox or your agent's own settings."
        );
    }

    let _ = writeln!(s, "\nRefused (asked for, not granted):");
    if refused.is_empty() {
        let _ = writeln!(s, "  nothing");
    }
    for r in &refused {
        let _ = writeln!(s, "  - {r}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    const GOOD: &str = r#"{
  "name": "project-helper",
  "version": "1.0.0",
  "capabilities": {
    "files": {"read": ["src/**", "*.md"], "write": ["src/**"]},
    "network": {"egress": ["https://api.corporate.internal"], "ingress": []},
    "exec": {"allowed_commands": []}
  }
}"#;

    fn json_err(text: &str) -> ManifestError {
        Manifest::parse_json(text, "m.json").expect_err("should be rejected")
    }

    #[test]
    fn parses_the_article_shape() {
        let m = Manifest::parse_json(GOOD, "m.json").unwrap();
        assert_eq!(m.name, "project-helper");
        assert_eq!(m.capabilities.files.read, ["src/**", "*.md"]);
        assert_eq!(
            m.capabilities.network.egress,
            ["https://api.corporate.internal"]
        );
    }

    #[test]
    fn toml_is_the_same_schema() {
        let t = "name = \"h\"\nversion = \"1\"\n[capabilities.files]\nread = [\"docs/\"]\n";
        let m = Manifest::parse_toml(t, "m.toml").unwrap();
        assert_eq!(m.capabilities.files.read, ["docs/"]);
        assert!(m.capabilities.files.write.is_empty());
    }

    #[test]
    fn unknown_json_field_names_line_and_field() {
        let t = GOOD.replace(
            "\"write\": [\"src/**\"]",
            "\"write\": [\"src/**\"], \"exe\": []",
        );
        let e = json_err(&t);
        assert_eq!(e.location().unwrap().0, 5, "{e}");
        assert_eq!(e.field(), "capabilities.files.exe", "{e}");
        assert!(e.to_string().starts_with("m.json:5:"), "{e}");
        assert!(e.to_string().contains("unknown field `exe`"), "{e}");
    }

    #[test]
    fn bad_json_value_names_its_field() {
        let t = GOOD.replace("\"*.md\"", "3");
        let e = json_err(&t);
        assert_eq!(e.location().unwrap().0, 5, "{e}");
        assert_eq!(e.field(), "capabilities.files.read[1]", "{e}");
    }

    #[test]
    fn bad_glob_is_located() {
        let t = GOOD.replace("\"*.md\"", "\"[oops\"");
        let e = json_err(&t);
        assert_eq!(e.location().unwrap().0, 5, "{e}");
        assert_eq!(e.field(), "capabilities.files.read[1]", "{e}");
    }

    #[test]
    fn unknown_toml_field_names_line_and_field() {
        let t = "name = \"h\"\nversion = \"1\"\n[capabilities.network]\negres = []\n";
        let e = Manifest::parse_toml(t, "m.toml").unwrap_err();
        assert_eq!(e.location().unwrap().0, 4, "{e}");
        assert_eq!(e.field(), "capabilities.network.egres", "{e}");
    }

    #[test]
    fn missing_name_and_syntax_errors() {
        let e = json_err("{\"version\": \"1\"}");
        assert!(e.to_string().contains("missing field `name`"), "{e}");
        let e = json_err("{\n\"name\": \"x\",\n\"version\": }");
        assert_eq!(e.location().unwrap().0, 3, "{e}");
        let e = json_err("{\"name\": \" \", \"version\": \"1\"}");
        assert_eq!(e.field(), "name");
    }

    #[test]
    fn samples() {
        assert_eq!(sample_path("src/**/*.rs"), "src/any/x.rs");
        assert_eq!(sample_path("/docs/"), "docs");
        assert_eq!(sample_path(".env"), ".env");
    }

    #[test]
    fn consent_says_what_is_refused() {
        let m = Manifest::parse_json(
            &GOOD.replace("\"*.md\"", "\".env\"").replace(
                "\"allowed_commands\": []",
                "\"allowed_commands\": [\"cargo\"]",
            ),
            "m.json",
        )
        .unwrap();
        let p = Policy::new(&Profile::builtin_default()).unwrap();
        let s = consent_screen(
            &m,
            &p,
            &ConsentContext {
                profile: "default",
                network_allow: &[],
            },
        );
        assert!(s.contains("Agent \"project-helper\" version 1.0.0"), "{s}");
        assert!(s.contains("read `.env`: the profile hides it"), "{s}");
        assert!(
            s.contains("change `src/**`: the profile is read-only"),
            "{s}"
        );
        assert!(
            s.contains(
                "connect to `https://api.corporate.internal`: the profile allows no network"
            ),
            "{s}"
        );
        let allow = ["*.corporate.internal".to_string()];
        let s = consent_screen(
            &m,
            &p,
            &ConsentContext {
                profile: "default",
                network_allow: &allow,
            },
        );
        let line = s
            .lines()
            .find(|l| l.contains("connect to https://api.corporate.internal"))
            .unwrap();
        assert!(line.contains("granted, through veilfs' proxy"), "{s}");
        assert!(!s.contains("connect to `https://api"), "{s}");
        assert!(s.contains("outside veilfs' scope"), "{s}");
        let src_line = s
            .lines()
            .find(|l| l.trim_start().starts_with("src/**"))
            .unwrap();
        assert!(src_line.contains("granted"), "{s}");
    }
}
