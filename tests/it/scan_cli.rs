//! `veilfs scan` walks in parallel: its report must still be exactly the depth-first, name-ordered
//! report, identical on every run, whatever order the walker threads finish in. Plus the
//! `veilfs rules import-*` converters as a user runs them.
use std::path::Path;
use std::process::Command;

fn scan(root: &Path, extra: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_veilfs"))
        .arg("scan")
        .args(extra)
        .arg(root)
        .output()
        .expect("run veilfs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// A small tree with enough directories and files that worker threads interleave, secrets in
/// several directories, a hidden directory (not descended into) and names that sort differently
/// by component than by full string (`a/b` vs `a-b`, `a.b`).
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let token = "token = \"ghp_R7mK2xQ9vLw4Zp8Tn3Bc6Yd1Hf5Js0Ga2Ue7\"\n";
    for d in ["a/b", "a-b", "a.b", "z/y/x", ".ssh", "src"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for i in 0..30 {
        std::fs::write(r.join(format!("src/f{i:02}.rs")), "fn main() {}\n").unwrap();
    }
    std::fs::write(r.join("a/b/conf.py"), format!("x = 1\n{token}")).unwrap();
    std::fs::write(r.join("a-b/conf.py"), token).unwrap();
    std::fs::write(r.join("a.b/key.pem"), "x").unwrap();
    std::fs::write(r.join("z/y/x/deep.env"), format!("\n\n{token}")).unwrap();
    std::fs::write(r.join(".ssh/id_rsa"), token).unwrap();
    std::fs::write(r.join(".env"), token).unwrap();
    dir
}

#[test]
fn parallel_scan_report_is_the_expected_one_on_every_run() {
    let t = tree();
    let (first, err, code) = scan(t.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    let rule = "github-pat";
    let expected = [
        "hidden\t.env\tdenied by pattern `.env*`".to_string(),
        "hidden\t.ssh\tdenied by pattern `.ssh/`".to_string(),
        format!("redact\ta/b/conf.py:2:{rule}"),
        format!("redact\ta-b/conf.py:1:{rule}"),
        "hidden\ta.b/key.pem\tdenied by pattern `*.pem`".to_string(),
        format!("redact\tz/y/x/deep.env:3:{rule}"),
    ];
    assert_eq!(first.lines().collect::<Vec<_>>(), expected, "{first}");
    assert!(err.contains("3 redaction findings, 0 errors"), "{err}");
    for _ in 0..5 {
        assert_eq!(scan(t.path(), &[]).0, first);
    }

    // `--all` interleaves visible entries in the same depth-first name order.
    let (all, _, _) = scan(t.path(), &["--all"]);
    let paths: Vec<&str> = all
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().split(':').next().unwrap())
        .collect();
    let mut firsts = paths.clone();
    firsts.dedup();
    assert_eq!(
        &firsts[..8],
        [
            ".env",
            ".ssh",
            "a",
            "a/b",
            "a/b/conf.py",
            "a-b",
            "a-b/conf.py",
            "a.b"
        ]
    );
    assert_eq!(*firsts.last().unwrap(), "z/y/x/deep.env");
    for _ in 0..3 {
        assert_eq!(scan(t.path(), &["--all"]).0, all);
    }
}

#[test]
fn import_noseyparker_prints_loadable_rules_and_names_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("np.yml");
    std::fs::write(
        &yml,
        "rules:\n- name: Frob\n  id: np.frob.1\n  pattern: '\\b(frob_[a-z0-9]{20})'\n  \
         validation: {}\n- name: LB\n  id: np.lb.1\n  pattern: '(?<=k=)([0-9]{8})'\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_veilfs"))
        .args([
            "rules".as_ref(),
            "import-noseyparker".as_ref(),
            yml.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let toml = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(toml.contains("id = \"np.frob.1\""), "{toml}");
    assert!(
        err.contains(&format!("not converted: {}: np.lb.1: ", yml.display())),
        "{err}"
    );
    assert!(
        err.contains("np.frob.1: field `validation` has no veilfs equivalent"),
        "{err}"
    );

    // The output is a rule set veilfs loads: used from a profile, it masks the token.
    let rules = dir.path().join("np.toml");
    std::fs::write(&rules, &toml).unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        format!(
            "version = 1\n[redaction]\nrule_sets = []\nrule_files = [{:?}]\n",
            rules
        ),
    )
    .unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), "x = frob_k3j4h5g6f7d8s9a0q1w2\n").unwrap();
    let (report, err, code) = scan(&tree, &["--profile", profile.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(report, "redact\ta.txt:1:np.frob.1\n");
}
