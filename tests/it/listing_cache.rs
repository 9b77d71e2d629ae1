//! Listings kept between READDIRs in no-open mode (the default read-only mount): a reader
//! part-way through a directory when it changes outside must not be served the rest of the
//! listing taken before the change, once the watcher has seen it. And what the kernel keeps for
//! the watched TTL (ten minutes) must fall back to the short TTL when the watcher cannot see a
//! new directory.

use crate::common::{self, Mount};

use std::fs;
use std::path::Path;

#[test]
fn a_listing_continued_after_an_outside_removal_does_not_show_the_removed_names() {
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    fs::create_dir(s.join("d")).unwrap();
    // Long names: a READDIR reply holds ~150 of them, so 2,000 take many replies and veilfs
    // keeps the listing for the next one.
    let pad = "n".repeat(60);
    for i in 0..2000 {
        fs::write(s.join(format!("d/{i:04}-{pad}")), "x\n").unwrap();
    }
    fs::write(s.join("sig.txt"), "one\n").unwrap();
    let m = Mount::start(s, &[]);
    assert_eq!(fs::read_to_string(m.path("sig.txt")).unwrap(), "one\n");

    let mut reader = fs::read_dir(m.path("d")).unwrap();
    let first: Vec<String> = reader
        .by_ref()
        .take(10)
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(first.len(), 10);
    for e in fs::read_dir(s.join("d")).unwrap() {
        let e = e.unwrap();
        if !first.contains(&e.file_name().to_string_lossy().into_owned()) {
            fs::remove_file(e.path()).unwrap();
        }
    }
    // The watcher handles events in order: once it has pushed this change, it has seen every
    // removal above.
    fs::write(s.join("sig.txt"), "two, longer\n").unwrap();
    assert!(common::eventually(|| fs::metadata(m.path("sig.txt"))
        .map(|md| md.len() == 12)
        .unwrap_or(false)));

    let rest: Vec<String> = reader
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // What the reader's first reply brought (libc's buffer) was listed before the removal, as
    // on any filesystem; everything after it comes from a listing taken after it.
    assert!(
        first.len() + rest.len() < 1000,
        "{} names listed after 1,990 of 2,000 were removed outside",
        first.len() + rest.len()
    );
    let mut now: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    now.sort();
    let mut want = first.clone();
    want.sort();
    assert_eq!(now, want);
}

#[test]
fn a_directory_the_watcher_cannot_watch_drops_the_mount_to_the_short_ttl() {
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    // The watcher may watch the root only: the directory made below is past its limit, as if
    // the system's inotify watches ran out.
    let m = Mount::start_env(s, &[], &[("VEILFS_TEST_WATCH_LIMIT", Path::new("1"))]);
    fs::create_dir(s.join("new")).unwrap();
    fs::write(s.join("new/f.txt"), "one\n").unwrap();
    assert!(common::eventually(|| fs::read_to_string(
        m.path("new/f.txt")
    )
    .is_ok_and(|t| t == "one\n")));
    // Changed outside in a directory no watch sees: with the watched TTL the kernel would
    // serve its kept size and page cache ("one") for ten minutes.
    fs::write(s.join("new/f.txt"), "two, longer\n").unwrap();
    assert!(
        common::eventually(
            || fs::read_to_string(m.path("new/f.txt")).is_ok_and(|t| t == "two, longer\n")
        ),
        "a change in an unwatched directory stayed hidden behind the watched TTL"
    );
}
