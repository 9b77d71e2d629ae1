//! Serve only bytes that were scanned.
//!
//! A read with redaction on is answered from one consistent copy of the file's version that the
//! view was decided on, never from a fresh `pread` next to a verdict computed on other bytes: a
//! program outside the mount may rewrite the file in place at any moment, and a file's identity
//! (size, mtime, ctime) cannot see a write in progress. A copy is taken as: stat, read it all,
//! stat again (same identity). The copy is scanned and kept, so later reads of the same version
//! are served from memory.
//!
//! A writer preempted in the middle of its `pwrite` leaves the file torn (half a token) with an
//! identity that does not move until its next write, so "the same before and after" is not
//! enough. A write sets the file's ctime when it starts, so a file whose ctime is [`SETTLE`] old
//! has no write in progress (short of one that has been running for that long). A copy is
//! therefore trusted when:
//! - its ctime has settled, or
//! - the last change was veilfs's own (a write through the mount, whose ctime veilfs recorded
//!   after the write returned), and a second read agrees with the first.
//!
//! A read of a file changed outside the mount within the last [`SETTLE`] waits until it
//! settles (so the agent sees an outside save as soon as it is safe to). A file still changing
//! after that wait is served from its last copy (stale but scanned and whole), and the reads
//! that follow within a few seconds get that copy without waiting again; a file that never
//! holds still and has no copy is refused.
//!
//! Copies are bounded by total bytes (oldest dropped first, a synthesized view's bytes
//! counted); a dropped copy is simply taken again.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backing::Stat;
use crate::redact::FileId;

use super::view::View;

/// A file whose ctime is this old has no write in progress.
pub(super) const SETTLE: Duration = Duration::from_secs(2);

/// One scanned, consistent copy of one version of a file.
pub(super) struct Copy {
    pub id: FileId,
    /// The rule selection it was scanned with (see `RuleSelection`).
    pub rules: u64,
    pub data: Vec<u8>,
    pub view: View,
}

impl Copy {
    /// The bytes reads are served from (before masking): the synthesized view's, or the file's.
    pub(super) fn bytes_served(&self) -> &[u8] {
        match &self.view {
            View::Synth(s) => &s.bytes,
            _ => &self.data,
        }
    }

    /// Bytes this copy holds: the file's, or its synthesized view's.
    fn bytes(&self) -> usize {
        self.data.len()
            + match &self.view {
                View::Synth(s) => s.bytes.len(),
                _ => 0,
            }
    }
}

/// A real file's identity, (device, inode): copies outlive the kernel's FUSE inodes (the
/// kernel forgets an entry whenever the watcher invalidates it), and a stale copy is exactly
/// what is served while the file settles.
pub(super) type Key = (u64, u64);

/// The copies reads are served from, by file, bounded by total bytes.
pub(super) struct Copies {
    inner: Mutex<Inner>,
    budget: usize,
    /// The ctime each file had right after veilfs's own last change to it.
    own: Mutex<HashMap<Key, (i64, i64)>>,
    /// Files a read waited on that were still changing after the wait, and when.
    churning: Mutex<HashMap<Key, Instant>>,
}

/// Above this many remembered own changes, the settled ones are dropped.
const OWN_MAX: usize = 100_000;

#[derive(Default)]
struct Inner {
    by_ino: HashMap<Key, Arc<Copy>>,
    order: VecDeque<Key>,
    bytes: usize,
}

impl Copies {
    pub(super) fn new(budget: usize) -> Copies {
        Copies {
            inner: Mutex::new(Inner::default()),
            budget,
            own: Mutex::new(HashMap::new()),
            churning: Mutex::new(HashMap::new()),
        }
    }

    /// Records that file `key` kept changing through a read's wait.
    pub(super) fn mark_churning(&self, key: Key) {
        let mut c = self.churning.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= OWN_MAX {
            c.retain(|_, at| at.elapsed() < 2 * SETTLE);
        }
        c.insert(key, Instant::now());
    }

    /// Did a read recently wait on file `key` in vain? Then the next reads serve its last
    /// copy at once rather than each waiting again.
    pub(super) fn churning(&self, key: Key) -> bool {
        self.churning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < 2 * SETTLE)
    }

    /// Records that veilfs itself just changed a file, which now has stat `st`.
    pub(super) fn note_own_change(&self, st: &Stat) {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        if own.len() >= OWN_MAX {
            // A settled file is trusted without this record.
            own.retain(|_, c| {
                let at = Stat { ctime: *c, ..*st };
                !unsettled_for(&at).is_zero()
            });
        }
        own.insert((st.dev, st.ino), st.ctime);
    }

    /// The ctime file `key` had after veilfs's own last change, if veilfs changed it.
    pub(super) fn own_change(&self, key: Key) -> Option<(i64, i64)> {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
    }

    pub(super) fn get(&self, ino: Key) -> Option<Arc<Copy>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_ino
            .get(&ino)
            .cloned()
    }

    pub(super) fn put(&self, ino: Key, c: Arc<Copy>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.by_ino.insert(ino, c.clone()) {
            g.bytes -= old.bytes();
        } else {
            g.order.push_back(ino);
        }
        g.bytes += c.bytes();
        while g.bytes > self.budget && g.order.len() > 1 {
            let Some(victim) = g.order.pop_front() else {
                break;
            };
            if victim == ino {
                g.order.push_back(victim);
                continue;
            }
            if let Some(old) = g.by_ino.remove(&victim) {
                g.bytes -= old.bytes();
            }
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

/// How long until `st`'s ctime is [`SETTLE`] old (zero when it is).
fn unsettled_for(st: &Stat) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ctime = Duration::new(
        st.ctime.0.max(0) as u64,
        st.ctime.1.clamp(0, 999_999_999) as u32,
    );
    SETTLE.saturating_sub(now.saturating_sub(ctime))
}

/// What reading a copy of a file gave.
#[derive(Debug, PartialEq)]
pub(super) enum Taken {
    /// A copy that may be trusted.
    Copy(Vec<u8>),
    /// The file changed while it was read: read again.
    Changed,
    /// The file was changed outside the mount too recently to rule out a write in progress:
    /// it settles in this long.
    Unsettled(Duration),
}

/// Reads a copy of `file`, whose stat before the read is `st`, and says whether it may be
/// trusted (see the module comment). `own` is the ctime veilfs recorded after its own last
/// change of the file.
pub(super) fn consistent_copy(
    file: &File,
    st: &Stat,
    stat_again: impl Fn() -> std::io::Result<Stat>,
    own: Option<(i64, i64)>,
) -> std::io::Result<Taken> {
    let id = super::view::file_id(st);
    let wait = unsettled_for(st);
    if !wait.is_zero() && own != Some(st.ctime) {
        return Ok(Taken::Unsettled(wait));
    }
    let data = read_whole(file, st.size)?;
    if data.len() as u64 != st.size || super::view::file_id(&stat_again()?) != id {
        return Ok(Taken::Changed);
    }
    if !wait.is_zero() {
        let again = read_whole(file, st.size)?;
        if again != data || super::view::file_id(&stat_again()?) != id {
            return Ok(Taken::Changed);
        }
    }
    Ok(Taken::Copy(data))
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
        c.put((0, 1), copy(40));
        c.put((0, 2), copy(40));
        c.put((0, 3), copy(40));
        assert!(c.get((0, 1)).is_none(), "oldest dropped");
        assert!(c.get((0, 2)).is_some() && c.get((0, 3)).is_some());
        c.put((0, 4), copy(500));
        assert!(
            c.get((0, 4)).is_some(),
            "a copy larger than the budget is still kept alone"
        );
        assert!(c.get((0, 2)).is_none() && c.get((0, 3)).is_none());
    }

    #[test]
    fn synthesized_views_count_towards_the_budget() {
        let c = Copies::new(100);
        let synth = |n: usize| {
            Arc::new(Copy {
                view: View::Synth(Arc::new(super::super::view::Synth {
                    bytes: vec![0; n],
                    kind: "document",
                    rules: Vec::new(),
                    redactions: 0,
                })),
                data: Vec::new(),
                id: copy(0).id,
                rules: 0,
            })
        };
        c.put((0, 1), synth(60));
        c.put((0, 2), synth(60));
        assert!(c.get((0, 1)).is_none(), "a view's bytes count");
        assert!(c.get((0, 2)).is_some());
    }

    /// A file in a temp dir holding "version one", open, and its stat.
    fn fresh_file() -> (tempfile::TempDir, std::path::PathBuf, File, Stat) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"version one").unwrap();
        let f = File::open(&p).unwrap();
        let st = crate::backing::stat_fd(std::os::fd::AsFd::as_fd(&f)).unwrap();
        (dir, p, f, st)
    }

    #[test]
    fn a_file_changed_outside_just_now_is_not_trusted_until_it_settles() {
        let (_dir, _p, f, st) = fresh_file();
        let fd = std::os::fd::AsFd::as_fd(&f);
        let r = consistent_copy(&f, &st, || crate::backing::stat_fd(fd), None).unwrap();
        assert!(matches!(r, Taken::Unsettled(w) if w <= SETTLE && !w.is_zero()));
        // The same bytes once their ctime is old (a stat as it will read then).
        let mut old = st;
        old.ctime.0 -= 10;
        let r = consistent_copy(&f, &old, || Ok(old), None).unwrap();
        assert_eq!(r, Taken::Copy(b"version one".to_vec()));
    }

    #[test]
    fn veilfs_own_last_change_is_trusted_at_once_and_a_later_one_is_not() {
        let (_dir, p, f, st) = fresh_file();
        let fd = std::os::fd::AsFd::as_fd(&f);
        let own = Some(st.ctime);
        let r = consistent_copy(&f, &st, || crate::backing::stat_fd(fd), own).unwrap();
        assert_eq!(r, Taken::Copy(b"version one".to_vec()));
        // Rewritten outside between the stat and the read.
        std::fs::write(&p, b"version two!").unwrap();
        let r = consistent_copy(&f, &st, || crate::backing::stat_fd(fd), own).unwrap();
        assert_eq!(r, Taken::Changed);
        let st = crate::backing::stat_fd(fd).unwrap();
        let r = consistent_copy(&f, &st, || crate::backing::stat_fd(fd), own).unwrap();
        assert!(matches!(r, Taken::Unsettled(_)), "{r:?}");
    }
}
