//! The admin-written profile: a TOML file that says what the agent may see, what gets redacted,
//! whether it may write, and how the kernel may cache.
//!
//! # Why this module is strict
//!
//! A profile is a security boundary written by a human, often by copying an example and editing it.
//! A typo that silently does nothing (`hdie_special_files = true`, `deny = ["*.pem "]` in the wrong
//! table) is worse than a refusal to start. So:
//!
//! - every table rejects unknown keys (`#[serde(deny_unknown_fields)]`);
//! - every error, syntactic, schema or semantic, is reported as `FILE:LINE:COLUMN: FIELD: message`,
//!   pointing at the offending key or value (locations come from the TOML spans, see `SpanTree`);
//! - every glob is compiled while loading (with [`crate::pattern`], as [`crate::policy`] does), so a bad
//!   pattern fails `veilfs profile check`, not the first lookup;
//! - things that are legal but probably not meant (writable globs in read-only mode, a rule set
//!   listed twice, a missing rule file) are collected as [`ProfileWarning`]s.
//!
//! # Schema
//!
//! See `profiles/default.toml` for a commented example of every key. Sizes are either integers
//! (bytes) or strings with a unit: `"500 KB"` (decimal: B, KB, MB, GB, TB) or `"64 MiB"` (binary:
//! KiB, MiB, GiB, TiB); units are case-insensitive and fractions (`"1.5 GiB"`) are allowed.
//! Relative paths (`redaction.rule_files`, `write.store`) are resolved against the directory of
//! the profile file when it is loaded with [`Profile::load`].
//!
//! The visibility pattern language is documented in [`crate::policy`].

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The built-in default profile text (also shipped as `profiles/default.toml`).
pub const DEFAULT_PROFILE_TOML: &str = include_str!("../profiles/default.toml");

/// The only profile schema version this build understands.
pub const PROFILE_VERSION: u32 = 1;

/// A validated profile. Build it with [`Profile::load`], [`Profile::parse`] or
/// [`Profile::builtin_default`]; compile it into a [`crate::policy::Policy`] to query it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Schema version; must be 1.
    pub version: u32,
    /// Short name shown in logs and `veilfs log`; defaults to the file stem.
    #[serde(default)]
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub visibility: VisibilityCfg,
    #[serde(default)]
    pub redaction: RedactionCfg,
    #[serde(default)]
    pub write: WriteCfg,
    #[serde(default)]
    pub cache: CacheCfg,
    /// The file this profile was loaded from (`None` = built-in or parsed from a string).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Legal but suspicious settings found while loading (printed by `veilfs profile check`).
    #[serde(skip)]
    pub warnings: Vec<ProfileWarning>,
}

/// `[visibility]`: which entries of the real folder exist at all for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisibilityCfg {
    /// Gitignore-like patterns of entries to hide (see [`crate::policy`]).
    pub deny: Vec<String>,
    /// If non-empty, only files (and symlinks) matching are visible; directories stay traversable
    /// unless denied. A file is also allowed when one of its directories matches (`"docs/"`).
    pub allow: Vec<String>,
    /// Regular files larger than this are hidden.
    #[serde(
        deserialize_with = "size::de_opt",
        serialize_with = "size::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_file_size: Option<u64>,
    /// Hide devices, fifos and sockets (default true).
    pub hide_special_files: bool,
    /// Hide symlinks whose target leaves the scope (default true).
    pub hide_escaping_symlinks: bool,
    /// `[[visibility.dir]]`: extra rules for one directory's subtree.
    #[serde(rename = "dir")]
    pub dirs: Vec<DirRules>,
}

impl Default for VisibilityCfg {
    fn default() -> Self {
        VisibilityCfg {
            deny: Vec::new(),
            allow: Vec::new(),
            max_file_size: None,
            hide_special_files: true,
            hide_escaping_symlinks: true,
            dirs: Vec::new(),
        }
    }
}

/// `[[visibility.dir]]`: patterns relative to `path`, applied to the entries below it. Deeper rules
/// are evaluated after shallower ones, so (like nested `.gitignore` files) they win on conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirRules {
    /// Directory relative to the scope root (`"docs"`, `"src/generated"`); normalised on load.
    pub path: String,
    #[serde(default)]
    pub deny: Vec<String>,
    /// Replaces any shallower allow-list for this subtree (the most specific allow-list wins).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[redaction]`: what the redaction engine masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionCfg {
    /// Built-in rule sets by name (`"secrets"`, `"pii"`).
    pub rule_sets: Vec<String>,
    /// Extra rule files; relative paths resolve against the profile file's directory.
    #[serde(serialize_with = "paths::ser_vec")]
    pub rule_files: Vec<PathBuf>,
    /// Files above this size are not scanned (they are "unscannable"). Default 64 MiB.
    #[serde(deserialize_with = "size::de", serialize_with = "size::ser")]
    pub max_scan_size: u64,
    /// What to do with unscannable files (binary, or above `max_scan_size`). Default deny.
    pub unscannable: Unscannable,
    /// Patterns of files that may be served unscanned even when `unscannable = "deny"`.
    pub unscannable_allow: Vec<String>,
}

impl Default for RedactionCfg {
    fn default() -> Self {
        RedactionCfg {
            rule_sets: Vec::new(),
            rule_files: Vec::new(),
            max_scan_size: 64 * MIB,
            unscannable: Unscannable::Deny,
            unscannable_allow: Vec::new(),
        }
    }
}

/// Policy for files the redaction engine cannot vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unscannable {
    /// Refuse to open them (EACCES) unless they match `unscannable_allow`.
    #[default]
    Deny,
    /// Serve them as they are.
    Allow,
}

/// How writes through the mount are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// Every mutating operation answers EROFS.
    #[default]
    ReadOnly,
    /// Writes go to the real folder after the pre-image is stored and journaled.
    Snapshot,
    /// Writes go to a copy-on-write upper layer; the real folder changes only on `veilfs commit`.
    Overlay,
}

impl WriteMode {
    pub const ALL: [WriteMode; 3] = [WriteMode::ReadOnly, WriteMode::Snapshot, WriteMode::Overlay];

    /// The spelling used in profiles and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::ReadOnly => "read-only",
            WriteMode::Snapshot => "snapshot",
            WriteMode::Overlay => "overlay",
        }
    }
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`WriteMode::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown write mode `{0}`, expected one of `read-only`, `snapshot`, `overlay`")]
pub struct ParseWriteModeError(pub String);

impl FromStr for WriteMode {
    type Err = ParseWriteModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" | "readonly" | "ro" => Ok(WriteMode::ReadOnly),
            "snapshot" => Ok(WriteMode::Snapshot),
            "overlay" => Ok(WriteMode::Overlay),
            other => Err(ParseWriteModeError(other.to_string())),
        }
    }
}

/// `[write]`: whether and how the agent may change things.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteCfg {
    pub mode: WriteMode,
    /// Patterns of paths that may change; empty = the whole visible tree (when mode != read-only).
    pub writable: Vec<String>,
    /// Files bigger than this are not snapshotted in place; their writes divert to the overlay.
    #[serde(deserialize_with = "size::de", serialize_with = "size::ser")]
    pub snapshot_max_size: u64,
    /// Snapshot/overlay store; `None` = `$XDG_DATA_HOME/veilfs/<scope-id>`. Relative paths
    /// resolve against the profile file's directory.
    #[serde(
        serialize_with = "paths::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub store: Option<PathBuf>,
    /// Upper bound on the store size.
    #[serde(
        deserialize_with = "size::de_opt",
        serialize_with = "size::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub store_quota: Option<u64>,
}

impl Default for WriteCfg {
    fn default() -> Self {
        WriteCfg {
            mode: WriteMode::ReadOnly,
            writable: Vec::new(),
            snapshot_max_size: GIB,
            store: None,
            store_quota: None,
        }
    }
}

/// `[cache]`: kernel cache lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheCfg {
    /// Kernel entry and attribute TTL in milliseconds (default 1000).
    pub ttl_ms: u64,
    /// Read-only mounts: watch the folder (inotify) and push outside changes to the kernel's
    /// caches, which makes the longer `watched_ttl_ms` safe (default true; no effect with
    /// `ttl_ms = 0`).
    pub watch: bool,
    /// The TTL while the watcher runs (default 30000). Falls back to `ttl_ms` when the folder
    /// cannot be watched (e.g. more directories than inotify watches).
    pub watched_ttl_ms: u64,
    /// Read-only mounts while the watcher runs: skip the kernel's per-file OPEN/RELEASE and
    /// OPENDIR/RELEASEDIR round trips (FUSE no-open mode; default true). Trade-offs: a file the
    /// profile refuses to serve opens but every read of it fails with EACCES, and big clean files
    /// are read through veilfs into the page cache instead of by passthrough.
    pub no_open: bool,
    /// Save scan verdicts in the store directory at unmount and load them at the next mount of
    /// the same folder, so unchanged files are not scanned again (default true).
    pub persist_scans: bool,
}

impl Default for CacheCfg {
    fn default() -> Self {
        CacheCfg {
            ttl_ms: 1000,
            watch: true,
            watched_ttl_ms: 30_000,
            no_open: true,
            persist_scans: true,
        }
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Everything that can go wrong loading a profile. The rule every variant follows: it names the
/// file (`origin`), and, where the file could be read, the 1-based line and column of the
/// offending key or value and the dotted field path (`visibility.dir[1].deny[0]`).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{}: cannot read profile: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("{origin}:{line}:{column}: {}{message}", field_prefix(field))]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    /// Valid TOML, but not the profile schema: unknown key, wrong type, missing key, bad size.
    #[error("{origin}:{line}:{column}: {}{message}", field_prefix(field))]
    Schema {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    /// Schema-valid but semantically wrong: bad glob, unsupported version, empty name, ...
    #[error("{origin}:{line}:{column}: {}{message}", field_prefix(field))]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl ProfileError {
    /// 1-based (line, column) of the problem, if the error has one.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ProfileError::Read { .. } => None,
            ProfileError::Syntax { line, column, .. }
            | ProfileError::Schema { line, column, .. }
            | ProfileError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }

    /// The dotted field path the error is about ("" when unknown, e.g. for syntax errors).
    pub fn field(&self) -> &str {
        match self {
            ProfileError::Read { .. } => "",
            ProfileError::Syntax { field, .. }
            | ProfileError::Schema { field, .. }
            | ProfileError::Invalid { field, .. } => field,
        }
    }
}

/// A legal but suspicious setting, located like an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileWarning {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ProfileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}{}",
            self.origin,
            self.line,
            self.column,
            field_prefix(&self.field),
            self.message
        )
    }
}

impl Profile {
    /// Read, parse and validate a profile file. Relative paths inside it resolve against its
    /// directory; `source` is set to the (absolute) path.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().map(Path::to_path_buf);
        let origin = path.display().to_string();
        let mut p = parse_inner(&text, &origin, base.as_deref())?;
        p.source = Some(abs);
        Ok(p)
    }

    /// Parse and validate profile text; `origin` names it in messages (usually the file name).
    /// Relative paths are kept as written.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        parse_inner(text, origin, None)
    }

    /// The built-in default profile (`profiles/default.toml`, compiled into the binary).
    /// The redaction engine for this profile's rule sets and rule files (validates them together).
    pub fn redaction_engine(&self) -> Result<crate::redact::Engine, crate::redact::RulesError> {
        crate::redact::Engine::load(&self.redaction.rule_sets, &self.redaction.rule_files)
    }

    pub fn builtin_default() -> Profile {
        match Profile::parse(DEFAULT_PROFILE_TOML, "<built-in default profile>") {
            Ok(p) => p,
            // A unit test proves the shipped text parses; this arm is unreachable in a tested build.
            Err(e) => panic!("built-in default profile is invalid: {e}"),
        }
    }

    /// The effective profile, every default filled in, as TOML that [`Profile::parse`] accepts.
    /// Non-UTF-8 paths are written lossily (TOML strings are UTF-8).
    pub fn to_toml(&self) -> String {
        let origin = match &self.source {
            Some(p) => p.display().to_string(),
            None => "built-in".to_string(),
        };
        let body = toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot serialise profile: {e}\n"));
        format!("# Effective veilfs profile (from {origin}), all defaults filled in.\n{body}")
    }
}

fn parse_inner(text: &str, origin: &str, base: Option<&Path>) -> Result<Profile, ProfileError> {
    let tree = SpanTree::parse(text);
    // Check the version before the schema: a profile written for a newer veilfs should be
    // reported as such, not as a list of unknown fields.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: Option<toml::Value>,
    }
    if let (Some(tree), Ok(VersionOnly { version: Some(v) })) =
        (&tree, toml::from_str::<VersionOnly>(text))
        && let Some(n) = v.as_integer().filter(|&n| n != i64::from(PROFILE_VERSION))
    {
        let (line, column) = tree
            .span_of(&[Seg::Key("version")])
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        return Err(ProfileError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            field: "version".to_string(),
            message: unsupported_version(n),
        });
    }
    let mut profile: Profile = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let (line, column) = span
            .as_ref()
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        match &tree {
            // The document is valid TOML, so this is a schema error.
            Some(tree) => {
                let missing = missing_field(&message);
                let mut field = span
                    .as_ref()
                    .and_then(|s| tree.field_at(s.start, missing.is_some()))
                    .unwrap_or_default();
                if let Some(missing) = missing {
                    field = if field.is_empty() {
                        missing.to_string()
                    } else {
                        format!("{field}.{missing}")
                    };
                }
                ProfileError::Schema {
                    origin: origin.to_string(),
                    line,
                    column,
                    field,
                    message,
                }
            }
            None => ProfileError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                field: String::new(),
                message,
            },
        }
    })?;
    let tree = tree.unwrap_or_default();
    let v = Validator {
        text,
        origin,
        tree: &tree,
        warnings: Vec::new(),
    };
    v.run(&mut profile, base)?;
    Ok(profile)
}

fn unsupported_version(n: i64) -> String {
    format!("unsupported profile version {n}, this veilfs understands version {PROFILE_VERSION}")
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// 1-based line and column (in characters) of byte offset `off`.
fn line_col(text: &str, off: usize) -> (usize, usize) {
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
enum Seg<'a> {
    Key(&'a str),
    Idx(usize),
}

fn path_string(path: &[Seg<'_>]) -> String {
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
struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    tree: &'a SpanTree,
    warnings: Vec<ProfileWarning>,
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

    fn run(mut self, p: &mut Profile, base: Option<&Path>) -> Result<(), ProfileError> {
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
        p.warnings = self.warnings;
        Ok(())
    }
}

/// Spans of every key and value of a (syntactically valid) TOML document, so errors found after
/// deserialisation can point at the text. Built by deserialising the document a second time into a
/// generic tree, asking the TOML deserializer for spans via the `serde_spanned` protocol (the same
/// one `toml::Spanned` uses).
#[derive(Debug, Default)]
struct SpanTree {
    root: Vec<(String, Option<Range<usize>>, Node)>,
}

#[derive(Debug)]
struct Node {
    span: Option<Range<usize>>,
    kind: NodeKind,
}

#[derive(Debug)]
enum NodeKind {
    Table(Vec<(String, Option<Range<usize>>, Node)>),
    Array(Vec<Node>),
    Scalar,
}

impl SpanTree {
    fn parse(text: &str) -> Option<SpanTree> {
        let node: Node = toml::from_str(text).ok()?;
        match node.kind {
            NodeKind::Table(root) => Some(SpanTree { root }),
            _ => None,
        }
    }

    /// The span of the value at `path` (or of its key, if the value has none).
    fn span_of(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let (first, rest) = path.split_first()?;
        let Seg::Key(k) = first else { return None };
        let (_, kspan, node) = self.root.iter().find(|(name, _, _)| name == k)?;
        match node.descend(rest) {
            Some(span) => Some(span),
            None if rest.is_empty() => kspan.clone(),
            None => None,
        }
    }

    /// The deepest field path whose key or value contains byte offset `off` (only tables when
    /// `tables_only`: a missing-field error points at the table that lacks the field).
    fn field_at(&self, off: usize, tables_only: bool) -> Option<String> {
        let mut best: Option<(usize, String)> = None;
        let mut path = Vec::new();
        let mut search = Search {
            off,
            tables_only,
            best: &mut best,
        };
        search.table(&self.root, &mut path);
        best.map(|(_, s)| s)
    }
}

impl Node {
    fn descend(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let Some((first, rest)) = path.split_first() else {
            return self.span.clone();
        };
        match (first, &self.kind) {
            (Seg::Key(k), NodeKind::Table(entries)) => {
                let (_, kspan, node) = entries.iter().find(|(name, _, _)| name == k)?;
                match node.descend(rest) {
                    Some(s) => Some(s),
                    None if rest.is_empty() => kspan.clone(),
                    None => None,
                }
            }
            (Seg::Idx(i), NodeKind::Array(items)) => items.get(*i)?.descend(rest),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum OwnedSeg {
    Key(String),
    Idx(usize),
}

fn owned_path_string(path: &[OwnedSeg]) -> String {
    let segs: Vec<Seg<'_>> = path
        .iter()
        .map(|s| match s {
            OwnedSeg::Key(k) => Seg::Key(k),
            OwnedSeg::Idx(i) => Seg::Idx(*i),
        })
        .collect();
    path_string(&segs)
}

struct Search<'a> {
    off: usize,
    tables_only: bool,
    best: &'a mut Option<(usize, String)>,
}

impl Search<'_> {
    fn consider(&mut self, span: &Option<Range<usize>>, is_table: bool, path: &[OwnedSeg]) {
        if self.tables_only && !is_table {
            return;
        }
        if let Some(s) = span
            && s.start <= self.off
            && self.off < s.end.max(s.start + 1)
        {
            let depth = path.len();
            if self.best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                *self.best = Some((depth, owned_path_string(path)));
            }
        }
    }

    fn table(
        &mut self,
        entries: &[(String, Option<Range<usize>>, Node)],
        path: &mut Vec<OwnedSeg>,
    ) {
        for (name, kspan, node) in entries {
            path.push(OwnedSeg::Key(name.clone()));
            self.consider(kspan, false, path);
            self.node(node, path);
            path.pop();
        }
    }

    fn node(&mut self, node: &Node, path: &mut Vec<OwnedSeg>) {
        let is_table = matches!(node.kind, NodeKind::Table(_));
        self.consider(&node.span, is_table, path);
        match &node.kind {
            NodeKind::Table(entries) => self.table(entries, path),
            NodeKind::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(OwnedSeg::Idx(i));
                    self.node(item, path);
                    path.pop();
                }
            }
            NodeKind::Scalar => {}
        }
    }
}

// The `serde_spanned` protocol (serde_spanned 0.6, used by toml 0.8): a deserializer that supports
// spans answers `deserialize_struct(NAME, FIELDS)` with a map of start, end and value. One that
// has no span for this item falls back to `deserialize_any`, which the visitor also handles.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// The value inside a spanned wrapper: asking for a span again would recurse forever.
struct Unspanned(Node);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unspanned, D::Error> {
        d.deserialize_any(NodeVisitor).map(Unspanned)
    }
}

/// A map key with its span, read through the same protocol.
struct Key(String, Option<Range<usize>>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let node = d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)?;
        Ok(node)
    }
}

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_string(), None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let mut start = None;
        let mut end = None;
        let mut value = None;
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => value = Some(map.next_value::<String>()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let span = match (start, end) {
            (Some(s), Some(e)) => Some(s..e),
            _ => None,
        };
        Ok(Key(value.unwrap_or_default(), span))
    }
}

struct NodeVisitor;

fn scalar<E>() -> Result<Node, E> {
    Ok(Node {
        span: None,
        kind: NodeKind::Scalar,
    })
}

/// Distinguishes the spanned wrapper from an ordinary table by its first key.
enum MapKey {
    Start,
    Other(Key),
}

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MapKey, D::Error> {
        let k = Key::deserialize(d)?;
        if k.0 == SPANNED_START && k.1.is_none() {
            Ok(MapKey::Start)
        } else {
            Ok(MapKey::Other(k))
        }
    }
}

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        scalar()
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        scalar()
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        scalar()
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        scalar()
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        scalar()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Node {
            span: None,
            kind: NodeKind::Array(items),
        })
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        match map.next_key::<MapKey>()? {
            None => {}
            Some(MapKey::Start) => {
                // The spanned wrapper: start, end, value (in that order).
                let start: usize = map.next_value()?;
                let mut end = start;
                let mut inner = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        SPANNED_END => end = map.next_value()?,
                        SPANNED_VALUE => inner = Some(map.next_value::<Unspanned>()?.0),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let mut node = inner.unwrap_or(Node {
                    span: None,
                    kind: NodeKind::Scalar,
                });
                node.span = Some(start..end);
                return Ok(node);
            }
            Some(MapKey::Other(Key(name, span))) => {
                let v: Node = map.next_value()?;
                entries.push((name, span, v));
            }
        }
        while let Some(Key(name, span)) = map.next_key::<Key>()? {
            let v: Node = map.next_value()?;
            entries.push((name, span, v));
        }
        Ok(Node {
            span: None,
            kind: NodeKind::Table(entries),
        })
    }
}

/// Sizes: integers (bytes) or strings with a unit.
pub mod size {
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Parse `"64 MiB"`, `"500 KB"`, `"1.5GiB"`, `"123"` (bytes). Units are case-insensitive;
    /// K/M/G/T-B are powers of 1000, Ki/Mi/Gi/Ti-B powers of 1024.
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: String = num.chars().filter(|&c| c != '_').collect();
        let unit = unit.trim().to_ascii_lowercase();
        let mult: u128 = match unit.as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size `{s}`: unknown unit `{}`, expected one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
                    unit.trim()
                ));
            }
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num.as_str(), ""),
        };
        if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 12 {
            return Err(format!(
                "invalid size `{s}`, expected bytes or a number with a unit like \"64 MiB\""
            ));
        }
        let int_v: u128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| format!("invalid size `{s}`: number too large"))?
        };
        let frac_v: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse()
                .map_err(|_| format!("invalid size `{s}`: bad fraction"))?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let total = int_v
            .checked_mul(mult)
            .and_then(|v| v.checked_add(frac_v * mult / scale))
            .filter(|v| *v <= u64::MAX as u128)
            .ok_or_else(|| format!("invalid size `{s}`: too large"))?;
        Ok(total as u64)
    }

    /// Format a size the way [`parse`] reads it, using the largest exact binary unit.
    pub fn format(n: u64) -> String {
        for (unit, m) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if n >= m && n.is_multiple_of(m) {
                return format!("{} {unit}", n / m);
            }
        }
        format!("{n} B")
    }

    struct SizeVisitor;

    impl serde::de::Visitor<'_> for SizeVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size: bytes as an integer, or a string like \"64 MiB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v).map_err(E::custom)
        }
    }

    pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }

    pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(SizeVisitor).map(Some)
    }

    pub fn ser<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        if *v < 1024 && *v <= i64::MAX as u64 {
            s.serialize_u64(*v)
        } else {
            s.serialize_str(&format(*v))
        }
    }

    pub fn ser_opt<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => ser(v, s),
            None => s.serialize_none(),
        }
    }
}

mod paths {
    use serde::Serializer;
    use serde::ser::SerializeSeq;
    use std::path::PathBuf;

    pub fn ser_vec<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for p in v {
            seq.serialize_element(&p.to_string_lossy())?;
        }
        seq.end()
    }

    pub fn ser_opt<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `text` as `x.toml` and return the error.
    fn err(text: &str) -> ProfileError {
        Profile::parse(text, "x.toml").expect_err("profile should be rejected")
    }

    /// Assert the error is located at `line:col`, names `field`, and its message contains `msg`.
    fn assert_err(e: &ProfileError, line: usize, col: usize, field: &str, msg: &str) {
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("x.toml:{line}:{col}: ")),
            "location of {s:?}, want {line}:{col}"
        );
        assert_eq!(e.location(), Some((line, col)), "{s}");
        assert_eq!(e.field(), field, "{s}");
        if !field.is_empty() {
            assert!(s.contains(&format!(": {field}: ")), "{s}");
        }
        assert!(s.contains(msg), "{s:?} should contain {msg:?}");
    }

    fn shipped(name: &str) -> Profile {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("profiles")
            .join(name);
        Profile::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn builtin_default_parses() {
        let p = Profile::builtin_default();
        assert_eq!(p.name, "default");
        assert_eq!(p.version, 1);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.write.mode, WriteMode::ReadOnly);
        assert_eq!(p.redaction.rule_sets, ["secrets", "pii"]);
        assert_eq!(p.redaction.unscannable, Unscannable::Deny);
        assert_eq!(p.redaction.max_scan_size, 64 * MIB);
        assert_eq!(p.cache.ttl_ms, 1000);
        assert!(p.visibility.hide_special_files && p.visibility.hide_escaping_symlinks);
        assert!(p.source.is_none());
    }

    #[test]
    fn every_shipped_profile_parses_without_warnings() {
        for name in ["default.toml", "developer.toml", "strict.toml"] {
            let p = shipped(name);
            assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
            assert_eq!(p.name, name.trim_end_matches(".toml"));
            assert!(p.source.as_ref().is_some_and(|s| s.is_absolute()));
        }
        let dev = shipped("developer.toml");
        assert_eq!(dev.write.mode, WriteMode::Snapshot);
        assert_eq!(dev.write.store_quota, Some(20 * GIB));
        let strict = shipped("strict.toml");
        assert_eq!(strict.visibility.max_file_size, Some(100 * MIB));
        assert!(!strict.visibility.allow.is_empty());
        // The shipped default file is the built-in default.
        let mut d = shipped("default.toml");
        d.source = None;
        assert_eq!(d, Profile::builtin_default());
    }

    #[test]
    fn minimal_profile_gets_defaults() {
        let p = Profile::parse("version = 1\n", "dir/mine.toml").unwrap();
        assert_eq!(p.name, "mine");
        assert_eq!(p.visibility, VisibilityCfg::default());
        assert!(p.visibility.hide_special_files);
        assert_eq!(p.write.snapshot_max_size, GIB);
        assert_eq!(p.redaction.max_scan_size, 64 * MIB);
        assert_eq!(p.cache.ttl_ms, 1000);
        assert_eq!(
            Profile::parse("version = 1", "<x>").unwrap().name,
            "unnamed"
        );
    }

    #[test]
    fn to_toml_round_trips() {
        let text = r#"
version = 1
name = "rt"
description = "round trip"
[visibility]
deny = ["*.pem", "!ok.pem"]
allow = ["*.md", "docs/"]
max_file_size = "1.5 GiB"
hide_special_files = false
[[visibility.dir]]
path = "/docs/"
deny = ["drafts/"]
[[visibility.dir]]
path = "data"
allow = ["*.csv"]
[redaction]
rule_sets = ["secrets"]
rule_files = ["/etc/veilfs/rules.toml"]
max_scan_size = 1000
unscannable = "allow"
[write]
mode = "overlay"
writable = ["src/"]
snapshot_max_size = "500 KB"
store = "/var/lib/veilfs/x"
store_quota = 12345
[cache]
ttl_ms = 0
"#;
        let p = Profile::parse(text, "rt.toml").unwrap();
        assert_eq!(
            p.visibility.dirs[0].path, "docs",
            "dir paths are normalised"
        );
        assert_eq!(p.visibility.max_file_size, Some(3 * GIB / 2));
        let out = p.to_toml();
        assert!(out.contains("[[visibility.dir]]"), "{out}");
        let back = Profile::parse(&out, "out.toml").unwrap();
        assert_eq!(
            back,
            Profile {
                name: "rt".into(),
                ..p.clone()
            }
        );
        for name in ["default.toml", "developer.toml", "strict.toml"] {
            let p = shipped(name);
            let mut back = Profile::parse(&p.to_toml(), name).unwrap();
            back.source = p.source.clone();
            assert_eq!(back, p, "{name}");
        }
    }

    #[test]
    fn load_resolves_relative_paths_against_the_profile_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.toml"), "").unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "version = 1\n[redaction]\nrule_files = [\"rules.toml\", \"missing.toml\", \"/abs.toml\"]\n[write]\nstore = \"store\"\n",
        )
        .unwrap();
        let p = Profile::load(&path).unwrap();
        assert_eq!(p.redaction.rule_files[0], dir.path().join("rules.toml"));
        assert_eq!(p.redaction.rule_files[2], PathBuf::from("/abs.toml"));
        assert_eq!(p.write.store, Some(dir.path().join("store")));
        assert_eq!(p.source.as_deref(), Some(path.as_path()));
        // Missing rule files are located warnings.
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        let w = &p.warnings[0];
        assert_eq!((w.line, w.column), (3, 29));
        assert_eq!(w.field, "redaction.rule_files[1]");
        // parse() keeps relative paths as written.
        let p = Profile::parse("version = 1\n[redaction]\nrule_files = [\"r.toml\"]", "x").unwrap();
        assert_eq!(p.redaction.rule_files[0], PathBuf::from("r.toml"));
    }

    #[test]
    fn read_error_names_the_file() {
        let e = Profile::load(Path::new("/nonexistent/veilfs/p.toml")).unwrap_err();
        assert!(matches!(e, ProfileError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/veilfs/p.toml: cannot read profile")
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let e = err("version = 1\n[redaction\n");
        assert!(matches!(e, ProfileError::Syntax { .. }), "{e:?}");
        assert_err(&e, 2, 11, "", "invalid table header");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        let e = err("version = 1\nname = \"unterminated\n");
        assert!(matches!(e, ProfileError::Syntax { .. }), "{e:?}");
        assert_eq!(e.location().unwrap().0, 2);
    }

    #[test]
    fn unknown_fields_are_located_and_named() {
        let e = err("version = 1\n[visibility]\ndeny = []\n  hdie = true\n");
        assert!(matches!(e, ProfileError::Schema { .. }), "{e:?}");
        assert_err(
            &e,
            4,
            3,
            "visibility.hdie",
            "unknown field `hdie`, expected one of `deny`, `allow`",
        );
        let e = err("version = 1\nmode = \"snapshot\"\n");
        assert_err(&e, 2, 1, "mode", "unknown field `mode`");
        let e = err(
            "version = 1\n[[visibility.dir]]\npath = \"a\"\n[[visibility.dir]]\npath = \"b\"\ndney = []\n",
        );
        assert_err(&e, 6, 1, "visibility.dir[1].dney", "unknown field `dney`");
        let e = err("version = 1\n[rdaction]\n");
        assert_err(&e, 2, 2, "rdaction", "unknown field `rdaction`");
        let e = err("version = 1\ncache = { ttl_ms = 5, ttl = 6 }\n");
        assert_err(&e, 2, 23, "cache.ttl", "unknown field `ttl`");
    }

    #[test]
    fn type_errors_are_located_and_named() {
        let e = err("version = 1\n[visibility]\nhide_special_files = \"yes\"\n");
        assert!(matches!(e, ProfileError::Schema { .. }), "{e:?}");
        assert_err(&e, 3, 22, "visibility.hide_special_files", "invalid type");
        let e = err("version = 1\n[visibility]\ndeny = [\"a\", 3]\n");
        assert_err(&e, 3, 14, "visibility.deny[1]", "invalid type");
        let e = err("version = \"1\"\n");
        assert_err(&e, 1, 11, "version", "invalid type");
        let e = err("version = 1\n[write]\nmode = \"rw\"\n");
        assert_err(
            &e,
            3,
            8,
            "write.mode",
            "unknown variant `rw`, expected one of `read-only`, `snapshot`, `overlay`",
        );
        let e = err("version = 1\n[redaction]\nunscannable = \"maybe\"\n");
        assert_err(
            &e,
            3,
            15,
            "redaction.unscannable",
            "unknown variant `maybe`",
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let e = err("name = \"x\"\n");
        assert!(matches!(e, ProfileError::Schema { .. }), "{e:?}");
        assert_eq!(e.field(), "version", "{e}");
        assert!(
            e.to_string()
                .starts_with("x.toml:1:1: version: missing field `version`"),
            "{e}"
        );
        let e = err("version = 1\n[[visibility.dir]]\ndeny = [\"x\"]\n");
        assert_eq!(e.field(), "visibility.dir[0].path", "{e}");
        assert!(e.to_string().contains("missing field `path`"), "{e}");
    }

    #[test]
    fn size_errors_are_located_and_named() {
        let e = err("version = 1\n[redaction]\nmax_scan_size = \"3 XB\"\n");
        assert_err(&e, 3, 17, "redaction.max_scan_size", "unknown unit `xb`");
        let e = err("version = 1\n[visibility]\nmax_file_size = -5\n");
        assert_err(
            &e,
            3,
            17,
            "visibility.max_file_size",
            "must not be negative",
        );
        let e = err("version = 1\n[write]\nstore_quota = \"lots\"\n");
        assert_err(&e, 3, 15, "write.store_quota", "invalid size `lots`");
        let e = err("version = 1\n[write]\nsnapshot_max_size = 1.5\n");
        assert_err(&e, 3, 21, "write.snapshot_max_size", "invalid type");
    }

    #[test]
    fn semantic_errors_are_located_and_named() {
        let e = err("# c\nversion = 2\n[visibility]\nfuture_key = 1\n");
        assert!(matches!(e, ProfileError::Invalid { .. }), "{e:?}");
        assert_err(&e, 2, 11, "version", "unsupported profile version 2");
        let e = err("version = 1\n[visibility]\ndeny = [\"ok\",\n  \"[z\"]\n");
        assert_err(&e, 4, 3, "visibility.deny[1]", "invalid pattern `[z`");
        let e = err("version = 1\n[visibility]\nallow = [\"\"]\n");
        assert_err(&e, 3, 10, "visibility.allow[0]", "empty pattern");
        let e = err("version = 1\n[visibility]\ndeny = [\"!\"]\n");
        assert_err(&e, 3, 9, "visibility.deny[0]", "matches nothing");
        let e = err(
            "version = 1\n[[visibility.dir]]\npath = \"a\"\n[[visibility.dir]]\npath = \"b\"\nallow = [\"x\", \"**[\"]\n",
        );
        assert_err(
            &e,
            6,
            15,
            "visibility.dir[1].allow[1]",
            "invalid pattern `**[`",
        );
        let e = err("version = 1\n[[visibility.dir]]\npath = \"../etc\"\ndeny = [\"x\"]\n");
        assert_err(&e, 3, 8, "visibility.dir[0].path", "`..` is not allowed");
        let e = err("version = 1\n[redaction]\nrule_sets = [\"secrets\", \" \"]\n");
        assert_err(&e, 3, 25, "redaction.rule_sets[1]", "empty rule set name");
        let e = err("version = 1\n[redaction]\nrule_files = [\"\"]\n");
        assert_err(&e, 3, 15, "redaction.rule_files[0]", "empty rule file path");
        let e = err("version = 1\n[redaction]\nmax_scan_size = 0\n");
        assert_err(&e, 3, 17, "redaction.max_scan_size", "greater than 0");
        let e = err("version = 1\n[redaction]\nunscannable_allow = [\"a{b\"]\n");
        assert_err(
            &e,
            3,
            22,
            "redaction.unscannable_allow[0]",
            "invalid pattern",
        );
        let e = err("version = 1\n[write]\nmode = \"snapshot\"\nwritable = [\"src/\", \"[\"]\n");
        assert_err(&e, 4, 21, "write.writable[1]", "invalid pattern `[`");
        let e = err("version = 1\n[write]\nstore_quota = \"0 GiB\"\n");
        assert_err(&e, 3, 15, "write.store_quota", "greater than 0");
        let e = err("version = 1\n[write]\nstore = \"\"\n");
        assert_err(&e, 3, 9, "write.store", "empty store path");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = err("version = 1\ndescription = \"äöü\"; x = 1\n");
        let e2 = err("version = 1\n[visibility]\ndeny = [\"ünï\", \"[\"]\n");
        assert!(matches!(e, ProfileError::Syntax { .. }));
        assert_eq!(e.location(), Some((2, 20)), "{e}");
        assert_err(&e2, 3, 16, "visibility.deny[1]", "invalid pattern");
    }

    #[test]
    fn warnings_are_located() {
        let p = Profile::parse(
            "version = 1\n[write]\nwritable = [\"*.rs\"]\n[redaction]\nrule_sets = [\"pii\", \"pii\"]\n",
            "x.toml",
        )
        .unwrap();
        let ws: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(ws.len(), 2, "{ws:?}");
        assert!(
            ws.iter().any(|w| w.starts_with(
                "x.toml:5:21: redaction.rule_sets[1]: rule set `pii` is listed twice"
            )),
            "{ws:?}"
        );
        assert!(
            ws.iter()
                .any(|w| w
                    .starts_with("x.toml:3:12: write.writable: writable patterns have no effect")),
            "{ws:?}"
        );
    }

    #[test]
    fn sizes() {
        use size::{format, parse};
        assert_eq!(parse("123"), Ok(123));
        assert_eq!(parse("64 MiB"), Ok(64 << 20));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("1 gib"), Ok(1 << 30));
        assert_eq!(parse("500 KB"), Ok(500_000));
        assert_eq!(parse("2 TB"), Ok(2_000_000_000_000));
        assert_eq!(parse("1.5 KiB"), Ok(1536));
        assert_eq!(parse("1_000 B"), Ok(1000));
        assert_eq!(parse(" 7 b "), Ok(7));
        for bad in [
            "",
            "MiB",
            "1 XB",
            "1..2 MiB",
            "-1",
            "1.2.3",
            "99999999999 TiB",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(format(64 << 20), "64 MiB");
        assert_eq!(format(1 << 30), "1 GiB");
        assert_eq!(format(1536), "1536 B");
        assert_eq!(format(0), "0 B");
        for n in [0, 1, 1023, 1024, 1536, 64 << 20, u64::MAX] {
            assert_eq!(parse(&format(n)), Ok(n), "{n}");
        }
        assert_eq!(
            Profile::parse("version = 1\n[redaction]\nmax_scan_size = 4096", "x")
                .unwrap()
                .redaction
                .max_scan_size,
            4096
        );
    }

    #[test]
    fn write_mode_from_str() {
        assert_eq!("read-only".parse(), Ok(WriteMode::ReadOnly));
        assert_eq!("snapshot".parse(), Ok(WriteMode::Snapshot));
        assert_eq!("overlay".parse(), Ok(WriteMode::Overlay));
        let e = "rw".parse::<WriteMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown write mode `rw`, expected one of `read-only`, `snapshot`, `overlay`"
        );
        for m in WriteMode::ALL {
            assert_eq!(m.to_string().parse(), Ok(m));
        }
    }
}
