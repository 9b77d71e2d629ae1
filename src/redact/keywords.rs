//! The keyword pass: every ASCII-case-insensitive occurrence of every rule keyword.
//!
//! Why not one Aho-Corasick automaton: case-insensitive overlapping search rules out its SIMD
//! prefilters, so it walks a DFA one byte at a time (about 450 MB/s), and most files an agent
//! reads contain no keyword at all. Instead each keyword of four or more bytes is represented by
//! one 4-byte window of it (its "anchor"), chosen to be rare in code and prose (`ss_k` rather
//! than `acce` for `access_key`); a 3-byte keyword (`sk-`, `pwd`) is entered as every 4-byte
//! window that starts with it. One pass tests every position of the text against a 2^21-bit set
//! of window hashes; only positions that pass are looked up and compared with the keywords owning
//! that window. Every occurrence of a keyword contains its anchor at a fixed offset, so no
//! occurrence is missed and overlapping occurrences are all reported, as before (a 3-byte keyword
//! in the last three bytes of the text is looked up directly). Keywords shorter
//! than three bytes (`@`, `q~`) are found through their rarest byte, which a one-byte-pattern
//! Aho-Corasick searcher finds with memchr.
//!
//! Case folding in the filter is `byte | 0x20` on both sides: exact for letters, and a collision
//! for a few other bytes (`@` and `` ` ``), which the comparison then rejects.
//!
//! A position that passes the filter is compared only with the anchors in its bucket of filter
//! slots (a few, usually none), not looked up in all of them.

use aho_corasick::{AhoCorasick, MatchKind};

const ANCHOR: usize = 3;
/// Window of the filter: keywords of four bytes or more are represented by a 4-byte window.
const WINDOW: usize = 4;
const FILTER_BITS: u32 = 21;
/// Positions handed to the callback at a time, sorted by keyword start within each block.
const BLOCK: usize = 64 * 1024;

/// A keyword occurrence: keyword id (index into the list given to `new`), start, end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub keyword: u32,
}

pub(crate) struct Keywords {
    keywords: Vec<Vec<u8>>,
    /// One bit per hash value of a 4-byte window (256 KiB): set for the anchor of every keyword
    /// of four bytes or more, and for every 4-byte extension of each 3-byte keyword.
    ///
    /// Why four bytes: with the provider catalog's ~700 keywords, the rarest 3-byte window of
    /// many of them is an ordinary trigram of code (`for` of `salesforce`, `ver` of `vercel`,
    /// `pub` of `live_pub_`): 14 anchor hits in 1.2 KB of the benchmark's source code against 1
    /// with 173 keywords, each a binary search and a compare. Four bytes bring that back to 1.
    filter: Box<[u64; 1 << (FILTER_BITS - 6)]>,
    /// (folded 4-byte anchor, keyword id, anchor offset in the keyword), sorted by filter slot.
    anchors: Vec<(u32, u32, u32)>,
    /// 3-byte keywords: (folded keyword, keyword id), sorted by filter slot.
    anchors3: Vec<(u32, u32)>,
    /// Where the entries of each bucket of slots start in `anchors` and `anchors3`: a window
    /// that passed the filter is compared with the few entries of its bucket, where a binary
    /// search over all anchors was a tenth of the scan on files dense with keywords.
    buckets: Vec<u32>,
    buckets3: Vec<u32>,
    /// For keywords shorter than an anchor: a searcher for their rarest bytes, and per byte
    /// pattern the (keyword id, offset of that byte in the keyword) pairs.
    short: Option<(AhoCorasick, Vec<Owners>)>,
}

/// (keyword id, offset of the searched byte in the keyword) for one rare byte.
type Owners = Vec<(u32, usize)>;

/// How common a byte is in source code and prose, higher is more common. A rough ranking is
/// enough: it only steers which window of a keyword becomes its anchor.
fn commonness(b: u8) -> u32 {
    const BY_RANK: &[u8] =
        b" etaoinsrlhdcu\n_.()pmfgy,;=\"'bw:/-v0k12x>{}[]<#*j3&qz$4586!79+|%@~\\`^?";
    BY_RANK
        .iter()
        .position(|&c| c == b)
        .map_or(0, |p| (BY_RANK.len() - p) as u32)
}

fn fold3(b: &[u8]) -> u32 {
    u32::from(b[0] | 0x20) | u32::from(b[1] | 0x20) << 8 | u32::from(b[2] | 0x20) << 16
}

fn fold4(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | 0x2020_2020
}

fn slot(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - FILTER_BITS)) as usize
}

/// Buckets of filter slots (the top `BUCKET_BITS` bits of a slot).
const BUCKET_BITS: u32 = 12;

fn bucket_of(slot: usize) -> usize {
    slot >> (FILTER_BITS - BUCKET_BITS)
}

/// Start of each bucket's entries in a list sorted by slot (one more entry than buckets).
fn bucket_starts(slots: impl Iterator<Item = usize>) -> Vec<u32> {
    let mut starts = vec![0u32; (1 << BUCKET_BITS) + 1];
    for s in slots {
        starts[bucket_of(s) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    starts
}

/// The entries of `list` (sorted by slot) in the bucket of `slot`.
fn bucket<'a, T>(list: &'a [T], starts: &[u32], slot: usize) -> &'a [T] {
    let b = bucket_of(slot);
    match (starts.get(b), starts.get(b + 1)) {
        (Some(&s), Some(&e)) => list.get(s as usize..e as usize).unwrap_or_default(),
        _ => &[],
    }
}

impl Keywords {
    /// `keywords` must be lowercase (rule keywords are lowercased when compiled).
    pub(crate) fn new(keywords: &[String]) -> Result<Keywords, aho_corasick::BuildError> {
        let mut filter = Box::new([0u64; 1 << (FILTER_BITS - 6)]);
        let mut anchors = Vec::new();
        let mut anchors3 = Vec::new();
        let mut short_bytes: Vec<u8> = Vec::new();
        let mut short_owners: Vec<Vec<(u32, usize)>> = Vec::new();
        for (id, k) in keywords.iter().enumerate() {
            let kb = k.as_bytes();
            if kb.is_empty() {
                continue;
            }
            if kb.len() < ANCHOR {
                let off = (0..kb.len())
                    .min_by_key(|&o| commonness(kb[o]))
                    .unwrap_or(0);
                let b = kb[off].to_ascii_lowercase();
                let i = match short_bytes.iter().position(|&x| x == b) {
                    Some(i) => i,
                    None => {
                        short_bytes.push(b);
                        short_owners.push(Vec::new());
                        short_bytes.len() - 1
                    }
                };
                short_owners[i].push((id as u32, off));
                continue;
            }
            if kb.len() == ANCHOR {
                // Every 4-byte window that starts with it (folding sets bit 5 of the fourth byte).
                // (Testing a 3-byte window under its own hash instead, so that the filter could
                // be 32 KiB, made the pass twice as slow: a second lookup per byte.)
                let w3 = fold3(kb);
                for x in 0..=255u8 {
                    let s = slot(w3 | u32::from(x | 0x20) << 24);
                    filter[s >> 6] |= 1 << (s & 63);
                }
                anchors3.push((w3, id as u32));
                continue;
            }
            let off = (0..=kb.len() - WINDOW)
                .min_by_key(|&o| {
                    kb[o..o + WINDOW]
                        .iter()
                        .map(|&b| commonness(b))
                        .sum::<u32>()
                })
                .unwrap_or(0);
            let w = fold4(&kb[off..]);
            let s = slot(w);
            filter[s >> 6] |= 1 << (s & 63);
            anchors.push((w, id as u32, off as u32));
        }
        anchors.sort_unstable_by_key(|a| (slot(a.0), a.0, a.1, a.2));
        anchors3.sort_unstable_by_key(|a| (slot(a.0), a.0, a.1));
        let buckets = bucket_starts(anchors.iter().map(|a| slot(a.0)));
        let buckets3 = bucket_starts(anchors3.iter().map(|a| slot(a.0)));
        let short = if short_bytes.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(short_bytes.iter().map(|b| [*b]))?;
            Some((ac, short_owners))
        };
        Ok(Keywords {
            keywords: keywords.iter().map(|k| k.as_bytes().to_vec()).collect(),
            filter,
            anchors,
            anchors3,
            buckets,
            buckets3,
            short,
        })
    }

    /// Calls `f` for every occurrence, block by block; within a block in order of start.
    #[cfg(test)]
    pub(crate) fn for_each(&self, text: &[u8], f: impl FnMut(Hit)) {
        self.for_each_block(text, f, |_| {});
    }

    /// As `for_each`, and calls `block_done(to)` after the hits of each block of anchors
    /// `[from, to)`: the caller can work on that stretch of text while it is still in cache.
    pub(crate) fn for_each_block(
        &self,
        text: &[u8],
        mut f: impl FnMut(Hit),
        mut block_done: impl FnMut(usize),
    ) {
        let mut hits = Vec::new();
        let mut from = 0;
        while from < text.len() {
            let to = from.saturating_add(BLOCK).min(text.len());
            self.anchored(text, from, to, &mut hits);
            if let Some((ac, owners)) = &self.short {
                for m in ac.find_iter(aho_corasick::Input::new(text).range(from..to)) {
                    for &(id, off) in &owners[m.pattern().as_usize()] {
                        self.confirm(text, id, m.start(), off, &mut hits);
                    }
                }
            }
            hits.sort_unstable();
            for &h in &hits {
                f(h);
            }
            hits.clear();
            block_done(to);
            from = to;
        }
    }

    /// Keyword occurrences whose anchor starts in `[from, to)`.
    fn anchored(&self, text: &[u8], from: usize, to: usize, out: &mut Vec<Hit>) {
        // Positions before `last` have a whole 4-byte window.
        let last = text.len().saturating_sub(WINDOW - 1).min(to);
        let mut p = from;
        // Eight bytes hold five windows; testing them without a branch each keeps the loop at a
        // couple of cycles per byte.
        while p + 8 <= text.len() && p + 5 <= last {
            let Some(chunk) = text.get(p..p + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) else {
                break;
            };
            let x = u64::from_le_bytes(chunk) | 0x2020_2020_2020_2020;
            let mut found = 0u32;
            for j in 0..5 {
                let s = slot((x >> (8 * j)) as u32);
                found |= ((self.filter[s >> 6] >> (s & 63)) as u32 & 1) << j;
            }
            while found != 0 {
                let j = found.trailing_zeros() as usize;
                found &= found - 1;
                self.verify(text, p + j, out);
            }
            p += 5;
        }
        while p < last {
            let s = slot(fold4(&text[p..]));
            if self.filter[s >> 6] >> (s & 63) & 1 != 0 {
                self.verify(text, p, out);
            }
            p += 1;
        }
        // The last three bytes have no 4-byte window: a 3-byte keyword there is looked up directly.
        if let Some(t) = text.len().checked_sub(ANCHOR)
            && t >= from
            && t < to
            && !self.anchors3.is_empty()
        {
            self.verify3(text, t, fold3(&text[t..]), out);
        }
    }

    fn verify(&self, text: &[u8], at: usize, out: &mut Vec<Hit>) {
        let w = fold4(&text[at..]);
        for &(aw, id, off) in bucket(&self.anchors, &self.buckets, slot(w)) {
            if aw == w {
                self.confirm(text, id, at, off as usize, out);
            }
        }
        if !self.anchors3.is_empty() {
            self.verify3(text, at, w & 0xFF_FFFF, out);
        }
    }

    fn verify3(&self, text: &[u8], at: usize, w3: u32, out: &mut Vec<Hit>) {
        for &(aw, id) in bucket(&self.anchors3, &self.buckets3, slot(w3)) {
            if aw == w3 {
                self.confirm(text, id, at, 0, out);
            }
        }
    }

    /// Reports keyword `id` if it occurs where a piece of it found at `at` (`off` bytes into
    /// the keyword) says it would start.
    fn confirm(&self, text: &[u8], id: u32, at: usize, off: usize, out: &mut Vec<Hit>) {
        let kw = &self.keywords[id as usize];
        let Some(start) = at.checked_sub(off) else {
            return;
        };
        let end = start + kw.len();
        if text
            .get(start..end)
            .is_some_and(|t| t.eq_ignore_ascii_case(kw))
        {
            out.push(Hit {
                start,
                end,
                keyword: id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every occurrence the old overlapping automaton reported, and nothing else.
    fn reference(keywords: &[String], text: &[u8]) -> Vec<Hit> {
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(keywords)
            .unwrap();
        let mut v: Vec<Hit> = ac
            .find_overlapping_iter(text)
            .map(|m| Hit {
                start: m.start(),
                end: m.end(),
                keyword: m.pattern().as_u32(),
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn scan(k: &Keywords, text: &[u8]) -> Vec<Hit> {
        let mut v = Vec::new();
        k.for_each(text, |h| v.push(h));
        v.sort_unstable();
        v
    }

    #[test]
    fn same_hits_as_an_overlapping_automaton() {
        let kws: Vec<String> = [
            "@",
            "q~",
            "key-",
            "token",
            "secret",
            "secret_access",
            "sk-",
            "sk-proj-",
            "://",
            "_auth",
            "a",
            "aa",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let k = Keywords::new(&kws).unwrap();
        let mut rng = crate::redact::samples::Rng::new(5);
        let alphabet = b"aAkKeEyYsStTrRcC-_:/@~qQpPoOjn \n.";
        for len in [0, 1, 2, 3, 7, 8, 9, 15, 64, 1000, 70_000, 140_000] {
            let text: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
            assert_eq!(scan(&k, &text), reference(&kws, &text), "len {len}");
        }
        let t = b"SECRET_ACCESS_KEY-x a@b Q~ SK-PROJ-";
        assert_eq!(scan(&k, t), reference(&kws, t));
    }
}
