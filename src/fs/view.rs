//! What the agent may see of a file's bytes: the raw content, a masked view, or nothing.
//!
//! Decided at open (and re-decided on read when the file changed underneath), from the
//! redaction engine's scan, cached by file identity so an unchanged file is scanned once.
//! Fail-closed: a file that cannot be scanned (compressed or encrypted content, a binary of a
//! type the profile calls opaque, too large, unreadable) is denied unless the profile explicitly
//! allows serving it unscanned. Other binaries are scanned through their printable runs and
//! masked in place (`redact::binary`).
//!
//! Synthesized views: content the agent sees whose size differs from the real file's (an office
//! document rebuilt with its secrets masked, `redact::document`; a metadata stub shown instead
//! of a file's content, `crate::present`). Such a view is built
//! from a consistent copy of one version of the file (the settle rule of `fs::served`), cached
//! by that version's identity and the rules that applied, and is a pure function of both (the
//! rebuild is deterministic), so a view dropped from the cache and built again is the same bytes.
//! Its size is what `lookup`/`getattr` report (`fs::attr`), reads and mmap are served from its
//! bytes, and it is read-only (the write path refuses any change to a file whose view is
//! synthesized: there is no way to map an edit of the rebuilt bytes back onto the real ones).
//!
//! Opacity follows the name, so it is decided only for a file with one link (a hard link's
//! other names could be ones the profile does not call opaque), and the scan verdict of an
//! opaque name is cached apart from the one of the same version under other names.

use std::io::Read;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backing::{self, Stat};
use crate::history::{Gate, History};
use crate::live::LivePolicy;
use crate::redact::{Engine, FileId, Redactions, RuleSelection, ScanCache, ScanOutcome};

#[derive(Clone)]
pub(crate) enum View {
    /// Serve the real bytes (no rule matched, or redaction is off).
    Raw,
    /// Serve the bytes with these spans masked.
    Masked(Arc<Redactions>),
    /// Refuse to open; the string is the audit reason.
    Denied(String),
    /// Serve these bytes instead of the file's (a synthesized view: see the module comment).
    Synth(Arc<Synth>),
}

/// Is `v` a refusal that lasts only until a git pack's scan ends (never to be cached)?
pub(crate) fn is_pending(v: &View) -> bool {
    matches!(v, View::Denied(why) if why.starts_with(crate::history::PENDING))
}

/// A synthesized view's bytes and what it is, for the audit.
#[derive(Debug)]
pub(crate) struct Synth {
    pub bytes: Vec<u8>,
    /// What the view is (`"document"`).
    pub kind: &'static str,
    /// Distinct ids of the rules whose matches it masks.
    pub rules: Vec<String>,
    pub redactions: usize,
}

/// A synthesized view's identity: the file version and the rule selection.
type SynthKey = (FileId, u64);

/// Synthesized views by (file version, rule selection), bounded by total bytes.
#[derive(Default)]
struct SynthCache {
    views: std::collections::HashMap<SynthKey, View>,
    bytes: usize,
}

impl SynthCache {
    /// Keeps `v` for `key`; past the budget the cache starts over (views are rebuilt on demand).
    fn insert(&mut self, key: (FileId, u64), v: View) {
        let n = match &v {
            View::Synth(s) => s.bytes.len(),
            _ => 0,
        };
        if self.bytes + n > SYNTH_BUDGET {
            self.views.clear();
            self.bytes = 0;
        }
        self.bytes += n;
        self.views.insert(key, v);
    }
}

/// Why a change to a file with a synthesized view is refused (the audit reason).
pub(crate) const SYNTH_READ_ONLY: &str = "the agent sees a synthesized view of this file (rebuilt with its secrets masked); it is read-only, since an edit of the rebuilt bytes cannot be mapped back onto the real ones";

/// Bytes of synthesized views kept (past it the cache starts over: views are rebuilt on demand).
const SYNTH_BUDGET: usize = 128 << 20;

/// What the agent may see of a piece of metadata.
pub(crate) enum MetaView {
    /// No rule matched: the value as it is.
    Clean,
    /// The value with its secrets masked (same length).
    Masked(Vec<u8>),
    /// Not text, and not scannable (compressed or encrypted): the caller decides by what the
    /// value is. Other binary values are scanned through their printable runs.
    Binary,
}

/// Mixed into the cache key of metadata stubs.
const METADATA_KEY: u64 = 0x6d65_7461_6461_7461;

/// Mixed into the cache key of text views.
const TEXT_KEY: u64 = 0x7465_7874_5f76_6965;

/// Mixed into the cache key of verdicts taken under an opaque name.
const OPAQUE_KEY: u64 = 0x6f70_6171_7565_5f31;

pub(crate) struct Viewer {
    /// The policy and engine in force (replaced live, see [`crate::live`]).
    live: Arc<LivePolicy>,
    cache: ScanCache,
    /// The generation `cache` was last bound to.
    bound: AtomicU64,
    max_scan_size: u64,
    allow_unscannable: bool,
    /// Git object files, recognised by content, are judged here first (`redaction.history`).
    history: Option<Arc<History>>,
    synth: std::sync::Mutex<SynthCache>,
    /// Synthesized views being built, by cache key: a lookup and a getattr of a new document
    /// arrive together on two threads, and one build is enough (a large sheet takes seconds).
    building: std::sync::Mutex<std::collections::HashMap<SynthKey, Arc<std::sync::Mutex<()>>>>,
    /// The marks views carry (`[watermark]`), set once before mounting.
    marking: std::sync::OnceLock<Marking>,
    /// Names already judged by `name_holds_secret` (see [`NameVerdicts`]).
    names: std::sync::Mutex<NameVerdicts>,
}

/// Verdicts of `name_holds_secret`, by name, for the engine generation they were made with.
/// A listing asks for every entry, and names repeat across a tree (`mod.rs`, `index.ts`, the
/// same names in every directory of a generated tree): the engine's fixed cost per scan (rule
/// tables sized by the rule count) was a quarter of a cold `find`'s CPU. The verdict depends
/// on the name's bytes and the rules alone, so it is kept by name; a new policy generation
/// clears it, and it is cleared when full rather than evicted (bounded memory, no bookkeeping).
#[derive(Default)]
struct NameVerdicts {
    generation: u64,
    hidden: std::collections::HashMap<Box<[u8]>, bool>,
}

/// At most this many names are remembered (about 4 MiB with 64-byte names).
const NAME_VERDICTS: usize = 1 << 16;

/// What the views of a mount are marked with (`[watermark]`, see `crate::watermark`).
#[derive(Debug, Default)]
pub(crate) struct Marking {
    /// The mark, as a document property (`documents`).
    pub property: Option<String>,
    /// The mark, as a visible footer line (`footer`).
    pub footer: Option<String>,
    /// This session's mask codes (`mask_codes`).
    pub codes: Option<crate::watermark::MaskCodes>,
}

pub(crate) fn file_id(st: &Stat) -> FileId {
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
    pub(crate) fn new(
        live: Arc<LivePolicy>,
        max_scan_size: u64,
        allow_unscannable: bool,
    ) -> Viewer {
        let cur = live.current();
        Viewer {
            cache: ScanCache::for_engine(200_000, &cur.engine),
            bound: AtomicU64::new(cur.generation),
            live,
            max_scan_size,
            allow_unscannable,
            history: None,
            synth: Default::default(),
            building: Default::default(),
            marking: std::sync::OnceLock::new(),
            names: Default::default(),
        }
    }

    /// Judges git object files by `history` before the usual scan.
    pub(crate) fn with_history(mut self, history: Arc<History>) -> Viewer {
        self.history = Some(history);
        self
    }

    pub(crate) fn history(&self) -> Option<&Arc<History>> {
        self.history.as_ref()
    }

    /// The scan of `data` (the complete content of a file at a name that is `opaque` or not) as
    /// `(outcome, may it be cached)`: an object file by the history gate, anything else by
    /// `engine`.
    fn scan_data(
        &self,
        engine: &Engine,
        sel: &RuleSelection,
        data: &[u8],
        opaque: bool,
        keep: bool,
    ) -> Result<(ScanOutcome, bool), View> {
        match self.history.as_ref().and_then(|h| h.gate(data)) {
            Some(Gate::Outcome(o)) => Ok((o, keep)),
            Some(Gate::Pending(why)) => Err(View::Denied(why)),
            None => Ok((engine.scan_as(sel, data, opaque), keep)),
        }
    }

    /// Every view is marked by `marking` from now on (set before mounting).
    pub(crate) fn set_marking(&self, marking: Marking) {
        let _ = self.marking.set(marking);
    }

    /// This session's mask codes, if masks carry them.
    fn codes(&self) -> Option<&crate::watermark::MaskCodes> {
        self.marking.get().and_then(|m| m.codes.as_ref())
    }

    /// `r` labelled with this session's mask codes, when masks carry them. Applied to every
    /// verdict as it becomes a view, never to what the scan cache keeps: a cached verdict has
    /// no code, so one saved by another session's mount is served with this session's codes.
    fn coded(&self, r: Arc<Redactions>) -> Arc<Redactions> {
        match self.codes() {
            Some(c) => Arc::new(r.with_codes(|rule| c.code(rule))),
            None => r,
        }
    }

    /// Is the file at `rel` (stat `st`) served as a synthesized view (an office document rebuilt
    /// with its secrets masked)? Decided by the name, so only for a file with one link: a hard
    /// link's other names may not be documents, where the strictest view (the container scan,
    /// which refuses a secret inside) applies.
    ///
    /// A file the profile presents as metadata is shown its stub whatever its link count (a
    /// stub shows less than any other view).
    pub(crate) fn is_synthesized(&self, rel: &Path, st: &Stat) -> bool {
        use std::os::unix::ffi::OsStrExt;
        st.kind() == backing::Kind::File
            && self.live.with_active(|cur| {
                cur.policy.metadata(rel)
                    || (!cur.engine.is_empty()
                        && st.nlink <= 1
                        && rel.file_name().is_some_and(|n| {
                            crate::redact::document::is_document_name(n.as_bytes())
                        })
                        && cur.policy.document(rel))
            })
    }

    /// Can the file named `name` have a synthesized view? A cheap check by name alone, before
    /// its path is computed (every lookup and getattr asks).
    pub(crate) fn may_synthesize(&self, name: &std::ffi::OsStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        self.live.with_active(|cur| {
            cur.policy.presents_any_metadata()
                || (!cur.engine.is_empty()
                    && crate::redact::document::is_document_name(name.as_bytes()))
        })
    }

    /// Is the file at `rel` shown as a metadata stub?
    pub(crate) fn presents_metadata(&self, rel: &Path) -> bool {
        self.live.with_active(|cur| cur.policy.metadata(rel))
    }

    /// The metadata stub of `data` (version `st` of `rel`), masked like any text.
    /// `data` is `None` for a file too large to read (above `max_scan_size`).
    fn metadata_stub(&self, rel: &Path, st: &Stat, data: Option<&[u8]>) -> View {
        use std::os::unix::ffi::OsStrExt;
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        let stub = match data {
            Some(d) => crate::present::stub(name, st, d),
            None => crate::present::stub_unread(name, st),
        }
        .into_bytes();
        let (bytes, rules, redactions) = match self
            .live
            .current()
            .engine
            .scan_with(&self.live.current().engine.all_rules(), &stub)
        {
            ScanOutcome::Redact(r) => {
                let (rules, n) = crate::audit::rules_fired(&r);
                (crate::redact::mask_all(&stub, &self.coded(r)), rules, n)
            }
            _ => (stub, Vec::new(), 0),
        };
        View::Synth(Arc::new(Synth {
            bytes,
            kind: "metadata",
            rules,
            redactions,
        }))
    }

    /// The view of the document at `rel` from `data`, a copy of version `st`; cached when `keep`
    /// (a consistent copy).
    fn decide_document(&self, rel: &Path, st: &Stat, data: &[u8], keep: bool) -> View {
        let sel = self.rules_for(rel, st);
        let metadata = self.live.current().policy.metadata(rel);
        // Stubs and documents of one version are different views.
        let key = (
            file_id(st),
            sel.id() ^ if metadata { METADATA_KEY } else { 0 },
        );
        let cached = || {
            self.synth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .views
                .get(&key)
                .cloned()
        };
        if let Some(v) = cached() {
            return v;
        }
        // One build per key at a time: a second caller waits for the first and takes its view.
        let gate = self
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let _built = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cached() {
            return v;
        }
        let v = self.build_document(rel, st, data, &sel, metadata, key, keep);
        self.building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        v
    }

    /// Builds the view `decide_document` decided on, and caches it when `keep`.
    #[allow(clippy::too_many_arguments)]
    fn build_document(
        &self,
        rel: &Path,
        st: &Stat,
        data: &[u8],
        sel: &RuleSelection,
        metadata: bool,
        key: SynthKey,
        keep: bool,
    ) -> View {
        let budget = self.max_scan_size.saturating_mul(4);
        let v = if metadata {
            self.metadata_stub(rel, st, Some(data))
        } else {
            self.rebuild_document(sel, data, budget)
        };
        if keep {
            self.synth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, v.clone());
        }
        v
    }

    fn marks(&self) -> crate::redact::document::Marks<'_> {
        match self.marking.get() {
            Some(m) => crate::redact::document::Marks {
                property: m.property.as_deref(),
                footer: m.footer.as_deref(),
                codes: m.codes.as_ref(),
            },
            None => Default::default(),
        }
    }

    /// The view of office document `data`: rebuilt with its secrets masked, as it is when it
    /// holds none, or refused.
    fn rebuild_document(&self, sel: &RuleSelection, data: &[u8], budget: u64) -> View {
        match crate::redact::document::redact(
            &self.live.current().engine,
            sel,
            data,
            self.live.current().policy.refuse_macros(),
            budget,
            self.marks(),
        ) {
            Ok(crate::redact::document::Outcome::Clean) => View::Raw,
            Ok(crate::redact::document::Outcome::Masked(r)) => View::Synth(Arc::new(Synth {
                bytes: r.bytes,
                kind: "document",
                rules: r.rules,
                redactions: r.redactions,
            })),
            Err(why) => View::Denied(format!("document refused: {why}")),
        }
    }

    /// Loads scan verdicts saved by an earlier mount; a bad file is logged and ignored.
    pub(crate) fn load_scans(&self, path: &Path) {
        match self.cache.load(path) {
            Ok(n) => tracing::info!(path = %path.display(), n, "loaded saved scan results"),
            Err(e) => tracing::warn!(path = %path.display(), "ignoring saved scan results: {e}"),
        }
    }

    /// Saves scan verdicts for the next mount of the same folder.
    pub(crate) fn save_scans(&self, path: &Path) {
        match self.cache.save(path) {
            Ok(n) => tracing::info!(path = %path.display(), n, "saved scan results"),
            Err(e) => tracing::warn!(path = %path.display(), "cannot save scan results: {e}"),
        }
    }

    /// Files larger than this are never scanned.
    pub(crate) fn max_scan_size(&self) -> u64 {
        self.max_scan_size
    }

    pub(crate) fn redaction_enabled(&self) -> bool {
        !self.live.with_active(|cur| cur.engine.is_empty())
    }

    /// The rules that apply to the file at `rel` whose stat is `st`. A file with several hard
    /// links is judged by every rule: its other names (which veilfs may never have seen) could
    /// be ones more rules apply to, and a view must be the strictest over all of them.
    ///
    /// The selection's id is salted with the policy's generation: everything keyed by it (scan
    /// verdicts, served copies) is never reused across a live policy change.
    pub(crate) fn rules_for(&self, rel: &Path, st: &Stat) -> RuleSelection {
        let cur = self.live.current();
        let sel = if st.nlink > 1 {
            cur.engine.all_rules()
        } else {
            cur.engine.rules_for(rel)
        };
        sel.salted(cur.generation)
    }

    /// Is the file at `rel` refused and shown as a `NAME.txt` text view (`present.text`)?
    pub(crate) fn presents_text(&self, rel: &Path) -> bool {
        self.live.with_active(|cur| cur.policy.text(rel))
    }

    /// Does the profile show any file as text?
    pub(crate) fn presents_any_text(&self) -> bool {
        self.live.with_active(|cur| cur.policy.presents_any_text())
    }

    /// The refusal of a file shown as text (the audit reason; `veilfs why` tells it).
    fn text_refusal(rel: &Path) -> View {
        View::Denied(format!(
            "shown as text only: read {}.txt beside it",
            rel.file_name().unwrap_or_default().to_string_lossy()
        ))
    }

    /// The text view of the file held by `fd` (stat `st`) at `rel`: its extracted text
    /// ([`crate::text_view`]) masked by the rules of `rel`, as a synthesized view (`text`),
    /// cached like documents by version and rules; refused with the reason when no text can be
    /// extracted (fail closed).
    pub(crate) fn text_view(&self, rel: &Path, fd: BorrowedFd<'_>, st: &Stat) -> View {
        use std::os::unix::ffi::OsStrExt;
        if st.size > self.max_scan_size {
            return View::Denied(format!(
                "text view: {} bytes is above max_scan_size {}",
                st.size, self.max_scan_size
            ));
        }
        let sel = self.rules_for(rel, st);
        let key = (file_id(st), sel.id() ^ TEXT_KEY);
        if let Some(v) = self
            .synth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .views
            .get(&key)
        {
            return v.clone();
        }
        let cant = |e: std::io::Error| View::Denied(format!("text view: cannot read: {e}"));
        let f = match backing::reopen(fd, libc::O_RDONLY) {
            Ok(f) => f,
            Err(e) => return cant(e),
        };
        let (data, keep) =
            match super::served::consistent_copy(&f, st, || backing::stat_fd(fd), None) {
                Ok(super::served::Taken::Copy(data)) => (data, true),
                Ok(_) => match read_all(fd, st.size) {
                    Ok(d) => (d, false),
                    Err(e) => return cant(e),
                },
                Err(e) => return cant(e),
            };
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        let v = match crate::text_view::extract(name, &data) {
            Err(why) => View::Denied(format!("text view refused: {why}")),
            Ok(text) => {
                let text = text.into_bytes();
                let engine = self.live.current().engine.clone();
                let (mut bytes, rules, redactions) = if engine.is_empty() {
                    (text, Vec::new(), 0)
                } else {
                    match engine.scan_with(&sel, &text) {
                        ScanOutcome::Redact(r) => {
                            let (rules, n) = crate::audit::rules_fired(&r);
                            (crate::redact::mask_all(&text, &self.coded(r)), rules, n)
                        }
                        ScanOutcome::Clean => (text, Vec::new(), 0),
                        ScanOutcome::Unscannable(why) => {
                            return View::Denied(format!("text view: cannot be scanned ({why})"));
                        }
                        ScanOutcome::Refused(why) => {
                            return View::Denied(format!("text view refused: {why}"));
                        }
                    }
                };
                // A text view is a document view: it carries the footer line like one.
                if let Some(mark) = self.marking.get().and_then(|m| m.footer.as_deref()) {
                    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                        bytes.push(b'\n');
                    }
                    bytes.extend_from_slice(crate::watermark::footer_line(mark).as_bytes());
                    bytes.push(b'\n');
                }
                View::Synth(Arc::new(Synth {
                    bytes,
                    kind: "text",
                    rules,
                    redactions,
                }))
            }
        };
        if keep {
            self.synth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, v.clone());
        }
        v
    }

    /// The view of the regular file held by `fd` (whose current stat is `st`) at `rel`.
    pub(crate) fn decide(&self, rel: &Path, fd: BorrowedFd<'_>, st: &Stat) -> View {
        if st.kind() == backing::Kind::File && self.presents_text(rel) {
            return Self::text_refusal(rel);
        }
        if self.is_synthesized(rel, st) {
            if st.size > self.max_scan_size && self.live.current().policy.metadata(rel) {
                // Too large to read: a stub from what the stat tells.
                return self.metadata_stub(rel, st, None);
            }
            if st.size > self.max_scan_size {
                return View::Denied(format!(
                    "document of {} bytes is above max_scan_size {}",
                    st.size, self.max_scan_size
                ));
            }
            let cant = |e: std::io::Error| View::Denied(format!("cannot read to scan: {e}"));
            let f = match backing::reopen(fd, libc::O_RDONLY) {
                Ok(f) => f,
                Err(e) => return cant(e),
            };
            // Reads are served from a view built on a consistent copy (`fs::read`); this one
            // only tells the write path and renames what the view is.
            return match super::served::consistent_copy(&f, st, || backing::stat_fd(fd), None) {
                Ok(super::served::Taken::Copy(data)) => self.decide_document(rel, st, &data, true),
                Ok(_) => match read_all(fd, st.size) {
                    Ok(data) => self.decide_document(rel, st, &data, false),
                    Err(e) => cant(e),
                },
                Err(e) => cant(e),
            };
        }
        let engine = self.live.current().engine.clone();
        self.decide_with(rel, st, |sel, opaque| {
            if st.size > self.max_scan_size {
                // Whatever the name: an object file too large to scan is never served unscanned.
                if let Some(h) = &self.history
                    && let Some(why) = read_prefix(fd).ok().and_then(|p| h.refuse_unscanned(&p))
                {
                    return Err(View::Denied(why));
                }
                return Err(self.unscannable(
                    rel,
                    format!(
                        "{} bytes is above max_scan_size {}",
                        st.size, self.max_scan_size
                    ),
                ));
            }
            let cant = |e: std::io::Error| View::Denied(format!("cannot read to scan: {e}"));
            let f = backing::reopen(fd, libc::O_RDONLY).map_err(cant)?;
            // Only a verdict on a consistent copy of version `st` may be cached for it (reads
            // trust cached verdicts: see `fs::served`).
            match super::served::consistent_copy(&f, st, || backing::stat_fd(fd), None)
                .map_err(cant)?
            {
                super::served::Taken::Copy(data) => {
                    self.scan_data(&engine, sel, &data, opaque, true)
                }
                _ => self.scan_data(
                    &engine,
                    sel,
                    &read_all(fd, st.size).map_err(cant)?,
                    opaque,
                    false,
                ),
            }
        })
    }

    /// The view of `data`, a consistent copy of the file at `rel` (stat `st`): what a read
    /// serves is then exactly what was scanned (see `fs::served`).
    pub(crate) fn decide_bytes(&self, rel: &Path, st: &Stat, data: &[u8]) -> View {
        if st.kind() == backing::Kind::File && self.presents_text(rel) {
            return Self::text_refusal(rel);
        }
        if self.is_synthesized(rel, st) {
            return self.decide_document(rel, st, data, true);
        }
        let engine = self.live.current().engine.clone();
        self.decide_with(rel, st, |sel, opaque| {
            self.scan_data(&engine, sel, data, opaque, true)
        })
    }

    /// The cached verdict for `st`'s version under the rules that apply at `rel`, or the one
    /// `scan` gives (`(outcome, may it be cached)`, or a view to answer at once).
    fn decide_with(
        &self,
        rel: &Path,
        st: &Stat,
        scan: impl FnOnce(&RuleSelection, bool) -> Result<(ScanOutcome, bool), View>,
    ) -> View {
        let cur = self.live.current();
        if self.bound.swap(cur.generation, Ordering::Relaxed) != cur.generation {
            // The rules changed live: verdicts of the old ones only take memory.
            self.cache.bind(&cur.engine);
        }
        if cur.engine.is_empty() {
            return View::Raw;
        }
        let sel = self.rules_for(rel, st);
        let opaque = st.nlink <= 1 && cur.policy.opaque(rel);
        // Verdicts under an opaque name are kept apart (a different key for the same rules).
        let key = if opaque {
            sel.id() ^ OPAQUE_KEY
        } else {
            sel.id()
        } ^ self.history.as_ref().map_or(0, |h| h.cache_key());
        let id = file_id(st);
        let outcome = match self.cache.get(&id, key) {
            Some(o) => o,
            None => match scan(&sel, opaque) {
                Ok((o, keep)) => {
                    if keep {
                        self.cache.insert(id, key, o.clone());
                    }
                    o
                }
                Err(v) => return v,
            },
        };
        self.view_of(rel, outcome)
    }

    fn view_of(&self, rel: &Path, outcome: ScanOutcome) -> View {
        match outcome {
            ScanOutcome::Clean => View::Raw,
            ScanOutcome::Redact(r) => View::Masked(self.coded(r)),
            ScanOutcome::Unscannable(why) => self.unscannable(rel, why.to_string()),
            // Whatever the profile allows unscanned: this was scanned, and it holds a secret.
            ScanOutcome::Refused(why) => View::Denied(why.to_string()),
        }
    }

    /// Is the view at `to` at least as strict as the view at `from`, for the file held by `fd`?
    /// A rename or link may never loosen what the agent sees of an object.
    pub(crate) fn at_least_as_strict(
        &self,
        from: &Path,
        to: &Path,
        fd: BorrowedFd<'_>,
        st: &Stat,
    ) -> bool {
        if self
            .live
            .with_active(|cur| cur.engine.is_empty() && !cur.policy.metadata(from))
        {
            return true;
        }
        match (self.decide(from, fd, st), self.decide(to, fd, st)) {
            (View::Raw, _) | (_, View::Denied(_)) => true,
            (View::Denied(_), _) | (View::Masked(_), View::Raw) => false,
            // Both rebuilt by the same rules: the same view.
            (View::Synth(a), View::Synth(b)) => a.bytes == b.bytes,
            // Masked by other means than the rebuilt view: not comparable, so not allowed.
            (View::Synth(_), _) | (_, View::Synth(_)) => false,
            (View::Masked(a), View::Masked(b)) => a.spans().iter().all(|x| {
                b.spans()
                    .iter()
                    .any(|y| y.start <= x.start && x.end <= y.end)
            }),
        }
    }

    /// Metadata that reaches the agent (a symlink target, an xattr value) masked by every rule,
    /// its length kept.
    pub(crate) fn mask_metadata(&self, data: &[u8]) -> MetaView {
        let engine = self.live.current().engine.clone();
        if engine.is_empty() {
            return MetaView::Clean;
        }
        match engine.scan_with(&engine.all_rules(), data) {
            ScanOutcome::Clean => MetaView::Clean,
            ScanOutcome::Redact(r) => {
                MetaView::Masked(crate::redact::mask_all(data, &self.coded(r)))
            }
            ScanOutcome::Unscannable(_) | ScanOutcome::Refused(_) => MetaView::Binary,
        }
    }

    /// Does a file name itself hold a secret? Such an entry is hidden.
    pub(crate) fn name_holds_secret(&self, name: &std::ffi::OsStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let name = name.as_bytes();
        let active = self.live.current();
        if active.engine.is_empty() {
            return false;
        }
        {
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if names.generation == active.generation
                && let Some(&hidden) = names.hidden.get(name)
            {
                return hidden;
            }
        }
        // Judged outside the lock (listings run on several request threads), with the engine
        // of the generation it is filed under.
        let hidden = match active.engine.scan_with(&active.engine.all_rules(), name) {
            ScanOutcome::Redact(_) => true,
            ScanOutcome::Clean | ScanOutcome::Unscannable(_) | ScanOutcome::Refused(_) => false,
        };
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.generation != active.generation || names.hidden.len() >= NAME_VERDICTS {
            names.hidden.clear();
            names.generation = active.generation;
        }
        names.hidden.insert(name.into(), hidden);
        hidden
    }

    fn unscannable(&self, rel: &Path, why: String) -> View {
        if self.allow_unscannable || self.live.unscannable_allowed(rel) {
            View::Raw
        } else {
            View::Denied(format!(
                "cannot be scanned ({why}) and the profile denies unscannable files"
            ))
        }
    }
}

/// The first bytes of the file held by `fd` (enough to recognise an object file).
fn read_prefix(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
    let f = backing::reopen(fd, libc::O_RDONLY)?;
    let mut buf = Vec::with_capacity(16);
    f.take(16).read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_all(fd: BorrowedFd<'_>, hint: u64) -> std::io::Result<Vec<u8>> {
    let mut f = backing::reopen(fd, libc::O_RDONLY)?;
    let mut data = Vec::with_capacity(hint as usize);
    f.read_to_end(&mut data)?;
    Ok(data)
}
