//! `veilfs run`: mount, run the agent's command in the view, unmount, summarise.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::run::{RunRequest, run as run_session};

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub view: super::mount::ViewArgs,
    /// Run the command in bubblewrap: no network, the system read-only, the scope and the
    /// store hidden, only the mount writable.
    #[arg(long)]
    pub sandbox: bool,
    /// The real folder to expose.
    pub scope: PathBuf,
    /// The command to run in the view, after `--`.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

pub(super) fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let code = run_session(RunRequest {
        profile: a.view.profile,
        mode: a.view.mode,
        store: a.view.store,
        sandbox: a.sandbox,
        manifest: a.view.manifest,
        scope: a.scope,
        command: a.command,
    })?;
    Ok(ExitCode::from(code))
}
