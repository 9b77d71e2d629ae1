//! Accuracy of the shipped rule sets on generated data.
//!
//! Plants fake secrets of every supported kind (one per shipped rule, several seeds) inside
//! realistic files, plus hard negatives that look like secrets but are not (UUIDs, git SHAs,
//! sha256 sums, Luhn-invalid card numbers, IBANs with bad checksums, identifiers such as
//! `TokenParser`, templating placeholders and environment lookups). Prints recall (planted
//! secrets fully masked) and the false-positive rate (negatives touched by any mask).
//!
//! `cargo run --example accuracy [-- SEEDS]`

use std::path::Path;

use veilfs::redact::samples::{Rng, cases, generate};
use veilfs::redact::{Engine, ScanOutcome};

const CODE_FILLER: &[&str] = &[
    "fn parse(input: &str) -> Result<Config, Error> {",
    "    let tokens = lexer.tokenize(input)?;",
    "    for (i, line) in lines.iter().enumerate() {",
    "        debug!(\"reading line {}\", i + 1);",
    "    }",
    "    Ok(Config::default())",
    "}",
    "// The password prompt is shown by the caller; see auth::prompt.",
    "def load_settings(path):",
    "    with open(path) as f:",
    "        return yaml.safe_load(f)",
    "const retries = 3; // token bucket refills every second",
    "import { useState } from 'react';",
];
const CONFIG_FILLER: &[&str] = &[
    "# service configuration",
    "log_level: info",
    "listen: 0.0.0.0:8080",
    "timeout_seconds = 30",
    "feature_flags:",
    "  - new_checkout",
    "region = eu-west-1",
    "max_connections: 100",
];

fn filler(path: &str, rng: &mut Rng, n: usize) -> String {
    let code = [".rs", ".py", ".js", ".ts", ".go", ".rb", ".java"]
        .iter()
        .any(|e| path.ends_with(e));
    let pool = if code { CODE_FILLER } else { CONFIG_FILLER };
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(pool[rng.below(pool.len() as u64) as usize]);
        s.push('\n');
    }
    s
}

fn uuid(rng: &mut Rng) -> String {
    generate("{H:8}-{H:4}-4{H:3}-a{H:3}-{H:12}", rng)
}

/// Hard negatives: (path, line).
fn hard_negatives(rng: &mut Rng) -> Vec<(&'static str, String)> {
    let bad_card = {
        // A Visa-shaped number whose Luhn digit is off by one.
        let mut d: Vec<u32> = vec![4];
        d.extend((0..14).map(|_| rng.below(10) as u32));
        let sum: u32 = d
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &x)| {
                if i % 2 == 0 {
                    let y = x * 2;
                    if y > 9 { y - 9 } else { y }
                } else {
                    x
                }
            })
            .sum();
        d.push(((10 - sum % 10) % 10 + 1) % 10);
        let s: String = d
            .iter()
            .map(|x| char::from_digit(*x, 10).unwrap_or('0'))
            .collect();
        format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
    };
    let bad_iban = {
        let good = generate("!iban", rng);
        let mut b = good.into_bytes();
        // Flip the last digit: the mod-97 check then fails.
        if let Some(last) = b.last_mut() {
            *last = if *last == b'9' { b'0' } else { *last + 1 };
        }
        String::from_utf8(b).unwrap_or_default()
    };
    vec![
        (
            "src/model.rs",
            format!("    id: Uuid::parse_str(\"{}\")?,", uuid(rng)),
        ),
        (
            "logs/app.log",
            format!("request_id={} status=200", uuid(rng)),
        ),
        ("config/app.yaml", format!("instance_id: {}", uuid(rng))),
        (
            "docs/CHANGELOG.md",
            format!("Fixed in commit {}.", generate("{H:40}", rng)),
        ),
        (
            "Cargo.lock",
            format!("checksum = \"{}\"", generate("{H:64}", rng)),
        ),
        (
            "SHA256SUMS",
            format!("{}  veilfs-linux-x86_64.tar.gz", generate("{H:64}", rng)),
        ),
        (
            "deploy/k8s.yaml",
            format!("    image: nginx@sha256:{}", generate("{H:64}", rng)),
        ),
        (
            "package-lock.json",
            format!(
                "  \"resolved\": \"https://registry.npmjs.org/x/-/x-1.0.0.tgz\", \"integrity\": \"sha512-{}==\"",
                generate("{B:86}", rng)
            ),
        ),
        (
            "src/git.py",
            format!("HEAD_SHA = \"{}\"", generate("{H:40}", rng)),
        ),
        ("data/orders.csv", format!("1002,{bad_card}")),
        ("data/payees.txt", format!("Pay to: {bad_iban}")),
        (
            "src/parser.rs",
            "let parser = TokenParser::new(&tokens);".into(),
        ),
        ("src/auth.py", "password = get_password(user)".into()),
        ("src/auth.py", "secret_key = settings.SECRET_KEY".into()),
        ("src/auth.py", "self.access_token = access_token".into()),
        ("src/auth.py", "API_KEY = os.environ[\"API_KEY\"]".into()),
        (
            "src/index.js",
            "const token = process.env.GITHUB_TOKEN;".into(),
        ),
        (
            "src/index.ts",
            "function setPassword(password: string): void {".into(),
        ),
        (
            "deploy/values.yaml",
            "  password: \"{{ .Values.db.password }}\"".into(),
        ),
        ("deploy/app.yaml", "  api_key: <your-api-key>".into()),
        ("deploy/app.env", "DB_PASSWORD=${DB_PASSWORD}".into()),
        ("deploy/app.env", "ADMIN_PASSWORD=changeme".into()),
        (
            "deploy/app.env",
            "AWS_SECRET_ACCESS_KEY=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
        ),
        (
            "deploy/run.sh",
            "export API_TOKEN=$(vault kv get -field=token secret/api)".into(),
        ),
        ("config/settings.ini", "password = %(DB_PASSWORD)s".into()),
        (
            "src/main.go",
            "password := os.Getenv(\"DB_PASSWORD\")".into(),
        ),
        (
            "src/main.go",
            "token, err := auth.NewToken(ctx, cfg)".into(),
        ),
        (
            "README.md",
            "Set `OPENAI_API_KEY` to your key (starts with `sk-proj-`).".into(),
        ),
        (
            "docs/api.md",
            "Send `Authorization: Bearer <token>` with every request.".into(),
        ),
        (
            "src/version.py",
            format!(
                "__version__ = \"{}.{}.{}\"",
                rng.below(5),
                rng.below(20),
                rng.below(50)
            ),
        ),
        (
            "logs/app.log",
            format!(
                "2026-01-{:02} 12:{:02}:00 INFO served in {} ms",
                1 + rng.below(28),
                rng.below(60),
                rng.below(999)
            ),
        ),
        (
            "src/colors.css",
            format!(".btn {{ color: #{}; }}", generate("{H:6}", rng)),
        ),
    ]
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let engine = Engine::load(&["secrets".into(), "pii".into()], &[]).expect("rules compile");
    let mut rng = Rng::new(0xACC);
    let (mut planted, mut caught) = (0usize, 0usize);
    let (mut negatives, mut false_pos) = (0usize, 0usize);
    let mut missed = Vec::new();
    let mut fps = Vec::new();

    for seed in 1..=seeds {
        for c in cases(seed) {
            // Positive, inside a realistic file.
            let before = filler(c.path, &mut rng, 20);
            let after = filler(c.path, &mut rng, 20);
            let file = format!("{before}{}\n{after}", c.positive);
            let Some(at) = file.find(&c.secret) else {
                continue;
            };
            planted += 1;
            let covered = match engine.scan(Path::new(c.path), file.as_bytes()) {
                ScanOutcome::Redact(r) => {
                    // Fully masked: the merged spans cover every byte of the secret.
                    let (mut pos, end) = (at as u64, (at + c.secret.len()) as u64);
                    for s in r.spans() {
                        if s.start <= pos && s.end > pos {
                            pos = s.end;
                        }
                    }
                    pos >= end
                }
                _ => false,
            };
            if covered {
                caught += 1;
            } else {
                missed.push(c.rule_id);
                if std::env::var_os("VERBOSE").is_some() {
                    eprintln!("missed {}: {}", c.rule_id, c.positive);
                }
            }
        }
        // Negatives: every rule's near-miss plus the hard negatives, one per file.
        let mut negs: Vec<(&str, String)> = cases(seed)
            .into_iter()
            .map(|c| (c.path, c.negative.to_string()))
            .collect();
        negs.extend(hard_negatives(&mut rng));
        for (path, line) in negs {
            negatives += 1;
            let before = filler(path, &mut rng, 10);
            let file = format!("{before}{line}\n");
            let (s, e) = (before.len() as u64, (before.len() + line.len()) as u64);
            let f = engine.findings(Path::new(path), file.as_bytes());
            if f.iter().any(|f| f.start < e && f.end > s) {
                false_pos += 1;
                fps.push(format!(
                    "{path}: {line} → {:?}",
                    f.iter().map(|f| &f.rule_id).collect::<Vec<_>>()
                ));
            }
        }
    }
    println!("rules: {}", engine.rule_ids().len());
    println!(
        "recall: {caught}/{planted} = {:.2}%",
        100.0 * caught as f64 / planted.max(1) as f64
    );
    println!(
        "false positives: {false_pos}/{negatives} = {:.2}%",
        100.0 * false_pos as f64 / negatives.max(1) as f64
    );
    missed.sort_unstable();
    missed.dedup();
    if !missed.is_empty() {
        println!("missed rules: {missed:?}");
    }
    fps.sort();
    fps.dedup();
    for f in fps.iter().take(20) {
        println!("FP {f}");
    }
}
