//! Git history: what the agent may read of git's object files (`redaction.history`).
//!
//! Why: git objects are compressed, so the file scan cannot see into them, and the shipped
//! profiles serve them unscanned so that git works through the mount. That served every secret
//! ever committed: `git show HEAD~3:config.py` or `git log -p` printed a key the working tree
//! shows masked. Three answers, chosen by the profile:
//! - `allow`: object files are served as they are (the behaviour before this module).
//! - `hide`: every object file (loose object or pack) is refused (EACCES, audited). Git then
//!   cannot read commits or trees either, so `git log`, `git show` and also `git status` and
//!   `git diff` (which read HEAD's tree) fail; the working tree itself is read as usual.
//! - `allow-if-clean`: every object of an object file (blobs, trees' names, commit and tag
//!   messages, reachable or not) goes through the redaction engine with every rule; the file is
//!   served only if none matches, else refused with a reason naming the rule and object.
//!
//! Bound to content, never to names: an object file is recognised by its bytes (`objects`), so a
//! `.git` anywhere, a nested repository, a `.git` file or `GIT_DIR` pointing elsewhere, a
//! worktree, a pack renamed to `*.png`: all are judged the same way. Verdicts are keyed by the
//! bytes (`verdicts`) and the file scan's identity cache, so a new pack, a repack or an object
//! the agent writes is judged afresh.
//!
//! Fail-closed and off the request thread: a loose object is small and judged when it is first
//! opened. A pack can take seconds to minutes; its scan runs on a thread of its own, and the
//! request that needs it waits at most [`WAIT`] for it. A pack whose scan is still running, or
//! whose scan failed, is refused; once the scan ends, the next open gets the verdict. At mount,
//! the packs of the scope's own `.git` are scanned in the background at once (`prescan`), so
//! that the agent's first `git log` usually finds the verdict ready.

pub(crate) mod judge;
pub(crate) mod objects;
pub(crate) mod verdicts;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub(crate) use judge::Verdict;
pub(crate) use objects::{Format, detect};

use crate::profile::History as Mode;
use crate::redact::{Engine, ScanOutcome};

/// Beside `scan-cache` in the store: git object file verdicts (`history::verdicts`).
pub(crate) const VERDICTS_FILE: &str = "history-verdicts";

/// How long a request waits for a pack's scan before it is refused (the scan goes on).
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// How the reason for refusing a pack whose scan still runs begins.
pub(crate) const PENDING: &str = "git history scan of this pack is still running";

/// A pack being scanned: its verdict once known.
#[derive(Default)]
struct Job {
    done: Mutex<Option<Verdict>>,
    cv: Condvar,
}

/// The object database an object file at `rel` belongs to, for `veilfs scan`'s report: the
/// path up to its last `objects` component (`.git/objects`, `.git/modules/m/objects`), or its
/// directory when it has none (an object file under another name).
pub(crate) fn database_of(rel: &Path) -> std::path::PathBuf {
    let comps: Vec<_> = rel.components().collect();
    match comps.iter().rposition(|c| c.as_os_str() == "objects") {
        Some(i) => comps[..=i].iter().collect(),
        None => rel.parent().unwrap_or(Path::new("")).to_path_buf(),
    }
}

/// The history gate of one mount.
pub(crate) struct History {
    mode: Mode,
    engine: Arc<Engine>,
    /// How much one object may inflate to (the engine's inflate limit).
    limit: u64,
    verdicts: verdicts::Verdicts,
    jobs: Mutex<HashMap<[u8; 32], Arc<Job>>>,
}

/// The gate's answer for one object file.
pub(crate) enum Gate {
    /// Serve or refuse, as this outcome says; it may be cached for the file's version.
    Outcome(ScanOutcome),
    /// Refuse for now (the pack's scan is still running); never cached.
    Pending(String),
}

impl History {
    pub(crate) fn new(mode: Mode, engine: Arc<Engine>, limit: u64) -> Arc<History> {
        Arc::new(History {
            mode,
            engine,
            limit,
            verdicts: verdicts::Verdicts::default(),
            jobs: Mutex::new(HashMap::new()),
        })
    }

    /// Mixed into the file scan cache's key: a verdict taken under one history mode must never
    /// be reused under another (a pack served under `allow` is not clean).
    pub(crate) fn cache_key(&self) -> u64 {
        match self.mode {
            Mode::Allow => 0,
            Mode::Hide => 0x6869_7374_6869_6465,
            Mode::AllowIfClean => 0x6869_7374_636c_6e31,
        }
    }

    /// The gate for a file whose complete content is `data`; `None` when the file is not an
    /// object file or history is allowed (the usual scan decides).
    pub(crate) fn gate(self: &Arc<Self>, data: &[u8]) -> Option<Gate> {
        if self.mode == Mode::Allow || (self.mode == Mode::AllowIfClean && self.engine.is_empty()) {
            return None;
        }
        let fmt = detect(data)?;
        if self.mode == Mode::Hide {
            return Some(Gate::Outcome(ScanOutcome::Refused(Arc::from(
                "git history is hidden by the profile (redaction.history = \"hide\")",
            ))));
        }
        let key = verdicts::key(&self.engine.fingerprint(), data);
        let v = match self.verdicts.get(&key) {
            Some(v) => v,
            None if fmt == Format::Loose => {
                let v = self.judge(fmt, data);
                self.verdicts.insert(key, v.clone());
                v
            }
            None => match self.wait_for(key, data) {
                Some(v) => v,
                None => {
                    return Some(Gate::Pending(format!(
                        "{PENDING} (waited {} s); it is refused until the scan finds it clean, try again shortly",
                        WAIT.as_secs()
                    )));
                }
            },
        };
        Some(Gate::Outcome(match v.reason() {
            None => ScanOutcome::Clean,
            Some(why) => ScanOutcome::Refused(Arc::from(why)),
        }))
    }

    /// A file too large to be scanned whose first bytes are `prefix`: the reason to refuse it
    /// when it is an object file (it can never be found clean), else `None`.
    pub(crate) fn refuse_unscanned(&self, prefix: &[u8]) -> Option<String> {
        if self.mode == Mode::Allow || (self.mode == Mode::AllowIfClean && self.engine.is_empty()) {
            return None;
        }
        objects::looks_like(prefix).then(|| match self.mode {
            Mode::Hide => "git history is hidden by the profile (redaction.history = \"hide\")".into(),
            _ => "git object file larger than max_scan_size cannot be scanned; history = \"allow-if-clean\" serves only object files found clean".into(),
        })
    }

    fn judge(&self, fmt: Format, data: &[u8]) -> Verdict {
        // Hostile bytes must not take the request thread (or the scan thread) down.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            judge::verdict(&self.engine, fmt, data, self.limit)
        }))
        .unwrap_or_else(|_| Verdict::Unscannable("the object reader failed".into()))
    }

    /// The verdict on the pack `data` once its scan (started here unless one runs) ends, if
    /// that is within [`WAIT`].
    fn wait_for(self: &Arc<Self>, key: [u8; 32], data: &[u8]) -> Option<Verdict> {
        let job = self.start(key, || data.to_vec());
        let done = job.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = job
            .cv
            .wait_timeout_while(done, WAIT, |d| d.is_none())
            .unwrap_or_else(|e| e.into_inner());
        done.clone()
    }

    /// The running scan of `key`, or a new one of `data()` on its own thread.
    fn start(self: &Arc<Self>, key: [u8; 32], data: impl FnOnce() -> Vec<u8>) -> Arc<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = jobs.get(&key) {
            return j.clone();
        }
        let job = Arc::new(Job::default());
        let (me, j, data) = (self.clone(), job.clone(), data());
        let spawned = std::thread::Builder::new()
            .name("veilfs-history".into())
            .spawn(move || {
                let t = std::time::Instant::now();
                let v = me.judge(Format::Pack, &data);
                tracing::info!(
                    bytes = data.len(),
                    ms = t.elapsed().as_millis() as u64,
                    clean = v == Verdict::Clean,
                    "scanned a git pack"
                );
                me.verdicts.insert(key, v.clone());
                *j.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                j.cv.notify_all();
                me.jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            });
        if let Err(e) = spawned {
            // Not cached: the next open tries again.
            *job.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(Verdict::Unscannable(
                format!("cannot start the history scan: {e}"),
            ));
            return job;
        }
        jobs.insert(key, job.clone());
        job
    }

    /// Starts the scans of the packs in `objects/pack` of the scope's own `.git` (a directory;
    /// regular files up to `max_size` bytes), so verdicts are ready when the agent runs git. Only
    /// warms the verdicts (keyed by the bytes read), so it may read by path.
    pub(crate) fn prescan(self: &Arc<Self>, scope: &Path, max_size: u64) {
        if self.mode != Mode::AllowIfClean || self.engine.is_empty() {
            return;
        }
        let dir = scope.join(".git/objects/pack");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let me = self.clone();
        let packs: Vec<_> = rd
            .flatten()
            .filter(|e| {
                e.path().extension().is_some_and(|x| x == "pack")
                    && e.metadata()
                        .is_ok_and(|m| m.file_type().is_file() && m.len() <= max_size)
            })
            .map(|e| e.path())
            .collect();
        let spawned = std::thread::Builder::new()
            .name("veilfs-history-prescan".into())
            .spawn(move || {
                for p in packs {
                    let Ok(data) = std::fs::read(&p) else {
                        continue;
                    };
                    if detect(&data) != Some(Format::Pack) {
                        continue;
                    }
                    let key = verdicts::key(&me.engine.fingerprint(), &data);
                    if me.verdicts.get(&key).is_some() {
                        continue;
                    }
                    let job = me.start(key, || data);
                    // One pack at a time: the machine has other work.
                    let done = job.done.lock().unwrap_or_else(|e| e.into_inner());
                    drop(job.cv.wait_while(done, |d| d.is_none()));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the history prescan: {e}");
        }
    }

    /// Loads verdicts saved by an earlier mount; a bad file is logged and ignored.
    pub(crate) fn load(&self, path: &Path) {
        match self.verdicts.load(path) {
            Ok(n) => tracing::info!(path = %path.display(), n, "loaded git history verdicts"),
            Err(e) => tracing::warn!(path = %path.display(), "ignoring git history verdicts: {e}"),
        }
    }

    /// Saves the verdicts for the next mount.
    pub(crate) fn save(&self, path: &Path) {
        if self.verdicts.is_empty() {
            return;
        }
        match self.verdicts.save(path) {
            Ok(n) => tracing::info!(path = %path.display(), n, "saved git history verdicts"),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot save git history verdicts: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::objects::tests::{loose_blob, pack_of};
    use super::*;

    const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

    fn gate(mode: Mode) -> Arc<History> {
        History::new(
            mode,
            Arc::new(Engine::load(&["secrets".into()], &[]).unwrap()),
            1 << 20,
        )
    }

    fn refused(g: Option<Gate>) -> Option<String> {
        match g {
            Some(Gate::Outcome(ScanOutcome::Refused(w))) => Some(w.to_string()),
            Some(Gate::Outcome(ScanOutcome::Clean)) => None,
            Some(Gate::Pending(w)) => panic!("pending: {w}"),
            Some(Gate::Outcome(o)) => panic!("unexpected {o:?}"),
            None => panic!("not gated"),
        }
    }

    #[test]
    fn modes_gate_object_files_only() {
        let dirty = pack_of(&[(objects::Kind::Blob, format!("t={TOKEN}\n").as_bytes())]);
        let clean = loose_blob(b"hello\n");
        assert!(gate(Mode::Allow).gate(&dirty).is_none());
        assert!(gate(Mode::AllowIfClean).gate(b"plain text\n").is_none());
        assert!(
            refused(gate(Mode::Hide).gate(&clean))
                .unwrap()
                .contains("hidden")
        );
        let g = gate(Mode::AllowIfClean);
        assert_eq!(refused(g.gate(&clean)), None);
        let why = refused(g.gate(&dirty)).unwrap();
        assert!(
            why.contains("`github-pat`") && !why.contains(TOKEN),
            "{why}"
        );
        // The verdict is cached by content: the same bytes are not scanned again.
        assert_eq!(g.verdicts.len(), 2);
        refused(g.gate(&dirty)).unwrap();
        assert_eq!(g.verdicts.len(), 2);
        // Too large to scan: an object file is refused by its first bytes, other files are not.
        assert!(g.refuse_unscanned(&dirty[..16]).is_some());
        assert!(g.refuse_unscanned(b"ELF......").is_none());
        assert!(gate(Mode::Allow).refuse_unscanned(&dirty[..16]).is_none());
        assert_ne!(gate(Mode::Allow).cache_key(), g.cache_key());
        assert_eq!(
            database_of(Path::new("sub/.git/objects/pack/p.pack")),
            Path::new("sub/.git/objects")
        );
        assert_eq!(database_of(Path::new("img/logo.png")), Path::new("img"));
    }

    #[test]
    fn a_pack_waits_for_its_background_scan() {
        let g = gate(Mode::AllowIfClean);
        let p = pack_of(&[(objects::Kind::Blob, b"fine\n")]);
        // A scan already running (started by the prescan) is joined, not duplicated.
        let key = verdicts::key(&g.engine.fingerprint(), &p);
        let job = g.start(key, || p.clone());
        assert_eq!(refused(g.gate(&p)), None);
        assert!(job.done.lock().unwrap().is_some());
        assert_eq!(g.verdicts.get(&key), Some(Verdict::Clean));
    }
}
