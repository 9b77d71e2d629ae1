#![deny(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Overlay mode's helper for a normal user (see `overlay::userns`): not a user command.
    let args: Vec<_> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == veilfs::overlay::userns::HELPER_ARG)
    {
        return veilfs::overlay::userns::helper_main(&args[2..]);
    }
    let cli = veilfs_cli::Cli::parse();
    veilfs_cli::run(cli)
}

#[path = "cli/mod.rs"]
mod veilfs_cli;
