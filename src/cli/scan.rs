//! `veilfs scan` and `veilfs redact`.
//!
//! `scan` is the admin's dry run: it walks the real folder with `std::fs` (this is not the agent's
//! path, so the hardened `backing` module is not needed), never follows symlinks, never descends
//! into a directory the profile hides (exactly like the mount), and reports every hidden entry with
//! the reason the agent would get, plus the redaction findings of every visible file.
//!
//! The walk is the library's (`crate::scan`); the report is sorted into depth-first name order,
//! so output is the same byte for byte on every run and on every machine.
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::policy::{EntryKind, Hidden, Policy};
use crate::profile::{History, Profile, Unscannable};
use crate::redact::{Engine, ScanOutcome, mask_all};
use crate::scan::{ScanEntry, kind_str, reason_code, walk_parallel};

#[derive(clap::Args, Debug)]
pub(crate) struct ScanArgs {
    /// Profile to apply (default: the built-in default profile).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Machine-readable output (JSON lines).
    #[arg(long)]
    pub json: bool,
    /// Also list visible entries (`visible\t<path>` or `"hidden":false`).
    #[arg(long)]
    pub all: bool,
    /// The folder to scan.
    pub path: PathBuf,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RedactArgs {
    #[arg(long)]
    pub profile: Option<PathBuf>,
    pub file: PathBuf,
}

/// Text-mode path: UTF-8 is printed as is, except that `\`, control characters (tab, newline)
/// and bytes that are not UTF-8 are escaped (`\\`, `\t`, `\n`, `\xNN`), so every line stays one
/// record and the name can be recovered exactly.
pub(super) fn escape_path(p: &Path) -> String {
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// JSON record of one entry. `path` is the UTF-8 (lossy) path; when the name is not UTF-8,
/// `path_bytes` carries the exact bytes.
fn json_record(e: &ScanEntry) -> serde_json::Value {
    let bytes = e.rel.as_os_str().as_bytes();
    let mut v = serde_json::json!({
        "path": String::from_utf8_lossy(bytes),
        "kind": kind_str(e.kind),
        "size": e.size,
        "hidden": e.verdict.is_err(),
    });
    if std::str::from_utf8(bytes).is_err() {
        v["path_bytes"] = serde_json::json!(bytes);
    }
    if let Err(h) = &e.verdict {
        v["reason"] = serde_json::json!(h.to_string());
        v["reason_code"] = serde_json::json!(reason_code(h));
        if let Hidden::Denied { pattern } = h {
            v["pattern"] = serde_json::json!(pattern);
        }
    }
    v
}

pub(super) fn run(a: ScanArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.profile {
        Some(p) => match Profile::load(p) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => Profile::builtin_default(),
    };
    let policy = match Policy::new(&profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let engine = match profile.redaction_engine() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut redactions = 0u64;
    let md = fs::metadata(&a.path).map_err(|e| anyhow::anyhow!("{}: {e}", a.path.display()))?;
    if !md.is_dir() {
        anyhow::bail!("{}: not a directory", a.path.display());
    }

    // Git object files (by content) are reported after the walk, per object database: naming a
    // commit and path needs every commit and tree of the repository.
    let history = profile.redaction.history != History::Allow && !engine.is_empty();
    let object_files = std::sync::Mutex::new(Vec::new());
    let (entries, walk_errors) = walk_parallel(&policy, &a.path, |e| {
        if e.verdict.is_ok() && e.kind == EntryKind::File && !engine.is_empty() {
            if history && is_object_file(&a.path.join(&e.rel)) {
                object_files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((e.rel.clone(), e.size));
                return Vec::new();
            }
            redaction_report(&engine, &profile, &policy, &a.path, e, a.json)
        } else {
            Vec::new()
        }
    });
    let object_files = object_files.into_inner().unwrap_or_else(|e| e.into_inner());
    let history_lines = match profile.history_engine() {
        Ok(h) => history_report(&h, &profile, &a.path, object_files, a.json),
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let errors = walk_errors.len() as u64;
    for error in &walk_errors {
        eprintln!("veilfs: scan: {error}");
    }

    let decoy_lines = decoy_report(&profile, &entries, a.json);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let (mut visible, mut hidden, mut hidden_dirs) = (0u64, 0u64, 0u64);
    for (e, lines) in entries {
        match &e.verdict {
            Ok(()) => visible += 1,
            Err(_) => {
                hidden += 1;
                if e.kind == EntryKind::Dir {
                    hidden_dirs += 1;
                }
            }
        }
        redactions += lines.len() as u64;
        let mut res = Ok(());
        for l in lines {
            res = res.and_then(|()| writeln!(out, "{l}"));
        }
        if e.verdict.is_err() || a.all {
            res = res.and_then(|()| {
                if a.json {
                    writeln!(out, "{}", json_record(&e))
                } else {
                    match &e.verdict {
                        Ok(()) => writeln!(out, "visible\t{}", escape_path(&e.rel)),
                        Err(h) => writeln!(out, "hidden\t{}\t{h}", escape_path(&e.rel)),
                    }
                }
            });
        }
        if let Err(err) = res {
            if err.kind() == io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(err.into());
        }
    }
    let history_findings = history_lines.len();
    for l in history_lines.into_iter().chain(decoy_lines) {
        if let Err(err) = writeln!(out, "{l}") {
            if err.kind() == io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(err.into());
        }
    }
    out.flush()?;
    eprintln!(
        "veilfs scan: {visible} visible, {hidden} hidden ({hidden_dirs} hidden directories, not descended into), {redactions} redaction findings, {errors} errors, {history_findings} git history findings; profile `{}`",
        profile.name
    );
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The decoys the profile would place (`[decoys]`), one line each: `decoy\tPATH\tplaced`, or
/// `decoy\tPATH\tnot placed: …` where a visible real entry takes its name (a visible real
/// entry always wins, see `crate::virtual_entries`).
fn decoy_report<T>(profile: &Profile, entries: &[(ScanEntry, T)], json: bool) -> Vec<String> {
    let placement = crate::virtual_entries::Placement::new(&profile.decoys);
    let shown = |p: &Path| {
        entries
            .iter()
            .find(|(e, _)| e.rel == p && e.verdict.is_ok())
            .map(|(e, _)| e.kind)
    };
    let mut out = Vec::new();
    for d in placement.decoys() {
        // Blocked by a visible real file of its name, or a visible real non-directory above it.
        let blocked = d
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .find_map(|a| match shown(a) {
                Some(_) if a == d.as_path() => Some("a visible real file of this name wins"),
                Some(EntryKind::Dir) | None => None,
                Some(_) => Some("a visible real entry above it is not a directory"),
            });
        out.push(if json {
            serde_json::json!({
                "decoy": d.to_string_lossy(),
                "placed": blocked.is_none(),
                "reason": blocked,
            })
            .to_string()
        } else {
            match blocked {
                None => format!("decoy\t{}\tplaced", escape_path(d)),
                Some(why) => format!("decoy\t{}\tnot placed: {why}", escape_path(d)),
            }
        });
    }
    out
}

/// Do the first bytes of the file at `path` say it is a git object file?
fn is_object_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .is_ok()
        && crate::history::objects::looks_like(&head)
        && (head.starts_with(b"PACK") || crate::history::detect(&head).is_some())
}

/// The git history findings as output lines, per object database (sorted by database, then
/// rule, commit, path): `history\tDB\tCOMMIT\tPATH\tRULE` (`-` for an object no commit
/// reaches; PATH is then the object's kind and id), and `unscannable\tFILE\tWHY\tdenied` for an
/// object file that cannot be read whole. Never the secret.
fn history_report(
    engine: &Engine,
    profile: &Profile,
    root: &Path,
    files: Vec<(PathBuf, u64)>,
    json: bool,
) -> Vec<String> {
    use crate::history::{database_of, detect, judge::Database};
    use std::collections::BTreeMap;
    let mut dbs: BTreeMap<PathBuf, Vec<(PathBuf, u64)>> = BTreeMap::new();
    for f in files {
        dbs.entry(database_of(&f.0)).or_default().push(f);
    }
    let limit = profile.redaction.max_scan_size.saturating_mul(4);
    let mut out = Vec::new();
    for (db, mut files) in dbs {
        files.sort();
        let mut d = Database::default();
        for (rel, size) in files {
            let name = escape_path(&rel);
            let data = if size > profile.redaction.max_scan_size {
                Err("larger than max_scan_size".to_string())
            } else {
                fs::read(root.join(&rel)).map_err(|e| format!("unreadable: {e}"))
            };
            match data.as_ref().map(|data| (detect(data), data)) {
                Ok((Some(fmt), data)) => d.add(engine, &name, fmt, data, limit),
                Ok((None, _)) => d
                    .unscannable
                    .push(format!("{name}: not a readable object file")),
                Err(why) => d.unscannable.push(format!("{name}: {why}")),
            }
        }
        let dbname = escape_path(&db);
        for u in &d.unscannable {
            let (file, why) = u.split_once(": ").unwrap_or((u, ""));
            out.push(if json {
                serde_json::json!({"path": file, "unscannable": why, "open": "denied"}).to_string()
            } else {
                format!("unscannable\t{file}\t{why}\tdenied")
            });
        }
        for f in d.findings() {
            let commit = f.commit.map(|c| c.to_string());
            out.push(if json {
                serde_json::json!({"history": dbname, "commit": commit, "path": f.path, "rule": f.rule})
                    .to_string()
            } else {
                format!(
                    "history\t{dbname}\t{}\t{}\t{}",
                    commit.as_deref().unwrap_or("-"),
                    f.path,
                    f.rule
                )
            });
        }
    }
    out
}

/// Redaction findings of one visible file as output lines: `redact\tPATH:LINE:RULE` (never the
/// secret), or `unscannable\tPATH\tWHY\tdenied|allowed`; JSON records with `--json`.
fn redaction_report(
    engine: &Engine,
    profile: &Profile,
    policy: &Policy,
    root: &Path,
    e: &ScanEntry,
    json: bool,
) -> Vec<String> {
    let path = escape_path(&e.rel);
    let unscannable = |why: &str| {
        let verdict = if profile.redaction.unscannable == Unscannable::Allow
            || policy.unscannable_allowed(&e.rel)
        {
            "allowed"
        } else {
            "denied"
        };
        if json {
            serde_json::json!({"path": path, "unscannable": why, "open": verdict}).to_string()
        } else {
            format!("unscannable\t{path}\t{why}\t{verdict}")
        }
    };
    if e.size > profile.redaction.max_scan_size {
        return vec![unscannable("larger than max_scan_size")];
    }
    let data = match fs::read(root.join(&e.rel)) {
        Ok(d) => d,
        Err(err) => return vec![unscannable(&format!("unreadable: {err}"))],
    };
    if policy.text(&e.rel) {
        return vec![text_view_line(engine, root, &e.rel, &data, json)];
    }
    if policy.metadata(&e.rel) {
        return vec![if json {
            serde_json::json!({"path": path, "present": "metadata"}).to_string()
        } else {
            format!("metadata\t{path}\tshown as a metadata stub, never its content")
        }];
    }
    if policy.document(&e.rel) {
        let rules = engine.rules_for(&e.rel);
        let budget = profile.redaction.max_scan_size.saturating_mul(4);
        use crate::redact::document::{Outcome, redact};
        return match redact(engine, &rules, &data, policy.refuse_macros(), budget, Default::default()) {
            Ok(Outcome::Clean) => Vec::new(),
            Ok(Outcome::Masked(r)) if json => vec![
                serde_json::json!({"path": path, "document": "rebuilt", "rules": r.rules, "redactions": r.redactions})
                    .to_string(),
            ],
            Ok(Outcome::Masked(r)) => vec![format!(
                "document\t{path}\tserved rebuilt, {} span(s) masked ({})",
                r.redactions,
                r.rules.join(",")
            )],
            Err(why) if json => vec![
                serde_json::json!({"path": path, "unscannable": why, "open": "denied"}).to_string(),
            ],
            Err(why) => vec![format!("unscannable\t{path}\tdocument refused: {why}\tdenied")],
        };
    }
    // Only the binary check here: `findings` is the one engine pass (a full `scan` first would
    // run every regex twice).
    if crate::redact::text::classify(&data) == crate::redact::text::Kind::Binary {
        if policy.opaque(&e.rel) {
            return vec![unscannable("binary of a type the profile calls opaque")];
        }
        if crate::redact::container::is_container(&data) {
            return match engine.scan(&e.rel, &data) {
                ScanOutcome::Unscannable(why) => vec![unscannable(why)],
                ScanOutcome::Refused(why) if json => vec![
                    serde_json::json!({"path": path, "unscannable": &*why, "open": "denied"})
                        .to_string(),
                ],
                ScanOutcome::Refused(why) => vec![format!("unscannable\t{path}\t{why}\tdenied")],
                ScanOutcome::Clean | ScanOutcome::Redact(_) => Vec::new(),
            };
        }
        if let Some(why) = crate::redact::binary::unscannable(&data) {
            return vec![unscannable(why)];
        }
    }
    engine
        .findings(&e.rel, &data)
        .into_iter()
        .map(|f| {
            if json {
                serde_json::json!({"path": path, "line": f.line, "rule": f.rule_id, "start": f.start, "end": f.end}).to_string()
            } else {
                format!("redact\t{path}:{}:{}", f.line, f.rule_id)
            }
        })
        .collect()
}

/// `veilfs redact`: print the masked view of one file, as the agent would read it.
pub(super) fn run_redact(a: RedactArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.profile {
        Some(p) => Profile::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Profile::builtin_default(),
    };
    let engine = profile
        .redaction_engine()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = fs::read(&a.file).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let out = match engine.scan(&a.file, &data) {
        ScanOutcome::Clean => data,
        ScanOutcome::Redact(r) => mask_all(&data, &r),
        ScanOutcome::Unscannable(why) => {
            eprintln!(
                "veilfs redact: {}: {why} cannot be scanned (the mount refuses it unless the profile allows it unscanned)",
                a.file.display()
            );
            return Ok(ExitCode::from(1));
        }
        ScanOutcome::Refused(why) => {
            eprintln!(
                "veilfs redact: {}: {why} (the mount refuses it)",
                a.file.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// What the agent is shown of a file the profile presents as text (`[present] text`): the
/// source refused, and its `NAME.txt` sibling with the text masked, or refused, or not shown
/// because a real file takes the name. The same extraction and rules as the mount's.
fn text_view_line(engine: &Engine, root: &Path, rel: &Path, data: &[u8], json: bool) -> String {
    let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let view = rel.with_file_name(crate::virtual_entries::text_name(
        rel.file_name().unwrap_or_default(),
    ));
    let (shown, detail) = if fs::symlink_metadata(root.join(&view)).is_ok() {
        ("not shown", "a real file of this name wins".to_string())
    } else {
        match crate::text_view::extract(name, data) {
            Err(why) => ("refused", why),
            Ok(text) => match engine.scan(rel, text.as_bytes()) {
                ScanOutcome::Clean => ("shown", "no span masked".to_string()),
                ScanOutcome::Redact(r) => {
                    let (rules, n) = crate::audit::rules_fired(&r);
                    ("shown", format!("{n} span(s) masked ({})", rules.join(",")))
                }
                ScanOutcome::Unscannable(why) => ("refused", format!("cannot be scanned: {why}")),
                ScanOutcome::Refused(why) => ("refused", why.to_string()),
            },
        }
    };
    let (path, view) = (escape_path(rel), escape_path(&view));
    if json {
        serde_json::json!({"path": path, "present": "text", "view": view, "shown": shown, "detail": detail})
            .to_string()
    } else {
        format!("text\t{view}\t{shown}: {detail} (the text of {path}, which is refused)")
    }
}
