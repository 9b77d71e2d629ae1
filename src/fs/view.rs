//! What the agent may see of a file's bytes: the raw content, a masked view, or nothing.
//!
//! Decided at open (and re-decided on read when the file changed underneath), from the
//! redaction engine's scan, cached by file identity so an unchanged file is scanned once.
//! Fail-closed: a file that cannot be scanned (binary, too large, unreadable) is denied unless
//! the profile explicitly allows serving it unscanned.

use std::io::Read;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

use crate::backing::{self, Stat};
use crate::policy::Policy;
use crate::redact::{Engine, FileId, Redactions, ScanCache, ScanOutcome};

#[derive(Clone)]
pub enum View {
    /// Serve the real bytes (no rule matched, or redaction is off).
    Raw,
    /// Serve the bytes with these spans masked.
    Masked(Arc<Redactions>),
    /// Refuse to open; the string is the audit reason.
    Denied(String),
}

pub struct Viewer {
    engine: Arc<Engine>,
    cache: ScanCache,
    policy: Arc<Policy>,
    max_scan_size: u64,
    allow_unscannable: bool,
}

pub fn file_id(st: &Stat) -> FileId {
    FileId {
        dev: st.dev,
        ino: st.ino,
        size: st.size,
        // i64 nanoseconds reach the year 2262.
        mtime_ns: st
            .mtime
            .0
            .saturating_mul(1_000_000_000)
            .saturating_add(st.mtime.1),
        ctime_ns: st
            .ctime
            .0
            .saturating_mul(1_000_000_000)
            .saturating_add(st.ctime.1),
    }
}

impl Viewer {
    pub fn new(
        engine: Arc<Engine>,
        policy: Arc<Policy>,
        max_scan_size: u64,
        allow_unscannable: bool,
    ) -> Viewer {
        Viewer {
            cache: ScanCache::for_engine(200_000, &engine),
            engine,
            policy,
            max_scan_size,
            allow_unscannable,
        }
    }

    /// Loads scan verdicts saved by an earlier mount; a bad file is logged and ignored.
    pub fn load_scans(&self, path: &Path) {
        match self.cache.load(path) {
            Ok(n) => tracing::info!(path = %path.display(), n, "loaded saved scan results"),
            Err(e) => tracing::warn!(path = %path.display(), "ignoring saved scan results: {e}"),
        }
    }

    /// Saves scan verdicts for the next mount of the same folder.
    pub fn save_scans(&self, path: &Path) {
        match self.cache.save(path) {
            Ok(n) => tracing::info!(path = %path.display(), n, "saved scan results"),
            Err(e) => tracing::warn!(path = %path.display(), "cannot save scan results: {e}"),
        }
    }

    pub fn redaction_enabled(&self) -> bool {
        !self.engine.is_empty()
    }

    /// The view of the regular file held by `fd` (whose current stat is `st`) at `rel`.
    pub fn decide(&self, rel: &Path, fd: BorrowedFd<'_>, st: &Stat) -> View {
        if self.engine.is_empty() {
            return View::Raw;
        }
        let id = file_id(st);
        let outcome = match self.cache.get(&id) {
            Some(o) => o,
            None => {
                if st.size > self.max_scan_size {
                    return self.unscannable(
                        rel,
                        format!(
                            "{} bytes is above max_scan_size {}",
                            st.size, self.max_scan_size
                        ),
                    );
                }
                let data = match read_all(fd, st.size) {
                    Ok(d) => d,
                    Err(e) => return View::Denied(format!("cannot read to scan: {e}")),
                };
                let o = self.engine.scan(rel, &data);
                // A file that changed while we read it gets a new identity; only cache what
                // we know belongs to `id`.
                if backing::stat_fd(fd)
                    .map(|s| file_id(&s) == id)
                    .unwrap_or(false)
                {
                    self.cache.insert(id, o.clone());
                }
                o
            }
        };
        match outcome {
            ScanOutcome::Clean => View::Raw,
            ScanOutcome::Redact(r) => View::Masked(r),
            ScanOutcome::Binary => self.unscannable(rel, "binary content".to_string()),
        }
    }

    fn unscannable(&self, rel: &Path, why: String) -> View {
        if self.allow_unscannable || self.policy.unscannable_allowed(rel) {
            View::Raw
        } else {
            View::Denied(format!(
                "cannot be scanned ({why}) and the profile denies unscannable files"
            ))
        }
    }
}

fn read_all(fd: BorrowedFd<'_>, hint: u64) -> std::io::Result<Vec<u8>> {
    let mut f = backing::reopen(fd, libc::O_RDONLY)?;
    let mut data = Vec::with_capacity(hint as usize);
    f.read_to_end(&mut data)?;
    Ok(data)
}
