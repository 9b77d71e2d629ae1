//! The keyword pass: every ASCII-case-insensitive occurrence of every rule keyword.
//!
//! Why not one Aho-Corasick automaton: case-insensitive overlapping search rules out its SIMD
//! prefilters, so it walks a DFA one byte at a time (about 450 MB/s), and most files an agent
//! reads contain no keyword at all. Instead one pass tests the 4-byte window at every *even*
//! position of the text against a 2^21-bit filter; only windows that pass are looked up and
//! compared with the keywords that own them. Testing half the positions is what makes the pass
//! fast: the filter lives in L2, and its lookups (one per tested position) were most of the
//! pass's time when every position was tested.
//!
//! Every occurrence still contains a tested window at a known offset, so none is missed and
//! overlapping occurrences are all reported:
//! - a keyword of five bytes or more is entered as two of its 4-byte windows, one at an even
//!   and one at an odd offset in the keyword (the rarest of each in code and prose: `ss_k` rather
//!   than `acce` for `access_key`); whichever parity its start has, one of them lands on an even
//!   position;
//! - a 4-byte keyword is entered as itself (even start) and, for an odd start, as the window one
//!   byte later that begins with its last three bytes: three known bytes and any fourth;
//! - a 3-byte keyword (`sk-`, `pwd`) as a window that begins with it (even start) and one that
//!   ends with it (odd start: any first byte).
//!
//! "Any fourth byte" is cheap because of the filter's layout: a window's first three bytes pick
//! a 64-bit word (a multiplicative hash), its fourth byte the bit in it, so a window with a known
//! 3-byte start and any fourth byte is one word (any first byte costs a bit in each of 128
//! words, which is why only the 3-byte keywords' odd starts use it). Windows past the end of the text are
//! padded with NULs, which the comparison with the text rejects. Keywords shorter than three
//! bytes (`@`, `q~`) are found through their rarest byte, which a one-byte-pattern Aho-Corasick
//! searcher finds with memchr.
//!
//! Case folding in the filter is `byte | 0x20` on both sides: exact for letters, and a collision
//! for a few other bytes (`@` and `` ` ``), which the comparison then rejects.
//!
//! A position that passes the filter is compared only with the entries in its bucket (a few,
//! usually none), not looked up in all of them.

use aho_corasick::{AhoCorasick, MatchKind};

/// Bytes of the filter's window.
const WINDOW: usize = 4;
/// log2 of the filter's bits: 2^21 bits, 256 KiB.
const FILTER_BITS: u32 = 21;
/// log2 of the filter's 64-bit words.
const WORD_BITS: u32 = FILTER_BITS - 6;
/// Positions handed to the callback at a time, sorted by keyword start within each block. Even,
/// so that every block tests the same (even) positions.
const BLOCK: usize = 64 * 1024;

/// A keyword occurrence: keyword id (index into the list given to `new`), start, end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub keyword: u32,
}

/// Windows that belong to keyword `id`, which starts `back` bytes before the window: those
/// whose bytes under `mask` equal `key` (a mask of three bytes leaves the first or the fourth
/// byte open: any byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    key: u32,
    mask: u32,
    id: u32,
    back: i32,
}

const WHOLE: u32 = 0xFFFF_FFFF;
const HEAD: u32 = 0x00FF_FFFF;
const TAIL: u32 = 0xFFFF_FF00;

/// Buckets of entries: a window that passed the filter is compared only with the entries of
/// its filter word's bucket (a few, usually none), where a binary search over all of them was a
/// tenth of the scan on files dense with keywords.
const BUCKET_BITS: u32 = 12;

fn bucket_of(word: usize) -> usize {
    word >> (WORD_BITS - BUCKET_BITS)
}

pub(crate) struct Keywords {
    keywords: Vec<Vec<u8>>,
    /// One bit per window (256 KiB): the word is chosen by the window's first three bytes, the
    /// bit by its fourth. Set for every window an entry below matches.
    filter: Box<[u64; 1 << WORD_BITS]>,
    /// The entries of each bucket of filter words (an entry is in the bucket of every word
    /// its windows set a bit in), and where each bucket starts.
    entries: Vec<Entry>,
    starts: Vec<u32>,
    /// For keywords shorter than three bytes: a searcher for their rarest bytes, and per byte
    /// pattern the (keyword id, offset of that byte in the keyword) pairs.
    short: Option<(AhoCorasick, Vec<Owners>)>,
}

/// (keyword id, offset of the searched byte in the keyword) for one rare byte.
type Owners = Vec<(u32, usize)>;

/// How common a byte is in source code and prose, higher is more common. A rough ranking is
/// enough: it only steers which windows of a keyword the filter holds.
fn commonness(b: u8) -> u32 {
    const BY_RANK: &[u8] =
        b" etaoinsrlhdcu\n_.()pmfgy,;=\"'bw:/-v0k12x>{}[]<#*j3&qz$4586!79+|%@~\\`^?";
    BY_RANK
        .iter()
        .position(|&c| c == b)
        .map_or(0, |p| (BY_RANK.len() - p) as u32)
}

fn commonness_of(b: &[u8]) -> u32 {
    b.iter().map(|&b| commonness(b)).sum()
}

fn fold3(b: &[u8]) -> u32 {
    u32::from(b[0] | 0x20) | u32::from(b[1] | 0x20) << 8 | u32::from(b[2] | 0x20) << 16
}

fn fold4(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | 0x2020_2020
}

/// The folded window at `at`, NUL-padded past the end of the text.
fn window_at(text: &[u8], at: usize) -> u32 {
    let mut w = [0u8; WINDOW];
    for (i, b) in w.iter_mut().enumerate() {
        *b = text.get(at + i).copied().unwrap_or(0);
    }
    fold4(&w)
}

/// The filter word of a folded window (from its first three bytes) and the bit in it (the low
/// six bits of its fourth byte). Folding sets bit 5 of every byte, so only half of a word's bits
/// are used; spreading over all 64 cost more instructions than it saved (benches/README.md).
fn word_bit(w: u32) -> (usize, u32) {
    (
        ((w << 8).wrapping_mul(0x9E37_79B1) >> (32 - WORD_BITS)) as usize,
        (w >> 24) & 63,
    )
}

impl Keywords {
    /// `keywords` must be lowercase (rule keywords are lowercased when compiled).
    pub(crate) fn new(keywords: &[String]) -> Result<Keywords, aho_corasick::BuildError> {
        let mut list: Vec<Entry> = Vec::new();
        let mut entry = |key: u32, mask: u32, id: u32, back: i32| {
            list.push(Entry {
                key,
                mask,
                id,
                back,
            })
        };
        let mut short_bytes: Vec<u8> = Vec::new();
        let mut short_owners: Vec<Vec<(u32, usize)>> = Vec::new();
        for (id, k) in keywords.iter().enumerate() {
            let kb = k.as_bytes();
            let id = id as u32;
            match kb.len() {
                0 => {}
                1 | 2 => {
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
                    short_owners[i].push((id, off));
                }
                3 => {
                    // Even start: the window starting with it; odd start: the one ending with it.
                    let w3 = fold3(kb);
                    entry(w3, HEAD, id, 0);
                    entry(w3 << 8, TAIL, id, -1);
                }
                4 => {
                    entry(fold4(kb), WHOLE, id, 0);
                    // Odd start: the window a byte later starts with its last three bytes: one
                    // filter word. (The window a byte earlier, ending with its first three, sets a
                    // bit in each of 128 words: choosing it where those three bytes were the rarer
                    // ones put ~40% more bits in ~70% more words and made the pass 6% slower.)
                    entry(fold3(&kb[1..]), HEAD, id, 1);
                }
                n => {
                    for parity in 0..2 {
                        let off = (parity..=n - WINDOW)
                            .step_by(2)
                            .min_by_key(|&o| commonness_of(&kb[o..o + WINDOW]))
                            .unwrap_or(parity);
                        entry(fold4(&kb[off..]), WHOLE, id, off as i32);
                    }
                }
            }
        }
        // Every window each entry matches sets its bit, and files the entry in its word's bucket.
        let mut filter = Box::new([0u64; 1 << WORD_BITS]);
        let mut filed: Vec<(usize, Entry)> = Vec::new();
        let mut buckets = Vec::new();
        for e in list {
            // The byte a mask leaves open takes every folded value.
            for x in 0..=255u8 {
                let any = (u32::from(x | 0x20) * 0x0101_0101) & !e.mask;
                let (word, bit) = word_bit(e.key | any);
                filter[word] |= 1 << bit;
                buckets.push(bucket_of(word));
            }
            buckets.sort_unstable();
            buckets.dedup();
            filed.extend(buckets.drain(..).map(|b| (b, e)));
        }
        filed.sort_unstable();
        let mut starts = vec![0u32; (1 << BUCKET_BITS) + 1];
        for &(b, _) in &filed {
            starts[b + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
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
            entries: filed.into_iter().map(|(_, e)| e).collect(),
            starts,
            short,
        })
    }

    /// Calls `f` for every occurrence, block by block; within a block in order of start.
    #[cfg(test)]
    pub(crate) fn for_each(&self, text: &[u8], f: impl FnMut(Hit)) {
        self.for_each_block(text, f, |_| {});
    }

    /// As `for_each`, and calls `block_done(to)` after the hits of each block of windows
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
            self.windows(text, from, to, &mut hits);
            if let Some((ac, owners)) = &self.short {
                for m in ac.find_iter(aho_corasick::Input::new(text).range(from..to)) {
                    for &(id, off) in &owners[m.pattern().as_usize()] {
                        self.confirm(text, id, m.start() as i64 - off as i64, &mut hits);
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

    /// Keyword occurrences found through the windows at the even positions of `[from, to)`
    /// (`from` is even).
    fn windows(&self, text: &[u8], from: usize, to: usize, out: &mut Vec<Hit>) {
        let mut p = from;
        // Eight bytes hold the windows at three even positions; testing them without a branch
        // each keeps the loop short.
        while p + 6 <= to {
            let Some(chunk) = text.get(p..p + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) else {
                break;
            };
            let x = u64::from_le_bytes(chunk) | 0x2020_2020_2020_2020;
            let mut found = 0u32;
            for j in 0..3 {
                let (word, bit) = word_bit((x >> (16 * j)) as u32);
                found |= ((self.filter[word] >> bit) as u32 & 1) << j;
            }
            while found != 0 {
                let j = found.trailing_zeros() as usize;
                found &= found - 1;
                self.verify(text, p + 2 * j, (x >> (16 * j)) as u32, out);
            }
            p += 6;
        }
        // The end of the block, and of the text (where windows are padded).
        while p < to {
            let w = window_at(text, p);
            let (word, bit) = word_bit(w);
            if self.filter[word] >> bit & 1 != 0 {
                self.verify(text, p, w, out);
            }
            p += 2;
        }
    }

    /// Reports the keywords whose entries match the window `w` found at `at`.
    fn verify(&self, text: &[u8], at: usize, w: u32, out: &mut Vec<Hit>) {
        let b = bucket_of(word_bit(w).0);
        let entries = match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&s), Some(&e)) => self.entries.get(s as usize..e as usize).unwrap_or_default(),
            _ => &[],
        };
        for e in entries {
            if w & e.mask == e.key {
                self.confirm(text, e.id, at as i64 - i64::from(e.back), out);
            }
        }
    }

    /// Reports keyword `id` if it occurs at `start`.
    fn confirm(&self, text: &[u8], id: u32, start: i64, out: &mut Vec<Hit>) {
        let kw = &self.keywords[id as usize];
        let Ok(start) = usize::try_from(start) else {
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

    /// Every occurrence by brute force: each position against each keyword (those starting
    /// with the position's byte, to keep the test quick).
    fn naive(keywords: &[String], text: &[u8]) -> Vec<Hit> {
        let mut by_first: Vec<Vec<usize>> = vec![Vec::new(); 256];
        for (id, k) in keywords.iter().enumerate() {
            if let Some(&b) = k.as_bytes().first() {
                by_first[usize::from(b.to_ascii_lowercase())].push(id);
            }
        }
        let mut v = Vec::new();
        for start in 0..text.len() {
            for &id in &by_first[usize::from(text[start].to_ascii_lowercase())] {
                let k = keywords[id].as_bytes();
                let end = start + k.len();
                if text
                    .get(start..end)
                    .is_some_and(|t| t.eq_ignore_ascii_case(k))
                {
                    v.push(Hit {
                        start,
                        end,
                        keyword: id as u32,
                    });
                }
            }
        }
        v.sort_unstable();
        v
    }

    /// The built-in rules' keywords (lowercased once, as the engine does), and some edge cases:
    /// every length from one byte up, repeated bytes, a keyword inside another.
    fn all_keywords() -> Vec<String> {
        let mut kws: Vec<String> = Vec::new();
        for (_, label, src) in crate::redact::rules::BUILTIN {
            for r in crate::redact::rules::parse(label, src).unwrap().rules {
                for k in r.keywords {
                    let k = k.to_ascii_lowercase();
                    if !kws.contains(&k) {
                        kws.push(k);
                    }
                }
            }
        }
        for k in [
            "z", "zq", "zzz", "zzzz", "zzzzz", "aqaqa", "qaq", "k3y", "k3yk3y",
        ] {
            kws.push(k.to_string());
        }
        kws
    }

    /// Random text with keywords planted in random case, some overlapping the one before, some
    /// at the very start or end: the pass must report exactly what a brute-force search does.
    #[test]
    fn finds_every_planted_keyword() {
        let kws = all_keywords();
        let k = Keywords::new(&kws).unwrap();
        let mut rng = crate::redact::samples::Rng::new(16);
        let filler =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:=/\"'\n\t@~$()";
        let mut planted = 0;
        for round in 0..300 {
            let len = match round % 20 {
                0 => rng.below(8) as usize,
                1 => BLOCK + rng.below(64) as usize - 32,
                _ => rng.below(600) as usize,
            };
            let mut text: Vec<u8> = (0..len).map(|_| rng.pick(filler)).collect();
            for _ in 0..rng.below(12) {
                let kw = kws[rng.below(kws.len() as u64) as usize].as_bytes();
                if kw.len() > text.len() {
                    continue;
                }
                let at = match rng.below(5) {
                    0 => 0,
                    1 => text.len() - kw.len(),
                    2 if len > BLOCK => BLOCK - rng.below(kw.len() as u64 + 1) as usize,
                    _ => rng.below((text.len() - kw.len() + 1) as u64) as usize,
                }
                .min(text.len() - kw.len());
                for (i, &b) in kw.iter().enumerate() {
                    text[at + i] = if rng.below(2) == 0 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    };
                }
                planted += 1;
                // Sometimes the next keyword overlaps this one.
                if rng.below(3) == 0 {
                    let kw2 = kws[rng.below(kws.len() as u64) as usize].as_bytes();
                    let at2 = at + rng.below(kw.len() as u64) as usize;
                    if at2 + kw2.len() <= text.len() {
                        text[at2..at2 + kw2.len()].copy_from_slice(kw2);
                        planted += 1;
                    }
                }
            }
            let mut got = Vec::new();
            k.for_each(&text, |h| got.push(h));
            got.sort_unstable();
            assert_eq!(got, naive(&kws, &text), "round {round}, len {len}");
        }
        assert!(planted > 1000, "{planted}");
    }
}
