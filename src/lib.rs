//! veilfs: a FUSE gateway that hands an AI agent a filtered, redacted, and (where writes are
//! allowed) snapshotted view of a real folder.
//!
//! Module map (see `../shared/design.md`):
//! - [`profile`]: the admin's TOML profile, validated with file:line errors.
//! - [`policy`]: pure visibility/writability decisions compiled from a profile.
//! - [`present`]: metadata stubs, shown instead of the content of files the profile names.
//! - [`redact`]: rule sets, the scanning engine, masking, scan cache.
//! - [`error`]: the rules errors follow; the errno an error carries.
//! - [`backing`]: the only module that touches the real folder, always beneath the scope's fd.
//! - [`fs`]: the `fuser::Filesystem` translation layer.
//! - [`store`], [`journal`], [`rollback`]: snapshot store, tamper-evident journal, undo.
//! - [`guard`]: snapshot-before-write orchestration for the write path.
//! - [`breaker`]: the damage breaker (rate limits on deletes, renames, overwrites, mass reads).
//! - [`registry`]: the registry of this user's live mounts (`veilfs status`, `resume`, `revoke`).
//! - [`overlay`]: copy-on-write upper layer.
//! - [`merge`]: applies an agent's edit of a masked view to the real bytes; [`served`]
//!   records the masked views served, which commit merges against.
//! - [`checkpoint`]: the ends of agent turns in a session; what `rollback --to` cuts at.
//! - [`control`]: the mount's control socket (`veilfs checkpoint` reaches a live session).
//! - [`denials`]: the mount's last denials, told to the agent by `veilfs why`.
//! - [`audit`]: one typed event per decision; the OCSF JSON-lines trail, chained and signed.
//! - [`mount`]: mount-point checks, session lifecycle, signal handling.
//! - [`run`]: `veilfs run`, one agent session from mount to summary (optionally sandboxed).
//! - [`watch`]: pushes changes made outside the mount into the kernel's caches.
//! - [`scan`]: the admin's dry run: the real folder walked as the mount would show it.
//! - Leaves that several of the above share: [`time`] (clock, RFC 3339), [`pattern`] (profile
//!   pattern compilation), [`mountinfo`] (the mount table).
//! - `sys`: the few syscalls no safe wrapper covers; the only module allowed `unsafe`.

#![deny(unsafe_code)]

pub mod audit;
pub mod backing;
pub mod breaker;
pub mod checkpoint;
pub mod control;
pub mod denials;
pub mod error;
pub mod fs;
pub mod guard;
pub mod journal;
pub mod merge;
pub mod mount;
pub mod mountinfo;
pub mod overlay;
pub mod pattern;
pub mod policy;
pub mod present;
pub mod profile;
pub mod redact;
pub mod registry;
pub mod rollback;
pub mod run;
pub mod scan;
pub mod served;
pub mod store;
#[allow(unsafe_code)]
mod sys;
pub mod time;
pub mod watch;
