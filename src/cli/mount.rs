//! `veilfs mount` and `veilfs unmount`.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Profile (default: the built-in default profile, read-only).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Write mode, overriding the profile: read-only, snapshot or overlay.
    #[arg(long)]
    pub mode: Option<String>,
    /// Snapshot store directory (overrides the profile's).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Let other users (and root) use the mount (needs root or user_allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// The real folder to expose.
    pub scope: PathBuf,
    /// Where the agent's view appears (an empty directory).
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UnmountArgs {
    pub mountpoint: PathBuf,
}

pub fn run(_a: MountArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("mount: not yet implemented")
}

pub fn run_unmount(_a: UnmountArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("unmount: not yet implemented")
}
