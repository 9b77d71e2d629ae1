//! Conversion of gitleaks configs (`.gitleaks.toml`) into veilfs rule sets.
//!
//! Why: many teams already maintain gitleaks rules for their own token formats. Converting them
//! (instead of reading gitleaks configs at mount time) keeps one strict schema on the data path
//! and lets the admin review what changed. Anything that would silently change meaning is
//! reported: regexes the Rust `regex` crate cannot compile (look-arounds, back-references) are
//! listed as "not converted", and lossy mappings (allow-list `regexTarget = "line"`, `AND`
//! conditions, commit allow-lists, `[extend]`) as notes.
//!
//! Mapping: `id`, `description`, `regex`, `secretGroup` → `secret_group`, `entropy`, `keywords`
//! (lower-cased), `path` (a regex in gitleaks) → `path_regex`, `[[rules.allowlists]]` and the old
//! `[rules.allowlist]` → `[[rules.allowlists]]` (`paths` regexes → `path_regexes`), top-level
//! `[allowlist]`/`[[allowlists]]` → `[allowlist]` (or the targeted rules' allow-lists when the
//! gitleaks allow-list has `targetRules`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::rules::{self, AllowlistDef};

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct GlConfig {
    title: Option<String>,
    description: Option<String>,
    extend: Option<toml::Value>,
    #[serde(default)]
    rules: Vec<GlRule>,
    allowlist: Option<GlAllow>,
    #[serde(default)]
    allowlists: Vec<GlAllow>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct GlRule {
    id: Option<String>,
    description: Option<String>,
    regex: Option<String>,
    secret_group: Option<i64>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    path: Option<String>,
    allowlist: Option<GlAllow>,
    #[serde(default)]
    allowlists: Vec<GlAllow>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct GlAllow {
    description: Option<String>,
    condition: Option<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
}

/// Result of a conversion.
#[derive(Debug, Default)]
pub(crate) struct Conversion {
    /// The veilfs rule set (TOML).
    pub toml: String,
    /// `(rule id, why)` for rules that were dropped.
    pub not_converted: Vec<(String, String)>,
    /// Lossy mappings worth a look.
    pub notes: Vec<String>,
    pub converted: usize,
}

/// Fields gitleaks uses for reporting only; ignoring them changes nothing.
const HARMLESS: &[&str] = &["tags", "report", "severity"];

/// Converts gitleaks config text. `name` becomes the rule set's name.
pub(crate) fn convert(src: &str, name: &str) -> Result<Conversion, String> {
    let cfg: GlConfig = toml::from_str(src).map_err(|e| {
        let (line, col) = e.span().map_or((1, 1), |s| rules::line_col(src, s.start));
        format!("{line}:{col}: {}", e.message().trim())
    })?;
    let mut c = Conversion::default();
    if cfg.extend.is_some() {
        c.notes.push(
            "[extend]: gitleaks' default rules are not imported; add veilfs' built-in `secrets` set instead".into(),
        );
    }
    for k in cfg.other.keys() {
        c.notes.push(format!("top-level `{k}` ignored"));
    }

    // Top-level allow-lists: untargeted ones become the set's allow-list.
    let mut set_allow = AllowlistDef::default();
    let mut targeted: BTreeMap<String, Vec<AllowlistDef>> = BTreeMap::new();
    for a in cfg.allowlist.iter().chain(&cfg.allowlists) {
        let conv = convert_allow(a, "[allowlist]", &mut c.notes);
        if a.target_rules.is_empty() {
            merge(&mut set_allow, conv);
        } else {
            for t in &a.target_rules {
                targeted.entry(t.clone()).or_default().push(conv.clone());
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Converted from a gitleaks config by `veilfs rules import-gitleaks`. Review before use."
    );
    let _ = writeln!(out, "version = 1\nname = {}", tstr(name));
    let desc = cfg.description.or(cfg.title).unwrap_or_default();
    if !desc.is_empty() {
        let _ = writeln!(out, "description = {}", tstr(&desc));
    }
    if !is_empty_allow(&set_allow) {
        out.push('\n');
        emit_allow(&mut out, "[allowlist]", &set_allow);
    }

    let mut seen = std::collections::HashSet::new();
    for (i, r) in cfg.rules.iter().enumerate() {
        let id = r.id.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
        match convert_rule(
            r,
            &id,
            targeted.remove(&id).unwrap_or_default(),
            &mut c.notes,
        ) {
            Ok(text) => {
                if !seen.insert(id.clone()) {
                    c.not_converted.push((id, "duplicate rule id".into()));
                    continue;
                }
                out.push('\n');
                out.push_str(&text);
                c.converted += 1;
            }
            Err(why) => c.not_converted.push((id, why)),
        }
    }
    for t in targeted.keys() {
        c.notes
            .push(format!("[allowlist] targets unknown rule `{t}`; dropped"));
    }
    c.toml = out;
    Ok(c)
}

/// Imported rule ids become veilfs rule ids: 1-64 characters of A-Z a-z 0-9 - _ .
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("id must be 1-64 characters of A-Z a-z 0-9 - _ .".into());
    }
    Ok(())
}

/// The last line of a regex compile error (the one that says what is wrong).
pub(crate) fn regex_error(e: &impl std::fmt::Display) -> String {
    let msg = e.to_string();
    msg.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

fn convert_rule(
    r: &GlRule,
    id: &str,
    extra_allow: Vec<AllowlistDef>,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    check_id(id)?;
    let Some(regex) = r.regex.as_deref() else {
        return Err("no regex (path-only rules are not supported)".into());
    };
    let compiled = rules::compile_regex(regex).map_err(|e| {
        format!(
            "regex does not compile with the Rust regex crate: {}",
            regex_error(&e)
        )
    })?;
    let secret_group = match r.secret_group {
        None | Some(0) => None,
        Some(g) if g > 0 && (g as usize) < compiled.captures_len() => Some(g as usize),
        Some(g) => return Err(format!("secretGroup {g} does not exist in the regex")),
    };
    if let Some(p) = &r.path {
        regex::Regex::new(p).map_err(|e| format!("path regex does not compile: {e}"))?;
    }
    for k in r.other.keys() {
        if !HARMLESS.contains(&k.as_str()) {
            notes.push(format!("{id}: field `{k}` ignored"));
        }
    }
    if r.keywords.is_empty() {
        notes.push(format!(
            "{id}: no keywords, so the regex runs on every file (slow); consider adding some"
        ));
    }
    let mut allows = Vec::new();
    for a in r.allowlist.iter().chain(&r.allowlists) {
        let label = id.to_string();
        allows.push(convert_allow(a, &label, notes));
    }
    allows.extend(extra_allow);
    for a in &allows {
        for re in &a.regexes {
            rules::compile_regex(re)
                .map_err(|_| format!("allowlist regex `{re}` does not compile"))?;
        }
        for re in &a.path_regexes {
            regex::Regex::new(re).map_err(|_| format!("allowlist path `{re}` does not compile"))?;
        }
    }

    let mut o = String::new();
    let _ = writeln!(o, "[[rules]]\nid = {}", tstr(id));
    if let Some(d) = &r.description {
        let _ = writeln!(o, "description = {}", tstr(d));
    }
    let _ = writeln!(o, "regex = {}", tstr(regex));
    if let Some(g) = secret_group {
        let _ = writeln!(o, "secret_group = {g}");
    }
    if !r.keywords.is_empty() {
        let kws: Vec<String> = r
            .keywords
            .iter()
            .map(|k| tstr(&k.to_ascii_lowercase()))
            .collect();
        let _ = writeln!(o, "keywords = [{}]", kws.join(", "));
    }
    if let Some(e) = r.entropy {
        let _ = writeln!(o, "entropy = {e:?}");
    }
    if let Some(p) = &r.path {
        let _ = writeln!(o, "path_regex = {}", tstr(p));
    }
    for a in &allows {
        emit_allow(&mut o, "[[rules.allowlists]]", a);
    }
    Ok(o)
}

fn convert_allow(a: &GlAllow, owner: &str, notes: &mut Vec<String>) -> AllowlistDef {
    if let Some(t) = &a.regex_target
        && t != "secret"
    {
        notes.push(format!(
            "{owner}: allowlist regexTarget = \"{t}\" is applied to the secret only"
        ));
    }
    if a.condition
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("AND"))
    {
        notes.push(format!(
            "{owner}: allowlist condition AND is treated as OR (any entry allows)"
        ));
    }
    if !a.commits.is_empty() {
        notes.push(format!(
            "{owner}: allowlist commits ignored (veilfs has no git history)"
        ));
    }
    AllowlistDef {
        description: a.description.clone().unwrap_or_default(),
        paths: Vec::new(),
        path_regexes: a.paths.clone(),
        regexes: a.regexes.clone(),
        stopwords: a.stopwords.clone(),
    }
}

fn merge(into: &mut AllowlistDef, from: AllowlistDef) {
    if into.description.is_empty() {
        into.description = from.description;
    }
    into.paths.extend(from.paths);
    into.path_regexes.extend(from.path_regexes);
    into.regexes.extend(from.regexes);
    into.stopwords.extend(from.stopwords);
}

fn is_empty_allow(a: &AllowlistDef) -> bool {
    a.paths.is_empty()
        && a.path_regexes.is_empty()
        && a.regexes.is_empty()
        && a.stopwords.is_empty()
}

fn emit_allow(o: &mut String, header: &str, a: &AllowlistDef) {
    let _ = writeln!(o, "{header}");
    if !a.description.is_empty() {
        let _ = writeln!(o, "description = {}", tstr(&a.description));
    }
    for (k, v) in [
        ("paths", &a.paths),
        ("path_regexes", &a.path_regexes),
        ("regexes", &a.regexes),
        ("stopwords", &a.stopwords),
    ] {
        if !v.is_empty() {
            let items: Vec<String> = v.iter().map(|s| format!("    {},\n", tstr(s))).collect();
            let _ = writeln!(o, "{k} = [\n{}]", items.concat());
        }
    }
}

/// A TOML string: a literal `'''...'''` string when that is exact (readable regexes), else a
/// basic string with escapes.
fn tstr(s: &str) -> String {
    if !s.contains("'''") && !s.ends_with('\'') && !s.contains(['\n', '\r']) && !s.starts_with('\n')
    {
        if !s.contains('\'') && !s.contains('\\') && !s.contains('"') {
            return format!("\"{s}\"");
        }
        return format!("'''{s}'''");
    }
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Engine, ScanOutcome};

    const FIXTURE: &str = r#"
title = "team gitleaks config"

[extend]
useDefault = true

[allowlist]
description = "global"
paths = ['''(^|/)vendor/''']
stopwords = ["dummy"]

[[rules]]
id = "acme-api-key"
description = "ACME API key"
regex = '''(?i)acme[_-]?key\s*[:=]\s*['"]?(acme_[a-z0-9]{24})'''
secretGroup = 1
entropy = 3.0
keywords = ["ACME_"]
tags = ["key", "acme"]
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''acme_0{24}''']

[[rules]]
id = "lookahead"
regex = '''secret(?=[0-9]+)'''
keywords = ["secret"]

[[rules]]
id = "path-only"
path = '''\.pem$'''

[[rules]]
id = "old-style"
regex = '''tok_[a-f0-9]{16}'''
path = '''\.cfg$'''
keywords = ["tok_"]
[rules.allowlist]
commits = ["abc"]
stopwords = ["deadbeef"]
"#;

    #[test]
    fn converts_fixture() {
        let c = convert(FIXTURE, "team").unwrap();
        assert_eq!(c.converted, 2);
        let ids: Vec<&str> = c.not_converted.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["lookahead", "path-only"]);
        assert!(
            c.not_converted[0].1.contains("look-around"),
            "{:?}",
            c.not_converted
        );
        assert!(c.notes.iter().any(|n| n.contains("[extend]")));
        assert!(c.notes.iter().any(|n| n.contains("regexTarget")));
        assert!(c.notes.iter().any(|n| n.contains("commits")));

        // The output loads in veilfs and behaves like the gitleaks rules.
        let e = Engine::from_sources(&[("team.toml".into(), c.toml.clone())])
            .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(e.rule_ids(), ["acme-api-key", "old-style"]);
        let hit = b"ACME_KEY = \"acme_k3j4h5g6f7d8s9a0q1w2e3r4\"\n";
        assert!(matches!(
            e.scan("src/a.py".as_ref(), hit),
            ScanOutcome::Redact(_)
        ));
        assert!(matches!(
            e.scan("vendor/a.py".as_ref(), hit),
            ScanOutcome::Clean
        ));
        assert!(matches!(
            e.scan("a.py".as_ref(), b"ACME_KEY = acme_000000000000000000000000"),
            ScanOutcome::Clean
        ));
        assert!(matches!(
            e.scan("x.cfg".as_ref(), b"tok_9f3a0c7e1b5d28a4"),
            ScanOutcome::Redact(_)
        ));
        assert!(matches!(
            e.scan("x.txt".as_ref(), b"tok_9f3a0c7e1b5d28a4"),
            ScanOutcome::Clean
        ));
        assert!(matches!(
            e.scan("x.cfg".as_ref(), b"tok_0123deadbeef4567"),
            ScanOutcome::Clean
        ));
    }

    #[test]
    fn strings_round_trip() {
        for s in [
            "plain",
            r#"a'b"c\d"#,
            "x'''y",
            "ends'",
            "line\nbreak",
            r"\d+",
        ] {
            let doc = format!("v = {}", tstr(s));
            let v: toml::Value = toml::from_str(&doc).unwrap();
            assert_eq!(v["v"].as_str(), Some(s), "{doc}");
        }
    }
}
