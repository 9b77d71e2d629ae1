//! `veilfs trace FILE`: reads back the watermark a document view carries (`[watermark]
//! documents = true`): the mount point, session and mount time it was served under, so a leaked
//! copy names the session it came from (`veilfs audit --store ...` then tells what that session
//! did).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct TraceArgs {
    /// A document served by veilfs, or a copy of one.
    pub file: PathBuf,
}

pub(super) fn run(a: TraceArgs) -> anyhow::Result<ExitCode> {
    let data = std::fs::read(&a.file).with_context(|| format!("read {}", a.file.display()))?;
    Ok(match crate::redact::document::read_mark(&data) {
        Some(mark) => {
            println!("{mark}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "veilfs trace: {} carries no veilfs watermark",
                a.file.display()
            );
            ExitCode::from(1)
        }
    })
}
