//! The mount's memory of its last denials, for `veilfs why`: an agent that got EACCES or EROFS
//! asks why, in plain words, without reading the admin's log.
//!
//! A `tracing` layer ([`DenialLayer`]) keeps the last [`KEEP`] audit events whose message says
//! `denied` or `refused`, whatever the log level; the control socket hands them out
//! ([`crate::control`]). What it tells never reveals a name the agent did not ask for itself:
//! a denial is always of a request the agent made, on the path(s) it named, and a reason that
//! names an entry *below* the path (a directory rename refused because of a hidden entry
//! inside) is replaced by a reason that names none ([`Denial::for_agent`]). Lookups of hidden
//! names are never denials (they are simply absent), so they are never listed.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// How many denials are remembered.
pub(crate) const KEEP: usize = 200;

static RECENT: Mutex<VecDeque<Denial>> = Mutex::new(VecDeque::new());

/// One denial, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Denial {
    pub time_ns: i128,
    /// The audit message (`write denied`, `rename denied: it would loosen the view`, ...).
    pub what: String,
    /// The path(s) the request named, relative to the mount's root.
    pub paths: Vec<String>,
    pub reason: String,
}

impl Denial {
    /// This denial as the agent may see it: the reason is dropped for a phrase when it names
    /// anything but the request's own paths.
    pub(crate) fn for_agent(&self) -> Denial {
        let mut d = self.clone();
        if d.reason.contains(" is hidden and would become visible") {
            d.reason = "something inside is hidden by the profile and would become visible at the new name".into();
        } else if d.reason.contains(" would become ") || d.reason.contains(" would start ") {
            d.reason = "something inside would be less protected at the new name".into();
        }
        d
    }

    /// Whether it concerns `path` (or something below it); the empty path matches all.
    pub(crate) fn concerns(&self, path: &str) -> bool {
        let path = path.trim_matches('/');
        path.is_empty()
            || self.paths.iter().any(|p| {
                p == path
                    || p.starts_with(&format!("{path}/"))
                    || path.starts_with(&format!("{p}/"))
            })
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = crate::time::format_time(self.time_ns);
        write!(f, "{when}  {}: {}", self.what, self.paths.join(" -> "))?;
        if !self.reason.is_empty() {
            write!(f, "\n    because {}", self.reason)?;
        }
        Ok(())
    }
}

/// The denials remembered, oldest first.
pub(crate) fn recent() -> Vec<Denial> {
    RECENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Remembers a denial (the layer calls it; so can code that denies without an audit event).
pub(crate) fn record(d: Denial) {
    let mut r = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if r.len() == KEEP {
        r.pop_front();
    }
    r.push_back(d);
}

/// The `tracing` layer that feeds [`recent`]. Add it to the subscriber without a filter of its
/// own level (it picks the audit target itself).
pub(crate) struct DenialLayer;

#[derive(Default)]
struct Fields {
    message: String,
    /// The typed audit event's kind and operation (`audit::AuditEvent`).
    event: String,
    op: String,
    path: Option<String>,
    from: Option<String>,
    to: Option<String>,
    reason: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

impl Fields {
    fn set(&mut self, field: &Field, v: String) {
        match field.name() {
            "message" => self.message = v,
            "event" => self.event = v,
            "op" => self.op = v,
            "path" => self.path = Some(v),
            "from" => self.from = Some(v),
            "to" => self.to = Some(v),
            "reason" => self.reason = v,
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DenialLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("veilfs::audit") {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let denied = if f.event.is_empty() {
            f.message.contains("denied") || f.message.contains("refused")
        } else {
            f.event == "denied" || f.event == "egress-refused"
        };
        if !denied {
            return;
        }
        // A typed event's message repeats its reason (which may name what the agent may not
        // learn): the operation alone says what was refused.
        let what = if f.event == "denied" {
            format!("{} denied", f.op)
        } else if f.event == "egress-refused" {
            // The destination is one the agent itself named (in CONNECT or its URI).
            "network connection refused".to_string()
        } else {
            f.message
        };
        let nonempty = |p: Option<String>| p.filter(|p| !p.is_empty());
        let paths = match (nonempty(f.path), nonempty(f.from), nonempty(f.to)) {
            (Some(p), _, Some(t)) => vec![p, t],
            (Some(p), _, None) => vec![p],
            (None, Some(a), Some(b)) => vec![a, b],
            (None, a, b) => a.into_iter().chain(b).collect(),
        };
        record(Denial {
            time_ns: crate::time::now_ns(),
            what,
            paths,
            reason: f.reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn audit_denials_are_remembered_and_hidden_names_are_not_told() {
        let sub = tracing_subscriber::registry().with(DenialLayer);
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "veilfs::audit", path = "a/x.txt", op = "write", reason = "not writable under the profile", "write denied");
            tracing::info!(target: "veilfs::audit", path = "a/y.txt", "read");
            tracing::warn!(target: "veilfs::other", path = "z", "write denied");
            tracing::warn!(target: "veilfs::audit", from = "d", to = "e", reason = "d/.env is hidden and would become visible", "rename denied: it would loosen the view");
        });
        let r = recent();
        let mine: Vec<&Denial> = r
            .iter()
            .filter(|d| d.paths.iter().any(|p| p == "a/x.txt" || p == "d"))
            .collect();
        assert_eq!(mine.len(), 2, "{r:?}");
        assert_eq!(mine[0].reason, "not writable under the profile");
        assert!(mine[0].concerns("a") && mine[0].concerns("a/x.txt") && !mine[0].concerns("b"));
        assert_eq!(mine[1].paths, ["d", "e"]);
        let told = mine[1].for_agent().to_string();
        assert!(!told.contains(".env"), "{told}");
        assert!(
            !r.iter()
                .any(|d| d.paths.iter().any(|p| p == "a/y.txt" || p == "z"))
        );
    }
}
