//! Per-file scan cache.
//!
//! Why: a file is read many times (`cat`, the agent's editor, `grep -r`), but its scan result only
//! changes when its identity changes. Keyed by `(dev, ino, size, mtime, ctime)` plus the engine's
//! fingerprint, so a rule change can never serve a stale "clean" verdict. Bounded: when a shard is
//! full an arbitrary eighth of it is dropped (cheap, and a miss only costs a re-scan). Sharded so
//! FUSE worker threads rarely contend.
//!
//! Persisted (`save`/`load`) so a remount of the same folder does not re-scan what is unchanged:
//! only "clean" and "unscannable" verdicts are written (a masked or refused file is rare and
//! re-scanned), with the engine fingerprint and a blake3 checksum; a file that does not match
//! exactly is ignored.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::engine::{Engine, ScanOutcome};

/// Identity of one version of a file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

const SHARDS: usize = 16;

// The fingerprint is not part of the key: `bind` empties the cache when it changes, and one
// fingerprint per entry doubled the cache's memory (it holds an entry per file of the tree).
// The rule selection's id is: the same bytes may be served under names to which different rules
// apply (see `RuleSelection`), and each such view is its own verdict.
type Key = (FileId, u64);

/// Bounded, thread-safe map from file identity to scan outcome.
pub(crate) struct ScanCache {
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
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        ScanCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            fingerprint: Mutex::new([0; 32]),
        }
    }

    /// A cache bound to `engine`'s fingerprint.
    pub(crate) fn for_engine(capacity: usize, engine: &Engine) -> Self {
        let c = Self::new(capacity);
        c.bind(engine);
        c
    }

    /// Binds the cache to `engine` (after a profile reload); drops everything if the rules
    /// changed.
    pub(crate) fn bind(&self, engine: &Engine) {
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

    /// The verdict for file version `id` scanned with the rule selection `rules`.
    pub(crate) fn get(&self, id: &FileId, rules: u64) -> Option<ScanOutcome> {
        lock(self.shard(id)).get(&(*id, rules)).cloned()
    }

    pub(crate) fn insert(&self, id: FileId, rules: u64, o: ScanOutcome) {
        let key = (id, rules);
        let mut m = lock(self.shard(&id));
        if m.len() >= self.per_shard && !m.contains_key(&key) {
            let drop_n = (self.per_shard / 8).max(1);
            let mut n = 0;
            m.retain(|_, _| {
                n += 1;
                n > drop_n
            });
        }
        m.insert(key, o);
    }

    pub(crate) fn clear(&self) {
        for s in &self.shards {
            lock(s).clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

const MAGIC: &[u8; 16] = b"veilfs-scans-v3\n";
/// The reason a loaded "unscannable" verdict gives (the saved record keeps only the verdict).
const SAVED_UNSCANNABLE: &str = "compressed, encrypted or opaque content";
const RECORD: usize = 49;

impl ScanCache {
    /// Writes the clean and binary verdicts to `path` (atomically: temp file, then rename).
    /// Returns how many were written.
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<usize> {
        let fp = *lock(&self.fingerprint);
        let mut out = Vec::with_capacity(MAGIC.len() + 32 + self.len() * RECORD + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&fp);
        let mut n = 0;
        for s in &self.shards {
            for ((id, rules), o) in lock(s).iter() {
                let tag = match o {
                    ScanOutcome::Clean => 0u8,
                    ScanOutcome::Unscannable(_) => 1,
                    ScanOutcome::Redact(_) | ScanOutcome::Refused(_) => continue,
                };
                for v in [
                    id.dev,
                    id.ino,
                    id.size,
                    id.mtime_ns as u64,
                    id.ctime_ns as u64,
                    *rules,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.push(tag);
                n += 1;
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&out)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(n)
    }

    /// Loads verdicts saved by [`save`](Self::save) for the same rules. A missing file is no
    /// error (`Ok(0)`); a file for other rules, truncated or altered is refused.
    pub(crate) fn load(&self, path: &Path) -> Result<usize, String> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.to_string()),
        };
        let head = MAGIC.len() + 32;
        if data.len() < head + 32 || !(data.len() - head - 32).is_multiple_of(RECORD) {
            return Err("not a veilfs scan cache (bad length)".into());
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err("checksum mismatch".into());
        }
        if &body[..MAGIC.len()] != MAGIC {
            return Err("not a veilfs scan cache (bad magic)".into());
        }
        if body[MAGIC.len()..head] != *lock(&self.fingerprint) {
            return Err("saved for other rules".into());
        }
        let mut n = 0;
        for r in body[head..].chunks_exact(RECORD) {
            let v = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&r[i * 8..i * 8 + 8]);
                u64::from_le_bytes(b)
            };
            let id = FileId {
                dev: v(0),
                ino: v(1),
                size: v(2),
                mtime_ns: v(3) as i64,
                ctime_ns: v(4) as i64,
            };
            let rules = v(5);
            let o = match r[48] {
                0 => ScanOutcome::Clean,
                1 => ScanOutcome::Unscannable(SAVED_UNSCANNABLE),
                t => return Err(format!("unknown verdict {t}")),
            };
            self.insert(id, rules, o);
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_verdicts_load_only_for_the_same_rules_and_intact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scans");
        let e = Engine::empty();
        let c = ScanCache::for_engine(64, &e);
        assert_eq!(c.load(&p), Ok(0), "no file yet");
        c.insert(id(1), 0, ScanOutcome::Clean);
        c.insert(id(1), 9, ScanOutcome::Unscannable("t"));
        c.insert(id(2), 0, ScanOutcome::Unscannable("t"));
        assert_eq!(c.save(&p).unwrap(), 3);
        let d = ScanCache::for_engine(64, &e);
        assert_eq!(d.load(&p), Ok(3));
        assert!(matches!(d.get(&id(1), 0), Some(ScanOutcome::Clean)));
        assert!(matches!(
            d.get(&id(2), 0),
            Some(ScanOutcome::Unscannable(_))
        ));
        // Each rule selection keeps its own verdict for the same file version.
        assert!(matches!(
            d.get(&id(1), 9),
            Some(ScanOutcome::Unscannable(_))
        ));
        assert!(d.get(&id(2), 9).is_none());
        // Other rules: nothing is trusted.
        let other = ScanCache::new(64);
        *lock(&other.fingerprint) = [7; 32];
        assert!(other.load(&p).unwrap_err().contains("other rules"));
        assert!(other.get(&id(1), 0).is_none());
        // One flipped byte: nothing is trusted.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[MAGIC.len() + 32 + 3] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let f = ScanCache::for_engine(64, &e);
        assert!(f.load(&p).unwrap_err().contains("checksum"));
        assert_eq!(f.len(), 0);
    }

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
            c.insert(id(i), 0, ScanOutcome::Clean);
        }
        assert!(c.len() <= 64 + SHARDS);
        c.insert(id(5000), 0, ScanOutcome::Unscannable("t"));
        assert!(matches!(
            c.get(&id(5000), 0),
            Some(ScanOutcome::Unscannable(_))
        ));
        let mut other = id(5000);
        other.size = 11;
        assert!(c.get(&other, 0).is_none());
        let e = Engine::empty();
        c.bind(&e);
        assert!(
            c.get(&id(5000), 0).is_none(),
            "rebinding to other rules clears"
        );
    }
}
