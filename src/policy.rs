//! Pure policy decisions compiled from a [`Profile`]: is this entry visible, may it change, may it
//! be served unscanned. No I/O, no FUSE: the `fs` layer asks, this module answers, and the unit
//! tests below pin the semantics.
//!
//! # Why per-entry decisions
//!
//! A deny must hold for files created, renamed or hard-linked after the mount started, so nothing
//! here walks the tree: every lookup asks [`Policy::visibility`] about one entry whose parent is
//! already known to be visible. The globs are compiled once into [`GlobSet`]s; a query builds a
//! borrowed [`Candidate`] from the path bytes and reuses a thread-local match buffer, so the hot
//! path does not allocate (a `Hidden` verdict allocates its reason, which is the rare path).
//!
//! # Pattern language (gitignore-like)
//!
//! Patterns are matched against the path relative to the scope root (or, for `[[visibility.dir]]`
//! rules, relative to that directory), with `/` separators, as raw bytes (non-UTF-8 names work).
//! `*`, `?` and `[...]` never match `/`; `**` matches any number of directories.
//!
//! - `*.pem`, `.env*`, `id_rsa*`: a pattern **without** `/` matches the entry's name at any depth.
//! - `/build`, `docs/private`, `src/**/*.bak`: a pattern with a leading or inner `/` is anchored at
//!   the root (of the scope, or of the dir rule); a leading `/` is only an anchor and is removed.
//! - `.ssh/`, `target/`: a trailing `/` matches directories only. Symlinks count as directories
//!   here (conservatively: a symlink may stand for a directory), regular files do not.
//! - `!pattern` re-includes: the **last** matching pattern decides, as in gitignore, so
//!   `[".env*", "!.env.example"]` hides `.env` and `.env.local` but shows `.env.example`.
//!   As in gitignore, a file inside a hidden directory cannot be re-included: the directory is
//!   gone, so nothing below it is ever looked up.
//! - Matching is **ASCII case-insensitive** (unlike git): `*.pem` hides `SERVER.PEM`, `*.pdf`
//!   allows `SCAN.PDF`. Hiding a file because of its case-folded name is the safe error for a
//!   deny list, and documents from Windows machines often carry upper-case extensions.
//! - `\` escapes the next character (`\!important.txt`, `\*`).
//!
//! Why not `ignore::gitignore`: it would replace only the ~100 lines here that sit on top of
//! `globset` (pattern parsing and "last match wins"), and its file semantics are wrong for a deny
//! list written in TOML: a pattern starting with `#` becomes a comment and trailing spaces are
//! trimmed, so `"#secrets#"` or `"key "` would silently hide nothing. The subtree rule below
//! also needs the index of the last matching pattern for every ancestor, which `Gitignore`
//! gives only as a `Glob` per query.
//!
//! # Layers
//!
//! `visibility.deny` is evaluated first, then the `[[visibility.dir]]` rules that contain the entry,
//! from the shallowest directory to the deepest (file order among equals); the last matching
//! pattern over all layers decides, so a deeper rule can both hide more and re-include (`!x`)
//! what a shallower one hid, like nested `.gitignore` files.
//!
//! Allow-lists (`visibility.allow` and a dir rule's `allow`) only restrict **files, symlinks
//! and special files**; directories stay traversable unless denied (so an empty directory can be
//! visible). Only the most specific non-empty allow-list for an entry is consulted (the deepest
//! dir rule that has one, else the global one). Allow-lists, `write.writable` and
//! `redaction.unscannable_allow` share one *subtree rule*: walking down from the top, a directory
//! whose last matching pattern is negated closes its whole subtree; one that matches positively
//! opens it; the entry itself, if any pattern matches it, decides for itself, otherwise the
//! innermost open directory does. So `allow = ["docs/", "*.md", "!docs/drafts/"]` shows every
//! file under `docs/` except `docs/drafts/`, plus Markdown files anywhere else; and
//! `writable = ["*.rs", "!.git/"]` never makes `.git/x.rs` writable. Because `writable` and
//! `unscannable_allow` are asked without an entry kind, a trailing-`/` pattern there also
//! matches the path itself.
//!
//! # Order of checks in [`Policy::visibility`]
//!
//! root (always visible) → deny patterns → special files → escaping symlinks → allow-list →
//! `max_file_size` (regular files only). The first failing check is the reported reason.
//!
//! # Contract for callers (the `fs` layer)
//!
//! - Ask [`Policy::visibility`] for every lookup and every readdir entry, from the entry's
//!   *current* relative path, and never descend into a hidden directory; use
//!   [`Policy::path_visibility`] when the parent's visibility is not known.
//! - Pass the `readlink` target for symlinks: `None` counts as escaping (hidden) while
//!   `hide_escaping_symlinks` is on.
//! - A name that would be hidden must not be creatable or a rename target either (check the new
//!   name with `visibility` before `create`/`mkdir`/`symlink`/`link`/`rename`): otherwise an
//!   agent could clobber a hidden real file (`mv x .env`) or create files it cannot see.
//! - [`Policy::writable`] assumes the path is visible; check both.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use globset::{Candidate, GlobSet, GlobSetBuilder};

use crate::pattern::{Pattern, compile_pattern, normalize_dir};
use crate::profile::{Profile, ProfileError, Unscannable, WriteMode};

/// What kind of directory entry is being asked about (from `lstat`, never following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Device, fifo or socket.
    Special,
}

/// Why an entry is hidden. `Display` gives a reason an agent or admin can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hidden {
    /// A deny pattern matched (the pattern as written in the profile).
    Denied {
        /// The pattern.
        pattern: String,
    },
    /// An allow-list is in force and the file matches none of it.
    NotAllowed,
    /// A regular file above `max_file_size`.
    TooLarge {
        /// The file's size.
        size: u64,
        /// `max_file_size`.
        max: u64,
    },
    /// A device, fifo or socket while `hide_special_files` is on.
    Special,
    /// A symlink whose target leaves the scope while `hide_escaping_symlinks` is on.
    EscapingSymlink,
    /// The agent's manifest (`--manifest`) does not ask to read or write it.
    NotInManifest,
}

impl fmt::Display for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hidden::Denied { pattern } => write!(f, "denied by pattern `{pattern}`"),
            Hidden::NotAllowed => f.write_str("not in the profile's allow-list"),
            Hidden::TooLarge { size, max } => {
                write!(
                    f,
                    "file too large ({size} bytes > max_file_size {max} bytes)"
                )
            }
            Hidden::Special => f.write_str("special file (device, fifo or socket)"),
            Hidden::EscapingSymlink => f.write_str("symlink pointing outside the scope"),
            Hidden::NotInManifest => f.write_str("not asked for by the agent's manifest"),
        }
    }
}

/// An ordered list of patterns, compiled into one `GlobSet`.
#[derive(Debug, Clone)]
struct Rules {
    set: GlobSet,
    pats: Vec<Pattern>,
}

thread_local! {
    static MATCHES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Rules {
    fn new(field: &str, origin: &str, pats: &[String]) -> Result<Rules, ProfileError> {
        let mut compiled = Vec::with_capacity(pats.len());
        let mut b = GlobSetBuilder::new();
        for (i, p) in pats.iter().enumerate() {
            let c = compile_pattern(p).map_err(|m| ProfileError::Invalid {
                origin: origin.to_string(),
                line: 0,
                column: 0,
                field: format!("{field}[{i}]"),
                message: format!("invalid pattern `{p}`: {m}"),
            })?;
            b.add(c.glob.clone());
            compiled.push(c);
        }
        let set = b.build().map_err(|e| ProfileError::Invalid {
            origin: origin.to_string(),
            line: 0,
            column: 0,
            field: field.to_string(),
            message: e.to_string(),
        })?;
        Ok(Rules {
            set,
            pats: compiled,
        })
    }

    fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    /// Index of the last pattern matching `path`; dir-only patterns count only if `dir_like`.
    fn last_match(&self, path: &Path, dir_like: bool) -> Option<usize> {
        if self.pats.is_empty() || path.as_os_str().is_empty() {
            return None;
        }
        let cand = Candidate::new(path);
        let pick = |m: &Vec<usize>| {
            m.iter()
                .copied()
                .filter(|&i| dir_like || !self.pats[i].dir_only)
                .max()
        };
        MATCHES.with(|buf| match buf.try_borrow_mut() {
            Ok(mut m) => {
                self.set.matches_candidate_into(&cand, &mut m);
                pick(&m)
            }
            Err(_) => pick(&self.set.matches_candidate(&cand)),
        })
    }

    /// The subtree rule used by allow-lists, `writable` and `unscannable_allow`. Walk the
    /// ancestors of `path` from the top (as directories): one whose last matching pattern is
    /// negated closes its whole subtree (`false`, like an excluded directory in gitignore); one
    /// matching positively opens its subtree. Then `path` itself: if a pattern matches it, that
    /// decides; otherwise the innermost open ancestor does. `self_dir_like` says whether
    /// dir-only patterns may match `path` itself.
    fn subtree_allows(&self, path: &Path, self_dir_like: bool) -> bool {
        if self.pats.is_empty() {
            return false;
        }
        let bytes = path.as_os_str().as_bytes();
        let mut open = false;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'/' && i > 0 {
                let anc = Path::new(OsStr::from_bytes(&bytes[..i]));
                if let Some(m) = self.last_match(anc, true) {
                    if self.pats[m].negated {
                        return false;
                    }
                    open = true;
                }
            }
        }
        match self.last_match(path, self_dir_like) {
            Some(m) => !self.pats[m].negated,
            None => open,
        }
    }
}

/// Patterns that apply below one directory (`base` = "" for the profile-wide lists).
#[derive(Debug, Clone)]
struct Layer {
    base: std::path::PathBuf,
    rules: Rules,
}

impl Layer {
    /// `rel` relative to this layer's base, if `rel` is strictly below it.
    fn relative<'a>(&self, rel: &'a Path) -> Option<&'a Path> {
        let r = rel.strip_prefix(&self.base).ok()?;
        (!r.as_os_str().is_empty()).then_some(r)
    }
}

/// A profile compiled for fast queries. `Send + Sync`; clone-free to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Global deny first, then dir rules by depth (stable).
    deny: Vec<Layer>,
    /// Non-empty allow-lists, global first, then dir rules by depth (stable).
    allow: Vec<Layer>,
    max_file_size: Option<u64>,
    hide_special: bool,
    hide_escaping: bool,
    mode: WriteMode,
    writable: Rules,
    /// `[approval]`: kinds that always wait for a person, and paths any change of which does.
    approve_ops: Vec<crate::profile::ApprovalOp>,
    approve_paths: Rules,
    unscannable_all: bool,
    unscannable_allow: Rules,
    opaque: Rules,
    documents: Rules,
    refuse_macros: bool,
    metadata: Rules,
    /// `present.text`: refused themselves, shown as a `NAME.txt` text view.
    text: Rules,
    /// The agent's manifest, intersected with the profile ([`Policy::with_manifest`]).
    grant: Option<Grant>,
}

/// What an agent's manifest asks for: it narrows the profile, never widens it.
#[derive(Debug, Clone)]
struct Grant {
    read: Rules,
    write: Rules,
}

impl Grant {
    /// Visible under the manifest: it asks to read or to write the path (writing needs seeing).
    fn reads(&self, rel: &Path, dir_like: bool) -> bool {
        self.read.subtree_allows(rel, dir_like) || self.write.subtree_allows(rel, dir_like)
    }
}

impl Policy {
    /// Compile a profile. Profiles from [`Profile::load`]/[`Profile::parse`] are already validated;
    /// a hand-built one may still fail here (its errors have line and column 0).
    pub fn new(profile: &Profile) -> Result<Policy, ProfileError> {
        let origin = match &profile.source {
            Some(p) => p.display().to_string(),
            None => format!("<profile {}>", profile.name),
        };
        let vis = &profile.visibility;
        let mut deny = vec![Layer {
            base: Default::default(),
            rules: Rules::new("visibility.deny", &origin, &vis.deny)?,
        }];
        let mut allow = Vec::new();
        if !vis.allow.is_empty() {
            allow.push(Layer {
                base: Default::default(),
                rules: Rules::new("visibility.allow", &origin, &vis.allow)?,
            });
        }
        let mut dirs = Vec::new();
        for (i, d) in vis.dirs.iter().enumerate() {
            let base = normalize_dir(&d.path).map_err(|m| ProfileError::Invalid {
                origin: origin.clone(),
                line: 0,
                column: 0,
                field: format!("visibility.dir[{i}].path"),
                message: format!("invalid directory `{}`: {m}", d.path),
            })?;
            let depth = Path::new(&base).components().count();
            let deny_rules = Rules::new(&format!("visibility.dir[{i}].deny"), &origin, &d.deny)?;
            let allow_rules = Rules::new(&format!("visibility.dir[{i}].allow"), &origin, &d.allow)?;
            dirs.push((base, depth, deny_rules, allow_rules));
        }
        dirs.sort_by_key(|d| d.1);
        for (base, _, d, a) in dirs {
            let base = std::path::PathBuf::from(base);
            if !d.is_empty() {
                deny.push(Layer {
                    base: base.clone(),
                    rules: d,
                });
            }
            if !a.is_empty() {
                allow.push(Layer { base, rules: a });
            }
        }
        let red = &profile.redaction;
        Ok(Policy {
            deny,
            allow,
            max_file_size: vis.max_file_size,
            hide_special: vis.hide_special_files,
            hide_escaping: vis.hide_escaping_symlinks,
            mode: profile.write.mode,
            writable: Rules::new("write.writable", &origin, &profile.write.writable)?,
            approve_ops: profile.approval.ops.clone(),
            approve_paths: Rules::new("approval.paths", &origin, &profile.approval.paths)?,
            unscannable_all: red.unscannable == Unscannable::Allow,
            unscannable_allow: Rules::new(
                "redaction.unscannable_allow",
                &origin,
                &red.unscannable_allow,
            )?,
            opaque: Rules::new("redaction.opaque", &origin, &red.opaque)?,
            grant: None,
            documents: Rules::new("redaction.documents", &origin, &red.documents)?,
            refuse_macros: red.refuse_macros,
            metadata: Rules::new("present.metadata", &origin, &profile.present.metadata)?,
            text: Rules::new("present.text", &origin, &profile.present.text)?,
        })
    }

    /// The intersection of this policy and an agent's manifest: a file is visible only if the
    /// profile shows it AND the manifest asks to read or write it; writable only if the profile
    /// lets it change AND the manifest asks to write it. Directories stay traversable (like
    /// allow-lists), so a granted file deep in the tree can be reached. Never more than the
    /// profile: both checks run on top of every profile check, and a read-only profile stays
    /// read-only.
    ///
    /// `read` and `write` are the manifest's `capabilities.files` globs.
    pub(crate) fn with_manifest(
        mut self,
        read: &[String],
        write: &[String],
        origin: &str,
    ) -> Result<Policy, ProfileError> {
        self.grant = Some(Grant {
            read: Rules::new("capabilities.files.read", origin, read)?,
            write: Rules::new("capabilities.files.write", origin, write)?,
        });
        Ok(self)
    }

    /// Does anything besides `max_file_size` hide files (deny patterns, allow-lists)? For the
    /// consent screen's "granted, except ...".
    pub fn has_read_limits(&self) -> bool {
        self.deny.iter().any(|l| !l.rules.is_empty()) || !self.allow.is_empty()
    }

    /// Visibility of ONE entry whose parent directory is already known to be visible.
    ///
    /// `rel` is relative to the scope root (`""` = the root, always visible), `/`-separated, raw
    /// bytes allowed. `size` is the `st_size` (used for regular files only). `symlink_target` is
    /// the link's target for symlinks; a symlink without one is treated as escaping (fail closed).
    pub fn visibility(
        &self,
        rel: &Path,
        kind: EntryKind,
        size: u64,
        symlink_target: Option<&Path>,
    ) -> Result<(), Hidden> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let dir_like = matches!(kind, EntryKind::Dir | EntryKind::Symlink);
        // Deny layers: the last match over all layers wins.
        let mut verdict: Option<&Pattern> = None;
        for layer in &self.deny {
            if let Some(r) = layer.relative(rel)
                && let Some(i) = layer.rules.last_match(r, dir_like)
            {
                verdict = Some(&layer.rules.pats[i]);
            }
        }
        if let Some(p) = verdict
            && !p.negated
        {
            return Err(Hidden::Denied {
                pattern: p.text.clone(),
            });
        }
        match kind {
            EntryKind::Special if self.hide_special => return Err(Hidden::Special),
            EntryKind::Symlink if self.hide_escaping => match symlink_target {
                Some(t) if !symlink_escapes(rel, t) => {}
                _ => return Err(Hidden::EscapingSymlink),
            },
            _ => {}
        }
        if matches!(
            kind,
            EntryKind::File | EntryKind::Symlink | EntryKind::Special
        ) {
            // The most specific allow-list that covers `rel`.
            if let Some(layer) = self.allow.iter().rev().find(|l| l.relative(rel).is_some()) {
                let r = layer.relative(rel).unwrap_or(rel);
                if !layer.rules.subtree_allows(r, kind == EntryKind::Symlink) {
                    return Err(Hidden::NotAllowed);
                }
            }
        }
        if let Some(g) = &self.grant
            && kind != EntryKind::Dir
            && !g.reads(rel, kind == EntryKind::Symlink)
        {
            return Err(Hidden::NotInManifest);
        }
        if kind == EntryKind::File
            && let Some(max) = self.max_file_size
            && size > max
        {
            return Err(Hidden::TooLarge { size, max });
        }
        Ok(())
    }

    /// Checks every ancestor of `rel` as a directory (root first), then the entry itself. For
    /// `scan` and for callers that do not know whether the parent is visible.
    pub fn path_visibility(
        &self,
        rel: &Path,
        kind: EntryKind,
        size: u64,
        symlink_target: Option<&Path>,
    ) -> Result<(), Hidden> {
        let bytes = rel.as_os_str().as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'/' && i > 0 {
                let anc = Path::new(OsStr::from_bytes(&bytes[..i]));
                self.visibility(anc, EntryKind::Dir, 0, None)?;
            }
        }
        self.visibility(rel, kind, size, symlink_target)
    }

    /// The write mode in force.
    /// Does a verdict depend on symlink targets? When not, callers can skip the `readlink`
    /// (which would touch the link's atime).
    pub fn needs_symlink_targets(&self) -> bool {
        self.hide_escaping
    }

    /// The write mode the profile asks for.
    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// The same policy with another write mode (`--mode` on the command line).
    pub fn with_mode(mut self, mode: WriteMode) -> Policy {
        self.mode = mode;
        self
    }

    /// May this (visible) path be changed: created, written, truncated, removed, renamed to or
    /// from? Always false in read-only mode; otherwise true when `write.writable` is empty, or
    /// when the subtree rule (see the module docs) allows it.
    /// The root itself (its mode, times, xattrs: the kernel never renames or removes it) is
    /// writable only when the whole tree is.
    pub fn writable(&self, rel: &Path) -> bool {
        if self.mode == WriteMode::ReadOnly {
            return false;
        }
        if let Some(g) = &self.grant
            && !g.write.subtree_allows(rel, true)
        {
            return false;
        }
        if rel.as_os_str().is_empty() {
            return self.writable.is_empty();
        }
        self.writable.is_empty() || self.writable.subtree_allows(rel, true)
    }

    /// Must a person confirm `op` on these paths (`[approval]`)? A change under an approval
    /// path asks whatever its kind; `ops` kinds ask everywhere. Renames pass both names.
    pub fn needs_approval(&self, op: crate::profile::ApprovalOp, paths: &[&Path]) -> bool {
        self.approve_ops.contains(&op)
            || paths
                .iter()
                .any(|p| self.approve_paths.subtree_allows(p, true))
    }

    /// May this file be served unscanned (compressed, encrypted or opaque content, or above
    /// `max_scan_size`)? True when `unscannable = "allow"`, or when `unscannable_allow` covers
    /// the path.
    pub fn unscannable_allowed(&self, rel: &Path) -> bool {
        self.unscannable_all || self.unscannable_allow.subtree_allows(rel, true)
    }

    /// Is this file's binary content not to be looked into (`redaction.opaque` covers the path)?
    /// Such a binary is unscannable; any other binary is scanned through its printable runs.
    pub fn opaque(&self, rel: &Path) -> bool {
        self.opaque.subtree_allows(rel, true)
    }

    /// Is this file an office document to serve rebuilt with its secrets masked inside
    /// (`redaction.documents` covers the path)? See [`crate::redact::document`].
    pub fn document(&self, rel: &Path) -> bool {
        !self.documents.is_empty() && self.documents.subtree_allows(rel, true)
    }

    /// Does the profile show any file as a metadata stub?
    pub fn presents_any_metadata(&self) -> bool {
        !self.metadata.is_empty()
    }

    /// Is this file shown as a metadata stub instead of its content (`present.metadata`)?
    pub fn metadata(&self, rel: &Path) -> bool {
        !self.metadata.is_empty() && self.metadata.subtree_allows(rel, true)
    }

    /// Does the profile show any file as text (`present.text`)?
    pub fn presents_any_text(&self) -> bool {
        !self.text.is_empty()
    }

    /// Is this file refused and shown as a `NAME.txt` text view instead (`present.text`)?
    pub fn text(&self, rel: &Path) -> bool {
        !self.text.is_empty() && self.text.subtree_allows(rel, true)
    }

    /// Are documents carrying macros refused (`redaction.refuse_macros`)?
    pub fn refuse_macros(&self) -> bool {
        self.refuse_macros
    }
}

/// Pure lexical check: does a symlink at `link_rel` with `target` resolve outside the scope?
///
/// Absolute targets always escape. A relative target is applied to the link's parent directory
/// component by component and escapes as soon as a `..` climbs above the scope root, even if it
/// would come back down later (`../scope/x`: the scope's own name is unknown here). Symlinks
/// inside the target are not followed (this is lexical); each of them is checked on its own when
/// the kernel resolves it through the mount. An empty target does not escape (it resolves to
/// nothing).
pub(crate) fn symlink_escapes(link_rel: &Path, target: &Path) -> bool {
    if target.has_root() {
        return true;
    }
    let mut depth: usize = 0;
    if let Some(parent) = link_rel.parent() {
        for c in parent.components() {
            match c {
                Component::Normal(_) => depth += 1,
                Component::ParentDir => depth = depth.saturating_sub(1),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {}
            }
        }
    }
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DirRules, Profile};
    use std::os::unix::ffi::OsStrExt;

    fn policy(toml: &str) -> Policy {
        let p = Profile::parse(&format!("version = 1\n{toml}"), "test.toml").unwrap();
        Policy::new(&p).unwrap()
    }

    #[test]
    fn approval_asks_for_listed_kinds_everywhere_and_for_anything_under_its_paths() {
        use crate::profile::ApprovalOp as Op;
        let p = policy(
            "[write]\nmode = \"snapshot\"\n[approval]\nops = [\"delete\"]\npaths = [\"deploy/\", \"*.sh\"]\n",
        );
        let ask = |op, paths: &[&str]| {
            let v: Vec<&Path> = paths.iter().map(Path::new).collect();
            p.needs_approval(op, &v)
        };
        assert!(ask(Op::Delete, &["src/a.rs"]));
        assert!(!ask(Op::Rename, &["src/a.rs", "src/b.rs"]));
        assert!(!ask(Op::Write, &["src/a.rs"]));
        assert!(ask(Op::Write, &["deploy/prod/x.yaml"]));
        assert!(ask(Op::Chmod, &["tools/run.sh"]));
        // Either name of a rename under an approval path asks.
        assert!(ask(Op::Rename, &["src/a.rs", "deploy/a.rs"]));
        assert!(!ask(Op::Write, &["deployment/x"]));
        assert!(!policy("").needs_approval(Op::Delete, &[Path::new("a")]));
    }

    fn deny(pats: &[&str]) -> Policy {
        let mut p = Profile::parse("version = 1", "t").unwrap();
        p.visibility.deny = pats.iter().map(|s| s.to_string()).collect();
        Policy::new(&p).unwrap()
    }

    fn file(p: &Policy, rel: &str) -> Result<(), Hidden> {
        p.path_visibility(Path::new(rel), EntryKind::File, 10, None)
    }

    fn dir(p: &Policy, rel: &str) -> Result<(), Hidden> {
        p.path_visibility(Path::new(rel), EntryKind::Dir, 0, None)
    }

    fn denied(pat: &str) -> Result<(), Hidden> {
        Err(Hidden::Denied {
            pattern: pat.to_string(),
        })
    }

    #[test]
    fn policy_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Policy>();
    }

    #[test]
    fn root_is_always_visible() {
        let p = policy("[visibility]\ndeny = [\"*\"]\nallow = [\"nothing\"]\n");
        assert_eq!(p.visibility(Path::new(""), EntryKind::Dir, 0, None), Ok(()));
        assert_eq!(dir(&p, ""), Ok(()));
    }

    #[test]
    fn basename_pattern_matches_at_any_depth() {
        let p = deny(&["*.pem", ".env*", "id_rsa*"]);
        assert_eq!(file(&p, "a.pem"), denied("*.pem"));
        assert_eq!(file(&p, "x/y/z/a.pem"), denied("*.pem"));
        assert_eq!(file(&p, ".env"), denied(".env*"));
        assert_eq!(file(&p, "app/.env.local"), denied(".env*"));
        assert_eq!(file(&p, "home/.ssh/id_rsa.pub"), denied("id_rsa*"));
        assert_eq!(file(&p, "a.pem.txt"), Ok(()));
        assert_eq!(file(&p, "my.env"), Ok(()));
        // `*` does not cross `/`: a directory named x.pem hides, but "x.pem/y" is reported by dir
        assert_eq!(file(&p, "x.pem/y"), denied("*.pem"));
    }

    #[test]
    fn matching_is_case_insensitive() {
        let p = deny(&["*.pem", ".ssh/"]);
        assert_eq!(file(&p, "certs/SERVER.PEM"), denied("*.pem"));
        assert_eq!(dir(&p, ".SSH"), denied(".ssh/"));
    }

    #[test]
    fn anchored_patterns_match_from_the_root_only() {
        let p = deny(&["/build", "docs/private", "src/*.bak"]);
        assert_eq!(dir(&p, "build"), denied("/build"));
        assert_eq!(file(&p, "build"), denied("/build"));
        assert_eq!(dir(&p, "src/build"), Ok(()));
        assert_eq!(file(&p, "docs/private"), denied("docs/private"));
        assert_eq!(file(&p, "docs/private/x.md"), denied("docs/private"));
        assert_eq!(file(&p, "a/docs/private"), Ok(()));
        assert_eq!(file(&p, "src/x.bak"), denied("src/*.bak"));
        assert_eq!(file(&p, "src/a/x.bak"), Ok(()), "`*` never matches `/`");
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        let p = deny(&[".ssh/", ".aws/"]);
        assert_eq!(dir(&p, ".ssh"), denied(".ssh/"));
        assert_eq!(dir(&p, "home/u/.aws"), denied(".aws/"));
        assert_eq!(
            file(&p, ".ssh"),
            Ok(()),
            "a FILE named .ssh is not a directory"
        );
        assert_eq!(
            file(&p, ".ssh/id_ed25519"),
            denied(".ssh/"),
            "subtree hidden"
        );
        // Symlinks count as directories for dir-only patterns (conservative).
        assert_eq!(
            p.visibility(
                Path::new(".ssh"),
                EntryKind::Symlink,
                0,
                Some(Path::new("x"))
            ),
            denied(".ssh/")
        );
    }

    #[test]
    fn double_star() {
        let p = deny(&["**/.kube/config", "logs/**", "a/**/z"]);
        assert_eq!(file(&p, ".kube/config"), denied("**/.kube/config"));
        assert_eq!(file(&p, "h/u/.kube/config"), denied("**/.kube/config"));
        assert_eq!(file(&p, "h/u/.kube/other"), Ok(()));
        assert_eq!(
            dir(&p, "logs"),
            Ok(()),
            "`logs/**` matches the contents, not logs"
        );
        assert_eq!(file(&p, "logs/a/b.log"), denied("logs/**"));
        assert_eq!(file(&p, "a/z"), denied("a/**/z"));
        assert_eq!(file(&p, "a/b/c/z"), denied("a/**/z"));
    }

    #[test]
    fn negation_last_match_wins() {
        let p = deny(&[".env*", "!.env.example"]);
        assert_eq!(file(&p, ".env"), denied(".env*"));
        assert_eq!(file(&p, "web/.env.production"), denied(".env*"));
        assert_eq!(file(&p, ".env.example"), Ok(()));
        assert_eq!(file(&p, "web/.env.example"), Ok(()));
        // Order matters: a later positive pattern wins over an earlier negation.
        let p = deny(&["!.env.example", ".env*"]);
        assert_eq!(file(&p, ".env.example"), denied(".env*"));
    }

    #[test]
    fn cannot_reinclude_inside_a_hidden_directory() {
        let p = deny(&["secret/", "!secret/ok.txt"]);
        assert_eq!(file(&p, "secret/ok.txt"), denied("secret/"));
        // ...but visibility() of the entry alone (parent assumed visible) would allow it:
        assert_eq!(
            p.visibility(Path::new("secret/ok.txt"), EntryKind::File, 1, None),
            Ok(())
        );
    }

    #[test]
    fn escaped_bang_is_literal() {
        let p = deny(&["\\!important"]);
        assert_eq!(file(&p, "!important"), denied("\\!important"));
        assert_eq!(file(&p, "important"), Ok(()));
    }

    #[test]
    fn dir_rules_apply_relative_to_their_directory() {
        let p = policy(
            r#"
[visibility]
deny = ["*.log"]
[[visibility.dir]]
path = "docs"
deny = ["/drafts/", "*.tmp"]
[[visibility.dir]]
path = "./docs/public/"
deny = ["!keep.log"]
"#,
        );
        assert_eq!(dir(&p, "docs/drafts"), denied("/drafts/"));
        assert_eq!(file(&p, "docs/drafts/a.md"), denied("/drafts/"));
        assert_eq!(dir(&p, "drafts"), Ok(()), "rule applies only below docs");
        assert_eq!(dir(&p, "docs/x/drafts"), Ok(()), "anchored at docs");
        assert_eq!(file(&p, "docs/x/y.tmp"), denied("*.tmp"));
        assert_eq!(file(&p, "y.tmp"), Ok(()));
        assert_eq!(file(&p, "docs/public/a.log"), denied("*.log"));
        assert_eq!(file(&p, "docs/public/keep.log"), Ok(()), "deeper rule wins");
        assert_eq!(file(&p, "keep.log"), denied("*.log"));
        assert_eq!(
            dir(&p, "docs"),
            Ok(()),
            "dir rules do not apply to the dir itself"
        );
    }

    #[test]
    fn dir_rules_order_by_depth_not_file_order() {
        let mut prof = Profile::parse("version = 1", "t").unwrap();
        prof.visibility.dirs = vec![
            DirRules {
                path: "a/b".into(),
                deny: vec!["!x".into()],
                allow: vec![],
            },
            DirRules {
                path: "a".into(),
                deny: vec!["x".into()],
                allow: vec![],
            },
        ];
        let p = Policy::new(&prof).unwrap();
        assert_eq!(file(&p, "a/x"), denied("x"));
        assert_eq!(file(&p, "a/b/x"), Ok(()));
    }

    #[test]
    fn allow_list_restricts_files_not_directories() {
        let p = policy("[visibility]\nallow = [\"*.pdf\", \"*.md\"]\ndeny = [\"private/\"]\n");
        assert_eq!(file(&p, "a/b/report.pdf"), Ok(()));
        assert_eq!(file(&p, "README.md"), Ok(()));
        assert_eq!(file(&p, "main.rs"), Err(Hidden::NotAllowed));
        assert_eq!(dir(&p, "a/b/c"), Ok(()), "directories stay traversable");
        assert_eq!(dir(&p, "private"), denied("private/"));
        assert_eq!(file(&p, "private/x.pdf"), denied("private/"));
        // symlinks are restricted like files
        let t = Some(Path::new("x.pdf"));
        assert_eq!(
            p.visibility(Path::new("l.rs"), EntryKind::Symlink, 0, t),
            Err(Hidden::NotAllowed)
        );
        assert_eq!(
            p.visibility(Path::new("l.pdf"), EntryKind::Symlink, 0, t),
            Ok(())
        );
    }

    #[test]
    fn allow_list_directory_patterns_open_subtrees() {
        let p = policy(
            "[visibility]\nallow = [\"docs/\", \"*.md\", \"!docs/drafts/\", \"!secret.md\"]\n",
        );
        assert_eq!(file(&p, "docs/a/b.bin"), Ok(()));
        assert_eq!(file(&p, "docs/drafts/x.md"), Err(Hidden::NotAllowed));
        assert_eq!(file(&p, "x/y.md"), Ok(()));
        assert_eq!(file(&p, "docs/secret.md"), Err(Hidden::NotAllowed));
        assert_eq!(file(&p, "src/a.rs"), Err(Hidden::NotAllowed));
        // A file named `docs` is not a directory.
        assert_eq!(file(&p, "docs"), Err(Hidden::NotAllowed));
    }

    #[test]
    fn most_specific_allow_list_wins() {
        let p = policy(
            r#"
[visibility]
allow = ["*.pdf"]
[[visibility.dir]]
path = "data"
allow = ["*.csv"]
"#,
        );
        assert_eq!(file(&p, "a.pdf"), Ok(()));
        assert_eq!(file(&p, "a.csv"), Err(Hidden::NotAllowed));
        assert_eq!(file(&p, "data/a.csv"), Ok(()));
        assert_eq!(file(&p, "data/sub/a.csv"), Ok(()));
        assert_eq!(file(&p, "data/a.pdf"), Err(Hidden::NotAllowed));
    }

    #[test]
    fn max_file_size_applies_to_regular_files_only() {
        let p = policy("[visibility]\nmax_file_size = \"1 KiB\"\n");
        let v = |k, size| p.visibility(Path::new("f"), k, size, Some(Path::new("t")));
        assert_eq!(v(EntryKind::File, 1024), Ok(()));
        assert_eq!(
            v(EntryKind::File, 1025),
            Err(Hidden::TooLarge {
                size: 1025,
                max: 1024
            })
        );
        assert_eq!(v(EntryKind::Dir, 1 << 20), Ok(()));
        assert_eq!(v(EntryKind::Symlink, 1 << 20), Ok(()));
    }

    #[test]
    fn special_files_and_escaping_symlinks() {
        let p = policy("");
        let v =
            |rel: &str, k, t: Option<&str>| p.visibility(Path::new(rel), k, 0, t.map(Path::new));
        assert_eq!(v("fifo", EntryKind::Special, None), Err(Hidden::Special));
        assert_eq!(
            v("l", EntryKind::Symlink, Some("/etc/passwd")),
            Err(Hidden::EscapingSymlink)
        );
        assert_eq!(v("a/l", EntryKind::Symlink, Some("../b/c")), Ok(()));
        assert_eq!(
            v("a/l", EntryKind::Symlink, None),
            Err(Hidden::EscapingSymlink),
            "unknown target fails closed"
        );
        let p =
            policy("[visibility]\nhide_special_files = false\nhide_escaping_symlinks = false\n");
        let v =
            |rel: &str, k, t: Option<&str>| p.visibility(Path::new(rel), k, 0, t.map(Path::new));
        assert_eq!(v("fifo", EntryKind::Special, None), Ok(()));
        assert_eq!(v("l", EntryKind::Symlink, Some("/etc/passwd")), Ok(()));
    }

    #[test]
    fn deny_reason_comes_before_other_reasons() {
        let p = policy("[visibility]\ndeny = [\"*.sock\"]\n");
        assert_eq!(
            p.visibility(Path::new("a.sock"), EntryKind::Special, 0, None),
            denied("*.sock")
        );
    }

    #[test]
    fn symlink_escape_cases() {
        let e = |l: &str, t: &str| symlink_escapes(Path::new(l), Path::new(t));
        assert!(e("l", "/etc/passwd"), "absolute");
        assert!(
            e("a/b/l", "/a/b/c"),
            "absolute even if it names a path inside"
        );
        assert!(e("l", ".."));
        assert!(e("a/l", "../.."));
        assert!(e("a/b/l", "../../../x"));
        assert!(e("l", "a/../../x"));
        assert!(
            e("a/l", "../../a/x"),
            "climbing out and back counts as escaping"
        );
        assert!(!e("l", "./x"));
        assert!(!e("l", "x"));
        assert!(
            !e("a/b/c/l", "../../../x"),
            "deep relative that stays inside"
        );
        assert!(!e("a/b/c/l", "../../d/../../e/./f"));
        assert!(!e("a/l", ".."), "the root itself is inside");
        assert!(!e("l", ""));
    }

    #[test]
    fn unicode_and_non_utf8_names() {
        let p = deny(&["*.pem", "geheim*", "Ünïcødé/", "*.ключ"]);
        assert_eq!(file(&p, "geheimnis.txt"), denied("geheim*"));
        assert_eq!(dir(&p, "x/Ünïcødé"), denied("Ünïcødé/"));
        assert_eq!(file(&p, "документы/пароль.ключ"), denied("*.ключ"));
        assert_eq!(file(&p, "日本語/ファイル.txt"), Ok(()));
        let raw = |b: &[u8]| Path::new(OsStr::from_bytes(b)).to_path_buf();
        let bad = raw(b"dir\xff/na\xfeme.pem");
        assert_eq!(
            p.path_visibility(&bad, EntryKind::File, 0, None),
            denied("*.pem")
        );
        assert_eq!(
            p.path_visibility(&raw(b"\xff\xfe/ok.txt"), EntryKind::File, 0, None),
            Ok(())
        );
        let p = policy("[write]\nmode = \"snapshot\"\nwritable = [\"*.txt\"]\n");
        assert!(p.writable(&raw(b"\xff/a.txt")));
        assert!(!p.writable(&raw(b"\xff/a.bin")));
    }

    #[test]
    fn writable_per_mode() {
        let ro = policy("[write]\nwritable = [\"*.rs\"]\n");
        assert_eq!(ro.mode(), WriteMode::ReadOnly);
        assert!(!ro.writable(Path::new("src/main.rs")));
        let snap = ro.clone().with_mode(WriteMode::Snapshot);
        assert_eq!(snap.mode(), WriteMode::Snapshot);
        assert!(snap.writable(Path::new("src/main.rs")));
        assert!(!snap.writable(Path::new("src/data.bin")));
        assert!(
            !snap.writable(Path::new("")),
            "the root itself never changes"
        );
        let ov = snap.with_mode(WriteMode::Overlay);
        assert!(ov.writable(Path::new("main.rs")));
        assert!(
            !ov.clone()
                .with_mode(WriteMode::ReadOnly)
                .writable(Path::new("main.rs"))
        );

        // Empty writable = whole visible tree (outside read-only).
        let all = policy("[write]\nmode = \"overlay\"\n");
        assert!(all.writable(Path::new("any/thing")));
        let none = policy("");
        assert!(!none.writable(Path::new("any/thing")));
    }

    #[test]
    fn writable_subtree_rule() {
        let p = policy(
            "[write]\nmode = \"snapshot\"\nwritable = [\"*.py\", \"target/\", \"!.git/\", \"!setup.py\"]\n",
        );
        assert!(p.writable(Path::new("a/b.py")));
        assert!(p.writable(Path::new("target")));
        assert!(p.writable(Path::new("target/debug/x.o")));
        assert!(
            !p.writable(Path::new(".git/hooks/pre-commit.py")),
            "closed subtree"
        );
        assert!(!p.writable(Path::new(".git")));
        assert!(!p.writable(Path::new("setup.py")), "later negation wins");
        assert!(!p.writable(Path::new("README")));
    }

    #[test]
    fn unscannable_allowed() {
        let p = Policy::new(&Profile::builtin_default()).unwrap();
        assert!(p.unscannable_allowed(Path::new(".git/objects/ab/cdef")));
        assert!(p.unscannable_allowed(Path::new("sub/repo/.git/objects/pack/p.pack")));
        assert!(p.unscannable_allowed(Path::new(".git/index")));
        assert!(p.unscannable_allowed(Path::new(".git/modules/m/objects/x")));
        assert!(p.unscannable_allowed(Path::new("img/logo.png")));
        assert!(p.unscannable_allowed(Path::new("target/debug/deps/libx.rlib")));
        assert!(!p.unscannable_allowed(Path::new("backup.zip")));
        assert!(!p.unscannable_allowed(Path::new("data.sqlite")));
        assert!(!p.unscannable_allowed(Path::new("objects/x")));
        let p = policy("[redaction]\nunscannable = \"allow\"\n");
        assert!(p.unscannable_allowed(Path::new("backup.zip")));
    }

    #[test]
    fn hidden_display() {
        assert_eq!(
            denied("*.pem").unwrap_err().to_string(),
            "denied by pattern `*.pem`"
        );
        assert!(Hidden::NotAllowed.to_string().contains("allow-list"));
        assert!(
            Hidden::TooLarge { size: 5, max: 4 }
                .to_string()
                .contains("max_file_size")
        );
        assert!(Hidden::EscapingSymlink.to_string().contains("outside"));
        assert!(Hidden::Special.to_string().contains("fifo"));
    }

    #[test]
    fn shipped_default_profile_semantics() {
        let p = Policy::new(&Profile::builtin_default()).unwrap();
        for hidden in [
            ".env",
            "svc/.env.production",
            ".envrc",
            "certs/server.pem",
            "tls.key",
            "home/.ssh/config",
            "home/.aws/credentials",
            "home/.kube/config",
            "home/.docker/config.json",
            ".npmrc",
            ".git-credentials",
            "infra/terraform.tfstate",
            "infra/terraform.tfstate.backup",
            "vault.kdbx",
            "k8s/secrets.yaml",
            "k8s/secrets.yml",
            "gcp/credentials.json",
            "home/.bash_history",
            "id_ed25519.pub",
        ] {
            assert!(file(&p, hidden).is_err(), "{hidden} should be hidden");
        }
        for visible in [
            ".env.example",
            "src/main.rs",
            "Cargo.toml",
            "README.md",
            ".git/HEAD",
            ".git/objects/ab/cd",
            "target/debug/app",
            "docs/keys.md",
            "env.rs",
        ] {
            assert_eq!(file(&p, visible), Ok(()), "{visible} should be visible");
        }
        assert_eq!(p.mode(), WriteMode::ReadOnly);
    }

    #[test]
    fn shipped_developer_and_strict_semantics() {
        let dir_ = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/");
        let dev = Policy::new(&Profile::load(Path::new(&format!("{dir_}developer.toml"))).unwrap())
            .unwrap();
        assert_eq!(dev.mode(), WriteMode::Snapshot);
        assert!(dev.writable(Path::new("src/main.rs")));
        assert!(dev.writable(Path::new("Cargo.lock")));
        assert!(dev.writable(Path::new("target/debug/build/x/out/y.bin")));
        assert!(!dev.writable(Path::new(".git/hooks/pre-commit")));
        assert!(!dev.writable(Path::new(".git/config")));
        assert!(!dev.writable(Path::new(".github/workflows/ci.yml")));
        assert!(dev.writable(Path::new(".github/dependabot.yml")));
        assert!(!dev.writable(Path::new(".vscode/tasks.json")));
        assert_eq!(file(&dev, "target/debug/app"), Ok(()));
        assert_eq!(dir(&dev, "node_modules"), Ok(()));
        assert!(file(&dev, ".env").is_err());

        let strict =
            Policy::new(&Profile::load(Path::new(&format!("{dir_}strict.toml"))).unwrap()).unwrap();
        assert_eq!(file(&strict, "cases/2024/brief.pdf"), Ok(()));
        assert_eq!(file(&strict, "notes.md"), Ok(()));
        assert_eq!(file(&strict, "Budget.XLSX"), Ok(()), "case-insensitive");
        assert_eq!(file(&strict, "main.rs"), Err(Hidden::NotAllowed));
        assert_eq!(dir(&strict, "cases/2024"), Ok(()));
        assert!(dir(&strict, ".git").is_err());
        assert!(file(&strict, "~$brief.docx").is_err());
        assert!(matches!(
            strict.visibility(Path::new("big.pdf"), EntryKind::File, 200 << 20, None),
            Err(Hidden::TooLarge { .. })
        ));
        assert!(!strict.writable(Path::new("notes.md")));
    }

    #[test]
    fn every_shipped_profile_compiles() {
        for name in ["default.toml", "developer.toml", "strict.toml"] {
            let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("profiles")
                .join(name);
            let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            Policy::new(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn programmatic_profile_errors_name_the_field() {
        let mut p = Profile::builtin_default();
        p.write.writable = vec!["[".into()];
        let e = Policy::new(&p).unwrap_err();
        assert_eq!(e.field(), "write.writable[0]");
        assert!(e.to_string().contains("invalid pattern `[`"), "{e}");
    }

    fn with_manifest(profile: &str, read: &[&str], write: &[&str]) -> Policy {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        policy(profile)
            .with_manifest(&owned(read), &owned(write), "m")
            .unwrap()
    }

    #[test]
    fn manifest_narrows_reads_and_writes() {
        let p = with_manifest(
            "[visibility]\ndeny = [\".env*\"]\n[write]\nmode = \"snapshot\"\nwritable = [\"src/\", \"notes.md\"]",
            &["src/**", "*.md", ".env"],
            &["src/gen/", "docs/"],
        );
        assert_eq!(file(&p, "src/a.rs"), Ok(()));
        assert_eq!(file(&p, "README.md"), Ok(()));
        assert_eq!(file(&p, "Cargo.toml"), Err(Hidden::NotInManifest));
        // Asked for, but the profile hides it: the profile wins.
        assert_eq!(file(&p, ".env"), denied(".env*"));
        // Directories stay traversable; writing implies seeing.
        assert_eq!(dir(&p, "docs"), Ok(()));
        assert_eq!(file(&p, "docs/x.txt"), Ok(()));
        assert!(p.writable(Path::new("src/gen/out.rs")));
        assert!(!p.writable(Path::new("src/a.rs")), "not asked for");
        assert!(
            !p.writable(Path::new("notes.md")),
            "profile yes, manifest no"
        );
        assert!(
            !p.writable(Path::new("docs/x.txt")),
            "manifest yes, profile no"
        );
        assert!(!p.writable(Path::new("")), "the root");
    }

    #[test]
    fn manifest_never_makes_a_read_only_profile_writable() {
        let p = with_manifest("", &["**"], &["**"]);
        assert_eq!(file(&p, "a/b.txt"), Ok(()));
        assert!(!p.writable(Path::new("a/b.txt")));
        let p = with_manifest("[write]\nmode = \"snapshot\"", &[], &[]);
        assert_eq!(file(&p, "a.txt"), Err(Hidden::NotInManifest));
        assert!(!p.writable(Path::new("a.txt")));
    }
}
