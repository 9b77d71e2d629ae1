//! Live policy: the profile file and the rule files it loads are watched, and a valid change
//! is put in force without a remount ([`crate::live::LivePolicy::replace`]), for every new
//! lookup and open; the caller's `on_change` then drops the kernel's cached names, attributes
//! and pages, so a newly hidden path disappears at once and a newly masked file is served
//! masked at its next read. Handles opened before keep the view they were given.
//!
//! An invalid change (bad TOML, unknown field, bad glob, a rule that does not compile, a file
//! that vanished) is rejected: an error naming FILE:LINE is logged and audited
//! (`policy-rejected`) and the old policy stays in force. `write.mode` cannot change live (the
//! mount's write path, store and kernel mount options were built for it): such a change is
//! rejected too. Other sections that were read once at mount (`[cache]`, `[breaker]`, the
//! store settings of `[write]`) keep their mounted values until the next mount.
//!
//! The agent must not be able to change its own policy: a profile or rule file inside the
//! scope (which the agent may write, or which a rename through the mount could replace) is
//! never watched; the mount warns and keeps the policy it started with.
//!
//! Built on inotify directly, like [`crate::watch`]: it watches the files' directories (editors
//! save by writing a temp file and renaming it over), for finished writes and renames only, so
//! a half-written file is never loaded.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use inotify::{Inotify, WatchMask};
use tracing::{error, info, warn};

use crate::live::LivePolicy;
use crate::manifest::Manifest;
use crate::policy::Policy;
use crate::profile::{Profile, WriteMode};
use crate::redact::Engine;

/// How the mount compiled its policy, to compile a changed profile the same way.
#[derive(Clone)]
pub(crate) struct ReloadSpec {
    /// The profile file (absolute).
    pub profile: PathBuf,
    /// `--mode`, if given.
    pub mode_override: Option<WriteMode>,
    /// `write.mode` as the profile said at mount.
    pub profile_mode: WriteMode,
    /// `--manifest`, and its path for messages.
    pub manifest: Option<(Manifest, String)>,
}

/// What the redaction engine is built from: the same key, the same engine (compiling the
/// built-in rule sets takes a while; a change to visibility alone need not wait for it).
pub(crate) fn engine_key(profile: &Profile) -> blake3::Hash {
    let r = &profile.redaction;
    let mut h = blake3::Hasher::new();
    h.update(&r.max_scan_size.to_le_bytes());
    for s in &r.rule_sets {
        h.update(s.as_bytes()).update(b"\0");
    }
    h.update(b"\0files\0");
    for f in &r.rule_files {
        h.update(f.as_os_str().as_encoded_bytes()).update(b"\0");
        match std::fs::read(f) {
            Ok(b) => h.update(&(b.len() as u64).to_le_bytes()).update(&b),
            Err(_) => h.update(b"\0missing"),
        };
    }
    h.finalize()
}

/// A compiled policy and engine, ready to put in force.
pub(crate) struct Compiled {
    pub profile: Profile,
    pub policy: Policy,
    pub engine: Arc<Engine>,
    pub engine_key: blake3::Hash,
}

/// Compiles the profile as it is now on disk; `Err` is the message to log (with FILE:LINE).
/// `current` (the engine in force and its [`engine_key`]) is reused when the rules did not
/// change.
pub(crate) fn compile(
    spec: &ReloadSpec,
    current: Option<(blake3::Hash, Arc<Engine>)>,
) -> Result<Compiled, String> {
    let profile = Profile::load(&spec.profile).map_err(|e| e.to_string())?;
    if profile.write.mode != spec.profile_mode {
        let text = std::fs::read_to_string(&spec.profile).unwrap_or_default();
        return Err(format!(
            "{}:{}: write.mode: cannot change while mounted (it was {} at mount, now {}); \
             unmount and mount again to change it",
            spec.profile.display(),
            mode_line(&text),
            spec.profile_mode,
            profile.write.mode
        ));
    }
    let mut policy = Policy::new(&profile).map_err(|e| e.to_string())?;
    if let Some(m) = spec.mode_override {
        policy = policy.with_mode(m);
    }
    if let Some((m, origin)) = &spec.manifest {
        let f = &m.capabilities.files;
        policy = policy
            .with_manifest(&f.read, &f.write, origin)
            .map_err(|e| e.to_string())?;
    }
    let key = engine_key(&profile);
    let engine = match current {
        Some((k, e)) if k == key => e,
        _ => Arc::new(profile.redaction_engine().map_err(|e| e.to_string())?),
    };
    Ok(Compiled {
        profile,
        policy,
        engine,
        engine_key: key,
    })
}

/// The line of `mode = ...` in the `[write]` table (1 if not found: a profile that omits it
/// and inherits the default).
fn mode_line(text: &str) -> usize {
    let mut in_write = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            in_write = t.trim_start_matches('[').trim_start().starts_with("write")
                && t.trim_end_matches(']').trim_end().ends_with("write");
        } else if in_write && t.starts_with("mode") && t[4..].trim_start().starts_with('=') {
            return i + 1;
        }
    }
    1
}

/// The files a profile's policy comes from: the profile and its rule files, each also where a
/// symlink to it leads (an edit of the target is a change too).
pub(crate) fn sources(profile_path: &Path, profile: &Profile) -> Vec<PathBuf> {
    let mut v = vec![profile_path.to_path_buf()];
    let base = profile_path.parent().unwrap_or(Path::new("/"));
    for f in &profile.redaction.rule_files {
        v.push(if f.is_absolute() {
            f.clone()
        } else {
            base.join(f)
        });
    }
    let real: Vec<PathBuf> = v
        .iter()
        .filter_map(|f| f.canonicalize().ok().filter(|c| c != f))
        .collect();
    v.extend(real);
    v
}

/// The first of `files` that lies inside `scope` (canonical), following symlinks.
pub(crate) fn inside_scope(scope: &Path, files: &[PathBuf]) -> Option<PathBuf> {
    files
        .iter()
        .find(|f| {
            let real = f.canonicalize().ok().or_else(|| {
                let parent = f.parent()?.canonicalize().ok()?;
                Some(parent.join(f.file_name()?))
            });
            real.is_some_and(|r| r.starts_with(scope))
        })
        .cloned()
}

/// Keeps the watch alive; dropping it stops the thread.
pub(crate) struct PolicyWatch {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches the policy's sources; puts valid changes in force in `live` and calls `on_change`.
/// `None` (with a warning) when a source is inside `scope`.
pub(crate) fn start(
    spec: ReloadSpec,
    scope: &Path,
    profile: &Profile,
    live: Arc<LivePolicy>,
    on_change: Box<dyn Fn() + Send>,
) -> anyhow::Result<Option<PolicyWatch>> {
    let files = sources(&spec.profile, profile);
    if let Some(f) = inside_scope(scope, &files) {
        warn!(
            file = %f.display(),
            "live policy is off: {} is inside the scope, where the agent could change its own \
             policy; the policy stays as mounted (keep profiles and rule files outside the scope)",
            f.display()
        );
        return Ok(None);
    }
    let (stop_rx, stop_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(std::io::Error::from)
        .context("pipe2")?;
    let mut w = Watcher {
        inotify: Inotify::init().context("inotify_init")?,
        files: Vec::new(),
        dirs: HashSet::new(),
        digest: digest(&files),
        engine_key: engine_key(profile),
        spec,
        scope: scope.to_path_buf(),
        live,
        on_change,
    };
    w.watch(files)?;
    let thread = std::thread::Builder::new()
        .name("veilfs-policy".into())
        .spawn(move || w.run(stop_rx))
        .context("start the policy watcher thread")?;
    Ok(Some(PolicyWatch {
        stop: Some(stop_tx),
        thread: Some(thread),
    }))
}

/// A hash of the sources' bytes: a save that changes nothing (an editor's touch) changes no
/// policy and drops no cache.
fn digest(files: &[PathBuf]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        match std::fs::read(f) {
            Ok(b) => h.update(&(b.len() as u64).to_le_bytes()).update(&b),
            Err(_) => h.update(b"\0missing"),
        };
    }
    h.finalize()
}

struct Watcher {
    inotify: Inotify,
    /// The sources by (directory, name).
    files: Vec<PathBuf>,
    dirs: HashSet<PathBuf>,
    digest: blake3::Hash,
    /// The [`engine_key`] of the engine in force.
    engine_key: blake3::Hash,
    spec: ReloadSpec,
    scope: PathBuf,
    live: Arc<LivePolicy>,
    on_change: Box<dyn Fn() + Send>,
}

impl Watcher {
    fn watch(&mut self, files: Vec<PathBuf>) -> anyhow::Result<()> {
        for f in &files {
            let dir = f.parent().unwrap_or(Path::new("/")).to_path_buf();
            if self.dirs.insert(dir.clone()) {
                let mask = WatchMask::CLOSE_WRITE
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    | WatchMask::DELETE
                    | WatchMask::ONLYDIR;
                self.inotify
                    .watches()
                    .add(&dir, mask)
                    .with_context(|| format!("watch {}", dir.display()))?;
            }
        }
        self.files = files;
        Ok(())
    }

    fn concerns(&self, name: Option<&OsString>) -> bool {
        name.is_some_and(|n| {
            self.files
                .iter()
                .any(|f| f.file_name() == Some(n.as_os_str()))
        })
    }

    /// Waits for events; true when one concerns a source (false: stop, or the watch broke).
    fn wait(&mut self, stop: &OwnedFd, timeout: Option<&rustix::event::Timespec>) -> Option<bool> {
        use rustix::event::{PollFd, PollFlags};
        let fd = self.inotify.as_fd();
        let mut pfd = [
            PollFd::new(&fd, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut pfd, timeout) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Some(false),
            Err(e) => {
                warn!("policy watcher: poll: {e}");
                return None;
            }
        }
        if !pfd[1].revents().is_empty() {
            return None;
        }
        if pfd[0].revents().is_empty() {
            return Some(false);
        }
        let mut buf = [0u8; 4096];
        match self.inotify.read_events(&mut buf) {
            Ok(evs) => {
                let names: Vec<Option<OsString>> =
                    evs.map(|e| e.name.map(|n| n.to_os_string())).collect();
                Some(names.iter().any(|n| self.concerns(n.as_ref())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(false),
            Err(e) => {
                warn!("policy watcher stopped: {e}");
                None
            }
        }
    }

    fn run(mut self, stop: OwnedFd) {
        // A save is often several events (temp file, rename; profile then rule file): wait
        // until the sources have been quiet for a moment, then load them once.
        let quiet = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        loop {
            match self.wait(&stop, None) {
                None => return,
                Some(false) => continue,
                Some(true) => {}
            }
            loop {
                match self.wait(&stop, Some(&quiet)) {
                    None => return,
                    Some(true) => continue,
                    Some(false) => break,
                }
            }
            self.reload();
        }
    }

    fn reload(&mut self) {
        let d = digest(&self.files);
        if d == self.digest {
            return;
        }
        self.digest = d;
        let current = (self.engine_key, self.live.current().engine.clone());
        match compile(&self.spec, Some(current)) {
            Ok(c) => {
                let files = sources(&self.spec.profile, &c.profile);
                if let Some(f) = inside_scope(&self.scope, &files) {
                    return self.reject(format!(
                        "{}: now inside the scope, where the agent could change it",
                        f.display()
                    ));
                }
                self.engine_key = c.engine_key;
                let generation = self.live.replace(c.policy, c.engine);
                (self.on_change)();
                let why = format!(
                    "{} changed: policy generation {generation} in force",
                    self.spec.profile.display()
                );
                info!("{why}");
                crate::audit::emit(&crate::audit::AuditEvent::Control {
                    action: "policy-reloaded",
                    reason: why,
                });
                if let Err(e) = self.watch(files.clone()) {
                    warn!("policy watcher: {e:#}; changes to the new rule files are not seen");
                }
                self.digest = digest(&self.files);
            }
            Err(e) => self.reject(e),
        }
    }

    fn reject(&self, e: String) {
        error!("policy change rejected, the old policy stays in force: {e}");
        crate::audit::emit(&crate::audit::AuditEvent::Control {
            action: "policy-rejected",
            reason: e,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, text: &str) -> ReloadSpec {
        let p = dir.join("p.toml");
        std::fs::write(&p, text).unwrap();
        ReloadSpec {
            profile: p,
            mode_override: None,
            profile_mode: WriteMode::ReadOnly,
            manifest: None,
        }
    }

    #[test]
    fn a_valid_profile_compiles() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path(), "version = 1\n[visibility]\ndeny = [\"x\"]\n");
        let c = compile(&s, None).unwrap();
        assert!(
            c.policy
                .path_visibility(Path::new("x"), crate::policy::EntryKind::File, 1, None)
                .is_err()
        );
    }

    #[test]
    fn an_invalid_profile_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(
            d.path(),
            "version = 1\n[visibility]\ndeny = [\"x\"]\nhdie = 1\n",
        );
        let e = compile(&s, None).err().unwrap();
        assert!(e.contains("p.toml:4:"), "{e}");
        assert!(e.contains("visibility.hdie"), "{e}");
    }

    #[test]
    fn the_write_mode_cannot_change_live() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path(), "version = 1\n[write]\nmode = \"snapshot\"\n");
        let e = compile(&s, None).err().unwrap();
        assert!(
            e.contains("p.toml:3: write.mode: cannot change while mounted"),
            "{e}"
        );
        assert!(e.contains("read-only") && e.contains("snapshot"), "{e}");
    }

    #[test]
    fn sources_inside_the_scope_are_found() {
        let scope = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let sc = scope.path().canonicalize().unwrap();
        let inside = scope.path().join("p.toml");
        let outside = other.path().join("p.toml");
        std::fs::write(&outside, "").unwrap();
        assert_eq!(inside_scope(&sc, std::slice::from_ref(&outside)), None);
        // Not existing yet counts too; so does a symlink into the scope.
        assert_eq!(
            inside_scope(&sc, std::slice::from_ref(&inside)),
            Some(inside.clone())
        );
        let link = other.path().join("link.toml");
        std::fs::write(&inside, "").unwrap();
        std::os::unix::fs::symlink(&inside, &link).unwrap();
        assert_eq!(
            inside_scope(&sc, std::slice::from_ref(&link)),
            Some(link.clone())
        );
    }
}
