//! `veilfs rules ...`.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum RulesCmd {
    /// Convert a gitleaks config to a veilfs rule set on stdout; lists what it cannot convert.
    ImportGitleaks { path: std::path::PathBuf },
}

pub fn run(cmd: RulesCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCmd::ImportGitleaks { path } => {
            anyhow::bail!("import-gitleaks {}: not yet implemented", path.display())
        }
    }
}
