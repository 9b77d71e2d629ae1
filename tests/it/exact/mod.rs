//! Helpers for generated tests: an exact tree hash and a small deterministic PRNG.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// xorshift64*: deterministic per seed, good enough to pick operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len())])
        }
    }
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| b"abcdefgh\n0123"[self.below(13)]).collect()
    }
}

/// Every entry below `root`, one line each, sorted: path, kind, mode, owner, size, mtime (also
/// of directories), content hash, symlink target, xattrs, and link structure (a name that shares
/// its inode with an earlier name says which).
pub fn tree_lines(root: &Path) -> Vec<String> {
    tree_lines_with(root, true)
}

/// [`tree_lines`], with or without modification times (two trees built by two runs of the
/// same program differ only in those).
pub fn tree_lines_with(root: &Path, times: bool) -> Vec<String> {
    let rootfd = veilfs::testing::backing::open_root(root).expect("open root");
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    let mut first_of: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for rel in paths {
        let abs = root.join(&rel);
        let Ok(m) = std::fs::symlink_metadata(&abs) else {
            continue;
        };
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let mut line = format!(
            "{} {kind} mode={:o} uid={} gid={}",
            rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
        );
        if times {
            line.push_str(&format!(" mtime={}.{}", m.mtime(), m.mtime_nsec()));
        }
        if ft.is_file() {
            let data = std::fs::read(&abs).unwrap_or_default();
            line.push_str(&format!(
                " size={} blake3={} nlink={}",
                m.size(),
                &blake3::hash(&data).to_hex()[..16],
                m.nlink()
            ));
            if m.nlink() > 1 {
                match first_of.get(&(m.dev(), m.ino())) {
                    Some(p) => line.push_str(&format!(" same-inode-as={}", p.display())),
                    None => {
                        first_of.insert((m.dev(), m.ino()), rel.clone());
                    }
                }
            }
        }
        if ft.is_symlink() {
            let t = std::fs::read_link(&abs).unwrap_or_default();
            line.push_str(&format!(" -> {}", t.display()));
        }
        if (ft.is_file() || ft.is_dir())
            && let Ok(fd) = veilfs::testing::backing::open_path(rootfd.as_fd(), &rel)
            && let Ok(mut xs) = veilfs::testing::backing::all_xattrs(fd.as_fd())
        {
            xs.sort();
            for (n, v) in xs {
                line.push_str(&format!(
                    " xattr:{}={}",
                    String::from_utf8_lossy(n.as_bytes()),
                    String::from_utf8_lossy(&v)
                ));
            }
        }
        out.push(line);
    }
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect(root, &p, out);
        }
    }
}

/// The blake3 of [`tree_lines`].
pub fn tree_hash(root: &Path) -> String {
    let mut h = blake3::Hasher::new();
    for l in tree_lines(root) {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// A readable difference between two [`tree_lines`] listings (for failure messages).
pub fn diff(a: &[String], b: &[String]) -> String {
    let mut s = String::new();
    for l in a.iter().filter(|l| !b.contains(l)).take(20) {
        s.push_str(&format!("- {l}\n"));
    }
    for l in b.iter().filter(|l| !a.contains(l)).take(20) {
        s.push_str(&format!("+ {l}\n"));
    }
    s
}
