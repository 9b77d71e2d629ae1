//! Mount lifecycle: refuse unsafe or confusing requests before anything is mounted, serve the
//! filesystem in the foreground, and always unmount on SIGINT/SIGTERM/SIGHUP.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::info;

use crate::backing;
use crate::fs::view::Viewer;
use crate::fs::{FsConfig, VeilFs};
use crate::guard::Guard;
use crate::overlay::OverlayMount;
use crate::policy::Policy;
use crate::profile::{Profile, Unscannable, WriteMode};
use crate::store::Store;

/// What `veilfs mount` was asked to do.
pub struct MountRequest {
    pub scope: PathBuf,
    pub mountpoint: PathBuf,
    pub profile: Profile,
    pub mode: Option<WriteMode>,
    pub store: Option<PathBuf>,
    pub allow_other: bool,
    /// A copy of every audit line: a file, or `-` for stdout (see `audit`).
    pub audit_log: Option<PathBuf>,
    /// Ed25519 seed that signs the audit chain.
    pub audit_key: Option<PathBuf>,
}

/// Is `p` a mount point (per /proc/self/mountinfo, which also sees same-device bind mounts)?
pub fn is_mount_point(p: &Path) -> bool {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.as_os_str().as_bytes();
    info.split(|b| *b == b'\n').any(|line| {
        line.split(|b| *b == b' ')
            .nth(4)
            .map(|mp| unescape_mountinfo(mp) == want)
            .unwrap_or(false)
    })
}

/// Where the `veilfs mount` process `pid` (serving `scope`) has its mount: the mount point
/// argument of its command line (resolved against its working directory) if that is mounted,
/// else the one veilfs mount of `scope` in /proc/self/mountinfo. For messages that tell an
/// admin what to unmount.
pub fn find_mountpoint(pid: u32, scope: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.iter().any(|a| *a == b"mount")
            && let Some(last) = args.last()
        {
            let p = PathBuf::from(std::ffi::OsString::from_vec(last.to_vec()));
            let abs = if p.is_absolute() {
                p
            } else {
                std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?.join(p)
            };
            if let Ok(c) = abs.canonicalize()
                && is_mount_point(&c)
            {
                return Some(c);
            }
        }
    }
    let want = format!("veilfs:{}", scope.display());
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let found: Vec<PathBuf> = info
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
            let dash = fields.iter().position(|f| *f == b"-")?;
            let source = unescape_mountinfo(fields.get(dash + 2)?);
            (source == want.as_bytes())
                .then(|| PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(fields[4]))))
        })
        .collect();
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Checks a scope and mount point pair; returns both canonicalised.
pub fn preflight(scope: &Path, mountpoint: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let scope_c = scope
        .canonicalize()
        .with_context(|| format!("scope {}: does not exist", scope.display()))?;
    if !scope_c.is_dir() {
        bail!("scope {}: not a directory", scope.display());
    }
    let mp_c = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}: does not exist", mountpoint.display()))?;
    if !mp_c.is_dir() {
        bail!("mount point {}: not a directory", mountpoint.display());
    }
    if is_mount_point(&mp_c) {
        bail!(
            "mount point {}: already a mount point",
            mountpoint.display()
        );
    }
    let mut rd = std::fs::read_dir(&mp_c)
        .with_context(|| format!("mount point {}: cannot list", mountpoint.display()))?;
    if rd.next().is_some() {
        bail!("mount point {}: not empty", mountpoint.display());
    }
    if mp_c.starts_with(&scope_c) {
        bail!(
            "mount point {} is inside the scope {}: the agent's view would contain itself",
            mp_c.display(),
            scope_c.display()
        );
    }
    if scope_c.starts_with(&mp_c) {
        bail!(
            "scope {} is inside the mount point {}",
            scope_c.display(),
            mp_c.display()
        );
    }
    Ok((scope_c, mp_c))
}

/// The snapshot store for this mount: `--store`, else the profile's, else
/// `$XDG_DATA_HOME/veilfs/<scope-id>`. Never inside the scope or the mount point.
fn store_dir(req: &MountRequest, scope: &Path, mountpoint: &Path) -> anyhow::Result<PathBuf> {
    let dir = match (&req.store, &req.profile.write.store) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => {
            let base = std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                .context("neither XDG_DATA_HOME nor HOME is set: pass --store")?;
            let id = blake3::hash(scope.as_os_str().as_bytes()).to_hex();
            let name = scope
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "root".into());
            base.join("veilfs").join(format!("{name}-{}", &id[..12]))
        }
    };
    let abs = absolute_lexical(&dir)?;
    if abs.starts_with(scope) {
        bail!(
            "store {} is inside the scope {}: the agent could read or change its own undo history",
            dir.display(),
            scope.display()
        );
    }
    if abs.starts_with(mountpoint) {
        bail!(
            "store {} is inside the mount point {}",
            dir.display(),
            mountpoint.display()
        );
    }
    Ok(abs)
}

/// The absolute form of a path that may not exist yet: its deepest existing ancestor is
/// canonicalised (so a symlink cannot smuggle the store into the scope), the rest appended.
fn absolute_lexical(p: &Path) -> anyhow::Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = existing
        .canonicalize()
        .with_context(|| format!("{}", existing.display()))?;
    for name in rest.iter().rev() {
        if name == ".." {
            bail!("{}: `..` after a missing directory", p.display());
        }
        out.push(name);
    }
    Ok(out)
}

/// Mounts and serves until unmounted (by `veilfs unmount`, `umount`, or a signal).
pub fn mount_and_serve(req: MountRequest) -> anyhow::Result<()> {
    // Before any thread exists (the watcher, fuser's workers): only the signal thread may
    // receive SIGINT/SIGTERM/SIGHUP, so they always end in a clean unmount.
    let signals = block_signals();
    let (scope, mountpoint) = preflight(&req.scope, &req.mountpoint)?;
    let mut policy = Policy::new(&req.profile).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(mode) = req.mode {
        policy = policy.with_mode(mode);
    }
    let mode = policy.mode();
    let engine = req
        .profile
        .redaction_engine()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = Arc::new(policy);
    let viewer = Viewer::new(
        Arc::new(engine),
        policy.clone(),
        req.profile.redaction.max_scan_size,
        req.profile.redaction.unscannable == Unscannable::Allow,
    );
    // In overlay mode veilfs serves the merged tree; the real folder is only its lower layer.
    let mut overlay = None;
    let mut divert = None;
    let mut masked = None;
    // The audit trail's session: the journal's in writable modes, its own in read-only mode.
    let mut audit_session = crate::audit::readonly_session_id();
    let guard = match mode {
        WriteMode::ReadOnly => None,
        WriteMode::Snapshot | WriteMode::Overlay => {
            let dir = store_dir(&req, &scope, &mountpoint)?;
            let store = Store::create_or_open(&dir)
                .map_err(|e| anyhow::anyhow!("store {}: {e}", dir.display()))?;
            // A half-applied commit leaves the real folder between two states: serving it (or
            // stacking new changes on it) would make the commit impossible to finish cleanly.
            if let Some(p) = crate::overlay::pending_commit(&store)? {
                bail!("refusing to mount: {}", p.describe(&dir));
            }
            if mode == WriteMode::Overlay {
                overlay = Some(OverlayMount::mount(&dir, &scope)?);
            } else {
                divert = Some(Arc::new(crate::fs::divert::Divert::open(&dir, &scope)?));
            }
            let g = Guard::start(
                store,
                &scope,
                mode.as_str(),
                &req.profile.name,
                req.profile.write.snapshot_max_size,
                req.profile.write.store_quota,
            )
            .map_err(|e| anyhow::anyhow!("store {}: {e}", dir.display()))?;
            info!(store = %dir.display(), session = g.session_id(), "{mode} mode");
            audit_session = g.session_id().to_string();
            // Edits of masked files merge into the real file (snapshot) or at commit (overlay).
            masked = Some(Arc::new(crate::fs::masked_edit::MaskedEdits::new(
                &dir,
                mode == WriteMode::Snapshot,
            )?));
            Some(Arc::new(g))
        }
    };
    // Scan verdicts live in the store (made for them in read-only mode, so a later writable
    // mount finds a proper store), never in the scope or the mount: a copy the agent could
    // write would let it mark a secret-bearing file clean.
    let scan_cache_file = if req.profile.cache.persist_scans && viewer.redaction_enabled() {
        match store_dir(&req, &scope, &mountpoint).and_then(|d| {
            Store::create_or_open(&d).map_err(|e| anyhow::anyhow!("store {}: {e}", d.display()))?;
            Ok(d.join("scan-cache"))
        }) {
            Ok(p) => {
                viewer.load_scans(&p);
                Some(p)
            }
            Err(e) => {
                tracing::warn!("scan results will not be saved: {e:#}");
                None
            }
        }
    } else {
        None
    };
    // New objects get exactly the mode the agent asked for (the kernel already applied its umask).
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    let fd_limit = backing::raise_fd_limit();
    let backing_root = overlay
        .as_ref()
        .map(|o| o.merged().to_path_buf())
        .unwrap_or_else(|| scope.clone());
    let root = backing::open_root(&backing_root)
        .with_context(|| format!("open {}", backing_root.display()))?;
    let fs = VeilFs::new(
        root,
        FsConfig {
            policy,
            viewer,
            ttl: if mode == WriteMode::ReadOnly {
                Duration::from_millis(req.profile.cache.ttl_ms)
            } else {
                Duration::ZERO
            },
            guard,
            passthrough: true,
            divert,
            emulate_dev0: mode == WriteMode::Overlay,
            no_open: false,
            scan_cache_file,
            masked,
        },
        // Half the fd limit for held inodes; the rest for open files, the store and the kernel.
        (fd_limit / 2) as usize,
    )
    .with_context(|| format!("stat scope {}", scope.display()))?;
    let mut fs = fs;
    // Read-only mounts watch the folder so a long TTL cannot serve stale data.
    let invalidator = fs.invalidator();
    // `ttl_ms = 0` asks for no caching at all: then there is nothing for a watcher to keep fresh.
    let watch =
        if mode == WriteMode::ReadOnly && req.profile.cache.watch && req.profile.cache.ttl_ms > 0 {
            match crate::watch::start(&scope, invalidator.clone()) {
                Ok(w) => {
                    fs.set_ttl(Duration::from_millis(req.profile.cache.watched_ttl_ms));
                    // Only the watcher's invalidations make kernel caches kept across opens
                    // safe, so no-open mode needs it.
                    fs.set_no_open(req.profile.cache.no_open);
                    Some(w)
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot watch {} ({e}); outside changes show after cache.ttl_ms",
                        scope.display()
                    );
                    None
                }
            }
        } else {
            None
        };

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("veilfs:{}", scope.display())),
        fuser::MountOption::Subtype("veilfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if mode == WriteMode::ReadOnly {
        config.mount_options.push(fuser::MountOption::RO);
    }
    if req.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(
        std::thread::available_parallelism()
            .map(|n| n.get() * 2)
            .unwrap_or(4)
            .clamp(4, 16),
    );
    config.clone_fd = true;

    // The audit trail lives in the store beside the journal (a read-only mount has one too,
    // for its scan results); `--audit-log` adds a copy for a SIEM.
    let audit_store = match store_dir(&req, &scope, &mountpoint) {
        Ok(d) => {
            Store::create_or_open(&d).map_err(|e| anyhow::anyhow!("store {}: {e}", d.display()))?;
            Some(d)
        }
        Err(e) if mode == WriteMode::ReadOnly => {
            tracing::warn!("no store for the audit trail: {e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    let audit_sink = Arc::new(crate::audit::Sink::open(&crate::audit::AuditConfig {
        store_dir: audit_store,
        session: audit_session,
        mountpoint: mountpoint.clone(),
        log: req.audit_log.clone(),
        key: req.audit_key.clone(),
    })?);
    crate::audit::install(audit_sink);
    let session = match fuser::Session::new(fs, &mountpoint, &config)
        .with_context(|| format!("mount at {}", mountpoint.display()))
    {
        Ok(s) => s,
        Err(e) => {
            crate::audit::uninstall();
            return Err(e);
        }
    };
    invalidator.set_notifier(session.notifier());
    // Tests and scripts wait for this line instead of polling.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "veilfs: mounted {}", mountpoint.display());
        let _ = out.flush();
    }
    // After the "mounted" line, which `--audit-log -` must not precede.
    crate::audit::emit(&crate::audit::AuditEvent::Mounted {
        scope: scope.clone(),
        mountpoint: mountpoint.clone(),
        mode: mode.as_str().to_string(),
        profile: req.profile.name.clone(),
    });
    {
        let mountpoint = mountpoint.clone();
        std::thread::Builder::new()
            .name("veilfs-signals".into())
            .spawn(move || {
                let sig = wait_signal(&signals);
                info!("signal {sig}: unmounting");
                if let Err(e) = unmount(&mountpoint) {
                    tracing::error!("unmount after signal {sig} failed: {e:#}");
                }
            })
            .context("spawn signal thread")?;
    }
    info!(
        scope = %scope.display(),
        mountpoint = %mountpoint.display(),
        profile = %req.profile.name,
        mode = ?mode,
        fd_limit,
        "mounted"
    );
    // Every unmount is ours (`veilfs unmount`, `umount`, or the signal thread calling
    // [`unmount`]), never fuser's: its mount handle unmounts again when dropped, which fails
    // with EINVAL on a mount that is already gone and logs "Failed to umount filesystem" (its
    // check for "still mounted" cannot tell). So the session runs in the background with the
    // handle taken out of it (`spawn`), the handle is never dropped (`forget`), and the FUSE
    // device it keeps open is closed here instead, so the kernel releases the connection (and
    // the files passthrough registered with it) as the process exits.
    let dev_raw = session.as_fd().as_raw_fd();
    let mut bg = session
        .spawn()
        .with_context(|| format!("serve {}", mountpoint.display()))?;
    let worker = std::mem::replace(
        &mut bg.guard,
        std::thread::spawn(|| -> std::io::Result<()> { Ok(()) }),
    );
    // fuser returns a worker's error only once every worker has stopped, which happens at the
    // unmount. The requests themselves were answered one by one, so such an error is logged,
    // not turned into a failed mount.
    match worker.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("FUSE session ended with `{e}`"),
        Err(_) => tracing::error!("FUSE session thread panicked"),
    }
    // A session that ended on an error leaves the mount in place: take it down.
    if is_mount_point(&mountpoint)
        && let Err(e) = unmount(&mountpoint)
    {
        tracing::warn!("{e:#}");
    }
    // The watcher and the invalidator hold notifiers on the device: gone before it is.
    drop(watch);
    drop(invalidator);
    std::mem::forget(bg);
    release_device(dev_raw);
    drop(overlay);
    let ioctls = unsupported_ioctls();
    if ioctls.total > 0 {
        info!(
            count = ioctls.total,
            commands = %ioctls.describe(),
            "unsupported ioctls answered ENOTTY during the session"
        );
    }
    crate::audit::emit(&crate::audit::AuditEvent::Unmounted {
        mountpoint: mountpoint.clone(),
    });
    crate::audit::uninstall();
    info!("unmounted {}", mountpoint.display());
    Ok(())
}

/// Unsupported ioctls the mount answered (ENOTTY), by command: counted, never logged per call
/// (every `less` or Python `open()` sends TCGETS).
#[derive(Debug, Default, Clone)]
pub struct IoctlCount {
    pub total: u64,
    /// The first few distinct commands, with their counts.
    pub by_cmd: std::collections::BTreeMap<u32, u64>,
}

impl IoctlCount {
    fn describe(&self) -> String {
        let mut v: Vec<String> = self
            .by_cmd
            .iter()
            .map(|(c, n)| format!("{c:#x}x{n}"))
            .collect();
        if self.by_cmd.values().sum::<u64>() < self.total {
            v.push("...".into());
        }
        v.join(" ")
    }
}

static IOCTLS: std::sync::Mutex<IoctlCount> = std::sync::Mutex::new(IoctlCount {
    total: 0,
    by_cmd: std::collections::BTreeMap::new(),
});

/// Counts one unsupported ioctl (called by the filesystem's `ioctl` handler).
pub(crate) fn note_unsupported_ioctl(cmd: u32) {
    let mut c = IOCTLS.lock().unwrap_or_else(|e| e.into_inner());
    c.total += 1;
    if c.by_cmd.len() < 16 || c.by_cmd.contains_key(&cmd) {
        *c.by_cmd.entry(cmd).or_default() += 1;
    }
}

/// The unsupported ioctls counted so far in this process.
pub fn unsupported_ioctls() -> IoctlCount {
    IOCTLS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Closes the FUSE device fd `raw`, whose owners (fuser's forgotten mount handle and
/// senders) will never use or close it again, by putting /dev/null in its place: a stray late
/// write then goes nowhere rather than to a reused fd number.
fn release_device(raw: std::os::fd::RawFd) {
    use std::os::fd::AsRawFd;
    match std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto an fd number this process owns (the device); the source is a valid
        // fd we hold for the duration of the call.
        Ok(null) => unsafe {
            libc::dup2(null.as_raw_fd(), raw);
        },
        Err(e) => tracing::warn!("cannot release the FUSE device: /dev/null: {e}"),
    }
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zeroed set; pthread_sigmask on the calling thread,
    // inherited by every thread spawned after it, so only the signal thread receives them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: set is a valid, initialised sigset; sig is a valid out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Unmounts a veilfs mount point.
pub fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let mp = mountpoint
        .canonicalize()
        .with_context(|| format!("{}: does not exist", mountpoint.display()))?;
    if !is_mount_point(&mp) {
        bail!("{}: not a mount point", mountpoint.display());
    }
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // Not root: let the setuid helper do it.
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(err).with_context(|| format!("unmount {}", mp.display())),
    }
}
