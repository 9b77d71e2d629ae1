//! Names that do not exist (or that the view hides), cached by the kernel.
//!
//! A build probes far more names that are absent than names that exist: a compiler tries each
//! header in every include directory, `git` stats `objects/xx/` before it makes it, module
//! resolvers walk up looking for `node_modules` and `package.json`. Each probe the kernel does
//! not remember is a LOOKUP round trip. A LOOKUP reply with node id 0 is a negative entry the
//! kernel keeps for the entry TTL (the mount's TTL, as for names that exist).
//!
//! What keeps a cached absence true:
//! - a name made through the mount replaces the kernel's negative entry itself (the reply to
//!   CREATE, MKDIR, LINK, RENAME and the rest instantiates it);
//! - a name made outside the mount is pushed by the folder watcher (`inval_entry` of the
//!   name, which drops a negative entry as well as a positive one), or lives at most the
//!   unwatched TTL when nothing watches;
//! - a change that may make hidden names visible (a policy reload, a lost watch; a revoke)
//!   drops every cached absence: the kernel can only be told names, so the ones given out
//!   are kept ([`Absent`], bounded) until their TTL has passed.
//!
//! Mounts that place virtual entries (decoys, text views) cache no absence: a virtual name
//! appears when a sibling does, which no invalidation of that name reports.
//!
//! An absence says less than an entry, never more: it can hide a name for a TTL, never show
//! one, so a stale one is a delay, not a leak.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most absences remembered at once; past it (none expired) a LOOKUP answers a plain
/// ENOENT, which the kernel does not keep.
const ABSENT_MAX: usize = 65536;
/// How often a full table looks for expired absences to make room.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The absences given to the kernel that have not expired: `(parent inode, name)` -> until.
#[derive(Default)]
pub(crate) struct Absent {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    names: HashMap<(u64, OsString), Instant>,
    pruned: Option<Instant>,
    /// Bumped by every [`Absent::take`].
    generation: u64,
}

impl Absent {
    /// The generation a LOOKUP must read before it decides: an absence decided before a
    /// [`Absent::take`] (under the policy that take is dropping) and remembered after it
    /// would escape that invalidation.
    pub(crate) fn generation(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// Remembers that `name` in `parent`, found absent by a LOOKUP that began at
    /// `generation`, is reported absent for `ttl` from `now`. False when the absence must not
    /// be given a TTL: the table is full, or a take happened since the LOOKUP began.
    pub(crate) fn remember(
        &self,
        generation: u64,
        parent: u64,
        name: &OsStr,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if t.generation != generation {
            return false;
        }
        let until = now + ttl;
        let key = (parent, name.to_os_string());
        if let Some(u) = t.names.get_mut(&key) {
            *u = (*u).max(until);
            return true;
        }
        if t.names.len() >= ABSENT_MAX {
            if t.pruned
                .is_some_and(|p| now.duration_since(p) < PRUNE_EVERY)
            {
                return false;
            }
            t.pruned = Some(now);
            t.names.retain(|_, u| *u > now);
            if t.names.len() >= ABSENT_MAX {
                return false;
            }
        }
        t.names.insert(key, until);
        true
    }

    /// Every absence that may still be cached (the table is emptied): what a change that can
    /// reveal names must invalidate.
    pub(crate) fn take(&self, now: Instant) -> Vec<(u64, OsString)> {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.generation += 1;
        std::mem::take(&mut t.names)
            .into_iter()
            .filter(|(_, u)| *u > now)
            .map(|(k, _)| k)
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn taken_absences_are_the_unexpired_ones_and_leave_the_table_empty() {
        let a = Absent::default();
        let t0 = Instant::now();
        assert!(a.remember(0, 1, OsStr::new("short"), Duration::from_secs(1), t0));
        assert!(a.remember(0, 1, OsStr::new("long"), TTL, t0));
        assert!(a.remember(0, 2, OsStr::new("long"), TTL, t0));
        let mut got = a.take(t0 + Duration::from_secs(2));
        got.sort();
        assert_eq!(
            got,
            vec![(1, OsString::from("long")), (2, OsString::from("long"))]
        );
        assert_eq!(a.len(), 0);
        assert!(a.take(t0).is_empty());
    }

    #[test]
    fn an_absence_decided_before_a_take_is_not_given_a_ttl_after_it() {
        let a = Absent::default();
        let t0 = Instant::now();
        let g = a.generation();
        a.take(t0);
        assert!(!a.remember(g, 1, OsStr::new("x"), TTL, t0));
        assert_eq!(a.len(), 0);
        assert!(a.remember(a.generation(), 1, OsStr::new("x"), TTL, t0));
    }

    #[test]
    fn a_name_given_again_keeps_its_latest_expiry() {
        let a = Absent::default();
        let t0 = Instant::now();
        assert!(a.remember(0, 1, OsStr::new("x"), TTL, t0));
        assert!(a.remember(0, 1, OsStr::new("x"), Duration::from_secs(1), t0));
        assert_eq!(a.take(t0 + Duration::from_secs(2)).len(), 1);
    }

    #[test]
    fn a_full_table_refuses_until_absences_expire() {
        let a = Absent::default();
        let t0 = Instant::now();
        for i in 0..ABSENT_MAX as u64 {
            assert!(a.remember(0, i, OsStr::new("n"), Duration::from_millis(200), t0));
        }
        // Full, nothing expired: refused (and every given absence is still invalidatable).
        assert!(!a.remember(0, u64::MAX, OsStr::new("n"), TTL, t0));
        // Expired now, but within a second of that look: no second look (a full table is
        // not scanned at every LOOKUP).
        let soon = t0 + Duration::from_millis(500);
        assert!(!a.remember(0, u64::MAX, OsStr::new("n"), TTL, soon));
        // A second later the expired ones are pruned and the name is taken.
        assert!(a.remember(
            0,
            u64::MAX,
            OsStr::new("n"),
            TTL,
            t0 + Duration::from_millis(1500)
        ));
        assert_eq!(a.len(), 1);
    }
}
