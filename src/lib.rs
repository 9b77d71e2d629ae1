//! veilfs: a FUSE gateway that hands an AI agent a filtered, redacted, and (where writes are
//! allowed) snapshotted view of a real folder.
//!
//! Module map (see `../shared/design.md`):
//! - [`profile`]: the admin's TOML profile, validated with file:line errors.
//! - [`policy`]: pure visibility/writability decisions compiled from a profile.
//! - [`redact`]: rule sets, the scanning engine, masking, scan cache.
//! - [`error`]: the rules errors follow; the errno an error carries.
//! - [`backing`]: the only module that touches the real folder, always beneath the scope's fd.
//! - [`fs`]: the `fuser::Filesystem` translation layer.
//! - [`store`], [`journal`], [`rollback`]: snapshot store, tamper-evident journal, undo.
//! - [`guard`]: snapshot-before-write orchestration for the write path.
//! - [`overlay`]: copy-on-write upper layer.
//! - [`merge`]: applies an agent's edit of a masked view to the real bytes; [`served`]
//!   records the masked views served, which commit merges against.
//! - [`audit`]: one typed event per decision; the OCSF JSON-lines trail, chained and signed.
//! - [`mount`]: mount-point checks, session lifecycle, signal handling.
//! - [`watch`]: pushes changes made outside the mount into the kernel's caches.

pub mod audit;
pub mod backing;
pub mod error;
pub mod fs;
pub mod guard;
pub mod journal;
pub mod merge;
pub mod mount;
pub mod overlay;
pub mod policy;
pub mod profile;
pub mod redact;
pub mod rollback;
pub mod served;
pub mod store;
pub mod watch;
