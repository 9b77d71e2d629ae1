//! Agent manifests (issue #19): `mount --manifest` / `run --manifest` narrow the profile's view
//! to what the agent declared, never widen it; `veilfs consent` tells a person what it asks for.

use crate::common;

use std::fs;
use std::path::Path;

const PROFILE: &str = r#"
version = 1
name = "test-manifest"
[visibility]
deny = [".env*"]
[redaction]
rule_sets = ["secrets"]
[write]
mode = "snapshot"
writable = ["src/", "notes.md"]
[breaker]
max_deletes = 0
"#;

const MANIFEST: &str = r#"{
  "name": "project-helper",
  "version": "1.0.0",
  "capabilities": {
    "files": {"read": ["src/**", "*.md", ".env"], "write": ["src/gen/", "docs/"]},
    "network": {"egress": ["https://api.corporate.internal"], "ingress": []},
    "exec": {"allowed_commands": ["cargo"]}
  }
}
"#;

const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

fn seed(s: &Path) {
    fs::create_dir_all(s.join("src/gen")).unwrap();
    fs::create_dir_all(s.join("docs")).unwrap();
    fs::write(
        s.join("src/a.rs"),
        format!("const T: &str = \"{TOKEN}\";\n"),
    )
    .unwrap();
    fs::write(s.join("src/gen/out.rs"), "// generated\n").unwrap();
    fs::write(s.join("README.md"), "readme\n").unwrap();
    fs::write(s.join("notes.md"), "notes\n").unwrap();
    fs::write(s.join("Cargo.toml"), "[package]\n").unwrap();
    fs::write(s.join(".env"), "X=1\n").unwrap();
    fs::write(s.join("docs/guide.txt"), "guide\n").unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn manifest_narrows_reads_and_writes_through_a_real_mount() {
    let env = common::WriteEnv::new(PROFILE, seed);
    let mf = env.pdir.path().join("agent.json");
    fs::write(&mf, MANIFEST).unwrap();
    let before = common::tree_hash(env.scope.path());
    let m = common::Mount::start(
        env.scope.path(),
        &[
            "--profile",
            env.profile.to_str().unwrap(),
            "--store",
            &env.store(),
            "--manifest",
            mf.to_str().unwrap(),
        ],
    );
    // Read: profile-visible AND asked for (docs/ only through the write grant).
    assert_eq!(names(&m.mp), ["README.md", "docs", "notes.md", "src"]);
    assert!(fs::read(m.path("Cargo.toml")).is_err());
    // Asked for, but the profile hides it: still hidden.
    assert!(fs::metadata(m.path(".env")).is_err());
    // Still redacted.
    let a = fs::read_to_string(m.path("src/a.rs")).unwrap();
    assert!(!a.contains(TOKEN) && a.contains("<redacted"), "{a}");
    // Write: profile-writable AND asked for.
    fs::write(m.path("src/gen/out.rs"), "// regenerated\n").unwrap();
    let e = fs::write(m.path("src/a.rs"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "not asked for");
    let e = fs::write(m.path("notes.md"), "x").unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EACCES),
        "profile yes, manifest no"
    );
    let e = fs::write(m.path("docs/guide.txt"), "x").unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EACCES),
        "manifest yes, profile no"
    );
    assert!(fs::write(m.path("Cargo.toml"), "x").is_err());
    drop(m);
    assert_ne!(common::tree_hash(env.scope.path()), before);
    assert_eq!(
        fs::read_to_string(env.scope.path().join("src/gen/out.rs")).unwrap(),
        "// regenerated\n"
    );
    assert_eq!(
        fs::read_to_string(env.scope.path().join("notes.md")).unwrap(),
        "notes\n"
    );
}

#[test]
fn a_manifest_asking_for_everything_gets_no_more_than_the_profile() {
    let scope = tempfile::tempdir().unwrap();
    seed(scope.path());
    let dir = tempfile::tempdir().unwrap();
    let mf = dir.path().join("greedy.toml");
    fs::write(
        &mf,
        "name = \"greedy\"\nversion = \"9\"\n[capabilities.files]\nread = [\"**\", \".env\"]\nwrite = [\"**\"]\n",
    )
    .unwrap();
    // The built-in default profile: read-only, .env hidden, secrets masked.
    let m = common::Mount::start(scope.path(), &["--manifest", mf.to_str().unwrap()]);
    assert!(fs::metadata(m.path(".env")).is_err());
    assert!(fs::metadata(m.path("Cargo.toml")).is_ok());
    let a = fs::read_to_string(m.path("src/a.rs")).unwrap();
    assert!(!a.contains(TOKEN), "{a}");
    let e = fs::write(m.path("src/a.rs"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = fs::write(m.path("new.txt"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn an_unknown_manifest_field_is_refused_naming_file_line_and_field() {
    let scope = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mf = dir.path().join("bad.json");
    fs::write(
        &mf,
        MANIFEST.replace("\"ingress\": []", "\"ingress\": [], \"proxy\": \"x\""),
    )
    .unwrap();
    let (ok, _, err) = common::veilfs(&["consent", mf.to_str().unwrap()]);
    assert!(!ok);
    let want = format!("{}:6:", mf.display());
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("capabilities.network.proxy"), "{err}");
    assert!(err.contains("unknown field `proxy`"), "{err}");
    let r = common::Mount::try_start(scope.path(), &["--manifest", mf.to_str().unwrap()]);
    let e = r.err().expect("mount must refuse a bad manifest");
    assert!(
        e.contains(&want) && e.contains("capabilities.network.proxy"),
        "{e}"
    );
}

#[test]
fn consent_screen_says_what_is_asked_granted_and_refused() {
    let env = common::WriteEnv::new(PROFILE, seed);
    let mf = env.pdir.path().join("agent.json");
    fs::write(&mf, MANIFEST).unwrap();
    let (ok, out, err) = common::veilfs(&[
        "consent",
        "--profile",
        env.profile.to_str().unwrap(),
        mf.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Agent \"project-helper\" version 1.0.0 asks for:"),
        "{out}"
    );
    assert!(out.contains("profile \"test-manifest ("), "{out}");
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start}: {out}"))
            .to_string()
    };
    assert!(line("src/**").contains("granted"), "{out}");
    assert!(
        line(".env").contains("REFUSED: the profile hides it"),
        "{out}"
    );
    assert!(
        line("src/gen/").contains("granted, in snapshot mode"),
        "{out}"
    );
    assert!(
        line("docs/").contains("REFUSED: the profile does not let the agent change it"),
        "{out}"
    );
    assert!(
        out.contains("connect to https://api.corporate.internal"),
        "{out}"
    );
    assert!(out.contains("outside veilfs' scope"), "{out}");
    let refused = out
        .split("Refused (asked for, not granted):")
        .nth(1)
        .unwrap();
    assert!(refused.contains("read `.env`"), "{out}");
    assert!(refused.contains("change `docs/`"), "{out}");
    assert!(
        refused.contains("connect to `https://api.corporate.internal`"),
        "{out}"
    );
    assert!(!refused.contains("src/**"), "{out}");
    // Against the read-only default profile, every write is refused.
    let (ok, out, _) = common::veilfs(&["consent", mf.to_str().unwrap()]);
    assert!(ok);
    assert!(
        out.contains("change `src/gen/`: the profile is read-only"),
        "{out}"
    );
}
