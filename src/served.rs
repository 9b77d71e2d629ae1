//! Which masked views the agent was served: the record an edit of a redacted file is merged
//! against (see [`crate::merge`]).
//!
//! Why a record: in overlay mode the agent's edit of `db.yaml` sits in the upper layer until
//! `veilfs commit`, possibly days and a profile change later. To apply it as a diff against the
//! view the agent saw, commit must know that view: the real bytes it was made from and the
//! ranges that were masked. Recomputing it with the engine at commit time would need the same
//! rules, and would silently use a different view if the real file had changed since.
//!
//! Layout: `STORE/served/<P>/<H>.json`, where `P` names the path (the first 32 hex digits of
//! the blake3 of its bytes, relative to the scope) and `H` is the blake3 of the real bytes the
//! view was made from. The record holds those bytes' size, the encoding and the masked spans
//! (offset ranges and rule ids), never any content. Keyed by content, a record stays right
//! whatever happens to the file: a real file whose hash has no record for that path was never
//! served masked in that version, and a path with records but none for the current bytes
//! changed after the agent saw it (a conflict). Records are written, atomically, the first time
//! a masked view of a version is served in a write-capable mount, before the bytes reach the
//! agent; the same (path, version) served under another rule set adds its spans (the union:
//! more masked ranges can only turn a clean merge into a conflict).
//!
//! Records are small (a few dozen bytes per masked span) and are not removed after a commit:
//! they describe what the agent saw, which is audit material too.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::redact::{Encoding, FileId, Redactions};

/// One served view, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub version: u32,
    /// Size of the real bytes the view was made from (a cheap consistency check).
    pub size: u64,
    pub encoding: String,
    /// Masked `(start, end, rule id)` ranges, sorted.
    pub spans: Vec<(u64, u64, String)>,
    /// The mask codes the view carried, `(rule id, code)` (`[watermark] mask_codes`): part of
    /// the view, so the view a commit merges against is the one the agent saw. The latest
    /// session's codes win when several served the same version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<(String, String)>,
}

impl Record {
    /// The redactions of `real` (the bytes this record describes) that reproduce the view.
    pub(crate) fn redactions(&self, real: &[u8]) -> Redactions {
        let enc = match self.encoding.as_str() {
            "utf-16le" => Encoding::Utf16Le,
            "utf-16be" => Encoding::Utf16Be,
            _ => Encoding::Utf8,
        };
        Redactions::build(
            real,
            enc,
            self.spans
                .iter()
                .filter(|s| s.0 < s.1 && s.1 <= real.len() as u64)
                .map(|(a, b, r)| (*a, *b, Arc::from(r.as_str())))
                .collect(),
        )
        .with_code_list(
            self.codes
                .iter()
                .map(|(r, c)| (Arc::from(r.as_str()), Arc::from(c.as_str())))
                .collect(),
        )
    }
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Utf8 => "utf-8",
        Encoding::Utf16Le => "utf-16le",
        Encoding::Utf16Be => "utf-16be",
    }
}

/// What is known about the view the agent saw of one version of a path.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// No masked view of this path was ever recorded: the agent never saw masks there.
    NeverServed,
    /// The agent saw these bytes masked by this record.
    Served(Record),
    /// Masked views of this path were served, but none of these bytes: the real file changed
    /// after the agent saw it.
    OtherVersion,
}

/// The `served/` directory of a store.
pub(crate) struct ServedViews {
    dir: PathBuf,
    /// (path, file version) already recorded by this process, so serving a view again costs
    /// no read of the whole file.
    seen: Mutex<HashSet<(PathBuf, FileId)>>,
    /// Serialises read-modify-write of one record file within this process.
    write: Mutex<()>,
}

impl ServedViews {
    pub(crate) fn in_store(store: &Path) -> ServedViews {
        ServedViews {
            dir: store.join("served"),
            seen: Mutex::new(HashSet::new()),
            write: Mutex::new(()),
        }
    }

    fn path_dir(&self, rel: &Path) -> PathBuf {
        let h = blake3::hash(rel.as_os_str().as_bytes()).to_hex();
        self.dir.join(&h[..32])
    }

    /// Has the view of version `id` of `rel` been recorded by this process?
    pub(crate) fn seen(&self, rel: &Path, id: FileId) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(rel.to_path_buf(), id))
    }

    /// Records that the agent is served `real` (version `id` of `rel`) masked by `r`; durable
    /// (fsync'd) before it returns.
    pub(crate) fn record(
        &self,
        rel: &Path,
        id: Option<FileId>,
        real: &[u8],
        r: &Redactions,
    ) -> Result<()> {
        let hash = blake3::hash(real);
        let dir = self.path_dir(rel);
        let file = dir.join(format!("{}.json", hash.to_hex()));
        let mut spans: Vec<(u64, u64, String)> = r
            .spans()
            .iter()
            .map(|s| (s.start, s.end, s.rule_id.to_string()))
            .collect();
        let mut codes: Vec<(String, String)> = r
            .codes()
            .iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect();
        {
            let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(old) = read_record(&file) {
                // Codes of rules this view did not mask stay as recorded.
                for (rule, code) in &old.codes {
                    if !codes.iter().any(|c| &c.0 == rule) {
                        codes.push((rule.clone(), code.clone()));
                    }
                }
                codes.sort();
                if old.spans == spans && old.codes == codes {
                    self.remember(rel, id);
                    return Ok(());
                }
                let both = Record {
                    spans: [old.spans, spans].concat(),
                    ..old
                }
                .redactions(real);
                spans = both
                    .spans()
                    .iter()
                    .map(|s| (s.start, s.end, s.rule_id.to_string()))
                    .collect();
            }
            let rec = Record {
                version: 1,
                size: real.len() as u64,
                encoding: encoding_name(r.encoding()).into(),
                spans,
                codes,
            };
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            let mut tmp =
                tempfile::NamedTempFile::new_in(&dir).map_err(io("create a file in", &dir))?;
            serde_json::to_writer(&mut tmp, &rec).map_err(|source| ServedError::Record {
                path: file.clone(),
                source,
            })?;
            tmp.flush().map_err(io("write", &file))?;
            tmp.as_file().sync_all().map_err(io("write", &file))?;
            tmp.persist(&file)
                .map_err(|e| io("write", &file)(e.error))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", &dir))?;
        }
        self.remember(rel, id);
        Ok(())
    }

    fn remember(&self, rel: &Path, id: Option<FileId>) {
        if let Some(id) = id {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((rel.to_path_buf(), id));
        }
    }

    /// The view recorded for `real` at `rel`.
    pub(crate) fn lookup(&self, rel: &Path, real: &[u8]) -> Result<Lookup> {
        let dir = self.path_dir(rel);
        let file = dir.join(format!("{}.json", blake3::hash(real).to_hex()));
        match read_record(&file) {
            Ok(r) if r.size == real.len() as u64 => return Ok(Lookup::Served(r)),
            Ok(_) => return Ok(Lookup::OtherVersion),
            Err(ServedError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let any = std::fs::read_dir(&dir)
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false);
        Ok(if any {
            Lookup::OtherVersion
        } else {
            Lookup::NeverServed
        })
    }
}

/// What `veilfs commit` writes for one file of the overlay's upper layer.
#[derive(Debug)]
pub(crate) enum CommitContent {
    /// The upper file as it is: no masked view of the real file was ever served at its path.
    AsIs,
    /// The agent's edit merged onto the real bytes (secrets kept).
    Merged(Vec<u8>),
    /// Never committed: the edit touches a masked range, or the real file changed after the
    /// agent saw it masked. The message names the path and why.
    Refused(String),
}

/// Decides what to commit for the upper file `upper_abs` at `rel`, whose real counterpart is
/// `lower` (the origin inside a renamed directory) or `rel`, in the scope held by `root`.
/// `upper_dir` is the store's `overlay/upper`.
pub(crate) fn commit_content(
    upper_dir: &Path,
    root: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    lower: Option<&Path>,
    upper_abs: &Path,
) -> Result<CommitContent> {
    use std::os::fd::AsFd;
    // `STORE/overlay/upper` → `STORE`.
    let Some(store_dir) = upper_dir.parent().and_then(Path::parent) else {
        return Ok(CommitContent::AsIs);
    };
    let served = ServedViews::in_store(store_dir);
    let mut names: Vec<&Path> = vec![rel];
    if let Some(l) = lower.filter(|l| *l != rel) {
        names.push(l);
    }
    // Cheap first: most files were never served masked.
    if !names.iter().any(|n| served.path_dir(n).exists()) {
        return Ok(CommitContent::AsIs);
    }
    let real_fd = names.iter().rev().find_map(|n| {
        let fd = crate::backing::open_path(root, n).ok()?;
        let st = crate::backing::stat_fd(fd.as_fd()).ok()?;
        (st.kind() == crate::backing::Kind::File).then_some(fd)
    });
    let Some(real_fd) = real_fd else {
        // The agent was served masked views at this path, but no real file is there to merge
        // with (it was renamed here in the overlay, or removed): its content may hold masks
        // of bytes that are elsewhere now. Refused rather than guessed.
        return Ok(CommitContent::Refused(format!(
            "refused {}: the agent saw this path's content masked, and the real file it came from is no longer at this path, so its edit cannot be merged (review it in the overlay, or `veilfs discard` it)",
            rel.display()
        )));
    };
    let mut real = Vec::new();
    crate::backing::reopen(real_fd.as_fd(), libc::O_RDONLY)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut real))
        .map_err(io("read the real file", rel))?;
    let new = std::fs::read(upper_abs).map_err(io("read", upper_abs))?;
    if new == real {
        return Ok(CommitContent::AsIs);
    }
    let mut changed = false;
    for n in &names {
        match served.lookup(n, &real)? {
            Lookup::Served(rec) => {
                let r = rec.redactions(&real);
                let view = crate::redact::mask_all(&real, &r);
                return Ok(match crate::merge::merge(&view, &new, &real, r.spans()) {
                    Ok(m) => CommitContent::Merged(m.bytes),
                    Err(c) => CommitContent::Refused(format!(
                        "refused {}: {c}; the real file is unchanged (edit the file in the overlay without touching the masked text, or `veilfs discard` it)",
                        rel.display()
                    )),
                });
            }
            Lookup::OtherVersion => changed = true,
            Lookup::NeverServed => {}
        }
    }
    Ok(if changed {
        CommitContent::Refused(format!(
            "refused {}: the real file changed after the agent was served a masked view of it, so its edit cannot be merged (review it in the overlay, or `veilfs discard` it)",
            rel.display()
        ))
    } else {
        CommitContent::AsIs
    })
}

/// Makes `target` (a file state) hold `bytes` instead: stored when `store` is given.
pub(crate) fn set_content(
    target: &mut crate::journal::State,
    bytes: &[u8],
    store: Option<&crate::store::Store>,
) -> Result<()> {
    if let crate::journal::State::File { hash, size, .. } = target {
        *hash = match store {
            Some(s) => s.put_bytes(bytes)?,
            None => crate::store::ObjectId::of(bytes),
        };
        *size = bytes.len() as u64;
    }
    Ok(())
}

fn read_record(file: &Path) -> Result<Record> {
    let b = std::fs::read(file).map_err(io("read", file))?;
    serde_json::from_slice(&b).map_err(|source| ServedError::Record {
        path: file.to_path_buf(),
        source,
    })
}

/// A served-view record that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// A filesystem call on a named path failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record that does not parse (or serialise).
    #[error("bad served-view record {}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The store failed to keep merged content.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

type Result<T, E = ServedError> = std::result::Result<T, E>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServedError {
    let path = path.to_path_buf();
    move |source| ServedError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::mask_all;

    fn red(real: &[u8], ranges: &[(u64, u64)]) -> Redactions {
        Redactions::build(
            real,
            Encoding::Utf8,
            ranges
                .iter()
                .map(|&(a, b)| (a, b, Arc::from("r")))
                .collect(),
        )
    }

    #[test]
    fn records_reproduce_the_view_and_tell_versions_apart() {
        let d = tempfile::tempdir().unwrap();
        let s = ServedViews::in_store(d.path());
        let rel = Path::new("conf/db.yaml");
        let real = b"password: hunter2\n";
        assert!(matches!(s.lookup(rel, real).unwrap(), Lookup::NeverServed));
        let r = red(real, &[(10, 17)]);
        s.record(rel, None, real, &r).unwrap();
        let Lookup::Served(rec) = s.lookup(rel, real).unwrap() else {
            panic!("not recorded")
        };
        assert_eq!(mask_all(real, &rec.redactions(real)), mask_all(real, &r));
        // Another version of the same path: the agent did not see it.
        assert!(matches!(
            s.lookup(rel, b"password: changed\n").unwrap(),
            Lookup::OtherVersion
        ));
        // Another path with the same bytes: never served there.
        assert!(matches!(
            s.lookup(Path::new("other"), real).unwrap(),
            Lookup::NeverServed
        ));
        // Served again under other rules: the union is recorded.
        s.record(rel, None, real, &red(real, &[(0, 3)])).unwrap();
        let Lookup::Served(rec) = s.lookup(rel, real).unwrap() else {
            panic!("not recorded")
        };
        assert_eq!(rec.spans.len(), 2);
    }
}
