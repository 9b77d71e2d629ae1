//! Shared harness for tests that mount for real: one built `veilfs` binary, a temp scope and
//! mount point per test, and a guard that always unmounts (even when the test panics).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The veilfs binary under test: `VEILFS_TEST_BIN` when set (tests/run-all.sh runs the mount
/// tests again as a normal user, with copies of the binaries that user can reach), else the
/// one cargo built.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("VEILFS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_veilfs").into())
    })
}

/// A running `veilfs mount`. Dropping it unmounts and reaps the process.
pub struct Mount {
    pub child: Option<Child>,
    pub mp: PathBuf,
    _mp_dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts `scope` with extra CLI args (e.g. `--profile x.toml`), waiting until the mount is
    /// live (the process prints its "mounted" line only after the kernel handshake).
    pub fn start(scope: &Path, args: &[&str]) -> Mount {
        Self::try_start(scope, args).unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    pub fn try_start(scope: &Path, args: &[&str]) -> Result<Mount, String> {
        Self::try_start_env(scope, args, &[])
    }

    /// As [`Mount::start`], with extra environment for the mount process.
    pub fn start_env(scope: &Path, args: &[&str], env: &[(&str, &Path)]) -> Mount {
        Self::try_start_env(scope, args, env).unwrap_or_else(|e| panic!("mount failed: {e}"))
    }

    pub fn try_start_env(
        scope: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<Mount, String> {
        let mp_dir = tempfile::Builder::new()
            .prefix("veilfs-mp-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mp = mp_dir.path().join("view");
        std::fs::create_dir(&mp).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin());
        cmd.arg("mount").args(args).arg(scope).arg(&mp);
        // The default store (and saved scan results) go beside the mount point, not in $HOME.
        cmd.env("XDG_DATA_HOME", mp_dir.path().join("data"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with("veilfs: mounted") {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            return Err(format!("mount did not come up: {line}{err}"));
        }
        Ok(Mount {
            child: Some(child),
            mp,
            _mp_dir: mp_dir,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mp.clone()
        } else {
            self.mp.join(rel)
        }
    }

    /// Unmounts cleanly and returns the process's exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new(bin()).arg("unmount").arg(&self.mp).status();
        let mut child = self.child.take().expect("child");
        let status = child.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy detach never blocks, even when the process is wedged or already gone.
        if veilfs::is_mount_point(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A hash of a whole tree: every path, kind, mode, size, mtime, content and link target.
pub fn tree_hash(root: &Path) -> String {
    let mut entries = Vec::new();
    walk(root, root, &mut entries);
    entries.sort();
    let mut h = blake3::Hasher::new();
    for e in entries {
        h.update(&e);
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap_or(&p);
        let mut rec = rel.as_os_str().as_bytes().to_vec();
        rec.extend(
            format!(
                " mode={:o} size={} mtime={}.{}",
                m.mode(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            )
            .as_bytes(),
        );
        if m.file_type().is_symlink() {
            if let Ok(t) = std::fs::read_link(&p) {
                rec.extend(b" -> ");
                rec.extend(t.as_os_str().as_bytes());
            }
        } else if m.is_file()
            && let Ok(data) = std::fs::read(&p)
        {
            rec.extend(b" ");
            rec.extend(blake3::hash(&data).to_hex().as_bytes());
        }
        out.push(rec);
        if m.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// Writes a profile file into `dir` and returns its path.
pub fn write_profile(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write profile");
    p
}

/// Maps `len` bytes of `f` read-only and returns a copy of them.
pub fn mmap_read(f: &std::fs::File, len: usize) -> Vec<u8> {
    // SAFETY: a read-only private mapping of a file the caller keeps open; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(f),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    // SAFETY: the mapping is len bytes long and readable.
    let data = unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec();
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, len) };
    data
}

/// Runs the veilfs CLI; returns (success, stdout, stderr).
pub fn veilfs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run veilfs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rollback sessions' journals in the store, oldest first.
pub fn rollback_journals(store: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(Path::new(store).join("sessions"))
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("\"mode\":\"rollback\"")
        })
        .collect();
    v.sort();
    v
}

/// Runs `veilfs rollback --store STORE` killed after each of `steps` steps in turn (the
/// test-only `VEILFS_TEST_KILL_AFTER`), calling `after_kill(kills)` after each kill, until a run
/// ends by itself (it must succeed); when none did, runs it once more to the end. Returns how
/// many runs were killed.
pub fn rollback_killed_at(store: &str, steps: &[u32], mut after_kill: impl FnMut(usize)) -> usize {
    let mut kills = 0;
    for k in steps {
        let out = std::process::Command::new(bin())
            .args(["rollback", "--store", store])
            .env("VEILFS_TEST_KILL_AFTER", k.to_string())
            .output()
            .unwrap();
        if out.status.code().is_some() {
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return kills;
        }
        kills += 1;
        after_kill(kills);
    }
    let (ok, out, err) = veilfs(&["rollback", "--store", store]);
    assert!(ok, "{out}{err}");
    kills
}

/// Waits (up to 10 s) until `cond` holds, for effects that arrive asynchronously (the folder
/// watcher's cache invalidations). Returns whether it did.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(5));
    }
    cond()
}

/// A seeded scope, a store and a profile file for a writable mount; all temp dirs.
pub struct WriteEnv {
    pub scope: tempfile::TempDir,
    pub store: tempfile::TempDir,
    pub pdir: tempfile::TempDir,
    pub profile: PathBuf,
}

impl WriteEnv {
    pub fn new(profile_text: &str, seed: fn(&Path)) -> WriteEnv {
        let scope = tempfile::tempdir().expect("scope");
        seed(scope.path());
        let store = tempfile::tempdir().expect("store");
        let pdir = tempfile::tempdir().expect("profile dir");
        let profile = write_profile(pdir.path(), "p.toml", profile_text);
        WriteEnv {
            scope,
            store,
            pdir,
            profile,
        }
    }

    /// The store directory (created by the first mount).
    pub fn store(&self) -> String {
        self.store.path().join("s").display().to_string()
    }

    pub fn mount(&self) -> Mount {
        self.mount_env(&[])
    }

    /// [`WriteEnv::mount`] with extra environment variables for the mount process.
    pub fn mount_env(&self, env: &[(&str, &Path)]) -> Mount {
        Mount::start_env(
            self.scope.path(),
            &[
                "--profile",
                self.profile.to_str().expect("utf-8 path"),
                "--store",
                &self.store(),
            ],
            env,
        )
    }
}

/// Runs the bash `script` (a workload inside the mount that prints `progress N` after each
/// round) until it reports round `after`, then SIGKILLs the mount process (and the workload)
/// and drops the guard. Returns the last round reported.
pub fn sigkill_mount_during(mut m: Mount, script: &str, after: usize) -> usize {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut done = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("progress ") {
            done = n.parse().unwrap_or(0);
            if done >= after {
                break;
            }
        }
    }
    let mut mount_proc = m.child.take().unwrap();
    mount_proc.kill().unwrap();
    mount_proc.wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    drop(m);
    done
}

/// Snapshot mode, no redaction, the breaker off: the profile of the tests that remove, rename
/// and rewrite many files to check what the journal and rollback keep.
pub const SNAPSHOT_NO_BREAKER: &str = r#"
version = 1
name = "test-snapshot-no-breaker"
[redaction]
rule_sets = []
[write]
mode = "snapshot"
[breaker]
max_deletes = 0
max_renames = 0
max_overwritten_bytes = 0
"#;
