//! What overlay operations return: one typed error, so a caller can tell "the overlay refuses
//! in its state" from "a file could not be read" from "the store failed".

use std::io;
use std::path::{Path, PathBuf};

use crate::journal::JournalError;
use crate::rollback::RollbackError;
use crate::store::{ObjectId, StoreError};

/// An overlay mount, plan, commit or discard that failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A filesystem call on a named path failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done ("read", "remove", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A filesystem call failed where the path is implied by the operation.
    #[error(transparent)]
    Os(#[from] io::Error),
    /// The overlay refuses in its current state (still mounted, another scope's changes
    /// pending, an interrupted commit to finish first); the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// Kernel overlayfs refused the mount.
    #[error(
        "cannot mount the overlay of {} (upper layer {}) (see dmesg; if the scope was replaced since these changes were made, commit or discard them first)",
        scope.display(),
        upper.display()
    )]
    Mount {
        /// The scope (lower layer).
        scope: PathBuf,
        /// The upper layer.
        upper: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A file the commit would write has no content in the store.
    #[error("{}: content {} is not in the store", path.display(), hash.short())]
    MissingContent {
        /// The path to be written.
        path: PathBuf,
        /// The content it needs.
        hash: ObjectId,
    },
    /// A commit's journaled plan cannot be written or read back.
    #[error("the journaled plan of commit session {session}")]
    Plan {
        /// The commit session.
        session: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A commit stopped part-way; the message says how to finish or undo it.
    #[error(
        "commit stopped at {}: nothing was removed from the overlay, and session {session} holds the pre-image of every change made so far; fix the cause, then finish it with `veilfs commit --store {}`, or undo it with `veilfs commit --store {} --abort`",
        path.display(),
        store.display(),
        store.display()
    )]
    CommitStopped {
        /// The path whose step failed.
        path: PathBuf,
        /// The commit session.
        session: String,
        /// The store directory.
        store: PathBuf,
        /// The step's error.
        #[source]
        source: Box<OverlayError>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A served-view record (what the agent saw masked) cannot be read.
    #[error(transparent)]
    Served(#[from] crate::served::ServedError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Undoing (abort) or restoring (commit) through the rollback machinery failed.
    #[error(transparent)]
    Rollback(#[from] RollbackError),
}

/// Attaches the action and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T, OverlayError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T, OverlayError> {
        self.map_err(|source| OverlayError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}
