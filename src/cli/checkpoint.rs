//! `veilfs checkpoint`: mark the end of an agent's turn in a live session.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::control::{Request, locate, request};

#[derive(clap::Args, Debug)]
pub(crate) struct CheckpointArgs {
    /// A label to roll back to (`veilfs rollback --to LABEL`).
    #[arg(long)]
    pub label: Option<String>,
    /// The mount (default: the one `veilfs run` runs this command in, from VEILFS_MOUNT).
    pub mountpoint: Option<PathBuf>,
}

pub(super) fn run(a: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let sock = locate(a.mountpoint.as_deref())?;
    let r = request(&sock, &Request::Checkpoint { label: a.label })?;
    let n = r.checkpoint.unwrap_or(0);
    let store = r.store.map(|s| s.display().to_string()).unwrap_or_default();
    println!(
        "checkpoint #{n} in session {}; undo what follows it with: veilfs rollback --store {store} --to {n} --session {}",
        r.session.as_deref().unwrap_or("?"),
        r.session.as_deref().unwrap_or("?"),
    );
    Ok(ExitCode::SUCCESS)
}
