//! Reading the mount table (`/proc/self/mountinfo`): is a path a mount point, and where is
//! a veilfs mount of a scope. A leaf module: the mount lifecycle ([`crate::mount`]), the
//! overlay and rollback all ask it, and none of them need each other for it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
pub(crate) fn find_mountpoint(pid: u32, scope: &Path) -> Option<PathBuf> {
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
