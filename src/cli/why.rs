//! `veilfs why`: the last denials of a live mount, with their reasons, in plain words.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::control::{Request, locate, request};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct WhyArgs {
    /// The mount (default: the one `veilfs run` runs this command in, from VEILFS_MOUNT).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// How many denials to show, newest last.
    #[arg(long, default_value_t = 10)]
    pub last: usize,
    /// Only denials about this path (inside the mount, or relative to the mount's root).
    pub path: Option<PathBuf>,
}

pub(super) fn run(a: WhyArgs) -> anyhow::Result<ExitCode> {
    let mount = match &a.mount {
        Some(m) => Some(m.clone()),
        None => std::env::var_os(crate::run::ENV_MOUNT).map(PathBuf::from),
    };
    let sock = locate(mount.as_deref())?;
    let rel = match (&a.path, &mount) {
        (Some(p), Some(m)) => Some(relative_to_mount(p, m)?),
        (Some(p), None) => Some(p.display().to_string()),
        (None, _) => None,
    };
    let r = request(
        &sock,
        &Request::Why {
            path: rel.clone(),
            limit: Some(a.last),
        },
    )?;
    let about = rel
        .filter(|p| !p.is_empty())
        .map(|p| format!(" about {p}"))
        .unwrap_or_default();
    if r.denials.is_empty() {
        println!("nothing was denied{about} in this session");
    } else {
        println!(
            "the last {} denial(s){about}, newest last (paths relative to the mount):",
            r.denials.len()
        );
        for d in &r.denials {
            println!("{d}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `p` (absolute, or relative to the working directory) as a path below the mount's root.
fn relative_to_mount(p: &Path, mount: &Path) -> anyhow::Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mount = mount.canonicalize().unwrap_or_else(|_| mount.to_path_buf());
    // Lexically: the path may name something the agent cannot see.
    let mut norm = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                norm.pop();
            }
            std::path::Component::CurDir => {}
            c => norm.push(c),
        }
    }
    let rel = norm
        .strip_prefix(&mount)
        .or_else(|_| if p.is_relative() { Ok(p) } else { Err(()) })
        .map_err(|_| {
            anyhow::anyhow!(
                "{} is not inside the mount {}",
                p.display(),
                mount.display()
            )
        })
        .context("veilfs why PATH")?;
    Ok(rel.display().to_string())
}
