//! Listings kept between READDIRs in no-open mode (the default read-only mount): a reader
//! part-way through a directory when it changes outside must not be served the rest of the
//! listing taken before the change, once the watcher has seen it. And what the kernel keeps for
//! the watched TTL (ten minutes) must fall back to the short TTL when the watcher cannot see a
//! new directory. Names found absent are kept too, and dropped the same way.

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

/// How many LOOKUPs of `name` the mount's debug log (`fuser=debug`) shows.
fn lookups_of(log: &str, name: &str) -> usize {
    log.matches(&format!("LOOKUP name \"{name}\"")).count()
}

/// A name that does not exist is asked once and then kept by the kernel as an absence (a
/// compiler probing every include directory, `git` and module resolvers stat far more absent
/// names than present ones); made outside, it shows as soon as the watcher reports it.
#[test]
fn an_absent_name_is_asked_once_and_shows_when_made_outside() {
    let scope = tempfile::tempdir().unwrap();
    let s = scope.path();
    fs::create_dir(s.join("inc")).unwrap();
    let m = Mount::start_env(s, &[], &[("RUST_LOG", Path::new("warn,fuser=debug"))]);
    for _ in 0..3 {
        let err = fs::metadata(m.path("inc/config.h")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
    // Moved in whole (one watcher event), so the name is looked up once more, not per event.
    let elsewhere = tempfile::tempdir_in(s.parent().unwrap()).unwrap();
    fs::write(elsewhere.path().join("config.h"), "#define X 1\n").unwrap();
    fs::rename(elsewhere.path().join("config.h"), s.join("inc/config.h")).unwrap();
    assert!(
        common::eventually(
            || fs::read_to_string(m.path("inc/config.h")).is_ok_and(|t| t == "#define X 1\n")
        ),
        "a name made outside stayed absent behind its cached absence"
    );
    let (_, log) = m.stop();
    // One LOOKUP for the three probes, one after the watcher dropped the absence.
    assert_eq!(lookups_of(&log, "config.h"), 2, "{log}");
}
