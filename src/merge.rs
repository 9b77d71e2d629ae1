//! Merging an agent's edit of a masked view back onto the real bytes.
//!
//! Why it exists: the agent reads `db.yaml` as `password: <redacte` and saves it with another
//! line changed. Writing the agent's bytes to the real folder would replace the real password
//! with the mask; refusing every write to a redacted file makes such files read-only. Instead,
//! the agent's new content is treated as a *diff against the view it saw*, and that diff is
//! applied to the real bytes: regions the agent left alone keep the real bytes (secrets
//! included), regions it changed get its bytes, and a change that touches a masked range is a
//! conflict (the caller refuses the edit or keeps it aside for a person).
//!
//! Masks are length-preserving (design.md, "Redaction preserves length"), so the view and the
//! real bytes have the same length and the same offsets: an unchanged view range `[a, b)` is
//! exactly the real range `[a, b)`. Masked ranges are known from the redaction engine (the
//! [`Span`]s that produced the view), never found by searching for mask text: a 1-byte mask
//! is as safe as a 40-byte one.
//!
//! The edit script is computed with `similar` (Myers) at line granularity first (cheap, and
//! what a person would call the change); a changed hunk that touches a masked range is then
//! diffed again at byte granularity, so changing a comment on the same line as a masked
//! password is not a conflict. A change conflicts when:
//! - it removes or replaces any masked byte, or
//! - it inserts bytes inside a masked range, or glued to one (at its first or last byte
//!   without a line break in between: `<redacte` → `X<redacte` would change the secret's
//!   value, while a new line inserted before a PEM block that starts a line would not).
//!
//! Diff alignments are not unique (a line holding only a mask may be matched to a copy of
//! it elsewhere); the rules above make every alignment safe: an equal range copies the real
//! bytes from the *same* offsets, so a secret can only ever come out where it was, whole, or
//! the merge conflicts. What an agent inserts is its own text and is written as such (a copy
//! of a mask's text pasted somewhere new is just text; it replaces nothing).

use std::ops::Range;
use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp};

use crate::redact::Span;

/// How long one diff may search for a minimal edit script; past it `similar` returns a valid
/// but coarser script (which can only turn a clean merge into a conflict, never the reverse).
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// An edit that touches a masked range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// The view bytes `[start, end)` the agent's change replaced (empty for an insertion).
    pub changed: Range<u64>,
    /// The masked range it touches.
    pub mask: Range<u64>,
    /// The rule that masked it.
    pub rule_id: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.changed.is_empty() {
            format!("an insertion at byte {}", self.changed.start)
        } else {
            format!(
                "a change of bytes {}..{}",
                self.changed.start, self.changed.end
            )
        };
        write!(
            f,
            "{what} touches the masked bytes {}..{} (rule {}): the agent cannot see what it would overwrite",
            self.mask.start, self.mask.end, self.rule_id
        )
    }
}

/// The result of a clean merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Merged {
    /// The real bytes with the agent's change applied.
    pub bytes: Vec<u8>,
    /// Where the masked ranges are in `bytes` (they moved with the agent's insertions and
    /// deletions; their lengths are unchanged). `new` is exactly the view of `bytes` with these
    /// ranges masked, so a later edit of `new` can be merged against it again.
    pub spans: Vec<Span>,
}

/// Applies the change `view` → `new` to `real` (which `view` masks at `spans`).
///
/// `view.len()` must equal `real.len()` (masks preserve length); `spans` must be sorted and
/// non-overlapping (as [`crate::redact::Redactions::spans`] are).
pub(crate) fn merge(
    view: &[u8],
    new: &[u8],
    real: &[u8],
    spans: &[Span],
) -> Result<Merged, Conflict> {
    if view.len() != real.len() {
        // Not a view of these bytes: treat the whole file as touched.
        return Err(Conflict {
            changed: 0..view.len() as u64,
            mask: 0..real.len() as u64,
            rule_id: "(view and real bytes differ in length)".into(),
        });
    }
    let mut m = Merger {
        view,
        new,
        real,
        spans,
        out: Vec::with_capacity(real.len().max(new.len())),
        out_spans: Vec::with_capacity(spans.len()),
    };
    let old_lines = lines(view);
    let new_lines = lines(new);
    let old_l: Vec<&[u8]> = old_lines.iter().map(|r| &view[r.clone()]).collect();
    let new_l: Vec<&[u8]> = new_lines.iter().map(|r| &new[r.clone()]).collect();
    let ops = similar::capture_diff_slices_deadline(
        Algorithm::Myers,
        &old_l,
        &new_l,
        Some(Instant::now() + DIFF_DEADLINE),
    );
    let byte_range = |ls: &[Range<usize>], r: Range<usize>, total: usize| -> Range<usize> {
        let start = ls.get(r.start).map(|l| l.start).unwrap_or(total);
        let end = if r.end == 0 {
            start
        } else {
            ls.get(r.end - 1).map(|l| l.end).unwrap_or(total)
        };
        start..end.max(start)
    };
    for op in ops {
        let (_, o, n) = op.as_tag_tuple();
        let o = byte_range(&old_lines, o, view.len());
        let n = byte_range(&new_lines, n, new.len());
        match op {
            DiffOp::Equal { .. } => m.equal(o),
            _ => m.change_lines(o, n)?,
        }
    }
    Ok(Merged {
        bytes: m.out,
        spans: m.out_spans,
    })
}

/// Line ranges of `b`, each with its `\n`.
fn lines(b: &[u8]) -> Vec<Range<usize>> {
    let mut v = Vec::new();
    let mut s = 0;
    for (i, c) in b.iter().enumerate() {
        if *c == b'\n' {
            v.push(s..i + 1);
            s = i + 1;
        }
    }
    if s < b.len() {
        v.push(s..b.len());
    }
    v
}

struct Merger<'a> {
    view: &'a [u8],
    new: &'a [u8],
    real: &'a [u8],
    spans: &'a [Span],
    out: Vec<u8>,
    out_spans: Vec<Span>,
}

impl Merger<'_> {
    /// View bytes `o` are unchanged: copy the real bytes (secrets included) and carry the
    /// masked ranges inside `o` over to their new offsets.
    fn equal(&mut self, o: Range<usize>) {
        let shift = self.out.len() as i64 - o.start as i64;
        // A span may be covered by several adjacent equal ranges (a line-level one, then a
        // byte-level one inside the next changed hunk), never with a change in between (that
        // would conflict): it is carried over by the range holding its first byte.
        let first = self.spans.partition_point(|s| s.start < o.start as u64);
        for s in &self.spans[first..] {
            if s.start >= o.end as u64 {
                break;
            }
            self.out_spans.push(Span {
                start: (s.start as i64 + shift) as u64,
                end: (s.end as i64 + shift) as u64,
                rule_id: s.rule_id.clone(),
            });
        }
        self.out.extend_from_slice(&self.real[o]);
    }

    /// The first span the change of view bytes `o` into `text` touches, if any.
    fn touched(&self, o: &Range<usize>, text: &[u8]) -> Option<&Span> {
        let (a, b) = (o.start as u64, o.end as u64);
        // Spans that end before `a` cannot be touched (a span ending exactly at `a` can, by an
        // insertion glued to its end).
        let first = self.spans.partition_point(|s| s.end < a);
        for s in &self.spans[first..] {
            if s.start > b {
                break;
            }
            // Removes or replaces masked bytes.
            if s.start < b && a < s.end {
                return Some(s);
            }
            if text.is_empty() {
                continue;
            }
            // An insertion strictly inside a span.
            if s.start < a && a < s.end {
                return Some(s);
            }
            // Glued to the span's end: the inserted text continues the secret unless a line
            // break (kept visible by the mask, or the text's own) separates them.
            if a == s.end && !matches!(text.first(), Some(b'\n' | b'\r')) {
                let last = self.view.get(s.end as usize - 1);
                if !matches!(last, Some(b'\n')) {
                    return Some(s);
                }
            }
            // Glued to the span's start.
            if b == s.start && !matches!(text.last(), Some(b'\n')) {
                return Some(s);
            }
        }
        None
    }

    fn conflict(o: &Range<usize>, s: &Span) -> Conflict {
        Conflict {
            changed: o.start as u64..o.end as u64,
            mask: s.start..s.end,
            rule_id: s.rule_id.to_string(),
        }
    }

    /// A changed run of lines: taken as is when it touches no mask, else diffed byte by byte.
    fn change_lines(&mut self, o: Range<usize>, n: Range<usize>) -> Result<(), Conflict> {
        let text = &self.new[n.clone()];
        if self.touched(&o, text).is_none() {
            self.out.extend_from_slice(text);
            return Ok(());
        }
        let ops = similar::capture_diff_slices_deadline(
            Algorithm::Myers,
            &self.view[o.clone()],
            text,
            Some(Instant::now() + DIFF_DEADLINE),
        );
        for op in ops {
            let (_, bo, bn) = op.as_tag_tuple();
            let bo = o.start + bo.start..o.start + bo.end;
            let bn = n.start + bn.start..n.start + bn.end;
            match op {
                DiffOp::Equal { .. } => self.equal(bo),
                _ => {
                    let t = &self.new[bn];
                    if let Some(s) = self.touched(&bo, t) {
                        return Err(Self::conflict(&bo, s));
                    }
                    self.out.extend_from_slice(t);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Encoding, Redactions, mask_all};
    use std::sync::Arc;

    /// (real, view, spans) for `real` masked at the byte ranges of each `needle`.
    fn masked(real: &str, needles: &[&str]) -> (Vec<u8>, Vec<u8>, Vec<Span>) {
        let mut ranges = Vec::new();
        for n in needles {
            let s = real.find(n).expect("needle") as u64;
            ranges.push((s, s + n.len() as u64, Arc::from("rule")));
        }
        let r = Redactions::build(real.as_bytes(), Encoding::Utf8, ranges);
        let view = mask_all(real.as_bytes(), &r);
        (real.as_bytes().to_vec(), view, r.spans().to_vec())
    }

    /// Builds the agent's new content from the view with `f`, merges, returns the result.
    fn edit(real: &str, needles: &[&str], f: impl Fn(&str) -> String) -> Result<String, Conflict> {
        let (real, view, spans) = masked(real, needles);
        let v = String::from_utf8(view.clone()).unwrap();
        let new = f(&v);
        merge(&view, new.as_bytes(), &real, &spans).map(|m| {
            // The returned spans locate the secrets in the result, and masking them there
            // gives back exactly what the agent wrote.
            let r = Redactions::build(
                &m.bytes,
                Encoding::Utf8,
                m.spans
                    .iter()
                    .map(|s| (s.start, s.end, s.rule_id.clone()))
                    .collect(),
            );
            assert_eq!(
                mask_all(&m.bytes, &r),
                new.as_bytes(),
                "spans are where the secrets are"
            );
            // Every secret is still there, whole, in its order.
            assert_eq!(m.spans.len(), spans.len());
            for (a, b) in m.spans.iter().zip(&spans) {
                assert_eq!(
                    &m.bytes[a.start as usize..a.end as usize],
                    &real[b.start as usize..b.end as usize]
                );
            }
            String::from_utf8(m.bytes).unwrap()
        })
    }

    #[test]
    fn unchanged_view_gives_back_the_real_bytes() {
        let real = "user: me\npassword: hunter2\ntoken: ghp_0123456789abcdef\n";
        assert_eq!(
            edit(real, &["hunter2", "ghp_0123456789abcdef"], |v| v.into()).unwrap(),
            real
        );
    }

    #[test]
    fn every_mask_length_survives_an_edit_of_another_line() {
        for len in 1..=24 {
            // Letters that appear nowhere else in the file, so the test finds the right bytes.
            let secret: String = "QWERTYUIOPASDFGHJKLZXCVBNM"[..len].to_string();
            let real = format!("host: db\npassword: {secret}\nport: 5432\n");
            let got = edit(&real, &[&secret], |v| v.replace("port: 5432", "port: 6543")).unwrap();
            assert_eq!(
                got,
                format!("host: db\npassword: {secret}\nport: 6543\n"),
                "len {len}"
            );
            // Rewriting the mask itself always conflicts, whatever its length.
            let e = edit(&real, &[&secret], |v| {
                let line = v.lines().nth(1).unwrap().to_string();
                v.replace(&line, "password: changed")
            });
            assert!(e.is_err(), "len {len}: {e:?}");
        }
    }

    #[test]
    fn same_line_edits_before_and_after_a_mask() {
        let real = "password: hunter2 # old comment\n";
        let got = edit(real, &["hunter2"], |v| v.replace("old comment", "new note")).unwrap();
        assert_eq!(got, "password: hunter2 # new note\n");
        let got = edit(real, &["hunter2"], |v| v.replace("password:", "pass_word:")).unwrap();
        assert_eq!(got, "pass_word: hunter2 # old comment\n");
    }

    #[test]
    fn adjacent_edits() {
        let real = "k=hunter2;x\n";
        // Deleting the byte right before or after a mask keeps the secret whole.
        assert_eq!(
            edit(real, &["hunter2"], |v| v.replace("k=", "k")).unwrap(),
            "khunter2;x\n"
        );
        assert_eq!(
            edit(real, &["hunter2"], |v| v.replace(";x", "x")).unwrap(),
            "k=hunter2x\n"
        );
        // Gluing text to either end would change the secret's value.
        assert!(edit(real, &["hunter2"], |v| v.replace("k=", "k=X")).is_err());
        assert!(edit(real, &["hunter2"], |v| v.replace(";x", "X;x")).is_err());
        // A new line before a mask that starts a line, or after one that ends it, is fine.
        let pem = "a\nSECRETLINE\nb\n";
        assert_eq!(
            edit(pem, &["SECRETLINE\n"], |v| v.replacen("a\n", "a\nnew\n", 1)).unwrap(),
            "a\nnew\nSECRETLINE\nb\n"
        );
        assert_eq!(
            edit(pem, &["SECRETLINE\n"], |v| v.replace("\nb\n", "\nnew\nb\n")).unwrap(),
            "a\nSECRETLINE\nnew\nb\n"
        );
        // At the end of a file without a final newline.
        let tail = "x\nkey=SECRET";
        assert_eq!(
            edit(tail, &["SECRET"], |v| format!("{v}\nmore\n")).unwrap(),
            "x\nkey=SECRET\nmore\n"
        );
        assert!(edit(tail, &["SECRET"], |v| format!("{v}more")).is_err());
    }

    #[test]
    fn insertions_and_deletions_shift_offsets() {
        let real = "a: 1\npassword: hunter2\nb: 2\ntoken: abcdefghijklmnopqrstuvwxyz\nc: 3\n";
        let needles = ["hunter2", "abcdefghijklmnopqrstuvwxyz"];
        let got = edit(real, &needles, |v| {
            v.replace("a: 1\n", "a: 1\ninserted: line\nand: another\n")
                .replace("b: 2\n", "")
                .replace("c: 3", "c: 33333")
        })
        .unwrap();
        assert_eq!(
            got,
            "a: 1\ninserted: line\nand: another\npassword: hunter2\ntoken: abcdefghijklmnopqrstuvwxyz\nc: 33333\n"
        );
        // Whole file rewritten (truncate + write) with one line deleted at the top.
        let got = edit(real, &needles, |v| v.replacen("a: 1\n", "", 1)).unwrap();
        assert_eq!(got, &real[5..]);
    }

    #[test]
    fn multiple_masks_per_line() {
        let real = "url: postgres://alice:pw1@h1/db?key=k2 other=v\n";
        let got = edit(real, &["pw1", "k2"], |v| v.replace("other=v", "other=w")).unwrap();
        assert_eq!(got, "url: postgres://alice:pw1@h1/db?key=k2 other=w\n");
        let got = edit(real, &["pw1", "k2"], |v| v.replace("@h1/db", "@h2/db2")).unwrap();
        assert_eq!(got, "url: postgres://alice:pw1@h2/db2?key=k2 other=v\n");
        // Touching the second mask conflicts even though the first is intact.
        let e = edit(real, &["pw1", "k2"], |v| {
            let at = v.find("key=").unwrap() + 4;
            format!("{}ZZ{}", &v[..at], &v[at + 2..])
        })
        .unwrap_err();
        let k2 = real.find("k2").unwrap() as u64;
        assert_eq!(e.mask, k2..k2 + 2);
    }

    #[test]
    fn masks_spanning_lines() {
        let real = "x\n-----BEGIN KEY-----\nMIIabc\nMIIdef\n-----END KEY-----\ny\n";
        let key = "-----BEGIN KEY-----\nMIIabc\nMIIdef\n-----END KEY-----";
        let got = edit(real, &[key], |v| {
            v.replace("y\n", "y: 2\n").replace("x\n", "x: 1\n")
        })
        .unwrap();
        assert_eq!(got, real.replace("y\n", "y: 2\n").replace("x\n", "x: 1\n"));
        // A change on the block's last line, after the block, is not a conflict.
        let tail = real.replace("-----\ny\n", "----- tail\ny\n");
        let got = edit(&tail, &[key], |v| v.replace(" tail\n", " tail2\n")).unwrap();
        assert_eq!(got, real.replace("-----\ny\n", "----- tail2\ny\n"));
        // Deleting one line inside the block conflicts.
        let e = edit(real, &[key], |v| {
            let mut l: Vec<&str> = v.split_inclusive('\n').collect();
            l.remove(3);
            l.concat()
        });
        assert!(e.is_err());
        // So does changing one of its lines, or a line break kept visible inside it.
        let e = edit(real, &[key], |v| {
            let mut l: Vec<String> = v.split_inclusive('\n').map(String::from).collect();
            l[2] = "changed\n".into();
            l.concat()
        });
        assert!(e.is_err(), "{e:?}");
        let e = edit(real, &[key], |v| v.replacen('\n', "", 2));
        assert!(e.is_err(), "{e:?}");
    }

    #[test]
    fn rewriting_the_mask_text_never_writes_mask_bytes() {
        let real = "password: hunter2\n";
        for new in [
            "password: <REDACT\n",
            "password: \n",
            "password: hunter3\n",
            "password: <redacted:generic-password>\n",
            "password: <redact \n",
            "",
        ] {
            let got = edit(real, &["hunter2"], |_| new.into());
            assert!(got.is_err(), "{new:?} gave {got:?}");
        }
        // Keeping the mask text as it is keeps the secret.
        let got = edit(real, &["hunter2"], |v| format!("# edited\n{v}")).unwrap();
        assert_eq!(got, "# edited\npassword: hunter2\n");
    }

    #[test]
    fn a_pasted_copy_of_a_mask_is_text_and_the_secret_stays_put() {
        let real = "a=hunter2\n";
        let got = edit(real, &["hunter2"], |v| format!("{v}{v}")).unwrap();
        // One of the two lines holds the secret (at its own offset), the other the pasted text;
        // never two secrets and never a lost one.
        assert_eq!(got.matches("hunter2").count(), 1, "{got}");
        assert_eq!(got.lines().count(), 2);
    }

    #[test]
    fn utf16_files_merge_by_code_unit() {
        let enc = |t: &str| -> Vec<u8> { t.encode_utf16().flat_map(|u| u.to_le_bytes()).collect() };
        let real = enc("a: 1\npw: hunter2\nb: 2\n");
        let at = real
            .windows(2)
            .position(|w| w == enc("h").as_slice())
            .unwrap() as u64;
        let r = Redactions::build(
            &real,
            Encoding::Utf16Le,
            vec![(at, at + 14, Arc::from("pw"))],
        );
        let view = mask_all(&real, &r);
        let v: Vec<u16> = view
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let new = enc(&String::from_utf16(&v).unwrap().replace("b: 2", "b: 3"));
        let m = merge(&view, &new, &real, r.spans()).unwrap();
        assert_eq!(m.bytes, enc("a: 1\npw: hunter2\nb: 3\n"));
        let bad = enc(&String::from_utf16(&v).unwrap().replace("pw: <r", "pw: xx"));
        assert!(merge(&view, &bad, &real, r.spans()).is_err());
    }

    #[test]
    fn length_mismatch_is_a_conflict() {
        let spans = vec![Span {
            start: 0,
            end: 1,
            rule_id: Arc::from("r"),
        }];
        assert!(merge(b"ab", b"ab", b"abc", &spans).is_err());
    }

    #[test]
    fn randomised_edits_never_move_or_leak_a_secret() {
        // Deterministic xorshift: random line-level edits of a file with several masks; every
        // clean merge must keep each secret at a recorded span, and masking the result must
        // give exactly what the agent wrote.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let real = "l0\npw: S1\nl2 tok=SECRET22 end\nl3\nmulti=AAA\nBBB\nl6\n";
        let needles = ["S1", "SECRET22", "AAA\nBBB"];
        let (mut clean, mut conflicts) = (0, 0);
        for _ in 0..2000 {
            let ops = rnd(4) + 1;
            let mut choices = Vec::new();
            for _ in 0..ops {
                choices.push((rnd(3), rnd(8), rnd(5)));
            }
            let r = edit(real, &needles, |v| {
                let mut l: Vec<String> = v.split_inclusive('\n').map(String::from).collect();
                for &(kind, at, what) in &choices {
                    let at = at % (l.len() + 1);
                    match kind {
                        0 => l.insert(at, format!("new{what}\n")),
                        1 if at < l.len() => {
                            l.remove(at);
                        }
                        _ if at < l.len() => {
                            let s = l[at].clone();
                            l[at] = format!("{}{what}", s.trim_end_matches('\n'));
                            if s.ends_with('\n') {
                                l[at].push('\n');
                            }
                        }
                        _ => {}
                    }
                }
                l.concat()
            });
            // `edit` checked each clean merge; count both outcomes so the test covers both.
            match r {
                Ok(_) => clean += 1,
                Err(_) => conflicts += 1,
            }
        }
        assert!(
            clean > 200 && conflicts > 200,
            "{clean} clean, {conflicts} conflicts"
        );
    }
}
