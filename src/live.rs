//! The policy a mount enforces, replaceable while it serves ([`crate::reload`] replaces it when
//! the profile or a rule file changes).
//!
//! One [`Active`] (policy, redaction engine, generation) is swapped as a whole, so a request
//! that took it sees one consistent pair. Readers take a clone of an `Arc` under a read lock
//! (no new dependency for an `arc-swap`; a swap is rare, reads never wait on each other).
//! Everything cached from an older generation is keyed apart: [`crate::fs::view::Viewer`] salts
//! its rule-selection ids with the generation, so a scan verdict or a served copy taken under
//! the old rules is never served under the new ones, even when a request in flight stores it
//! after the swap.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::policy::{EntryKind, Hidden, Policy};
use crate::redact::Engine;

/// One generation of the policy.
pub(crate) struct Active {
    pub policy: Policy,
    pub engine: Arc<Engine>,
    /// 0 at mount, +1 at every accepted change.
    pub generation: u64,
}

pub(crate) struct LivePolicy {
    cur: RwLock<Arc<Active>>,
}

impl LivePolicy {
    pub(crate) fn new(policy: Policy, engine: Arc<Engine>) -> LivePolicy {
        LivePolicy {
            cur: RwLock::new(Arc::new(Active {
                policy,
                engine,
                generation: 0,
            })),
        }
    }

    /// The policy in force now; hold it for the whole of one decision.
    pub(crate) fn current(&self) -> Arc<Active> {
        self.cur.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new policy in force; returns its generation. The write mode is not replaceable
    /// (the mount's write path was built for it): the caller has checked it is unchanged.
    pub(crate) fn replace(&self, policy: Policy, engine: Arc<Engine>) -> u64 {
        let mut cur = self.cur.write().unwrap_or_else(|p| p.into_inner());
        let generation = cur.generation + 1;
        *cur = Arc::new(Active {
            policy,
            engine,
            generation,
        });
        generation
    }

    /// `f` applied to the policy in force, under the read lock (no reference count traffic
    /// on the hot path: every lookup asks).
    fn with<R>(&self, f: impl FnOnce(&Policy) -> R) -> R {
        self.with_active(|a| f(&a.policy))
    }

    /// Answers from the policy and engine in force under the read lock, without taking a
    /// reference (what the lookup path's cheap questions use).
    pub(crate) fn with_active<R>(&self, f: impl FnOnce(&Active) -> R) -> R {
        f(&self.cur.read().unwrap_or_else(|p| p.into_inner()))
    }

    // The questions the `fs` layer asks, each answered by the policy in force (one decision
    // that asks several questions takes [`LivePolicy::current`] once instead).

    pub(crate) fn visibility(
        &self,
        rel: &Path,
        kind: EntryKind,
        size: u64,
        symlink_target: Option<&Path>,
    ) -> Result<(), Hidden> {
        self.with(|p| p.visibility(rel, kind, size, symlink_target))
    }

    pub(crate) fn needs_symlink_targets(&self) -> bool {
        self.with(|p| p.needs_symlink_targets())
    }

    pub(crate) fn writable(&self, rel: &Path) -> bool {
        self.with(|p| p.writable(rel))
    }

    pub(crate) fn unscannable_allowed(&self, rel: &Path) -> bool {
        self.with(|p| p.unscannable_allowed(rel))
    }

    /// Whether a person must approve `op` on any of `paths` (the profile's `[approval]`).
    pub(crate) fn needs_approval(&self, op: crate::profile::ApprovalOp, paths: &[&Path]) -> bool {
        self.with(|p| p.needs_approval(op, paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn policy(deny: &str) -> Policy {
        let p = Profile::parse(
            &format!("version = 1\n[visibility]\ndeny = [{deny:?}]"),
            "t.toml",
        )
        .unwrap();
        Policy::new(&p).unwrap()
    }

    #[test]
    fn replace_swaps_policy_and_counts_generations() {
        let engine = Arc::new(Engine::load(&[], &[]).unwrap());
        let live = LivePolicy::new(policy("a"), engine.clone());
        let f = |l: &LivePolicy, p: &str| l.visibility(Path::new(p), EntryKind::File, 1, None);
        assert!(f(&live, "a").is_err() && f(&live, "b").is_ok());
        let before = live.current();
        assert_eq!(live.replace(policy("b"), engine), 1);
        assert!(f(&live, "a").is_ok() && f(&live, "b").is_err());
        // A decision in flight keeps the generation it took.
        assert_eq!(before.generation, 0);
        assert!(
            before
                .policy
                .path_visibility(Path::new("a"), EntryKind::File, 1, None)
                .is_err()
        );
    }
}
