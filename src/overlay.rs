//! Copy-on-write overlay: the agent's writes land in an upper layer kept in the store; the real
//! folder stays byte-for-byte untouched until `veilfs commit`.
//!
//! The merged view is the kernel's overlayfs (lower = the scope, upper/work = inside the store),
//! mounted privately under the store; veilfs serves its filtered, redacted view on top of that
//! merged tree. The kernel gives us copy-up (reflink where the filesystem supports it), whiteouts,
//! opaque directories, renames, hard links, xattrs and a stable merged readdir, all of which are
//! easy to get subtly wrong by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Layout of one overlay inside a store directory.
pub struct Layout {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl Layout {
    pub fn in_store(store: &Path) -> Layout {
        let base = store.join("overlay");
        Layout {
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
        }
    }
}

/// A mounted overlay; unmounted on drop.
pub struct OverlayMount {
    layout: Layout,
}

impl OverlayMount {
    /// Mounts (or, after a crash, re-mounts) the overlay of `scope` kept in `store`.
    pub fn mount(store: &Path, scope: &Path) -> anyhow::Result<OverlayMount> {
        let layout = Layout::in_store(store);
        for d in [&layout.upper, &layout.work, &layout.merged] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        // A previous mount process killed with SIGKILL leaves its overlay mounted.
        if crate::mount::is_mount_point(&layout.merged) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&layout.merged)
                .status();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=off,xino=off,redirect_dir=on",
            escape(scope),
            escape(&layout.upper),
            escape(&layout.work)
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&layout.merged)
            .output()
            .context("run mount -t overlay")?;
        if !out.status.success() {
            bail!(
                "cannot mount the overlay at {}: {}",
                layout.merged.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(OverlayMount { layout })
    }

    pub fn merged(&self) -> &Path {
        &self.layout.merged
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.layout.merged).status();
    }
}

/// overlayfs option values separate with `,` and `:`; escape them.
fn escape(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// Records which folder the upper layer in `store` belongs to.
pub fn record_scope(store: &Path, scope: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let f = store.join("overlay").join("scope");
    std::fs::write(&f, scope.as_os_str().as_bytes()).with_context(|| format!("{}", f.display()))
}
