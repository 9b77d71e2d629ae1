//! veilfs: a FUSE gateway that hands an AI agent a filtered, redacted, and (where writes are
//! allowed) snapshotted view of a real folder.
//!
//! Module map (see `../shared/design.md`):
//! - [`cli`]: the `veilfs` command tree; each command parses its arguments and prints.
//! - [`profile`]: the admin's TOML profile, validated with file:line errors.
//! - [`live`], [`reload`]: the policy in force, replaced when the profile or a rule file changes.
//! - [`policy`]: pure visibility/writability decisions compiled from a profile.
//! - [`present`]: metadata stubs, shown instead of the content of files the profile names.
//! - [`virtual_entries`]: names the view shows with no real file behind them (decoys, text
//!   views); [`decoy`]: the canary credential files `[decoys]` places; [`text_view`]: the text
//!   of a PDF or office document shown as `NAME.txt` (`[present] text`).
//! - [`redact`]: rule sets, the scanning engine, masking, scan cache.
//! - [`watermark`]: marks and per-session mask codes that trace a leaked view to its session
//!   (`veilfs trace`).
//! - [`history`]: git object files judged by content (`redaction.history`).
//! - [`error`]: the rules errors follow; the errno an error carries.
//! - [`backing`]: the only module that touches the real folder, always beneath the scope's fd.
//! - [`fs`]: the `fuser::Filesystem` translation layer.
//! - [`store`], [`journal`], [`rollback`]: snapshot store, tamper-evident journal, undo.
//! - [`aside`]: removed files parked in the store until their journal records are durable.
//! - [`guard`]: snapshot-before-write orchestration for the write path.
//! - [`breaker`]: the damage breaker (rate limits on deletes, renames, overwrites, mass reads).
//! - [`registry`]: the registry of this user's live mounts (`veilfs status`, `resume`, `revoke`).
//! - [`overlay`]: copy-on-write upper layer.
//! - [`merge`]: applies an agent's edit of a masked view to the real bytes; [`served`]
//!   records the masked views served, which commit merges against.
//! - [`checkpoint`]: the ends of agent turns in a session; what `rollback --to` cuts at.
//! - [`control`]: the mount's agent-facing socket (`veilfs checkpoint`, `veilfs why`).
//! - [`admin`]: the mount's admin socket, peer-checked (`status`, `pending`, `approve`, `deny`,
//!   `resume`, `revoke`); [`approval`]: requests held for a person's answer.
//! - [`denials`]: the mount's last denials, told to the agent by `veilfs why`.
//! - [`audit`]: one typed event per decision; the OCSF JSON-lines trail, chained and signed.
//! - [`mount`]: mount-point checks, session lifecycle, signal handling.
//! - [`manifest`]: agent manifests (what an agent asks for) and the consent screen.
//! - [`fusermount`]: a normal user's mount, through the setuid `fusermount3`.
//! - [`run`]: `veilfs run`, one agent session from mount to summary (optionally sandboxed).
//! - [`egress`]: the sandbox's network: the allow-list, the filtering proxy, the relay inside.
//! - [`watch`]: pushes changes made outside the mount into the kernel's caches.
//! - [`diff`]: what a session changed, or what an overlay commit would change, as typed changes.
//! - [`verify`]: checks a store can still undo its sessions (objects, journals, audit trail).
//! - [`scan`]: the admin's dry run: the real folder walked as the mount would show it.
//! - Leaves that several of the above share: [`time`] (clock, RFC 3339), [`pattern`] (profile
//!   pattern compilation), [`mountinfo`] (the mount table).
//! - `sys`: the few syscalls no safe wrapper covers; the only module allowed `unsafe`.

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod admin;
mod approval;
mod aside;
mod audit;
mod backing;
mod breaker;
mod checkpoint;
pub mod cli;
mod control;
mod decoy;
mod denials;
mod diff;
mod egress;
mod error;
mod fs;
mod fusermount;
mod guard;
mod history;
mod journal;
mod live;
mod manifest;
mod merge;
mod mount;
mod mountinfo;
mod overlay;
mod pattern;
mod policy;
mod present;
mod profile;
mod redact;
mod registry;
mod reload;
mod rollback;
mod run;
mod scan;
mod served;
mod store;
#[allow(unsafe_code)]
mod sys;
mod text_view;
mod time;
mod verify;
mod virtual_entries;
mod watch;
mod watermark;

// The library's chosen surface: loading a profile and its policy, the redaction engine, the
// snapshot store and its journal, the write guard, undo, verification and diffs. The command
// line (`cli`) is built on the same crate.
pub use diff::{Change, DiffError};
pub use error::io_error;
pub use guard::{Guard, GuardError};
pub use journal::{Event, Record, SessionLog, State};
pub use mountinfo::is_mount_point;
pub use policy::{EntryKind, Hidden, Policy};
pub use profile::{ApplyMode, Profile, WriteMode};
pub use redact::{Engine, Redactions, ScanOutcome, mask_all};
pub use rollback::RollbackError;
pub use store::{ObjectId, Store, StoreError};
pub use verify::{Finding as VerifyFinding, Report as VerifyReport};

/// Internals that veilfs's own integration tests, benchmarks and examples drive directly. Not
/// part of the API: they change without notice.
#[doc(hidden)]
pub mod testing {
    #![allow(missing_docs)]
    pub mod backing {
        pub use crate::backing::{
            SetTime, all_xattrs, open_parent, open_path, open_root, rename, setxattr, utimens_at,
            utimens_fd,
        };
    }
    pub mod samples {
        pub use crate::redact::samples::*;
    }
    pub mod rollback {
        pub use crate::rollback::*;
    }
    pub use crate::audit::bench_emit as audit_bench_emit;
}
