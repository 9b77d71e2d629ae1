//! `veilfs why` (issue #19): the agent asks a live mount why it was denied, and hears the
//! reasons in plain words, never a name it did not ask for.

use crate::common;

use std::fs;
use std::process::Command;

const PROFILE: &str = r#"
version = 1
name = "test-why"
description = "one hidden file inside a visible directory"
[visibility]
deny = ["/a/hidden.txt"]
[redaction]
rule_sets = []
[write]
mode = "snapshot"
"#;

#[test]
fn why_tells_the_reasons_of_the_agents_denials_without_hidden_names() {
    let scope = tempfile::tempdir().unwrap();
    fs::create_dir(scope.path().join("a")).unwrap();
    fs::write(scope.path().join("a/hidden.txt"), "s\n").unwrap();
    fs::write(scope.path().join("a/seen.txt"), "ok\n").unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let profile = common::write_profile(pdir.path(), "p.toml", PROFILE);
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "{bin} why; mv a b 2>/dev/null; (echo x > a/hidden.txt) 2>/dev/null; \
         echo ---; {bin} why; echo ---; {bin} why b; echo ---; {bin} why a/seen.txt",
        bin = common::bin()
    );
    let out = Command::new(common::bin())
        .arg("run")
        .arg("--profile")
        .arg(&profile)
        .arg("--store")
        .arg(data.path().join("store"))
        .arg(scope.path())
        .args(["--", "sh", "-c", &script])
        .env("XDG_DATA_HOME", data.path())
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{o}{err}");
    let parts: Vec<&str> = o.split("---\n").collect();
    assert_eq!(parts.len(), 4, "{o}");
    assert!(parts[0].contains("nothing was denied"), "{o}");
    // The rename of `a` is told, with a reason that names nothing inside it.
    assert!(parts[1].contains("rename denied"), "{o}");
    assert!(parts[1].contains("a -> b"), "{o}");
    assert!(parts[1].contains("something inside is hidden"), "{o}");
    // The create the agent asked for by name is told with that name: it named it.
    assert!(parts[1].contains("a/hidden.txt"), "{o}");
    assert!(
        parts[2].contains("rename denied") && !parts[2].contains("hidden.txt"),
        "{o}"
    );
    // A denial of a directory's rename concerns everything in it.
    assert!(parts[3].contains("a -> b"), "{o}");
    assert!(!parts[2].contains("hidden.txt is hidden"), "{o}");
    assert!(!parts[1].contains("hidden.txt is hidden"), "{o}");
}
