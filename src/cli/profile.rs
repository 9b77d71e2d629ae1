//! `veilfs profile check`.
use std::process::ExitCode;

use crate::policy::Policy;
use crate::profile::Profile;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum ProfileCmd {
    /// Validate a profile (and its rule sets) and print the effective profile.
    ///
    /// Prints the profile with every default filled in on stdout and exits 0; prints
    /// `FILE:LINE:COLUMN: FIELD: message` on stderr and exits 2 when the profile is invalid.
    /// Warnings (legal but suspicious settings) go to stderr and do not change the exit code.
    Check { path: std::path::PathBuf },
}

pub(super) fn run(cmd: ProfileCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfileCmd::Check { path } => Ok(check(&path)),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let profile = match Profile::load(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = Policy::new(&profile) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    // Profile and rules are validated together: a rule set that does not load fails the check.
    if let Err(e) = profile.redaction_engine() {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    for w in &profile.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", profile.to_toml());
    ExitCode::SUCCESS
}
