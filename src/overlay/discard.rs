//! Throwing the agent's changes away from the upper layer.

use super::*;

/// Throws away the agent's changes under `filters` (everything when empty) by removing them
/// from the upper layer. A path inside a replaced (opaque or renamed) directory disappears from
/// the merged view rather than showing the real one again. Returns the removed upper paths.
pub(crate) fn discard(store_dir: &Path, filters: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let _lock = exclusive(store_dir, "discard")?;
    let layout = Layout::in_store(store_dir);
    let upper = layout.upper.clone();
    let mut removed = Vec::new();
    fn rm(p: &Path) -> std::io::Result<()> {
        if std::fs::symlink_metadata(p)?.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        }
    }
    if filters.is_empty() || filters.iter().any(|f| f.as_os_str().is_empty()) {
        let Ok(rd) = std::fs::read_dir(&upper) else {
            return Ok(removed);
        };
        for e in rd {
            let e = e?;
            rm(&e.path()).io("remove", &e.path())?;
            removed.push(PathBuf::from(e.file_name()));
        }
        // The hard-link index holds edits visible through lower names: gone with the rest.
        if let Ok(rd) = std::fs::read_dir(&layout.index) {
            for e in rd.flatten() {
                rm(&e.path()).io("remove", &e.path())?;
            }
        }
        return Ok(removed);
    }
    let links_before: HashMap<PathBuf, u64> = std::fs::read_dir(&layout.index)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.path(), e.metadata().ok()?.nlink())))
                .collect()
        })
        .unwrap_or_default();
    for f in filters {
        let a = upper.join(f);
        if std::fs::symlink_metadata(&a).is_ok() {
            rm(&a).io("remove", &a)?;
            removed.push(f.clone());
        }
    }
    // A discarded name of a hard-linked copy-up discards the edit for every name.
    for (abs, before) in links_before {
        if before > 1 {
            remove_orphan_index(&abs)?;
        }
    }
    Ok(removed)
}
