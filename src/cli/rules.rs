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
            let src = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().trim_start_matches('.').to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "imported".into());
            let c = veilfs::redact::gitleaks::convert(&src, &name)
                .map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
            print!("{}", c.toml);
            for (id, why) in &c.not_converted {
                eprintln!("not converted: {id}: {why}");
            }
            for n in &c.notes {
                eprintln!("note: {n}");
            }
            eprintln!(
                "converted {} rule(s), {} not converted",
                c.converted,
                c.not_converted.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
