//! Conversion of Kingfisher rule files (YAML) into veilfs rule sets, and the YAML-rule converter
//! the Nosey Parker importer ([`super::noseyparker`]) shares: Kingfisher's rule format grew out
//! of Nosey Parker's, so both are a `rules:` list of `{id, name, pattern, examples, ...}`.
//!
//! Why convert (rather than read YAML at mount time): one strict schema on the data path, and a
//! TOML file the admin reviews. Anything that would silently change meaning is reported with the
//! rule id: patterns the Rust `regex` crate cannot compile (look-arounds, back-references) are
//! "not converted"; fields with no veilfs equivalent (`validation`, `depends_on_rule`,
//! `confidence`, ...) and `examples` the converted regex misses (or `negative_examples` it
//! matches) are notes.
//!
//! Mapping: `id` → `id`, `name` (or `description`) → `description`, `pattern` → `regex`,
//! capture group 1 (both tools report the first group as the secret) → `secret_group = 1`,
//! `min_entropy` → `entropy`. Neither format has keywords: they are derived from the pattern's
//! literal prefixes (every match starts with one), else left out (correct, but the regex then
//! runs on every file).
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::rules;

/// Which tool's format is being read: decides which fields are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    Kingfisher,
    NoseyParker,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Kingfisher => "Kingfisher",
            Tool::NoseyParker => "Nosey Parker",
        }
    }
    fn command(self) -> &'static str {
        match self {
            Tool::Kingfisher => "import-kingfisher",
            Tool::NoseyParker => "import-noseyparker",
        }
    }
}

#[derive(Deserialize, Debug)]
struct YamlFile {
    #[serde(default)]
    rules: Vec<YamlRule>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_norway::Value>,
}

#[derive(Deserialize, Debug)]
struct YamlRule {
    id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    pattern: Option<String>,
    min_entropy: Option<f64>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    negative_examples: Vec<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_norway::Value>,
}

/// Fields kept for people, not matching: dropping them changes nothing.
const HARMLESS: &[&str] = &["references", "categories", "visible"];

pub(crate) use super::gitleaks::Conversion;

/// Converts a Kingfisher rules file. `name` becomes the rule set's name.
pub(crate) fn convert(src: &str, name: &str) -> Result<Conversion, String> {
    convert_yaml(src, name, Tool::Kingfisher)
}

pub(crate) fn convert_yaml(src: &str, name: &str, tool: Tool) -> Result<Conversion, String> {
    let file: YamlFile = serde_norway::from_str(src).map_err(|e| match e.location() {
        Some(l) => format!("{}:{}: {e}", l.line(), l.column()),
        None => format!("1:1: {e}"),
    })?;
    let mut c = Conversion::default();
    for k in file.other.keys() {
        c.notes.push(format!("top-level `{k}` ignored"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Converted from {} rules by `veilfs rules {}`. Review before use.",
        tool.label(),
        tool.command()
    );
    let _ = writeln!(out, "version = 1\nname = {}", tstr(name));
    let mut seen = std::collections::HashSet::new();
    for (i, r) in file.rules.iter().enumerate() {
        let id = r.id.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
        match convert_rule(r, &id, tool, &mut c.notes) {
            Ok(text) if seen.insert(id.clone()) => {
                out.push('\n');
                out.push_str(&text);
                c.converted += 1;
            }
            Ok(_) => c.not_converted.push((id, "duplicate rule id".into())),
            Err(why) => c.not_converted.push((id, why)),
        }
    }
    c.toml = out;
    Ok(c)
}

fn convert_rule(
    r: &YamlRule,
    id: &str,
    tool: Tool,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    super::gitleaks::check_id(id)?;
    let Some(pattern) = r.pattern.as_deref() else {
        return Err("no `pattern`".into());
    };
    let compiled = rules::compile_regex(pattern).map_err(|e| {
        format!(
            "pattern does not compile with the Rust regex crate: {}",
            super::gitleaks::regex_error(&e)
        )
    })?;
    for k in r.other.keys() {
        if !HARMLESS.contains(&k.as_str()) {
            notes.push(format!(
                "{id}: field `{k}` has no veilfs equivalent; ignored"
            ));
        }
    }
    if tool == Tool::NoseyParker && r.min_entropy.is_some() {
        notes.push(format!(
            "{id}: `min_entropy` is not a Nosey Parker field; used anyway"
        ));
    }
    let groups = compiled.captures_len() - 1;
    if groups > 1 {
        notes.push(format!(
            "{id}: {groups} capture groups; only group 1 is masked"
        ));
    }
    for ex in &r.examples {
        if !compiled.is_match(ex.as_bytes()) {
            notes.push(format!(
                "{id}: example {ex:?} does not match the converted regex"
            ));
        }
    }
    for ex in &r.negative_examples {
        if compiled.is_match(ex.as_bytes()) {
            notes.push(format!(
                "{id}: negative example {ex:?} matches the converted regex"
            ));
        }
    }
    let keywords = prefix_keywords(pattern);
    if keywords.is_empty() {
        notes.push(format!(
            "{id}: no literal prefix to use as keywords, so the regex runs on every file (slow)"
        ));
    }

    let mut o = String::new();
    let _ = writeln!(o, "[[rules]]\nid = {}", tstr(id));
    if let Some(d) = r.name.as_ref().or(r.description.as_ref()) {
        let _ = writeln!(o, "description = {}", tstr(d.trim()));
    }
    let _ = writeln!(o, "regex = {}", tstr(pattern));
    if groups >= 1 {
        let _ = writeln!(o, "secret_group = 1");
    }
    if !keywords.is_empty() {
        let kws: Vec<String> = keywords.iter().map(|k| tstr(k)).collect();
        let _ = writeln!(o, "keywords = [{}]", kws.join(", "));
    }
    if let Some(e) = r.min_entropy {
        let _ = writeln!(o, "entropy = {e:?}");
    }
    Ok(o)
}

/// Keywords from the pattern's literal prefixes, lower-cased: every match starts with one of
/// them, so the keyword prefilter never drops a match. Empty when the prefixes are unbounded,
/// shorter than 3 bytes (too common to filter anything), or more than 32.
pub(crate) fn prefix_keywords(pattern: &str) -> Vec<String> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .multi_line(true)
        .crlf(true)
        .build()
        .parse(pattern)
    else {
        return Vec::new();
    };
    let mut ext = Extractor::new();
    ext.kind(ExtractKind::Prefix);
    let seq = ext.extract(&hir);
    let Some(lits) = seq.literals() else {
        return Vec::new();
    };
    let mut kws = Vec::new();
    for l in lits {
        let Ok(s) = std::str::from_utf8(l.as_bytes()) else {
            return Vec::new();
        };
        if s.len() < 3 {
            return Vec::new();
        }
        kws.push(s.to_ascii_lowercase());
    }
    kws.sort();
    kws.dedup();
    if kws.len() > 32 { Vec::new() } else { kws }
}

/// A TOML string literal for `s` (exact for any content).
fn tstr(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Engine, ScanOutcome};

    const FIXTURE: &str = r#"
rules:
  - name: ACME API Token
    id: kingfisher.acme.1
    pattern: |
      (?x)
      \b
      (acme_[a-z0-9]{24})
      \b
    min_entropy: 3.0
    confidence: medium
    examples:
      - 'token = acme_k3j4h5g6f7d8s9a0q1w2e3r4'
    negative_examples:
      - 'acme_short'
  - name: Lookbehind
    id: kingfisher.lb.1
    pattern: '(?<=key=)([0-9]{8})'
  - name: Zed key
    id: kingfisher.zed.1
    pattern: 'zed(?:key|tok)_([A-F0-9]{16})'
    validation:
      type: Http
    examples:
      - 'ZEDKEY_0123456789ABCDEF'
"#;

    #[test]
    fn converts_fixture_and_output_loads() {
        let c = convert(FIXTURE, "team").unwrap();
        assert_eq!(c.converted, 2, "{:?}", c.not_converted);
        assert_eq!(c.not_converted.len(), 1);
        assert_eq!(c.not_converted[0].0, "kingfisher.lb.1");
        assert!(
            c.not_converted[0].1.contains("look-around"),
            "{:?}",
            c.not_converted
        );
        assert!(
            c.notes.iter().any(|n| n.contains("`confidence`")),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes.iter().any(|n| n.contains("`validation`")),
            "{:?}",
            c.notes
        );
        // Case matters in the converted regex: the upper-case example is reported.
        assert!(
            c.notes.iter().any(|n| n.contains("ZEDKEY")),
            "{:?}",
            c.notes
        );
        assert!(
            c.toml.contains(r#"keywords = ["zedkey_", "zedtok_"]"#),
            "{}",
            c.toml
        );
        assert!(c.toml.contains(r#"keywords = ["acme_"]"#), "{}", c.toml);

        let e = Engine::from_sources(&[("team.toml".into(), c.toml.clone())])
            .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(e.rule_ids(), ["kingfisher.acme.1", "kingfisher.zed.1"]);
        let hit = b"token = acme_k3j4h5g6f7d8s9a0q1w2e3r4\n";
        assert!(matches!(
            e.scan("a.py".as_ref(), hit),
            ScanOutcome::Redact(_)
        ));
        assert!(matches!(
            e.scan("a.py".as_ref(), b"zedtok_9F3A0C7E1B5D28A4"),
            ScanOutcome::Redact(_)
        ));
        assert!(matches!(
            e.scan("a.py".as_ref(), b"acme_short"),
            ScanOutcome::Clean
        ));
    }

    #[test]
    fn bad_yaml_names_the_line() {
        let err = convert("rules:\n  - id: x\n    pattern: [unclosed\n", "t").unwrap_err();
        assert!(err.starts_with("3:") || err.starts_with("4:"), "{err}");
    }
}
