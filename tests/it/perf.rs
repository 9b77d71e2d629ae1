//! The performance round's behaviours that must not cost correctness: cached link counts,
//! scanning ahead of the reader.

use crate::common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::{Mount, eventually};

/// `visible_links` caches the listing of a hard-linked file's directory: a link added or
/// removed outside the mount still shows in the count the agent sees.
#[test]
fn link_count_follows_links_made_outside() {
    let scope = tempfile::tempdir().unwrap();
    let d = scope.path().join("node_modules/pkg");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("index.js"), "module.exports = 1;\n").unwrap();
    fs::hard_link(d.join("index.js"), d.join("main.js")).unwrap();
    let m = Mount::start(scope.path(), &[]);
    let seen = m.mp.join("node_modules/pkg/index.js");
    assert_eq!(fs::metadata(&seen).unwrap().nlink(), 2);
    // Asked again and again (the cached listing), then a third name appears outside.
    for _ in 0..5 {
        assert_eq!(fs::metadata(&seen).unwrap().nlink(), 2);
    }
    fs::hard_link(d.join("index.js"), d.join("alias.js")).unwrap();
    assert!(
        eventually(|| fs::metadata(&seen).map(|s| s.nlink()).ok() == Some(3)),
        "the new link never showed in the count"
    );
    fs::remove_file(d.join("main.js")).unwrap();
    assert!(
        eventually(|| fs::metadata(&seen).map(|s| s.nlink()).ok() == Some(2)),
        "the removed link never left the count"
    );
}

/// Scan-ahead takes copies only of settled files: a file changed outside just before its
/// directory is listed, then given a secret, is served with the secret masked, never from a
/// copy taken ahead of the change.
#[test]
fn scan_ahead_never_serves_a_copy_taken_before_an_outside_change() {
    let scope = tempfile::tempdir().unwrap();
    let d = scope.path().join("src");
    fs::create_dir_all(&d).unwrap();
    for i in 0..50 {
        fs::write(d.join(format!("f{i:02}.rs")), format!("fn f{i}() {{}}\n")).unwrap();
    }
    let secret = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
    let pdir = tempfile::tempdir().unwrap();
    let prof = pdir.path().join("ahead.toml");
    // The built-in rules, with two scan-ahead threads.
    fs::write(
        &prof,
        "version = 1\nname = \"ahead\"\n[redaction]\nrule_sets = [\"secrets\"]\n[cache]\nscan_ahead = 2\n",
    )
    .unwrap();
    let m = Mount::start(scope.path(), &["--profile", prof.to_str().unwrap()]);
    // The listing schedules every file; each was written just now (unsettled).
    let n = fs::read_dir(m.mp.join("src")).unwrap().count();
    assert_eq!(n, 50);
    for i in 0..50 {
        let p = d.join(format!("f{i:02}.rs"));
        fs::write(
            &p,
            format!("fn f{i}() {{}}\nconst T: &str = \"{secret}\";\n"),
        )
        .unwrap();
    }
    for i in 0..50 {
        let seen = fs::read_to_string(m.mp.join(format!("src/f{i:02}.rs"))).unwrap();
        assert!(!seen.contains(secret), "f{i:02}.rs served unmasked: {seen}");
        assert!(seen.contains(&format!("fn f{i}()")), "f{i:02}.rs: {seen}");
    }
}
