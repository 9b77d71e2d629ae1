//! The damage breaker: rate limits on destructive operations and on mass reads. A prompt-injected
//! agent that starts deleting, renaming or rewriting files in a loop (ransomware-like), or reading
//! the whole tree (exfiltration-like), trips it; from then on every change is refused (EROFS)
//! and, for a mass read, every open of a file is refused too, until a person runs
//! `veilfs resume MOUNTPOINT`.
//!
//! Pure bookkeeping: the FUSE layer reports each operation with [`Breaker::note`] and asks
//! [`Breaker::state`] before acting. Counts are kept over a sliding window per kind.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::profile::BreakerCfg;

/// What an operation counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// An unlink or rmdir.
    Delete,
    /// A rename (an exchange counts once).
    Rename,
    /// Bytes of existing content replaced or cut (a write over old bytes, a shrinking truncate).
    Overwrite(u64),
    /// A file opened for reading, by identity (device, inode).
    Read((u64, u64)),
}

/// Why the breaker tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trip {
    pub limit: &'static str,
    pub count: u64,
    pub max: u64,
    pub window: Duration,
}

impl Trip {
    /// A mass read stops reads too; the others stop changes.
    pub(crate) fn stops_reads(&self) -> bool {
        self.limit == "max_reads_per_minute" || self.limit == DECOY
    }
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.limit == DECOY {
            return write!(
                f,
                "damage breaker tripped: a decoy was opened (decoys.trip_breaker); run `veilfs resume MOUNTPOINT` to go on"
            );
        }
        write!(
            f,
            "damage breaker tripped: {} {} within {} s (limit {} = {}); run `veilfs resume MOUNTPOINT` to go on",
            self.count,
            match self.limit {
                "max_deletes" => "deletes",
                "max_renames" => "renames",
                "max_overwritten_bytes" => "bytes overwritten",
                _ => "distinct files read",
            },
            self.window.as_secs(),
            self.limit,
            self.max
        )
    }
}

/// The limit a decoy trip names (`[decoys] trip_breaker`): no count, one open is enough.
const DECOY: &str = "decoy";

/// The breaker of one mount.
pub(crate) struct Breaker {
    cfg: BreakerCfg,
    inner: Mutex<Inner>,
    /// `inner.tripped.is_some()`, readable without the lock (the read path asks per read).
    tripped: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Inner {
    deletes: VecDeque<Instant>,
    renames: VecDeque<Instant>,
    overwrites: VecDeque<(Instant, u64)>,
    reads: HashMap<(u64, u64), Instant>,
    tripped: Option<Trip>,
}

const READ_WINDOW: Duration = Duration::from_secs(60);

impl Breaker {
    pub(crate) fn new(cfg: BreakerCfg) -> Breaker {
        Breaker {
            cfg,
            inner: Mutex::new(Inner::default()),
            tripped: Default::default(),
        }
    }

    /// Does a mass-read limit apply (so opens are worth counting)?
    pub(crate) fn counts_reads(&self) -> bool {
        self.cfg.max_reads_per_minute > 0
    }

    /// Does an overwritten-bytes limit apply (so writes are worth a stat)?
    pub(crate) fn counts_overwrites(&self) -> bool {
        self.cfg.max_overwritten_bytes > 0
    }

    /// Is a trip in force? (Lock-free; [`Breaker::state`] tells which.)
    pub(crate) fn is_tripped(&self) -> bool {
        self.tripped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The trip in force, if any.
    pub(crate) fn state(&self) -> Option<Trip> {
        self.lock().tripped.clone()
    }

    /// Counts `op` at `now`; returns the trip it causes (only the first trip is returned; the
    /// breaker then stays tripped until [`Breaker::resume`]).
    pub(crate) fn note(&self, op: Op, now: Instant) -> Option<Trip> {
        let window = Duration::from_secs(self.cfg.window_secs.max(1));
        let mut g = self.lock();
        if g.tripped.is_some() {
            return None;
        }
        let trip = match op {
            Op::Delete => count(
                &mut g.deletes,
                now,
                window,
                self.cfg.max_deletes,
                "max_deletes",
            ),
            Op::Rename => count(
                &mut g.renames,
                now,
                window,
                self.cfg.max_renames,
                "max_renames",
            ),
            Op::Overwrite(n) => {
                let max = self.cfg.max_overwritten_bytes;
                if max == 0 || n == 0 {
                    return None;
                }
                g.overwrites.push_back((now, n));
                while g
                    .overwrites
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > window)
                {
                    g.overwrites.pop_front();
                }
                let sum: u64 = g.overwrites.iter().map(|(_, n)| n).sum();
                (sum > max).then_some(Trip {
                    limit: "max_overwritten_bytes",
                    count: sum,
                    max,
                    window,
                })
            }
            Op::Read(key) => {
                let max = self.cfg.max_reads_per_minute;
                if max == 0 {
                    return None;
                }
                g.reads.insert(key, now);
                if g.reads.len() as u64 > max {
                    g.reads.retain(|_, t| now.duration_since(*t) <= READ_WINDOW);
                }
                let n = g.reads.len() as u64;
                (n > max).then_some(Trip {
                    limit: "max_reads_per_minute",
                    count: n,
                    max,
                    window: READ_WINDOW,
                })
            }
        };
        if let Some(t) = &trip {
            g.tripped = Some(t.clone());
            self.tripped
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        trip
    }

    /// A decoy was opened (`[decoys] trip_breaker`): trips at once, stopping changes and
    /// reads. Returns the trip when this call caused it (not when the breaker already was).
    pub(crate) fn trip_decoy(&self) -> Option<Trip> {
        let mut g = self.lock();
        if g.tripped.is_some() {
            return None;
        }
        let t = Trip {
            limit: DECOY,
            count: 1,
            max: 0,
            window: Duration::ZERO,
        };
        g.tripped = Some(t.clone());
        self.tripped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Some(t)
    }

    /// A person said go on: counts start again from zero.
    pub(crate) fn resume(&self) -> Option<Trip> {
        let mut g = self.lock();
        let was = g.tripped.take();
        *g = Inner::default();
        self.tripped
            .store(false, std::sync::atomic::Ordering::Relaxed);
        was
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn count(
    q: &mut VecDeque<Instant>,
    now: Instant,
    window: Duration,
    max: u64,
    limit: &'static str,
) -> Option<Trip> {
    if max == 0 {
        return None;
    }
    q.push_back(now);
    while q.front().is_some_and(|t| now.duration_since(*t) > window) {
        q.pop_front();
    }
    (q.len() as u64 > max).then_some(Trip {
        limit,
        count: q.len() as u64,
        max,
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerCfg {
        BreakerCfg {
            window_secs: 10,
            max_deletes: 3,
            max_renames: 0,
            max_overwritten_bytes: 100,
            max_reads_per_minute: 2,
        }
    }

    #[test]
    fn the_fourth_delete_in_the_window_trips_and_it_holds_until_resume() {
        let b = Breaker::new(cfg());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(b.note(Op::Delete, t0 + Duration::from_secs(i)), None);
        }
        let trip = b.note(Op::Delete, t0 + Duration::from_secs(3)).unwrap();
        assert_eq!((trip.limit, trip.count, trip.max), ("max_deletes", 4, 3));
        assert!(!trip.stops_reads());
        assert_eq!(b.state(), Some(trip.clone()));
        // Tripped: nothing more is counted, the state stays.
        assert_eq!(b.note(Op::Delete, t0 + Duration::from_secs(60)), None);
        assert!(b.state().is_some());
        assert_eq!(b.resume(), Some(trip));
        assert_eq!(b.state(), None);
        assert_eq!(b.note(Op::Delete, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn operations_older_than_the_window_do_not_count() {
        let b = Breaker::new(cfg());
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(b.note(Op::Delete, t0 + Duration::from_secs(i * 4)), None);
        }
    }

    #[test]
    fn a_zero_limit_is_off_and_bytes_add_up() {
        let b = Breaker::new(cfg());
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(b.note(Op::Rename, t0), None);
        }
        assert_eq!(b.note(Op::Overwrite(60), t0), None);
        let t = b.note(Op::Overwrite(41), t0).unwrap();
        assert_eq!((t.limit, t.count), ("max_overwritten_bytes", 101));
    }

    #[test]
    fn mass_read_counts_distinct_files_and_stops_reads() {
        let b = Breaker::new(cfg());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.note(Op::Read((1, 1)), t0), None);
            assert_eq!(b.note(Op::Read((1, 2)), t0), None);
        }
        let t = b.note(Op::Read((1, 3)), t0).unwrap();
        assert!(t.stops_reads());
        assert!(t.to_string().contains("3 distinct files read within 60 s"));
    }

    #[test]
    fn a_decoy_trips_at_once_stops_reads_and_holds_until_resume() {
        let b = Breaker::new(cfg());
        let t = b.trip_decoy().unwrap();
        assert!(t.stops_reads());
        assert!(t.to_string().contains("decoy"), "{t}");
        assert_eq!(b.trip_decoy(), None, "already tripped");
        assert_eq!(b.resume(), Some(t));
        assert_eq!(b.state(), None);
    }
}
