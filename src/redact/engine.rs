//! The scanning engine: one prefilter pass, then regexes only where they can match.
//!
//! Why this shape: most files an agent reads (source code, docs) contain no secret, and a FUSE
//! read must not wait on 80 regexes. Every rule names literal keywords (`ghp_`, `akia`,
//! `password`); one ASCII-case-insensitive keyword pass (`keywords.rs`) finds every occurrence,
//! and each rule's regex then runs only on the lines around its own hits (overlapping lines
//! merged per rule). A file without hits costs one keyword pass. Rules without keywords (some
//! PII shapes) run on the whole text; numeric PII rules only on lines with long digit runs, and
//! only those of them that one combined pass over the line says can match there.
//!
//! The engine is immutable after `load` and therefore `Send + Sync`; scanning never panics on
//! file data (no indexing that can go out of bounds is left unchecked).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::binary;
use super::container;
use super::generic;
use super::keywords::Keywords;
use super::mask::Redactions;
use super::rules::{self, Allow, BUILTIN, CompiledRule, RulesError};
use super::span::{self, Start};
use super::text::{self, Kind};

/// How far before a keyword hit a region may start (the secret can precede its keyword).
const MAX_BACK: usize = 1024;
/// How far after a keyword hit a region may end (plus the rule's `window`).
const MAX_FWD: usize = 4096;

/// The result of scanning one file.
#[derive(Clone, Debug)]
pub enum ScanOutcome {
    /// Nothing to mask: the file can be served as is.
    Clean,
    /// Content the engine cannot vouch for: compressed or encrypted data (whose text is not in
    /// its bytes), or a binary in a file the profile calls opaque. The reason is for the audit.
    Unscannable(&'static str),
    /// Masks to apply to every read.
    Redact(Arc<Redactions>),
    /// A compressed container (gzip, zip) whose contents hold a secret, which cannot be masked
    /// in place: refuse the file. The reason names the rule and the member, never the secret.
    Refused(Arc<str>),
}

/// One match for reports (never carries the secret itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule_id: String,
    /// 1-based line of the match start.
    pub line: usize,
    /// File byte offsets of the masked range.
    pub start: u64,
    pub end: u64,
}

struct SetInfo {
    allow: Allow,
}

/// Compiled rule sets of one profile.
pub struct Engine {
    rules: Vec<CompiledRule>,
    sets: Vec<SetInfo>,
    ac: Option<Keywords>,
    /// Keyword id → rules using that keyword.
    pattern_rules: Vec<Vec<u32>>,
    /// Rules without keywords or digit prefilter: run on the whole text.
    keywordless: Vec<usize>,
    /// Rules behind the digit-run prefilter, and the smallest run length any of them needs.
    digit_rules: Vec<usize>,
    min_digits: usize,
    /// All digit rules' regexes as one set (same order as `digit_rules`): one pass over a
    /// candidate line tells which of them can match there, instead of one search per rule.
    digit_set: Option<regex::bytes::RegexSet>,
    /// Rules read by a generic detector (`generic.rs`), in rule order.
    detectors: Vec<usize>,
    /// Whether any rule or set filters on path (else the per-file path check is skipped).
    path_filters: bool,
    /// How many bytes the members of one gzip file or zip archive may inflate to in all.
    inflate_limit: u64,
    fingerprint: [u8; 32],
}

/// The default [`Engine::with_inflate_limit`]: 4 × the default `max_scan_size`.
const INFLATE_LIMIT: u64 = 256 << 20;
/// Containers inside containers are opened this deep (a zip inside a zip: 2).
const MAX_NESTING: u32 = 2;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .field(
                "fingerprint",
                &blake3::Hash::from(self.fingerprint).to_hex(),
            )
            .finish()
    }
}

/// A detector rule's keyword hit `[ks, ke)`, the start of the name holding it, and what
/// `generic::find` read there (`None` when not read yet: a hit in the same name as the one
/// before it, which is skipped unless sorting moved it).
#[derive(Clone, Copy)]
struct Detected {
    ks: usize,
    ke: usize,
    name: usize,
    found: Option<Option<generic::Candidate>>,
}

/// A raw match in decoded-text offsets.
struct RawMatch {
    rule: usize,
    start: usize,
    end: usize,
}

impl Engine {
    /// Compiles the named built-in sets (`secrets`, `pii`) and the admin's rule files.
    pub fn load(rule_sets: &[String], rule_files: &[PathBuf]) -> Result<Engine, RulesError> {
        let mut sources: Vec<(String, String)> = Vec::new();
        for name in rule_sets {
            let files: Vec<_> = BUILTIN.iter().filter(|(n, _, _)| n == name).collect();
            if files.is_empty() {
                let mut known: Vec<&str> = BUILTIN.iter().map(|(n, _, _)| *n).collect();
                known.dedup();
                return Err(RulesError::UnknownSet {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
            for (_, label, src) in files {
                sources.push((label.to_string(), src.to_string()));
            }
        }
        for p in rule_files {
            let src = std::fs::read_to_string(p).map_err(|source| RulesError::Io {
                path: p.display().to_string(),
                source,
            })?;
            sources.push((p.display().to_string(), src));
        }
        Self::from_sources(&sources)
    }

    /// Compiles rule sets given as `(label, toml source)` pairs; labels appear in errors.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Engine, RulesError> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"veilfs-redact-v2\0");
        let mut rules: Vec<CompiledRule> = Vec::new();
        let mut sets = Vec::new();
        let mut origin: std::collections::HashMap<String, String> = Default::default();
        for (i, (label, src)) in sources.iter().enumerate() {
            hasher.update(&(src.len() as u64).to_le_bytes());
            hasher.update(src.as_bytes());
            let file = rules::parse(label, src)?;
            let lines = rules::Lines::new(src);
            for r in &file.rules {
                let (line, col) = lines.line_col(r.id.span().start);
                let here = format!("{label}:{line}:{col}");
                if let Some(first) = origin.insert(r.id.get_ref().clone(), here.clone()) {
                    return Err(RulesError::Duplicate {
                        id: r.id.get_ref().clone(),
                        first,
                        second: here,
                    });
                }
            }
            let (compiled, allow) = rules::compile_set(label, src, &file, i)?;
            rules.extend(compiled);
            sets.push(SetInfo { allow });
        }
        let mut keywords: Vec<String> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        let mut pattern_rules: Vec<Vec<u32>> = Vec::new();
        let mut keywordless = Vec::new();
        let mut digit_rules = Vec::new();
        let mut min_digits = usize::MAX;
        for (ri, r) in rules.iter().enumerate() {
            if let Some(d) = r.digits {
                digit_rules.push(ri);
                min_digits = min_digits.min(d.max(1));
            } else if r.keywords.is_empty() {
                keywordless.push(ri);
            }
            for k in &r.keywords {
                let pid = *index.entry(k.clone()).or_insert_with(|| {
                    keywords.push(k.clone());
                    pattern_rules.push(Vec::new());
                    keywords.len() - 1
                });
                if !pattern_rules[pid].contains(&(ri as u32)) {
                    pattern_rules[pid].push(ri as u32);
                }
            }
        }
        let ac = if keywords.is_empty() {
            None
        } else {
            Some(Keywords::new(&keywords).map_err(|e| RulesError::Parse {
                file: "<keywords>".into(),
                line: 1,
                col: 1,
                msg: e.to_string(),
            })?)
        };
        let path_filters = rules.iter().any(CompiledRule::has_path_filter)
            || sets.iter().any(|s| s.allow.has_paths());
        let digit_set = rules::compile_set_of(digit_rules.iter().map(|&r| rules[r].regex.as_str()));
        let detectors = (0..rules.len())
            .filter(|&r| rules[r].detector.is_some())
            .collect();
        Ok(Engine {
            detectors,
            digit_set,
            rules,
            sets,
            ac,
            pattern_rules,
            keywordless,
            digit_rules,
            min_digits,
            path_filters,
            inflate_limit: INFLATE_LIMIT,
            fingerprint: *hasher.finalize().as_bytes(),
        })
    }

    /// Sets how many bytes the members of one gzip file or zip archive may inflate to in all
    /// (more makes it unscannable). Part of the fingerprint: cached verdicts depend on it.
    pub fn with_inflate_limit(mut self, limit: u64) -> Engine {
        let mut h = blake3::Hasher::new();
        h.update(&self.fingerprint);
        h.update(&limit.to_le_bytes());
        self.fingerprint = *h.finalize().as_bytes();
        self.inflate_limit = limit;
        self
    }

    /// An engine without rules: every scan is `Clean`.
    pub fn empty() -> Engine {
        Engine {
            rules: Vec::new(),
            sets: Vec::new(),
            ac: None,
            pattern_rules: Vec::new(),
            keywordless: Vec::new(),
            digit_rules: Vec::new(),
            min_digits: usize::MAX,
            digit_set: None,
            detectors: Vec::new(),
            path_filters: false,
            inflate_limit: INFLATE_LIMIT,
            fingerprint: *blake3::hash(b"veilfs-redact-v2\0").as_bytes(),
        }
    }

    /// An engine without rules (redaction off).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// blake3 over every rule source in load order: changes whenever any rule changes, so scan
    /// results cached under another fingerprint are never reused.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The ids of every rule, in the order they were loaded.
    pub fn rule_ids(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.id.to_string()).collect()
    }

    /// Scans one file's complete contents. `rel_path` is relative to the scope root.
    pub fn scan(&self, rel_path: &Path, data: &[u8]) -> ScanOutcome {
        self.scan_with(&self.rules_for(rel_path), data)
    }

    /// Which rules apply to a file at `rel` (their `path` filters and allow-lists).
    pub fn rules_for(&self, rel: &Path) -> RuleSelection {
        if !self.path_filters {
            return RuleSelection::all(self.rules.len());
        }
        let set_ok: Vec<bool> = self
            .sets
            .iter()
            .map(|s| !s.allow.path_allowed(rel))
            .collect();
        RuleSelection::new(
            self.rules
                .iter()
                .map(|r| set_ok.get(r.set).copied().unwrap_or(true) && r.applies_to(rel))
                .collect(),
        )
    }

    /// Every rule, whatever the path: the strictest selection.
    pub fn all_rules(&self) -> RuleSelection {
        RuleSelection::all(self.rules.len())
    }

    /// Scans one file's complete contents with the rules `sel` selects.
    pub fn scan_with(&self, sel: &RuleSelection, data: &[u8]) -> ScanOutcome {
        self.scan_as(sel, data, false)
    }

    /// Scans one file's complete contents with the rules `sel` selects. A binary (not text) file
    /// is scanned through its printable runs (`binary.rs`), unless `opaque` (a media type the
    /// profile lists) says not to look inside it.
    pub fn scan_as(&self, sel: &RuleSelection, data: &[u8], opaque: bool) -> ScanOutcome {
        if self.is_empty() {
            return ScanOutcome::Clean;
        }
        let enc = match text::classify(data) {
            Kind::Binary if opaque => {
                return ScanOutcome::Unscannable(
                    "binary content of a type the profile calls opaque",
                );
            }
            Kind::Binary if container::is_container(data) => {
                let mut budget = self.inflate_limit;
                return match self.container_secret(&sel.applies, data, &mut budget, 1) {
                    Ok(None) => ScanOutcome::Clean,
                    Ok(Some(why)) => ScanOutcome::Refused(Arc::from(why)),
                    Err(why) => ScanOutcome::Unscannable(why),
                };
            }
            Kind::Binary => return self.scan_binary(sel, data),
            Kind::Text(e) => e,
        };
        let view = text::view(data, enc);
        let raw = self.raw_matches(&sel.applies, &view.bytes);
        if raw.is_empty() {
            return ScanOutcome::Clean;
        }
        let ranges = raw
            .iter()
            .map(|m| {
                (
                    view.file_offset(m.start),
                    view.file_offset(m.end),
                    self.rules[m.rule].id.clone(),
                )
            })
            .collect();
        ScanOutcome::Redact(Arc::new(Redactions::build(data, enc, ranges)))
    }

    /// The matches in a binary's printable runs, as `(start, end, rule, wide)` file ranges, or
    /// why its content cannot be scanned.
    fn binary_matches(
        &self,
        applies: &[bool],
        data: &[u8],
    ) -> Result<Vec<(u64, u64, usize, bool)>, &'static str> {
        if let Some(why) = binary::unscannable(data) {
            return Err(why);
        }
        let narrow = binary::narrow_projection(data, &binary::runs(data, binary::MIN_RUN));
        let mut out: Vec<(u64, u64, usize, bool)> = self
            .raw_matches(applies, &narrow)
            .into_iter()
            .map(|m| (m.start as u64, m.end as u64, m.rule, false))
            .collect();
        drop(narrow);
        let wide = binary::Wide::new(data, &binary::wide_runs(data, binary::MIN_RUN));
        out.extend(self.raw_matches(applies, &wide.bytes).into_iter().map(|m| {
            (
                wide.file_offset(m.start, false),
                wide.file_offset(m.end, true),
                m.rule,
                true,
            )
        }));
        out.sort_unstable_by_key(|m| m.0);
        Ok(out)
    }

    /// The first secret in the members of the gzip file or zip archive `data` (opened
    /// `depth` containers deep), as a reason naming the rule and the member; `Ok(None)` when
    /// there is none, `Err` when the members cannot all be scanned.
    fn container_secret(
        &self,
        applies: &[bool],
        data: &[u8],
        budget: &mut u64,
        depth: u32,
    ) -> Result<Option<String>, &'static str> {
        for (name, bytes) in container::members(data, budget)? {
            let rule = match text::classify(&bytes) {
                Kind::Text(enc) => {
                    let view = text::view(&bytes, enc);
                    self.raw_matches(applies, &view.bytes)
                        .first()
                        .map(|m| m.rule)
                }
                Kind::Binary if container::is_container(&bytes) => {
                    if depth >= MAX_NESTING {
                        return Err("containers nested too deep");
                    }
                    if let Some(inner) =
                        self.container_secret(applies, &bytes, budget, depth + 1)?
                    {
                        return Ok(Some(format!("{inner} inside `{name}`")));
                    }
                    None
                }
                Kind::Binary => self.binary_matches(applies, &bytes)?.first().map(|m| m.2),
            };
            if let Some(r) = rule {
                return Ok(Some(format!(
                    "holds a secret that cannot be masked in compressed content: rule `{}` matches in member `{name}`",
                    self.rules[r].id
                )));
            }
        }
        Ok(None)
    }

    fn scan_binary(&self, sel: &RuleSelection, data: &[u8]) -> ScanOutcome {
        match self.binary_matches(&sel.applies, data) {
            Err(why) => ScanOutcome::Unscannable(why),
            Ok(m) if m.is_empty() => ScanOutcome::Clean,
            Ok(m) => ScanOutcome::Redact(Arc::new(Redactions::build_binary(
                data,
                m.into_iter()
                    .map(|(a, b, r, w)| (a, b, self.rules[r].id.clone(), w))
                    .collect(),
            ))),
        }
    }

    /// Every match with its 1-based line, for the `scan` report. In a binary, the line counts
    /// the file's `\n` bytes before the match; a binary that cannot be scanned has none.
    pub fn findings(&self, rel_path: &Path, data: &[u8]) -> Vec<Finding> {
        if self.is_empty() {
            return Vec::new();
        }
        let enc = match text::classify(data) {
            Kind::Binary => {
                let sel = self.rules_for(rel_path);
                let Ok(found) = self.binary_matches(&sel.applies, data) else {
                    return Vec::new();
                };
                let (mut line, mut pos) = (1, 0usize);
                return found
                    .into_iter()
                    .map(|(start, end, rule, _)| {
                        let at = (start as usize).min(data.len());
                        line += memchr::memchr_iter(b'\n', &data[pos..at]).count();
                        pos = at;
                        Finding {
                            rule_id: self.rules[rule].id.to_string(),
                            line,
                            start,
                            end,
                        }
                    })
                    .collect();
            }
            Kind::Text(e) => e,
        };
        let view = text::view(data, enc);
        let text = &*view.bytes;
        let raw = self.raw_matches(&self.rules_for(rel_path).applies, text);
        let mut line = 1;
        let mut pos = 0;
        raw.iter()
            .map(|m| {
                line += text[pos..m.start].iter().filter(|&&b| b == b'\n').count();
                pos = m.start;
                Finding {
                    rule_id: self.rules[m.rule].id.to_string(),
                    line,
                    start: view.file_offset(m.start),
                    end: view.file_offset(m.end),
                }
            })
            .collect()
    }

    /// All accepted matches, sorted by start, in decoded-text offsets.
    fn raw_matches(&self, applies: &[bool], text: &[u8]) -> Vec<RawMatch> {
        let n = self.rules.len();

        // Regions per rule, from keyword hits. Kept per rule: hits arrive nearly sorted by
        // start, so each rule's list needs no sort (or a cheap one), where one list of all rules'
        // regions had to be sorted as a whole.
        let mut regions: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        let mut covered_to = vec![0usize; n];
        let mut any_region = vec![false; n];
        // Where each rule's last region starts: hits come sorted by start only within a block of
        // the keyword pass, so "inside the last region" needs both ends.
        let mut covered_from = vec![0usize; n];
        // Detector rules' hits, read (name and value) as they arrive, while their text is in
        // cache: read after the whole pass, each was a cache miss on a large file.
        // (One list per detector rule, in `self.detectors` order.)
        let mut detected: Vec<Vec<Detected>> = vec![Vec::new(); self.detectors.len()];
        let slot = |r: usize| self.detectors.iter().position(|&d| d == r);
        // Numeric PII: lines with long digit runs, found block by block behind the keyword
        // pass for the same reason, as (index in `digit_rules`, line).
        let digits_on = self.digit_rules.iter().any(|&r| applies[r]);
        let mut digit_lines = DigitLines::new(self.min_digits);
        let mut lines = Vec::new();
        let mut digit_regions: Vec<(usize, usize, usize)> = Vec::new();
        let mut digits_to = |to: usize| {
            if !digits_on {
                return;
            }
            digit_lines.advance(text, to, &mut lines);
            if to >= text.len() {
                digit_lines.finish(text, &mut lines);
            }
            for (s, e) in lines.drain(..) {
                let which = self.digit_set.as_ref().map(|set| set.matches(&text[s..e]));
                for (k, &r) in self.digit_rules.iter().enumerate() {
                    if applies[r] && which.as_ref().is_none_or(|w| w.matched(k)) {
                        digit_regions.push((k, s, e));
                    }
                }
            }
        };
        if let Some(ac) = &self.ac {
            ac.for_each_block(
                text,
                |m| {
                    let Some(rs) = self.pattern_rules.get(m.keyword as usize) else {
                        return;
                    };
                    // Computed at most once per hit, only when a rule asks for it.
                    let mut assigned = None;
                    let mut start_of_line = None;
                    let mut line_end: Option<(usize, usize)> = None;
                    for &ri in rs {
                        let r = ri as usize;
                        if !applies[r]
                            || (any_region[r]
                                && m.start >= covered_from[r]
                                && m.start < covered_to[r])
                        {
                            continue;
                        }
                        if let Some(kind) = self.rules[r].detector {
                            // The parser reads the name and value around the hit itself, once per
                            // name (several keywords of one name, `api_key`, `_key`, `key"`, find
                            // the same value).
                            let Some(d) = slot(r).and_then(|k| detected.get_mut(k)) else {
                                continue;
                            };
                            if d.last().is_none_or(|l| l.ks != m.start) {
                                let name = generic::name_start(text, m.start);
                                let found = if d.last().is_some_and(|l| l.name == name) {
                                    None
                                } else {
                                    Some(generic::find(text, m.start, m.end, kind))
                                };
                                d.push(Detected {
                                    ks: m.start,
                                    ke: m.end,
                                    name,
                                    found,
                                });
                            }
                            continue;
                        }
                        if self.rules[r].assignment
                            && !*assigned.get_or_insert_with(|| rules::assigned_after(text, m.end))
                        {
                            continue;
                        }
                        let window = self.rules[r].window;
                        let start = *start_of_line.get_or_insert_with(|| line_start(text, m.start));
                        let end = match line_end {
                            Some((w, e)) if w == window => e,
                            _ => {
                                let from = m.end.saturating_add(window).min(text.len());
                                let hi = from.saturating_add(MAX_FWD).min(text.len());
                                let e = memchr::memchr(b'\n', &text[from..hi])
                                    .map_or(hi, |p| from + p + 1);
                                line_end = Some((window, e));
                                e
                            }
                        };
                        if let Some((at, _)) = &self.rules[r].anchored {
                            // One attempt per hit position (several keywords may share a name).
                            let h = match at {
                                Start::Keyword { .. } => m.start,
                                // No match fits before the text's start.
                                Start::Before(n) => match m.start.checked_sub(*n) {
                                    Some(h) => h,
                                    None => continue,
                                },
                                Start::Name => text[start..m.start]
                                    .iter()
                                    .rposition(|&b| !span::is_name_byte(b))
                                    .map_or(start, |p| start + p + 1),
                            };
                            if regions[r].last().is_none_or(|l| l.0 != h) {
                                regions[r].push((h, end));
                            }
                            continue;
                        }
                        regions[r].push((start, end));
                        covered_from[r] = start;
                        covered_to[r] = end;
                        any_region[r] = true;
                    }
                },
                &mut digits_to,
            );
        }
        digits_to(text.len());
        for (k, s, e) in digit_regions {
            regions[self.digit_rules[k]].push((s, e));
        }
        for &r in &self.keywordless {
            if applies[r] {
                regions[r].push((0, text.len()));
            }
        }
        let mut out = Found::default();
        for (r, regs) in regions.iter_mut().enumerate() {
            if regs.is_empty()
                && (self.rules[r].detector.is_none()
                    || slot(r).is_none_or(|k| detected[k].is_empty()))
            {
                continue;
            }
            if !regs.is_sorted() {
                regs.sort_unstable();
            }
            let rule = &self.rules[r];
            if let Some(kind) = rule.detector {
                // One name per keyword hit; hits inside the same name find the same value.
                let mut ds = slot(r)
                    .map(|k| std::mem::take(&mut detected[k]))
                    .unwrap_or_default();
                ds.extend(regs.iter().map(|&(ks, ke)| Detected {
                    ks,
                    ke,
                    name: generic::name_start(text, ks),
                    found: None,
                }));
                if !ds.is_sorted_by_key(|d| (d.ks, d.ke)) {
                    ds.sort_unstable_by_key(|d| (d.ks, d.ke));
                }
                let mut last = None;
                let mut last_name = None;
                for d in &ds {
                    // Several keywords of one name (`api_key`, `_key`, `key"`) read it once.
                    if last_name == Some(d.name) {
                        continue;
                    }
                    last_name = Some(d.name);
                    let found = d
                        .found
                        .unwrap_or_else(|| generic::find(text, d.ks, d.ke, kind));
                    let Some(c) = found else {
                        continue;
                    };
                    let (s, e) = (c.start, c.end);
                    // A value an earlier rule masked is not judged: `accept` would drop it, and
                    // judging (word lists, entropy) was most of this rule's time on files dense
                    // with secrets. (Not remembered in `last`: a later read of the same range
                    // is masked as well, and any other range is read as before.)
                    if last == Some((s, e)) || out.covers(s, e) || !generic::judge(text, &c, kind) {
                        continue;
                    }
                    last = Some((s, e));
                    let value = &text[s..e];
                    let fits = match &rule.line_run {
                        Some(run) => run.is_match(value),
                        None => rule.regex.is_match(value),
                    };
                    if fits {
                        let floor = generic::judged_entropy(kind);
                        self.accept_judged(r, rule, text, (s, e), floor, &mut out);
                    }
                }
                continue;
            }
            if let Some((at, twin)) = &rule.anchored {
                let mut last = usize::MAX;
                for &(h, e) in regs.iter() {
                    if h != last {
                        self.run_anchored(r, rule, (*at, twin), text, (h, e), &mut out);
                    }
                    last = h;
                }
                continue;
            }
            // Overlapping regions of this rule are searched as one, others one by one: a
            // search over one line costs a couple of hundred nanoseconds, while searching
            // the lines between two hits costs more as soon as they are a few lines apart
            // (measured on files dense with secrets).
            let (mut cs, mut ce) = regs[0];
            for &(s, e) in &regs[1..] {
                if s <= ce {
                    ce = ce.max(e);
                } else {
                    self.run_rule(r, rule, text, cs, ce, &mut out);
                    (cs, ce) = (s, e);
                }
            }
            self.run_rule(r, rule, text, cs, ce, &mut out);
        }
        let mut out = out.matches;
        out.sort_unstable_by_key(|m| (m.start, std::cmp::Reverse(m.end), m.rule));
        out
    }

    fn run_rule(
        &self,
        ri: usize,
        rule: &CompiledRule,
        text: &[u8],
        start: usize,
        end: usize,
        out: &mut Found,
    ) {
        let Some(hay) = text.get(start..end) else {
            return;
        };
        let mut accept =
            |ms: usize, me: usize| self.accept(ri, rule, text, start + ms, start + me, out);
        // The iterators keep one regex cache for the whole region: a `find_at` per match would
        // fetch it again each time, a third of the search cost on files dense with matches.
        if rule.needs_captures() {
            for caps in rule.regex.captures_iter(hay) {
                if let Some(g) = rule.secret_group(&caps) {
                    accept(g.start(), g.end());
                }
            }
        } else {
            for m in rule.regex.find_iter(hay) {
                let (s, e) = rule.secret_in(m.as_bytes());
                accept(m.start() + s, m.start() + e);
            }
        }
    }

    /// One anchored attempt for the hit at `h` (`span::Start`), the regex seeing `text[p..end]`
    /// where `p` is `h` or the lead byte before it.
    fn run_anchored(
        &self,
        ri: usize,
        rule: &CompiledRule,
        (at, twin): (Start, &regex::bytes::Regex),
        text: &[u8],
        (h, end): (usize, usize),
        out: &mut Found,
    ) {
        let lead = !matches!(at, Start::Keyword { lead: false } | Start::Before(_));
        let p = match h.checked_sub(1) {
            Some(q) if lead && !matches!(text[q], b'\n' | b'\r') => q,
            _ => h,
        };
        let Some(hay) = text.get(p..end) else {
            return;
        };
        let (s, e) = if let Some(shape) = &rule.run {
            let Some((s, e)) = shape.find(hay) else {
                return;
            };
            (p + s, p + e)
        } else if rule.inner.as_ref().is_some_and(|f| f.find(hay).is_none()) {
            return;
        } else if rule.needs_captures() {
            // The anchored match is short, so asking for its groups costs little.
            let Some(g) = twin.captures(hay).and_then(|caps| rule.secret_group(&caps)) else {
                return;
            };
            (p + g.start(), p + g.end())
        } else {
            let Some(m) = twin.find(hay) else {
                return;
            };
            let (s, e) = rule.secret_in(m.as_bytes());
            (p + m.start() + s, p + m.start() + e)
        };
        if s < h && matches!(at, Start::Keyword { .. }) {
            // The slice's first byte passed for a line start without being one, and the secret
            // starts on it: search the hit's line as a rule without an anchor would.
            self.run_rule(ri, rule, text, line_start(text, h), end, out);
            return;
        }
        self.accept(ri, rule, text, s, e, out);
    }

    /// Records the candidate `text[s..e]` of rule `ri` if it counts as a secret and is not
    /// already inside an accepted match.
    fn accept(
        &self,
        ri: usize,
        rule: &CompiledRule,
        text: &[u8],
        s: usize,
        e: usize,
        out: &mut Found,
    ) {
        self.accept_judged(ri, rule, text, (s, e), None, out);
    }

    /// [`Engine::accept`] for a candidate whose entropy is known to be at least `floor`.
    fn accept_judged(
        &self,
        ri: usize,
        rule: &CompiledRule,
        text: &[u8],
        (s, e): (usize, usize),
        floor: Option<f64>,
        out: &mut Found,
    ) {
        if out.covers(s, e) {
            return;
        }
        if let Some(secret) = text.get(s..e)
            && self.secret_counts(rule, secret, floor)
        {
            out.push(RawMatch {
                rule: ri,
                start: s,
                end: e,
            });
        }
    }

    /// Whether a candidate secret survives the rule's entropy, validator and allow-lists; the
    /// entropy is not counted when it is known to be at least `floor` and that meets the rule's.
    fn secret_counts(&self, rule: &CompiledRule, secret: &[u8], floor: Option<f64>) -> bool {
        if secret.is_empty() {
            return false;
        }
        if let Some(min) = rule.entropy
            && floor.is_none_or(|f| f < min)
            && rules::entropy(secret) < min
        {
            return false;
        }
        if let Some(v) = rule.validate
            && !v.check(secret)
        {
            return false;
        }
        if rule.placeholders && generic::is_placeholder(secret) {
            return false;
        }
        let allowed = match &rule.secret_allow {
            Some(one) => one.is_match(secret),
            None => rule.allow.iter().any(|a| a.secret_allowed(secret)),
        };
        !allowed
            && !self
                .sets
                .get(rule.set)
                .is_some_and(|s| s.allow.secret_allowed(secret))
    }
}

/// Accepted matches, and which bytes they cover (one bit each, allocated with the first match).
///
/// Why: the generic `NAME = value` rules re-find most values a specific rule already matched
/// (`GITHUB_TOKEN=ghp_...`). A candidate wholly inside accepted matches masks nothing new, so
/// it is neither checked (entropy, allow-lists) nor reported a second time; the masked view is
/// the same, since the earlier, specific rule names the span either way.
#[derive(Default)]
struct Found {
    matches: Vec<RawMatch>,
    masked: Vec<u64>,
}

impl Found {
    fn covers(&self, s: usize, e: usize) -> bool {
        s < e && words(s, e).all(|(w, mask)| self.masked.get(w).is_some_and(|m| m & mask == mask))
    }

    fn push(&mut self, m: RawMatch) {
        let need = m.end.div_ceil(64);
        if self.masked.len() < need {
            self.masked.resize(need, 0);
        }
        for (w, mask) in words(m.start, m.end) {
            self.masked[w] |= mask;
        }
        self.matches.push(m);
    }
}

/// The bitmap words holding bits `[s, e)` (`s < e`), each with the mask of those bits.
fn words(s: usize, e: usize) -> impl Iterator<Item = (usize, u64)> {
    let (first, last) = (s / 64, (e - 1) / 64);
    (first..=last).map(move |w| {
        let lo = if w == first { s % 64 } else { 0 };
        let hi = if w == last { (e - 1) % 64 } else { 63 };
        (w, (u64::MAX >> (63 - hi)) & (u64::MAX << lo))
    })
}

/// Lines (as `[start, end)`) holding a run of at least `min` digits, where ` -./()` may separate
/// the digits of a run. Cheap enough to replace a regex pass per numeric-PII rule. A run that
/// ends in `:` is a time of day (`2026-03-01 12:00:00`), which would otherwise make every log
/// line a candidate, so it does not count.
#[cfg(test)]
fn digit_lines(text: &[u8], min: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut lines = DigitLines::new(min);
    lines.advance(text, text.len(), &mut out);
    lines.finish(text, &mut out);
    out
}

/// [`digit_lines`] as a scan that can stop and resume: the engine runs it block by block behind
/// the keyword pass, on text still in cache, instead of a second pass over the whole file.
struct DigitLines {
    min: usize,
    /// The next byte to read.
    i: usize,
    /// Digits in the current run.
    run: usize,
    /// Below this position the bytes are read one at a time (a block there had enough digits).
    slow_until: usize,
}

impl DigitLines {
    fn new(min: usize) -> DigitLines {
        DigitLines {
            min: min.max(1),
            i: 0,
            run: 0,
            slow_until: 0,
        }
    }

    /// Reads up to `to` (or a little past it, to the end of a line it reports).
    fn advance(&mut self, text: &[u8], to: usize, out: &mut Vec<(usize, usize)>) {
        let min = self.min;
        let to = to.min(text.len());
        let (mut i, mut run, mut slow_until) = (self.i, self.run, self.slow_until);
        while i < to {
            // Outside a run: a run of `min` digits spans at least `min` bytes, none of which ends
            // a run, so when the byte `min - 1` ahead does, no run starts before it. Letters end
            // runs, so even hex or base64 tokens are mostly skipped `min` bytes at a time.
            if run == 0 {
                // Source code and prose: a 64-byte block with fewer than `min` digits holds no
                // whole run, so everything up to its last run-ending byte is skipped (the count
                // vectorizes; code has a digit in most blocks, but rarely nine).
                if i >= slow_until
                    && let Some(block) = text.get(i..i + 64)
                {
                    // A byte-wide count (at most 64) keeps the sum in byte lanes: a third of
                    // the instructions of a widening one.
                    let digits = block
                        .iter()
                        .fold(0u8, |a, &b| a + u8::from(b.wrapping_sub(b'0') < 10));
                    if (digits as usize) < min
                        && let Some(p) = block
                            .iter()
                            .rposition(|&b| DIGIT_CLASS[usize::from(b)] == BREAK)
                    {
                        i += p + 1;
                        continue;
                    }
                    slow_until = i + 64;
                }
                if let Some(&b) = text.get(i + min - 1)
                    && DIGIT_CLASS[usize::from(b)] == BREAK
                {
                    i += min;
                    continue;
                }
            }
            let b = text[i];
            match DIGIT_CLASS[usize::from(b)] {
                DIGIT => run += 1,
                SEPARATOR => {}
                _ => {
                    if run >= min && b != b':' {
                        let (start, end) = line_around(text, i.saturating_sub(1));
                        out.push((start, end));
                        i = end.max(i + 1);
                        run = 0;
                        continue;
                    }
                    run = 0;
                }
            }
            i += 1;
        }
        (self.i, self.run, self.slow_until) = (i, run, slow_until);
    }

    /// After the whole text was read: a run that reaches the end of the text.
    fn finish(&mut self, text: &[u8], out: &mut Vec<(usize, usize)>) {
        if self.run >= self.min {
            out.push(line_around(text, text.len().saturating_sub(1)));
        }
        self.run = 0;
    }
}

const BREAK: u8 = 0;
const DIGIT: u8 = 1;
const SEPARATOR: u8 = 2;
/// For `digit_lines`: digits, the separators allowed inside a run, and everything else.
static DIGIT_CLASS: [u8; 256] = {
    let mut t = [BREAK; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = DIGIT;
        b += 1;
    }
    let seps = b" -.()/";
    let mut k = 0;
    while k < seps.len() {
        t[seps[k] as usize] = SEPARATOR;
        k += 1;
    }
    t
};

/// Where the line holding byte `i` starts, at most `MAX_BACK` bytes before it.
///
/// memchr, not a byte loop: this runs at every keyword hit, and on long lines (key blocks in
/// JSON, long tokens) the walk back to the line start was a tenth of a scan.
fn line_start(text: &[u8], i: usize) -> usize {
    let lo = i.saturating_sub(MAX_BACK);
    memchr::memrchr(b'\n', &text[lo..i]).map_or(lo, |p| lo + p + 1)
}

/// The line holding byte `i`, capped at `MAX_BACK`/`MAX_FWD` around it.
fn line_around(text: &[u8], i: usize) -> (usize, usize) {
    let i = i.min(text.len());
    let start = line_start(text, i);
    let hi = i.saturating_add(MAX_FWD).min(text.len());
    let end = memchr::memchr(b'\n', &text[i..hi]).map_or(hi, |p| i + p + 1);
    (start, end)
}

/// The rules that apply to one file, and a short id of that choice: scan verdicts are cached
/// per (file version, selection), so a file seen under a name with fewer rules can never lend
/// its verdict to a name with more (a hard link, a rename).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSelection {
    applies: Vec<bool>,
    id: u64,
}

impl RuleSelection {
    fn new(applies: Vec<bool>) -> RuleSelection {
        if applies.iter().all(|&a| a) {
            return RuleSelection { applies, id: 0 };
        }
        let mut h = blake3::Hasher::new();
        for &a in &applies {
            h.update(&[a as u8]);
        }
        let b = h.finalize();
        let mut id = u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([1; 8]));
        if id == 0 {
            id = 1;
        }
        RuleSelection { applies, id }
    }

    fn all(n: usize) -> RuleSelection {
        RuleSelection {
            applies: vec![true; n],
            id: 0,
        }
    }

    /// No rule applies: nothing in any version of the file could be masked.
    pub fn is_empty(&self) -> bool {
        !self.applies.contains(&true)
    }

    /// 0 for "every rule" (unsalted).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The same selection with an id of its own for each `salt` (a live policy's generation):
    /// verdicts cached under one generation's ids never match another's. Salt 0 changes nothing.
    pub fn salted(mut self, salt: u64) -> RuleSelection {
        if salt != 0 {
            self.id = (self.id ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(23) | 1;
        }
        self
    }

    /// Does this selection include every rule `other` does?
    pub fn covers(&self, other: &RuleSelection) -> bool {
        self.applies.len() == other.applies.len()
            && self
                .applies
                .iter()
                .zip(&other.applies)
                .all(|(&a, &b)| a || !b)
    }
}

#[cfg(test)]
mod tests {
    /// The skipping scan finds the same lines as a plain byte-by-byte one.
    #[test]
    fn digit_lines_matches_a_plain_scan() {
        fn plain(text: &[u8], min: usize) -> Vec<(usize, usize)> {
            let mut out: Vec<(usize, usize)> = Vec::new();
            let mut run = 0;
            for (i, &b) in text.iter().enumerate() {
                if b.is_ascii_digit() {
                    run += 1;
                } else if !b" -.()/".contains(&b) {
                    if run >= min && b != b':' {
                        let l = super::line_around(text, i - 1);
                        if out.last() != Some(&l) {
                            out.push(l);
                        }
                    }
                    run = 0;
                }
            }
            if run >= min {
                let l = super::line_around(text, text.len() - 1);
                if out.last() != Some(&l) {
                    out.push(l);
                }
            }
            out
        }
        let mut rng = crate::redact::samples::Rng::new(9);
        for alphabet in [
            &b"0123456789 -:x\n"[..],
            b"0123456789abcdef\n",
            b"01 a.(/)\n:Zz9",
        ] {
            for len in [0usize, 1, 8, 9, 10, 64, 500, 5000] {
                for min in [1usize, 3, 9] {
                    let text: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
                    assert_eq!(
                        super::digit_lines(&text, min),
                        plain(&text, min),
                        "{:?} min {min}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
    }

    /// A value a specific rule matched is reported once, under that rule, though the generic
    /// assignment rule matches it too; a value only the generic rule knows is still reported.
    #[test]
    fn a_secret_is_reported_once() {
        let e = super::Engine::load(&["secrets".into()], &[]).unwrap();
        let text = "GITHUB_TOKEN=ghp_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEyMzQ1\nSESSION_SECRET=Zm9v4YmFy9YmF6cXV4\n";
        let ids: Vec<String> = e
            .findings(std::path::Path::new("app.env"), text.as_bytes())
            .into_iter()
            .map(|f| f.rule_id)
            .collect();
        assert_eq!(ids, ["github-pat", "generic-secret"]);
    }

    #[test]
    fn found_tracks_covered_bytes() {
        let mut f = super::Found::default();
        assert!(!f.covers(0, 1));
        for (s, e) in [(3, 70), (70, 130), (200, 201)] {
            f.push(super::RawMatch {
                rule: 0,
                start: s,
                end: e,
            });
        }
        assert!(f.covers(3, 130) && f.covers(64, 128) && f.covers(200, 201));
        assert!(!f.covers(2, 10) && !f.covers(120, 131) && !f.covers(199, 201));
        assert!(!f.covers(201, 202) && !f.covers(5000, 5001) && !f.covers(5, 5));
    }

    #[test]
    fn digit_lines_finds_runs() {
        let t = b"abc 12 34\nphone (415) 555-0100\nv1.2.3\n4111 1111 1111 1111";
        assert_eq!(super::digit_lines(t, 8), vec![(10, 31), (38, 57)]);
        let log = b"2026-03-01 12:00:00 INFO ok\n";
        assert!(super::digit_lines(log, 8).is_empty());
    }

    /// Database URLs with a driver suffix (`mysqlx+srv://`) have a keyword too.
    #[test]
    fn driver_urls_are_found() {
        let e = super::Engine::load(&["secrets".into()], &[]).unwrap();
        let line = "DATABASE_URL=mysqlx+srv://app:Zq9xW2vL7pR4@db.internal/app\n";
        let f = e.findings(std::path::Path::new("app.txt"), line.as_bytes());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            &line[f[0].start as usize..f[0].end as usize],
            "Zq9xW2vL7pR4"
        );
    }

    /// Every key spelling the generic regexes accept has a keyword, so the regex gets to run.
    #[test]
    fn generic_key_spellings_are_all_found() {
        let e = super::Engine::load(&["secrets".into()], &[]).unwrap();
        let value = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5";
        for name in [
            "auth-key",
            "private-key",
            "signing-key",
            "signingkey",
            "encryption-key",
            "encryptionkey",
            "session-key",
            "sessionkey",
        ] {
            for (path, line) in [
                ("app.yaml", format!("{name}: {value}\n")),
                ("app.js", format!("const {name} = \"{value}\";\n")),
            ] {
                let f = e.findings(std::path::Path::new(path), line.as_bytes());
                let at = line.find(value).unwrap() as u64;
                assert!(
                    f.iter()
                        .any(|f| f.start <= at && f.end >= at + value.len() as u64),
                    "{path}: {line:?} -> {f:?}"
                );
            }
        }
    }

    /// Running rules anchored at their keyword hits finds exactly what searching each hit's
    /// line finds, on every sample (positives, near misses, and the lines around them).
    #[test]
    fn anchored_search_finds_what_line_search_finds() {
        use crate::redact::samples::cases;
        let anchored = super::Engine::load(&["secrets".into(), "pii".into()], &[]).unwrap();
        let mut plain = super::Engine::load(&["secrets".into(), "pii".into()], &[]).unwrap();
        let n = plain.rules.iter().filter(|r| r.anchored.is_some()).count();
        assert!(n >= 60, "{n} anchored rules");
        for r in &mut plain.rules {
            r.anchored = None;
        }
        for seed in 1..=20 {
            let mut text = String::new();
            for c in cases(seed) {
                for line in [c.positive.as_str(), c.negative] {
                    // Bare, behind a name, after a word character, and quoted.
                    text.push_str(&format!("{line}\nx={line}\nx{line} y\n\"{line}\"\n"));
                }
            }
            for path in ["deploy/app.env", "src/main.py", "notes.txt"] {
                let path = std::path::Path::new(path);
                assert_eq!(
                    anchored.findings(path, text.as_bytes()),
                    plain.findings(path, text.as_bytes()),
                    "seed {seed} {path:?}"
                );
            }
        }
    }

    /// On random splices of sample pieces and punctuation, which put keywords, names and values
    /// next to each other in ways no sample does, anchored attempts mask at least what line
    /// searches mask (and scanning never panics).
    #[test]
    fn anchored_search_agrees_on_spliced_text() {
        use crate::redact::samples::{Rng, cases};
        let anchored = super::Engine::load(&["secrets".into(), "pii".into()], &[]).unwrap();
        let mut plain = super::Engine::load(&["secrets".into(), "pii".into()], &[]).unwrap();
        for r in &mut plain.rules {
            r.anchored = None;
        }
        let mut pieces: Vec<String> = Vec::new();
        for c in cases(3) {
            pieces.push(c.positive.clone());
            pieces.push(c.negative.to_string());
            pieces.push(c.secret.clone());
        }
        for p in [
            "\n",
            "\r\n",
            " ",
            "=",
            ":",
            "\"",
            "'",
            ".",
            "-",
            "_",
            "x",
            "token",
            "secret_key",
            "://",
            "@",
            "#",
        ] {
            for _ in 0..20 {
                pieces.push(p.to_string());
            }
        }
        let mut rng = Rng::new(77);
        for round in 0..3000 {
            let mut text = String::new();
            for _ in 0..(1 + rng.below(12)) {
                let p = &pieces[rng.below(pieces.len() as u64) as usize];
                // Sometimes only a part of a piece, cut on a character boundary.
                let cut = p
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(rng.below(p.len() as u64 + 1) as usize);
                match (rng.below(3), cut) {
                    (0, Some(i)) => text.push_str(&p[i..]),
                    (1, Some(i)) => text.push_str(&p[..i]),
                    _ => text.push_str(p),
                }
            }
            for path in ["deploy/app.env", "src/main.py"] {
                let path = std::path::Path::new(path);
                let (a, p) = (
                    anchored.findings(path, text.as_bytes()),
                    plain.findings(path, text.as_bytes()),
                );
                // Every byte a line search masks is masked; anchored attempts may mask more,
                // since a line search skips candidates that overlap an earlier, rejected match.
                for f in &p {
                    let mut at = f.start;
                    for g in &a {
                        if g.start <= at && g.end > at {
                            at = g.end;
                        }
                    }
                    assert!(
                        at >= f.end,
                        "round {round} {path:?}: {f:?} not covered by {a:?} in {text:?}"
                    );
                }
            }
        }
    }
}
