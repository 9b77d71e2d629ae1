//! Fake secrets for every shipped rule: one positive and one near-miss negative each.
//!
//! Why in the library (hidden from docs): the rule tests (`tests/it/redact_rules.rs`) and the
//! accuracy generator (`examples/accuracy.rs`) must agree on what every rule is supposed to catch,
//! and a rule added without a case must fail the tests. Values are random (seeded) and made up;
//! none is a real credential.

/// One rule's sample: `template` with `@S@` replaced by a value generated from `secret`.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub rule_id: &'static str,
    /// Relative path the sample lives at (rules may filter on path).
    pub path: &'static str,
    pub template: &'static str,
    /// Generator: literal text with `{C:n}` for n random characters of class C
    /// (see [`class`]) or one of `!luhn`, `!iban`, `!ssn`.
    pub secret: &'static str,
    /// Text the rule (and every other rule) must leave alone.
    pub negative: &'static str,
}

include!("samples_table.rs");
include!("samples_providers.rs");

/// A concrete case generated from a [`Spec`].
#[derive(Debug, Clone)]
pub struct Case {
    pub rule_id: &'static str,
    pub path: &'static str,
    pub positive: String,
    pub secret: String,
    pub negative: &'static str,
}

/// Small deterministic PRNG (xorshift64*): tests must be reproducible, no extra dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick(&mut self, s: &[u8]) -> u8 {
        s[self.below(s.len() as u64) as usize]
    }
}

/// Character classes for `{C:n}`.
pub fn class(c: char) -> &'static [u8] {
    match c {
        'U' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        'V' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
        'K' => b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
        'D' => b"0123456789",
        'H' => b"0123456789abcdef",
        'a' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        'A' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        'B' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        'b' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
        'u' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        'l' => b"abcdefghijklmnopqrstuvwxyz0123456789",
        'P' => b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!%^*+=",
        'X' => b"0123456789ABCDEF",
        'o' => b"abcdefghijklmnopqrstuvwxyz234567",
        'L' => b"abcdefghijklmnopqrstuvwxyz",
        _ => b"x",
    }
}

fn digits(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(10) as u8).collect()
}

fn luhn_number(rng: &mut Rng) -> String {
    let mut d = vec![4u8];
    d.extend(digits(rng, 14));
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    d.push(((10 - sum % 10) % 10) as u8);
    let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}

fn iban_number(rng: &mut Rng) -> String {
    let bban: String = digits(rng, 18)
        .iter()
        .map(|x| char::from(b'0' + x))
        .collect();
    // DE = 13 14; check digits 00 → 98 - (bban ++ "131400") mod 97.
    let mut rem = 0u32;
    for ch in bban.chars().chain("131400".chars()) {
        rem = (rem * 10 + ch.to_digit(10).unwrap_or(0)) % 97;
    }
    let s = format!("DE{:02}{}", 98 - rem, bban);
    s.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn ssn_number(rng: &mut Rng) -> String {
    format!(
        "{:03}-{:02}-{:04}",
        100 + rng.below(500),
        1 + rng.below(99),
        1 + rng.below(9999)
    )
}

/// Expands a generator spec.
pub fn generate(spec: &str, rng: &mut Rng) -> String {
    match spec {
        "!luhn" => return luhn_number(rng),
        "!iban" => return iban_number(rng),
        "!ssn" => return ssn_number(rng),
        _ => {}
    }
    let mut out = String::new();
    let mut rest = spec;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else { break };
        let inner = &rest[i + 1..i + j];
        match inner.split_once(':') {
            Some((c, n)) if c.len() == 1 && n.parse::<usize>().is_ok() => {
                let cls = class(c.chars().next().unwrap_or('x'));
                for _ in 0..n.parse::<usize>().unwrap_or(0) {
                    out.push(char::from(rng.pick(cls)));
                }
            }
            _ => out.push_str(&rest[i..=i + j]),
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

/// One case per shipped rule, generated from `seed`.
pub fn cases(seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    TABLE
        .iter()
        .chain(PROVIDER_TABLE)
        .map(|s| {
            let secret = generate(s.secret, &mut rng);
            Case {
                rule_id: s.rule_id,
                path: s.path,
                positive: s.template.replace("@S@", &secret),
                secret,
                negative: s.negative,
            }
        })
        .collect()
}
