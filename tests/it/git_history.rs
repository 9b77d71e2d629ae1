//! Git history through a real mount (issue #16, `redaction.history`): real `git` commands run
//! inside the mount. A secret committed and then removed is masked in the working tree, but the
//! default profile served `.git/objects` unscanned, so `git show HEAD~1:cfg.py` printed it. Each
//! test names what failed on the code before.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::Mount;

const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("GIT_PAGER", "cat")
        .output()
        .expect("run git")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = git(dir, args);
    assert!(o.status.success(), "git {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Everything git printed, both streams.
fn all(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A repository of three commits; with `secret`, the second adds `cfg.py` holding a token and
/// the third removes the token. Packed (`git gc`) or loose.
fn repo(secret: bool, packed: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    ok(r, &["init", "-q", "-b", "main", "."]);
    fs::write(r.join("README.md"), "# demo\n").unwrap();
    ok(r, &["add", "-A"]);
    ok(r, &["commit", "-qm", "init"]);
    let first = if secret {
        format!("API_TOKEN = \"{TOKEN}\"\n")
    } else {
        "API_TOKEN = None\n".to_string()
    };
    fs::create_dir(r.join("conf")).unwrap();
    fs::write(r.join("conf/cfg.py"), first).unwrap();
    ok(r, &["add", "-A"]);
    ok(r, &["commit", "-qm", "add cfg"]);
    fs::write(r.join("conf/cfg.py"), "API_TOKEN = os.environ['T']\n").unwrap();
    ok(r, &["commit", "-qam", "read cfg from the environment"]);
    if packed {
        ok(r, &["gc", "-q"]);
        assert!(
            fs::read_dir(r.join(".git/objects/pack")).unwrap().any(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pack"))
        );
    }
    d
}

/// The shipped default profile with `history` set to `mode`.
fn default_with_history(dir: &Path, mode: &str) -> String {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/profiles/default.toml"
    ))
    .unwrap();
    let line = "history = \"allow-if-clean\"";
    assert!(text.contains(line));
    let p = common::write_profile(
        dir,
        "p.toml",
        &text.replace(line, &format!("history = \"{mode}\"")),
    );
    p.display().to_string()
}

/// Before: `git show`/`git log -p` printed the token from the object files. Now the object
/// file holding it is refused (loose: that blob; packed: the whole pack), git fails to read it,
/// and no command prints the token; `veilfs why` tells the agent why.
#[test]
fn allow_if_clean_refuses_a_secret_in_history_loose_and_packed() {
    for packed in [false, true] {
        let r = repo(true, packed);
        let m = Mount::start(r.path(), &[]);
        let mp = m.path("");
        // The working tree no longer holds the token, and reads normally.
        assert!(
            fs::read_to_string(m.path("conf/cfg.py"))
                .unwrap()
                .contains("environ")
        );
        let show = git(&mp, &["show", "HEAD~1:conf/cfg.py"]);
        assert!(!show.status.success(), "packed={packed}: {}", all(&show));
        assert!(!all(&show).contains(TOKEN));
        let log = git(&mp, &["log", "-p"]);
        assert!(!log.status.success(), "packed={packed}: {}", all(&log));
        assert!(!all(&log).contains(TOKEN), "packed={packed}");
        // Reading the object files directly gives nothing either.
        let grep = Command::new("sh")
            .arg("-c")
            .arg("cat .git/objects/*/* .git/objects/pack/*.pack 2>/dev/null | zcat -f 2>/dev/null | grep -ac ghp_R4nd0m")
            .current_dir(&mp)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&grep.stdout).trim(),
            "0",
            "packed={packed}"
        );
        let (_, why, err) = common::veilfs(&["why", "--mount", mp.to_str().unwrap()]);
        assert!(why.contains("git history holds a secret"), "{why}{err}");
        assert!(
            why.contains("`github-pat`") && !why.contains(TOKEN),
            "{why}"
        );
        drop(m);
    }
}

/// A repository with nothing secret in its history works fully through the mount.
#[test]
fn a_clean_repository_works_fully_loose_and_packed() {
    for packed in [false, true] {
        let r = repo(false, packed);
        let m = Mount::start(r.path(), &[]);
        let mp = m.path("");
        let log = ok(&mp, &["log", "-p"]);
        assert!(
            log.contains("API_TOKEN = None") && log.contains("add cfg"),
            "{log}"
        );
        assert_eq!(
            ok(&mp, &["show", "HEAD~1:conf/cfg.py"]),
            "API_TOKEN = None\n"
        );
        assert_eq!(ok(&mp, &["status", "--short"]), "", "packed={packed}");
        assert_eq!(ok(&mp, &["log", "--oneline"]).lines().count(), 3);
        drop(m);
    }
}

/// `hide`: no object file is served, clean or not; the working tree still reads.
#[test]
fn hide_refuses_every_object_file() {
    let r = repo(false, true);
    let pdir = tempfile::tempdir().unwrap();
    let p = default_with_history(pdir.path(), "hide");
    let m = Mount::start(r.path(), &["--profile", &p]);
    let mp = m.path("");
    assert!(!git(&mp, &["log", "--oneline"]).status.success());
    assert!(!git(&mp, &["show", "HEAD~1:conf/cfg.py"]).status.success());
    assert_eq!(fs::read_to_string(m.path("README.md")).unwrap(), "# demo\n");
    let (_, why, _) = common::veilfs(&["why", "--mount", mp.to_str().unwrap()]);
    assert!(why.contains("git history is hidden"), "{why}");
}

/// `allow` serves history unscanned: the token prints. This proves the tests above would see a
/// leak.
#[test]
fn allow_serves_history_unscanned() {
    let r = repo(true, true);
    let pdir = tempfile::tempdir().unwrap();
    let p = default_with_history(pdir.path(), "allow");
    let m = Mount::start(r.path(), &["--profile", &p]);
    let out = ok(&m.path(""), &["show", "HEAD~1:conf/cfg.py"]);
    assert!(out.contains(TOKEN), "{out}");
}

/// Bound to content, not names: a pack copied out of `.git` under a name the profile serves
/// unscanned (`*.png`), and a repository whose git dir is not called `.git` (a `.git` file
/// pointing to it, as worktrees and submodules have). Before, the `.png` was served as it is.
#[test]
fn object_files_are_judged_under_any_name() {
    let r = repo(true, true);
    let root = r.path();
    let pack = fs::read_dir(root.join(".git/objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    fs::create_dir(root.join("img")).unwrap();
    fs::copy(&pack, root.join("img/logo.png")).unwrap();
    // A second checkout whose git dir is `gitdir/` (not named `.git`).
    let other = root.join("other");
    fs::create_dir(&other).unwrap();
    ok(root, &["clone", "-q", "--bare", ".", "other/gitdir"]);
    fs::write(other.join(".git"), "gitdir: gitdir\n").unwrap();
    let m = Mount::start(root, &[]);
    let e = fs::read(m.path("img/logo.png")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let show = git(
        &m.path("other"),
        &["--git-dir=gitdir", "show", "HEAD~1:conf/cfg.py"],
    );
    assert!(!show.status.success());
    assert!(!all(&show).contains(TOKEN));
}

/// `veilfs scan` names the commit and path that hold the secret (never the secret), for a
/// loose and a packed repository.
#[test]
fn scan_names_commit_and_path() {
    for packed in [false, true] {
        let r = repo(true, packed);
        let commit = ok(r.path(), &["rev-parse", "HEAD~1"]).trim().to_string();
        let (_, out, err) = common::veilfs(&["scan", r.path().to_str().unwrap()]);
        assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
        let line = format!("history\t.git/objects\t{commit}\tconf/cfg.py\tgithub-pat");
        assert!(out.lines().any(|l| l == line), "packed={packed}: {out}");
        assert!(err.contains("1 git history findings"), "{err}");
    }
}

/// A secret stored as a delta (the common case after `git gc`: older versions of a file are
/// deltas against newer ones), with offset deltas and with reference deltas
/// (`repack.useDeltaBaseOffset = false`): the delta is resolved and the secret found whole.
#[test]
fn a_secret_inside_a_delta_is_found() {
    for offset_deltas in ["true", "false"] {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        ok(r, &["init", "-q", "-b", "main", "."]);
        let body: Vec<String> = (0..300)
            .map(|i| format!("    let value_{i} = compute({i}, \"label {i}\");\n"))
            .collect();
        let write = |extra: Option<&str>| {
            let mut lines = body.clone();
            if let Some(x) = extra {
                // Smaller than its neighbours, so git stores it as a delta, not as the base.
                lines.splice(150..160, [x.to_string()]);
            }
            fs::write(r.join("main.rs"), lines.concat()).unwrap();
        };
        write(None);
        ok(r, &["add", "-A"]);
        ok(r, &["commit", "-qm", "one"]);
        write(Some(&format!("    let token = \"{TOKEN}\";\n")));
        ok(r, &["commit", "-qam", "two"]);
        write(None);
        ok(r, &["commit", "-qam", "three"]);
        let cfg = format!("repack.useDeltaBaseOffset={offset_deltas}");
        ok(
            r,
            &[
                "-c",
                &cfg,
                "repack",
                "-q",
                "-a",
                "-d",
                "-f",
                "--depth=50",
                "--window=250",
            ],
        );
        ok(r, &["prune-packed"]);
        // The secret's version really is a delta in the pack.
        let blob = ok(r, &["rev-parse", "HEAD~1:main.rs"]).trim().to_string();
        let idx = fs::read_dir(r.join(".git/objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "idx"))
            .unwrap();
        let v = ok(r, &["verify-pack", "-v", idx.to_str().unwrap()]);
        let row = v.lines().find(|l| l.starts_with(&blob)).unwrap();
        assert!(row.split_whitespace().count() >= 7, "not a delta: {row}");
        let commit = ok(r, &["rev-parse", "HEAD~1"]).trim().to_string();
        let (_, out, _) = common::veilfs(&["scan", r.to_str().unwrap()]);
        let line = format!("history\t.git/objects\t{commit}\tmain.rs\tgithub-pat");
        assert!(
            out.lines().any(|l| l == line),
            "deltas by offset {offset_deltas}: {out}"
        );
        let m = Mount::start(r, &[]);
        let show = git(&m.path(""), &["show", "HEAD~1:main.rs"]);
        assert!(!show.status.success() && !all(&show).contains(TOKEN));
        drop(m);
    }
}
