#![deny(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = veilfs_cli::Cli::parse();
    veilfs_cli::run(cli)
}

#[path = "cli/mod.rs"]
mod veilfs_cli;
