//! `veilfs mount` and `veilfs unmount`.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::admin;
use crate::mount::{MountRequest, mount_and_serve, unmount};
use crate::profile::{Profile, WriteMode};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct MountArgs {
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
    /// `veilfs run --sandbox` only: serve the egress proxy on this Unix socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub egress_socket: Option<PathBuf>,
}

/// What the agent is shown and where its changes are kept (`mount` and `run`).
#[derive(clap::Args, Debug)]
pub(crate) struct ViewArgs {
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
pub(crate) struct UnmountArgs {
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RevokeArgs {
    /// End every live mount of yours.
    #[arg(long, conflicts_with = "mountpoint")]
    pub all: bool,
    #[arg(required_unless_present = "all")]
    pub mountpoint: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
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

pub(super) fn run(a: MountArgs) -> anyhow::Result<ExitCode> {
    let profile = match &a.view.profile {
        Some(p) => Profile::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Profile::builtin_default(),
    };
    let expires = crate::mount::grant_lifetime(a.expires, profile.guardrails.max_expires)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("mount")?;
    mount_and_serve(MountRequest {
        scope: a.scope,
        mountpoint: a.mountpoint,
        profile,
        mode: a.view.mode,
        store: a.view.store,
        allow_other: a.allow_other,
        expires,
        audit_log: a.audit_log,
        audit_key: a.audit_key,
        manifest: a.view.manifest,
        egress_socket: a.egress_socket,
    })
    .context("mount")?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_resume(a: UnmountArgs) -> anyhow::Result<ExitCode> {
    crate::registry::find(&a.mountpoint)
        .with_context(|| format!("resume {}", a.mountpoint.display()))?;
    let r = admin::request(&a.mountpoint, &admin::Request::Resume)
        .with_context(|| format!("resume {}", a.mountpoint.display()))?;
    eprintln!(
        "veilfs: {}: {}",
        a.mountpoint.display(),
        r.message.as_deref().unwrap_or("resumed")
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_revoke(a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let targets = match &a.mountpoint {
        Some(mp) => vec![
            crate::registry::find(mp)
                .with_context(|| format!("revoke {}", mp.display()))?
                .mountpoint,
        ],
        None => crate::registry::list()
            .context("revoke --all")?
            .into_iter()
            .map(|m| m.mountpoint)
            .collect(),
    };
    for mp in targets {
        let t0 = std::time::Instant::now();
        let r = admin::request(&mp, &admin::Request::Revoke)
            .with_context(|| format!("revoke {}", mp.display()))?;
        let pid = r.pid.unwrap_or(0);
        crate::registry::wait_gone(pid).with_context(|| format!("revoke {}", mp.display()))?;
        eprintln!(
            "veilfs: revoked {} (pid {pid}) in {} ms",
            mp.display(),
            t0.elapsed().as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let mounts = crate::registry::list().context("status")?;
    for m in &mounts {
        // What the registry knows, filled in by the mount itself when it answers.
        let st = match admin::request(&m.mountpoint, &admin::Request::Status) {
            Ok(r) => r.status.unwrap_or_default(),
            Err(e) => {
                eprintln!("veilfs: {}: {e:#}", m.mountpoint.display());
                admin::MountStatus {
                    mountpoint: m.mountpoint.clone(),
                    pid: m.pid,
                    scope: m.scope.clone(),
                    mode: m.mode.clone(),
                    profile: m.profile.clone(),
                    breaker: "unknown".into(),
                    ..Default::default()
                }
            }
        };
        if a.json {
            println!("{}", serde_json::to_string(&st)?);
        } else {
            println!(
                "{}\tpid {}\t{}\tprofile {}\tscope {}",
                st.mountpoint.display(),
                st.pid,
                st.mode,
                st.profile,
                st.scope.display()
            );
            println!(
                "  session {}  reads {}  writes {}  denials {}  breaker {}  expires {}",
                st.session.as_deref().unwrap_or("-"),
                st.counters.reads,
                st.counters.writes,
                st.counters.denials,
                st.breaker,
                st.expires_in_secs
                    .map_or("never".to_string(), |s| format!("in {s} s"))
            );
            for p in &st.pending {
                println!("  {}", describe_pending(p));
            }
            for g in &st.grants {
                println!("  approved: {g}");
            }
        }
    }
    if mounts.is_empty() && !a.json {
        eprintln!("veilfs: no live mounts");
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_pending(p: &crate::approval::PendingInfo) -> String {
    format!(
        "held #{}  {} {}{}  pid {} ({})  waiting {} s, refused in {} s",
        p.id,
        p.op,
        p.path.display(),
        p.to.as_ref()
            .map(|t| format!(" -> {}", t.display()))
            .unwrap_or_default(),
        p.pid,
        p.exe,
        p.age_secs,
        p.expires_in_secs
    )
}

#[derive(clap::Args, Debug)]
pub(crate) struct PendingArgs {
    /// One JSON object per held request.
    #[arg(long)]
    pub json: bool,
    /// The mount (default: every live mount of yours).
    pub mountpoint: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ApproveArgs {
    /// The request's id, as `veilfs pending` shows it.
    pub id: u64,
    /// The mount (needed when you have more than one).
    pub mountpoint: Option<PathBuf>,
    /// Also approve the same kind of operation on this path (and below) from now on.
    #[arg(long)]
    pub path: bool,
    /// Also approve this kind of operation (on any path, or with --path on this one) for this
    /// long (e.g. 10m).
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub for_: Option<std::time::Duration>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct DenyArgs {
    pub id: u64,
    /// The mount (needed when you have more than one).
    pub mountpoint: Option<PathBuf>,
}

/// The mount a command names, or the only live one.
fn one_mount(mp: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(mp) = mp {
        return Ok(mp);
    }
    let mut all = crate::registry::list()?;
    match all.len() {
        1 => Ok(all.remove(0).mountpoint),
        0 => anyhow::bail!("no live mounts"),
        n => anyhow::bail!("{n} live mounts: give MOUNTPOINT"),
    }
}

pub(super) fn run_pending(a: PendingArgs) -> anyhow::Result<ExitCode> {
    let mps = match a.mountpoint {
        Some(mp) => vec![mp],
        None => crate::registry::list()
            .context("pending")?
            .into_iter()
            .map(|m| m.mountpoint)
            .collect(),
    };
    let mut any = false;
    for mp in mps {
        let r = admin::request(&mp, &admin::Request::Pending)
            .with_context(|| format!("pending {}", mp.display()))?;
        for p in &r.pending {
            any = true;
            if a.json {
                let mut v = serde_json::to_value(p)?;
                v["mountpoint"] = serde_json::json!(mp);
                println!("{v}");
            } else {
                println!("{}\t{}", mp.display(), describe_pending(p));
            }
        }
    }
    if !any && !a.json {
        eprintln!("veilfs: nothing waits for an answer");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_approve(a: ApproveArgs) -> anyhow::Result<ExitCode> {
    let mp = one_mount(a.mountpoint).context("approve")?;
    let scope = crate::approval::Scope {
        path: a.path,
        for_secs: a.for_.map(|d| d.as_secs().max(1)),
    };
    let r = admin::request(&mp, &admin::Request::Approve { id: a.id, scope })
        .with_context(|| format!("approve {}", a.id))?;
    if let Some(p) = r.answered {
        eprintln!("veilfs: approved #{}: {} {}", p.id, p.op, p.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_deny(a: DenyArgs) -> anyhow::Result<ExitCode> {
    let mp = one_mount(a.mountpoint).context("deny")?;
    let r = admin::request(&mp, &admin::Request::Deny { id: a.id })
        .with_context(|| format!("deny {}", a.id))?;
    if let Some(p) = r.answered {
        eprintln!("veilfs: denied #{}: {} {}", p.id, p.op, p.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_unmount(a: UnmountArgs) -> anyhow::Result<ExitCode> {
    unmount(&a.mountpoint)?;
    Ok(ExitCode::SUCCESS)
}
