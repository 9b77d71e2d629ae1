//! Live policy (issue #19): a changed profile or rule file is in force for new opens without a
//! remount; an invalid change is rejected, logged with FILE:LINE, and the old policy stays.

use crate::common;

use std::fs;
use std::path::Path;

fn profile(deny: &str, rule_files: &str) -> String {
    format!(
        "version = 1\nname = \"live\"\n[visibility]\ndeny = [{deny}]\n[redaction]\nrule_sets = []\nrule_files = [{rule_files}]\n"
    )
}

const RULES: &str = r#"version = 1
name = "company"
description = "in-house ids"
[[rules]]
id = "acme-order-id"
description = "ACME order id"
regex = '''ACME-[0-9]{6}'''
keywords = ["acme-"]
"#;

const CUSTOMER_RULE: &str = r#"
[[rules]]
id = "acme-customer-id"
description = "ACME customer id"
regex = '''CUST-[0-9]{8}'''
keywords = ["cust-"]
"#;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Rewrites a file the way editors do: a temp file renamed over it.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

struct Env {
    scope: tempfile::TempDir,
    pdir: tempfile::TempDir,
    audit: std::path::PathBuf,
}

fn env() -> Env {
    let scope = tempfile::tempdir().unwrap();
    fs::create_dir(scope.path().join("d")).unwrap();
    fs::write(scope.path().join("d/plan.txt"), "the plan\n").unwrap();
    fs::write(scope.path().join("keep.txt"), "keep\n").unwrap();
    fs::write(
        scope.path().join("ids.txt"),
        "order ACME-123456 for CUST-48151623\n",
    )
    .unwrap();
    let pdir = tempfile::tempdir().unwrap();
    fs::write(pdir.path().join("company.toml"), RULES).unwrap();
    fs::write(
        pdir.path().join("p.toml"),
        profile("\"*.bak\"", "\"company.toml\""),
    )
    .unwrap();
    let audit = pdir.path().join("audit.jsonl");
    Env { scope, pdir, audit }
}

impl Env {
    fn mount(&self) -> common::Mount {
        common::Mount::start(
            self.scope.path(),
            &[
                "--profile",
                self.pdir.path().join("p.toml").to_str().unwrap(),
                "--audit-log",
                self.audit.to_str().unwrap(),
            ],
        )
    }

    fn audited(&self, action: &str) -> usize {
        fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .matches(&format!("\"event\":\"{action}\""))
            .count()
    }
}

#[test]
fn a_path_denied_live_disappears_from_listings_and_cached_opens() {
    let e = env();
    let m = e.mount();
    // Cached in the kernel: listed, looked up, read (read-only mounts keep them 10 minutes).
    assert_eq!(names(&m.path("d")), ["plan.txt"]);
    assert_eq!(
        fs::read_to_string(m.path("d/plan.txt")).unwrap(),
        "the plan\n"
    );
    assert!(names(&m.mp).contains(&"keep.txt".to_string()));
    save(
        &e.pdir.path().join("p.toml"),
        &profile("\"*.bak\", \"plan.txt\"", "\"company.toml\""),
    );
    assert!(
        common::eventually(|| fs::metadata(m.path("d/plan.txt")).is_err()),
        "the denied path is still there"
    );
    let err = fs::read(m.path("d/plan.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(names(&m.path("d")).is_empty());
    assert_eq!(fs::read_to_string(m.path("keep.txt")).unwrap(), "keep\n");
    assert!(common::eventually(|| e.audited("policy-reloaded") == 1));
}

#[test]
fn a_rule_added_live_masks_the_next_open() {
    let e = env();
    let m = e.mount();
    let first = fs::read_to_string(m.path("ids.txt")).unwrap();
    assert!(!first.contains("ACME-123456"), "{first}");
    assert!(first.contains("CUST-48151623"), "{first}");
    save(
        &e.pdir.path().join("company.toml"),
        &format!("{RULES}{CUSTOMER_RULE}"),
    );
    assert!(
        common::eventually(|| !fs::read_to_string(m.path("ids.txt"))
            .unwrap()
            .contains("CUST-48151623")),
        "the new rule is not applied"
    );
    let now = fs::read_to_string(m.path("ids.txt")).unwrap();
    assert_eq!(now.len(), first.len());
    assert!(now.contains("<redacted"), "{now}");
}

#[test]
fn an_invalid_change_keeps_the_old_policy_and_logs_file_and_line() {
    let e = env();
    let m = e.mount();
    assert_eq!(
        fs::read_to_string(m.path("d/plan.txt")).unwrap(),
        "the plan\n"
    );
    // Line 5 of the profile holds an unknown field; the deny on the line before must not apply.
    let bad = profile("\"plan.txt\"", "\"company.toml\"")
        .replace("[redaction]\n", "hdie = [\"x\"]\n[redaction]\n");
    assert_eq!(bad.lines().nth(4), Some("hdie = [\"x\"]"));
    save(&e.pdir.path().join("p.toml"), &bad);
    assert!(
        common::eventually(|| e.audited("policy-rejected") == 1),
        "the rejection is not audited"
    );
    // The write mode cannot change live either.
    save(
        &e.pdir.path().join("p.toml"),
        &format!(
            "{}[write]\nmode = \"snapshot\"\n",
            profile("\"plan.txt\"", "\"company.toml\"")
        ),
    );
    assert!(common::eventually(|| e.audited("policy-rejected") == 2));
    assert_eq!(
        fs::read_to_string(m.path("d/plan.txt")).unwrap(),
        "the plan\n"
    );
    assert_eq!(e.audited("policy-reloaded"), 0);
    let (_, stderr) = m.stop();
    let p = e.pdir.path().join("p.toml");
    assert!(
        stderr.contains(&format!("{}:5:", p.display())) && stderr.contains("visibility.hdie"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:9: write.mode: cannot change while mounted",
            p.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_profile_inside_the_scope_is_never_watched() {
    let e = env();
    let inside = e.scope.path().join("p.toml");
    fs::write(&inside, profile("\"*.bak\"", "")).unwrap();
    let m = common::Mount::start(
        e.scope.path(),
        &[
            "--profile",
            inside.to_str().unwrap(),
            "--audit-log",
            e.audit.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read_to_string(m.path("keep.txt")).unwrap(), "keep\n");
    save(&inside, &profile("\"keep.txt\"", ""));
    // Nothing to wait for: no watcher exists. A later mount-wide event proves time passed.
    assert_eq!(fs::read_to_string(m.path("keep.txt")).unwrap(), "keep\n");
    let (_, stderr) = m.stop();
    assert!(stderr.contains("live policy is off"), "{stderr}");
    assert_eq!(e.audited("policy-reloaded"), 0);
}

#[test]
fn a_name_judged_before_a_rule_change_is_judged_again_after_it() {
    let e = env();
    fs::create_dir(e.scope.path().join("n")).unwrap();
    fs::write(e.scope.path().join("n/CUST-90210417.txt"), "x\n").unwrap();
    let m = e.mount();
    // Judged (and remembered) under the old rules: the name holds no secret they know.
    assert_eq!(names(&m.path("n")), ["CUST-90210417.txt"]);
    save(
        &e.pdir.path().join("company.toml"),
        &format!("{RULES}{CUSTOMER_RULE}"),
    );
    assert!(
        common::eventually(|| names(&m.path("n")).is_empty()),
        "a name that holds a secret under the new rules is still listed"
    );
}

/// A denied name the agent probed is an absence the kernel keeps for the TTL (ten minutes on a
/// read-only mount); a reload that allows it must drop that absence, or the file stays
/// invisible until the TTL runs out.
#[test]
fn a_path_allowed_live_shows_although_its_absence_was_cached() {
    let e = env();
    // In the root: an absence below a directory also goes when that directory's entry is
    // invalidated, and the root has none.
    fs::write(e.scope.path().join("old.bak"), "kept\n").unwrap();
    let m = e.mount();
    for _ in 0..2 {
        let err = fs::metadata(m.path("old.bak")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
    save(
        &e.pdir.path().join("p.toml"),
        &profile("\"*.tmp\"", "\"company.toml\""),
    );
    assert!(
        common::eventually(|| fs::read_to_string(m.path("old.bak")).is_ok_and(|t| t == "kept\n")),
        "the allowed path is still absent"
    );
}
