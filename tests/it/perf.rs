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
