//! Length-preserving masks and their application to arbitrary read windows.
//!
//! Why length-preserving: `st_size` stays true, offsets stay stable and `mmap`/`pread` at any
//! offset keep working, so `getattr` never needs a scan. Each masked span shows
//! `<redacted:RULE-ID>` padded with `*` (or cut) to exactly the span's length. Line breaks inside
//! a span are kept where they are (a PEM block keeps its shape and line numbers stay right), and
//! the label is written around them.
//!
//! The mask is a pure function of the [`Redactions`] (not of the bytes in the read buffer), so a
//! read that starts in the middle of a span, or in the middle of a UTF-16 code unit, produces the
//! same bytes as the matching window of [`mask_all`].

use std::sync::Arc;

use super::text::Encoding;

/// One masked range of file bytes `[start, end)`, labelled with the rule that found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    pub rule_id: Arc<str>,
}

/// Everything needed to mask one file: sorted, non-overlapping spans plus the positions of the
/// line-break code units inside them that stay visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redactions {
    spans: Vec<Span>,
    /// Sorted file offsets (code-unit starts) of `\n`/`\r` units inside spans.
    keep: Vec<u64>,
    encoding: Encoding,
    /// Sorted starts of the spans written as UTF-16LE code units in a file whose `encoding` is
    /// UTF-8: the UTF-16 strings inside a binary (see `binary.rs`).
    wide: Vec<u64>,
    /// Per-session mask codes by rule id, sorted (`[watermark] mask_codes`; see
    /// `crate::watermark`): a span of a rule listed here is labelled `<redacted:RULE:CODE>`.
    codes: Vec<(Arc<str>, Arc<str>)>,
}

const PREFIX: &[u8] = b"<redacted:";

/// Byte `k` of the label `<redacted:RULE-ID>` (or `<redacted:RULE-ID:CODE>`) padded with `*`.
fn label_byte(rule_id: &str, code: Option<&str>, k: u64) -> u8 {
    let id = rule_id.as_bytes();
    let k = k as usize;
    if k < PREFIX.len() {
        return PREFIX[k];
    }
    let k = k - PREFIX.len();
    if k < id.len() {
        return id[k];
    }
    let k = k - id.len();
    let code = code.map(str::as_bytes).unwrap_or_default();
    match k {
        _ if code.is_empty() => {}
        0 => return b':',
        _ if k - 1 < code.len() => return code[k - 1],
        _ => {}
    }
    let k = k - if code.is_empty() { 0 } else { code.len() + 1 };
    if k == 0 { b'>' } else { b'*' }
}

impl Redactions {
    /// Builds redactions from possibly overlapping `(start, end, rule)` ranges over `data`
    /// (the file's complete bytes). Ranges are aligned to code units and merged; on overlap the
    /// earliest-starting (then longest) range names the merged span.
    pub(crate) fn build(
        data: &[u8],
        encoding: Encoding,
        mut ranges: Vec<(u64, u64, Arc<str>)>,
    ) -> Redactions {
        let unit = encoding.unit();
        let len = data.len() as u64;
        for r in &mut ranges {
            // Align outward to code units, never past the end of the file.
            r.0 -= r.0 % unit;
            r.1 = (r.1 + (unit - r.1 % unit) % unit).min(len - len % unit);
        }
        Self::from_ranges(
            data,
            encoding,
            ranges
                .into_iter()
                .map(|(a, b, r)| (a, b, r, false))
                .collect(),
        )
    }

    /// Redactions of a binary (not text) file: `(start, end, rule, wide)` ranges, where `wide`
    /// ranges cover UTF-16LE code units (exactly: they may start at odd offsets) and the others
    /// single bytes. Where a wide and a narrow range overlap, the merged span masks every byte.
    pub(crate) fn build_binary(data: &[u8], ranges: Vec<(u64, u64, Arc<str>, bool)>) -> Redactions {
        let len = data.len() as u64;
        let ranges = ranges
            .into_iter()
            .map(|(a, b, r, w)| (a.min(len), b.min(len), r, w))
            .collect();
        Self::from_ranges(data, Encoding::Utf8, ranges)
    }

    /// Merges aligned ranges into spans and finds the line breaks they keep.
    fn from_ranges(
        data: &[u8],
        encoding: Encoding,
        mut ranges: Vec<(u64, u64, Arc<str>, bool)>,
    ) -> Redactions {
        ranges.retain(|r| r.0 < r.1);
        ranges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut spans: Vec<Span> = Vec::with_capacity(ranges.len());
        let mut wide_flags: Vec<bool> = Vec::with_capacity(ranges.len());
        for (start, end, rule_id, wide) in ranges {
            match (spans.last_mut(), wide_flags.last_mut()) {
                (Some(last), Some(w)) if start < last.end => {
                    last.end = last.end.max(end);
                    *w &= wide;
                }
                _ => {
                    spans.push(Span {
                        start,
                        end,
                        rule_id,
                    });
                    wide_flags.push(wide);
                }
            }
        }
        let wide: Vec<u64> = spans
            .iter()
            .zip(&wide_flags)
            .filter(|(_, w)| **w && encoding == Encoding::Utf8)
            .map(|(s, _)| s.start)
            .collect();
        let mut keep = Vec::new();
        for (s, &w) in spans.iter().zip(&wide_flags) {
            let enc = if w && encoding == Encoding::Utf8 {
                Encoding::Utf16Le
            } else {
                encoding
            };
            let unit = enc.unit();
            if enc == Encoding::Utf8 {
                // One vector search instead of a test per masked byte: on files dense with
                // secrets the masked bytes are a third of the file.
                let (a, b) = (s.start as usize, (s.end as usize).min(data.len()));
                if let Some(masked) = data.get(a..b) {
                    keep.extend(
                        memchr::memchr2_iter(b'\n', b'\r', masked).map(|i| s.start + i as u64),
                    );
                }
                continue;
            }
            let mut p = s.start;
            while p < s.end {
                let i = p as usize;
                let is_break = match enc {
                    Encoding::Utf8 => matches!(data.get(i), Some(b'\n' | b'\r')),
                    Encoding::Utf16Le => {
                        matches!(data.get(i), Some(b'\n' | b'\r')) && data.get(i + 1) == Some(&0)
                    }
                    Encoding::Utf16Be => {
                        data.get(i) == Some(&0) && matches!(data.get(i + 1), Some(b'\n' | b'\r'))
                    }
                };
                if is_break {
                    keep.push(p);
                }
                p += unit;
            }
        }
        Redactions {
            spans,
            keep,
            encoding,
            wide,
            codes: Vec::new(),
        }
    }

    /// These redactions with each rule's mask labelled with `code(rule id)` (a per-session mask
    /// code). The spans, and so the view's length, are unchanged.
    pub(crate) fn with_codes(&self, code: impl Fn(&str) -> String) -> Redactions {
        let mut codes: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for s in &self.spans {
            if let Err(i) = codes.binary_search_by(|c| c.0.cmp(&s.rule_id)) {
                codes.insert(i, (s.rule_id.clone(), Arc::from(code(&s.rule_id))));
            }
        }
        Redactions {
            codes,
            ..self.clone()
        }
    }

    /// The mask codes, `(rule id, code)` sorted by rule id (empty: plain masks).
    pub(crate) fn codes(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.codes
    }

    /// These redactions labelled with the given `(rule id, code)` pairs (a served record's).
    pub(crate) fn with_code_list(mut self, mut codes: Vec<(Arc<str>, Arc<str>)>) -> Redactions {
        codes.sort();
        codes.dedup_by(|a, b| a.0 == b.0);
        self.codes = codes;
        self
    }

    fn code_of(&self, rule_id: &str) -> Option<&str> {
        self.codes
            .binary_search_by(|c| (*c.0).cmp(rule_id))
            .ok()
            .map(|i| &*self.codes[i].1)
    }

    /// The merged spans, sorted by offset.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The encoding masks are written in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Overwrites `buf`, which holds file bytes `[offset, offset + buf.len())`, with the masked
    /// view. Correct for any window, including cuts through a span or a code unit.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        let wend = offset.saturating_add(buf.len() as u64);
        let mut i = self.spans.partition_point(|s| s.end <= offset);
        while let Some(s) = self.spans.get(i) {
            if s.start >= wend {
                break;
            }
            i += 1;
            let encoding = if self.wide.binary_search(&s.start).is_ok() {
                Encoding::Utf16Le
            } else {
                self.encoding
            };
            let unit = encoding.unit();
            let code = self.code_of(&s.rule_id);
            let lo = s.start.max(offset);
            let hi = s.end.min(wend);
            // Index of the first unit touched, and how many kept units precede it in the span.
            let first_unit_start = lo - (lo - s.start) % unit;
            let span_keep0 = self.keep.partition_point(|&p| p < s.start);
            let mut kp = self.keep.partition_point(|&p| p < first_unit_start);
            let mut label_k = (first_unit_start - s.start) / unit - (kp - span_keep0) as u64;
            let mut u = first_unit_start;
            while u < hi {
                let kept = self.keep.get(kp) == Some(&u);
                if kept {
                    kp += 1;
                }
                if !kept {
                    let ch = label_byte(&s.rule_id, code, label_k);
                    label_k += 1;
                    for b in 0..unit {
                        let pos = u + b;
                        if pos < lo || pos >= hi {
                            continue;
                        }
                        let v = match (encoding, b) {
                            (Encoding::Utf8, _)
                            | (Encoding::Utf16Le, 0)
                            | (Encoding::Utf16Be, 1) => ch,
                            _ => 0,
                        };
                        if let Some(slot) = buf.get_mut((pos - offset) as usize) {
                            *slot = v;
                        }
                    }
                }
                u += unit;
            }
        }
    }
}

/// The masked view of a whole file (`data` is the complete file).
pub fn mask_all(data: &[u8], r: &Redactions) -> Vec<u8> {
    let mut out = data.to_vec();
    r.apply(0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(data: &[u8], enc: Encoding, ranges: &[(u64, u64, &str)]) -> Redactions {
        Redactions::build(
            data,
            enc,
            ranges
                .iter()
                .map(|&(a, b, id)| (a, b, Arc::from(id)))
                .collect(),
        )
    }

    #[test]
    fn pads_and_cuts() {
        let d = b"key=AAAAAAAAAAAAAAAAAAAAAAAA; x=BBBB;";
        let red = r(d, Encoding::Utf8, &[(4, 28, "aws"), (32, 36, "long-rule")]);
        assert_eq!(
            mask_all(d, &red),
            b"key=<redacted:aws>**********; x=<red;".to_vec()
        );
    }

    /// A mask code goes inside the label; the length is kept, so a short span cuts it, and any
    /// window still equals the whole view's.
    #[test]
    fn codes_are_written_in_the_label_and_keep_the_length() {
        let d = b"key=AAAAAAAAAAAAAAAAAAAAAAAA; x=BBBB;\nt=CCCCCCCCCCCCCCCCCCCC";
        let red = r(
            d,
            Encoding::Utf8,
            &[(4, 28, "aws"), (32, 36, "long-rule"), (40, 60, "aws")],
        )
        .with_codes(|rule| if rule == "aws" { "7f3a" } else { "0b1c" }.into());
        let m = mask_all(d, &red);
        assert_eq!(m.len(), d.len());
        assert_eq!(
            &m,
            b"key=<redacted:aws:7f3a>*****; x=<red;\nt=<redacted:aws:7f3a>*"
        );
        every_window(d, &red);
        assert_eq!(red.codes().len(), 2);
    }

    #[test]
    fn keeps_newlines_and_writes_label_around_them() {
        let d = b"-----BEGIN\nabcdefghijklmnop\r\nqrstuvwxyz\n-----END";
        let red = r(d, Encoding::Utf8, &[(0, d.len() as u64, "pk")]);
        let m = mask_all(d, &red);
        assert_eq!(m.len(), d.len());
        assert_eq!(&m, b"<redacted:\npk>*************\r\n**********\n********");
    }

    #[test]
    fn merges_overlaps_first_then_longest() {
        let d = [b'x'; 40];
        let red = r(
            &d,
            Encoding::Utf8,
            &[(10, 20, "b"), (5, 12, "a"), (5, 8, "c"), (30, 35, "d")],
        );
        let s = red.spans();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end, &*s[0].rule_id), (5, 20, "a"));
        assert_eq!((s[1].start, s[1].end, &*s[1].rule_id), (30, 35, "d"));
    }

    fn every_window(d: &[u8], red: &Redactions) {
        let full = mask_all(d, red);
        for off in 0..=d.len() {
            for len in 0..=(d.len() - off) {
                let mut w = d[off..off + len].to_vec();
                red.apply(off as u64, &mut w);
                assert_eq!(w, &full[off..off + len], "offset {off} len {len}");
            }
        }
    }

    #[test]
    fn any_window_equals_mask_all_utf8() {
        let d = b"a=SECRET1\npem=-----\nMIIxyz\r\n-----\nb=tok tok2 end";
        let red = r(
            d,
            Encoding::Utf8,
            &[
                (2, 9, "s"),
                (14, 33, "private-key"),
                (37, 40, "t"),
                (41, 45, "t"),
            ],
        );
        every_window(d, &red);
    }

    #[test]
    fn any_window_equals_mask_all_utf16() {
        for enc in [Encoding::Utf16Le, Encoding::Utf16Be] {
            let s = "x=SECRETVALUE\nline2 SEC\r\nRET y";
            let mut d = Vec::new();
            for u in s.encode_utf16() {
                d.extend_from_slice(&match enc {
                    Encoding::Utf16Le => u.to_le_bytes(),
                    _ => u.to_be_bytes(),
                });
            }
            let red = r(&d, enc, &[(4, 26, "r1"), (40, 57, "r2")]);
            every_window(&d, &red);
            let m = mask_all(&d, &red);
            let units: Vec<u16> = m
                .chunks(2)
                .map(|c| match enc {
                    Encoding::Utf16Le => u16::from_le_bytes([c[0], c[1]]),
                    _ => u16::from_be_bytes([c[0], c[1]]),
                })
                .collect();
            let text = String::from_utf16(&units).unwrap();
            assert_eq!(text, "x=<redacted:r\nline2 <re\r\ndacty");
        }
    }

    /// In a binary, narrow spans mask bytes and wide spans mask UTF-16LE code units (from an
    /// odd offset too); bytes outside the spans are untouched and the length is kept.
    #[test]
    fn binary_spans_mask_in_place() {
        let mut d = b"\x7fELF\x00\x01tok=SECRETSECRET\x00\x02".to_vec();
        let narrow = (10u64, 22u64);
        d.push(0x03);
        let wide_at = d.len() as u64;
        assert_eq!(wide_at % 2, 1);
        for u in "pw=HUNTER22".encode_utf16() {
            d.extend_from_slice(&u.to_le_bytes());
        }
        d.extend_from_slice(b"\x00\xff\xfe");
        let red = Redactions::build_binary(
            &d,
            vec![
                (narrow.0, narrow.1, Arc::from("n"), false),
                (wide_at + 6, wide_at + 22, Arc::from("w"), true),
            ],
        );
        let m = mask_all(&d, &red);
        assert_eq!(m.len(), d.len());
        assert_eq!(&m[..10], &d[..10]);
        assert_eq!(&m[10..22], b"<redacted:n>");
        assert_eq!(
            &m[22..(wide_at + 6) as usize],
            &d[22..(wide_at + 6) as usize]
        );
        let units: Vec<u16> = m[(wide_at + 6) as usize..(wide_at + 22) as usize]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), "<redacte");
        assert_eq!(&m[(wide_at + 22) as usize..], &d[(wide_at + 22) as usize..]);
        every_window(&d, &red);
        // A wide and a narrow range that overlap merge into one span masking every byte.
        let red = Redactions::build_binary(
            &d,
            vec![
                (20, 24, Arc::from("n"), false),
                (22, 30, Arc::from("w"), true),
            ],
        );
        assert_eq!(red.spans().len(), 1);
        assert!(mask_all(&d, &red)[20..30].iter().all(|&b| b != 0));
    }
}
