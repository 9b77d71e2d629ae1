//! `veilfs verify`: checks that a store can still undo what its sessions did. Every object's
//! bytes match its name, every pre-image a journal needs is present, every journal's chain is
//! intact, and every audit trail is chained (and signed, when a key is given).
//!
//! The result is a list of typed [`Finding`]s, so a caller can count, filter or print them;
//! the CLI prints each finding's `Display`.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::audit;
use crate::journal::{Event, JournalError};
use crate::store::{ObjectId, Store, StoreError};

/// One thing wrong with a store.
#[derive(Debug)]
pub enum Finding {
    /// A file under `objects/` whose name is not an object id.
    StrayFile(PathBuf),
    /// An object whose bytes no longer hash to its name, or that cannot be read.
    BadObject(StoreError),
    /// A journal that cannot be read or whose chain is broken before its last line.
    Journal(JournalError),
    /// A journal whose last line is torn (a crash mid-append); what precedes it is intact.
    TornJournalTail(String),
    /// A pre-image a journal refers to is not in the store: that capture cannot be undone.
    MissingPreImage {
        /// The journal file.
        journal: PathBuf,
        /// Its 1-based line.
        line: u64,
        /// The object the capture names.
        object: ObjectId,
        /// The scope-relative path captured.
        path: PathBuf,
    },
    /// An audit trail whose chain or signatures do not verify (the message names the line).
    Audit(String),
    /// An audit trail that cannot be read at all.
    AuditUnreadable {
        /// The audit file.
        file: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::StrayFile(p) => write!(f, "{}: not an object", p.display()),
            Finding::BadObject(e) => write!(f, "{e}"),
            Finding::Journal(e) => write!(f, "{e}"),
            Finding::TornJournalTail(msg) | Finding::Audit(msg) => f.write_str(msg),
            Finding::MissingPreImage {
                journal,
                line,
                object,
                path,
            } => write!(
                f,
                "{}:{line}: object {object} (pre-image of {}) is missing",
                journal.display(),
                path.display()
            ),
            Finding::AuditUnreadable { file, error } => write!(f, "{}: {error}", file.display()),
        }
    }
}

/// What `verify` found, and what it counted on the way.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects in the store.
    pub objects: usize,
    /// Pre-images the journals refer to.
    pub references: usize,
    /// Audit events whose chain was checked.
    pub audit_events: usize,
    /// Whether audit signatures were checked (a key was given).
    pub signed: bool,
    /// Things that are not wrong but an investigator should know (e.g. an unsigned trail).
    pub warnings: Vec<String>,
    /// Things that are wrong.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks the store at `dir`. `progress(done, total)` is called before the first object and
/// after each one (for a progress bar).
pub(crate) fn verify_store(
    dir: &Path,
    audit_key: Option<&VerifyingKey>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, StoreError> {
    let store = Store::open(dir)?;
    let mut report = Report {
        signed: audit_key.is_some(),
        ..Report::default()
    };
    // Listing the sessions first rebuilds the objects of one that did not end (a crash before
    // its lazily stored small pre-images reached the disk) from its journal, as rollback does.
    let sessions = store.sessions();
    let (ids, strays) = store.list_objects()?;
    report.objects = ids.len();
    report
        .findings
        .extend(strays.into_iter().map(Finding::StrayFile));
    progress(0, ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Err(e) = store.verify_object(id) {
            report.findings.push(Finding::BadObject(e));
        }
        progress(i + 1, ids.len());
    }
    check_journals(&store, sessions, &mut report);
    check_audit(dir, audit_key, &mut report);
    Ok(report)
}

fn check_journals(
    store: &Store,
    sessions: Result<Vec<crate::journal::SessionInfo>, JournalError>,
    report: &mut Report,
) {
    let sessions = match sessions {
        Ok(s) => s,
        Err(e) => {
            report.findings.push(Finding::Journal(e));
            return;
        }
    };
    for info in sessions {
        let log = match store.load_session(&info.id) {
            Ok(l) => l,
            Err(e) => {
                report.findings.push(Finding::Journal(e));
                continue;
            }
        };
        if let Some(t) = &log.tail {
            report
                .findings
                .push(Finding::TornJournalTail(t.msg.clone()));
        }
        for r in &log.records {
            if let Event::Capture { path, before } = &r.event
                && let Some(id) = before.object()
            {
                report.references += 1;
                if !store.has(id) {
                    report.findings.push(Finding::MissingPreImage {
                        journal: log.path.clone(),
                        line: r.seq + 1,
                        object: *id,
                        path: path.clone(),
                    });
                }
            }
        }
    }
}

fn check_audit(dir: &Path, key: Option<&VerifyingKey>, report: &mut Report) {
    let files = match audit::audit_files(dir) {
        Ok(f) => f,
        Err(error) => {
            report.findings.push(Finding::AuditUnreadable {
                file: dir.join("audit"),
                error,
            });
            return;
        }
    };
    for file in files {
        match audit::verify_file(&file, key) {
            Ok(v) => {
                report.audit_events += v.events;
                report
                    .findings
                    .extend(v.errors.into_iter().map(Finding::Audit));
                report.warnings.extend(v.warnings);
            }
            Err(error) => report
                .findings
                .push(Finding::AuditUnreadable { file, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_store_verifies_clean() {
        let dir = tempfile::tempdir().unwrap();
        Store::create_or_open(dir.path()).unwrap();
        let mut total = None;
        let r = verify_store(dir.path(), None, &mut |_, n| total = Some(n)).unwrap();
        assert!(r.is_ok(), "{:?}", r.findings);
        assert_eq!(total, Some(0));
        assert!(!r.signed);
    }

    #[test]
    fn a_stray_file_under_objects_is_named() {
        let dir = tempfile::tempdir().unwrap();
        Store::create_or_open(dir.path()).unwrap();
        let stray = dir.path().join("objects").join("not-an-object");
        std::fs::write(&stray, b"x").unwrap();
        let r = verify_store(dir.path(), None, &mut |_, _| {}).unwrap();
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert!(
            r.findings[0].to_string().contains("not an object"),
            "{}",
            r.findings[0]
        );
    }
}
