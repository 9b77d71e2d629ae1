//! `veilfs mount` and `veilfs unmount`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use veilfs::mount::{MountRequest, mount_and_serve, unmount};
use veilfs::profile::{Profile, WriteMode};

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Profile (default: the built-in default profile, read-only).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Write mode, overriding the profile: read-only, snapshot or overlay.
    #[arg(long)]
    pub mode: Option<WriteMode>,
    /// Snapshot store directory (overrides the profile's).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Let other users (and root) use the mount (needs root or user_allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// Also write every audit event (OCSF JSON lines) to PATH, or to stdout with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub audit_log: Option<PathBuf>,
    /// Sign the audit chain with this Ed25519 key (a file of 32 raw bytes or 64 hex digits).
    #[arg(long, value_name = "PATH")]
    pub audit_key: Option<PathBuf>,
    /// The real folder to expose.
    pub scope: PathBuf,
    /// Where the agent's view appears (an empty directory).
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UnmountArgs {
    pub mountpoint: PathBuf,
}

pub fn run(a: MountArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.profile {
        Some(p) => Profile::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Profile::builtin_default(),
    };
    mount_and_serve(MountRequest {
        scope: a.scope,
        mountpoint: a.mountpoint,
        profile,
        mode: a.mode,
        store: a.store,
        allow_other: a.allow_other,
        audit_log: a.audit_log,
        audit_key: a.audit_key,
    })
    .context("mount")?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_unmount(a: UnmountArgs) -> anyhow::Result<ExitCode> {
    unmount(&a.mountpoint)?;
    Ok(ExitCode::SUCCESS)
}
