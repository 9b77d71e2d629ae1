//! Rule-set files: schema, loading, validation and compilation.
//!
//! Why a strict schema: a typo in a rule file (`keyword` for `keywords`, a regex that does not
//! compile) must stop the mount with an error that names the file, line, column and rule, not
//! silently leave a secret unmasked. Every table uses `deny_unknown_fields`; rule ids are unique
//! across all loaded sets; regexes are compiled once here.
//!
//! The schema is modelled on gitleaks' config (rules with id/regex/secret group/keywords/entropy/
//! path and allow-lists) so gitleaks rules convert almost one to one (see `gitleaks.rs`).
//! Differences: `path` holds globs (gitleaks: one regex; ours is `path_regex`), `validate` adds
//! checksum validators for PII, and `window` lets a multi-line rule (a PEM block) look past the
//! line of its keyword.
//!
//! Regexes are compiled byte-oriented with Unicode mode off (`\w`, `\b`, `\s` and case folding are
//! ASCII, like Go's RE2 in gitleaks) and multi-line mode on (`^`/`$` match at line breaks, CRLF
//! aware), because the engine runs them on line-aligned regions around keyword hits.

use std::path::Path;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use globset::{GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A rule-set file as written by an admin.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSetFile {
    pub version: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<AllowlistDef>,
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// One rule.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDef {
    pub id: Spanned<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub regex: Spanned<String>,
    /// Capture group holding the secret. Default: the first capture group that participated in
    /// the match, or the whole match if the regex has no groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_group: Option<usize>,
    /// Case-insensitive literals; the regex only runs near a hit, so every match must contain
    /// one. When every match starts with one (optionally after a one-byte boundary), the regex
    /// runs anchored at each hit, which is cheapest. Empty: runs on every file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Minimum Shannon entropy (bits per byte) of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Only files whose relative path matches one of these globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// Only files whose relative path matches this regex (gitleaks' `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Validator>,
    /// Bytes past the keyword's line the regex may reach (multi-line secrets). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// For rules without keywords (numeric PII): only lines holding a run of at least this many
    /// digits (separators ` -./()` allowed inside the run) are searched. One cheap pass over
    /// the file replaces a full regex pass per rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<usize>,
    /// The regex needs a keyword inside a name that is assigned to (`db_password: ...`,
    /// `API_TOKEN=...`): a keyword hit counts only when the rest of the name (`[A-Za-z0-9_.-]`),
    /// an optional closing quote and blanks are followed by `=`, `:` or `?=`. In ordinary code
    /// most `token`/`secret` words are not, and the rule's regex then never runs there.
    /// The secret is then the assigned value, found in the match itself (`span::assigned_value`)
    /// rather than through capture groups, so `secret_group` does not apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assignment: bool,
    /// A built-in parser finds the secret instead of the regex (`generic.rs`): at each keyword
    /// hit it reads the name holding it and the value assigned to it in any common syntax, and
    /// scores both. The regex then only has to match the value (anchor it with `^...$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<super::generic::Detector>,
    /// Whether the global placeholder filter (`generic::is_placeholder`: `ghp_xxxx…`,
    /// `<your-key>`, `changeme`) applies to this rule's matches. Default: yes, except for rules
    /// with a `validate` checksum or a `digits` prefilter. Set `false` for PII (an address at
    /// `example-corp.com` is still personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholders: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlists: Vec<AllowlistDef>,
}

/// Things that are not secrets even though a rule matched them.
#[derive(Deserialize, Serialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowlistDef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Globs of relative paths to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Regexes of relative paths to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_regexes: Vec<String>,
    /// Regexes tested against the secret (unanchored: anchor with `^...$` yourself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regexes: Vec<String>,
    /// Case-insensitive substrings of the secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopwords: Vec<String>,
}

/// Checksum/shape validators for matches a regex alone cannot tell apart.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Validator {
    /// Payment card number (Luhn mod 10).
    Luhn,
    /// IBAN (ISO 13616 mod 97).
    Iban,
    /// US SSN: area not 000/666/9xx, group not 00, serial not 0000.
    Ssn,
    /// Phone number: 8 to 15 digits.
    Phone,
    /// Dotted quad with every octet <= 255.
    Ipv4,
}

/// Errors loading rule sets. Every message names the file (and line:column and rule where
/// known) so an admin can fix it without guessing.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {msg}")]
    Parse {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{file}:{line}:{col}: rule `{rule}`: {msg}")]
    Rule {
        file: String,
        line: usize,
        col: usize,
        rule: String,
        msg: String,
    },
    #[error("duplicate rule id `{id}`: {first} and {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
    #[error("unknown rule set `{name}` (known: {known})")]
    UnknownSet { name: String, known: String },
}

/// Rule files compiled into the binary: (set name, label used in errors, source). A set may
/// span several files (loaded in this order): `secrets` is the core rules, the provider
/// catalog, and the generic credential rules last (a specific rule that masked a value first
/// keeps reporting it).
pub(crate) const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "secrets",
        "redaction-rules/secrets.toml",
        include_str!("../../redaction-rules/secrets.toml"),
    ),
    (
        "secrets",
        "redaction-rules/secrets-providers.toml",
        include_str!("../../redaction-rules/secrets-providers.toml"),
    ),
    (
        "secrets",
        "redaction-rules/secrets-generic.toml",
        include_str!("../../redaction-rules/secrets-generic.toml"),
    ),
    (
        "pii",
        "redaction-rules/pii.toml",
        include_str!("../../redaction-rules/pii.toml"),
    ),
];

/// 1-based line and column of byte `pos` in `src`.
pub(crate) fn line_col(src: &str, pos: usize) -> (usize, usize) {
    Lines::new(src).line_col(pos)
}

/// Line starts of a source, made once for the line and column of many offsets in it (a walk
/// from the start per offset was quadratic over a rule file's rules: a third of compiling the
/// default profile in a debug build).
pub(crate) struct Lines {
    starts: Vec<usize>,
    len: usize,
}

impl Lines {
    pub(crate) fn new(src: &str) -> Lines {
        Lines {
            starts: std::iter::once(0)
                .chain(memchr::memchr_iter(b'\n', src.as_bytes()).map(|i| i + 1))
                .collect(),
            len: src.len(),
        }
    }

    /// 1-based line and column of byte `pos` (the end when past it).
    pub(crate) fn line_col(&self, pos: usize) -> (usize, usize) {
        let pos = pos.min(self.len);
        let line = self.starts.partition_point(|&start| start <= pos);
        (line, pos - self.starts[line - 1] + 1)
    }
}

/// Parses a rule-set file, reporting TOML/schema errors with file:line:column.
pub(crate) fn parse(label: &str, src: &str) -> Result<RuleSetFile, RulesError> {
    toml::from_str::<RuleSetFile>(src).map_err(|e| {
        let (line, col) = e.span().map_or((1, 1), |s| line_col(src, s.start));
        RulesError::Parse {
            file: label.to_string(),
            line,
            col,
            msg: e.message().trim().to_string(),
        }
    })
}

/// An allow-list ready to test.
#[derive(Debug, Default)]
pub(crate) struct Allow {
    paths: Option<GlobSet>,
    path_regexes: Vec<regex::Regex>,
    regexes: Vec<regex::bytes::Regex>,
    stopwords: Option<AhoCorasick>,
}

impl Allow {
    pub(crate) fn has_paths(&self) -> bool {
        self.paths.is_some() || !self.path_regexes.is_empty()
    }

    pub(crate) fn path_allowed(&self, rel: &Path) -> bool {
        if let Some(g) = &self.paths
            && g.is_match(rel)
        {
            return true;
        }
        if self.path_regexes.is_empty() {
            return false;
        }
        let s = rel.to_string_lossy();
        self.path_regexes.iter().any(|r| r.is_match(&s))
    }

    pub(crate) fn secret_allowed(&self, secret: &[u8]) -> bool {
        self.regexes.iter().any(|r| r.is_match(secret))
            || self.stopwords.as_ref().is_some_and(|a| a.is_match(secret))
    }
}

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub id: Arc<str>,
    pub regex: regex::bytes::Regex,
    pub secret_group: Option<usize>,
    /// Where the secret is in a match without capture groups, when the regex's shape allows.
    pub span: Option<super::span::SpanPlan>,
    pub keywords: Vec<String>,
    pub entropy: Option<f64>,
    pub path: Option<GlobSet>,
    pub path_regex: Option<regex::Regex>,
    pub validate: Option<Validator>,
    pub window: usize,
    pub digits: Option<usize>,
    pub assignment: bool,
    pub detector: Option<super::generic::Detector>,
    /// Whether `generic::is_placeholder` rejects candidates (`RuleDef::placeholders`).
    pub placeholders: bool,
    pub allow: Vec<Allow>,
    /// Every allow-list condition on the secret (regexes and stopwords of all of the rule's
    /// lists) as one regex, when it compiles: one search per candidate instead of several.
    pub secret_allow: Option<SecretAllow>,
    /// Where matches start relative to a keyword hit, and the regex anchored there (`\A`), when
    /// the shape allows searching at each hit instead of along its line (`span::start`).
    pub anchored: Option<(super::span::Start, regex::bytes::Regex)>,
    /// A literal every match holds after its start (`.eyJ` of a JWT), for anchored rules: an
    /// attempt whose text lacks it is skipped without walking the regex over the line
    /// (`span::required_literal`).
    pub inner: Option<memchr::memmem::Finder<'static>>,
    /// For a rule anchored at its keyword (`Start::Keyword`) of the shape `[LEAD] PREFIX RUN
    /// TRAIL`: the anchored attempt without the regex (`span::RunShape`).
    /// (Boxed, as `line_run`: every scan walks the rule list, which should stay small.)
    pub run: Option<Box<super::span::RunShape>>,
    /// The regex as a [`super::span::LineRun`], when it has that shape (the detector rules'
    /// value test).
    pub line_run: Option<Box<super::span::LineRun>>,
    /// Index of the set this rule came from (for the set-level allow-list).
    pub set: usize,
}

impl CompiledRule {
    /// Whether this rule applies to `rel` at all (its own path filters and allow-lists).
    pub(crate) fn applies_to(&self, rel: &Path) -> bool {
        if let Some(g) = &self.path
            && !g.is_match(rel)
        {
            return false;
        }
        if let Some(r) = &self.path_regex
            && !r.is_match(&rel.to_string_lossy())
        {
            return false;
        }
        !self.allow.iter().any(|a| a.path_allowed(rel))
    }

    /// Whether the secret can only be found through the regex's capture groups.
    pub(crate) fn needs_captures(&self) -> bool {
        !self.assignment && self.span.is_none() && self.regex.captures_len() > 1
    }

    /// Where the secret is in a whole match, for a rule that needs no capture groups: the
    /// assigned value, the span plan's cut, or the whole match.
    pub(crate) fn secret_in(&self, m: &[u8]) -> (usize, usize) {
        if self.assignment {
            // No value found: the whole match is masked (fail closed).
            super::span::assigned_value(m).unwrap_or((0, m.len()))
        } else if let Some(plan) = &self.span {
            plan.cut(m)
        } else {
            (0, m.len())
        }
    }

    /// The secret's capture group in a match of a rule that needs them.
    pub(crate) fn secret_group<'h>(
        &self,
        caps: &regex::bytes::Captures<'h>,
    ) -> Option<regex::bytes::Match<'h>> {
        match self.secret_group {
            Some(g) => caps.get(g),
            None => (1..caps.len()).find_map(|g| caps.get(g)),
        }
    }

    pub(crate) fn has_path_filter(&self) -> bool {
        self.path.is_some() || self.path_regex.is_some() || self.allow.iter().any(Allow::has_paths)
    }
}

/// The settings every rule regex is compiled with (see the module docs), for a `RegexBuilder`
/// or a `RegexSetBuilder` alike.
macro_rules! rule_syntax {
    ($builder:expr) => {
        $builder
            .unicode(false)
            .multi_line(true)
            .crlf(true)
            .size_limit(32 << 20)
            .dfa_size_limit(16 << 20)
    };
}

/// Compiles a regex the way every rule regex is compiled (see the module docs).
pub(crate) fn compile_regex(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    rule_syntax!(regex::bytes::RegexBuilder::new(pattern)).build()
}

/// Several rule regexes as one set, compiled like `compile_regex`. `None` when there are fewer
/// than two or the set would be too big (callers then search with each regex alone).
pub(crate) fn compile_set_of<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
) -> Option<regex::bytes::RegexSet> {
    let patterns: Vec<&str> = patterns.into_iter().collect();
    if patterns.len() < 2 {
        return None;
    }
    rule_syntax!(regex::bytes::RegexSetBuilder::new(patterns))
        .build()
        .ok()
}

fn globset(globs: &[String]) -> Result<Option<GlobSet>, String> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("bad path glob `{g}`: {e}"))?;
        b.add(glob);
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

pub(crate) fn compile_allow(a: &AllowlistDef) -> Result<Allow, String> {
    let paths = globset(&a.paths)?;
    let path_regexes = a
        .path_regexes
        .iter()
        .map(|r| regex::Regex::new(r).map_err(|e| format!("allowlist path regex `{r}`: {e}")))
        .collect::<Result<_, _>>()?;
    let mut regexes: Vec<regex::bytes::Regex> = a
        .regexes
        .iter()
        .map(|r| compile_regex(r).map_err(|e| format!("allowlist regex `{r}`: {e}")))
        .collect::<Result<_, _>>()?;
    // One alternation instead of a dozen searches per candidate secret (flags set inside a
    // group end with it, so each alternative means what it meant alone). The separate
    // compiles above are kept for error messages that name the one bad regex.
    if regexes.len() > 1 {
        let joined = a
            .regexes
            .iter()
            .map(|r| format!("(?:{r})"))
            .collect::<Vec<_>>()
            .join("|");
        if let Ok(one) = compile_regex(&joined) {
            regexes = vec![one];
        }
    }
    let stopwords = if a.stopwords.is_empty() {
        None
    } else {
        Some(
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&a.stopwords)
                .map_err(|e| format!("stopwords: {e}"))?,
        )
    };
    Ok(Allow {
        paths,
        path_regexes,
        regexes,
        stopwords,
    })
}

/// `CompiledRule::anchored` for a rule with keywords, with a lead byte only when a span plan
/// cuts it off (the engine relies on that to spot a false line start). Multi-line rules qualify
/// too: the anchored search sees the same region (line plus `window`) as a line search would.
fn anchored_twin(r: &RuleDef, lead_cut: bool) -> Option<(super::span::Start, regex::bytes::Regex)> {
    use super::span::Start;
    if r.keywords.is_empty() {
        return None;
    }
    let keywords: Vec<String> = r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
    let start = super::span::start(r.regex.get_ref(), &keywords, r.assignment)?;
    // Without a span plan the lead byte cannot be told from a false line start.
    if start == (Start::Keyword { lead: true }) && !lead_cut {
        return None;
    }
    let twin = compile_regex(&format!(r"\A(?:{})", r.regex.get_ref())).ok()?;
    Some((start, twin))
}

/// The union of a rule's allow-list conditions on the secret, for `CompiledRule::secret_allow`:
/// one search per part instead of one per list, regex and stopword.
///
/// Why three parts: one alternation of everything walked the whole secret with its lazy DFA
/// (a 350-byte token: a tenth of `calendly-token-named`'s scan with the generic rule), because
/// the lists' regexes start with a multi-line `^`, which may match after any line break inside
/// the secret, and nothing in the union is a literal to search for. Apart, the stopwords are a
/// literal alternation, which the regex crate searches with a vectorized prefilter; and on a
/// secret without `\r` or `\n` (nearly all), `^` and `$` can only match at its ends, so the
/// regexes compiled without multi-line mean the same there and are anchored: their search
/// stops a few bytes in.
#[derive(Debug)]
pub(crate) struct SecretAllow {
    /// The lists' regexes as one alternation, compiled as rule regexes are.
    lines: Option<regex::bytes::Regex>,
    /// The same without multi-line mode, for secrets without line breaks.
    single: Option<regex::bytes::Regex>,
    /// Every list's stopwords, ASCII-case-insensitive, as the stopword searcher matches them.
    words: Option<regex::bytes::Regex>,
}

impl SecretAllow {
    /// Whether an allow-list condition holds for `secret`.
    pub(crate) fn is_match(&self, secret: &[u8]) -> bool {
        let regexes = if memchr::memchr2(b'\r', b'\n', secret).is_none() {
            &self.single
        } else {
            &self.lines
        };
        self.words.as_ref().is_some_and(|w| w.is_match(secret))
            || regexes.as_ref().is_some_and(|r| r.is_match(secret))
    }
}

/// [`SecretAllow`] for these lists. `None` when there are no conditions or a part does not
/// compile (callers then test each list on its own).
fn combined_allow(lists: &[AllowlistDef]) -> Option<SecretAllow> {
    let alts: Vec<String> = lists
        .iter()
        .flat_map(|a| a.regexes.iter().map(|r| format!("(?:{r})")))
        .collect();
    let words: Vec<String> = lists
        .iter()
        .flat_map(|a| a.stopwords.iter().map(|w| regex::escape(w)))
        .collect();
    if alts.is_empty() && words.is_empty() {
        return None;
    }
    let (mut lines, mut single, mut stop) = (None, None, None);
    if !alts.is_empty() {
        let joined = alts.join("|");
        lines = Some(compile_regex(&joined).ok()?);
        single = Some(
            rule_syntax!(regex::bytes::RegexBuilder::new(&joined))
                .multi_line(false)
                .build()
                .ok()?,
        );
    }
    if !words.is_empty() {
        stop = Some(compile_regex(&format!("(?i:{})", words.join("|"))).ok()?);
    }
    Some(SecretAllow {
        lines,
        single,
        words: stop,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Compiles the rules of one parsed set. `set` is the set's index in the engine.
pub(crate) fn compile_set(
    label: &str,
    src: &str,
    file: &RuleSetFile,
    set: usize,
) -> Result<(Vec<CompiledRule>, Allow), RulesError> {
    if file.version != 1 {
        return Err(RulesError::Parse {
            file: label.into(),
            line: 1,
            col: 1,
            msg: format!("unsupported version {} (expected 1)", file.version),
        });
    }
    let set_allow = match &file.allowlist {
        None => Allow::default(),
        Some(a) => compile_allow(a).map_err(|msg| RulesError::Parse {
            file: label.into(),
            line: 1,
            col: 1,
            msg: format!("[allowlist]: {msg}"),
        })?,
    };
    let mut out = Vec::with_capacity(file.rules.len());
    for r in &file.rules {
        let id = r.id.get_ref().as_str();
        let err = |span: std::ops::Range<usize>, msg: String| {
            let (line, col) = line_col(src, span.start);
            RulesError::Rule {
                file: label.into(),
                line,
                col,
                rule: id.into(),
                msg,
            }
        };
        let id_span = r.id.span();
        if !valid_id(id) {
            return Err(err(
                id_span,
                "rule ids are 1-64 characters of A-Z a-z 0-9 - _ .".into(),
            ));
        }
        let regex = compile_regex(r.regex.get_ref())
            .map_err(|e| err(r.regex.span(), format!("regex does not compile: {e}")))?;
        if let Some(g) = r.secret_group
            && g >= regex.captures_len()
        {
            return Err(err(
                r.regex.span(),
                format!(
                    "secret_group {g} but the regex has {} capture group(s)",
                    regex.captures_len() - 1
                ),
            ));
        }
        let path = globset(&r.path).map_err(|m| err(id_span.clone(), m))?;
        let path_regex = r
            .path_regex
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| err(id_span.clone(), format!("path_regex: {e}")))?;
        let mut allow = Vec::new();
        for a in &r.allowlists {
            allow.push(compile_allow(a).map_err(|m| err(id_span.clone(), m))?);
        }
        if r.digits.is_some() && !r.keywords.is_empty() {
            return Err(err(
                id_span,
                "`digits` is a prefilter for rules without keywords; use one or the other".into(),
            ));
        }
        if r.assignment && r.keywords.is_empty() {
            return Err(err(
                id_span,
                "`assignment` filters keyword hits; the rule has no keywords".into(),
            ));
        }
        if r.assignment && r.secret_group.is_some() {
            return Err(err(
                id_span,
                "`assignment` rules mask the assigned value; `secret_group` does not apply".into(),
            ));
        }
        if r.detector.is_some()
            && (r.keywords.is_empty()
                || r.assignment
                || r.secret_group.is_some()
                || r.window.is_some())
        {
            return Err(err(
                id_span,
                "`detector` rules need keywords and take no `assignment`, `secret_group` or `window`"
                    .into(),
            ));
        }
        if let Some(e) = r.entropy
            && !(0.0..=8.0).contains(&e)
        {
            return Err(err(id_span, format!("entropy {e} is outside 0..=8")));
        }
        let keywords = r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
        let span = match regex.captures_len() {
            1 => None,
            _ => super::span::plan(r.regex.get_ref(), r.secret_group.unwrap_or(1) as u32),
        };
        let anchored = match r.detector {
            Some(_) => None,
            None => anchored_twin(r, span.as_ref().is_some_and(|p| p.starts_at_lead())),
        };
        out.push(CompiledRule {
            id: Arc::from(id),
            regex,
            secret_group: r.secret_group,
            span,
            keywords,
            entropy: r.entropy,
            path,
            path_regex,
            validate: r.validate,
            window: r.window.unwrap_or(0),
            digits: r.digits,
            assignment: r.assignment,
            detector: r.detector,
            placeholders: r
                .placeholders
                .unwrap_or(r.validate.is_none() && r.digits.is_none()),
            secret_allow: combined_allow(&r.allowlists),
            inner: anchored.as_ref().and_then(|_| {
                super::span::required_literal(r.regex.get_ref())
                    .map(|l| memchr::memmem::Finder::new(&l).into_owned())
            }),
            run: anchored
                .as_ref()
                .filter(|(at, _)| matches!(at, super::span::Start::Keyword { .. }))
                .and_then(|_| {
                    super::span::run_shape(r.regex.get_ref(), r.secret_group.unwrap_or(1) as u32)
                        .map(Box::new)
                }),
            line_run: super::span::line_run(r.regex.get_ref()).map(Box::new),
            anchored,
            allow,
            set,
        });
    }
    Ok((out, set_allow))
}

/// Whether the keyword ending at `end` is part of a name followed by an assignment (see
/// `RuleDef::assignment`). Looser than the generic regexes (any number of blanks), never stricter.
pub(crate) fn assigned_after(text: &[u8], end: usize) -> bool {
    let rest = text.get(end..).unwrap_or_default();
    let mut i = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        .unwrap_or(rest.len());
    if matches!(rest.get(i), Some(b'"' | b'\'' | b'`')) {
        i += 1;
    }
    while matches!(rest.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    matches!(rest.get(i), Some(b'=' | b':' | b'?'))
}

/// Shannon entropy of `s` in bits per byte.
pub(crate) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    // Most candidates are shorter than 256 bytes: byte-wide counters are a quarter of the
    // memory to clear (the sum is the same, in the same order).
    let sum = if s.len() < 256 {
        count_log_sum::<u8>(s)
    } else {
        count_log_sum::<u32>(s)
    };
    let n = s.len() as f64;
    // Rounded so that exact values (3.0 bits for eight equally frequent bytes) stay exact and a
    // threshold of 3.0 means what it says.
    ((n.log2() - sum / n) * 1e9).round().max(0.0) / 1e9
}

/// `sum(c * log2(c))` over the counts `c` of the bytes of `s`, for
/// H = log2(n) - sum(c * log2(c)) / n. Only the bytes that occur are visited, and
/// `c * log2(c)` comes from a table: on files dense with candidate secrets, walking 256
/// counters and taking a logarithm per byte value was a third of the scan. `C` must hold
/// `s.len()`.
fn count_log_sum<C>(s: &[u8]) -> f64
where
    C: Copy + Default + PartialEq + std::ops::AddAssign + From<u8> + Into<u32>,
{
    let mut counts = [C::default(); 256];
    // One spare slot: the store below is unconditional (no branch to mispredict on random
    // secrets) and happens before `distinct` is known to have grown.
    let mut seen = [0u8; 257];
    let mut distinct = 0;
    for &b in s {
        let c = &mut counts[usize::from(b)];
        seen[distinct] = b;
        distinct += usize::from(*c == C::default());
        *c += C::from(1);
    }
    let table = c_log2_c();
    seen[..distinct]
        .iter()
        .map(|&b| {
            let c: u32 = counts[usize::from(b)].into();
            table
                .get(c as usize)
                .copied()
                .unwrap_or_else(|| f64::from(c) * f64::from(c).log2())
        })
        .sum()
}

/// `c * log2(c)` for small counts.
fn c_log2_c() -> &'static [f64; 256] {
    static TABLE: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|c| {
            if c < 2 {
                0.0
            } else {
                c as f64 * (c as f64).log2()
            }
        })
    })
}

impl Validator {
    pub(crate) fn check(self, s: &[u8]) -> bool {
        match self {
            Validator::Luhn => luhn(s),
            Validator::Iban => iban(s),
            Validator::Ssn => ssn(s),
            Validator::Phone => {
                let n = s.iter().filter(|b| b.is_ascii_digit()).count();
                (8..=15).contains(&n)
            }
            Validator::Ipv4 => {
                let parts: Vec<&[u8]> = s.split(|&b| b == b'.').collect();
                parts.len() == 4
                    && parts.iter().all(|p| {
                        !p.is_empty()
                            && p.len() <= 3
                            && p.iter().all(u8::is_ascii_digit)
                            && std::str::from_utf8(p)
                                .ok()
                                .and_then(|t| t.parse::<u16>().ok())
                                .is_some_and(|v| v <= 255)
                    })
            }
        }
    }
}

fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u32> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|&b| u32::from(b - b'0'))
        .collect();
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban(s: &[u8]) -> bool {
    let c: Vec<u8> = s.iter().copied().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&c.len()) || !c.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in c[4..].iter().chain(&c[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            b'a'..=b'z' => u32::from(b - b'a') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn(s: &[u8]) -> bool {
    let d: Vec<u8> = s.iter().copied().filter(u8::is_ascii_digit).collect();
    if d.len() != 9 {
        return false;
    }
    let area = &d[0..3];
    area != b"000" && area != b"666" && area[0] != b'9' && &d[3..5] != b"00" && &d[5..9] != b"0000"
}

#[cfg(test)]
mod tests {
    /// Line and column of every offset (and past the end) agree with counting by hand.
    #[test]
    fn lines_give_the_line_and_column_of_every_offset() {
        for src in ["", "a", "\n", "ab\ncd\n\nef", "\n\nx\n"] {
            let lines = super::Lines::new(src);
            for pos in 0..=src.len() + 2 {
                let before = &src.as_bytes()[..pos.min(src.len())];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let col = before.len()
                    - before
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1)
                    + 1;
                assert_eq!(lines.line_col(pos), (line, col), "{src:?} at {pos}");
            }
        }
    }

    /// A rule's one combined allow-list regex allows exactly what its lists allow one by one.
    #[test]
    fn combined_allow_lists_agree_with_each_list() {
        let mut candidates: Vec<Vec<u8>> = [
            "${DB_PASSWORD}",
            "$(cat /run/secret)",
            "{{ .Values.token }}",
            "<your-api-key>",
            "changeme",
            "CHANGEME123",
            "Example-Key-1234567890",
            "process.env.TOKEN",
            "xxxxxxxxxxxx",
            "TokenParser",
            "a.b.c(d)",
            "hunter2-correct-horse",
            "s3cr3t!Value",
            "",
            // Line breaks inside the secret: `^` and `$` match around them.
            "k3y\n${DB_PASSWORD}",
            "${DB_PASSWORD}\r\nk3y",
            "Zq9x\rchangeme",
            "<your-key>\nZq9xW2vL7pR4",
            "Zq9xW2vL7pR4\n{{ token }}",
            "aPlAcEhOlDeRz",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for seed in 1..=3 {
            for c in crate::redact::samples::cases(seed) {
                candidates.push(c.secret.into_bytes());
                candidates.push(c.negative.as_bytes().to_vec());
            }
        }
        let mut combined = 0;
        for (_, label, src) in BUILTIN {
            let file = parse(label, src).unwrap();
            for (rule, def) in compile_set(label, src, &file, 0)
                .unwrap()
                .0
                .iter()
                .zip(&file.rules)
            {
                let Some(one) = &rule.secret_allow else {
                    assert!(
                        def.allowlists
                            .iter()
                            .all(|a| a.regexes.is_empty() && a.stopwords.is_empty())
                    );
                    continue;
                };
                combined += 1;
                for c in &candidates {
                    assert_eq!(
                        one.is_match(c),
                        rule.allow.iter().any(|a| a.secret_allowed(c)),
                        "{} on {:?}",
                        rule.id,
                        String::from_utf8_lossy(c)
                    );
                }
            }
        }
        assert!(combined >= 10, "{combined}");
    }

    #[test]
    fn entropy_is_shannon_entropy() {
        let reference = |s: &[u8]| -> f64 {
            let n = s.len() as f64;
            (0..=255u8)
                .map(|b| s.iter().filter(|&&x| x == b).count() as f64 / n)
                .filter(|&p| p > 0.0)
                .map(|p| -p * p.log2())
                .sum()
        };
        assert_eq!(super::entropy(b""), 0.0);
        assert_eq!(super::entropy(b"aaaa"), 0.0);
        assert_eq!(super::entropy(b"abcdefgh"), 3.0);
        assert_eq!(super::entropy(&b"abcdefgh".repeat(40)), 3.0);
        let mut rng = crate::redact::samples::Rng::new(5);
        for len in [1usize, 2, 7, 40, 255, 256, 300, 5000] {
            for alphabet in [2u64, 16, 64, 256] {
                let s: Vec<u8> = (0..len).map(|_| rng.below(alphabet) as u8).collect();
                let (got, want) = (super::entropy(&s), reference(&s));
                assert!((got - want).abs() < 1e-8, "{len} {alphabet}: {got} {want}");
            }
        }
    }

    use super::*;

    #[test]
    fn validators() {
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(!luhn(b"4111 1111 1111 1112"));
        assert!(iban(b"GB82 WEST 1234 5698 7654 32"));
        assert!(!iban(b"GB82 WEST 1234 5698 7654 33"));
        assert!(ssn(b"123-45-6789"));
        assert!(!ssn(b"666-45-6789"));
        assert!(!ssn(b"900-45-6789"));
        assert!(Validator::Ipv4.check(b"10.1.2.255"));
        assert!(!Validator::Ipv4.check(b"10.1.2.256"));
    }

    #[test]
    fn assignment_follows_the_name() {
        let t = b"db_password = 1\nsession token before\nAPI_TOKEN=x\n'token': 1\ntoken\t ?= 2\ntokens(";
        let end = |w: &str, from: usize| {
            let s = std::str::from_utf8(t).unwrap();
            s[from..].find(w).unwrap() + from + w.len()
        };
        assert!(assigned_after(t, end("password", 0)));
        assert!(!assigned_after(t, end("token", 0)));
        assert!(assigned_after(t, end("TOKEN", 0)));
        assert!(assigned_after(t, end("token", 40)));
        assert!(assigned_after(t, end("token", 50)));
        assert!(!assigned_after(t, end("tokens", 60)));
        assert!(!assigned_after(b"token", 5));
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        let src = "version = 1\nname = \"x\"\n[[rules]]\nid = \"bad\"\nregex = '''(unclosed'''\n";
        let f = parse("x.toml", src).unwrap();
        let e = compile_set("x.toml", src, &f, 0).unwrap_err().to_string();
        assert!(
            e.starts_with("x.toml:5:9: rule `bad`: regex does not compile"),
            "{e}"
        );
        let e = parse("x.toml", "version = 1\nname = \"x\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:3:1: unknown field `bogus`"), "{e}");
    }
}
