//! `veilfs scan` and `veilfs redact`.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// Profile to apply (default: the built-in default profile).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Machine-readable output (JSON lines).
    #[arg(long)]
    pub json: bool,
    /// The folder to scan.
    pub path: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RedactArgs {
    #[arg(long)]
    pub profile: Option<PathBuf>,
    pub file: PathBuf,
}

pub fn run(_a: ScanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("scan: not yet implemented")
}

pub fn run_redact(_a: RedactArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("redact: not yet implemented")
}
