//! The audit path alone: how many events per second [`veilfs::audit::emit`] sustains into a
//! store's trail (OCSF JSON, hash chain, buffered file), from 1 and from 4 threads, with the
//! actor of a FUSE request (its `/proc` lookups cached as in a mount). What `benches/audit_rate.sh`
//! measures end to end, without the filesystem around it.
//!
//! `cargo run --release --example audit_emit [EVENTS]` (default 200000 per run).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use veilfs::audit::{self, Actor, AuditConfig, AuditEvent, Sink};

fn run(threads: usize, events: usize) -> f64 {
    let store = tempfile::tempdir().expect("temp store");
    let sink = Sink::open(&AuditConfig {
        store_dir: Some(store.path().to_path_buf()),
        session: format!("bench-{threads}"),
        mountpoint: PathBuf::from("/mnt/view"),
        log: None,
        key: None,
    })
    .expect("open the trail");
    audit::install(Arc::new(sink));
    let per = events / threads;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let _actor = Actor::this_process().enter();
                for i in 0..per {
                    audit::emit(&AuditEvent::Open {
                        path: PathBuf::from(format!(
                            "d{:04}/f{:03}.txt",
                            (t * per + i) / 100,
                            i % 100
                        )),
                        writable: false,
                        masked: false,
                        rules: Vec::new(),
                        redactions: 0,
                    });
                }
            });
        }
    });
    audit::uninstall();
    (per * threads) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    for threads in [1, 4] {
        println!("{threads} thread(s): {:.0} events/s", run(threads, events));
    }
}
