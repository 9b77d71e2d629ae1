//! Scanning ahead of the reader. An agent's first act on a mount is often `grep -r` over the
//! whole tree: each file's first READ then takes a consistent copy and scans it on the request
//! thread, while the reader waits. A directory listing therefore schedules the same work for
//! the files it lists on a few background threads, so the READs that follow find their scanned
//! copy (see [`served`](super::served)) ready.
//!
//! It changes nothing about what may be served: a copy is taken by the same
//! [`consistent_copy`](super::served::consistent_copy), which trusts only a file whose ctime
//! has settled (a file changed outside within the last two seconds is skipped, and its reader
//! waits for it as before), and only clean copies (view `Raw`) are kept: a masked or refused
//! file is left to its reader, which records and audits it. Bounded: a listing is dropped when
//! the workers are busy (a speculative scan never queues behind another), and a listing
//! schedules at most [`JOB_BYTES`] of files.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::backing::{self, Kind, Stat};

use super::served::{self, Copies, Taken};
use super::view::{self, View, Viewer};

/// Listings waiting for a worker; more are dropped.
const QUEUE: usize = 2;
/// Bytes of files one listing schedules at most.
const JOB_BYTES: u64 = 4 << 20;

struct Job {
    dir: Arc<OwnedFd>,
    rel: PathBuf,
    files: Vec<(OsString, Stat)>,
}

pub(super) struct Ahead {
    tx: SyncSender<Job>,
}

impl Ahead {
    /// Starts `threads` workers; they end when the `Ahead` is dropped.
    pub(super) fn start(threads: usize, viewer: Arc<Viewer>, copies: Arc<Copies>) -> Ahead {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let (rx, viewer, copies) = (rx.clone(), viewer.clone(), copies.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("veilfs-ahead-{i}"))
                .spawn(move || work(&rx, &viewer, &copies));
            if let Err(e) = spawned {
                tracing::warn!("no scan-ahead worker: {e}");
            }
        }
        Ahead { tx }
    }

    /// Schedules the regular files of a listing of `dir` (at `rel`), if a worker is free soon.
    pub(super) fn listed(&self, dir: Arc<OwnedFd>, rel: PathBuf, entries: &[(OsString, Stat)]) {
        let max = JOB_BYTES;
        let mut bytes = 0;
        let files: Vec<_> = entries
            .iter()
            .filter(|(_, st)| st.kind() == Kind::File && st.size > 0)
            .take_while(|(_, st)| {
                bytes += st.size;
                bytes <= max
            })
            .cloned()
            .collect();
        if files.is_empty() {
            return;
        }
        match self.tx.try_send(Job { dir, rel, files }) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, viewer: &Viewer, copies: &Copies) {
    loop {
        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        for (name, listed) in &job.files {
            scan_one(viewer, copies, &job, name, listed);
        }
    }
}

/// Takes, scans and keeps a clean copy of one listed file, exactly as its first READ would.
fn scan_one(viewer: &Viewer, copies: &Copies, job: &Job, name: &OsString, listed: &Stat) {
    if listed.size > viewer.max_scan_size() {
        return;
    }
    let key = (listed.dev, listed.ino);
    let rel = job.rel.join(name);
    // Taken already (by its reader, who overtook us, or by an earlier listing): skip it
    // before opening anything.
    if copies.get(key).is_some_and(|c| {
        c.id == view::file_id(listed) && c.rules == viewer.rules_for(&rel, listed).id()
    }) {
        return;
    }
    let Ok(fd) = backing::lookup(job.dir.as_fd(), name) else {
        return;
    };
    let Ok(file) = backing::reopen_as(fd.as_fd(), Kind::File, libc::O_RDONLY) else {
        return;
    };
    let stat = || backing::stat_fd(file.as_fd());
    let Ok(st) = stat() else {
        return;
    };
    if st.kind() != Kind::File || (st.dev, st.ino) != key || st.size > viewer.max_scan_size() {
        return;
    }
    let rules = viewer.rules_for(&rel, &st).id();
    let id = view::file_id(&st);
    if copies
        .get(key)
        .is_some_and(|c| c.id == id && c.rules == rules)
    {
        return;
    }
    let Ok(Taken::Copy(data)) = served::consistent_copy(&file, &st, stat, copies.own_change(key))
    else {
        return;
    };
    let v = viewer.decide_bytes(&rel, &st, &data);
    if matches!(v, View::Raw) {
        copies.put(
            key,
            Arc::new(served::Copy {
                id,
                rules,
                data,
                view: v,
            }),
        );
    }
}
