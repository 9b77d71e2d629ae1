//! Finding a rule's secret inside a match without asking the regex for capture groups.
//!
//! Why: `captures` makes the regex crate re-run the match through a backtracking engine after
//! its DFA has found it, which costs several microseconds per match on long secrets (a PEM block,
//! a 300-character token) where the DFA search itself costs a few hundred nanoseconds. Most rules
//! have the shape `LEAD (SECRET) TRAIL`, where LEAD is empty, `^`, or one byte from a class
//! (`(?:^|[^A-Za-z0-9])`), TRAIL likewise (`(?:[^A-Za-z0-9]|$)`), and SECRET can neither start
//! with a LEAD byte nor end with a TRAIL byte. Then the DFA's match alone tells where the secret
//! is: it starts one byte in exactly when the match's first byte is a LEAD byte, and ends one
//! byte early exactly when the match's last byte is a TRAIL byte. Rules of another shape keep
//! using capture groups.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind, Look, LookSet};

/// A set of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bytes([u64; 4]);

impl Bytes {
    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    fn has(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] >> (b & 63) & 1 != 0
    }
    fn union(&mut self, o: &Bytes) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a |= b;
        }
    }
    fn disjoint(&self, o: &Bytes) -> bool {
        self.0.iter().zip(o.0).all(|(a, b)| a & b == 0)
    }
    fn within(&self, o: &Bytes) -> bool {
        self.0.iter().zip(o.0).all(|(a, b)| a & !b == 0)
    }
}

/// How to cut the secret out of a whole match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpanPlan {
    /// Bytes a trailing boundary may consume.
    trail: Bytes,
    start: StartBy,
}

/// How a plan finds where the secret starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StartBy {
    /// At the match start, or one byte in when the match starts with one of these bytes (a
    /// leading boundary; empty when there is none).
    Lead(Bytes),
    /// The secret has this one length: counted back from its end, whatever precedes it.
    Fixed(usize),
    /// Every byte the secret can hold, when none can come right before it: the secret is the
    /// run of these bytes that ends where it ends (`datadog_api_key = "value"` shapes).
    Back(Bytes),
    /// The bytes the secret can start with, when nothing before it in the match can be one:
    /// the secret starts at the first of them (a key block inside a JSON string).
    Ahead(Bytes),
    /// Everything before the secret has this one length (`calendly_token=eyJ(...)`): the secret
    /// starts that many bytes into the match.
    Offset(usize),
    /// A body of `body` bytes then padding of `pad` bytes (`[A-Za-z0-9+/]{86}={0,2}`), where
    /// the pad bytes are not body bytes, the body is never empty, and the byte before the secret
    /// is never a body byte (though it may be a pad byte: `key=AbC...==`): the secret is the
    /// run of pad bytes that ends where it ends and the run of body bytes before it.
    Padded { body: Bytes, pad: Bytes },
    /// The secret and everything before it each have one length (`https://(32 hex)...`): the
    /// secret is that range of the match, whatever follows it.
    Exact { offset: usize, len: usize },
    /// `SCHEME :// USER : (SECRET) @ HOST` shapes: the secret starts after the first `then` byte
    /// that follows the first `lit` of the match, and ends at the next `stop` byte (which it
    /// never holds). Holds when nothing before `lit` can form it, nothing between it and the
    /// `then` byte is one, and the secret is followed by a literal that starts with `stop`.
    Between { lit: Vec<u8>, then: u8, stop: u8 },
    /// A secret HEAD SEP BODY (`[0-9]{15,16}(?:\||%7C)[0-9a-zA-Z_\-]{27,40}`), where every
    /// separator starts with a byte that is not a body byte and goes on with body bytes, and
    /// the byte before the secret is never a head byte: back from the secret's end over body
    /// bytes to the separator's first byte, then back over head bytes.
    Split { head: Bytes, body: Bytes },
}

impl SpanPlan {
    /// Whether the secret's start is told by the match's first byte (or its fixed length), so
    /// a match that starts a byte early shows as a secret that starts early.
    pub(crate) fn starts_at_lead(&self) -> bool {
        matches!(self.start, StartBy::Lead(_) | StartBy::Fixed(_))
    }

    /// The secret's range within `m` (a match's bytes), as offsets into `m`.
    pub(crate) fn cut(&self, m: &[u8]) -> (usize, usize) {
        if let StartBy::Exact { offset, len } = self.start {
            let start = offset.min(m.len());
            return (start, offset.saturating_add(len).min(m.len()));
        }
        if let StartBy::Between { lit, then, stop } = &self.start {
            let after = memchr::memmem::find(m, lit).map_or(m.len(), |p| p + lit.len());
            let start = memchr::memchr(*then, &m[after..]).map_or(m.len(), |p| after + p + 1);
            let end = memchr::memchr(*stop, &m[start..]).map_or(m.len(), |p| start + p);
            return (start, end);
        }
        let end = m.len() - usize::from(m.last().is_some_and(|&b| self.trail.has(b)));
        let start = match &self.start {
            StartBy::Lead(lead) => usize::from(m.first().is_some_and(|&b| lead.has(b))),
            StartBy::Fixed(len) => end.saturating_sub(*len),
            StartBy::Back(run) => m[..end]
                .iter()
                .rposition(|&b| !run.has(b))
                .map_or(0, |p| p + 1),
            StartBy::Ahead(first) => m.iter().position(|&b| first.has(b)).unwrap_or(0),
            StartBy::Offset(len) => (*len).min(end),
            StartBy::Padded { body, pad } => {
                let body_end = m[..end]
                    .iter()
                    .rposition(|&b| !pad.has(b))
                    .map_or(0, |p| p + 1);
                m[..body_end]
                    .iter()
                    .rposition(|&b| !body.has(b))
                    .map_or(0, |p| p + 1)
            }
            StartBy::Split { head, body } => {
                let sep = m[..end].iter().rposition(|&b| !body.has(b)).unwrap_or(0);
                m[..sep]
                    .iter()
                    .rposition(|&b| !head.has(b))
                    .map_or(0, |p| p + 1)
            }
            StartBy::Exact { .. } | StartBy::Between { .. } => 0,
        };
        (start, end.max(start))
    }
}

/// An anchored rule of the shape `[LEAD] PREFIX [GAP [SEP]] (INNER RUN) TRAIL`, matched without
/// its regex: LEAD an optional one-byte boundary that may match nothing at a line start
/// (`(?:^|[^A-Za-z0-9_])`); PREFIX and INNER fixed strings or alternations of them, whose
/// letters may match either case (`(?i:calendly_token=eyJ)`, `(?:xoxa\-2\-|xoxr\-)`); GAP a
/// bounded repetition of one class and SEP one byte of another (`[^\n]{0,60}?[ \t"'=:]`); RUN
/// a repetition of one class (`[A-Za-z0-9_\-]{100,600}`); TRAIL one byte outside the run's
/// class, or the end of the line (`(?:[^A-Za-z0-9_\-]|$)`). The secret is the capture group,
/// INNER and RUN.
///
/// Why: an anchored attempt walks the regex's lazy DFA byte by byte from the keyword to the
/// end of the token, a few hundred bytes for a long one (a fifth of `calendly-token-named`'s
/// scan, and most of (b)'s time in regexes: 366 shipped rules have this shape); here the run
/// is counted with one table test per byte and the rest is a few comparisons. Every choice is
/// tried in the order the regex prefers it (leftmost-first, as a backtracking search): the
/// lead's and the alternations' branches in order, the gap shortest first when lazy, longest
/// first when greedy. Since the trail shares no byte with the run, a choice matches exactly
/// when the longest run there fits the repetition's bounds and the byte after it is a trail
/// byte (or the haystack ends, where the trail may be the line end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunShape {
    /// The lead's alternatives in order: `None` matches nothing (a line or text start, true at
    /// the haystack's start), `Some` one byte of the set. Empty: no lead.
    lead: Vec<Option<Bytes>>,
    /// PREFIX's alternatives in order, one `(byte, fold)` pair per position: a text byte `t`
    /// fits when `t | fold == byte` (`fold` is 0x20 for a letter of either case, else 0).
    prefix: Vec<Vec<(u8, u8)>>,
    gap: Option<Gap>,
    /// INNER's alternatives, as `prefix`.
    inner: Vec<Vec<(u8, u8)>>,
    run: Bytes,
    min: usize,
    max: usize,
    /// More runs after the first, each after a fixed string (`[0-9]{15,25}-[A-Za-z0-9]{20,40}`)
    /// whose first byte its run before cannot hold, so each run ends where the next string starts.
    more: Vec<(Fixed, Bytes, usize, usize)>,
    trail: Bytes,
    /// Whether the trail may match nothing at the end of the haystack (`$`, `\z`).
    trail_end: bool,
}

/// The length of the run of `class` bytes at the start of `hay` when it is within `min..=max`.
fn run_len(hay: &[u8], class: &Bytes, min: usize, max: usize) -> Option<usize> {
    let limit = hay.len().min(max.saturating_add(1));
    let r = hay[..limit]
        .iter()
        .position(|&b| !class.has(b))
        .unwrap_or(limit);
    (min..=max).contains(&r).then_some(r)
}

/// A fixed string of a [`RunShape`], one `(byte, fold)` pair per position.
type Fixed = Vec<(u8, u8)>;

/// `GAP [SEP]` of a [`RunShape`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gap {
    class: Bytes,
    min: usize,
    max: usize,
    greedy: bool,
    /// The separator's bytes; `None` when the capture group follows the gap directly.
    sep: Option<Bytes>,
}

/// Whether `hay` starts with the fixed string `f`.
fn fits(hay: &[u8], f: &[(u8, u8)]) -> bool {
    hay.get(..f.len())
        .is_some_and(|h| h.iter().zip(f).all(|(&t, &(b, fold))| t | fold == b))
}

impl RunShape {
    /// The secret's range in `hay` when the rule's regex, anchored at `hay`'s start, matches
    /// there (what `\A(?:PATTERN)` finds, then its capture group), else `None`.
    pub(crate) fn find(&self, hay: &[u8]) -> Option<(usize, usize)> {
        if self.lead.is_empty() {
            return self.after_lead(hay, 0);
        }
        self.lead.iter().find_map(|alt| match alt {
            None => self.after_lead(hay, 0),
            Some(set) => hay
                .first()
                .filter(|&&b| set.has(b))
                .and_then(|_| self.after_lead(hay, 1)),
        })
    }

    fn after_lead(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        self.prefix.iter().find_map(|p| {
            if !fits(&hay[at.min(hay.len())..], p) {
                return None;
            }
            let k = at + p.len();
            let Some(gap) = &self.gap else {
                return self.secret_at(hay, k);
            };
            // The gap's possible lengths, in the order the regex tries them.
            let avail = hay[k..]
                .iter()
                .take(gap.max)
                .take_while(|&&b| gap.class.has(b))
                .count();
            let try_sep = |g: usize| {
                let q = k + g;
                match &gap.sep {
                    None => self.secret_at(hay, q),
                    Some(sep) => hay
                        .get(q)
                        .filter(|&&b| sep.has(b))
                        .and_then(|_| self.secret_at(hay, q + 1)),
                }
            };
            if gap.min > avail {
                None
            } else if gap.greedy {
                (gap.min..=avail).rev().find_map(try_sep)
            } else {
                (gap.min..=avail).find_map(try_sep)
            }
        })
    }

    /// INNER RUN TRAIL at `hay[k..]`: the secret's range in `hay`.
    fn secret_at(&self, hay: &[u8], k: usize) -> Option<(usize, usize)> {
        let rest = hay.get(k..)?;
        self.inner.iter().find_map(|f| {
            if !fits(rest, f) {
                return None;
            }
            let mut at = f.len() + run_len(&rest[f.len()..], &self.run, self.min, self.max)?;
            for (lit, class, min, max) in &self.more {
                if !fits(&rest[at..], lit) {
                    return None;
                }
                at += lit.len();
                at += run_len(&rest[at..], class, *min, *max)?;
            }
            let ok = match rest.get(at) {
                Some(&b) => self.trail.has(b),
                None => self.trail_end,
            };
            ok.then_some((k, k + at))
        })
    }
}

/// The [`RunShape`] of `pattern` with its secret in capture group `group`, or `None` when the
/// pattern has another shape.
pub(crate) fn run_shape(pattern: &str, group: u32) -> Option<RunShape> {
    fn flatten<'h>(h: &'h Hir, out: &mut Vec<&'h Hir>) {
        match h.kind() {
            HirKind::Concat(parts) => parts.iter().for_each(|p| flatten(p, out)),
            _ => out.push(h),
        }
    }
    /// The fixed strings `parts` can match, in the regex's order of preference, when they are
    /// literals, classes of one byte or of one ASCII letter in both cases, and alternations of
    /// such (at most 64 strings).
    fn fixed(parts: &[&Hir]) -> Option<Vec<Vec<(u8, u8)>>> {
        let mut out: Vec<Vec<(u8, u8)>> = vec![Vec::new()];
        for p in parts {
            let options: Vec<Vec<(u8, u8)>> = match p.kind() {
                HirKind::Literal(l) => vec![l.0.iter().map(|&b| (b, 0)).collect()],
                HirKind::Class(c) => {
                    let set = class(c)?;
                    let bytes: Vec<u8> = (0..=255u8).filter(|&b| set.has(b)).collect();
                    match bytes[..] {
                        [b] => vec![vec![(b, 0)]],
                        [u, l] if u.is_ascii_uppercase() && l == u.to_ascii_lowercase() => {
                            vec![vec![(l, 0x20)]]
                        }
                        _ => return None,
                    }
                }
                HirKind::Alternation(alts) => {
                    let mut all = Vec::new();
                    for a in alts {
                        let mut parts = Vec::new();
                        flatten(a, &mut parts);
                        all.extend(fixed(&parts)?);
                    }
                    all
                }
                _ => return None,
            };
            out = out
                .iter()
                .flat_map(|head| {
                    options.iter().map(move |o| {
                        let mut s = head.clone();
                        s.extend_from_slice(o);
                        s
                    })
                })
                .collect();
            if out.len() > 64 {
                return None;
            }
        }
        Some(out)
    }
    /// A one-byte boundary's alternatives in order (`None`: a line or text start).
    fn lead(h: &Hir) -> Option<Vec<Option<Bytes>>> {
        let starts = LookSet::empty()
            .insert(Look::Start)
            .insert(Look::StartLF)
            .insert(Look::StartCRLF);
        let one = |a: &Hir| match a.kind() {
            HirKind::Look(l) if starts.contains(*l) => Some(None),
            HirKind::Class(_) | HirKind::Literal(_) => {
                boundary(a).filter(|b| *b != Bytes::default()).map(Some)
            }
            _ => None,
        };
        match h.kind() {
            HirKind::Alternation(alts) => alts.iter().map(one).collect(),
            HirKind::Class(_) => Some(vec![one(h)?]),
            _ => None,
        }
    }
    /// A repetition of one class: its bytes, bounds and greed.
    fn repeat(h: &Hir) -> Option<(Bytes, usize, usize, bool)> {
        let HirKind::Repetition(r) = h.kind() else {
            return None;
        };
        let HirKind::Class(c) = r.sub.kind() else {
            return None;
        };
        let max = r.max.map_or(usize::MAX, |m| m as usize);
        Some((class(c)?, r.min as usize, max, r.greedy))
    }
    /// One byte of a class (or a one-byte literal).
    fn one_byte(h: &Hir) -> Option<Bytes> {
        match h.kind() {
            HirKind::Class(_) | HirKind::Literal(_) => {
                boundary(h).filter(|b| *b != Bytes::default())
            }
            _ => None,
        }
    }
    let hir = parse(pattern)?;
    let mut parts = Vec::new();
    flatten(&hir, &mut parts);
    let (trail_part, parts) = parts.split_last()?;
    let (cap, before) = parts.split_last()?;
    let HirKind::Capture(cap) = cap.kind() else {
        return None;
    };
    if cap.index != group {
        return None;
    }
    let mut in_secret = Vec::new();
    flatten(&cap.sub, &mut in_secret);
    // INNER, the first run, then (fixed string, run) pairs.
    let first = in_secret.iter().position(|p| repeat(p).is_some())?;
    let inner = fixed(&in_secret[..first])?;
    let (run, min, max, _) = repeat(in_secret[first])?;
    let mut more = Vec::new();
    let mut last = run;
    let mut rest = &in_secret[first + 1..];
    while !rest.is_empty() {
        let next = rest.iter().position(|p| repeat(p).is_some())?;
        let lit = match &fixed(&rest[..next])?[..] {
            [one] if !one.is_empty() => one.clone(),
            _ => return None,
        };
        // The run before must end where the string starts: it holds neither case of its first
        // byte.
        let (b, fold) = lit[0];
        if last.has(b) || last.has(b & !fold) {
            return None;
        }
        let (class, min, max, _) = repeat(rest[next])?;
        more.push((lit, class, min, max));
        last = class;
        rest = &rest[next + 1..];
    }
    // GAP SEP at the end of what comes before the capture group.
    let (gap, before) = match before {
        [rest @ .., g, sep] if repeat(g).is_some() && one_byte(sep).is_some() => {
            let (class, min, max, greedy) = repeat(g)?;
            let sep = one_byte(sep);
            (
                Some(Gap {
                    class,
                    min,
                    max,
                    greedy,
                    sep,
                }),
                rest,
            )
        }
        [rest @ .., g] if repeat(g).is_some() => {
            let (class, min, max, greedy) = repeat(g)?;
            (
                Some(Gap {
                    class,
                    min,
                    max,
                    greedy,
                    sep: None,
                }),
                rest,
            )
        }
        _ => (None, before),
    };
    let (lead, prefix) = match fixed(before) {
        Some(p) => (Vec::new(), p),
        None => {
            let (first, rest) = before.split_first()?;
            (lead(first)?, fixed(rest)?)
        }
    };
    // The trail: one byte outside the run's class, or the end of a line or the text.
    let trail = boundary(trail_part)?;
    let looks = trail_part.properties().look_set();
    let ends = LookSet::empty()
        .insert(Look::End)
        .insert(Look::EndLF)
        .insert(Look::EndCRLF);
    // A line end (`$`) before a `\r` or `\n` is then also a trail byte: only the haystack's
    // end needs the look.
    let line_bytes = trail.has(b'\n') && trail.has(b'\r');
    if !looks.subtract(ends).is_empty()
        || !trail.disjoint(&last)
        || trail == Bytes::default()
        || (looks.contains(Look::EndLF) || looks.contains(Look::EndCRLF)) && !line_bytes
    {
        return None;
    }
    Some(RunShape {
        lead,
        prefix,
        gap,
        inner,
        run,
        min,
        max,
        more,
        trail,
        trail_end: !looks.is_empty(),
    })
}

/// A regex of the shape `^C{min,max}$` (multi-line, `\r\n`-aware: the generic rules' value
/// test `^[^\x00-\x20]{8,}$`), where the class `C` holds neither `\r` nor `\n`: it matches a
/// haystack when one of its lines (split at every `\r` and `\n`) is all `C` bytes, of a length
/// within the bounds.
///
/// Why: the detector rules test every value they judge with their regex, and a DFA walking a
/// 350-byte token was 7% of `calendly-token-named`'s scan; this is a line-break search and a
/// table test per byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LineRun {
    class: Bytes,
    min: usize,
    max: usize,
}

impl LineRun {
    /// Whether the regex matches somewhere in `hay`.
    pub(crate) fn is_match(&self, hay: &[u8]) -> bool {
        hay.split(|&b| matches!(b, b'\r' | b'\n')).any(|line| {
            (self.min..=self.max).contains(&line.len()) && line.iter().all(|&b| self.class.has(b))
        })
    }
}

/// The [`LineRun`] of `pattern`, or `None` for another shape.
pub(crate) fn line_run(pattern: &str) -> Option<LineRun> {
    let hir = parse(pattern)?;
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let [start, run, end] = &parts[..] else {
        return None;
    };
    let (HirKind::Look(Look::StartCRLF), HirKind::Look(Look::EndCRLF)) = (start.kind(), end.kind())
    else {
        return None;
    };
    let HirKind::Repetition(r) = run.kind() else {
        return None;
    };
    let HirKind::Class(c) = r.sub.kind() else {
        return None;
    };
    let class = class(c)?;
    // An empty line would match a zero-length repetition between `\r` and `\n`, where `^`
    // does not (`\r\n` is one line break).
    (r.min >= 1 && !class.has(b'\r') && !class.has(b'\n')).then(|| LineRun {
        class,
        min: r.min as usize,
        max: r.max.map_or(usize::MAX, |m| m as usize),
    })
}

/// The value assigned in the match `m` of an `assignment = true` rule, as offsets into `m`.
///
/// Why not capture groups: a generic `NAME = value` regex has no fixed place for its secret, so
/// the regex crate would re-run every match through its backtracker, and a dense `.env` file
/// matches on nearly every line (that was half the scan time). The operator is the first `=`,
/// `:` or `?=` in the match (a name cannot contain them), taken whole when it is `:=`, `=>` or
/// `?=`; blanks after it are skipped. A quoted value runs to its closing quote; an unquoted one
/// up to the first blank, quote, `,`, `;` or `#`. `None` when there is no operator or no value.
pub(crate) fn assigned_value(m: &[u8]) -> Option<(usize, usize)> {
    let op = m.iter().position(|&b| matches!(b, b'=' | b':' | b'?'))?;
    let mut i = op + 1;
    match (m[op], m.get(i)) {
        (b':', Some(b'=')) | (b'=', Some(b'>')) | (b'?', Some(b'=')) => i += 1,
        (b'?', _) => return None,
        _ => {}
    }
    while matches!(m.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let (start, len) = match *m.get(i)? {
        q @ (b'"' | b'\'' | b'`') => (i + 1, m.get(i + 1..)?.iter().position(|&b| b == q)?),
        _ => {
            let rest = &m[i..];
            let len = rest
                .iter()
                .position(|&b| {
                    matches!(
                        b,
                        b' ' | b'\t'
                            | b'\n'
                            | b'\r'
                            | 0x0b
                            | 0x0c
                            | b'"'
                            | b'\''
                            | b'`'
                            | b','
                            | b';'
                            | b'#'
                    )
                })
                .unwrap_or(rest.len());
            (i, len)
        }
    };
    (len > 0).then_some((start, start + len))
}

/// Where every match of a rule starts, relative to a keyword hit, when the regex's shape fixes it.
/// Then the regex can be run anchored at each hit instead of searching the hit's whole line: no
/// scan from the line start, and no reverse scan to find where the match began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the keyword (`lead: false`), or one byte before it when a leading boundary consumes one
    /// (`lead: true`; its only zero-width way through is a line start).
    Keyword { lead: bool },
    /// One byte before the assigned name holding the keyword (`[A-Za-z0-9_.-]` run), or at the
    /// name at a line start: the shape of the generic `NAME = value` rules.
    Name,
    /// This many bytes before the keyword: every match starts with a literal that holds a
    /// keyword that far in (`-----BEGIN OPENSSH PRIVATE KEY-----`, keyword `openssh private
    /// key`). Without it such a rule searched the hit's whole line plus its window.
    Before(usize),
}

/// `[A-Za-z0-9_.-]`: the bytes of an assigned name (`rules::assigned_after` agrees).
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn name_bytes() -> Bytes {
    let mut set = Bytes::default();
    for b in 0..=255u8 {
        if is_name_byte(b) {
            set.add(b);
        }
    }
    set
}

/// The longest literal of at least three bytes that every match of `pattern` holds (one on
/// the regex's every path: inside concatenations, capture groups and repetitions of at least
/// one), not counting one the match starts with (a keyword, found anyway). `None` when there
/// is none. Case-insensitive parts are classes, not literals, so they never count.
///
/// Why: an anchored attempt walks the regex's DFA from a keyword hit to where the match fails,
/// which for a JWT rule at every `eyJ` of a long token without `.` is the whole token; a
/// vectorized search for `.eyJ` in the same bytes says the same far sooner.
pub(crate) fn required_literal(pattern: &str) -> Option<Vec<u8>> {
    fn collect(h: &Hir, at_start: bool, out: &mut Vec<(Vec<u8>, bool)>) {
        match h.kind() {
            HirKind::Literal(l) => out.push((l.0.to_vec(), at_start)),
            HirKind::Capture(c) => collect(&c.sub, at_start, out),
            HirKind::Repetition(r) if r.min >= 1 => collect(&r.sub, at_start, out),
            HirKind::Concat(parts) => {
                let mut first = at_start;
                for p in parts {
                    collect(p, first, out);
                    first = first && p.properties().maximum_len() == Some(0);
                }
            }
            _ => {}
        }
    }
    let hir = parse(pattern)?;
    let mut found = Vec::new();
    collect(&hir, true, &mut found);
    found
        .into_iter()
        .filter(|(l, at_start)| !at_start && l.len() >= 3)
        .map(|(l, _)| l)
        .max_by_key(Vec::len)
}

/// The `Start` of `pattern` (compiled as in `rules::compile_regex`) for a rule with these
/// (lowercase) keywords, or `None` when its matches may start elsewhere.
pub(crate) fn start(pattern: &str, keywords: &[String], assignment: bool) -> Option<Start> {
    let hir = parse(pattern)?;
    let parts: &[Hir] = match hir.kind() {
        HirKind::Concat(parts) => parts,
        _ => std::slice::from_ref(&hir),
    };
    if assignment {
        return name_shape(parts).then_some(Start::Name);
    }
    // Either every match starts with a keyword, or after a leading boundary of one byte.
    if keyword_first(parts, keywords) {
        return Some(Start::Keyword { lead: false });
    }
    match parts.split_first() {
        Some((first, rest))
            if !rest.is_empty() && line_start_boundary(first) && keyword_first(rest, keywords) =>
        {
            Some(Start::Keyword { lead: true })
        }
        _ => keyword_inside(parts, keywords).map(Start::Before),
    }
}

/// The one offset `n > 0` at which every match of `parts` holds one of `keywords` (ignoring
/// case), inside the literal every match starts with; `None` when there is none.
fn keyword_inside(parts: &[Hir], keywords: &[String]) -> Option<usize> {
    let hir = Hir::concat(parts.to_vec());
    if !hir.properties().look_set_prefix_any().is_empty() {
        return None;
    }
    let folded = fold_case(&hir)?;
    let seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_total(64)
        .limit_literal_len(64)
        .extract(&folded);
    let literals = seq.literals()?;
    let first = literals.first()?.as_bytes();
    let holds = |l: &[u8], n: usize| {
        let l = l.to_ascii_lowercase();
        keywords
            .iter()
            .any(|k| !k.is_empty() && l.get(n..).is_some_and(|t| t.starts_with(k.as_bytes())))
    };
    (1..first.len()).find(|&n| literals.iter().all(|l| holds(l.as_bytes(), n)))
}

/// Whether every match of `parts` in sequence starts with one of `keywords` (ignoring case).
fn keyword_first(parts: &[Hir], keywords: &[String]) -> bool {
    let hir = Hir::concat(parts.to_vec());
    if !hir.properties().look_set_prefix_any().is_empty() {
        return false;
    }
    // Keywords match ignoring case, so the prefixes are read from the regex with its letters
    // folded to lowercase: `(?i:together_api_key)` is one literal, where its 2^14 case variants
    // overflowed the extractor's limit and left the rule searching whole lines. No longer than
    // the longest keyword (shorter literals would fail the test below anyway).
    let longest = keywords.iter().map(String::len).max().unwrap_or(0);
    let Some(folded) = fold_case(&hir) else {
        return false;
    };
    let seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_total(1 << 14)
        .limit_literal_len(longest.max(1))
        .extract(&folded);
    seq.literals().is_some_and(|literals| {
        !literals.is_empty()
            && literals.iter().all(|l| {
                let l = l.as_bytes().to_ascii_lowercase();
                keywords
                    .iter()
                    .any(|k| !k.is_empty() && l.starts_with(k.as_bytes()))
            })
    })
}

/// `h` with every ASCII letter it can match lowercased: the lowercase form of any match of `h`
/// is a match of the result, so a prefix every match of the result starts with is, ignoring
/// case, one every match of `h` starts with. `None` for a class beyond ASCII.
fn fold_case(h: &Hir) -> Option<Hir> {
    use regex_syntax::hir::{Capture, ClassBytes, ClassBytesRange, Repetition};
    Some(match h.kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Look(l) => Hir::look(*l),
        HirKind::Literal(l) => Hir::literal(l.0.to_ascii_lowercase()),
        HirKind::Class(c) => {
            let bytes = class(c)?;
            let mut ranges = Vec::new();
            for b in 0..=255u8 {
                if bytes.has(b) {
                    let l = b.to_ascii_lowercase();
                    ranges.push(ClassBytesRange::new(l, l));
                }
            }
            Hir::class(Class::Bytes(ClassBytes::new(ranges)))
        }
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            min: r.min,
            max: r.max,
            greedy: r.greedy,
            sub: Box::new(fold_case(&r.sub)?),
        }),
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(fold_case(&c.sub)?),
        }),
        HirKind::Concat(hs) => Hir::concat(hs.iter().map(fold_case).collect::<Option<_>>()?),
        HirKind::Alternation(hs) => {
            Hir::alternation(hs.iter().map(fold_case).collect::<Option<_>>()?)
        }
    })
}

fn parse(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .multi_line(true)
        .crlf(true)
        .build()
        .parse(pattern)
        .ok()
}

/// A boundary that consumes one byte, or nothing only at a line start.
fn line_start_boundary(h: &Hir) -> bool {
    let starts = LookSet::empty()
        .insert(Look::Start)
        .insert(Look::StartLF)
        .insert(Look::StartCRLF);
    boundary(h).is_some_and(|set| set != Bytes::default())
        && h.properties().look_set().subtract(starts).is_empty()
}

/// `BOUNDARY [NAME]*? KEYWORD ...` where BOUNDARY takes one non-name byte or a line start and
/// KEYWORD is made of name bytes: the match then starts right before the name holding the
/// keyword, wherever in the name the keyword is.
fn name_shape(parts: &[Hir]) -> bool {
    let name = name_bytes();
    let [lead, run, keyword, ..] = parts else {
        return false;
    };
    let lead_ok = line_start_boundary(lead) && boundary(lead).is_some_and(|b| b.disjoint(&name));
    let run_ok = match run.kind() {
        HirKind::Repetition(r) => r.min == 0 && all_bytes(&r.sub).is_some_and(|b| b.within(&name)),
        _ => false,
    };
    lead_ok
        && run_ok
        && keyword.properties().minimum_len().unwrap_or(0) > 0
        && all_bytes(keyword).is_some_and(|b| b.within(&name))
}

/// Every byte `h` can match, when it has no assertions.
fn all_bytes(h: &Hir) -> Option<Bytes> {
    let mut set = Bytes::default();
    match h.kind() {
        HirKind::Empty => {}
        HirKind::Look(_) => return None,
        HirKind::Literal(l) => l.0.iter().for_each(|&b| set.add(b)),
        HirKind::Class(c) => set = class(c)?,
        HirKind::Repetition(r) => set = all_bytes(&r.sub)?,
        HirKind::Capture(c) => set = all_bytes(&c.sub)?,
        HirKind::Alternation(hs) | HirKind::Concat(hs) => {
            for x in hs {
                set.union(&all_bytes(x)?);
            }
        }
    }
    Some(set)
}

/// The plan for `pattern` (compiled as in `rules::compile_regex`) when its secret is capture
/// group `group`, or `None` when the shape is not the one described in the module docs.
pub(crate) fn plan(pattern: &str, group: u32) -> Option<SpanPlan> {
    let hir = parse(pattern)?;
    let parts: &[Hir] = match hir.kind() {
        HirKind::Concat(parts) => parts,
        _ => std::slice::from_ref(&hir),
    };
    let at = parts
        .iter()
        .position(|p| matches!(p.kind(), HirKind::Capture(_)))?;
    let HirKind::Capture(cap) = parts[at].kind() else {
        return None;
    };
    if cap.index != group {
        return None;
    }
    let secret = &cap.sub;
    let props = secret.properties();
    if props.minimum_len().unwrap_or(0) == 0 {
        return None;
    }
    // A secret of one length is found from its end whatever precedes it.
    let fixed = props
        .maximum_len()
        .filter(|&max| Some(max) == props.minimum_len());
    // ... and from its start whatever follows it, when everything before it has one length.
    let before = Hir::concat(parts[..at].to_vec());
    let before_len = before
        .properties()
        .maximum_len()
        .filter(|&max| Some(max) == before.properties().minimum_len());
    if let (Some(len), Some(offset)) = (fixed, before_len)
        && before.properties().look_set().is_empty()
    {
        return Some(SpanPlan {
            trail: Bytes::default(),
            start: StartBy::Exact { offset, len },
        });
    }
    if let Some(start) = between(&parts[..at], secret, &parts[at + 1..]) {
        return Some(SpanPlan {
            trail: Bytes::default(),
            start,
        });
    }
    if parts.len() - at > 2 {
        return None;
    }
    let trail = match parts.get(at + 1) {
        None => Bytes::default(),
        Some(p) => boundary(p)?,
    };
    let (first, last) = (edge(secret, true)?, edge(secret, false)?);
    if !trail.disjoint(&last) {
        return None;
    }
    let prefix = &parts[..at];
    let start = if let Some(len) = fixed {
        StartBy::Fixed(len)
    } else if let Some(lead) = match prefix {
        [] => Some(Bytes::default()),
        [one] => boundary(one).filter(|lead| lead.disjoint(&first)),
        _ => None,
    } {
        StartBy::Lead(lead)
    } else {
        let prefix = Hir::concat(prefix.to_vec());
        let props = prefix.properties();
        let run = all_bytes(secret)?;
        if let Some(len) = props
            .maximum_len()
            .filter(|&max| Some(max) == props.minimum_len())
        {
            StartBy::Offset(len)
        } else if edge(&prefix, false)?.disjoint(&run) {
            StartBy::Back(run)
        } else if all_bytes(&prefix).is_some_and(|b| b.disjoint(&first)) {
            StartBy::Ahead(first)
        } else if let Some((body, pad)) = padded(secret)
            && edge(&prefix, false)?.disjoint(&body)
        {
            StartBy::Padded { body, pad }
        } else if let Some((head, body)) = split(secret)
            && byte_before(&parts[..at])?.disjoint(&head)
        {
            StartBy::Split { head, body }
        } else {
            return None;
        }
    };
    Some(SpanPlan { trail, start })
}

/// A secret of the shape BODY PAD (`[A-Za-z0-9+/]{86}={0,2}`): the bytes of each, when the
/// body cannot be empty and shares no byte with the pad.
fn padded(secret: &Hir) -> Option<(Bytes, Bytes)> {
    let HirKind::Concat(parts) = secret.kind() else {
        return None;
    };
    let (pad, body) = parts.split_last()?;
    let body = Hir::concat(body.to_vec());
    if body.properties().minimum_len().unwrap_or(0) == 0 {
        return None;
    }
    let (body, pad) = (all_bytes(&body)?, all_bytes(pad)?);
    body.disjoint(&pad).then_some((body, pad))
}

/// [`StartBy::Between`] for a secret between `before` and `after` (the regex's parts), when
/// `before` ends with `LIT RUN THEN` and `after` starts with a literal whose first byte the
/// secret never holds.
fn between(before: &[Hir], secret: &Hir, after: &[Hir]) -> Option<StartBy> {
    let stop = match after.first()?.kind() {
        HirKind::Literal(l) => *l.0.first()?,
        _ => return None,
    };
    let [scheme @ .., lit, run, then] = before else {
        return None;
    };
    let (HirKind::Literal(lit), HirKind::Literal(then)) = (lit.kind(), then.kind()) else {
        return None;
    };
    let (lit, &[then]) = (&lit.0[..], &then.0[..]) else {
        return None;
    };
    // The first `lit` of a match is this one: nothing before it holds `lit`'s later bytes,
    // and its second byte differs from its first (so it cannot start a byte early).
    let scheme = all_bytes(&Hir::concat(scheme.to_vec()))?;
    let ok = lit.len() >= 2
        && lit[1] != lit[0]
        && lit[1..].iter().all(|&b| !scheme.has(b))
        && !all_bytes(run)?.has(then)
        && !all_bytes(secret)?.has(stop);
    ok.then(|| StartBy::Between {
        lit: lit.to_vec(),
        then,
        stop,
    })
}

/// A secret HEAD SEP BODY for [`StartBy::Split`]: the bytes of HEAD and BODY.
fn split(secret: &Hir) -> Option<(Bytes, Bytes)> {
    let HirKind::Concat(parts) = secret.kind() else {
        return None;
    };
    let [head, sep, body] = &parts[..] else {
        return None;
    };
    if head.properties().minimum_len().unwrap_or(0) == 0 {
        return None;
    }
    let (head, body) = (all_bytes(head)?, all_bytes(body)?);
    let seps: Vec<&[u8]> = match sep.kind() {
        HirKind::Alternation(alts) => alts
            .iter()
            .map(|a| match a.kind() {
                HirKind::Literal(l) => Some(&l.0[..]),
                _ => None,
            })
            .collect::<Option<_>>()?,
        HirKind::Literal(l) => vec![&l.0[..]],
        _ => return None,
    };
    let ok = seps.iter().all(|s| {
        s.split_first().is_some_and(|(&first, rest)| {
            !body.has(first) && !head.has(first) && rest.iter().all(|&b| body.has(b))
        })
    });
    ok.then_some((head, body))
}

/// The bytes that can come right before the part of a match after `parts` (within the
/// match), where a line-start boundary that matched nothing means a line break came before.
fn byte_before(parts: &[Hir]) -> Option<Bytes> {
    let starts = LookSet::empty()
        .insert(Look::Start)
        .insert(Look::StartLF)
        .insert(Look::StartCRLF);
    let mut set = Bytes::default();
    for p in parts.iter().rev() {
        if let HirKind::Alternation(alts) = p.kind()
            && alts.iter().all(|a| {
                matches!(a.kind(), HirKind::Look(l) if starts.contains(*l))
                    || boundary(a).is_some_and(|b| b != Bytes::default())
            })
        {
            for a in alts {
                set.union(&boundary(a)?);
            }
            set.add(b'\n');
            set.add(b'\r');
            return Some(set);
        }
        set.union(&edge(p, false)?);
        if p.properties().minimum_len().unwrap_or(0) > 0 {
            return Some(set);
        }
    }
    Some(set)
}

/// The bytes a boundary consumes when every way through it is an assertion or one byte.
fn boundary(h: &Hir) -> Option<Bytes> {
    match h.kind() {
        HirKind::Look(_) | HirKind::Empty => Some(Bytes::default()),
        HirKind::Class(c) => class(c),
        HirKind::Literal(l) if l.0.len() == 1 => {
            let mut set = Bytes::default();
            set.add(l.0[0]);
            Some(set)
        }
        HirKind::Alternation(alts) => {
            let mut set = Bytes::default();
            for a in alts {
                set.union(&boundary(a)?);
            }
            Some(set)
        }
        _ => None,
    }
}

fn class(c: &Class) -> Option<Bytes> {
    let mut set = Bytes::default();
    match c {
        Class::Bytes(c) => {
            for r in c.iter() {
                for b in r.start()..=r.end() {
                    set.add(b);
                }
            }
        }
        Class::Unicode(c) => {
            for r in c.iter() {
                let (s, e) = (u32::from(r.start()), u32::from(r.end()));
                if e > 0x7F {
                    return None;
                }
                for b in s..=e {
                    set.add(b as u8);
                }
            }
        }
    }
    Some(set)
}

/// A superset of the bytes `h` can start (`first`) or end with, for a non-empty match of `h`.
fn edge(h: &Hir, first: bool) -> Option<Bytes> {
    let mut set = Bytes::default();
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => {
            let b = if first { l.0.first() } else { l.0.last() };
            set.add(*b?);
        }
        HirKind::Class(c) => set = class(c)?,
        HirKind::Repetition(r) => set = edge(&r.sub, first)?,
        HirKind::Capture(c) => set = edge(&c.sub, first)?,
        HirKind::Alternation(alts) => {
            for a in alts {
                set.union(&edge(a, first)?);
            }
        }
        HirKind::Concat(parts) => {
            let mut walk: Box<dyn Iterator<Item = &Hir>> = if first {
                Box::new(parts.iter())
            } else {
                Box::new(parts.iter().rev())
            };
            // Parts that can match nothing let the next one provide the edge byte too.
            for p in walk.by_ref() {
                set.union(&edge(p, first)?);
                if p.properties().minimum_len().unwrap_or(0) > 0 {
                    break;
                }
            }
        }
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(pattern: &str, text: &str) -> Option<String> {
        let p = plan(pattern, 1)?;
        let re = crate::redact::rules::compile_regex(pattern).unwrap();
        let m = re.find(text.as_bytes()).unwrap();
        let (s, e) = p.cut(m.as_bytes());
        let c = re.captures(text.as_bytes()).unwrap();
        let want = c.get(1).unwrap();
        assert_eq!((m.start() + s, m.start() + e), (want.start(), want.end()));
        Some(text[m.start() + s..m.start() + e].to_string())
    }

    #[test]
    fn boundaries_are_cut_off() {
        let gh = r"(?:^|[^A-Za-z0-9_])(ghp_[0-9A-Za-z]{4})(?:[^A-Za-z0-9_]|$)";
        assert_eq!(cut(gh, "x=ghp_abcd;").as_deref(), Some("ghp_abcd"));
        assert_eq!(cut(gh, "ghp_abcd").as_deref(), Some("ghp_abcd"));
        assert_eq!(cut(gh, "ghp_abcd\n").as_deref(), Some("ghp_abcd"));
        let pem = r"(?s)(-----BEGIN KEY-----.{4,}?-----END KEY-----)";
        assert_eq!(
            cut(pem, "a\n-----BEGIN KEY-----\nabcd\n-----END KEY-----\n").as_deref(),
            Some("-----BEGIN KEY-----\nabcd\n-----END KEY-----")
        );
        let fixed = r"(?i:key)[^\n]{0,9}?(?:^|[^0-9a-f])([0-9a-f]{4})(?:[^0-9a-f]|$)";
        assert_eq!(cut(fixed, "KEY = 'abcd'").as_deref(), Some("abcd"));
        assert_eq!(cut(fixed, "key:beef").as_deref(), Some("beef"));
        let tail = r"(glpat-[0-9A-Za-z_\-]{4,})(?:[^A-Za-z0-9_\-]|$)";
        assert_eq!(
            cut(tail, "t: glpat-abcdef\n").as_deref(),
            Some("glpat-abcdef")
        );
    }

    #[test]
    fn other_shapes_keep_capture_groups() {
        // The secret may end with a byte the trailing boundary also takes.
        assert_eq!(plan(r"(a[a-z;]+)(?:;|$)", 1), None);
        // Something other than a one-byte boundary before the group, which may end with a byte
        // the secret can hold.
        assert_eq!(plan(r"ke?y[=a](\w+)", 1), None);
        // ... unless it has one length: the secret starts that far into the match.
        assert_eq!(cut(r"key[=a](\w+)", "xkeyaabc").as_deref(), Some("abc"));
        assert_eq!(
            cut(
                r"(?i:tok_key=eyJ)([a-z]{4,9})(?:[^a-z]|$)",
                "TOK_KEY=eyJabcdef;"
            )
            .as_deref(),
            Some("abcdef")
        );
        assert!(plan(r"key=(\w+)", 1).is_some_and(|p| !p.starts_at_lead()));
        assert!(plan(r"(?i:twilio)[^\n]{0,60}?(SK[0-9a-f]{32})", 1).is_some());
        assert_eq!(plan(r"(?i:twilio)[^\n]{0,60}?(SK[0-9a-f]{32,40})", 1), None);
        let dd = r#"(?i)dd_api_key[ \t]{0,5}(?:=|:)[ \t]{0,5}["']?([0-9a-f]{32}|[0-9a-f]{40})(?:[^A-Za-z0-9]|$)"#;
        assert_eq!(
            cut(dd, "DD_API_KEY = '0123456789abcdef0123456789abcdef'").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            cut(dd, "dd_api_key:0123456789abcdef0123456789abcdef").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        // A body then padding, after a prefix that may end in a pad byte (`=`).
        let padded = r"(?i:kraken)[^\n]{0,20}?[ =:]([A-Za-z0-9+/]{4,6}={0,2})(?:[^A-Za-z0-9+/=]|$)";
        assert_eq!(cut(padded, "KRAKEN_KEY=ab+/==;").as_deref(), Some("ab+/=="));
        assert_eq!(cut(padded, "kraken key abc9Z").as_deref(), Some("abc9Z"));
        assert_eq!(cut(padded, "kraken=x=abcd=\n").as_deref(), Some("abcd="));
        // ... not when the body can be empty.
        assert_eq!(plan(r"x[=:]([a-z]*=?)(?:;|$)", 1), None);
        // A secret of one length after a prefix of one length, whatever follows.
        let exact = r"https://([0-9a-f]{4})(?::[0-9a-f]{4})?@[a-z.]*sentry\.io/[0-9]+";
        assert_eq!(
            cut(exact, "dsn https://beef:cafe@o.sentry.io/42").as_deref(),
            Some("beef")
        );
        // The secret is another group, or inside an alternation.
        assert_eq!(plan(r"(a)(b)", 2), None);
        assert_eq!(plan(r#"(?:"(\w+)"|'(\w+)')"#, 1), None);
        // A secret that can be empty.
        assert_eq!(plan(r"(?:^|,)([a-z]*)(?:,|$)", 1), None);
        assert!(plan(r"(?:^|[^0-9])([0-9]{8,10}:AA[0-9A-Za-z_\-]{33})", 1).is_some());
    }

    /// The URL-credential and HEAD SEP BODY plans against capture groups, on hand cases and on
    /// random splices of their pieces (every match of each).
    #[test]
    fn between_and_split_plans_agree_with_capture_groups() {
        let url = r#"(?i)(?:https?|ftps?|git|jdbc:[a-z0-9]+)://[^\s:@/"'<>]+:([^\s@/"'<>]{3,})@[A-Za-z0-9][A-Za-z0-9.\-]*"#;
        assert!(matches!(
            plan(url, 1).unwrap().start,
            StartBy::Between { .. }
        ));
        assert_eq!(
            cut(url, "git+https://deploy:Zq9x:W2v@git.example.org/x").as_deref(),
            Some("Zq9x:W2v")
        );
        assert_eq!(
            cut(url, "jdbc:mysql://app:pw:d@db").as_deref(),
            Some("pw:d")
        );
        let pair = r"(?i:facebook|fb_)[^\n]{0,60}?(?:^|[^0-9])([0-9]{15,16}(?:\||%7C)[0-9a-zA-Z_\-]{27,40})(?:[^A-Za-z0-9_\-]|$)";
        assert!(matches!(
            plan(pair, 1).unwrap().start,
            StartBy::Split { .. }
        ));
        let (id, sec) = ("1234567890123456", "AbCdEfGhIjKlMnOpQrStUvWxYz0");
        for text in [
            format!("fb_token: {id}|{sec}"),
            format!("facebook {id}%7C{sec}\n"),
            format!("FB_x=9;{id}%7C{sec}7C"),
            format!("fb_\r{id}|{sec};"),
        ] {
            if let Some(got) = cut(pair, &text) {
                assert!(got.contains(sec) && got.starts_with(id), "{got}");
            }
        }
        // Not when a scheme may hold the literal's later bytes, or the secret the stop byte,
        // or a separator a body byte first, or the byte before the head a head byte.
        assert_eq!(plan(r"(?:a/|b)://[a-z]+:([a-z@]{3,})@[a-z]+", 1), None);
        assert_eq!(
            plan(r"(?:a|b)://[a-z]+:([a-z]{3,})@[a-z]+", 1)
                .map(|p| matches!(p.start, StartBy::Between { .. })),
            Some(true)
        );
        assert_eq!(plan(r"(?:a|b)://[a-z:]+:([a-z]{3,})@[a-z]+", 1), None);
        assert_eq!(
            plan(
                r"k[^\n]{0,9}?(?:^|[^0-9])([0-9]{4}(?:\||a7C)[0-9a-z]{4})(?:[^0-9a-z]|$)",
                1
            ),
            None
        );
        assert_eq!(
            plan(
                r"k[^\n]{0,9}?([0-9]{4}(?:\||%7C)[0-9a-z]{4})(?:[^0-9a-z]|$)",
                1
            ),
            None
        );

        use crate::redact::rules::compile_regex;
        use crate::redact::samples::Rng;
        // Random texts in each rule's shape, with every slot sometimes wrong or doubled.
        let mut rng = Rng::new(41);
        let mut pick =
            |options: &[&str]| options[rng.below(options.len() as u64) as usize].to_string();
        let mut texts = Vec::new();
        for _ in 0..10000 {
            let mut t = String::new();
            for slot in [
                &["", "x ", "url=", "@:", "://"][..],
                &[
                    "https",
                    "HTTPS",
                    "ftp",
                    "git",
                    "jdbc:mysql",
                    "jdbc:",
                    "sftp",
                    "jdbc:pg:",
                ],
                &["://", "://", ":/", ":///", "://://"],
                &["deploy", "u", "a:b", "u@", "", "u/x"],
                &[":", ":", "::", ""],
                &["Zq9xW2", "pw", "p:w:d", "p@ss", "Zq9/x", "::x", "abc:"],
                &["@", "@", "@@", "", ":@"],
                &["git.example.org", "h", "-h", ".x", "h:1/p", ""],
                &["", "/x", " y", "@z", "\n"],
            ] {
                t.push_str(&pick(slot));
            }
            texts.push(t);
            let mut t = String::new();
            for slot in [
                &["fb_", "facebook", "FB_", "x"][..],
                &["", "token: ", "=9", " a|b ", "\r"],
                &["", ";", "9", "\r", "\n", "x", "_"],
                &[
                    "123456789012345",
                    "1234567890123456",
                    "12345678901234567",
                    "12345678901234",
                ],
                &["|", "%7C", "%7", "|%7C", "%7c", "||"],
                &[
                    "AbCdEfGhIjKlMnOpQrStUvWxYz0",
                    "AbCdEfGhIjKlMnOpQrStUvWx",
                    "AbCdEfGhIjKlMnOpQrStUvWxYz0-AbCdEfGhIjKlM",
                    "Ab7CdEfGhIjKlMnOpQrStUvWxYz0_12",
                ],
                &["", ";", "7C", "\n", "_x", "|1"],
            ] {
                t.push_str(&pick(slot));
            }
            texts.push(t);
        }
        let mut checked = 0;
        for pattern in [url, pair] {
            let p = plan(pattern, 1).unwrap();
            let re = compile_regex(pattern).unwrap();
            for text in &texts {
                for caps in re.captures_iter(text.as_bytes()) {
                    let (m, g) = (caps.get(0).unwrap(), caps.get(1).unwrap());
                    let (s, e) = p.cut(m.as_bytes());
                    assert_eq!(
                        (m.start() + s, m.start() + e),
                        (g.start(), g.end()),
                        "{pattern} on {text:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn where_matches_start() {
        let kw = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let gh = kw(&["ghp_"]);
        assert_eq!(
            start(r"(?:^|[^A-Za-z0-9_])(ghp_[0-9A-Za-z]{36})", &gh, false),
            Some(Start::Keyword { lead: true })
        );
        assert_eq!(
            start(r"(ghp_[0-9A-Za-z]{36})(?:[^A-Za-z0-9]|$)", &gh, false),
            Some(Start::Keyword { lead: false })
        );
        assert_eq!(
            start(
                r"(?i)(?:GHP_|gho_)[0-9a-z]{4}",
                &kw(&["ghp_", "gho_"]),
                false
            ),
            Some(Start::Keyword { lead: false })
        );
        // The match may start before the keyword, or somewhere the keyword list does not say.
        assert_eq!(start(r"[a-z]*ghp_x", &gh, false), None);
        assert_eq!(start(r"(?:^|\s)(\w+@ghp_\w+)", &gh, false), None);
        assert_eq!(start(r"(?:token=)?ghp_x", &gh, false), None);
        assert_eq!(start(r"gh_x|ghp_x", &gh, false), None);
        // Case-insensitive names with more case variants than the literal extractor lists.
        let long = kw(&["together_api_key", "togetherai"]);
        assert_eq!(
            start(
                r"(?i:together_api_key|togetherai)[^\n]{0,60}?=([a-f0-9]{64})",
                &long,
                false
            ),
            Some(Start::Keyword { lead: false })
        );
        assert_eq!(
            start(
                r"(?i:together_api_key|togetherai)",
                &kw(&["together"]),
                false
            ),
            Some(Start::Keyword { lead: false })
        );
        assert_eq!(start(r"(?i:together_ap[a-z]_key)", &long, false), None);
        // A zero-width lead other than a line start.
        assert_eq!(start(r"\bghp_x", &gh, false), None);
        assert_eq!(start(r"(?:\b|[^a-z])ghp_x", &gh, false), None);
        // A keyword a fixed number of bytes into the literal every match starts with.
        let pem = r"(-----BEGIN OPENSSH PRIVATE KEY-----(?:[^-]|-{1,4}[^-]){16,}?-----END)";
        assert_eq!(
            start(pem, &kw(&["openssh private key"]), false),
            Some(Start::Before(11))
        );
        // Not at one offset in every match, or not in the literal the match starts with.
        assert_eq!(start(r"(?:ab|abc)ghp_x", &gh, false), None);
        assert_eq!(
            start(
                r"-----BEGIN[A-Z ]{0,30} PRIVATE KEY",
                &kw(&["private key"]),
                false
            ),
            None
        );
        assert_eq!(start(r"ab[0-9]ghp_x", &gh, false), Some(Start::Before(3)));
        let generic = r#"(?i)(?:^|[\s{,;(\[$@"'])[\w.\-]*?(?i:secret|token)(?:[_.\-][\w.\-]*?)?[ \t]{0,5}(?:=|:)[ \t]{0,5}([^\s"']{11,})"#;
        let words = kw(&["secret", "token"]);
        assert_eq!(start(generic, &words, true), Some(Start::Name));
        assert_eq!(
            start(r"(?i)password\s*=\s*(\S+)", &kw(&["password"]), true),
            None
        );
        assert_eq!(
            start(r"(?:^|[\s=])[\w.\-]*?token=(\S+)", &words, true),
            None
        );
    }

    fn value(m: &str) -> Option<&str> {
        assigned_value(m.as_bytes()).map(|(s, e)| &m[s..e])
    }

    #[test]
    fn assigned_values() {
        assert_eq!(value(" db_password = \"hunter2!x\""), Some("hunter2!x"));
        assert_eq!(value("\nAPI_TOKEN='a b c'"), Some("a b c"));
        assert_eq!(value("token: `abc`"), Some("abc"));
        assert_eq!(value(" SECRET=abc123 # rotate"), Some("abc123"));
        assert_eq!(value(" secret=abc,def"), Some("abc"));
        assert_eq!(value("pwd := s3cr3t;"), Some("s3cr3t"));
        assert_eq!(value("pwd => s3cr3t"), Some("s3cr3t"));
        assert_eq!(value("pwd=>s3cr3t"), Some("s3cr3t"));
        assert_eq!(value("pwd ?= s3cr3t"), Some("s3cr3t"));
        assert_eq!(value("pwd:s3=cr:3t"), Some("s3=cr:3t"));
        assert_eq!(value("password = "), None);
        assert_eq!(value("password = \"unterminated"), None);
        assert_eq!(value("password ? x"), None);
        assert_eq!(value("password"), None);
    }

    /// On every sample, the assigned value is exactly what the rule's capture groups hold.
    #[test]
    fn assigned_values_agree_with_capture_groups() {
        use crate::redact::rules::compile_regex;
        // The shipped generic rules now use the `detector` parser; these are the assignment
        // regexes they had (and admins' rules may still have).
        const ASSIGNMENT_REGEXES: &[&str] = &[
            r#"(?i)(?:^|[\s{,;(\[$@"\'\x60])[\w.\-]*?(?i:password|passwd|passphrase|pwd)(?:[_.\-][\w.\-]*?)?["\'\x60]?[ \t]{0,5}(?:=|:=|:|=>|\?=)[ \t]{0,5}(?:"([^"\s\\][^"\n\\]{2,}?[^"\s\\])"|\'([^\'\s\\][^\'\n\\]{2,}?[^\'\s\\])\'|\x60([^\x60\s][^\x60\n]{2,}?[^\x60\s])\x60)"#,
            r#"(?i)(?:^|[\s{,;(\[$@"\'\x60])[\w.\-]*?(?i:password|passwd|passphrase|pwd)(?:[_.\-][\w.\-]*?)?["\'\x60]?[ \t]{0,5}(?:=|:=|:|=>|\?=)[ \t]{0,5}([^\s"\'\x60,;#&|][^\s"\'\x60,;#]{3,})(?:[ \t]*(?:#.*)?$|[ \t]*[,;])"#,
            r#"(?i)(?:^|[\s{,;(\[$@"\'\x60])[\w.\-]*?(?i:secret|token|api[_\-]?key|access[_\-]?key|auth[_\-]?key|private[_\-]?key|credentials?|signing[_\-]?key|encryption[_\-]?key|session[_\-]?key)(?:[_.\-][\w.\-]*?)?["\'\x60]?[ \t]{0,5}(?:=|:=|:|=>|\?=)[ \t]{0,5}(?:"([^"\s\\][^"\n\\]{10,}?[^"\s\\])"|\'([^\'\s\\][^\'\n\\]{10,}?[^\'\s\\])\'|\x60([^\x60\s][^\x60\n]{10,}?[^\x60\s])\x60)"#,
            r#"(?i)(?:^|[\s{,;(\[$@"\'\x60])[\w.\-]*?(?i:secret|token|api[_\-]?key|access[_\-]?key|auth[_\-]?key|private[_\-]?key|credentials?|signing[_\-]?key|encryption[_\-]?key|session[_\-]?key)(?:[_.\-][\w.\-]*?)?["\'\x60]?[ \t]{0,5}(?:=|:=|:|=>|\?=)[ \t]{0,5}([^\s"\'\x60,;#&|][^\s"\'\x60,;#]{11,})(?:[ \t]*(?:#.*)?$|[ \t]*[,;])"#,
        ];
        let mut rules = 0;
        let mut checked = 0;
        {
            for (k, pattern) in ASSIGNMENT_REGEXES.iter().enumerate() {
                rules += 1;
                let re = compile_regex(pattern).unwrap();
                for seed in 1..=40 {
                    for c in crate::redact::samples::cases(seed) {
                        for text in [c.positive.as_str(), c.negative] {
                            for caps in re.captures_iter(text.as_bytes()) {
                                let m = caps.get(0).unwrap();
                                let g = (1..caps.len()).find_map(|g| caps.get(g)).unwrap();
                                let (s, e) = assigned_value(m.as_bytes()).unwrap();
                                assert_eq!(
                                    (m.start() + s, m.start() + e),
                                    (g.start(), g.end()),
                                    "regex {k} on {text:?}"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(
            rules >= 4 && checked > 1000,
            "{rules} rules, {checked} matches"
        );
    }

    #[test]
    fn required_literals() {
        let jwt = r"(?:^|[^A-Za-z0-9_\-])(eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})";
        assert_eq!(required_literal(jwt).as_deref(), Some(&b".eyJ"[..]));
        // Not one the match starts with, nor one on only some paths, nor one ignoring case.
        assert_eq!(required_literal(r"abcd[0-9]+"), None);
        assert_eq!(required_literal(r"a(?:xyz|[0-9])b"), None);
        assert_eq!(required_literal(r"a[0-9]*(?:-wxyz)*b"), None);
        assert_eq!(required_literal(r"(?i:key)[0-9]+(?i:=secret)"), None);
        assert_eq!(
            required_literal(r"(?i:key)[0-9]+(?:@host){1,2}").as_deref(),
            Some(&b"@host"[..])
        );
        // Every shipped rule's literal is in every positive sample its regex matches.
        use crate::redact::rules::{BUILTIN, compile_regex, parse};
        let mut with = 0;
        for (_, label, src) in BUILTIN {
            for r in &parse(label, src).unwrap().rules {
                let Some(lit) = required_literal(r.regex.get_ref()) else {
                    continue;
                };
                with += 1;
                let re = compile_regex(r.regex.get_ref()).unwrap();
                for seed in 1..=5 {
                    for c in crate::redact::samples::cases(seed) {
                        for m in re.find_iter(c.positive.as_bytes()) {
                            assert!(
                                memchr::memmem::find(m.as_bytes(), &lit).is_some(),
                                "{}",
                                r.id.get_ref()
                            );
                        }
                    }
                }
            }
        }
        assert!(with >= 10, "{with}");
    }

    /// What the rule's regex anchored at `hay`'s start finds as its secret, for comparison.
    fn anchored_secret(
        twin: &regex::bytes::Regex,
        group: usize,
        hay: &[u8],
    ) -> Option<(usize, usize)> {
        let caps = twin.captures(hay)?;
        caps.get(group).map(|g| (g.start(), g.end()))
    }

    fn twin(pattern: &str) -> regex::bytes::Regex {
        crate::redact::rules::compile_regex(&format!(r"\A(?:{pattern})")).unwrap()
    }

    /// Texts around a run shape's edges: the hay cut at every length near the run's bounds,
    /// and every kind of byte put right after it.
    fn run_variants(hay: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![hay.to_vec()];
        for cut in [
            1usize, 2, 3, 17, 18, 19, 20, 21, 40, 41, 42, 43, 44, 45, 46, 60, 99,
        ] {
            if let Some(h) = hay.get(..hay.len().saturating_sub(cut)) {
                out.push(h.to_vec());
                for tail in [
                    &b"\n"[..],
                    b"\r\n",
                    b"\r",
                    b" ",
                    b"x",
                    b"-",
                    b"_",
                    b"=",
                    b"\0",
                    b"\xff",
                    b"a\n",
                ] {
                    let mut v = h.to_vec();
                    v.extend_from_slice(tail);
                    out.push(v);
                }
            }
        }
        out
    }

    #[test]
    fn run_shapes_find_what_the_anchored_regex_finds() {
        let check = |pattern: &str, hay: &[u8]| {
            let shape = run_shape(pattern, 1).expect(pattern);
            let twin = twin(pattern);
            for v in run_variants(hay) {
                assert_eq!(
                    shape.find(&v),
                    anchored_secret(&twin, 1, &v),
                    "{pattern} on {:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        };
        let cal = r"(?i:tok_key=eyJ)([A-Za-z0-9_\-]{4,9})(?:[^A-Za-z0-9_\-]|$)";
        check(cal, b"TOK_key=eyJabcdef;");
        check(cal, b"tok_key=EYJab-de_fgh12345678\n");
        check(cal, b"tok_key=eyj");
        let gh = r"(ghp_[0-9A-Za-z]{4,6})(?:[^A-Za-z0-9_]|$)";
        check(gh, b"ghp_abcdef_");
        check(gh, b"ghp_abc\r\n");
        check(gh, b"GHP_abcd\n");
        // Unbounded, and a trail without the line end.
        check(r"(?i:key=)([a-z]{3,})[^a-z]", b"KEY=abcdefgh.");
        check(r"(?i:key=)([a-z]{3,})[^a-z]", b"key=abc");
        // Other shapes: a class that overlaps the trail, a variable prefix, looks that are not
        // line ends, more after the trail, a letter matched in one case only in a class.
        assert_eq!(run_shape(r"k=([a-z]{3,9})(?:[^0-9]|$)", 1), None);
        assert_eq!(run_shape(r"ke?y=([a-z]{3,9})(?:[^a-z]|$)", 1), None);
        assert_eq!(run_shape(r"k=([a-z]{3,9})(?:[^a-z]|\b)", 1), None);
        assert_eq!(run_shape(r"k=([a-z]{3,9})[^a-z]x", 1), None);
        assert_eq!(run_shape(r"k[kx]=([a-z]{3,9})[^a-z]", 1), None);
        check(r"[kx]=([a-z]{3,9})[^a-z]", b"x=abcd!");
        assert_eq!(run_shape(r"k=([a-z]{3,9})(?:[^a-z\n]|$)", 1), None);
        assert!(run_shape(r"(?i:k)=([a-z]{3,9})(?:[^a-z]|$)", 1).is_some());
        assert_eq!(
            run_shape(r"(?:\b|[^a-z])(k=[a-z]{3,9})(?:[^a-z]|$)", 1),
            None
        );
        assert_eq!(
            run_shape(r"(?:^|[^a-z]x)(k=[a-z]{3,9})(?:[^a-z]|$)", 1),
            None
        );
        // A lead, tried in the regex's order; the keyword may repeat the byte before it.
        let lead = r"(?:^|[^A-Za-z0-9_])(ab_[0-9a-z]{4,6})(?:[^A-Za-z0-9_]|$)";
        check(lead, b"=ab_abcdef\n");
        check(lead, b"aab_abcd;");
        check(lead, b"ab_ab_abcd;");
        check(lead, b"\nab_abcd");
        check(lead, b"-ab_abc");
        let lead = r"(?:[^A-Za-z0-9_]|^)(ab_[0-9a-z]{4,6})(?:[^A-Za-z0-9_]|$)";
        check(lead, b"=ab_abcdef\n");
        check(lead, b"ab_abcde");
        check(lead, b"(ab_abcdefg)");
        check(r"[^a-z](?i:k=)([a-z]{3,9})(?:[^a-z]|$)", b" K=abcd ");
        // A gap and a separator after the keyword: lazy (shortest gap first) or greedy, and
        // keywords as an alternation (with a common prefix the parser lifts out).
        let named = r#"(?i:tok_key|tok|tik)[^\n]{0,6}?[ ="':]([a-f0-9]{4,8})(?:[^A-Za-z0-9_\-]|$)"#;
        for hay in [
            &b"TOK_KEY = 'abcd1234'"[..],
            b"tok=abcdeg1234 x",
            b"tok_key: :abcd",
            b"tok: abc  1234abcd\n",
            b"tokx=zzzz=abcd;",
            b"tik:beef",
            b"tok\n=beef",
            b"tok_key=1234567890",
        ] {
            check(named, hay);
        }
        // A gap right before the secret, which starts with an alternation.
        let bare = r"(?i:tok)[^\n]{0,9}?((?:live|sandbox)_[a-f0-9=]{4,8})(?:[^a-z0-9_=]|$)";
        for hay in [
            &b"tok live_abcd"[..],
            b"TOK=sandbox_beef=;",
            b"tok live_x live_abcd",
            b"toklive_live_abcd",
            b"tok \nlive_abcd",
            b"tok live_abcdabcdabcd",
            b"tok=live_abc sandbox_abcde",
        ] {
            check(bare, hay);
        }
        let greedy = r"(?i:tok)[^\n]{0,6}[ =]([a-f0-9]{4,8})(?:[^a-z0-9]|$)";
        check(greedy, b"tok = abcd = beef0");
        check(greedy, b"tok = abcd = beef");
        check(greedy, b"tok=abcd");
        // Several runs, each ending where a fixed string starts.
        let pair =
            r"(?i:tw)[^\n]{0,9}?[ =:]([0-9]{3,5}-[A-Za-z0-9]{4,6}_[a-f]{2})(?:[^A-Za-z0-9_\-]|$)";
        for hay in [
            &b"tw: 1234-abcd_ef"[..],
            b"TW=123-abcdef_ab;",
            b"tw 12-abcd_ef 123-abcd_ef",
            b"tw=123456-abcd_ef",
            b"tw=123-abcdefg_ef",
            b"tw=123-abcd_efa",
            b"tw=123-abcd-ef",
            b"tw=123-abcd_ef-",
        ] {
            check(pair, hay);
        }
        // Not when a run may hold the next string's first byte.
        assert_eq!(run_shape(r"k=([0-9a-]{3,5}-[a-z]{4})(?:[^a-z]|$)", 1), None);
        assert_eq!(
            run_shape(r"k=([0-9A-Z]{3,5}(?i:x)[a-z]{4})(?:[^a-z]|$)", 1),
            None
        );
        // Two gap lengths that both lead to a match: the order decides which one.
        for hay in [&b"tok abcd beef"[..], b"tok:abcd:beef;"] {
            check(named, hay);
            check(greedy, hay);
            assert_ne!(
                run_shape(named, 1).unwrap().find(hay),
                run_shape(greedy, 1).unwrap().find(hay)
            );
        }

        // Every shipped rule with the shape, at every keyword hit of its samples (positives,
        // near misses, and both cut and extended around the run's end).
        use crate::redact::rules::{BUILTIN, parse};
        let mut shaped = 0;
        for (_, label, src) in BUILTIN {
            for r in &parse(label, src).unwrap().rules {
                let group = r.secret_group.unwrap_or(1);
                let Some(shape) = run_shape(r.regex.get_ref(), group as u32) else {
                    continue;
                };
                shaped += 1;
                let twin = twin(r.regex.get_ref());
                let keywords: Vec<String> =
                    r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
                for seed in 1..=3 {
                    for c in crate::redact::samples::cases(seed) {
                        for text in [c.positive.as_str(), c.negative] {
                            let lower = text.to_ascii_lowercase();
                            for k in &keywords {
                                for (i, _) in lower.match_indices(k.as_str()) {
                                    for v in run_variants(&text.as_bytes()[i..]) {
                                        assert_eq!(
                                            shape.find(&v),
                                            anchored_secret(&twin, group, &v),
                                            "{} on {:?}",
                                            r.id.get_ref(),
                                            String::from_utf8_lossy(&v)
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(shaped >= 250, "{shaped}");
    }

    #[test]
    fn line_runs_match_what_the_regex_matches() {
        use crate::redact::rules::compile_regex;
        let generic = r"^[^\x00-\x20]{8,}$";
        assert!(line_run(generic).is_some());
        assert!(line_run(r"^[a-z]{2,4}$").is_some());
        // Other shapes: not anchored at both ends, a class with line breaks, an empty run.
        assert_eq!(line_run(r"^[a-z]{2,4}"), None);
        assert_eq!(line_run(r"\A[a-z]{2,4}\z"), None);
        assert_eq!(line_run(r"^[^\x00]{2,4}$"), None);
        assert_eq!(line_run(r"^[a-z]*$"), None);
        assert_eq!(line_run(r"^[a-z]{2}x$"), None);
        let mut rng = crate::redact::samples::Rng::new(5);
        for pattern in [generic, r"^[a-z]{2,4}$", r"^[^\x00-\x1f]{4,}$"] {
            let re = compile_regex(pattern).unwrap();
            let run = line_run(pattern).unwrap();
            for alphabet in [&b"ab \r\n"[..], b"abcdefgh\n", b"ab\t\r", b"Zq9$\x1f\xff"] {
                for len in 0..40 {
                    for _ in 0..20 {
                        let hay: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
                        assert_eq!(
                            run.is_match(&hay),
                            re.is_match(&hay),
                            "{pattern} on {:?}",
                            String::from_utf8_lossy(&hay)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn shipped_rules_agree_with_capture_groups() {
        use crate::redact::rules::{BUILTIN, compile_regex, parse};
        let mut planned = 0;
        for (_, label, src) in BUILTIN {
            for r in &parse(label, src).unwrap().rules {
                let re = compile_regex(r.regex.get_ref()).unwrap();
                let group = r.secret_group.unwrap_or(1);
                let Some(p) = plan(r.regex.get_ref(), group as u32) else {
                    continue;
                };
                planned += 1;
                for seed in 1..=20 {
                    for c in crate::redact::samples::cases(seed) {
                        for text in [c.positive.as_str(), c.negative] {
                            for caps in re.captures_iter(text.as_bytes()) {
                                let (m, g) = (caps.get(0).unwrap(), caps.get(group).unwrap());
                                let (s, e) = p.cut(m.as_bytes());
                                assert_eq!(
                                    (m.start() + s, m.start() + e),
                                    (g.start(), g.end()),
                                    "{} on {text:?}",
                                    r.id.get_ref()
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(planned >= 60, "{planned}");
    }
}
