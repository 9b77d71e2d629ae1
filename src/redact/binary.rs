//! Binaries: the printable runs inside them are scanned like text, and masked in place.
//!
//! Why: a binary is rarely opaque. `__pycache__/settings.cpython-311.pyc` holds every string
//! constant of `settings.py`; object files, `.class` files, SQLite databases and tar archives
//! hold the literals of their sources. Serving them unscanned lets `grep -a` (or `import
//! settings`, which trusts a `.pyc` whose recorded source size and mtime match) read a token
//! the source file shows masked. Refusing them instead breaks builds and every text file that
//! merely picked up a NUL byte.
//!
//! So a file that is not text is reduced to its printable runs, the way `strings` and
//! `strings -el` find them: maximal runs of printable ASCII (plus tab, CR, LF and well-formed
//! UTF-8 sequences), and runs of printable ASCII stored as UTF-16LE code units, each at least
//! [`MIN_RUN`] characters long. The engine scans
//! - a *narrow projection*: the file with every byte outside a run replaced by `\n`, so offsets
//!   are file offsets and no match crosses from one run into the next one's line;
//! - a *wide projection*: the UTF-16LE runs decoded to ASCII, one per line, with a map back to
//!   the code units.
//!
//! Matches are masked in place with the usual length-preserving label (UTF-16 spans unit by
//! unit), so a `.pyc`, a `.class` or an ELF object keeps its size and layout and stays loadable.
//!
//! What cannot be vouched for this way is content whose text is not in the bytes: compressed or
//! encrypted data. [`unscannable`] names it by magic number (gzip, zlib, zip, zstd, xz, bzip2,
//! 7z, rar, lz4, OpenSSL, age) or by byte entropy (>= [`MAX_ENTROPY`] bits per byte over the
//! whole file, which compressed and encrypted data reach and code, tables and text do not).
//! A compressed stream embedded in a larger binary is not detected: its runs are scanned, the
//! text it inflates to is not.
//!
//! Cost: one pass with a byte-class table for the narrow runs, one pass per code-unit parity
//! for the wide runs, one histogram pass for the entropy; no allocation per run.

/// Shortest run scanned, in characters. Shorter runs are mostly opcodes and table bytes that
/// happen to be printable; no rule's secret is shorter.
pub(crate) const MIN_RUN: usize = 6;

/// Bits of entropy per byte from which content is taken to be compressed or encrypted.
pub(crate) const MAX_ENTROPY: f64 = 7.5;

/// Byte classes for narrow runs: 0 breaks a run, 1 is a one-byte character, 2..=4 is the lead
/// byte of a UTF-8 sequence of that length.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = 1;
        b += 1;
    }
    t[b'\t' as usize] = 1;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    let mut b = 0xC2;
    while b <= 0xF4 {
        t[b] = if b < 0xE0 {
            2
        } else if b < 0xF0 {
            3
        } else {
            4
        };
        b += 1;
    }
    t
};

/// Bytes that can be no part of a narrow run (control bytes, DEL, bytes never in UTF-8). UTF-8
/// continuation bytes are not among them: they can sit inside a run.
static NEVER: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (CLASS[b] == 0) && !(b >= 0x80 && b < 0xC0);
        b += 1;
    }
    t
};

/// Is `data[i..]` a well-formed UTF-8 sequence of `n` bytes (its lead byte already checked)?
fn utf8_seq(data: &[u8], i: usize, n: usize) -> bool {
    let cont = |k: usize| data.get(i + k).is_some_and(|&b| b & 0xC0 == 0x80);
    let Some(&second) = data.get(i + 1) else {
        return false;
    };
    // The second byte's range excludes overlong forms and surrogates (RFC 3629).
    let (lo, hi) = match data[i] {
        0xE0 => (0xA0, 0xBF),
        0xED => (0x80, 0x9F),
        0xF0 => (0x90, 0xBF),
        0xF4 => (0x80, 0x8F),
        _ => (0x80, 0xBF),
    };
    (lo..=hi).contains(&second) && (2..n).all(cont)
}

/// Byte ranges `[start, end)` of the narrow runs of at least `min` characters.
pub(crate) fn runs(data: &[u8], min: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut chars) = (0usize, 0usize);
    let mut i = 0;
    while i < data.len() {
        // Outside a run: a run of `min` characters spans at least `min` bytes, so when a byte
        // of the next `min` can be in no run, no run long enough starts before it. Machine code
        // and tables have such a byte in almost every window, so most bytes are never visited.
        if chars == 0
            && min > 1
            && let Some(w) = data.get(i..i + min)
            && let Some(j) = w.iter().rposition(|&b| NEVER[usize::from(b)])
        {
            i += j + 1;
            start = i;
            continue;
        }
        let n = match CLASS[usize::from(data[i])] {
            0 => 0,
            1 => 1,
            n => {
                let n = usize::from(n);
                if utf8_seq(data, i, n) { n } else { 0 }
            }
        };
        if n == 0 {
            if chars >= min {
                out.push((start, i));
            }
            chars = 0;
            i += 1;
            start = i;
            continue;
        }
        chars += 1;
        i += n;
    }
    if chars >= min {
        out.push((start, data.len()));
    }
    out
}

/// Byte ranges `[start, end)` of the UTF-16LE runs of at least `min` code units, each unit a
/// printable ASCII character or a tab (what `strings -el` finds), sorted by start. A run may
/// start at an odd offset.
pub(crate) fn wide_runs(data: &[u8], min: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for parity in 0..2 {
        let Some(body) = data.get(parity..) else {
            continue;
        };
        let good = |k: usize| {
            body.get(2 * k..2 * k + 2)
                .is_some_and(|u| u[1] == 0 && (u[0] == b'\t' || (0x20..0x7f).contains(&u[0])))
        };
        let n = body.len() / 2;
        let mut start = parity;
        let mut units = 0usize;
        let mut k = 0;
        while k < n {
            // Outside a run, the same skip as for narrow runs, in code units.
            if units == 0
                && min > 1
                && k + min <= n
                && let Some(j) = (k..k + min).rev().find(|&j| !good(j))
            {
                k = j + 1;
                continue;
            }
            let at = parity + 2 * k;
            if good(k) {
                if units == 0 {
                    start = at;
                }
                units += 1;
            } else {
                if units >= min {
                    out.push((start, at));
                }
                units = 0;
            }
            k += 1;
        }
        if units >= min {
            out.push((start, start + 2 * units));
        }
    }
    out.sort_unstable();
    out
}

/// The file with every byte outside a narrow run replaced by `\n` (same length, same offsets).
pub(crate) fn narrow_projection(data: &[u8], runs: &[(usize, usize)]) -> Vec<u8> {
    let mut out = vec![b'\n'; data.len()];
    for &(s, e) in runs {
        out[s..e].copy_from_slice(&data[s..e]);
    }
    out
}

/// The UTF-16LE runs decoded to ASCII, one per line, with the way back to file offsets.
pub(crate) struct Wide {
    pub bytes: Vec<u8>,
    /// `(text offset, file offset)` of each run's first character, sorted by both.
    segs: Vec<(usize, u64)>,
}

impl Wide {
    pub(crate) fn new(data: &[u8], runs: &[(usize, usize)]) -> Wide {
        let mut bytes = Vec::with_capacity(runs.iter().map(|r| (r.1 - r.0) / 2 + 1).sum());
        let mut segs = Vec::with_capacity(runs.len());
        for &(s, e) in runs {
            segs.push((bytes.len(), s as u64));
            bytes.extend(data[s..e].iter().step_by(2));
            bytes.push(b'\n');
        }
        Wide { bytes, segs }
    }

    /// File offset of the code unit that decoded text byte `i` came from; for an end offset
    /// (`end = true`), the file offset just past the unit of byte `i - 1`.
    pub(crate) fn file_offset(&self, i: usize, end: bool) -> u64 {
        let probe = if end { i.saturating_sub(1) } else { i };
        let k = self
            .segs
            .partition_point(|s| s.0 <= probe)
            .saturating_sub(1);
        let Some(&(t, f)) = self.segs.get(k) else {
            return 0;
        };
        f + 2 * (probe.saturating_sub(t) as u64) + if end && i > 0 { 2 } else { 0 }
    }
}

/// Why `data` (not text) cannot be scanned through its runs, if it cannot: compressed or
/// encrypted content.
pub(crate) fn unscannable(data: &[u8]) -> Option<&'static str> {
    if let Some(kind) = compressed_magic(data) {
        return Some(kind);
    }
    (entropy(data) >= MAX_ENTROPY).then_some("compressed or encrypted content (high entropy)")
}

/// The container format named by `data`'s magic number, if it is a compressed or encrypted one.
pub(crate) fn compressed_magic(data: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"\x1f\x8b", "gzip-compressed content"),
        (b"PK\x03\x04", "zip archive"),
        (b"PK\x05\x06", "zip archive"),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed content"),
        (b"\xfd7zXZ\x00", "xz-compressed content"),
        (b"BZh", "bzip2-compressed content"),
        (b"7z\xbc\xaf\x27\x1c", "7z archive"),
        (b"Rar!\x1a\x07", "rar archive"),
        (b"\x04\x22\x4d\x18", "lz4-compressed content"),
        (b"Salted__", "OpenSSL-encrypted content"),
        (b"age-encryption.org/", "age-encrypted content"),
    ];
    if let Some(&(_, kind)) = MAGICS.iter().find(|(m, _)| data.starts_with(m)) {
        return Some(kind);
    }
    // zlib (git objects): CMF 0x78 and a header checksum.
    match data {
        [0x78, b, ..] if (0x7800u16 | u16::from(*b)).is_multiple_of(31) => {
            Some("zlib-compressed content")
        }
        _ => None,
    }
}

/// Shannon entropy of `data`'s bytes, in bits per byte (0 for empty data).
pub(crate) fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    // Four histograms: consecutive increments of one counter would serialise on it.
    let mut h = [[0u64; 256]; 4];
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        h[0][usize::from(c[0])] += 1;
        h[1][usize::from(c[1])] += 1;
        h[2][usize::from(c[2])] += 1;
        h[3][usize::from(c[3])] += 1;
    }
    for &b in chunks.remainder() {
        h[0][usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    (0..256)
        .map(|b| h[0][b] + h[1][b] + h[2][b] + h[3][b])
        .filter(|&c| c > 0)
        .map(|c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn narrow_runs_are_what_strings_finds() {
        let d = b"\x00\x01hello world\x00ab\x00\xffsix666\x7fxyz";
        assert_eq!(runs(d, 6), vec![(2, 13), (18, 24)]);
        assert_eq!(runs(d, 3), vec![(2, 13), (18, 24), (25, 28)]);
        // A run at the very end, and tabs/newlines inside runs.
        assert_eq!(runs(b"\0a\tb\nc\r\nd", 6), vec![(1, 9)]);
        assert!(runs(b"", 1).is_empty());
    }

    #[test]
    fn utf8_sequences_extend_runs_and_broken_ones_end_them() {
        let d = "\0grüße-müller\0".as_bytes();
        assert_eq!(runs(d, 6), vec![(1, d.len() - 1)]);
        // A lead byte without its continuation breaks the run; a lone continuation byte too.
        let d = b"\0abcdef\xc3xyzuvw\x80ghijkl\0";
        assert_eq!(runs(d, 6), vec![(1, 7), (8, 14), (15, 21)]);
        // Overlong and surrogate encodings are not characters.
        assert!(runs(b"\xc0\xaf\xc0\xaf\xc0\xaf\xed\xa0\x80", 1).is_empty());
    }

    #[test]
    fn wide_runs_find_utf16le_at_either_parity() {
        let mut d = vec![0x01u8];
        d.extend(utf16("Password1"));
        d.extend([0, 0, 0x13]);
        let at = d.len();
        d.extend(utf16("short"));
        d.extend([0xff, 0xff]);
        let at2 = d.len();
        d.extend(utf16("tail\there"));
        assert_eq!(
            wide_runs(&d, 6),
            vec![(1, 19), (at2, at2 + 18)],
            "{at} {d:?}"
        );
        assert_eq!(wide_runs(&d, 5).len(), 3);
        // Narrow text is no wide run (no NUL high bytes), and NULs alone are not characters.
        assert!(wide_runs(b"abcdefghijklmnop", 2).is_empty());
        assert!(wide_runs(&[0u8; 64], 1).is_empty());
    }

    #[test]
    fn projections_keep_offsets() {
        let d = b"\x7fELF\x00\x00key=ghp_abc\x00\x01\x02";
        let r = runs(d, 6);
        let p = narrow_projection(d, &r);
        assert_eq!(p.len(), d.len());
        assert_eq!(&p, b"\n\n\n\n\n\nkey=ghp_abc\n\n\n");

        let mut d = b"\x01\x02\x03".to_vec();
        d.extend(utf16("first-run"));
        d.extend(b"\x00\x00\x01");
        let second = d.len() as u64;
        d.extend(utf16("second-run"));
        let w = Wide::new(&d, &wide_runs(&d, 6));
        assert_eq!(w.bytes, b"first-run\nsecond-run\n");
        assert_eq!(w.file_offset(0, false), 3);
        assert_eq!(w.file_offset(6, false), 3 + 12);
        assert_eq!(w.file_offset(9, true), 3 + 18);
        assert_eq!(w.file_offset(10, false), second);
        assert_eq!(w.file_offset(17, false), second + 14);
        assert_eq!(w.file_offset(20, true), second + 20);
    }

    #[test]
    fn compressed_and_random_content_is_unscannable() {
        assert_eq!(
            unscannable(b"\x1f\x8b\x08\x00rest"),
            Some("gzip-compressed content")
        );
        assert_eq!(
            unscannable(b"x\x9c\x01\x02"),
            Some("zlib-compressed content")
        );
        assert_eq!(unscannable(b"PK\x03\x04\x14\x00"), Some("zip archive"));
        let mut rng = crate::redact::samples::Rng::new(5);
        let random: Vec<u8> = (0..8192).map(|_| rng.below(256) as u8).collect();
        assert!(entropy(&random) > 7.9);
        assert!(unscannable(&random).is_some());
        // Code-like binaries and text with a few NULs are scannable.
        let mut code = Vec::new();
        for i in 0..4096u32 {
            code.extend_from_slice(&(i % 300).to_le_bytes());
        }
        code.extend_from_slice(b"some string table\0another entry\0");
        assert!(entropy(&code) < 5.0, "{}", entropy(&code));
        assert_eq!(unscannable(&code), None);
        assert_eq!(unscannable(b"text\0with a NUL\n"), None);
        assert_eq!(entropy(b""), 0.0);
    }

    /// The skipping scans find exactly what plain byte-by-byte scans find.
    #[test]
    fn skipping_scans_match_plain_scans() {
        fn plain_runs(d: &[u8], min: usize) -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            let (mut start, mut chars, mut i) = (0, 0, 0);
            while i < d.len() {
                let n = (1..=4)
                    .find(|&n| {
                        d.get(i..i + n).is_some_and(|s| {
                            std::str::from_utf8(s).is_ok_and(|c| {
                                let ch = c.chars().next().unwrap();
                                ch == '\t'
                                    || ch == '\n'
                                    || ch == '\r'
                                    || (ch >= ' ' && ch != '\x7f')
                            })
                        })
                    })
                    .unwrap_or(0);
                if n == 0 {
                    if chars >= min {
                        out.push((start, i));
                    }
                    chars = 0;
                    i += 1;
                    start = i;
                } else {
                    chars += 1;
                    i += n;
                }
            }
            if chars >= min {
                out.push((start, d.len()));
            }
            out
        }
        fn plain_wide(d: &[u8], min: usize) -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            for p in 0..2 {
                let mut units = 0;
                let mut start = p;
                let mut at = p;
                while at + 1 < d.len() {
                    if d[at + 1] == 0 && (d[at] == b'\t' || (0x20..0x7f).contains(&d[at])) {
                        if units == 0 {
                            start = at;
                        }
                        units += 1;
                    } else {
                        if units >= min {
                            out.push((start, at));
                        }
                        units = 0;
                    }
                    at += 2;
                }
                if units >= min {
                    out.push((start, start + 2 * units));
                }
            }
            out.sort_unstable();
            out
        }
        let mut rng = crate::redact::samples::Rng::new(11);
        let alphabet: &[u8] = b"\0\0\0\x01\x7fabcXYZ 09\t\n\xc3\xa9\xe2\x82\xac\x80\xff";
        for len in [0usize, 1, 5, 6, 7, 13, 64, 300, 2000] {
            for _ in 0..40 {
                let d: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
                for min in [1usize, 2, 6] {
                    assert_eq!(runs(&d, min), plain_runs(&d, min), "{d:?} min {min}");
                    assert_eq!(wide_runs(&d, min), plain_wide(&d, min), "{d:?} min {min}");
                }
            }
        }
        // Whole and broken UTF-8 sequences, overlong forms and surrogates among ASCII.
        let pieces: &[&[u8]] = &[
            b"ab",
            b"x",
            b"\0",
            b"\x01",
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            b"\xc2\x80",
            b"\xed\xa0\x80",
            b"\xe0\x80\x80",
            b"\xf4\x90\x80\x80",
            b"\xc3",
            b"\xe2\x82",
            b"\xf0\x9d\x84",
            b"\x80",
            b"a\0",
            b"\t\0",
        ];
        for _ in 0..400 {
            let mut d = Vec::new();
            for _ in 0..rng.below(40) {
                d.extend_from_slice(pieces[rng.below(pieces.len() as u64) as usize]);
            }
            for min in [1usize, 3, 6] {
                assert_eq!(runs(&d, min), plain_runs(&d, min), "{d:?} min {min}");
                assert_eq!(wide_runs(&d, min), plain_wide(&d, min), "{d:?} min {min}");
            }
        }
    }
}
