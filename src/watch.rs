//! The folder watcher: changes made outside the mount (by the user, an editor, a build) are
//! pushed into the kernel's caches as they happen, so read-only mounts can use long cache TTLs
//! without serving stale names, sizes, listings or bytes.
//!
//! Only for read-only mounts: in write modes the TTL is zero anyway and the mount's own changes
//! would echo back. When the folder cannot be watched (too many directories for inotify, say)
//! the caller keeps the short TTL.

use std::path::{Path, PathBuf};

use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tracing::{debug, warn};

use crate::fs::CacheInvalidator;

/// Keeps the watch alive; dropping it stops watching.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `scope` (canonical) recursively; events invalidate through `inv`.
pub fn start(scope: &Path, inv: CacheInvalidator) -> anyhow::Result<FolderWatch> {
    let root: PathBuf = scope.to_path_buf();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // Opens and reads (the mount's own among them) change nothing cached.
            Ok(ev)
                if matches!(
                    ev.kind,
                    EventKind::Access(_)
                        | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
                ) => {}
            Ok(ev) => {
                for p in ev.paths {
                    if let Ok(rel) = p.strip_prefix(&root) {
                        debug!(path = %rel.display(), "changed outside the mount");
                        inv.changed(rel);
                    }
                }
            }
            Err(e) => warn!("folder watcher: {e}"),
        })?;
    watcher.watch(scope, RecursiveMode::Recursive)?;
    Ok(FolderWatch { _watcher: watcher })
}
