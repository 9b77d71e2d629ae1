//! Accuracy of the shipped rule sets on generated data.
//!
//! Positives: every shipped secret format (one sample per rule, `redact::samples`) crossed with
//! every syntax a secret is written in (`K=S`, `K: S`, `<K>S</K>`, `var K string = "S"`,
//! `$K .= "S"`, `System.setProperty("K", "S")`, `K ::= "S"`, `apikey S`, log lines, URL query
//! parameters, ODBC strings, CLI flags, HTTP headers, `export`, ...), each inside filler of a
//! file type that syntax is found in (13 types, extensionless and logs included). `K` is the
//! name the rule's own sample uses, or one made from the rule id. A positive counts when every
//! byte of the secret is masked.
//!
//! Negatives: every rule's near miss, hard negatives (UUIDs, git SHAs, sha256 sums, Luhn-invalid
//! cards, IBANs with bad checksums, identifiers, environment lookups), placeholders under
//! credential names in every syntax (`ghp_xxxx…`, `sk_live_abcdef…`, `<your-token>`,
//! `password = 'open_sesame'`), and look-alikes (provider prefixes with a short body, hashes,
//! UUIDs) under neutral names in every syntax. A negative counts as a false positive when any
//! mask touches it.
//!
//! Prints recall and false positives overall, per syntax, per file type and per provider
//! family (the rule id's first word). `cargo run --release --example accuracy [-- SEEDS]`
//! (default 10; the README reports 40). `VERBOSE=1` lists misses.

use std::collections::BTreeMap;
use std::path::Path;

use veilfs::testing::samples::{Rng, cases, generate};
use veilfs::{Engine, ScanOutcome};

const CODE_FILLER: &[&str] = &[
    "fn parse(input: &str) -> Result<Config, Error> {",
    "    let tokens = lexer.tokenize(input)?;",
    "    for (i, line) in lines.iter().enumerate() {",
    "        debug!(\"reading line {}\", i + 1);",
    "    Ok(Config::default())",
    "// The password prompt is shown by the caller; see auth::prompt.",
    "def load_settings(path):",
    "        return yaml.safe_load(f)",
    "const retries = 3; // token bucket refills every second",
    "import { useState } from 'react';",
    "if err != nil { return nil, fmt.Errorf(\"auth: %w\", err) }",
];
const CONFIG_FILLER: &[&str] = &[
    "# service configuration",
    "log_level: info",
    "listen: 0.0.0.0:8080",
    "timeout_seconds = 30",
    "region = eu-west-1",
    "max_connections: 100",
    "token_ttl = 3600",
];
const PROSE_FILLER: &[&str] = &[
    "The deploy script reads its settings from the environment.",
    "2026-03-01 12:00:01 INFO worker started pid=4242",
    "See the runbook for how to rotate the API token every quarter.",
    "Passwords are hashed with argon2id before they are stored.",
    "| field | meaning |",
];

/// (label, file extensions it is written in, writer of a line holding `S` under name `K`).
type Syntax = (
    &'static str,
    &'static [&'static str],
    fn(&str, &str) -> String,
);

fn kebab(k: &str) -> String {
    k.to_ascii_lowercase().replace('_', "-")
}
fn lower(k: &str) -> String {
    k.to_ascii_lowercase()
}
fn camel(k: &str) -> String {
    let mut out = String::new();
    for (i, w) in k.split('_').filter(|w| !w.is_empty()).enumerate() {
        let w = w.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&w);
        } else {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.extend(c);
            }
        }
    }
    out
}

const SYNTAXES: &[Syntax] = &[
    ("K=S", &[".env", ".properties", "", ".txt"], |k, s| {
        format!("{k}={s}")
    }),
    ("K = S", &[".ini", ".toml", ".conf", ".txt"], |k, s| {
        format!("{k} = {s}")
    }),
    ("K: S", &[".yaml", ".md", ".txt", ""], |k, s| {
        format!("{}: {s}", lower(k))
    }),
    ("K = \"S\"", &[".py", ".toml", ".rb", ".tf"], |k, s| {
        format!("{k} = \"{s}\"")
    }),
    ("\"K\": \"S\"", &[".json", ".js", ".py"], |k, s| {
        format!("  \"{}\": \"{s}\",", camel(k))
    }),
    ("<K>S</K>", &[".xml", ".config", ".txt"], |k, s| {
        let c = camel(k);
        format!("  <{c}>{s}</{c}>")
    }),
    ("var K string = \"S\"", &[".go"], |k, s| {
        format!("var {} string = \"{s}\"", camel(k))
    }),
    ("$K .= \"S\"", &[".php"], |k, s| {
        format!("${} .= \"{s}\";", lower(k))
    }),
    ("setProperty(\"K\", \"S\")", &[".java", ".kt"], |k, s| {
        format!(
            "System.setProperty(\"{}\", \"{s}\");",
            lower(k).replace('_', ".")
        )
    }),
    ("K ::= \"S\"", &[".txt", ".mk", ""], |k, s| {
        format!("{k} ::= \"{s}\"")
    }),
    ("K :::= \"S\"", &[".mk", ""], |k, s| {
        format!("{k} :::= \"{s}\"")
    }),
    ("K S (no operator)", &[".txt", ".md", ""], |k, s| {
        format!("{} {s}", lower(k))
    }),
    ("log K=S", &[".log", ""], |k, s| {
        format!(
            "2026-03-01 12:00:01 [DEBUG] Using {}={s} for upload",
            camel(k)
        )
    }),
    ("URL ?k=S", &[".log", ".md", ".txt", ".sh"], |k, s| {
        format!(
            "GET https://api.internal.test/v1/items?{}={s}&page=2",
            lower(k)
        )
    }),
    ("URL &k=S", &[".log", ".py", ".js"], |k, s| {
        format!(
            "url = \"https://api.internal.test/v1/items?page=2&{}={s}\"",
            lower(k)
        )
    }),
    ("ODBC K=S;", &[".config", ".json", ".cs"], |k, s| {
        format!(
            "Server=db.internal;Database=app;User Id=svc;{}={s};",
            camel(k)
        )
    }),
    ("--k=S", &[".sh", ".md", "", ".yaml"], |k, s| {
        format!("run-job --{}={s} --verbose", kebab(k))
    }),
    ("--k S", &[".sh", ".md", ".txt"], |k, s| {
        format!("run-job --{} {s} --verbose", kebab(k))
    }),
    ("-p S", &[".sh", ".md"], |_, s| {
        format!("mysql -h db.internal -u admin -p {s} app")
    }),
    ("X-K: S", &[".http", ".log", ".txt"], |k, s| {
        format!("X-{}: {s}", kebab(k))
    }),
    (
        "Authorization: Bearer S",
        &[".http", ".sh", ".log"],
        |_, s| format!("curl -H \"Authorization: Bearer {s}\" https://api.internal.test/"),
    ),
    ("export K=S", &[".sh", ".bash", ".zsh", ".md"], |k, s| {
        format!("export {k}={s}")
    }),
    ("K => 'S'", &[".rb", ".php", ".pl"], |k, s| {
        format!("  :{} => '{s}',", lower(k))
    }),
    ("K: str = \"S\"", &[".py"], |k, s| {
        format!("{}: str = \"{s}\"", lower(k))
    }),
];

const PLACEHOLDERS: &[&str] = &[
    "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "glpat-XXXXXXXXXXXXXXXXXXXX",
    "AIzaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "sk_live_abcdefghijklmnopqrstuvwxyz123456",
    "hvs.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "sntryu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "open_sesame",
    "<your-api-token>",
    "${API_TOKEN}",
    "{{ vault_token }}",
    "your_token_here",
    "changeme",
    "xoxb-000000000000-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxx",
    "AKIAIOSFODNN7EXAMPLE",
    "********",
    "dummy-secret-value",
];

const CREDENTIAL_NAMES: &[&str] = &[
    "API_TOKEN",
    "DB_PASSWORD",
    "SECRET_KEY",
    "GITHUB_TOKEN",
    "ACCESS_KEY",
];
const NEUTRAL_NAMES: &[&str] = &[
    "BUILD_REF",
    "COMMIT_SHA",
    "REQUEST_ID",
    "CHECKSUM",
    "IMAGE_DIGEST",
];

const FILE_STEMS: &[&str] = &[
    "config/app",
    "src/settings",
    "notes/ops",
    "deploy/run",
    "logs/app",
];

fn filler(ext: &str, rng: &mut Rng, n: usize) -> String {
    let pool = match ext {
        ".rs" | ".py" | ".js" | ".go" | ".rb" | ".java" | ".kt" | ".php" | ".cs" | ".pl" => {
            CODE_FILLER
        }
        ".md" | ".txt" | ".log" | "" | ".http" => PROSE_FILLER,
        _ => CONFIG_FILLER,
    };
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

/// The name the rule's sample assigns its secret to (`SLACK_BOT_TOKEN=@S@` → `SLACK_BOT_TOKEN`),
/// or one made from the rule id.
fn name_for(rule_id: &str, template: &str) -> String {
    let before = template.split("@S@").next().unwrap_or("");
    let trimmed = before.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    let ident: String = trimmed
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let l = ident.to_ascii_lowercase();
    let credential = ["key", "token", "secret", "pass", "pwd", "auth", "cred"]
        .iter()
        .any(|w| l.contains(w));
    if ident.len() >= 6 && credential {
        ident.to_ascii_uppercase()
    } else {
        rule_id.to_ascii_uppercase().replace(['-', '.'], "_")
    }
}

#[derive(Default)]
struct Tally {
    n: usize,
    hit: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.n += 1;
        self.hit += usize::from(ok);
    }
    fn rate(&self) -> f64 {
        self.hit as f64 / self.n.max(1) as f64
    }
}

fn covered(engine: &Engine, path: &str, file: &str, at: usize, len: usize) -> bool {
    match engine.scan(Path::new(path), file.as_bytes()) {
        ScanOutcome::Redact(r) => {
            let (mut pos, end) = (at as u64, (at + len) as u64);
            for s in r.spans() {
                if s.start <= pos && s.end > pos {
                    pos = s.end;
                }
            }
            pos >= end
        }
        _ => false,
    }
}

fn touched(engine: &Engine, path: &str, file: &str, at: usize, len: usize) -> Vec<String> {
    let (s, e) = (at as u64, (at + len) as u64);
    engine
        .findings(Path::new(path), file.as_bytes())
        .into_iter()
        .filter(|f| f.start < e && f.end > s)
        .map(|f| f.rule_id)
        .collect()
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let verbose = std::env::var_os("VERBOSE").is_some();
    let engine = Engine::load(&["secrets".into(), "pii".into()], &[]).expect("rules compile");
    let pii: Vec<String> = Engine::load(&["pii".into()], &[])
        .expect("pii compiles")
        .rule_ids();
    let mut rng = Rng::new(0xACC);
    let mut overall = Tally::default();
    let mut samples = Tally::default();
    let mut by_syntax: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut by_ext: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_family: BTreeMap<String, Tally> = BTreeMap::new();
    let mut neg = Tally::default();
    let mut neg_by_kind: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut missed: BTreeMap<String, usize> = BTreeMap::new();
    let mut fps: BTreeMap<String, usize> = BTreeMap::new();

    for seed in 1..=seeds {
        let cs = cases(seed);
        for c in &cs {
            // The rule's own sample inside a realistic file.
            let ext = Path::new(c.path)
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default();
            let file = format!(
                "{}{}\n{}",
                filler(&ext, &mut rng, 6),
                c.positive,
                filler(&ext, &mut rng, 6)
            );
            if let Some(at) = file.find(&c.secret) {
                let ok = covered(&engine, c.path, &file, at, c.secret.len());
                samples.add(ok);
                if !ok {
                    *missed.entry(format!("sample {}", c.rule_id)).or_default() += 1;
                }
            }
            // Every syntax, for every secret that is one token.
            // Secrets that are a part of a larger structure (the password of a URL, the path of
            // a webhook, an htpasswd hash) are tested by their own sample above only.
            let embedded = c
                .positive
                .find(&c.secret)
                .and_then(|at| c.positive[..at].chars().next_back())
                .is_some_and(|ch| matches!(ch, '/' | ':' | '@' | '$' | '|'));
            if pii.iter().any(|p| p == c.rule_id)
                || embedded
                || c.secret.len() < 8
                || c.secret
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'\\')
            {
                continue;
            }
            let name = name_for(c.rule_id, &c.positive.replacen(&c.secret, "@S@", 1));
            let family = c.rule_id.split('-').next().unwrap_or("").to_string();
            for (si, (label, exts, write)) in SYNTAXES.iter().enumerate() {
                let ext = exts[(seed as usize + si) % exts.len()];
                let stem = FILE_STEMS[(seed as usize + si) % FILE_STEMS.len()];
                let path = format!("{stem}{ext}");
                let line = write(&name, &c.secret);
                let before = filler(ext, &mut rng, 5);
                let file = format!("{before}{line}\n{}", filler(ext, &mut rng, 5));
                let Some(at) = line.find(&c.secret) else {
                    continue;
                };
                let ok = covered(&engine, &path, &file, before.len() + at, c.secret.len());
                overall.add(ok);
                by_syntax.entry(label).or_default().add(ok);
                by_ext
                    .entry(if ext.is_empty() {
                        "(none)".into()
                    } else {
                        ext.into()
                    })
                    .or_default()
                    .add(ok);
                by_family.entry(family.clone()).or_default().add(ok);
                if !ok {
                    *missed
                        .entry(format!("{label} | {}", c.rule_id))
                        .or_default() += 1;
                    if verbose {
                        eprintln!("missed {} [{label}] {path}: {line}", c.rule_id);
                    }
                }
            }
        }

        // Negatives.
        let mut negs: Vec<(&str, String, String)> = Vec::new(); // (kind, path, line)
        for c in &cs {
            negs.push(("near miss", c.path.to_string(), c.negative.to_string()));
        }
        for (path, line) in hard_negatives(&mut rng) {
            negs.push(("hard", path.to_string(), line));
        }
        for (si, (label, exts, write)) in SYNTAXES.iter().enumerate() {
            let ext = exts[(seed as usize + si) % exts.len()];
            // These two put any value in a credential's place whatever the name.
            let nameless = matches!(*label, "-p S" | "Authorization: Bearer S");
            let path = format!("{}{ext}", FILE_STEMS[si % FILE_STEMS.len()]);
            for (pi, p) in PLACEHOLDERS.iter().enumerate() {
                let k = CREDENTIAL_NAMES[(pi + si) % CREDENTIAL_NAMES.len()];
                negs.push(("placeholder", path.clone(), write(k, p)));
            }
            let look_alikes = [
                generate("{H:40}", &mut rng),
                generate("{H:64}", &mut rng),
                uuid(&mut rng),
                generate("sha256:{H:64}", &mut rng),
                generate("ghp_{A:20}", &mut rng),
                generate("glpat-{b:12}", &mut rng),
                generate("xoxb-{D:5}", &mut rng),
                generate("AKIA{V:8}", &mut rng),
                "TokenParserFactory".to_string(),
                "v1.24.3-rc1".to_string(),
            ];
            for (li, v) in look_alikes.iter().enumerate().filter(|_| !nameless) {
                let k = NEUTRAL_NAMES[(li + si) % NEUTRAL_NAMES.len()];
                negs.push(("look-alike", path.clone(), write(k, v)));
            }
        }
        for (kind, path, line) in negs {
            let ext = Path::new(&path)
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default();
            let before = filler(&ext, &mut rng, 5);
            let file = format!("{before}{line}\n");
            let t = touched(&engine, &path, &file, before.len(), line.len());
            let fp = !t.is_empty();
            neg.add(fp);
            neg_by_kind.entry(kind).or_default().add(fp);
            if fp {
                *fps.entry(format!("[{kind}] {path}: {line} → {t:?}"))
                    .or_default() += 1;
            }
        }
    }

    println!("rules: {}", engine.rule_ids().len());
    println!(
        "rule samples in realistic files: {}/{} = {:.4}",
        samples.hit,
        samples.n,
        samples.rate()
    );
    println!(
        "cross product (formats x {} syntaxes x {} file types): recall {}/{} = {:.4}",
        SYNTAXES.len(),
        by_ext.len(),
        overall.hit,
        overall.n,
        overall.rate()
    );
    println!("false positives: {}/{} = {:.4}", neg.hit, neg.n, neg.rate());
    println!("\nrecall per syntax:");
    for (k, t) in &by_syntax {
        println!("  {:<28} {:>6}/{:<6} {:.4}", k, t.hit, t.n, t.rate());
    }
    println!("\nrecall per file type:");
    for (k, t) in &by_ext {
        println!("  {:<10} {:>6}/{:<6} {:.4}", k, t.hit, t.n, t.rate());
    }
    println!("\nrecall per provider family (rule id's first word; below 1.0 first):");
    let mut fam: Vec<_> = by_family.iter().collect();
    fam.sort_by(|a, b| a.1.rate().total_cmp(&b.1.rate()).then(a.0.cmp(b.0)));
    let full = fam.iter().filter(|(_, t)| t.hit == t.n).count();
    for (k, t) in fam.iter().filter(|(_, t)| t.hit < t.n) {
        println!("  {:<16} {:>6}/{:<6} {:.4}", k, t.hit, t.n, t.rate());
    }
    println!("  ... and {full} families at 1.0000");
    println!("\nfalse positives per kind of negative:");
    for (k, t) in &neg_by_kind {
        println!("  {:<12} {:>6}/{:<6} {:.4}", k, t.hit, t.n, t.rate());
    }
    let mut m: Vec<_> = missed.into_iter().collect();
    m.sort_by_key(|e| std::cmp::Reverse(e.1));
    if !m.is_empty() {
        println!("\nmost missed (syntax | rule: count):");
        for (k, n) in m.iter().take(25) {
            println!("  {k}: {n}");
        }
    }
    let mut f: Vec<_> = fps.into_iter().collect();
    f.sort_by_key(|e| std::cmp::Reverse(e.1));
    if !f.is_empty() {
        println!("\nfalse positives (count):");
        for (k, n) in f.iter().take(25) {
            println!("  {n} x {k}");
        }
    }
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
            "data/payees.txt",
            format!("IBAN: {}", generate("!iban", rng).replace(' ', "  ")),
        ),
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
            "docs/setup.md",
            "password = 'open_sesame'  # the tutorial's example".into(),
        ),
        ("src/tok.py", "token_type = \"bearer\"".into()),
        ("src/llm.py", "max_tokens = 4096".into()),
        (
            "docs/auth.md",
            "The token expires after thirty minutes.".into(),
        ),
        ("Makefile", "\tmkdir -p build/release".into()),
        (
            "src/app.ts",
            "const secretName = \"billing-service-secret\";".into(),
        ),
        (
            "src/App.java",
            "private static final String TOKEN_HEADER = \"X-Auth-Token\";".into(),
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
