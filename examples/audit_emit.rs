//! The audit path alone: how many events per second the audit trail sustains into a store
//! (OCSF JSON, hash chain, buffered file), from 1 and from 4 threads, with the actor of a FUSE
//! request (its `/proc` lookups cached as in a mount). What `benches/audit_rate.sh` measures end
//! to end, without the filesystem around it.
//!
//! `cargo run --release --example audit_emit [EVENTS]` (default 200000 per run).

fn main() -> std::io::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    for threads in [1, 4] {
        let rate = veilfs::testing::audit_bench_emit(threads, events)?;
        println!("{threads} thread(s): {rate:.0} events/s");
    }
    Ok(())
}
