//! Semantic validation of a deserialised profile: patterns compile, names and sizes make sense,
//! relative paths resolve against the profile's directory; each error and warning located at
//! the key or value it is about.

use std::path::Path;

use super::spans::SpanTree;
use super::{
    PROFILE_VERSION, Profile, ProfileError, ProfileWarning, Unscannable, WriteMode,
    unsupported_version,
};

/// 1-based line and column (in characters) of byte offset `off`.
pub(super) fn line_col(text: &str, off: usize) -> (usize, usize) {
    let off = off.min(text.len());
    let mut cut = off;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let before = &text[..cut];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// One step of a field path.
#[derive(Clone, Copy, Debug)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Idx(usize),
}

pub(super) fn path_string(path: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Idx(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Semantic validation with located errors.
pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    pub(super) tree: &'a SpanTree,
    pub(super) warnings: Vec<ProfileWarning>,
}

impl Validator<'_> {
    fn locate(&self, path: &[Seg<'_>]) -> (usize, usize) {
        // Fall back to the nearest ancestor that has a location.
        for n in (0..=path.len()).rev() {
            if let Some(span) = self.tree.span_of(&path[..n]) {
                return line_col(self.text, span.start);
            }
        }
        (1, 1)
    }

    fn error(&self, path: &[Seg<'_>], message: impl Into<String>) -> ProfileError {
        let (line, column) = self.locate(path);
        ProfileError::Invalid {
            origin: self.origin.to_string(),
            line,
            column,
            field: path_string(path),
            message: message.into(),
        }
    }

    fn warn(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        let (line, column) = self.locate(path);
        self.warnings.push(ProfileWarning {
            origin: self.origin.to_string(),
            line,
            column,
            field: path_string(path),
            message: message.into(),
        });
    }

    fn patterns(&self, path: &[Seg<'_>], pats: &[String]) -> Result<(), ProfileError> {
        for (i, p) in pats.iter().enumerate() {
            if let Err(msg) = crate::pattern::compile_pattern(p) {
                let mut at = path.to_vec();
                at.push(Seg::Idx(i));
                return Err(self.error(&at, format!("invalid pattern `{p}`: {msg}")));
            }
        }
        Ok(())
    }

    pub(super) fn run(mut self, p: &mut Profile, base: Option<&Path>) -> Result<(), ProfileError> {
        use Seg::{Idx, Key};
        if p.version != PROFILE_VERSION {
            return Err(self.error(&[Key("version")], unsupported_version(i64::from(p.version))));
        }
        if p.name.trim().is_empty() {
            p.name = Path::new(self.origin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty() && !s.starts_with('<'))
                .unwrap_or_else(|| "unnamed".to_string());
        }

        // [visibility]
        let vis = &mut p.visibility;
        self.patterns(&[Key("visibility"), Key("deny")], &vis.deny)?;
        self.patterns(&[Key("visibility"), Key("allow")], &vis.allow)?;
        if vis.max_file_size == Some(0) {
            self.warn(
                &[Key("visibility"), Key("max_file_size")],
                "max_file_size = 0 hides every non-empty file",
            );
        }
        for (i, d) in vis.dirs.iter_mut().enumerate() {
            let at = [Key("visibility"), Key("dir"), Idx(i)];
            match crate::pattern::normalize_dir(&d.path) {
                Ok(norm) => d.path = norm,
                Err(msg) => {
                    return Err(self.error(
                        &[at[0], at[1], at[2], Key("path")],
                        format!("invalid directory `{}`: {msg}", d.path),
                    ));
                }
            }
            self.patterns(&[at[0], at[1], at[2], Key("deny")], &d.deny)?;
            self.patterns(&[at[0], at[1], at[2], Key("allow")], &d.allow)?;
            if d.deny.is_empty() && d.allow.is_empty() {
                self.warn(
                    &at,
                    format!("rules for `{}` have neither deny nor allow", d.path),
                );
            }
        }

        // [redaction]
        let red = &mut p.redaction;
        for (i, name) in red.rule_sets.iter().enumerate() {
            let at = [Key("redaction"), Key("rule_sets"), Idx(i)];
            if name.trim().is_empty() {
                return Err(self.error(&at, "empty rule set name"));
            }
            if red.rule_sets[..i].contains(name) {
                self.warn(&at, format!("rule set `{name}` is listed twice"));
            }
        }
        for (i, f) in red.rule_files.iter_mut().enumerate() {
            let at = [Key("redaction"), Key("rule_files"), Idx(i)];
            if f.as_os_str().is_empty() {
                return Err(self.error(&at, "empty rule file path"));
            }
            if let Some(base) = base {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
                if !f.exists() {
                    self.warn(&at, format!("rule file {} does not exist", f.display()));
                }
            }
        }
        if red.max_scan_size == 0 {
            return Err(self.error(
                &[Key("redaction"), Key("max_scan_size")],
                "max_scan_size must be greater than 0 (use unscannable = \"allow\" to skip scanning)",
            ));
        }
        self.patterns(
            &[Key("redaction"), Key("unscannable_allow")],
            &red.unscannable_allow,
        )?;
        self.patterns(&[Key("redaction"), Key("opaque")], &red.opaque)?;
        if red.unscannable == Unscannable::Allow && !red.unscannable_allow.is_empty() {
            self.warn(
                &[Key("redaction"), Key("unscannable_allow")],
                "unscannable_allow has no effect when unscannable = \"allow\"",
            );
        }

        // [write]
        let w = &mut p.write;
        self.patterns(&[Key("write"), Key("writable")], &w.writable)?;
        if w.mode == WriteMode::ReadOnly && !w.writable.is_empty() {
            self.warn(
                &[Key("write"), Key("writable")],
                "writable patterns have no effect while mode = \"read-only\" (unless --mode overrides it)",
            );
        }
        if let Some(store) = &mut w.store {
            if store.as_os_str().is_empty() {
                return Err(self.error(&[Key("write"), Key("store")], "empty store path"));
            }
            if let Some(base) = base
                && store.is_relative()
            {
                *store = base.join(&*store);
            }
        }
        if w.store_quota == Some(0) {
            return Err(self.error(
                &[Key("write"), Key("store_quota")],
                "store_quota must be greater than 0 (omit it for no quota)",
            ));
        }

        // [approval]
        let a = &p.approval;
        self.patterns(&[Key("approval"), Key("paths")], &a.paths)?;
        if a.timeout_secs == 0 && (!a.ops.is_empty() || !a.paths.is_empty()) {
            return Err(self.error(
                &[Key("approval"), Key("timeout_secs")],
                "timeout_secs must be greater than 0 (every request would be refused at once)",
            ));
        }
        if (!a.ops.is_empty() || !a.paths.is_empty()) && p.write.mode == WriteMode::ReadOnly {
            self.warn(
                &[Key("approval")],
                "approvals have no effect while mode = \"read-only\" (unless --mode overrides it)",
            );
        }
        // [network]
        let n = &p.network;
        for (i, e) in n.allow.iter().enumerate() {
            if let Err(m) = crate::egress::parse_endpoint(e) {
                return Err(self.error(
                    &[Key("network"), Key("allow"), Idx(i)],
                    format!("`{e}`: {m}"),
                ));
            }
        }
        if let Some(u) = &n.proxy {
            if let Err(m) = crate::egress::proxy::parse_upstream(u) {
                return Err(self.error(&[Key("network"), Key("proxy")], m));
            }
            if n.allow.is_empty() {
                self.warn(
                    &[Key("network"), Key("proxy")],
                    "proxy has no effect while [network] allow is empty (no network at all)",
                );
            }
        }
        // [decoys]
        let d = &p.decoys;
        for (i, path) in d.paths.iter().enumerate() {
            let at = [Key("decoys"), Key("paths"), Idx(i)];
            if let Err(msg) = crate::decoy::check_path(path) {
                return Err(self.error(&at, format!("invalid decoy path `{path}`: {msg}")));
            }
            // One path may not be a decoy file and a directory above another decoy.
            if let Some(other) = d.paths.iter().find(|o| {
                o.len() > path.len()
                    && o.starts_with(path.as_str())
                    && o.as_bytes()[path.len()] == b'/'
            }) {
                return Err(self.error(
                    &at,
                    format!("decoy `{path}` is a directory of decoy `{other}`"),
                ));
            }
            if d.paths[..i].contains(path) {
                self.warn(&at, format!("decoy `{path}` is listed twice"));
            }
        }
        if !d.enabled && (!d.paths.is_empty() || d.trip_breaker) {
            self.warn(
                &[Key("decoys")],
                "decoys have no effect while enabled = false",
            );
        }

        p.warnings = self.warnings;
        Ok(())
    }
}
