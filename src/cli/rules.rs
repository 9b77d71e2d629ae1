//! `veilfs rules ...`: convert other scanners' rule files to veilfs rule sets.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::redact::gitleaks::Conversion;

/// A converter: rule-file text and rule-set name to a veilfs rule set.
type Convert = fn(&str, &str) -> Result<Conversion, String>;

#[derive(clap::Subcommand, Debug)]
#[allow(clippy::enum_variant_names)] // the variants are the subcommands' names
pub(crate) enum RulesCmd {
    /// Convert a gitleaks config to a veilfs rule set on stdout; lists what it cannot convert.
    ImportGitleaks { path: PathBuf },
    /// Convert a Kingfisher rules file (YAML) to a veilfs rule set on stdout.
    ImportKingfisher { path: PathBuf },
    /// Convert a Nosey Parker rules file (YAML) to a veilfs rule set on stdout.
    ImportNoseyparker { path: PathBuf },
}

pub(super) fn run(cmd: RulesCmd) -> anyhow::Result<ExitCode> {
    let (path, convert): (PathBuf, Convert) = match cmd {
        RulesCmd::ImportGitleaks { path } => (path, crate::redact::gitleaks::convert),
        RulesCmd::ImportKingfisher { path } => (path, crate::redact::kingfisher::convert),
        RulesCmd::ImportNoseyparker { path } => (path, crate::redact::noseyparker::convert),
    };
    import(&path, convert)
}

/// Reads `path`, converts it, prints the TOML on stdout and, on stderr, every rule not
/// converted and every note, each with its rule id and the file it came from.
fn import(path: &Path, convert: Convert) -> anyhow::Result<ExitCode> {
    let src =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().trim_start_matches('.').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "imported".into());
    let c = convert(&src, &name).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
    print!("{}", c.toml);
    for (id, why) in &c.not_converted {
        eprintln!("not converted: {}: {id}: {why}", path.display());
    }
    for n in &c.notes {
        eprintln!("note: {}: {n}", path.display());
    }
    eprintln!(
        "converted {} rule(s), {} not converted",
        c.converted,
        c.not_converted.len()
    );
    Ok(ExitCode::SUCCESS)
}
