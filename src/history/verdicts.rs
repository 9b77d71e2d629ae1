//! Verdicts on object files, keyed by their content: blake3 keyed with the rule fingerprint, so
//! a new or rewritten pack (other bytes) is judged again, a rule change judges everything again,
//! and a renamed, copied or re-created pack with the same bytes is not judged twice.
//!
//! Persisted in the store (never in the scope or the mount: a copy the agent could write would
//! let it mark a pack clean), written atomically at unmount, so a remount does not rescan the
//! history it already judged. A file that does not parse is ignored (everything is rescanned).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use super::judge::Verdict;

/// The key of the object file `data` under the rules whose fingerprint is `fingerprint`.
pub(crate) fn key(fingerprint: &[u8; 32], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(fingerprint, data).as_bytes()
}

/// At most this many verdicts are kept; past it the map is emptied (a miss costs a rescan).
const CAPACITY: usize = 1 << 20;

#[derive(Default)]
pub(crate) struct Verdicts {
    map: Mutex<HashMap<[u8; 32], Verdict>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    version: u32,
    verdicts: Vec<(String, Verdict)>,
}

impl Verdicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Verdict>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Verdict> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: [u8; 32], v: Verdict) {
        let mut m = self.lock();
        if m.len() >= CAPACITY {
            m.clear();
        }
        m.insert(key, v);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every verdict to `path` (temp file, fsync, rename); how many.
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<usize> {
        let saved = Saved {
            version: 1,
            verdicts: self
                .lock()
                .iter()
                .map(|(k, v)| (hex::encode(k), v.clone()))
                .collect(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, &saved)?;
        tmp.as_file_mut().flush()?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(saved.verdicts.len())
    }

    /// Adds the verdicts saved at `path`; how many. A missing file is none.
    pub(crate) fn load(&self, path: &Path) -> std::io::Result<usize> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&bytes)?;
        if saved.version != 1 {
            return Err(std::io::Error::other("unknown version"));
        }
        let mut n = 0;
        for (k, v) in saved.verdicts {
            let Ok(k) = <[u8; 32]>::try_from(hex::decode(&k).unwrap_or_default()) else {
                continue;
            };
            self.insert(k, v);
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_content_and_rules() {
        let (f1, f2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(key(&f1, b"PACK a"), key(&f1, b"PACK a"));
        assert_ne!(
            key(&f1, b"PACK a"),
            key(&f1, b"PACK b"),
            "new bytes, new verdict"
        );
        assert_ne!(
            key(&f1, b"PACK a"),
            key(&f2, b"PACK a"),
            "new rules, new verdict"
        );
        let v = Verdicts::default();
        v.insert(key(&f1, b"a"), Verdict::Clean);
        assert_eq!(v.get(&key(&f1, b"a")), Some(Verdict::Clean));
        assert_eq!(v.get(&key(&f1, b"b")), None);
        assert_eq!(v.get(&key(&f2, b"a")), None);
    }

    #[test]
    fn saved_and_loaded_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("history-verdicts");
        let v = Verdicts::default();
        assert_eq!(v.load(&p).unwrap(), 0);
        v.insert([1; 32], Verdict::Clean);
        v.insert(
            [2; 32],
            Verdict::Secret("rule `x` matches in blob 12".into()),
        );
        v.insert([3; 32], Verdict::Unscannable("corrupt".into()));
        assert_eq!(v.save(&p).unwrap(), 3);
        let w = Verdicts::default();
        assert_eq!(w.load(&p).unwrap(), 3);
        assert_eq!(w.get(&[2; 32]), v.get(&[2; 32]));
        assert_eq!(
            w.get(&[3; 32]),
            Some(Verdict::Unscannable("corrupt".into()))
        );
        std::fs::write(&p, b"{not json").unwrap();
        assert!(Verdicts::default().load(&p).is_err());
    }
}
