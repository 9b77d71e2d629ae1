//! The registry of this user's live mounts, so `veilfs status` and `veilfs revoke --all` can
//! list them (each is then asked through its admin socket, [`crate::admin`]). Each mount writes one small JSON file into the
//! private runtime directory its control socket lives in ([`crate::control::runtime_dir`]; mode
//! 0700 and owned by the user, checked here: a file there was written by this user's mounts)
//! and removes it when it ends; a file whose process is gone is ignored.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a live mount says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LiveMount {
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub scope: PathBuf,
    pub mode: String,
    pub profile: String,
}

/// The private directory the registry lives in (created, and checked to be ours).
pub(crate) fn runtime_dir() -> io::Result<PathBuf> {
    let uid = rustix::process::getuid().as_raw();
    // Beside the mounts' control sockets.
    let dir = crate::control::runtime_dir();
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let md = fs::symlink_metadata(&dir)?;
    if !md.is_dir() || md.uid() != uid || md.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory owned by uid {uid}",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

fn entry_path(dir: &Path, mountpoint: &Path) -> PathBuf {
    let h = blake3::hash(mountpoint.as_os_str().as_encoded_bytes());
    dir.join(format!("{}.json", &h.to_hex()[..32]))
}

/// A registered mount; its file is removed on drop.
pub(crate) struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Registers `m` (its `mountpoint` canonical).
pub(crate) fn register(m: &LiveMount) -> io::Result<Registration> {
    let dir = runtime_dir()?;
    let path = entry_path(&dir, &m.mountpoint);
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(m).map_err(io::Error::other)?)?;
    fs::rename(&tmp, &path)?;
    Ok(Registration(path))
}

/// Removes the entry of the mount at `mountpoint` (a process that exits without unwinding).
pub(crate) fn unregister(mountpoint: &Path) {
    if let Ok(dir) = runtime_dir() {
        let _ = fs::remove_file(entry_path(&dir, mountpoint));
    }
}

/// The live mount at `mountpoint`, if this user has one there.
pub(crate) fn find(mountpoint: &Path) -> io::Result<LiveMount> {
    let mp = mountpoint.canonicalize()?;
    let path = entry_path(&runtime_dir()?, &mp);
    let m: LiveMount = serde_json::from_slice(&fs::read(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("no live veilfs mount of yours at {}", mp.display()),
        )
    })?)
    .map_err(io::Error::other)?;
    if m.mountpoint != mp || !alive(m.pid) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the veilfs mount at {} is gone", mp.display()),
        ));
    }
    Ok(m)
}

/// Is `pid` a running veilfs process?
fn alive(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("veilfs"))
    })
}

/// This user's live mounts (entries whose process is gone are skipped).
pub(crate) fn list() -> io::Result<Vec<LiveMount>> {
    let mut out = Vec::new();
    for e in fs::read_dir(runtime_dir()?)?.flatten() {
        if e.path().extension().is_some_and(|x| x == "json")
            && let Ok(b) = fs::read(e.path())
            && let Ok(m) = serde_json::from_slice::<LiveMount>(&b)
            && alive(m.pid)
        {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    Ok(out)
}

/// Waits until process `pid` (a revoked mount) is gone (at most 5 s).
pub(crate) fn wait_gone(pid: u32) -> io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pid != 0 && alive(pid) {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("pid {pid} still running 5 s after the revoke"),
            ));
        }
        std::thread::park_timeout(std::time::Duration::from_millis(2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_mount_is_found_by_its_mount_point_and_gone_after_drop() {
        let rt = tempfile::tempdir().unwrap();
        let mp = tempfile::tempdir().unwrap();
        let m = LiveMount {
            mountpoint: mp.path().canonicalize().unwrap(),
            pid: std::process::id(),
            scope: "/x".into(),
            mode: "snapshot".into(),
            profile: "p".into(),
        };
        let dir = rt.path().join("veilfs");
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let path = entry_path(&dir, &m.mountpoint);
        fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let back: LiveMount = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, m);
        drop(Registration(path.clone()));
        assert!(!path.exists());
    }
}
