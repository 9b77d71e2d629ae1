//! `veilfs profile check`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ProfileCmd {
    /// Validate a profile (and its rule sets) and print the effective profile.
    Check { path: std::path::PathBuf },
}

pub fn run(cmd: ProfileCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfileCmd::Check { path } => {
            anyhow::bail!("profile check {}: not yet implemented", path.display())
        }
    }
}
