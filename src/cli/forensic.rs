//! Forensic commands over a snapshot store: log, diff, rollback, verify, commit, discard.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub json: bool,
}
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    pub paths: Vec<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub force: bool,
    pub paths: Vec<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    pub store: PathBuf,
}
#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub force: bool,
    pub paths: Vec<PathBuf>,
}
#[derive(clap::Args, Debug)]
pub struct DiscardArgs {
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long)]
    pub session: Option<String>,
    pub paths: Vec<PathBuf>,
}

pub fn run_log(_a: LogArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("log: not yet implemented")
}
pub fn run_diff(_a: DiffArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("diff: not yet implemented")
}
pub fn run_rollback(_a: RollbackArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollback: not yet implemented")
}
pub fn run_verify(_a: VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("verify: not yet implemented")
}
pub fn run_commit(_a: CommitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("commit: not yet implemented (overlay mode)")
}
pub fn run_discard(_a: DiscardArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("discard: not yet implemented (overlay mode)")
}
