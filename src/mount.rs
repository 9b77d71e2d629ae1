//! Mount lifecycle: refuse unsafe or confusing requests before anything is mounted, serve the
//! filesystem in the foreground, and always unmount on SIGINT/SIGTERM/SIGHUP.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};
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
pub(crate) struct MountRequest {
    pub scope: PathBuf,
    pub mountpoint: PathBuf,
    pub profile: Profile,
    pub mode: Option<WriteMode>,
    pub store: Option<PathBuf>,
    pub allow_other: bool,
    /// The grant's lifetime: the mount ends by itself (as if revoked) when it runs out.
    pub expires: Option<Duration>,
    /// A copy of every audit line: a file, or `-` for stdout (see `audit`).
    pub audit_log: Option<PathBuf>,
    /// Ed25519 seed that signs the audit chain.
    pub audit_key: Option<PathBuf>,
    /// The agent's manifest: the view is the intersection of it and the profile.
    pub manifest: Option<PathBuf>,
    /// Serve the egress proxy of `veilfs run --sandbox` on this Unix socket (see `egress`),
    /// when the profile (and the manifest) allow any destination.
    pub egress_socket: Option<PathBuf>,
}

pub(crate) use crate::fs::ioctls::unsupported_ioctls;
pub(crate) use crate::mountinfo::is_mount_point;

/// How long a mount may live: what `--expires` asked for, never more than the profile's
/// `[guardrails] max_expires`, which also applies when `--expires` is not given.
pub(crate) fn grant_lifetime(
    asked: Option<Duration>,
    max: Option<Duration>,
) -> Result<Option<Duration>, String> {
    match (asked, max) {
        (Some(a), Some(m)) if a > m => Err(format!(
            "--expires {} exceeds the profile's maximum ([guardrails] max_expires = \"{}\")",
            crate::profile::duration::format(a),
            crate::profile::duration::format(m)
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, m) => Ok(m),
    }
}

/// Checks a scope and mount point pair; returns both canonicalised.
pub(crate) fn preflight(scope: &Path, mountpoint: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
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
/// `$XDG_DATA_HOME/veilfs/<scope-id>`. Never inside the scope or the mount point. `veilfs run`
/// resolves it too, to hide the store from its sandbox and to name it in its summary.
pub(crate) fn store_dir(
    req: &MountRequest,
    scope: &Path,
    mountpoint: &Path,
) -> anyhow::Result<PathBuf> {
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
pub(crate) fn mount_and_serve(req: MountRequest) -> anyhow::Result<()> {
    // Before any thread exists (the watcher, fuser's workers): only the signal thread may
    // receive SIGINT/SIGTERM/SIGHUP, so they always end in a clean unmount.
    let signals = block_signals();
    let (scope, mountpoint) = preflight(&req.scope, &req.mountpoint)?;
    let mut policy = Policy::new(&req.profile).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(mode) = req.mode {
        policy = policy.with_mode(mode);
    }
    let mut manifest = None;
    if let Some(path) = &req.manifest {
        let m = crate::manifest::Manifest::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let origin = path.display().to_string();
        policy = policy
            .with_manifest(
                &m.capabilities.files.read,
                &m.capabilities.files.write,
                &origin,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        info!(manifest = %origin, agent = %m.name, "view narrowed to the agent's manifest");
        manifest = Some((m, origin));
    }
    // Before anything is mounted, so a proxy that cannot listen fails the mount cleanly; it
    // serves until this function returns.
    let _egress = match &req.egress_socket {
        Some(socket) => {
            let allow = crate::egress::AllowList::new(
                &req.profile.network.allow,
                manifest
                    .as_ref()
                    .map(|(m, _)| m.capabilities.network.egress.as_slice()),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if allow.is_empty() {
                None
            } else {
                let upstream = req
                    .profile
                    .network
                    .proxy
                    .as_deref()
                    .map(crate::egress::proxy::parse_upstream)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("[network] proxy: {e}"))?;
                let report: crate::egress::proxy::Report =
                    Arc::new(|c: &crate::egress::proxy::Connection| {
                        let _actor = c
                            .peer
                            .map(|(pid, uid, gid)| crate::audit::Actor { pid, uid, gid }.enter());
                        crate::audit::emit(&crate::audit::AuditEvent::Egress {
                            host: c.host.clone(),
                            port: c.port,
                            allowed: c.allowed,
                            reason: c.reason.clone(),
                        });
                    });
                Some(crate::egress::proxy::serve(
                    socket, allow, upstream, report,
                )?)
            }
        }
        None => None,
    };
    let mode = policy.mode();
    let engine = req
        .profile
        .redaction_engine()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let live = Arc::new(crate::live::LivePolicy::new(policy, Arc::new(engine)));
    // History is judged by the rules the mount started with (not reloaded live).
    let history = crate::history::History::new(
        req.profile.redaction.history,
        Arc::new(
            req.profile
                .history_engine()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        req.profile.redaction.max_scan_size.saturating_mul(4),
    );
    let viewer = Arc::new(
        Viewer::new(
            live.clone(),
            req.profile.redaction.max_scan_size,
            req.profile.redaction.unscannable == Unscannable::Allow,
        )
        .with_history(history.clone()),
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
                mode,
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
    let control_guard = guard.clone();
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
                history.load(&p.with_file_name(crate::history::VERDICTS_FILE));
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
    // After the saved verdicts are loaded, so a pack judged before is not scanned again.
    history.prescan(&scope, req.profile.redaction.max_scan_size);
    // New objects get exactly the mode the agent asked for (the kernel already applied its umask).
    rustix::process::umask(rustix::fs::Mode::empty());
    let fd_limit = backing::raise_fd_limit();
    let breaker = Arc::new(crate::breaker::Breaker::new(req.profile.breaker.clone()));
    let n_threads = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(4, 16);
    // Requests the profile holds for a person's answer (writable modes only: a read-only
    // mount changes nothing there is to approve).
    let approval = &req.profile.approval;
    let approvals = (mode != WriteMode::ReadOnly
        && (!approval.ops.is_empty() || !approval.paths.is_empty()))
    .then(|| {
        Arc::new(crate::approval::Queue::new(
            Duration::from_secs(approval.timeout_secs),
            n_threads,
            true,
        ))
    });
    let root = match &overlay {
        Some(o) => o
            .root()
            .try_clone_to_owned()
            .context("hold the overlay's root")?,
        None => backing::open_root(&scope).with_context(|| format!("open {}", scope.display()))?,
    };
    let wm = &req.profile.watermark;
    if wm.documents || wm.footer || wm.mask_codes {
        let mark = crate::watermark::mark_text(
            &mountpoint,
            &audit_session,
            &crate::time::format_time(crate::time::now_ns()),
        );
        // The key lives in the store, beside the audit trail `veilfs trace` names the session
        // from: without a store, masks could carry codes nobody can trace, so the mount fails.
        let codes = if wm.mask_codes {
            let dir = store_dir(&req, &scope, &mountpoint)
                .context("[watermark] mask_codes needs a store for its key")?;
            Store::create_or_open(&dir)
                .map_err(|e| anyhow::anyhow!("store {}: {e}", dir.display()))?;
            let key = crate::watermark::load_or_create_key(&dir)
                .with_context(|| format!("mask-code key in {}", dir.display()))?;
            Some(crate::watermark::MaskCodes::new(key, &audit_session))
        } else {
            None
        };
        viewer.set_marking(crate::fs::view::Marking {
            property: wm.documents.then(|| mark.clone()),
            footer: wm.footer.then_some(mark),
            codes,
        });
    }
    let virtuals = Arc::new(
        crate::fs::virtual_fs::VirtualCfg::from_profile(&req.profile.decoys)
            .context("seed the decoys")?,
    );
    let fs = VeilFs::new(
        root,
        FsConfig {
            policy: live.clone(),
            viewer,
            ttl: if mode == WriteMode::ReadOnly {
                Duration::from_millis(req.profile.cache.ttl_ms)
            } else {
                Duration::from_millis(req.profile.cache.write_ttl_ms)
            },
            guard: guard.clone(),
            // Registering a backing file needs CAP_SYS_ADMIN: a normal user's mount serves every
            // read itself (from the kernel's page cache once a file was read).
            passthrough: !crate::fusermount::needed(),
            divert,
            emulate_dev0: mode == WriteMode::Overlay,
            no_open: false,
            scan_cache_file,
            masked,
            breaker: Some(breaker.clone()),
            approvals: approvals.clone(),
            scan_ahead: if mode == WriteMode::ReadOnly {
                req.profile.cache.scan_ahead
            } else {
                0
            },
            deferred_apply: mode == WriteMode::Snapshot
                && req.profile.write.apply == crate::profile::ApplyMode::Deferred,
            passthrough_writes: req.profile.write.passthrough_writes,
            virtuals: virtuals.clone(),
            upper: match &overlay {
                Some(o) => Some(o.upper().context("open the overlay's upper layer")?),
                None => None,
            },
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
            match crate::watch::start(
                &scope,
                invalidator.clone(),
                Duration::from_millis(req.profile.cache.ttl_ms),
            ) {
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
    config.n_threads = Some(n_threads);
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
    let session = if crate::fusermount::needed() {
        let mut opts = vec![
            format!("fsname=veilfs:{}", scope.display()),
            "subtype=veilfs".to_string(),
            "default_permissions".to_string(),
            "nodev".to_string(),
            "nosuid".to_string(),
        ];
        if mode == WriteMode::ReadOnly {
            opts.push("ro".to_string());
        }
        if req.allow_other {
            opts.push("allow_other".to_string());
        }
        crate::fusermount::mount(&mountpoint, &opts)
            .and_then(|fd| fuser::Session::from_fd(fs, fd, config.acl, config.clone()))
    } else {
        fuser::Session::new(fs, &mountpoint, &config)
    };
    let session = match session.with_context(|| format!("mount at {}", mountpoint.display())) {
        Ok(s) => s,
        Err(e) => {
            crate::audit::uninstall();
            return Err(e);
        }
    };
    invalidator.set_notifier(session.notifier());
    // Live policy: a changed profile or rule file is put in force without a remount.
    let policy_watch = match &req.profile.source {
        Some(source) => {
            let spec = crate::reload::ReloadSpec {
                profile: source.clone(),
                mode_override: req.mode,
                profile_mode: req.profile.write.mode,
                manifest,
            };
            let inv = invalidator.clone();
            match crate::reload::start(
                spec,
                &scope,
                &req.profile,
                live.clone(),
                Box::new(move || inv.everything_changed()),
            ) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("live policy is off (cannot watch the profile): {e:#}");
                    None
                }
            }
        }
        None => None,
    };
    // `veilfs checkpoint` reaches the session through it; ready before the "mounted" line.
    let control = match crate::control::serve(&mountpoint, control_guard, mode.as_str()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("no control socket, `veilfs checkpoint` cannot reach this mount: {e:#}");
            None
        }
    };
    // Revoked by `veilfs revoke` (admin socket) or expired: the mount ends now, whatever the agent
    // is doing inside it.
    let end_now = {
        let mountpoint = mountpoint.clone();
        let invalidator = invalidator.clone();
        let guard = guard.clone();
        let approvals = approvals.clone();
        Arc::new(move |why: &str| {
            crate::audit::emit(&crate::audit::AuditEvent::Control {
                action: "revoked",
                reason: why.to_string(),
            });
            // A held request is refused (and audited) before the connection goes.
            if let Some(q) = &approvals {
                q.close();
            }
            invalidator.revoked();
            revoke_now(&mountpoint);
            if let Some(g) = &guard {
                g.end();
            }
            // Signed and durable before the process goes.
            crate::audit::uninstall();
            crate::registry::unregister(&mountpoint);
            let _ = std::fs::remove_file(crate::control::socket_path(&mountpoint));
            let _ = std::fs::remove_file(crate::admin::socket_path(&mountpoint));
            // As after SIGKILL (which the store and journal are built to survive), but with the
            // session's end journalled: the process exits, so the kernel ends the FUSE
            // connection and every request still blocked in it fails at once.
            std::process::exit(0);
        })
    };
    // `veilfs status`, `pending`, `approve`, `deny`, `resume`, `revoke` (peer-checked).
    let expires_at = req.expires.map(|d| std::time::Instant::now() + d);
    let admin = match crate::admin::serve(
        &mountpoint,
        crate::admin::Admin {
            status: crate::admin::MountStatus {
                mountpoint: mountpoint.clone(),
                pid: std::process::id(),
                scope: scope.clone(),
                mode: mode.as_str().to_string(),
                profile: req.profile.name.clone(),
                session: guard.as_ref().map(|g| g.session_id().to_string()),
                expires_at: req.expires.map(crate::approval::epoch_after),
                ..Default::default()
            },
            breaker: breaker.clone(),
            approvals: approvals.clone(),
            expires: expires_at,
            end_now: end_now.clone(),
        },
    ) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(
                "no admin socket, `veilfs status/approve/revoke` cannot reach this mount: {e:#}"
            );
            None
        }
    };
    // `veilfs status` and `revoke --all` find this mount through the registry
    // (before the "mounted" line, so a status right after it lists the mount).
    let registration = crate::registry::register(&crate::registry::LiveMount {
        mountpoint: mountpoint.clone(),
        pid: std::process::id(),
        scope: scope.clone(),
        mode: mode.as_str().to_string(),
        profile: req.profile.name.clone(),
    })
    .map_err(|e| {
        tracing::warn!(
            "cannot register the mount (veilfs status and revoke --all will not list it): {e}"
        )
    })
    .ok();
    // Tests and scripts wait for this line instead of polling.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "veilfs: mounted {}", mountpoint.display());
        let _ = out.flush();
    }
    if let Some(after) = req.expires {
        let end_now = end_now.clone();
        std::thread::Builder::new()
            .name("veilfs-expiry".into())
            .spawn(move || {
                std::thread::sleep(after);
                end_now("the mount's grant expired (--expires)");
            })
            .context("spawn expiry thread")?;
    }
    // After the "mounted" line, which `--audit-log -` must not precede.
    crate::audit::emit(&crate::audit::AuditEvent::Mounted {
        scope: scope.clone(),
        mountpoint: mountpoint.clone(),
        mode: mode.as_str().to_string(),
        profile: req.profile.name.clone(),
    });
    // Each decoy's canary, so a leaked one can be traced to this session.
    for (path, canary) in virtuals.decoys() {
        crate::audit::emit(&crate::audit::AuditEvent::Decoy {
            action: "placed",
            path,
            canary,
            tripped: false,
        });
    }
    {
        let mountpoint = mountpoint.clone();
        let approvals = approvals.clone();
        std::thread::Builder::new()
            .name("veilfs-signals".into())
            .spawn(move || {
                loop {
                    let sig = wait_signal(&signals);
                    // No credentials come with a signal: resume and revoke go through the
                    // admin socket (see `admin`), and these are only kept from killing us.
                    if sig == Signal::SIGUSR1 as i32 || sig == Signal::SIGUSR2 as i32 {
                        tracing::warn!(
                            "signal {sig} ignored: use `veilfs resume` / `veilfs revoke`"
                        );
                        continue;
                    }
                    info!("signal {sig}: unmounting");
                    // A held request would keep its worker (and so the session) alive.
                    if let Some(q) = &approvals {
                        q.close();
                    }
                    // A process that is still leaving the mount (one killed together with us,
                    // as `veilfs run` arranges when it dies) keeps it busy for a moment: retry
                    // a while.
                    let mut tries = 0;
                    while let Err(e) = unmount(&mountpoint) {
                        tries += 1;
                        if tries >= 30 || !is_mount_point(&mountpoint) {
                            tracing::error!("unmount after signal {sig} failed: {e:#}");
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    break;
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
    drop(control);
    drop(admin);
    if let Some(q) = &approvals {
        q.close();
    }
    // A session that ended on an error leaves the mount in place: take it down.
    if is_mount_point(&mountpoint)
        && let Err(e) = unmount(&mountpoint)
    {
        tracing::warn!("{e:#}");
    }
    // The watchers and the invalidator hold notifiers on the device: gone before it is.
    drop(policy_watch);
    drop(watch);
    drop(invalidator);
    std::mem::forget(bg);
    release_device(dev_raw);
    drop(overlay);
    drop(registration);
    // How often the kernel asked before a write whether it strips file capabilities: once
    // per written inode when FUSE_HANDLE_KILLPRIV_V2 took, else once per write.
    info!(
        count = crate::fs::capability_lookups(),
        "security.capability lookups answered during the session"
    );
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

/// Closes the FUSE device fd `raw`, whose owners (fuser's forgotten mount handle and
/// senders) will never use or close it again, by putting /dev/null in its place: a stray late
/// write then goes nowhere rather than to a reused fd number.
fn release_device(raw: std::os::fd::RawFd) {
    match std::fs::File::open("/dev/null") {
        Ok(null) => {
            if let Err(e) = crate::sys::replace_fd(raw, null.as_fd()) {
                tracing::warn!("cannot release the FUSE device: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot release the FUSE device: /dev/null: {e}"),
    }
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR1 in the calling thread; every thread spawned after it
/// inherits the mask, so only the signal thread (which waits for them) receives them.
fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    // Once resume and revoke; blocked so a stray one cannot kill the mount.
    set.add(Signal::SIGUSR1);
    set.add(Signal::SIGUSR2);
    if let Err(e) = set.thread_block() {
        tracing::warn!("cannot block signals: {e}");
    }
    set
}

fn wait_signal(set: &SigSet) -> i32 {
    set.wait().map(|s| s as i32).unwrap_or(0)
}

/// Takes the mount at `mp` away at once: detached from the path (no new lookups), and, where
/// the FUSE control filesystem is mounted, its connection aborted (every pending request fails).
fn revoke_now(mp: &Path) {
    let dev = std::fs::metadata(mp).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
    if let Err(e) = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH) {
        tracing::warn!("revoke: detach {}: {e}", mp.display());
    }
    if let Ok(dev) = dev {
        let abort = format!("/sys/fs/fuse/connections/{}/abort", rustix::fs::minor(dev));
        let _ = std::fs::write(abort, b"1");
    }
}

/// Unmounts a veilfs mount point.
pub(crate) fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    let mp = mountpoint
        .canonicalize()
        .with_context(|| format!("{}: does not exist", mountpoint.display()))?;
    if !is_mount_point(&mp) {
        bail!("{}: not a mount point", mountpoint.display());
    }
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes())?;
    let Err(err) = rustix::mount::unmount(&*c, rustix::mount::UnmountFlags::empty()) else {
        return Ok(());
    };
    let err = std::io::Error::from(err);
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

#[cfg(test)]
mod tests {
    use super::grant_lifetime;
    use std::time::Duration;

    #[test]
    fn the_profile_maximum_caps_and_defaults_the_grant() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(grant_lifetime(None, None), Ok(None));
        assert_eq!(grant_lifetime(Some(h(2)), None), Ok(Some(h(2))));
        assert_eq!(grant_lifetime(None, Some(h(8))), Ok(Some(h(8))));
        assert_eq!(grant_lifetime(Some(h(8)), Some(h(8))), Ok(Some(h(8))));
        assert_eq!(grant_lifetime(Some(h(1)), Some(h(8))), Ok(Some(h(1))));
        let e = grant_lifetime(Some(h(9)), Some(h(8))).unwrap_err();
        assert!(
            e.contains("exceeds") && e.contains("max_expires = \"8h\""),
            "{e}"
        );
    }
}
