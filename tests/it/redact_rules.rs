//! Every shipped rule against its positive and near-miss negative sample, plus rule-set loading.

use std::collections::BTreeSet;
use std::path::Path;

use veilfs::testing::samples::cases;
use veilfs::{Engine, ScanOutcome, mask_all};

fn engine() -> Engine {
    Engine::load(&["secrets".into(), "pii".into()], &[]).expect("built-in rule sets compile")
}

#[test]
fn every_rule_has_a_case() {
    let e = engine();
    let ids: BTreeSet<String> = e.rule_ids().into_iter().collect();
    let covered: BTreeSet<String> = cases(1).iter().map(|c| c.rule_id.to_string()).collect();
    let missing: Vec<_> = ids.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&ids).collect();
    assert!(missing.is_empty(), "rules without a test case: {missing:?}");
    assert!(stale.is_empty(), "cases for unknown rules: {stale:?}");
}

#[test]
fn a_shipped_rule_set_never_loads_fewer_rules_than_it_ships() {
    let s = Engine::load(&["secrets".into()], &[]).unwrap();
    let p = Engine::load(&["pii".into()], &[]).unwrap();
    assert!(s.rule_ids().len() >= 60, "{}", s.rule_ids().len());
    assert!(p.rule_ids().len() >= 6);
}

#[test]
fn positives_are_masked_by_their_rule() {
    let e = engine();
    let mut failures = Vec::new();
    for seed in 1..=20 {
        for c in cases(seed) {
            let data = c.positive.as_bytes();
            let Some(at) = c.positive.find(&c.secret) else {
                failures.push(format!("{}: secret not in sample", c.rule_id));
                continue;
            };
            let (s, t) = (at as u64, (at + c.secret.len()) as u64);
            let f = e.findings(Path::new(c.path), data);
            if !f
                .iter()
                .any(|f| f.rule_id == c.rule_id && f.start <= s && f.end >= t)
            {
                failures.push(format!(
                    "{} (seed {seed}): not found in {:?}; findings {:?}",
                    c.rule_id, c.positive, f
                ));
                continue;
            }
            match e.scan(Path::new(c.path), data) {
                ScanOutcome::Redact(r) => {
                    let m = mask_all(data, &r);
                    assert_eq!(m.len(), data.len());
                    let shown = String::from_utf8_lossy(&m);
                    if shown.contains(&c.secret) {
                        failures.push(format!("{}: secret still visible: {shown}", c.rule_id));
                    }
                }
                other => failures.push(format!("{}: scan gave {other:?}", c.rule_id)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negatives_are_left_alone() {
    let e = engine();
    let mut failures = Vec::new();
    for c in cases(1) {
        let f = e.findings(Path::new(c.path), c.negative.as_bytes());
        if !f.is_empty() {
            failures.push(format!("{}: {:?} → {:?}", c.rule_id, c.negative, f));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn any_read_window_equals_the_masked_file() {
    let e = engine();
    let c = cases(3);
    let pick = |id: &str| c.iter().find(|c| c.rule_id == id).unwrap().positive.clone();
    let file = format!(
        "intro line\n{}\nmiddle\n{}\n{}\ntrailer\n",
        pick("github-pat"),
        pick("private-key"),
        pick("postgres-url-password")
    );
    let data = file.as_bytes();
    let ScanOutcome::Redact(r) = e.scan(Path::new("notes/mixed.md"), data) else {
        panic!("nothing found")
    };
    assert!(r.spans().len() >= 3, "{:?}", r.spans());
    let full = mask_all(data, &r);
    assert_eq!(full.len(), data.len());
    assert_eq!(
        full.iter().filter(|&&b| b == b'\n').count(),
        data.iter().filter(|&&b| b == b'\n').count(),
        "line structure kept"
    );
    for off in 0..data.len() {
        for len in [0, 1, 2, 3, 7, 16, 64, 200] {
            let end = (off + len).min(data.len());
            let mut w = data[off..end].to_vec();
            r.apply(off as u64, &mut w);
            assert_eq!(w, &full[off..end], "offset {off} len {len}");
        }
    }
}

#[test]
fn rule_file_errors_name_file_line_and_rule() {
    let dir = std::env::temp_dir().join(format!("veilfs-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("team.toml");
    std::fs::write(
        &p,
        "version = 1\nname = \"team\"\n\n[[rules]]\nid = \"acme\"\nkeywords = [\"acme\"]\nregex = '''acme_[a-z'''\n",
    )
    .unwrap();
    let err = Engine::load(&[], std::slice::from_ref(&p))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}:7:9: rule `acme`: regex does not compile",
            p.display()
        )),
        "{err}"
    );
    std::fs::write(&p, "version = 1\nname = \"team\"\n[[rules]]\nid = \"aws-access-key-id\"\nregex = 'x'\nkeywords = ['x']\n").unwrap();
    let err = Engine::load(&["secrets".into()], std::slice::from_ref(&p))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("duplicate rule id `aws-access-key-id`: redaction-rules/secrets.toml:"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fingerprint_tracks_rules() {
    let a = Engine::load(&["secrets".into()], &[]).unwrap();
    let b = Engine::load(&["secrets".into(), "pii".into()], &[]).unwrap();
    let a2 = Engine::load(&["secrets".into()], &[]).unwrap();
    assert_eq!(a.fingerprint(), a2.fingerprint());
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), Engine::empty().fingerprint());
    assert!(Engine::empty().is_empty() && !a.is_empty());
}

#[test]
fn placeholders_and_lookups_are_not_masked() {
    let e = engine();
    let clean = [
        ("app.yaml", "password: ${DB_PASSWORD}\n"),
        ("app.yaml", "password: \"{{ db_password }}\"\n"),
        ("app.env", "API_KEY=$(vault read -field=key kv/api)\n"),
        ("app.env", "SECRET_KEY=changeme\n"),
        ("app.yaml", "api_key: <your-key>\n"),
        ("app.env", "TOKEN=xxxxxxxxxxxxxxxxxxxx\n"),
        ("cfg.py", "SECRET = \"example-secret-value-123\"\n"),
        ("index.js", "const apiKey = process.env.API_KEY;\n"),
        ("main.py", "token = os.environ[\"TOKEN\"]\n"),
        ("main.py", "password = user_password\n"),
        ("lexer.rs", "let p = TokenParser::new(&input);\n"),
    ];
    for (p, text) in clean {
        let f = e.findings(Path::new(p), text.as_bytes());
        assert!(f.is_empty(), "{p}: {text:?} → {f:?}");
    }
    let dirty = [
        ("app.env", "DB_PASSWORD=Tr0ub4dor&3x\n"),
        ("settings.py", "SECRET_KEY = \"q8Jv2LmZx7RtY4pWn6Ks3Hd9\"\n"),
        ("config.json", "{\"password\": \"s3cr3t-P@ss\"}\n"),
        ("app.ini", "password = hunter2hunter\n"),
        ("main.go", "password := \"gopher-Pass-42\"\n"),
    ];
    for (p, text) in dirty {
        let f = e.findings(Path::new(p), text.as_bytes());
        assert!(!f.is_empty(), "{p}: {text:?} not found");
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_keep_length() {
    use veilfs::testing::samples::Rng;
    let e = engine();
    let mut rng = Rng::new(99);
    let seeds: Vec<String> = cases(5).into_iter().map(|c| c.positive).collect();
    for round in 0..300 {
        let mut data: Vec<u8> = Vec::new();
        while data.len() < 64 + round * 7 {
            match rng.below(4) {
                0 => {
                    data.extend_from_slice(seeds[rng.below(seeds.len() as u64) as usize].as_bytes())
                }
                1 => data.push(b'\n'),
                _ => data.push((rng.below(255) + 1) as u8),
            }
        }
        if round % 3 == 0 {
            // Cut anywhere, including inside a secret or a UTF-8 sequence.
            data.truncate(rng.below(data.len() as u64) as usize);
        }
        if round % 5 == 0 {
            // UTF-16LE with an odd trailing byte.
            let text = String::from_utf8_lossy(&data).into_owned();
            data = vec![0xFF, 0xFE];
            for u in text.encode_utf16() {
                data.extend_from_slice(&u.to_le_bytes());
            }
            data.push(b'x');
        }
        let p = Path::new(["a.env", "b.yaml", "c.rs", "d.txt"][round % 4]);
        let _ = e.findings(p, &data);
        if let ScanOutcome::Redact(r) = e.scan(p, &data) {
            let m = mask_all(&data, &r);
            assert_eq!(m.len(), data.len());
            for s in r.spans() {
                assert!(s.start < s.end && s.end <= data.len() as u64);
            }
            let off = rng.below(data.len() as u64 + 1);
            let len = rng.below(300) as usize;
            let end = (off as usize + len).min(data.len());
            let mut w = data[off as usize..end].to_vec();
            r.apply(off, &mut w);
            assert_eq!(w, &m[off as usize..end]);
        }
    }
}

/// Issue #16: a German IBAN written in groups of four holds a Luhn-valid 16-digit run; it is an
/// IBAN, not a card number. A card number at the end of a line or before a word still counts.
#[test]
fn iban_with_spaces_is_not_a_card() {
    let e = engine();
    for line in [
        "Pay to: DE66 4871 1725 9485 5210 28\n",
        "IBAN DE66 4871 1725 9485 5210 28 (Berlin)\n",
    ] {
        let ids: Vec<String> = e
            .findings(Path::new("payees.txt"), line.as_bytes())
            .into_iter()
            .map(|f| f.rule_id)
            .collect();
        assert!(
            !ids.iter().any(|i| i == "credit-card-number"),
            "{line}: {ids:?}"
        );
    }
    for line in [
        "card 4111 1111 1111 1111\n",
        "card 4111 1111 1111 1111 exp 12/29\n",
    ] {
        let ids: Vec<String> = e
            .findings(Path::new("orders.txt"), line.as_bytes())
            .into_iter()
            .map(|f| f.rule_id)
            .collect();
        assert!(
            ids.iter().any(|i| i == "credit-card-number"),
            "{line}: {ids:?}"
        );
    }
}

/// Issue #16: documentation values are not secrets, whatever rule matches their shape.
#[test]
fn placeholders_are_never_masked() {
    let e = engine();
    for line in [
        "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "token: glpat-XXXXXXXXXXXXXXXXXXXX",
        "key = \"AIzaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
        "STRIPE_KEY=sk_live_abcdefghijklmnopqrstuvwxyz123456",
        "VAULT_TOKEN=hvs.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "SENTRY_TOKEN=sntryu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "password = 'open_sesame'",
        "API_TOKEN=<your-token-here>",
        "<apiKey>${API_KEY}</apiKey>",
        "export SECRET_KEY={{ secret_key }}",
    ] {
        let f = e.findings(Path::new("docs/setup.md"), line.as_bytes());
        assert!(f.is_empty(), "{line}: {f:?}");
    }
}

/// Issue #16: generic secrets in every syntax, in file types that are not config files.
#[test]
fn generic_secrets_in_any_syntax_and_file_type() {
    let e = engine();
    let s = "q8Jv2LmZx7RtY4pWn6Ks3Hd9";
    let p = "Tr0ub4dor&3x9";
    for (path, line, secret) in [
        ("notes.txt", format!("PASSWORD={p}"), p),
        ("README.md", format!("api_token: {s}"), s),
        ("main.py", format!("API_TOKEN = {s}"), s),
        ("app.log", format!("[DEBUG] Using Token={s}"), s),
        (
            "run",
            format!("curl https://x.test/v1?page=2&api_key={s}"),
            s,
        ),
        (
            "App.java",
            format!("System.setProperty(\"api.token\", \"{s}\");"),
            s,
        ),
        ("main.go", format!("var apiToken string = \"{s}\""), s),
        ("index.php", format!("$api_token .= \"{s}\";"), s),
        (
            "web.config",
            format!("<add name=\"db\" connectionString=\"Server=db;User Id=sa;Password={p};\" />"),
            p,
        ),
        ("deploy.sh", format!("mysql -u root -p {p} app"), p),
        ("req.http", format!("X-Api-Token: {s}"), s),
        ("settings.xml", format!("<apiKey>{s}</apiKey>"), s),
        ("Makefile", format!("API_TOKEN ::= \"{s}\""), s),
        ("notes.txt", format!("apikey {s}"), s),
        (
            "tokens.json",
            "{\"token\": \"hGkqPzWbTnRxYvLmQsDfJkWp\"}".to_string(),
            "hGkqPzWbTnRxYvLmQsDfJkWp",
        ),
    ] {
        let at = line.find(secret).unwrap() as u64;
        let f = e.findings(Path::new(path), line.as_bytes());
        assert!(
            f.iter()
                .any(|f| f.start <= at && f.end >= at + secret.len() as u64),
            "{path}: {line} → {f:?}"
        );
    }
}
