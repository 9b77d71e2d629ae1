//! Virtual directory entries: names the view shows with no real file behind them.
//!
//! Two features place them: decoys (`[decoys]`, canary credential files, see [`crate::decoy`],
//! with the directories above them when the real folder has none) and text views
//! (`[present] text`, a sibling `NAME.txt` holding the extracted, masked text of a file the
//! agent may not open). This module decides *which* virtual names a directory holds: a pure
//! function of the profile, the directory's path and what the real directory shows. The FUSE
//! side (`fs::virtual_fs`) gives them inode numbers, serves them and refuses every change.
//!
//! Rules, chosen so that the mechanism can never change the real folder or hide a real file:
//! - **A visible real entry wins.** A virtual name is placed only where the view shows no real
//!   entry of that name (it is absent, or hidden by the profile). A real `.env.production`
//!   the agent may see is shown as it is, never shadowed by a decoy; one the profile hides is
//!   replaced by the decoy, which is what a tripwire is for. A real `x.pdf.txt` next to
//!   `x.pdf` is shown, and the text view of `x.pdf` is then not placed.
//! - **Decided per request**, from the directory's *current* path: a renamed parent carries no
//!   virtual entry along unless the profile places one at the new path too.
//! - **Read-only.** Every change of a virtual entry, or of a real entry into a virtual name
//!   (create, link, rename onto), is refused by the FUSE side.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// What a virtual entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VirtualKind {
    /// A directory above a decoy (`.aws/` when the real folder has none).
    Dir,
    /// A decoy file; its path relative to the scope (what its contents are derived from).
    Decoy(PathBuf),
    /// The text view of the real sibling file named here.
    Text(OsString),
}

/// The suffix of a text view's name.
pub(crate) const TEXT_SUFFIX: &str = ".txt";

/// Where the profile places decoys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    decoys: Vec<PathBuf>,
}

impl Placement {
    /// The placement of `[decoys]`: nothing when it is off; its `paths` (validated by the
    /// profile loader: relative, plain components), or the default ones when it lists none.
    pub(crate) fn new(cfg: &crate::profile::DecoysCfg) -> Placement {
        if !cfg.enabled {
            return Placement::default();
        }
        let decoys = if cfg.paths.is_empty() {
            crate::decoy::DEFAULT_PATHS
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            cfg.paths.iter().map(PathBuf::from).collect()
        };
        Placement { decoys }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.decoys.is_empty()
    }

    /// Every decoy path, relative to the scope.
    pub(crate) fn decoys(&self) -> &[PathBuf] {
        &self.decoys
    }

    /// The virtual names decoys put in directory `dir` (relative to the scope, "" for the
    /// root), in profile order, each once. A path that is a decoy file for one entry and a
    /// directory for another is a directory (the profile loader refuses that anyway).
    pub(crate) fn children(&self, dir: &Path) -> Vec<(OsString, VirtualKind)> {
        let mut out: Vec<(OsString, VirtualKind)> = Vec::new();
        for d in &self.decoys {
            let Ok(rest) = d.strip_prefix(dir) else {
                continue;
            };
            let mut comps = rest.components();
            let Some(first) = comps.next() else {
                continue;
            };
            let name = first.as_os_str().to_os_string();
            let kind = if comps.next().is_some() {
                VirtualKind::Dir
            } else {
                VirtualKind::Decoy(d.clone())
            };
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) if kind == VirtualKind::Dir => slot.1 = kind,
                Some(_) => {}
                None => out.push((name, kind)),
            }
        }
        out
    }

    /// The decoy-placed entry `name` of directory `dir`, if any.
    pub(crate) fn child(&self, dir: &Path, name: &OsStr) -> Option<VirtualKind> {
        self.children(dir)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
    }
}

/// The real file whose text view `name` would be (`report.pdf.txt` → `report.pdf`). Only
/// UTF-8 names have text views.
pub(crate) fn text_source(name: &OsStr) -> Option<&OsStr> {
    let stem = name.to_str()?.strip_suffix(TEXT_SUFFIX)?;
    (!stem.is_empty()).then(|| OsStr::new(stem))
}

/// The name of the text view of the file `source`.
pub(crate) fn text_name(source: &OsStr) -> OsString {
    let mut n = source.to_os_string();
    n.push(TEXT_SUFFIX);
    n
}

/// The virtual entries a directory shows: `candidates` (decoy entries and text views), less
/// those whose name the view already shows as a real entry (`real_shown`). Pure.
pub(crate) fn resolve(
    candidates: Vec<(OsString, VirtualKind)>,
    real_shown: impl Fn(&OsStr) -> bool,
) -> Vec<(OsString, VirtualKind)> {
    let mut out: Vec<(OsString, VirtualKind)> = Vec::with_capacity(candidates.len());
    for (name, kind) in candidates {
        if real_shown(&name) || out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        out.push((name, kind));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DecoysCfg;

    fn placement(paths: &[&str]) -> Placement {
        Placement::new(&DecoysCfg {
            enabled: true,
            paths: paths.iter().map(|s| s.to_string()).collect(),
            trip_breaker: false,
        })
    }

    #[test]
    fn decoys_place_their_files_and_the_directories_above_them() {
        let p = placement(&[".aws/credentials", ".env.production", "deploy/keys/id_rsa"]);
        assert_eq!(
            p.children(Path::new("")),
            vec![
                (".aws".into(), VirtualKind::Dir),
                (
                    ".env.production".into(),
                    VirtualKind::Decoy(".env.production".into())
                ),
                ("deploy".into(), VirtualKind::Dir),
            ]
        );
        assert_eq!(
            p.child(Path::new(".aws"), OsStr::new("credentials")),
            Some(VirtualKind::Decoy(".aws/credentials".into()))
        );
        assert_eq!(
            p.child(Path::new("deploy"), OsStr::new("keys")),
            Some(VirtualKind::Dir)
        );
        assert_eq!(p.child(Path::new("deploy"), OsStr::new("x")), None);
        // Below a decoy file, or in an unrelated directory: nothing.
        assert!(p.children(Path::new(".env.production")).is_empty());
        assert!(p.children(Path::new("src")).is_empty());
        // A renamed parent carries nothing along: `.aws` moved to `old` holds no decoy.
        assert!(p.children(Path::new("old")).is_empty());
    }

    #[test]
    fn off_places_nothing_and_on_without_paths_places_the_defaults() {
        assert!(Placement::new(&DecoysCfg::default()).is_empty());
        let p = placement(&[]);
        assert_eq!(p.decoys().len(), crate::decoy::DEFAULT_PATHS.len());
    }

    #[test]
    fn a_visible_real_entry_wins_over_a_virtual_one() {
        let p = placement(&[".aws/credentials", ".env.production"]);
        let shown = resolve(p.children(Path::new("")), |n| n == ".env.production");
        assert_eq!(shown, vec![(".aws".into(), VirtualKind::Dir)]);
        // A real `.aws` directory: the decoy goes inside it (the FUSE side lists the real
        // directory and asks for its children there).
        let inside = resolve(p.children(Path::new(".aws")), |_| false);
        assert_eq!(inside.len(), 1);
    }

    #[test]
    fn text_view_names() {
        assert_eq!(
            text_source(OsStr::new("report.pdf.txt")),
            Some(OsStr::new("report.pdf"))
        );
        assert_eq!(text_source(OsStr::new(".txt")), None);
        assert_eq!(text_source(OsStr::new("notes.md")), None);
        assert_eq!(
            text_name(OsStr::new("a.docx")),
            OsString::from("a.docx.txt")
        );
    }
}
