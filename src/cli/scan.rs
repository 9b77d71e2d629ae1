//! `veilfs scan` and `veilfs redact`.
//!
//! `scan` is the admin's dry run: it walks the real folder with `std::fs` (this is not the agent's
//! path, so the hardened `backing` module is not needed), never follows symlinks, never descends
//! into a directory the profile hides (exactly like the mount), and reports every hidden entry with
//! the reason the agent would get. The walk is a [`Walker`] yielding `(rel, kind, verdict)` so more
//! findings (redaction) can be added per entry later.
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use veilfs::policy::{EntryKind, Hidden, Policy};
use veilfs::profile::{Profile, Unscannable};
use veilfs::redact::{Engine, ScanOutcome, mask_all};

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
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
pub struct RedactArgs {
    #[arg(long)]
    pub profile: Option<PathBuf>,
    pub file: PathBuf,
}

/// One entry of the scanned tree and the policy's verdict on it.
#[derive(Debug)]
pub struct ScanEntry {
    /// Relative to the scanned root, `/`-separated, raw bytes.
    pub rel: PathBuf,
    pub kind: EntryKind,
    pub size: u64,
    pub verdict: Result<(), Hidden>,
}

/// What the walker yields: an entry, or a directory/entry it could not read.
#[derive(Debug)]
pub enum WalkItem {
    Entry(ScanEntry),
    Error { rel: PathBuf, error: io::Error },
}

/// Depth-first walk in name order; does not follow symlinks; does not descend into hidden dirs.
pub struct Walker<'p> {
    policy: &'p Policy,
    root: PathBuf,
    /// Entries still to visit (relative paths), next on top.
    pending: Vec<PathBuf>,
    /// Errors found while listing a directory, reported before its entries.
    errors: Vec<(PathBuf, io::Error)>,
}

impl<'p> Walker<'p> {
    pub fn new(policy: &'p Policy, root: &Path) -> Walker<'p> {
        let mut w = Walker {
            policy,
            root: root.to_path_buf(),
            pending: Vec::new(),
            errors: Vec::new(),
        };
        w.push_children(Path::new(""));
        w
    }

    fn push_children(&mut self, rel: &Path) {
        let dir = self.root.join(rel);
        match fs::read_dir(&dir) {
            Ok(rd) => {
                let mut names: Vec<OsString> = Vec::new();
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name()),
                        Err(error) => self.errors.push((rel.to_path_buf(), error)),
                    }
                }
                names.sort();
                for n in names.into_iter().rev() {
                    self.pending.push(rel.join(n));
                }
            }
            Err(error) => self.errors.push((rel.to_path_buf(), error)),
        }
    }
}

impl Iterator for Walker<'_> {
    type Item = WalkItem;
    fn next(&mut self) -> Option<WalkItem> {
        if let Some((rel, error)) = self.errors.pop() {
            return Some(WalkItem::Error { rel, error });
        }
        let rel = self.pending.pop()?;
        let abs = self.root.join(&rel);
        let md = match fs::symlink_metadata(&abs) {
            Ok(md) => md,
            Err(error) => return Some(WalkItem::Error { rel, error }),
        };
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Special
        };
        let target = if kind == EntryKind::Symlink {
            match fs::read_link(&abs) {
                Ok(t) => Some(t),
                Err(error) => return Some(WalkItem::Error { rel, error }),
            }
        } else {
            None
        };
        let verdict = self
            .policy
            .visibility(&rel, kind, md.len(), target.as_deref());
        if kind == EntryKind::Dir && verdict.is_ok() {
            self.push_children(&rel);
        }
        Some(WalkItem::Entry(ScanEntry {
            rel,
            kind,
            size: md.len(),
            verdict,
        }))
    }
}

fn kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Special => "special",
    }
}

fn reason_code(h: &Hidden) -> &'static str {
    match h {
        Hidden::Denied { .. } => "denied",
        Hidden::NotAllowed => "not-allowed",
        Hidden::TooLarge { .. } => "too-large",
        Hidden::Special => "special",
        Hidden::EscapingSymlink => "escaping-symlink",
    }
}

/// Text-mode path: UTF-8 is printed as is, except that `\`, control characters (tab, newline)
/// and bytes that are not UTF-8 are escaped (`\\`, `\t`, `\n`, `\xNN`), so every line stays one
/// record and the name can be recovered exactly.
pub fn escape_path(p: &Path) -> String {
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

pub fn run(a: ScanArgs) -> anyhow::Result<ExitCode> {
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

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let (mut visible, mut hidden, mut hidden_dirs, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for item in Walker::new(&policy, &a.path) {
        match item {
            WalkItem::Error { rel, error } => {
                errors += 1;
                eprintln!("veilfs: scan: {}: {error}", a.path.join(&rel).display());
            }
            WalkItem::Entry(e) => {
                match &e.verdict {
                    Ok(()) => visible += 1,
                    Err(_) => {
                        hidden += 1;
                        if e.kind == EntryKind::Dir {
                            hidden_dirs += 1;
                        }
                    }
                }
                if e.verdict.is_ok() && e.kind == EntryKind::File && !engine.is_empty() {
                    let lines = redaction_report(&engine, &profile, &policy, &a.path, &e, a.json);
                    redactions += lines.len() as u64;
                    for l in lines {
                        if let Err(err) = writeln!(out, "{l}") {
                            if err.kind() == io::ErrorKind::BrokenPipe {
                                return Ok(ExitCode::SUCCESS);
                            }
                            return Err(err.into());
                        }
                    }
                }
                if e.verdict.is_ok() && !a.all {
                    continue;
                }
                let res = if a.json {
                    writeln!(out, "{}", json_record(&e))
                } else {
                    match &e.verdict {
                        Ok(()) => writeln!(out, "visible\t{}", escape_path(&e.rel)),
                        Err(h) => writeln!(out, "hidden\t{}\t{h}", escape_path(&e.rel)),
                    }
                };
                if let Err(err) = res {
                    if err.kind() == io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(err.into());
                }
            }
        }
    }
    out.flush()?;
    eprintln!(
        "veilfs scan: {visible} visible, {hidden} hidden ({hidden_dirs} hidden directories, not descended into), {redactions} redaction findings, {errors} errors; profile `{}`",
        profile.name
    );
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
    if matches!(engine.scan(&e.rel, &data), ScanOutcome::Binary) {
        return vec![unscannable("binary")];
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
pub fn run_redact(a: RedactArgs) -> anyhow::Result<ExitCode> {
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
        ScanOutcome::Binary => {
            eprintln!(
                "veilfs redact: {}: binary content cannot be scanned (the mount refuses it unless the profile allows it unscanned)",
                a.file.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
