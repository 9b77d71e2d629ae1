//! The `veilfs` command tree. Each command lives in its own file and only turns arguments into
//! library calls; exit codes: 0 ok, 1 operation failed, 2 bad input (clap uses 2 as well).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod audit;
mod checkpoint;
mod consent;
mod forensic;
mod mount;
mod profile;
mod rules;
mod run;
mod scan;
mod trace;
mod why;

#[derive(Parser, Debug)]
#[command(
    name = "veilfs",
    version,
    about = "A filtering, redacting, snapshotting FUSE gateway for AI agents"
)]
pub(crate) struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Log as JSON lines (for SIEMs).
    #[arg(long, global = true)]
    pub(crate) log_json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Mount SCOPE at MOUNTPOINT through a profile (foreground; Ctrl-C unmounts).
    Mount(mount::MountArgs),
    /// Unmount a veilfs mount point.
    Unmount(mount::UnmountArgs),
    /// Reset a mount's tripped damage breaker, so it accepts changes (and reads) again.
    Resume(mount::UnmountArgs),
    /// End a live mount (or all of yours) at once, even with an agent blocked inside it.
    Revoke(mount::RevokeArgs),
    /// List your live mounts: scope, mode, profile, session, counters, breaker, expiry and
    /// held approvals.
    Status(mount::StatusArgs),
    /// Requests held for your answer (`[approval]` in the profile).
    Pending(mount::PendingArgs),
    /// Let a held request go through (optionally standing for its path or for a while).
    Approve(mount::ApproveArgs),
    /// Refuse a held request (the agent gets EACCES).
    Deny(mount::DenyArgs),
    /// Mount SCOPE privately, run COMMAND in it, unmount, and summarise the session.
    Run(run::RunArgs),
    /// What an agent's manifest asks for, and what the profile grants and refuses.
    Consent(consent::ConsentArgs),
    /// Profile tools.
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// Dry run: which paths a profile hides and why, and which contents it redacts.
    Scan(scan::ScanArgs),
    /// Print the masked view of one file.
    Redact(scan::RedactArgs),
    /// Redaction rule tools.
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// Mark the end of an agent's turn in a live snapshot session (`rollback --to` undoes
    /// what follows it).
    Checkpoint(checkpoint::CheckpointArgs),
    /// Why something was denied: a live mount's last denials and their reasons.
    Why(why::WhyArgs),
    /// Read back the watermark of a document view (which mount, session and time served it).
    Trace(trace::TraceArgs),
    /// Sessions and every change they made.
    Log(forensic::LogArgs),
    /// What a session changed, as a diff.
    Diff(forensic::DiffArgs),
    /// Undo a session's changes.
    Rollback(forensic::RollbackArgs),
    /// Re-hash every object and check every journal chain and the audit trail.
    Verify(forensic::VerifyArgs),
    /// Audit events that match (who read, changed or was refused what).
    Audit(audit::AuditArgs),
    /// Apply an overlay session to the real folder.
    Commit(forensic::CommitArgs),
    /// Throw away an overlay session's changes.
    Discard(forensic::DiscardArgs),
}

/// Parses the command line and runs the command: what the `veilfs` binary does.
pub fn main() -> ExitCode {
    // Overlay mode's helper for a normal user (see `overlay::userns`): not a user command.
    let args: Vec<_> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == crate::overlay::userns::HELPER_ARG)
    {
        return crate::overlay::userns::helper_main(&args[2..]);
    }
    // `run --sandbox`'s egress relay and its bridge, inside the sandbox (see `egress::relay`).
    match args.get(1).and_then(|a| a.to_str()) {
        Some(crate::egress::relay::HELPER_ARG) => {
            return crate::egress::relay::helper_main(&args[2..]);
        }
        Some(crate::egress::relay::SERVE_ARG) => {
            return crate::egress::relay::serve_main(&args[2..]);
        }
        _ => {}
    }
    run(Cli::parse())
}

/// Runs a parsed command; the exit code is 0 ok, 1 failed, 2 bad input.
pub(crate) fn run(cli: Cli) -> ExitCode {
    init_tracing(cli.verbose, cli.log_json);
    let result = match cli.command {
        Command::Mount(a) => mount::run(a),
        Command::Unmount(a) => mount::run_unmount(a),
        Command::Resume(a) => mount::run_resume(a),
        Command::Revoke(a) => mount::run_revoke(a),
        Command::Status(a) => mount::run_status(a),
        Command::Pending(a) => mount::run_pending(a),
        Command::Approve(a) => mount::run_approve(a),
        Command::Deny(a) => mount::run_deny(a),
        Command::Run(a) => run::run(a),
        Command::Consent(a) => consent::run(a),
        Command::Profile(c) => profile::run(c),
        Command::Scan(a) => scan::run(a),
        Command::Redact(a) => scan::run_redact(a),
        Command::Rules(c) => rules::run(c),
        Command::Checkpoint(a) => checkpoint::run(a),
        Command::Why(a) => why::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Log(a) => forensic::run_log(a),
        Command::Diff(a) => forensic::run_diff(a),
        Command::Rollback(a) => forensic::run_rollback(a),
        Command::Verify(a) => forensic::run_verify(a),
        Command::Audit(a) => audit::run(a),
        Command::Commit(a) => forensic::run_commit(a),
        Command::Discard(a) => forensic::run_discard(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("veilfs: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(verbose: u8, json: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // `veilfs why` asks a live mount for its last denials: the layer keeps them.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let denials = crate::denials::DenialLayer;
    if json {
        builder.json().finish().with(denials).init();
    } else {
        builder.finish().with(denials).init();
    }
}
