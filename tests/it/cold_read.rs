//! The first touch of a tree: reads answered from a scanned copy that is already there (taken
//! ahead of the reader, or by an earlier read) without reopening the file. Such a read must
//! serve only the version the copy was taken of, and must still be audited.

use crate::common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Mount, eventually, write_profile};

/// Reads a file through the mount after dropping its pages from the kernel's cache, so the
/// read reaches veilfs as a READ (no-open mode keeps pages across opens).
fn read_uncached(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

/// Has every file of `dir` been unchanged for longer than veilfs's settle time (2 s)?
fn settled(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().all(|e| {
        let m = e.unwrap().metadata().unwrap();
        let ctime = SystemTime::UNIX_EPOCH + Duration::new(m.ctime() as u64, m.ctime_nsec() as u32);
        ctime
            .elapsed()
            .is_ok_and(|d| d > Duration::from_millis(2500))
    })
}

/// A copy kept for one version of a file is never served for the next: the file is rewritten
/// in place outside the mount (same inode, same size, other bytes, a secret among them) and
/// read again through veilfs, which must serve the new bytes, masked. (Fails when the ready
/// copy's version is not checked against the file's.)
#[test]
fn a_kept_copy_is_never_served_for_a_version_rewritten_outside() {
    let scope = tempfile::tempdir().unwrap();
    let real = scope.path().join("app.rs");
    let one = format!("const K: &str = \"{}\";\n", "x".repeat(40));
    let secret = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
    let two = format!("const K: &str = \"{secret}\";\n");
    assert_eq!(one.len(), two.len());
    fs::write(&real, &one).unwrap();
    let m = Mount::start(scope.path(), &[]);
    let seen = m.path("app.rs");
    assert_eq!(read_uncached(&seen), one);
    // The copy of version one is kept: a second READ of it is answered from it.
    assert_eq!(read_uncached(&seen), one);
    let ino = fs::metadata(&real).unwrap().ino();
    let mut f = fs::OpenOptions::new().write(true).open(&real).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(two.as_bytes()).unwrap();
    drop(f);
    assert_eq!(
        fs::metadata(&real).unwrap().ino(),
        ino,
        "rewritten in place"
    );
    let mut last = String::new();
    let ok = eventually(|| {
        last = read_uncached(&seen);
        assert_ne!(
            last, one,
            "served the copy of the version before the rewrite"
        );
        last.len() == two.len() && last.starts_with("const K")
    });
    assert!(ok, "never served the new version: {last:?}");
    assert!(!last.contains(secret), "served unmasked: {last}");
}

/// Files scanned ahead of the reader (`cache.scan_ahead`) and then read are audited exactly
/// like files the reader scanned itself: one `read` event per file, with the right bytes
/// served. (Fails when a read served from a copy taken ahead is not audited.)
#[test]
fn reads_of_files_scanned_ahead_are_audited_once_each() {
    let scope = tempfile::tempdir().unwrap();
    let d = scope.path().join("src");
    fs::create_dir_all(&d).unwrap();
    const N: usize = 40;
    for i in 0..N {
        fs::write(d.join(format!("f{i:02}.rs")), format!("fn f{i}() {{}}\n")).unwrap();
    }
    // Scan-ahead takes only settled files (as any read): a real tree is older than that.
    assert!(eventually(|| settled(&d)), "files never settled");
    let pdir = tempfile::tempdir().unwrap();
    let prof = write_profile(
        pdir.path(),
        "ahead.toml",
        "version = 1\nname = \"ahead\"\n[redaction]\nrule_sets = [\"secrets\"]\n[cache]\nscan_ahead = 1\n",
    );
    let log = pdir.path().join("audit.jsonl");
    let m = Mount::start(
        scope.path(),
        &[
            "--profile",
            prof.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read_dir(m.path("src")).unwrap().count(), N);
    // The worker reads each file it takes, which moves the real file's atime (relatime: the
    // first read after a write does): wait until it has taken them all.
    let atimes_moved = || {
        fs::read_dir(&d).unwrap().all(|e| {
            let m = e.unwrap().metadata().unwrap();
            (m.atime(), m.atime_nsec()) > (m.mtime(), m.mtime_nsec())
        })
    };
    let ahead = eventually(atimes_moved);
    for i in 0..N {
        let seen = fs::read_to_string(m.path(&format!("src/f{i:02}.rs"))).unwrap();
        assert_eq!(seen, format!("fn f{i}() {{}}\n"));
    }
    m.stop();
    let text = fs::read_to_string(&log).unwrap();
    for i in 0..N {
        let path = format!("src/f{i:02}.rs");
        let reads = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| {
                v.pointer("/unmapped/veilfs/event").and_then(|e| e.as_str()) == Some("read")
                    && v.pointer("/unmapped/veilfs/path").and_then(|p| p.as_str())
                        == Some(path.as_str())
            })
            .count();
        assert_eq!(reads, 1, "{path}: {reads} read events");
    }
    // Not an assertion on timing: say which path the reads took when this passes.
    eprintln!("scan-ahead took every file before the reads: {ahead}");
}
