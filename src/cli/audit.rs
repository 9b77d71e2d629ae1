//! `veilfs audit`: the audit trail's events that match, for an incident's first questions
//! (who read this file, what was refused, what did that process do).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit;
use crate::time::{format_time, parse_time};
use anyhow::Context;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub(crate) struct AuditArgs {
    #[arg(long)]
    pub store: PathBuf,
    /// Only this session's events (the journal's session id, or a read-only mount's `ro-…`).
    #[arg(long)]
    pub session: Option<String>,
    /// RFC 3339 time or unix seconds: only events at or after it.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events about a path (relative to the scope) matching this glob.
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    /// Only refused requests.
    #[arg(long)]
    pub denied: bool,
    /// Only events of this process id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print the matching lines as they are stored (OCSF JSON, one per line).
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let since_ms = match &a.since {
        Some(s) => Some(
            parse_time(s)
                .with_context(|| {
                    format!(
                        "--since {s:?}: expected RFC 3339 (2026-11-25T17:00:00Z) or unix seconds"
                    )
                })?
                .div_euclid(1_000_000),
        ),
        None => None,
    };
    let glob = match &a.path {
        Some(g) => Some(
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .with_context(|| format!("--path {g:?}"))?
                .compile_matcher(),
        ),
        None => None,
    };
    let mut files = audit::audit_files(&a.store)
        .with_context(|| format!("{}", audit::audit_dir(&a.store).display()))?;
    if let Some(id) = &a.session {
        files.retain(|f| f.file_stem().is_some_and(|s| s == id.as_str()));
        if files.is_empty() {
            anyhow::bail!(
                "no audit trail of session {id:?} in {}",
                audit::audit_dir(&a.store).display()
            );
        }
    }
    let mut out = std::io::stdout().lock();
    if !a.json {
        writeln!(
            out,
            "{:<24} {:>7} {:<15} {:<14} {:<11} {:<40} DETAIL",
            "TIME (UTC)", "PID", "PROCESS", "ACTIVITY", "DISPOSITION", "PATH"
        )?;
    }
    let mut shown = 0usize;
    for f in &files {
        let data = std::fs::read(f).with_context(|| format!("{}", f.display()))?;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if v.get("class_uid").is_none() {
                continue; // a signature line
            }
            let time = v.get("time").and_then(Value::as_i64).unwrap_or(0);
            let pid = v.pointer("/actor/process/pid").and_then(Value::as_u64);
            let disposition = v.get("disposition_id").and_then(Value::as_u64);
            let d = v.pointer("/unmapped/veilfs");
            let field = |k: &str| d.and_then(|d| d.get(k)).and_then(Value::as_str);
            let rel = field("path").unwrap_or("");
            let to = field("to");
            if since_ms.is_some_and(|s| (time as i128) < s)
                || a.pid.is_some_and(|p| pid != Some(p as u64))
                || (a.denied && disposition != Some(2))
                || glob
                    .as_ref()
                    .is_some_and(|g| !g.is_match(rel) && !to.is_some_and(|t| g.is_match(t)))
            {
                continue;
            }
            shown += 1;
            if a.json {
                out.write_all(line)?;
                out.write_all(b"\n")?;
                continue;
            }
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
            let mut path = if rel.is_empty() {
                s("/file/path").to_string()
            } else {
                rel.to_string()
            };
            if let Some(t) = to {
                path = format!("{path} -> {t}");
            }
            let detail = match field("event") {
                Some("open") | Some("read") => {
                    let rules: Vec<&str> = d
                        .and_then(|d| d.get("rules"))
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let w = d.and_then(|d| d.get("writable")).and_then(Value::as_bool);
                    let mut x = if w == Some(true) { "write" } else { "read" }.to_string();
                    if !rules.is_empty() {
                        let n = d
                            .and_then(|d| d.get("redactions"))
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        x.push_str(&format!(", {n} masked by {}", rules.join(",")));
                    }
                    x
                }
                Some("denied") => format!(
                    "{}: {}",
                    field("op").unwrap_or(""),
                    field("reason").unwrap_or("")
                ),
                _ => s("/message").to_string(),
            };
            writeln!(
                out,
                "{:<24} {:>7} {:<15} {:<14} {:<11} {:<40} {}",
                format_time(time as i128 * 1_000_000),
                pid.map(|p| p.to_string()).unwrap_or_default(),
                s("/actor/process/name"),
                s("/activity_name"),
                s("/disposition"),
                path,
                detail
            )?;
        }
    }
    if !a.json && shown == 0 {
        writeln!(out, "(no matching events)")?;
    }
    Ok(ExitCode::SUCCESS)
}
