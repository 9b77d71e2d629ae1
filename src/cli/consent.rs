//! `veilfs consent`: the plain-language consent screen for an agent's manifest.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::manifest::{ConsentContext, Manifest, consent_screen};
use crate::policy::Policy;
use crate::profile::{Profile, WriteMode};

#[derive(clap::Args, Debug)]
pub(crate) struct ConsentArgs {
    /// Profile the manifest is checked against (default: the built-in default profile).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Write mode, as `mount --mode` would override it.
    #[arg(long)]
    pub mode: Option<WriteMode>,
    /// The agent's manifest (JSON or TOML).
    pub manifest: PathBuf,
}

pub(super) fn run(a: ConsentArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::load(&a.manifest).map_err(|e| anyhow::anyhow!("{e}"))?;
    let profile = match &a.profile {
        Some(p) => Profile::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Profile::builtin_default(),
    };
    let mut policy = Policy::new(&profile).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(m) = a.mode {
        policy = policy.with_mode(m);
    }
    let name = match &a.profile {
        Some(p) => format!("{} ({})", profile.name, p.display()),
        None => format!("{} (built in)", profile.name),
    };
    print!(
        "{}",
        consent_screen(
            &manifest,
            &policy,
            &ConsentContext {
                profile: &name,
                network_allow: &profile.network.allow,
            }
        )
    );
    Ok(ExitCode::SUCCESS)
}
