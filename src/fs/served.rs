//! Serve only bytes that were scanned.
//!
//! A read with redaction on is answered from one consistent copy of the file's version that the
//! view was decided on, never from a fresh `pread` next to a verdict computed on other bytes: a
//! program outside the mount may rewrite the file in place at any moment, and a file's identity
//! (size, mtime, ctime) cannot see a write in progress. A copy is taken as: stat, read it all,
//! stat again (same identity), and, when the file changed in the last few seconds, read it once
//! more and compare (a writer caught half way makes the two reads differ). The copy is scanned
//! and kept, so later reads of the same version are served from memory.
//!
//! Copies are bounded by total bytes (oldest dropped first); a dropped copy is simply taken
//! again. A file that never holds still long enough is served from the last consistent copy if
//! there is one (stale but scanned), else refused.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backing::Stat;
use crate::redact::FileId;

use super::view::View;

/// A file changed more recently than this is read twice and compared.
const SETTLE: Duration = Duration::from_secs(2);

/// One scanned, consistent copy of one version of a file.
pub struct Copy {
    pub id: FileId,
    /// The rule selection it was scanned with (see `RuleSelection`).
    pub rules: u64,
    pub data: Vec<u8>,
    pub view: View,
}

/// The copies reads are served from, by inode, bounded by total bytes.
pub struct Copies {
    inner: Mutex<Inner>,
    budget: usize,
}

#[derive(Default)]
struct Inner {
    by_ino: HashMap<u64, Arc<Copy>>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl Copies {
    pub fn new(budget: usize) -> Copies {
        Copies {
            inner: Mutex::new(Inner::default()),
            budget,
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Copy>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_ino
            .get(&ino)
            .cloned()
    }

    pub fn put(&self, ino: u64, c: Arc<Copy>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.by_ino.insert(ino, c.clone()) {
            g.bytes -= old.data.len();
        } else {
            g.order.push_back(ino);
        }
        g.bytes += c.data.len();
        while g.bytes > self.budget && g.order.len() > 1 {
            let Some(victim) = g.order.pop_front() else {
                break;
            };
            if victim == ino {
                g.order.push_back(victim);
                continue;
            }
            if let Some(old) = g.by_ino.remove(&victim) {
                g.bytes -= old.data.len();
            }
        }
    }

    pub fn forget(&self, ino: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.by_ino.remove(&ino) {
            g.bytes -= old.data.len();
            g.order.retain(|&i| i != ino);
        }
    }
}

fn read_whole(file: &File, size: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    // Grown since the stat: the identity check after the read rejects this copy.
    Ok(buf)
}

fn recently_changed(st: &Stat) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ctime = Duration::new(
        st.ctime.0.max(0) as u64,
        st.ctime.1.clamp(0, 999_999_999) as u32,
    );
    now.saturating_sub(ctime) < SETTLE
}

/// Reads a consistent copy of `file`, whose stat before the read is `st`: `None` when it
/// changed while being read (the caller retries).
pub fn consistent_copy(
    file: &File,
    st: &Stat,
    stat_again: impl Fn() -> std::io::Result<Stat>,
) -> std::io::Result<Option<Vec<u8>>> {
    let id = super::view::file_id(st);
    let data = read_whole(file, st.size)?;
    if data.len() as u64 != st.size || super::view::file_id(&stat_again()?) != id {
        return Ok(None);
    }
    if recently_changed(st) {
        let again = read_whole(file, st.size)?;
        if again != data || super::view::file_id(&stat_again()?) != id {
            return Ok(None);
        }
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(n: usize) -> Arc<Copy> {
        Arc::new(Copy {
            id: FileId {
                dev: 0,
                ino: 0,
                size: n as u64,
                mtime_ns: 0,
                ctime_ns: 0,
            },
            rules: 0,
            data: vec![0; n],
            view: View::Raw,
        })
    }

    #[test]
    fn bounded_by_bytes_oldest_first_and_the_newest_always_kept() {
        let c = Copies::new(100);
        c.put(1, copy(40));
        c.put(2, copy(40));
        c.put(3, copy(40));
        assert!(c.get(1).is_none(), "oldest dropped");
        assert!(c.get(2).is_some() && c.get(3).is_some());
        c.put(4, copy(500));
        assert!(
            c.get(4).is_some(),
            "a copy larger than the budget is still kept alone"
        );
        assert!(c.get(2).is_none() && c.get(3).is_none());
        c.forget(4);
        assert!(c.get(4).is_none());
    }

    #[test]
    fn a_file_rewritten_between_stat_and_read_gives_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"version one").unwrap();
        let f = File::open(&p).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&f);
        let st = crate::backing::stat_fd(fd).unwrap();
        std::fs::write(&p, b"version two!").unwrap();
        let r = consistent_copy(&f, &st, || crate::backing::stat_fd(fd)).unwrap();
        assert!(r.is_none());
        let st = crate::backing::stat_fd(fd).unwrap();
        let r = consistent_copy(&f, &st, || crate::backing::stat_fd(fd)).unwrap();
        assert_eq!(r.as_deref(), Some(&b"version two!"[..]));
    }
}
