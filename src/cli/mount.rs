//! `veilfs mount` and `veilfs unmount`.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::mount::{MountRequest, mount_and_serve, unmount};
use crate::profile::{Profile, WriteMode};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Let other users (and root) use the mount (needs root or user_allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// End the mount by itself after this long, as `veilfs revoke` would (e.g. `2h`, `90m`).
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
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

/// What the agent is shown and where its changes are kept (`mount` and `run`).
#[derive(clap::Args, Debug)]
pub struct ViewArgs {
    /// Profile (default: the built-in default profile, read-only).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Write mode, overriding the profile: read-only, snapshot or overlay.
    #[arg(long)]
    pub mode: Option<WriteMode>,
    /// Snapshot store directory (overrides the profile's).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// The agent's manifest (JSON or TOML): the agent gets what both it and the profile allow.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UnmountArgs {
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// End every live mount of yours.
    #[arg(long, conflicts_with = "mountpoint")]
    pub all: bool,
    #[arg(required_unless_present = "all")]
    pub mountpoint: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// One JSON object per live mount.
    #[arg(long)]
    pub json: bool,
}

/// `2h`, `90m`, `1h30m`, `45s` (jiff's friendly format, or ISO 8601 `PT2H`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("`{s}` is not a duration like 2h, 90m or 1h30m: {e}"))?;
    std::time::Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}`: the duration must be positive"))
}

pub fn run(a: MountArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.view.profile {
        Some(p) => Profile::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Profile::builtin_default(),
    };
    mount_and_serve(MountRequest {
        scope: a.scope,
        mountpoint: a.mountpoint,
        profile,
        mode: a.view.mode,
        store: a.view.store,
        allow_other: a.allow_other,
        expires: a.expires,
        audit_log: a.audit_log,
        audit_key: a.audit_key,
        manifest: a.view.manifest,
    })
    .context("mount")?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_resume(a: UnmountArgs) -> anyhow::Result<ExitCode> {
    let m = crate::registry::resume(&a.mountpoint)
        .with_context(|| format!("resume {}", a.mountpoint.display()))?;
    eprintln!(
        "veilfs: asked the mount at {} (pid {}) to resume",
        m.mountpoint.display(),
        m.pid
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_revoke(a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let targets = match &a.mountpoint {
        Some(mp) => {
            vec![crate::registry::find(mp).with_context(|| format!("revoke {}", mp.display()))?]
        }
        None => crate::registry::list().context("revoke --all")?,
    };
    for m in targets {
        let t0 = std::time::Instant::now();
        crate::registry::revoke(&m)
            .with_context(|| format!("revoke {}", m.mountpoint.display()))?;
        eprintln!(
            "veilfs: revoked {} (pid {}) in {} ms",
            m.mountpoint.display(),
            m.pid,
            t0.elapsed().as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let mounts = crate::registry::list().context("status")?;
    for m in &mounts {
        if a.json {
            println!("{}", serde_json::to_string(m)?);
        } else {
            println!(
                "{}\tpid {}\t{}\tprofile {}\tscope {}",
                m.mountpoint.display(),
                m.pid,
                m.mode,
                m.profile,
                m.scope.display()
            );
        }
    }
    if mounts.is_empty() && !a.json {
        eprintln!("veilfs: no live mounts");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_unmount(a: UnmountArgs) -> anyhow::Result<ExitCode> {
    unmount(&a.mountpoint)?;
    Ok(ExitCode::SUCCESS)
}
