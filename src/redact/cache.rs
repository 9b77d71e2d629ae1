//! Per-file scan cache.
//!
//! Why: a file is read many times (`cat`, the agent's editor, `grep -r`), but its scan result only
//! changes when its identity changes. Keyed by `(dev, ino, size, mtime, ctime)` plus the engine's
//! fingerprint, so a rule change can never serve a stale "clean" verdict. Bounded: when a shard is
//! full an arbitrary eighth of it is dropped (cheap, and a miss only costs a re-scan). Sharded so
//! FUSE worker threads rarely contend.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::engine::{Engine, ScanOutcome};

/// Identity of one version of a file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

const SHARDS: usize = 16;

// The fingerprint is not part of the key: `bind` empties the cache when it changes, and one
// fingerprint per entry doubled the cache's memory (it holds an entry per file of the tree).
type Key = FileId;

/// Bounded, thread-safe map from file identity to scan outcome.
pub struct ScanCache {
    shards: Vec<Mutex<HashMap<Key, ScanOutcome>>>,
    per_shard: usize,
    fingerprint: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for ScanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanCache")
            .field("per_shard", &self.per_shard)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make the cache unusable: the data is only a cache.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScanCache {
    /// A cache holding about `capacity` entries, bound to the empty fingerprint until
    /// [`ScanCache::bind`] is called.
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        ScanCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            fingerprint: Mutex::new([0; 32]),
        }
    }

    /// A cache bound to `engine`'s fingerprint.
    pub fn for_engine(capacity: usize, engine: &Engine) -> Self {
        let c = Self::new(capacity);
        c.bind(engine);
        c
    }

    /// Binds the cache to `engine` (after a profile reload); drops everything if the rules
    /// changed.
    pub fn bind(&self, engine: &Engine) {
        let fp = engine.fingerprint();
        let mut cur = lock(&self.fingerprint);
        if *cur != fp {
            *cur = fp;
            drop(cur);
            self.clear();
        }
    }

    fn shard(&self, id: &FileId) -> &Mutex<HashMap<Key, ScanOutcome>> {
        let h = id.ino ^ id.dev.rotate_left(17) ^ (id.mtime_ns as u64).rotate_left(29);
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn get(&self, id: &FileId) -> Option<ScanOutcome> {
        lock(self.shard(id)).get(id).cloned()
    }

    pub fn insert(&self, id: FileId, o: ScanOutcome) {
        let mut m = lock(self.shard(&id));
        if m.len() >= self.per_shard && !m.contains_key(&id) {
            let drop_n = (self.per_shard / 8).max(1);
            let mut n = 0;
            m.retain(|_, _| {
                n += 1;
                n > drop_n
            });
        }
        m.insert(id, o);
    }

    /// Drops one file's entries (all fingerprints), e.g. when the watcher sees it change.
    pub fn remove(&self, id: &FileId) {
        lock(self.shard(id)).remove(id);
    }

    pub fn clear(&self) {
        for s in &self.shards {
            lock(s).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ino: u64) -> FileId {
        FileId {
            dev: 1,
            ino,
            size: 10,
            mtime_ns: 5,
            ctime_ns: 6,
        }
    }

    #[test]
    fn bounded_and_keyed() {
        let c = ScanCache::new(64);
        for i in 0..1000 {
            c.insert(id(i), ScanOutcome::Clean);
        }
        assert!(c.len() <= 64 + SHARDS);
        c.insert(id(5000), ScanOutcome::Binary);
        assert!(matches!(c.get(&id(5000)), Some(ScanOutcome::Binary)));
        let mut other = id(5000);
        other.size = 11;
        assert!(c.get(&other).is_none());
        let e = Engine::empty();
        c.bind(&e);
        assert!(
            c.get(&id(5000)).is_none(),
            "rebinding to other rules clears"
        );
    }
}
