//! Every shipped rule against its positive and near-miss negative sample, plus rule-set loading.

use std::collections::BTreeSet;
use std::path::Path;

use veilfs::redact::samples::cases;
use veilfs::redact::{Engine, ScanOutcome, mask_all};

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
fn shipped_set_sizes() {
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
