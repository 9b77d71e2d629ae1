//! The profile's schema: the tables and keys of a profile file, their defaults, and how they
//! serialise back (`veilfs profile show`). Every table rejects unknown keys.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ProfileWarning, size};

/// The built-in default profile text (also shipped as `profiles/default.toml`).
pub(crate) const DEFAULT_PROFILE_TOML: &str = include_str!("../../profiles/default.toml");

/// The only profile schema version this build understands.
pub(crate) const PROFILE_VERSION: u32 = 1;

/// A validated profile. Build it with [`Profile::load`], [`Profile::parse`] or
/// [`Profile::builtin_default`]; compile it into a [`crate::policy::Policy`] to query it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Schema version; must be 1.
    pub version: u32,
    /// Short name shown in logs and `veilfs log`; defaults to the file stem.
    #[serde(default)]
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: String,
    /// What the agent sees (`[visibility]`).
    #[serde(default)]
    pub visibility: VisibilityCfg,
    /// What is masked or refused (`[redaction]`).
    #[serde(default)]
    pub redaction: RedactionCfg,
    /// Whether and how writes reach the real folder (`[write]`).
    #[serde(default)]
    pub write: WriteCfg,
    /// Kernel and scan caching (`[cache]`).
    #[serde(default)]
    pub cache: CacheCfg,
    /// Rate limits that turn the mount read-only (`[breaker]`).
    #[serde(default)]
    pub breaker: BreakerCfg,
    /// Operations a person must approve (`[approval]`).
    #[serde(default)]
    pub approval: ApprovalCfg,
    /// Limits on grants (`[guardrails]`).
    #[serde(default)]
    pub guardrails: GuardrailsCfg,
    /// Files shown as something other than their bytes (`[present]`).
    #[serde(default)]
    pub present: PresentCfg,
    /// Marks that trace a leaked view back to its session (`[watermark]`).
    #[serde(default)]
    pub watermark: WatermarkCfg,
    /// Network egress for `veilfs run --sandbox` (`[network]`).
    #[serde(default)]
    pub network: NetworkCfg,
    /// Canary credential files placed in the view only (`[decoys]`).
    #[serde(default)]
    pub decoys: DecoysCfg,
    /// The file this profile was loaded from (`None` = built-in or parsed from a string).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Legal but suspicious settings found while loading (printed by `veilfs profile check`).
    #[serde(skip)]
    pub warnings: Vec<ProfileWarning>,
}

/// `[visibility]`: which entries of the real folder exist at all for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisibilityCfg {
    /// Gitignore-like patterns of entries to hide (see [`crate::policy`]).
    pub deny: Vec<String>,
    /// If non-empty, only files (and symlinks) matching are visible; directories stay traversable
    /// unless denied. A file is also allowed when one of its directories matches (`"docs/"`).
    pub allow: Vec<String>,
    /// Regular files larger than this are hidden.
    #[serde(
        deserialize_with = "size::de_opt",
        serialize_with = "size::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_file_size: Option<u64>,
    /// Hide devices, fifos and sockets (default true).
    pub hide_special_files: bool,
    /// Hide symlinks whose target leaves the scope (default true).
    pub hide_escaping_symlinks: bool,
    /// `[[visibility.dir]]`: extra rules for one directory's subtree.
    #[serde(rename = "dir")]
    pub dirs: Vec<DirRules>,
}

impl Default for VisibilityCfg {
    fn default() -> Self {
        VisibilityCfg {
            deny: Vec::new(),
            allow: Vec::new(),
            max_file_size: None,
            hide_special_files: true,
            hide_escaping_symlinks: true,
            dirs: Vec::new(),
        }
    }
}

/// `[[visibility.dir]]`: patterns relative to `path`, applied to the entries below it. Deeper rules
/// are evaluated after shallower ones, so (like nested `.gitignore` files) they win on conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirRules {
    /// Directory relative to the scope root (`"docs"`, `"src/generated"`); normalised on load.
    pub path: String,
    #[serde(default)]
    pub deny: Vec<String>,
    /// Replaces any shallower allow-list for this subtree (the most specific allow-list wins).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[redaction]`: what the redaction engine masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionCfg {
    /// Built-in rule sets by name (`"secrets"`, `"pii"`).
    pub rule_sets: Vec<String>,
    /// Extra rule files; relative paths resolve against the profile file's directory.
    #[serde(serialize_with = "paths::ser_vec")]
    pub rule_files: Vec<PathBuf>,
    /// Files above this size are not scanned (they are "unscannable"). Default 64 MiB.
    #[serde(deserialize_with = "size::de", serialize_with = "size::ser")]
    pub max_scan_size: u64,
    /// What to do with unscannable files (compressed or encrypted content, opaque binaries, or
    /// above `max_scan_size`). Default deny.
    pub unscannable: Unscannable,
    /// Patterns of files that may be served unscanned even when `unscannable = "deny"`.
    pub unscannable_allow: Vec<String>,
    /// Patterns of files (media types) whose binary content is not looked into: such a file is
    /// unscannable unless it is text. Other binaries are scanned through their printable runs.
    pub opaque: Vec<String>,
    /// What the agent may read of git's object files (the repository history). Default
    /// allow-if-clean.
    pub history: History,
    /// Patterns of office documents served rebuilt with their secrets masked inside
    /// (`redact::document`) instead of scanned as zip containers (which refuses any that holds
    /// a secret). Only names ending in .docx, .xlsx, .pptx, .odt, .ods or .odp are rebuilt.
    /// Default none; the default profile lists all six.
    pub documents: Vec<String>,
    /// Refuse documents carrying macros (`vbaProject.bin`, OpenDocument `Basic/`) instead of
    /// serving them (default true).
    pub refuse_macros: bool,
}

impl Default for RedactionCfg {
    fn default() -> Self {
        RedactionCfg {
            rule_sets: Vec::new(),
            rule_files: Vec::new(),
            max_scan_size: 64 * MIB,
            unscannable: Unscannable::Deny,
            unscannable_allow: Vec::new(),
            opaque: Vec::new(),
            history: History::AllowIfClean,
            documents: Vec::new(),
            refuse_macros: true,
        }
    }
}

/// `redaction.history`: git object files (loose objects and packs, recognised by content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum History {
    /// Refuse every object file: no secret in history is readable, and git commands that read
    /// objects (log, show, diff, status) fail.
    Hide,
    /// Serve object files as they are, unscanned.
    Allow,
    /// Scan every object of an object file; serve it only if no rule matches.
    #[default]
    AllowIfClean,
}

/// `[present]`: files the agent is shown something else than their content of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresentCfg {
    /// Patterns of files shown as a metadata stub (kind, size, dates, page/sheet/slide counts,
    /// title: see `crate::present`) instead of their bytes. Default none.
    pub metadata: Vec<String>,
    /// Patterns of files refused themselves and shown as text instead: a read-only sibling
    /// `NAME.txt` holds their extracted, masked text (PDF, office documents, UTF-8 text; see
    /// `crate::text_view`). Default none.
    pub text: Vec<String>,
}

/// `[watermark]`: marks that trace a leaked copy of a view back to its mount and session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkCfg {
    /// Every office document view (`redaction.documents`) carries a document property naming
    /// the mount point, the session and the time it was mounted; `veilfs trace FILE` reads it
    /// back. Default false.
    pub documents: bool,
    /// Every office document view also carries the mark as a visible line: a last paragraph
    /// (docx, odt), a last row of every sheet (xlsx, ods), a text box on every slide (pptx,
    /// odp). `veilfs trace` reads it back when the property was stripped. Default false.
    pub footer: bool,
    /// Every mask carries a short code naming the session, `<redacted:RULE:CODE>` (keyed by a
    /// random key in the store, derived from the session and the rule only); `veilfs trace`
    /// names the session from a mask pasted anywhere. Applies to every masked file, code and
    /// configuration included (the code is inside the mask; nothing else changes). A mask
    /// shorter than its label loses the code. Default false.
    pub mask_codes: bool,
}

/// `[decoys]`: credential-shaped canary files the view shows and the real folder never holds
/// (see `crate::decoy`). Opening one is a critical audit event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoysCfg {
    /// Place the decoys. Default false.
    pub enabled: bool,
    /// Their paths relative to the folder (plain names, no `..`); directories above them that
    /// the real folder lacks are shown too. Empty = `.aws/credentials`, `.env.production`,
    /// `.ssh/id_ed25519`.
    pub paths: Vec<String>,
    /// Opening (or reading) a decoy trips the damage breaker: every change and every further
    /// open is refused until `veilfs resume`. Default false.
    pub trip_breaker: bool,
}

/// Policy for files the redaction engine cannot vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unscannable {
    /// Refuse to open them (EACCES) unless they match `unscannable_allow`.
    #[default]
    Deny,
    /// Serve them as they are.
    Allow,
}

/// How writes through the mount are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// Every mutating operation answers EROFS.
    #[default]
    ReadOnly,
    /// Writes go to the real folder after the pre-image is stored and journaled.
    Snapshot,
    /// Writes go to a copy-on-write upper layer; the real folder changes only on `veilfs commit`.
    Overlay,
}

impl WriteMode {
    /// Every mode, in order of how much they allow.
    pub const ALL: [WriteMode; 3] = [WriteMode::ReadOnly, WriteMode::Snapshot, WriteMode::Overlay];

    /// The spelling used in profiles and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::ReadOnly => "read-only",
            WriteMode::Snapshot => "snapshot",
            WriteMode::Overlay => "overlay",
        }
    }
}

impl fmt::Display for WriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`WriteMode::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown write mode `{0}`, expected one of `read-only`, `snapshot`, `overlay`")]
pub struct ParseWriteModeError(pub String);

impl FromStr for WriteMode {
    type Err = ParseWriteModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" | "readonly" | "ro" => Ok(WriteMode::ReadOnly),
            "snapshot" => Ok(WriteMode::Snapshot),
            "overlay" => Ok(WriteMode::Overlay),
            other => Err(ParseWriteModeError(other.to_string())),
        }
    }
}

/// `[write]`: whether and how the agent may change things.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteCfg {
    pub mode: WriteMode,
    /// Patterns of paths that may change; empty = the whole visible tree (when mode != read-only).
    pub writable: Vec<String>,
    /// Files bigger than this are not snapshotted in place; their writes divert to the overlay.
    #[serde(deserialize_with = "size::de", serialize_with = "size::ser")]
    pub snapshot_max_size: u64,
    /// Snapshot/overlay store; `None` = `$XDG_DATA_HOME/veilfs/<scope-id>`. Relative paths
    /// resolve against the profile file's directory.
    #[serde(
        serialize_with = "paths::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub store: Option<PathBuf>,
    /// Upper bound on the store size.
    #[serde(
        deserialize_with = "size::de_opt",
        serialize_with = "size::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub store_quota: Option<u64>,
    /// Snapshot mode: when a write to an existing file reaches the real folder (see
    /// [`ApplyMode`]).
    pub apply: ApplyMode,
    /// Writes through an open file go from the kernel straight to the real file (FUSE
    /// passthrough, root mounts), when nothing needs to see them. Off by default: a file opened
    /// before `veilfs revoke`, a breaker trip or the mount's end keeps writing to the real
    /// folder through that open file (its pre-image was captured at the open).
    pub passthrough_writes: bool,
}

/// When a snapshot-mode write to an existing file reaches the real folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyMode {
    /// At the write: the pre-image is made durable (one journal flush) at the write-open.
    #[default]
    Immediate,
    /// Later, in batches: the first write-open of a small file lands in a private copy and
    /// returns; after the last writer closes it, a batch's pre-images share one journal flush
    /// and are then copied into the real files. `fsync`, namespace changes and unmount apply
    /// synchronously.
    Deferred,
}

impl Default for WriteCfg {
    fn default() -> Self {
        WriteCfg {
            mode: WriteMode::ReadOnly,
            writable: Vec::new(),
            snapshot_max_size: GIB,
            store: None,
            store_quota: None,
            apply: ApplyMode::Immediate,
            passthrough_writes: false,
        }
    }
}

/// `[cache]`: kernel cache lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheCfg {
    /// Kernel entry and attribute TTL in milliseconds (default 1000).
    pub ttl_ms: u64,
    /// Read-only mounts: watch the folder (inotify) and push outside changes to the kernel's
    /// caches, which makes the longer `watched_ttl_ms` safe (default true; no effect with
    /// `ttl_ms = 0`).
    pub watch: bool,
    /// The TTL while the watcher runs (default 600000, ten minutes: after it expires the
    /// kernel asks again for every name a reader walks, a LOOKUP per file of a second `grep -r`).
    /// Falls back to `ttl_ms` when the folder cannot be watched (e.g. more directories than
    /// inotify watches), or stops being watched (a new directory past the watch limit).
    pub watched_ttl_ms: u64,
    /// Snapshot and overlay mounts: the kernel entry and attribute TTL (default 1000; 0 asks
    /// the mount at every path walk and stat, about three times the FUSE requests of writes).
    /// Changes made through the mount update the kernel's caches themselves; a name an outside
    /// writer moves away is caught at the next change or open through it (ESTALE, and the
    /// kernel looks it up again).
    pub write_ttl_ms: u64,
    /// Read-only mounts while the watcher runs: skip the kernel's per-file OPEN/RELEASE and
    /// OPENDIR/RELEASEDIR round trips (FUSE no-open mode; default true). Trade-offs: a file the
    /// profile refuses to serve opens but every read of it fails with EACCES, and big clean files
    /// are read through veilfs into the page cache instead of by passthrough.
    pub no_open: bool,
    /// Save scan verdicts in the store directory at unmount and load them at the next mount of
    /// the same folder, so unchanged files are not scanned again (default true).
    pub persist_scans: bool,
    /// Read-only mounts with redaction: threads that scan the files a directory listing shows
    /// before the agent reads them (the first `grep -r` of a tree); 0 = off (default: 1, see
    /// benches/README.md, "Session 15": one thread paid on a quiet and on a busy machine).
    pub scan_ahead: usize,
}

impl Default for CacheCfg {
    fn default() -> Self {
        CacheCfg {
            ttl_ms: 1000,
            watch: true,
            watched_ttl_ms: 600_000,
            write_ttl_ms: 1000,
            no_open: true,
            persist_scans: true,
            scan_ahead: 1,
        }
    }
}

/// `[breaker]`: the damage breaker's rate limits (see `crate::breaker`). Over `window_secs`,
/// more than `max_deletes` deletes, `max_renames` renames or `max_overwritten_bytes` of existing
/// content replaced or cut, or more than `max_reads_per_minute` distinct files opened for
/// reading in 60 s, trips it: the mount refuses every change (and, for a mass read, every open)
/// until `veilfs resume MOUNTPOINT`. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerCfg {
    pub window_secs: u64,
    pub max_deletes: u64,
    pub max_renames: u64,
    #[serde(deserialize_with = "size::de", serialize_with = "size::ser")]
    pub max_overwritten_bytes: u64,
    pub max_reads_per_minute: u64,
}

impl Default for BreakerCfg {
    fn default() -> Self {
        BreakerCfg {
            window_secs: 10,
            max_deletes: 300,
            max_renames: 300,
            max_overwritten_bytes: GIB,
            max_reads_per_minute: 0,
        }
    }
}

/// An operation kind `[approval] ops` can hold for a person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalOp {
    /// unlink, rmdir.
    Delete,
    /// rename (and exchange).
    Rename,
    /// Replacing existing content wholesale: open for write with O_TRUNC, truncate by setattr.
    Overwrite,
    /// A mode change.
    Chmod,
    /// A new hard link.
    Link,
    /// Any other change (create, write-open, mkdir, symlink, setattr) under `[approval] paths`.
    Write,
}

impl ApprovalOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalOp::Delete => "delete",
            ApprovalOp::Rename => "rename",
            ApprovalOp::Overwrite => "overwrite",
            ApprovalOp::Chmod => "chmod",
            ApprovalOp::Link => "link",
            ApprovalOp::Write => "write",
        }
    }
}

impl fmt::Display for ApprovalOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delete" => Ok(ApprovalOp::Delete),
            "rename" => Ok(ApprovalOp::Rename),
            "overwrite" => Ok(ApprovalOp::Overwrite),
            "chmod" => Ok(ApprovalOp::Chmod),
            "link" => Ok(ApprovalOp::Link),
            "write" => Ok(ApprovalOp::Write),
            o => Err(format!(
                "unknown operation `{o}`, expected delete, rename, overwrite, chmod, link or write"
            )),
        }
    }
}

/// `[approval]`: operations that wait for a person (`veilfs approve ID` / `veilfs deny ID`) in
/// writable modes. `ops` lists kinds that always ask; any change under one of `paths`
/// (gitignore-like patterns, as `write.writable`) asks too. A request nobody answers within
/// `timeout_secs` is refused (EACCES).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalCfg {
    pub ops: Vec<ApprovalOp>,
    pub paths: Vec<String>,
    pub timeout_secs: u64,
}

impl Default for ApprovalCfg {
    fn default() -> Self {
        ApprovalCfg {
            ops: Vec::new(),
            paths: Vec::new(),
            timeout_secs: 120,
        }
    }
}

/// `[network]`: what a command under `veilfs run --sandbox` may connect to, through veilfs'
/// filtering proxy (see `egress`). `allow` lists destinations (`host`, `host:port`,
/// `*.domain[:port]`, `https://host`); empty (the default) means no network at all and no
/// proxy. Under a manifest, only destinations both allow. `proxy` (`http://host:port`) sends
/// every allowed request on through an upstream (corporate) proxy instead of connecting
/// directly.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkCfg {
    /// Destinations the agent may reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Upstream proxy for allowed requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// `[guardrails]`: limits on the grant itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailsCfg {
    /// The longest a mount may live (`"8h"`, `"90m"`): `mount --expires` may not ask for more,
    /// and a mount without `--expires` gets this.
    #[serde(
        deserialize_with = "duration::de_opt",
        serialize_with = "duration::ser_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_expires: Option<std::time::Duration>,
}

/// Durations in a profile: `"8h"`, `"90m"`, `"1h30m"`, `"45s"` (jiff's friendly format).
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn parse(s: &str) -> Result<Duration, String> {
        let d: jiff::SignedDuration = s
            .trim()
            .parse()
            .map_err(|e| format!("invalid duration `{s}` (want e.g. \"8h\", \"90m\"): {e}"))?;
        Duration::try_from(d)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("invalid duration `{s}`: must be positive"))
    }

    pub(crate) fn format(d: Duration) -> String {
        format!(
            "{:#}",
            jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
        )
    }

    pub(crate) fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Some).map_err(serde::de::Error::custom)
    }

    pub(crate) fn ser_opt<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }
}

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;

mod paths {
    use serde::Serializer;
    use serde::ser::SerializeSeq;
    use std::path::PathBuf;

    pub(super) fn ser_vec<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for p in v {
            seq.serialize_element(&p.to_string_lossy())?;
        }
        seq.end()
    }

    pub(super) fn ser_opt<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_none(),
        }
    }
}
