//! `veilfs trace FILE`: names the mount, session and time a leaked view came from.
//!
//! Two traces are read (see `crate::watermark`):
//! - the mark of a document view (`[watermark] documents` or `footer`): its document property,
//!   or, from a copy whose properties were stripped, its footer line; in any text too;
//! - the mask codes (`[watermark] mask_codes`) of the masks in a file, a document or text on
//!   stdin (`-`): each `<redacted:RULE:CODE>` is checked against every session of the store
//!   (`--store`, else every store under `$XDG_DATA_HOME/veilfs`) with the store's key, and the
//!   sessions it matches are named with their mount point and time from the audit trail.
//!
//! What cannot be traced: a mask cut shorter than its label (the code is lost), a document
//! whose property and footer were both removed, a mask whose store (and so key) is gone.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::watermark;

#[derive(clap::Args, Debug)]
pub(crate) struct TraceArgs {
    /// A view served by veilfs or a copy of one (a document, any file holding masks), or `-`
    /// for text on stdin.
    pub file: PathBuf,
    /// The store whose sessions mask codes are checked against (default: every store under
    /// `$XDG_DATA_HOME/veilfs`).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

pub(super) fn run(a: TraceArgs) -> anyhow::Result<ExitCode> {
    let data = if a.file.as_os_str() == "-" {
        let mut d = Vec::new();
        std::io::stdin().read_to_end(&mut d).context("read stdin")?;
        d
    } else {
        std::fs::read(&a.file).with_context(|| format!("read {}", a.file.display()))?
    };
    let texts = crate::redact::document::xml_texts(&data);
    let mut found = false;
    let mark = crate::redact::document::read_mark(&data)
        .or_else(|| texts.iter().find_map(|t| watermark::find_mark(t)))
        .or_else(|| watermark::find_mark(&String::from_utf8_lossy(&data)));
    if let Some(mark) = mark {
        println!("watermark: {mark}");
        found = true;
    }
    let mut masks = watermark::coded_masks(&data);
    for t in &texts {
        masks.extend(watermark::coded_masks(t.as_bytes()));
    }
    masks.sort();
    masks.dedup();
    if !masks.is_empty() {
        found |= trace_masks(&masks, a.store.as_deref())?;
    }
    if !found {
        eprintln!(
            "veilfs trace: {} carries no veilfs watermark and no traceable mask code",
            a.file.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints, for each session whose codes match any of `masks`, which masks it matches and its
/// mount; true when some session matched.
fn trace_masks(masks: &[(String, String)], store: Option<&Path>) -> anyhow::Result<bool> {
    let stores = match store {
        Some(s) => vec![s.to_path_buf()],
        None => default_stores(),
    };
    let mut any = false;
    for store in &stores {
        let Some(key) = watermark::load_key(store) else {
            continue;
        };
        let files = crate::audit::audit_files(store)
            .with_context(|| format!("{}", crate::audit::audit_dir(store).display()))?;
        for f in files {
            let Some(session) = f.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let codes = watermark::MaskCodes::new(key, session);
            let hits: Vec<String> = masks
                .iter()
                .filter(|(rule, code)| codes.code(rule) == *code)
                .map(|(rule, code)| format!("<redacted:{rule}:{code}>"))
                .collect();
            if hits.is_empty() {
                continue;
            }
            any = true;
            let (mount, time) = mounted(&f);
            println!(
                "mask code: session {session} (store {}, mount {}, mounted {}) matches {} of {} coded mask(s): {}",
                store.display(),
                mount.as_deref().unwrap_or("?"),
                time.as_deref().unwrap_or("?"),
                hits.len(),
                masks.len(),
                hits.join(" ")
            );
        }
    }
    if !any {
        eprintln!(
            "veilfs trace: {} coded mask(s) found, but no session of {} matches them",
            masks.len(),
            match store {
                Some(s) => s.display().to_string(),
                None => "the stores under $XDG_DATA_HOME/veilfs".into(),
            }
        );
    }
    Ok(any)
}

/// Every store at the default location (`mount::store_dir` without `--store`).
fn default_stores() -> Vec<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    let Some(base) = base else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = std::fs::read_dir(base.join("veilfs"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The mount point and time of the session whose audit trail is `file` (its `mounted` event).
fn mounted(file: &Path) -> (Option<String>, Option<String>) {
    let Ok(data) = std::fs::read(file) else {
        return (None, None);
    };
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let d = v.pointer("/unmapped/veilfs");
        if d.and_then(|d| d.get("event")).and_then(|e| e.as_str()) != Some("mounted") {
            continue;
        }
        let mount = d
            .and_then(|d| d.get("mountpoint"))
            .and_then(|m| m.as_str())
            .map(str::to_string);
        let time = v
            .get("time")
            .and_then(|t| t.as_i64())
            .map(|ms| crate::time::format_time(ms as i128 * 1_000_000));
        return (mount, time);
    }
    (None, None)
}
