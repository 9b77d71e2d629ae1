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
//!   pointing at the offending key or value (locations come from the TOML spans, see `spans`);
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

mod schema;
pub(crate) mod size;
mod spans;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub(crate) use schema::duration;
pub use schema::{ApplyMode, Profile, WriteMode};
pub(crate) use schema::{ApprovalOp, BreakerCfg, DecoysCfg, History, Unscannable};
pub(crate) use schema::{DEFAULT_PROFILE_TOML, PROFILE_VERSION};
#[cfg(test)]
pub(crate) use schema::{DirRules, VisibilityCfg};
use spans::SpanTree;
use validate::{Validator, line_col};

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
            .map(|e| e.with_inflate_limit(self.redaction.max_scan_size.saturating_mul(4)))
    }

    /// The engine git history is judged with: the profile's rules without the built-in `pii`
    /// set. Every commit carries its author's and committer's e-mail addresses, which `pii`
    /// masks in files; applied to history, it would refuse every repository.
    pub fn history_engine(&self) -> Result<crate::redact::Engine, crate::redact::RulesError> {
        let sets: Vec<String> = (self.redaction.rule_sets.iter())
            .filter(|s| *s != "pii")
            .cloned()
            .collect();
        crate::redact::Engine::load(&sets, &self.redaction.rule_files)
            .map(|e| e.with_inflate_limit(self.redaction.max_scan_size.saturating_mul(4)))
    }

    /// The built-in default profile (`profiles/default.toml`).
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
        version: Option<toml::Spanned<toml::Value>>,
    }
    if let Ok(VersionOnly { version: Some(v) }) = toml::from_str::<VersionOnly>(text)
        && let Some(n) = v
            .get_ref()
            .as_integer()
            .filter(|&n| n != i64::from(PROFILE_VERSION))
    {
        let (line, column) = line_col(text, v.span().start);
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

pub(super) fn unsupported_version(n: i64) -> String {
    format!("unsupported profile version {n}, this veilfs understands version {PROFILE_VERSION}")
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::schema::{GIB, MIB};
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
        assert!(p.redaction.opaque.iter().any(|o| o == "*.png"));
        assert!(!p.redaction.unscannable_allow.iter().any(|o| o == "*.pyc"));
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
        let e = err("version = 1\n[redaction]\nhistory = \"clean\"\n");
        assert_err(
            &e,
            3,
            11,
            "redaction.history",
            "unknown variant `clean`, expected one of `hide`, `allow`, `allow-if-clean`",
        );
    }

    #[test]
    fn history_defaults_to_allow_if_clean_and_strict_hides_it() {
        use super::schema::History;
        assert_eq!(
            Profile::builtin_default().redaction.history,
            History::AllowIfClean
        );
        assert_eq!(
            shipped("developer.toml").redaction.history,
            History::AllowIfClean
        );
        assert_eq!(shipped("strict.toml").redaction.history, History::Hide);
        let p = Profile::parse("version = 1\n", "p.toml").unwrap();
        assert_eq!(p.redaction.history, History::AllowIfClean);
        // The history engine leaves out `pii` (every commit carries e-mail addresses).
        let h = Profile::builtin_default().history_engine().unwrap();
        assert!(h.rule_ids().iter().any(|r| r == "github-pat"));
        assert!(!h.rule_ids().iter().any(|r| r == "email-address"));
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
    fn approval_and_guardrails_parse_and_their_errors_are_located() {
        let p = Profile::parse(
            "version = 1\n[write]\nmode = \"snapshot\"\n[approval]\nops = [\"delete\", \"chmod\"]\n\
             paths = [\"deploy/**\"]\ntimeout_secs = 30\n[guardrails]\nmax_expires = \"1h30m\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(p.approval.ops, vec![ApprovalOp::Delete, ApprovalOp::Chmod]);
        assert_eq!(p.approval.timeout_secs, 30);
        assert_eq!(
            p.guardrails.max_expires,
            Some(std::time::Duration::from_secs(5400))
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let back = Profile::parse(&p.to_toml(), "x.toml").unwrap();
        assert_eq!(back.guardrails, p.guardrails);
        assert_eq!(back.approval, p.approval);
        let e = err("version = 1\n[approval]\nops = [\"format\"]\n");
        assert_err(&e, 3, 8, "approval.ops[0]", "unknown variant `format`");
        let e = err("version = 1\n[guardrails]\nmax_expires = \"soon\"\n");
        assert_err(
            &e,
            3,
            15,
            "guardrails.max_expires",
            "invalid duration `soon`",
        );
        let e = err("version = 1\n[approval]\nops = [\"delete\"]\ntimeout_secs = 0\n");
        assert_err(&e, 4, 16, "approval.timeout_secs", "greater than 0");
        let e = err("version = 1\n[approval]\npaths = [\"a/[\"]\n");
        assert_err(&e, 3, 10, "approval.paths[0]", "invalid pattern");
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
        // Implicit tables (dotted keys, inline tables) are located too.
        let e = err("version = 1\nvisibility.deny = [\"x\", \"[\"]\n");
        assert_err(&e, 2, 25, "visibility.deny[1]", "invalid pattern `[`");
        let e = err("version = 1\nwrite = { mode = \"snapshot\", writable = [\"[\"] }\n");
        assert_err(&e, 2, 42, "write.writable[0]", "invalid pattern `[`");
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
        let e = err("version = 1\n[redaction]\nopaque = [\"*.png\", \"a{b\"]\n");
        assert_err(&e, 3, 20, "redaction.opaque[1]", "invalid pattern");
        let e = err("version = 1\n[redaction]\nopaque_list = []\n");
        assert_err(&e, 3, 1, "redaction.opaque_list", "unknown field");
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
