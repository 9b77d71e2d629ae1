//! Generic credentials and placeholders: the two judgements no single regex makes well.
//!
//! Why hand-written: a secret without a provider prefix is recognised by what surrounds it (a
//! name such as `DB_PASSWORD` or `X-Api-Token`) and by what it looks like (random, not a word,
//! a path or a variable). The surrounding syntax varies with the file type: `K=S`, `K: S`,
//! `"K": "S"`, `<K>S</K>`, `var K string = "S"`, `$K .= "S"`, `setProperty("K", "S")`,
//! `K ::= S`, `?k=S&`, `Password=S;`, `--token S`, `Authorization: Bearer S`, `apikey S`. One
//! regex per syntax made the generic rules slow and still missed most of them; this module parses
//! the text around each keyword hit instead (a few dozen byte comparisons), then scores the name
//! and the value. Rules opt in with `detector = "password"` or `detector = "secret"`.
//!
//! [`is_placeholder`] is applied to every candidate secret of every rule (except checksum-shaped
//! PII): documentation values (`ghp_xxxx…`, `sk_live_abcdef…`, `<your-token>`, `${TOKEN}`,
//! `changeme`) are not secrets, whichever rule matched them.

use serde::{Deserialize, Serialize};

/// Which kind of generic credential a `detector` rule finds.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Detector {
    /// Names of passwords (`password`, `passwd`, `pwd`, `passphrase`, `-p`): any literal that is
    /// not a placeholder, reference or keyword counts.
    Password,
    /// Names of tokens and keys (`secret`, `token`, `api_key`, `auth`, `credential`, `bearer`):
    /// the value must also look random.
    Secret,
}

const PASSWORD_WORDS: &[&str] = &[
    "community",
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "pass",
    "passwort",
    "pword",
    "pw",
    "dbpass",
    "dbpassword",
];

const SECRET_WORDS: &[&str] = &[
    "secret",
    "secrets",
    "token",
    "apikey",
    "apitoken",
    "accesstoken",
    "authtoken",
    "accesskey",
    "secretkey",
    "privatekey",
    "clientsecret",
    "credential",
    "credentials",
    "creds",
    "cred",
    "bearer",
    "auth",
    "authorization",
    "authkey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "sessionkey",
];

/// Words before `key` that make it a credential name (`api_key`, `X-Access-Key`).
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "access",
    "secret",
    "private",
    "auth",
    "signing",
    "encryption",
    "session",
    "master",
    "client",
    "app",
    "application",
    "consumer",
    "license",
    "licence",
    "webhook",
    "service",
    "account",
    "storage",
    "deploy",
    "admin",
    "shared",
    "sas",
    "hmac",
    "jwt",
    "crypto",
    "ssh",
    "root",
    "user",
    "developer",
    "dev",
    "prod",
    "live",
    "write",
    "read",
    "subscription",
    "primary",
    "secondary",
    "x",
    "sk",
    "pk",
];

/// Words before `key` that make it something other than a credential (`primary_key`).
const KEY_NOT_QUALIFIERS: &[&str] = &[
    "public",
    "pub",
    "primary",
    "foreign",
    "sort",
    "cache",
    "partition",
    "map",
    "hot",
    "idempotency",
    "unique",
    "composite",
    "row",
    "object",
    "dict",
    "hash",
    "lookup",
    "index",
    "group",
    "shard",
    "routing",
    "sequence",
    "natural",
    "surrogate",
    "schema",
    "registry",
    "translation",
    "i18n",
    "locale",
    "label",
    "column",
    "field",
    "react",
    "list",
    "item",
    "node",
    "entry",
    "tree",
    "join",
    "dedup",
    "dedupe",
    "namespace",
    "sorting",
    "range",
    "hash",
    "message",
    "msg",
    "event",
    "query",
    "state",
    "store",
    "redis",
    "cookie",
    "config",
    "setting",
    "settings",
    "env",
    "menu",
    "short",
    "hotkey",
    "keyboard",
    "press",
    "up",
    "down",
    "left",
    "right",
    "enter",
    "escape",
    "esc",
    "tab",
    "space",
    "shift",
    "ctrl",
    "alt",
    "meta",
    "name",
    "type",
    "value",
    "data",
    "file",
    "path",
    "id",
    "gpg",
    "pgp",
    "host",
    "known",
    "trusted",
    "next",
    "prev",
    "last",
    "first",
    "parent",
    "child",
    "old",
    "new",
    "default",
    "custom",
    "local",
    "global",
    "main",
    "base",
];

/// Last words of a name that say its value is not the credential (`token_type`, `password_url`).
const NOT_SECRET_SUFFIX: &[&str] = &[
    "name",
    "names",
    "type",
    "types",
    "file",
    "filename",
    "files",
    "path",
    "dir",
    "url",
    "uri",
    "urls",
    "endpoint",
    "id",
    "ids",
    "length",
    "len",
    "size",
    "count",
    "expires",
    "expiry",
    "expiration",
    "expire",
    "ttl",
    "timeout",
    "header",
    "headers",
    "prefix",
    "suffix",
    "field",
    "fields",
    "label",
    "format",
    "host",
    "user",
    "username",
    "hint",
    "policy",
    "version",
    "enabled",
    "enable",
    "disabled",
    "required",
    "mode",
    "manager",
    "provider",
    "class",
    "kind",
    "regex",
    "pattern",
    "rule",
    "rules",
    "env",
    "var",
    "variable",
    "param",
    "location",
    "method",
    "scope",
    "scopes",
    "min",
    "max",
    "limit",
    "lifetime",
    "duration",
    "age",
    "source",
    "ref",
    "arn",
    "input",
    "prompt",
    "placeholder",
    "validator",
    "validation",
    "error",
    "errors",
    "message",
    "msg",
    "text",
    "title",
    "description",
    "help",
    "generator",
    "parser",
    "handler",
    "strategy",
    "request",
    "response",
    "callback",
    "encoding",
    "algorithm",
    "alg",
    "cipher",
    "strength",
    "reset",
    "changed",
    "updated",
    "created",
    "at",
    "time",
    "date",
    "attempts",
    "retries",
    "store",
    "backend",
    "config",
    "settings",
    "options",
    "flag",
    "set",
    "exists",
    "valid",
    "check",
    "cache",
    "index",
    "bucket",
    "usage",
    "counter",
    "cost",
    "sha",
    "hash",
    "digest",
    "fingerprint",
    "tokenizer",
    "tokens",
    "lookup",
    "key_id",
];

/// Values that are types, literals or keywords, never secrets.
const NOT_VALUES: &[&str] = &[
    "true",
    "false",
    "null",
    "none",
    "nil",
    "undefined",
    "yes",
    "no",
    "on",
    "off",
    "string",
    "str",
    "&str",
    "int",
    "bool",
    "boolean",
    "required",
    "optional",
    "empty",
    "secret",
    "password",
    "passwd",
    "token",
    "redacted",
    "hidden",
    "masked",
    "n/a",
    "tbd",
    "todo",
    "unset",
    "default",
    "auto",
    "env",
    "disabled",
    "enabled",
    "char",
    "bytes",
    "object",
    "any",
    "value",
    "self",
    "this",
    "new",
    "return",
    "function",
    "func",
    "lambda",
    "await",
    "async",
    "const",
    "let",
    "var",
    "void",
    "secretstr",
    "secretstring",
    "securestring",
    "text",
];

/// Passwords that appear in documentation and tutorials (compared after dropping trailing
/// digits and punctuation, case-insensitively).
const DOC_PASSWORDS: &[&str] = &[
    "open_sesame",
    "opensesame",
    "open-sesame",
    "hunter",
    "letmein",
    "password",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "pa$$word",
    "pass",
    "secret",
    "s3cr3t",
    "s3cret",
    "changeit",
    "admin",
    "root",
    "toor",
    "test",
    "testing",
    "foobar",
    "foo",
    "bar",
    "baz",
    "qwerty",
    "mypassword",
    "mypass",
    "mysecret",
    "mytoken",
    "supersecret",
    "topsecret",
    "secretpassword",
    "guest",
    "default",
    "abc",
    "abcd",
    "pwd",
    "token",
    "apikey",
    "api_key",
    "secret_key",
    "secretkey",
    "my_secret",
    "my-secret",
    "my_token",
    "my-token",
    "your_password",
    "yourpassword",
    "user",
    "username",
    "demo",
    "welcome",
    "iloveyou",
    "monkey",
    "dragon",
    "trustno",
    "sesame",
    "public",
    "private",
];

/// Substrings that mark a documentation value.
const PLACEHOLDER_WORDS: &[&str] = &[
    "example",
    "sample",
    "dummy",
    "changeme",
    "change_me",
    "change-me",
    "placeholder",
    "your_",
    "your-",
    "yourkey",
    "yourtoken",
    "yoursecret",
    "yourpass",
    "_here",
    "-here",
    "xxxx",
    "****",
    "....",
    "${",
    "{{",
    "$(",
    "redacted",
    "replace_me",
    "replace-me",
    "replaceme",
    "insert_",
    "insert-",
    "lorem",
    "fake_",
    "fake-",
    "notreal",
    "not_real",
    "not-a-real",
];

// Names and values are compared with the lowercase word lists without lowercased copies: this
// runs at every keyword hit and on every candidate, where an allocation per word or value was a
// large part of the scan on files dense with names (and on source code, at every `token`).

/// `needle` (lowercase) occurs in `hay`, ignoring ASCII case.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `hay` starts with `prefix` (lowercase), ignoring ASCII case.
fn starts_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
}

/// `hay` ends with `suffix` (lowercase), ignoring ASCII case.
fn ends_ci(hay: &[u8], suffix: &[u8]) -> bool {
    hay.len() >= suffix.len() && hay[hay.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Whether one of [`PLACEHOLDER_WORDS`] occurs in `s`, ignoring ASCII case.
///
/// Why not Aho-Corasick (used before): its automaton walks the value with one table load per
/// byte, each waiting on the one before, and this runs on every candidate of every rule (a
/// tenth of a scan of a file dense with secrets). Every word but the 2-byte ones (`${`, `{{`,
/// `$(`) has four bytes or more, so each 4-byte window of the value is looked up in a small
/// filter of the words' first four bytes: loads that do not wait on each other. Windows are
/// folded with `| 0x20` on both sides (lowercase for letters; other bytes fold alike on both
/// sides, so a match always passes). A window that passes is compared with the words; the
/// 2-byte words start with `$` or `{`, found with memchr.
fn has_placeholder_word(s: &[u8]) -> bool {
    let f = placeholder_filter();
    for (i, win) in s.windows(4).enumerate() {
        let &[a, b, c, d] = win else { continue };
        let w = u32::from_le_bytes([a, b, c, d]) | 0x2020_2020;
        let h = window_hash(w);
        if f.bits[h >> 6] >> (h & 63) & 1 != 0
            && f.heads.iter().any(|&(head, word)| {
                head == w
                    && s.get(i..i + word.len())
                        .is_some_and(|t| t.eq_ignore_ascii_case(word))
            })
        {
            return true;
        }
    }
    memchr::memchr2_iter(b'$', b'{', s).any(|p| {
        f.short
            .iter()
            .any(|w| s.get(p..p + w.len()).is_some_and(|t| t == *w))
    })
}

/// The filter bit of a folded 4-byte window (10 bits: a 1024-bit filter, 128 bytes, in L1).
fn window_hash(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> 22) as usize
}

/// [`has_placeholder_word`]'s filter: the folded first four bytes of each word of four bytes or
/// more, and the shorter words (which start with `$` or `{`, a test checks).
struct PlaceholderFilter {
    bits: [u64; 16],
    heads: Vec<(u32, &'static [u8])>,
    short: Vec<&'static [u8]>,
}

fn placeholder_filter() -> &'static PlaceholderFilter {
    static F: std::sync::OnceLock<PlaceholderFilter> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let mut f = PlaceholderFilter {
            bits: [0; 16],
            heads: Vec::new(),
            short: Vec::new(),
        };
        for w in PLACEHOLDER_WORDS {
            let w = w.as_bytes();
            match *w {
                [a, b, c, d, ..] => {
                    let head = u32::from_le_bytes([a, b, c, d]) | 0x2020_2020;
                    let h = window_hash(head);
                    f.bits[h >> 6] |= 1 << (h & 63);
                    f.heads.push((head, w));
                }
                _ => f.short.push(w),
            }
        }
        f
    })
}

/// Whether `secret` is a documentation value rather than a secret: wrapped in `<…>`, `${…}`,
/// `{{…}}`; containing `example`, `dummy`, `your_…`, `xxxx`; or whose random-looking part is a
/// run of one character, a short repeated pattern, or a run of consecutive letters or digits
/// (`ghp_aaaa…`, `sk_live_abcdefghijklmnopqrstuvwxyz123456`, `hvs.xxxx`).
pub(crate) fn is_placeholder(secret: &[u8]) -> bool {
    let s = secret;
    if s.is_empty() {
        return true;
    }
    let l = s;
    if (l.first() == Some(&b'<') && l.last() == Some(&b'>'))
        || (l.starts_with(b"%(") || (l.len() > 2 && l[0] == b'%' && l.last() == Some(&b'%')))
        || l.starts_with(b"#{")
    {
        return true;
    }
    if has_placeholder_word(l) {
        return true;
    }
    // Documentation passwords: the whole value, trailing digits and punctuation dropped.
    let core_end = l
        .iter()
        .rposition(|b| b.is_ascii_alphabetic())
        .map_or(0, |p| p + 1);
    if (1..=16).contains(&core_end)
        && DOC_PASSWORDS
            .iter()
            .any(|w| w.as_bytes().eq_ignore_ascii_case(&l[..core_end]))
    {
        return true;
    }
    // The random-looking part: the longest run of letters and digits.
    let best = longest_run(s);
    let body = &l[best.0..best.1];
    if body.len() < 8 {
        // Nothing long enough to judge: a value made only of punctuation is a mask.
        return s.iter().all(|b| !b.is_ascii_alphanumeric()) && s.len() >= 3;
    }
    // Runs, steps and short periods in the body, read in lowercase (this runs on every
    // candidate of every rule). Steps are counted over pairs of neighbours, a loop without
    // dependencies between iterations that the compiler vectorizes; distinct bytes are counted
    // only up to four, which a random value reaches within a few bytes (a table of all 256
    // seen bytes, filled byte by byte, was a quarter of this filter's time).
    let lc = |i: usize| body[i].to_ascii_lowercase();
    let steps: usize = body
        .windows(2)
        .map(|w| {
            let d = w[1]
                .to_ascii_lowercase()
                .wrapping_sub(w[0].to_ascii_lowercase());
            usize::from(d <= 1 || d == u8::MAX)
        })
        .sum();
    if steps * 10 >= (body.len() - 1) * 7 {
        return true;
    }
    for p in 2..=4 {
        if body.len() >= 3 * p && (p..body.len()).all(|i| lc(i) == lc(i - p)) {
            return true;
        }
    }
    at_most_three_bytes(body)
}

/// Whether `s` holds at most three distinct bytes, ignoring ASCII case.
fn at_most_three_bytes(s: &[u8]) -> bool {
    let mut seen = [0u8; 3];
    let mut n = 0;
    for &b in s {
        let l = b.to_ascii_lowercase();
        if !seen[..n].contains(&l) {
            if n == 3 {
                return false;
            }
            seen[n] = l;
            n += 1;
        }
    }
    true
}

/// The first of the longest runs of ASCII letters and digits in `s`, as a range. This runs on
/// every candidate of every rule: each 64-byte block becomes a mask of its other bytes (a loop
/// the compiler vectorizes), and only those bytes are visited, where a test per byte was half
/// of the placeholder filter's time.
fn longest_run(s: &[u8]) -> (usize, usize) {
    let (mut best, mut start) = ((0, 0), 0usize);
    for (k, block) in s.chunks(64).enumerate() {
        let mut breaks = 0u64;
        for (j, part) in block.chunks(16).enumerate() {
            // Two range tests per byte (a digit, or a letter once folded to lowercase), in
            // 16-byte parts: the shape the compiler turns into a vector compare and a mask.
            let m = part.iter().enumerate().fold(0u16, |m, (i, &b)| {
                let alnum = b.wrapping_sub(b'0') < 10 || (b | 0x20).wrapping_sub(b'a') < 26;
                m | u16::from(!alnum) << i
            });
            breaks |= u64::from(m) << (16 * j);
        }
        while breaks != 0 {
            let i = k * 64 + breaks.trailing_zeros() as usize;
            breaks &= breaks - 1;
            if i - start > best.1 - best.0 {
                best = (start, i);
            }
            start = i + 1;
        }
    }
    if s.len() - start > best.1 - best.0 {
        best = (start, s.len());
    }
    best
}

/// A value [`find`] read at a keyword hit: its byte range in the text, and what [`judge`] needs
/// to score the name and the value.
///
/// Why two steps: on files dense with secrets most values a generic rule reads were already
/// masked by a specific rule (`GITHUB_TOKEN=ghp_...`), and scoring the name and the value (word
/// lists, entropy, identifier tests) was most of the detector's time. The engine judges a
/// candidate only when its range is not masked yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The value: `text[start..end]`.
    pub start: usize,
    pub end: usize,
    /// The name holding the keyword, without leading dashes (`--token`).
    name: (usize, usize),
    mode: Mode,
    /// `-p S`: the name is the flag itself.
    p_flag: bool,
    /// A `Bearer`, `Token` or `Bot` scheme came before the value (and the kind is `Secret`).
    schemed: bool,
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Splits a name into words at `_`, `-`, `.`, and case changes (`apiKey`, `APIKey`,
/// `X-Api-Token`). Each word is a slice of the name in its own case: compare them with the
/// case-insensitive helpers.
fn words(name: &[u8]) -> Words<'_> {
    Words { name, i: 0 }
}

struct Words<'a> {
    name: &'a [u8],
    i: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let name = self.name;
        while self.i < name.len() && !name[self.i].is_ascii_alphanumeric() {
            self.i += 1;
        }
        let start = self.i;
        if start >= name.len() {
            return None;
        }
        self.i += 1;
        while self.i < name.len() && name[self.i].is_ascii_alphanumeric() {
            let (prev, b) = (name[self.i - 1], name[self.i]);
            let next = name.get(self.i + 1).copied();
            // A capital after a lowercase letter or digit (`apiKey`), or the last capital of
            // a run before a lowercase letter (`APIKey`), starts a word.
            let boundary = b.is_ascii_uppercase()
                && (prev.is_ascii_lowercase()
                    || prev.is_ascii_digit()
                    || (prev.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase())));
            if boundary {
                break;
            }
            self.i += 1;
        }
        Some(&name[start..self.i])
    }
}

/// `w` is one of the lowercase words of `list`, ignoring ASCII case.
fn is_in(w: &[u8], list: &[&str]) -> bool {
    list.iter().any(|x| x.as_bytes().eq_ignore_ascii_case(w))
}

/// A word list for membership tests ignoring ASCII case: [`is_in`] with a binary search of the
/// sorted list instead of a comparison with every word. The name and value tests look words up
/// in lists of up to 150 words at every keyword hit, where the linear search was a tenth of the
/// scan on files dense with credential names.
struct WordSet {
    sorted: Vec<Vec<u8>>,
    longest: usize,
}

impl WordSet {
    fn new(list: &[&str]) -> WordSet {
        let mut sorted: Vec<Vec<u8>> = list
            .iter()
            .map(|w| w.as_bytes().to_ascii_lowercase())
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        let longest = sorted.iter().map(Vec::len).max().unwrap_or(0);
        WordSet { sorted, longest }
    }

    fn has(&self, w: &[u8]) -> bool {
        const BUF: usize = 32;
        if w.len() > self.longest {
            return false;
        }
        let mut buf = [0u8; BUF];
        let lower: Vec<u8>;
        let probe: &[u8] = match buf.get_mut(..w.len()) {
            Some(b) => {
                for (d, s) in b.iter_mut().zip(w) {
                    *d = s.to_ascii_lowercase();
                }
                b
            }
            None => {
                lower = w.to_ascii_lowercase();
                &lower
            }
        };
        self.sorted
            .binary_search_by(|x| x.as_slice().cmp(probe))
            .is_ok()
    }
}

/// The [`WordSet`] of a static list, built on first use.
macro_rules! word_set {
    ($list:expr) => {{
        static SET: std::sync::OnceLock<WordSet> = std::sync::OnceLock::new();
        SET.get_or_init(|| WordSet::new($list))
    }};
}

/// Whether a name holds a credential of `kind`.
fn name_matches(name: &[u8], kind: Detector) -> bool {
    // Two words ending `key id` or `token type` are refused by the last word; `*_key` needs a
    // qualifier.
    let (mut any, mut pat, mut count) = (false, false, 0usize);
    let mut prev: Option<&[u8]> = None;
    let mut last: &[u8] = b"";
    for w in words(name) {
        count += 1;
        last = w;
        if !any {
            any = match kind {
                Detector::Password => {
                    word_set!(PASSWORD_WORDS).has(w)
                        || contains(w, b"password")
                        || contains(w, b"passwd")
                        || contains(w, b"passphrase")
                        || (w.len() > 3 && ends_ci(w, b"pwd"))
                }
                Detector::Secret => {
                    word_set!(SECRET_WORDS).has(w)
                        // Joined words: `authtoken`, `clientsecret`, `sharedaccesskey`.
                        || (w.len() > 5 && (ends_ci(w, b"token") || ends_ci(w, b"secret")))
                        || (w.len() > 3
                            && ends_ci(w, b"key")
                            && KEY_QUALIFIERS
                                .iter()
                                .any(|q| q.len() > 2 && ends_ci(&w[..w.len() - 3], q.as_bytes())))
                        || (w.eq_ignore_ascii_case(b"key")
                            && prev.is_some_and(|p| {
                                word_set!(KEY_QUALIFIERS).has(p) || !word_set!(KEY_NOT_QUALIFIERS).has(p)
                            }))
                }
            };
            pat |= kind == Detector::Secret && w.eq_ignore_ascii_case(b"pat");
        }
        prev = Some(w);
    }
    count > 0 && !word_set!(NOT_SECRET_SUFFIX).has(last) && (any || (pat && count > 1))
}

/// Where the name holding the keyword hit at `ks` starts (as [`find`] reads it), to read each
/// name once when several keywords hit it.
pub(crate) fn name_start(text: &[u8], ks: usize) -> usize {
    let mut ns = ks;
    while text.get(ns).copied().is_some_and(is_blank) {
        ns += 1;
    }
    while ns > 0 && is_name(text[ns - 1]) {
        ns -= 1;
    }
    ns
}

/// How a value was found, which sets how sure its name makes us.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `K = "S"`: a literal string.
    Quoted,
    /// `K = S`, `K: S`, `?k=S`, `<K>S</K>`.
    Unquoted,
    /// `K S` (no operator): the value must look like a secret on its own.
    Loose,
}

/// Finds the credential assigned to the name holding the keyword hit `[ks, ke)`, in any of
/// the syntaxes of the module docs. `None` when the hit is not in a credential name of `kind`,
/// nothing is assigned to it, or the value does not look like a secret.
pub(crate) fn find(text: &[u8], ks: usize, ke: usize, kind: Detector) -> Option<Candidate> {
    // A keyword may begin with a blank (` -p`): the name starts after it.
    let ks = ks
        + text
            .get(ks..ke)?
            .iter()
            .take_while(|&&b| is_blank(b))
            .count();
    // ... and may end with what follows the name (`key=`, `key>`): the name ends before it.
    let mut ke = ke;
    while ke > ks && !is_name(text[ke - 1]) {
        ke -= 1;
    }
    let line_start = memchr::memrchr(b'\n', &text[..ks]).map_or(0, |p| p + 1);
    let mut ns = ks;
    while ns > line_start && is_name(text[ns - 1]) {
        ns -= 1;
    }
    let mut ne = ke;
    while ne < text.len() && is_name(text[ne]) {
        ne += 1;
    }
    // A name ending in `.` or `-` ends a sentence or a flag: drop those bytes.
    while ne > ke && matches!(text[ne - 1], b'.' | b'-') {
        ne -= 1;
    }
    let name = &text[ns..ne];
    let before = ns.checked_sub(1).map(|p| text[p]);
    // Cheap test before reading words: an operator, a quote, a blank or `>` must follow the
    // name (most keyword hits in code are `key)`, `token.`, `secrets[`).
    if !matches!(
        text.get(ne),
        Some(b'=' | b':' | b'"' | b'\'' | b'`' | b' ' | b'\t' | b'>' | b'?' | b'.' | b'+' | b',')
    ) {
        return None;
    }
    let dashes = name.iter().take_while(|&&b| b == b'-').count();
    let short_p_flag =
        kind == Detector::Password && dashes == 1 && name.len() == 2 && name[1] == b'p';
    let mut i = ne;
    let quote_name = matches!(before, Some(b'"' | b'\'' | b'`')) && text.get(i) == before.as_ref();
    if quote_name {
        i += 1;
    }
    let xml = before == Some(b'<') && text.get(i) == Some(&b'>');
    let url_param = matches!(before, Some(b'?' | b'&'));
    let mut blanks = 0;
    while text.get(i).copied().is_some_and(is_blank) {
        i += 1;
        blanks += 1;
    }
    let rest = &text[i..];
    let op_len = if xml {
        1
    } else if rest.starts_with(b":::=") {
        4
    } else if rest.starts_with(b"::=") {
        3
    } else if rest.starts_with(b"::") || rest.starts_with(b"==") || rest.starts_with(b"=~") {
        return None;
    } else if rest.starts_with(b":=")
        || rest.starts_with(b"=>")
        || rest.starts_with(b"?=")
        || rest.starts_with(b".=")
        || rest.starts_with(b"+=")
    {
        2
    } else if matches!(rest.first(), Some(b'=' | b':'))
        || (rest.first() == Some(&b',') && quote_name)
    {
        1
    } else if rest.first() == Some(&b'>') && before == Some(b'<') {
        // `<password>` with attributes is not handled; `<K>S</K>` above.
        return None;
    } else {
        0
    };
    let mut mode = Mode::Unquoted;
    if op_len == 0 {
        // `var K string = "S"`, `K string := "S"`: a type between name and operator.
        let ty_len = rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'&' | b'*' | b'[' | b']')))
            .unwrap_or(rest.len());
        let ty = &rest[..ty_len];
        let after_ty = &rest[ty_len..];
        let skip = after_ty.iter().take_while(|&&b| is_blank(b)).count();
        let a = &after_ty[skip..];
        if blanks > 0
            && is_in(
                ty,
                &["string", "str", "&str", "[]byte", "char", "var", "val"],
            )
            && (a.starts_with(b"=") || a.starts_with(b":="))
            && !a.starts_with(b"==")
        {
            i += ty_len + skip + if a.starts_with(b":=") { 2 } else { 1 };
        } else if blanks > 0 || short_p_flag {
            mode = Mode::Loose;
        } else {
            return None;
        }
    } else {
        i += op_len;
        // `K: str = "S"` (Python annotations), `K := S`.
        let skip = text[i..].iter().take_while(|&&b| is_blank(b)).count();
        let r = &text[i + skip..];
        for ty in [&b"str"[..], b"string", b"String", b"&str", b"bytes"] {
            if r.starts_with(ty) {
                let a = &r[ty.len()..];
                let s2 = a.iter().take_while(|&&b| is_blank(b)).count();
                if a[s2..].starts_with(b"=") && !a[s2..].starts_with(b"==") {
                    i += skip + ty.len() + s2 + 1;
                }
                break;
            }
        }
    }
    while text.get(i).copied().is_some_and(is_blank) {
        i += 1;
    }
    let (mut vs, mut ve) = value_at(text, i, &mut mode, url_param, xml)?;
    // `Authorization: Bearer S`, `"Bearer S"`, `token: Bot S`: the scheme is not the secret.
    let scheme = &text[vs..ve];
    if is_in(
        scheme,
        &[
            "bearer", "basic", "token", "bot", "digest", "key", "sso-key", "apikey", "otp",
        ],
    ) {
        let mut j = ve;
        while text.get(j).copied().is_some_and(is_blank) {
            j += 1;
        }
        if j == ve {
            return None;
        }
        let mut m2 = Mode::Unquoted;
        (vs, ve) = value_at(text, j, &mut m2, url_param, xml)?;
        if mode == Mode::Quoted && text.get(ve) == Some(&b' ') {
            return None;
        }
    } else if mode == Mode::Quoted {
        // A quoted value that begins with a scheme: `"Bearer S"`.
        let v = &text[vs..ve];
        if let Some(sp) = v.iter().position(|&b| b == b' ')
            && is_in(&v[..sp], &["bearer", "basic", "token", "bot"])
        {
            vs += sp + 1;
        }
    }
    let schemed = is_in(scheme, &["bearer", "token", "bot"]) && kind == Detector::Secret;
    // The length tests of `judge`, which need no more reading: most keyword hits in code (`the
    // session token before`) end here.
    let n = ve - vs;
    let long_enough = match kind {
        Detector::Secret => n >= 16 || (schemed && n >= 12),
        Detector::Password => n >= 4,
    };
    if !long_enough || n > 1024 {
        return None;
    }
    Some(Candidate {
        start: vs,
        end: ve,
        name: (ns + dashes, ne),
        mode,
        p_flag: short_p_flag,
        schemed,
    })
}

/// Whether the candidate `c` that [`find`] read in `text` is a credential of `kind`: its name
/// holds one, and its value looks like one.
pub(crate) fn judge(text: &[u8], c: &Candidate, kind: Detector) -> bool {
    let (Some(name), Some(v)) = (text.get(c.name.0..c.name.1), text.get(c.start..c.end)) else {
        return false;
    };
    if !c.p_flag && !name_matches(name, kind) {
        return false;
    }
    if c.schemed
        && v.len() >= 12
        && v.len() < 16
        && value_ok(v, Detector::Password, Mode::Quoted, false)
        && looks_random(v)
    {
        return true;
    }
    value_ok(v, kind, c.mode, c.p_flag)
}

/// The value starting at `i`: quoted (to its closing quote on the line) or unquoted (to the
/// first blank, quote or separator). Sets `mode` to `Quoted` for a quoted value.
fn value_at(
    text: &[u8],
    i: usize,
    mode: &mut Mode,
    url: bool,
    xml: bool,
) -> Option<(usize, usize)> {
    let first = *text.get(i)?;
    if matches!(first, b'"' | b'\'' | b'`') {
        let mut j = i + 1;
        while j < text.len() {
            match text[j] {
                b'\\' => j += 2,
                b'\n' | b'\r' => return None,
                b if b == first => break,
                _ => j += 1,
            }
        }
        if j >= text.len() {
            return None;
        }
        *mode = Mode::Quoted;
        return (j > i + 1).then_some((i + 1, j));
    }
    let mut j = i;
    while j < text.len() {
        let b = text[j];
        let stop = b.is_ascii_whitespace()
            || matches!(
                b,
                b'"' | b'\'' | b'`' | b',' | b';' | b')' | b']' | b'}' | b'<'
            )
            || (url && matches!(b, b'&' | b'#'))
            || (xml && b == b'<');
        if stop {
            break;
        }
        j += 1;
    }
    // Sentence punctuation after a value in prose or logs.
    while j > i && matches!(text[j - 1], b'.' | b':' | b'!' | b'?') {
        j -= 1;
    }
    (j > i).then_some((i, j))
}

fn is_wordish(part: &[u8]) -> bool {
    if part.len() <= 3 {
        return true;
    }
    if !part.iter().all(u8::is_ascii_alphabetic) {
        return false;
    }
    let l = part;
    let vowel = |b: u8| {
        matches!(
            b.to_ascii_lowercase(),
            b'a' | b'e' | b'i' | b'o' | b'u' | b'y'
        )
    };
    let vowels = l.iter().filter(|&&b| vowel(b)).count();
    let (mut run, mut max_run) = (0, 0);
    for &b in l {
        run = if vowel(b) { 0 } else { run + 1 };
        max_run = max_run.max(run);
    }
    l.len() <= 16 && max_run <= 4 && vowels * 5 >= l.len() && vowels * 10 <= l.len() * 7
}

/// Whether letters and digits in `v` read as words joined into an identifier (`TokenParser`,
/// `user_password`, `my-app-secret`) rather than random characters.
fn is_identifierish(v: &[u8]) -> bool {
    // Every part a word (digits only as a short suffix: `v2`, `oauth2`), and most letters in
    // parts of four or more: random mixed-case text splits into one- to three-letter "words".
    let mut long_letters = 0;
    let mut letters = 0;
    let mut parts = 0;
    for p in words(v) {
        parts += 1;
        let alpha_len = p.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let (alpha, tail) = p.split_at(alpha_len);
        if tail.len() > 2 || !tail.iter().all(u8::is_ascii_digit) || !is_wordish(alpha) {
            return false;
        }
        letters += alpha.len();
        if alpha.len() >= 4 {
            long_letters += alpha.len();
        }
    }
    parts == 0 || (letters > 0 && long_letters * 10 >= letters * 6)
}

/// The least entropy `looks_random` lets through (values shorter than 16 bytes).
const RANDOM_MIN_ENTROPY: f64 = 2.5;

/// The entropy every value that [`judge`] accepts for `kind` has at least, if any: a `Secret`
/// value always went through `looks_random`. The engine then skips a rule's own entropy test
/// at or below it, which counted the same bytes a second time (on long token values, a tenth
/// of the generic rule's time).
pub(crate) fn judged_entropy(kind: Detector) -> Option<f64> {
    (kind == Detector::Secret).then_some(RANDOM_MIN_ENTROPY)
}

/// Whether `v` looks random enough to be a token: long enough, varied characters, and not words.
fn looks_random(v: &[u8]) -> bool {
    if v.len() < 8 {
        return false;
    }
    let e = super::rules::entropy(v);
    let min = if v.len() >= 16 {
        3.0
    } else {
        RANDOM_MIN_ENTROPY
    };
    if e < min {
        return false;
    }
    !is_identifierish(v)
}

fn value_ok(v: &[u8], kind: Detector, mode: Mode, p_flag: bool) -> bool {
    let l = v;
    // Every path below that accepts a secret-kind value needs 16 bytes: most keyword hits in
    // code (`the session token before`) end here, before the word tests.
    if kind == Detector::Secret && v.len() < 16 {
        return false;
    }
    if v.len() < 4 || v.len() > 1024 || word_set!(NOT_VALUES).has(l) {
        return false;
    }
    let first = v[0];
    // References, templates, paths, URLs, hash digests with their algorithm.
    if matches!(
        first,
        b'$' | b'%' | b'{' | b'<' | b'@' | b'[' | b'(' | b'&' | b'*'
    ) && !(mode == Mode::Quoted && kind == Detector::Password && first != b'$')
    {
        return false;
    }
    if first == b'/'
        || l.starts_with(b"./")
        || l.starts_with(b"../")
        || l.starts_with(b"~/")
        || (l.len() > 2 && l[1] == b':' && matches!(l[2], b'\\' | b'/'))
        || memchr::memmem::find(l, b"://").is_some()
        || starts_ci(l, b"sha1")
        || starts_ci(l, b"sha256")
        || starts_ci(l, b"sha384")
        || starts_ci(l, b"sha512")
        || starts_ci(l, b"md5")
    {
        return false;
    }
    // Numbers, versions, dates and times.
    if v.iter()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b':' | b'+' | b'_' | b','))
    {
        return kind == Detector::Password && mode == Mode::Quoted && v.len() >= 6;
    }
    // Calls and indexing in code.
    if mode != Mode::Quoted && memchr::memchr2(b'(', b'[', v).is_some() {
        return false;
    }
    // Dotted names (`settings.SECRET_KEY`, `process.env.TOKEN`) and identifiers.
    // Without the early exit of `all`, the test vectorizes: long token values are mostly
    // identifier bytes, so they were walked to the end one byte at a time anyway.
    let ident = v.iter().fold(true, |all, &b| {
        all & (b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    if ident && is_identifierish(v) {
        // A quoted single word is still a (weak) password when named so; joined words
        // (`user_password`, `TokenParser`, `CLOJARS_`) are names.
        let joined = (v.iter().any(|&b| matches!(b, b'_' | b'.' | b'-'))
            || v.iter().skip(1).any(u8::is_ascii_uppercase))
            && !v.iter().any(u8::is_ascii_digit);
        if !(kind == Detector::Password && mode == Mode::Quoted && !joined) {
            return false;
        }
    }
    match (kind, mode) {
        (Detector::Password, Mode::Quoted | Mode::Unquoted) if !p_flag => true,
        (Detector::Password, _) => {
            // `-p S`, `password S`: a word would be prose or a command's argument.
            v.len() >= 6
                && !(v.contains(&b'/')
                    && v.split(|&b| b == b'/')
                        .all(|p| p.is_empty() || is_identifierish(p)))
                && v.iter().any(u8::is_ascii_alphabetic)
                && (looks_random(v)
                    || (v.iter().any(|b| !b.is_ascii_alphabetic())
                        && (v.iter().any(|b| !b.is_ascii_alphanumeric()) || !is_identifierish(v))))
        }
        // Tokens shorter than 16 characters are mostly truncated examples or ids.
        (Detector::Secret, _) => v.len() >= 16 && looks_random(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value `judge` accepts as a `Secret` has `judged_entropy`'s entropy, on values
    /// of every length around the thresholds, with and without a scheme.
    #[test]
    fn judged_secrets_have_the_judged_entropy() {
        let floor = judged_entropy(Detector::Secret).unwrap();
        assert_eq!(judged_entropy(Detector::Password), None);
        let mut rng = crate::redact::samples::Rng::new(11);
        let mut accepted = 0;
        for round in 0..20_000usize {
            let len = 4 + rng.below(30) as usize;
            // Few distinct bytes, so entropies fall on both sides of the thresholds.
            let alphabet: &[u8] = if round % 2 == 0 {
                b"aB3x"
            } else {
                b"aB3xQz9_K"
            };
            let v: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
            let v = String::from_utf8_lossy(&v);
            // The second: a value after a scheme, accepted from 12 bytes on.
            for (text, kw) in [
                (format!("api_token = {v}\n"), "token"),
                (format!("Authorization: Bearer {v}\n"), "auth"),
            ] {
                let t = text.as_bytes();
                let ks = text.to_ascii_lowercase().find(kw).unwrap();
                let Some(c) = find(t, ks, ks + kw.len(), Detector::Secret) else {
                    continue;
                };
                if judge(t, &c, Detector::Secret) {
                    accepted += 1;
                    let e = crate::redact::rules::entropy(&t[c.start..c.end]);
                    assert!(e >= floor, "{text:?} {e}");
                }
            }
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn placeholders() {
        for p in [
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "glpat-XXXXXXXXXXXXXXXXXXXX",
            "AIzaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sk_live_abcdefghijklmnopqrstuvwxyz123456",
            "hvs.xxxxxxxxxxxxxxxxxxxxxxxx",
            "sntryu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "open_sesame",
            "changeme",
            "<your-api-key>",
            "${API_TOKEN}",
            "{{ vault_token }}",
            "your_token_here",
            "AKIAIOSFODNN7EXAMPLE",
            "1234567890abcdef",
            "abcabcabcabcabc",
            "********",
            "dummy-token-value",
            "password123",
        ] {
            assert!(is_placeholder(p.as_bytes()), "{p}");
        }
        for s in [
            "ghp_R4nd0mT0kenV4lu3xYzAbCdEfGhIjKlMnOp",
            "hunter2hunter",
            "Tr0ub4dor&3x",
            "q8Jv2LmZx7RtY4pWn6Ks3Hd9",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "s3cr3t-P@ss",
        ] {
            assert!(!is_placeholder(s.as_bytes()), "{s}");
        }
    }

    fn found(line: &str, kind: Detector) -> Option<String> {
        let t = line.as_bytes();
        let kws: &[&str] = match kind {
            Detector::Password => &["password", "passwd", "pwd", "pass", " -p"],
            Detector::Secret => &["secret", "token", "key", "auth", "credential", "bearer"],
        };
        let l = line.to_ascii_lowercase();
        for k in kws {
            let mut from = 0;
            while let Some(p) = l[from..].find(k) {
                let s = from + p;
                if let Some(c) = find(t, s, s + k.len(), kind)
                    && judge(t, &c, kind)
                    && !is_placeholder(&t[c.start..c.end])
                {
                    let (a, b) = (c.start, c.end);
                    return Some(line[a..b].to_string());
                }
                from = s + 1;
            }
        }
        None
    }

    #[test]
    fn syntaxes() {
        let s = "q8Jv2LmZx7RtY4pWn6Ks3Hd9";
        let p = "Tr0ub4dor&3x";
        let secret_lines = [
            format!("API_TOKEN={s}"),
            format!("API_TOKEN = {s}"),
            format!("api_token: {s}"),
            format!("<apiToken>{s}</apiToken>"),
            format!("var apiToken string = \"{s}\""),
            format!("$api_token .= \"{s}\";"),
            format!("System.setProperty(\"api.token\", \"{s}\");"),
            format!("API_TOKEN ::= \"{s}\""),
            format!("API_TOKEN :::= \"{s}\""),
            format!("apikey {s}"),
            format!("[DEBUG] Using Token={s} for upload"),
            format!("GET /v1/items?token={s}&page=2"),
            format!("curl https://x.io/a?b=1&api_key={s}"),
            format!("curl --token {s} https://x.io"),
            format!("curl --token={s}"),
            format!("X-Api-Token: {s}"),
            format!("Authorization: Bearer {s}"),
            format!("export API_TOKEN={s}"),
            format!("{{\"api_key\": \"{s}\"}}"),
            format!("client_secret => '{s}'"),
            format!("apiKey: str = \"{s}\""),
            format!("SECRET_KEY=\"{s}\""),
            format!("token := \"{s}\""),
        ];
        for l in &secret_lines {
            assert_eq!(found(l, Detector::Secret).as_deref(), Some(s), "{l}");
        }
        let pw_lines = [
            format!("DB_PASSWORD={p}"),
            format!("Server=db;Database=x;User Id=sa;Password={p};"),
            format!("mysql -u root -p {p}"),
            format!("mysql --password={p}"),
            format!("<password>{p}</password>"),
            format!("$password .= \"{p}\";"),
            format!("password ::= \"{p}\""),
        ];
        for l in &pw_lines {
            assert_eq!(found(l, Detector::Password).as_deref(), Some(p), "{l}");
        }
        for l in [
            "password = get_password(user)",
            "secret_key = settings.SECRET_KEY",
            "self.access_token = access_token",
            "API_KEY = os.environ[\"API_KEY\"]",
            "const token = process.env.GITHUB_TOKEN;",
            "function setPassword(password: string): void {",
            "token, err := auth.NewToken(ctx, cfg)",
            "Set `OPENAI_API_KEY` to your key (starts with `sk-proj-`).",
            "Send `Authorization: Bearer <token>` with every request.",
            "let parser = TokenParser::new(&tokens);",
            "max_tokens = 4096",
            "token_type = \"bearer\"",
            "The token expires after thirty minutes.",
            "password: str",
            "mkdir -p /tmp/build",
            "mkdir -p build",
            "apiToken = \"TokenProviderFactory\"",
            "secret: my-app-secret-name",
        ] {
            assert_eq!(found(l, Detector::Secret), None, "{l}");
            assert_eq!(found(l, Detector::Password), None, "{l}");
        }
    }

    /// The sorted word sets answer exactly what a comparison with every word answers.
    #[test]
    fn word_sets_agree_with_the_lists() {
        let lists: [&[&str]; 5] = [
            PASSWORD_WORDS,
            SECRET_WORDS,
            KEY_QUALIFIERS,
            KEY_NOT_QUALIFIERS,
            NOT_SECRET_SUFFIX,
        ];
        let mut probes: Vec<Vec<u8>> = Vec::new();
        for list in lists.iter().chain([&NOT_VALUES, &DOC_PASSWORDS]) {
            for w in list.iter() {
                let w = w.as_bytes();
                probes.push(w.to_vec());
                probes.push(w.to_ascii_uppercase());
                probes.push(w[..w.len() - 1].to_vec());
                probes.push([w, b"s"].concat());
                probes.push([b"x", w].concat());
            }
        }
        probes.extend([&b""[..], b"K", b"Key", b"ApI", &[b'a'; 40], b"\xff"].map(<[u8]>::to_vec));
        for list in lists.iter().chain([&NOT_VALUES]) {
            let set = WordSet::new(list);
            for p in &probes {
                assert_eq!(
                    set.has(p),
                    is_in(p, list),
                    "{:?}",
                    String::from_utf8_lossy(p)
                );
            }
        }
    }

    /// `longest_run` picks the run a byte-by-byte scan picks (the first longest).
    #[test]
    fn longest_run_is_the_first_longest() {
        fn reference(s: &[u8]) -> (usize, usize) {
            let (mut best, mut cur) = ((0, 0), 0usize);
            for (i, b) in s.iter().enumerate() {
                if b.is_ascii_alphanumeric() {
                    cur += 1;
                    if cur > best.1 - best.0 {
                        best = (i + 1 - cur, i + 1);
                    }
                } else {
                    cur = 0;
                }
            }
            best
        }
        let mut rng = crate::redact::samples::Rng::new(11);
        // Past 130 bytes: runs that cross one and two 64-byte blocks.
        for len in 0..200usize {
            for _ in 0..100 {
                let v: Vec<u8> = (0..len).map(|_| rng.pick(b"aZ9-._ ")).collect();
                assert_eq!(
                    longest_run(&v),
                    reference(&v),
                    "{:?}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    /// `has_placeholder_word` finds what a plain case-insensitive search for each word finds:
    /// words planted in random case into random values, at the start, the end, overlapping and
    /// cut short, and values without them.
    #[test]
    fn placeholder_words_are_found_like_a_plain_search() {
        fn reference(s: &[u8]) -> bool {
            PLACEHOLDER_WORDS.iter().any(|w| contains(s, w.as_bytes()))
        }
        // The filter's assumption about the short words.
        for w in PLACEHOLDER_WORDS {
            assert!(
                w.len() >= 4 || matches!(w.as_bytes()[0], b'$' | b'{'),
                "{w}"
            );
        }
        let mut rng = crate::redact::samples::Rng::new(5);
        let alphabet = b"aeXxY_-.*${(}hErOuzZ09";
        let (mut hits, mut misses) = (0, 0);
        for round in 0..20_000usize {
            let len = rng.below(40) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| rng.pick(alphabet)).collect();
            if round % 2 == 0 {
                let w = PLACEHOLDER_WORDS[rng.below(PLACEHOLDER_WORDS.len() as u64) as usize];
                let mut w: Vec<u8> = w
                    .bytes()
                    .map(|b| {
                        if rng.below(2) == 0 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    })
                    .collect();
                if round % 6 == 0 {
                    w.pop();
                }
                let at = rng.below(v.len() as u64 + 1) as usize;
                v.splice(at..at, w);
            }
            let want = reference(&v);
            if want {
                hits += 1;
            } else {
                misses += 1;
            }
            assert_eq!(
                has_placeholder_word(&v),
                want,
                "{:?}",
                String::from_utf8_lossy(&v)
            );
        }
        assert!(hits > 5000 && misses > 5000, "{hits} {misses}");
    }

    /// `at_most_three_bytes` agrees with counting the distinct lowercase bytes.
    #[test]
    fn three_bytes_are_counted_like_a_set() {
        let mut rng = crate::redact::samples::Rng::new(3);
        for len in 0..24usize {
            for _ in 0..300 {
                let v: Vec<u8> = (0..len).map(|_| rng.pick(b"aAbBcd")).collect();
                let set: std::collections::HashSet<u8> =
                    v.iter().map(|b| b.to_ascii_lowercase()).collect();
                assert_eq!(at_most_three_bytes(&v), set.len() <= 3, "{v:?}");
            }
        }
    }

    #[test]
    fn letters_only_tokens_are_told_from_identifiers() {
        assert!(looks_random(b"hGkqPzWbTnRxYvLmQsDfJk"));
        assert!(looks_random(b"qxkzvbwmtrplsnhgfdcvbnmq"));
        assert!(!looks_random(b"TokenParserFactory"));
        assert!(!looks_random(b"access_token_value"));
    }
}
