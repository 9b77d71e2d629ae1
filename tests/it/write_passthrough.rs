//! Write handles passed through to the real file (FUSE passthrough, root mounts): a file's
//! opens never mix passthrough and page-cache I/O (the kernel fails such an open with EIO), and
//! writes that veilfs never sees are still captured before and recorded after, so rollback
//! restores a large file rewritten in place byte for byte.

use crate::common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{WriteEnv, tree_hash, veilfs};

fn profile(mode: &str) -> String {
    format!(
        r#"
version = 1
name = "test-write-passthrough"
[redaction]
rule_sets = []
[write]
mode = "{mode}"
snapshot_max_size = "1 GiB"
passthrough_writes = true
[breaker]
max_overwritten_bytes = 0
"#
    )
}

/// Bytes that compress for the first half and not for the second (the store probes only the
/// start of a large pre-image for its zstd level).
fn mixed_bytes(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let line = b"fn main() { println!(\"a line that compresses well\"); }\n";
    while v.len() < len / 2 {
        v.extend_from_slice(line);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn seed(s: &Path) {
    // At least 1 MiB: read-only opens of it pass through too.
    fs::write(s.join("shared.bin"), mixed_bytes(2 << 20)).unwrap();
    // Above the store's two-thread threshold (4 MiB).
    fs::write(s.join("big.bin"), mixed_bytes(12 << 20)).unwrap();
}

/// Regression: a file held open by a reader served by passthrough answered EIO to an open
/// for writing (which used the page cache), and a file held open for writing answered EIO to
/// a reader: the kernel keeps one I/O mode per inode.
fn reader_and_writer_of_one_file_both_open(mode: &str) {
    let e = WriteEnv::new(&profile(mode), seed);
    let m = e.mount();
    let path = m.path("shared.bin");
    let mut reader = fs::File::open(&path).unwrap();
    let mut writer = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap_or_else(|err| panic!("{mode}: write-open while a reader holds it: {err}"));
    writer.write_all(b"appended\n").unwrap();
    let mut head = [0u8; 16];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(&head, &mixed_bytes(16)[..]);
    drop(reader);
    let mut again = fs::File::open(&path)
        .unwrap_or_else(|err| panic!("{mode}: read-open while a writer holds it: {err}"));
    again.seek(SeekFrom::End(-9)).unwrap();
    let mut tail = String::new();
    again.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "appended\n");
    drop((writer, again));
}

#[test]
fn a_reader_and_a_writer_of_one_file_both_open_in_snapshot_mode() {
    reader_and_writer_of_one_file_both_open("snapshot");
}

#[test]
fn a_reader_and_a_writer_of_one_file_both_open_in_overlay_mode() {
    reader_and_writer_of_one_file_both_open("overlay");
}

/// A large file rewritten in place (no truncation: `dd conv=notrunc`), written through a
/// handle whose writes bypass veilfs, and appended to: the pre-image was stored before the
/// first byte changed and the post-image recorded at close, so rollback finds no conflict and
/// restores the exact bytes.
#[test]
fn a_large_file_rewritten_in_place_rolls_back_exactly() {
    let e = WriteEnv::new(&profile("snapshot"), seed);
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("big.bin"))
            .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for i in 0..12u64 {
            f.write_all_at(&zeros, i << 20).unwrap();
        }
        f.write_all_at(b"tail", 12 << 20).unwrap();
    }
    let (status, log) = m.stop();
    assert!(status.success(), "{log}");
    let real = fs::read(e.scope.path().join("big.bin")).unwrap();
    assert_eq!(real.len(), (12 << 20) + 4);
    assert!(real[..12 << 20].iter().all(|&b| b == 0));
    let (ok, out, err) = veilfs(&["verify", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(" 0 conflict"), "{out}");
    assert_eq!(tree_hash(e.scope.path()), before, "rollback: {out}{err}");
}

/// While the breaker counts overwritten bytes, writes are not passed through (it could not
/// count them): overwriting more than `max_overwritten_bytes` in place still trips it, and the
/// next change is refused.
#[test]
fn overwrites_still_trip_a_breaker_that_counts_them() {
    let e = WriteEnv::new(
        r#"
version = 1
name = "test-write-passthrough-breaker"
[redaction]
rule_sets = []
[write]
mode = "snapshot"
passthrough_writes = true
[breaker]
max_overwritten_bytes = "64 KiB"
"#,
        seed,
    );
    let m = e.mount();
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("shared.bin"))
            .unwrap();
        f.write_all_at(&vec![0u8; 256 << 10], 0).unwrap();
    }
    let err = fs::write(m.path("after-the-trip.txt"), "x\n").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

/// The kernel keeps passing an open file's writes to the real file after the server is gone,
/// so write passthrough is off unless the profile asks for it: by default a file opened before
/// `veilfs revoke` stops taking writes with the mount.
#[test]
fn by_default_revoke_stops_writes_through_a_file_opened_before_it() {
    let e = WriteEnv::new(
        r#"
version = 1
name = "test-write-passthrough-revoke"
[redaction]
rule_sets = []
[write]
mode = "snapshot"
[breaker]
max_overwritten_bytes = 0
"#,
        seed,
    );
    let mut m = e.mount();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("shared.bin"))
        .unwrap();
    f.write_all(b"before the revoke\n").unwrap();
    let mp = m.mp.canonicalize().unwrap();
    let (ok, _, err) = veilfs(&["revoke", &mp.display().to_string()]);
    assert!(ok, "{err}");
    let _ = m.child.take().map(|mut c| c.wait());
    assert!(f.write_all(b"after the revoke\n").is_err());
    let real = fs::read(e.scope.path().join("shared.bin")).unwrap();
    assert!(real.ends_with(b"before the revoke\n"));
}
