//! Every integration test in one binary: the harness (`common`, `exact`) and the tests that
//! use it are compiled and linked once, not once per file. Run one file's tests with
//! `cargo test --test it adversary::`, one test with `cargo test --test it -- --exact
//! adversary::<name>`.
//!
//! Tests that mount for real each get their own temp scope, mount point and store (see
//! `common`), so they run in parallel like before; the knobs they read from the environment
//! (`VEILFS_RACE_SECS`, `VEILFS_FUZZ_*`) are only read, never set. `profile_cli` installs a
//! counting global allocator for the whole binary: it counts per thread and forwards every
//! call to the system allocator, so other tests only pay a thread-local increment.

mod common;
mod exact;

mod adversary;
mod approval;
mod aside;
mod audit;
mod binaries;
mod breaker;
mod checkpoint;
mod cold_read;
mod commit_kill;
mod decoys;
mod deferred;
mod documents;
mod durability;
mod edges;
mod egress;
mod examples;
mod forensic;
mod git_history;
mod kill_switch;
mod listing_cache;
mod live_policy;
mod manifest;
mod masked_edit;
mod moved_open;
mod overlay;
mod perf;
mod profile_cli;
mod readonly;
mod redact_rules;
mod redaction;
mod rollback_mount;
mod rollback_speed;
mod run;
mod running_binary;
mod scan_cli;
mod setid;
mod snapshot;
mod text_views;
mod watermarks;
mod why;
mod write_cache;
mod write_passthrough;
