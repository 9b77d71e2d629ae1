//! Watermarks through real mounts (issue #20): a visible footer line in every kind of office
//! document view, read by the real consumers' libraries and by `veilfs trace` from a copy whose
//! properties were stripped; per-session mask codes that `veilfs trace` turns back into the
//! session, mount and time, that a saved scan verdict never carries into another session, and
//! that an agent's edit of a masked file is merged through (the served record keeps them).

use crate::common;
use crate::documents::{DOCS, TOKEN, office, python};

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Mount, tree_hash, write_profile};
use serde_json::Value;

fn mount(scope: &Path, profile: &Path, store: &Path) -> Mount {
    Mount::start(
        scope,
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
    )
}

/// The sessions of a store's audit trails, oldest first.
fn sessions(store: &Path) -> Vec<String> {
    let mut s: Vec<String> = fs::read_dir(store.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    s.sort();
    s
}

/// `veilfs trace ARGS` with `stdin` as its input: (success, stdout, stderr).
fn trace(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut c = Command::new(common::bin())
        .arg("trace")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Copies the document `from` to `to` without its property members (`docProps/core.xml`,
/// `meta.xml`), as a tool that strips metadata would.
fn strip_properties(from: &Path, to: &Path) {
    let py = format!(
        r#"
import zipfile
with zipfile.ZipFile({from:?}) as src, zipfile.ZipFile({to:?}, "w", zipfile.ZIP_DEFLATED) as dst:
    for i in src.infolist():
        if i.filename not in ("docProps/core.xml", "meta.xml"):
            dst.writestr(i, src.read(i.filename))
"#,
        from = from.to_str().unwrap(),
        to = to.to_str().unwrap()
    );
    let o = Command::new(python()).args(["-c", &py]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `[watermark] footer = true`: every kind of document view carries a visible line naming the
/// mount, session and time, which the consumers' libraries read as text of the document (a
/// paragraph, a cell, a text box); `veilfs trace` reads the mark from the property, and from the
/// footer of a copy without the property. The real files are untouched.
#[test]
fn every_document_view_carries_a_visible_footer_line_that_trace_reads_back() {
    let scope = tempfile::tempdir().unwrap();
    office(&[
        "make",
        scope.path().to_str().unwrap(),
        TOKEN,
        "jane.roe@example.org",
    ]);
    let before = tree_hash(scope.path());
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().join("s");
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\ndocuments = [\"*.docx\", \"*.xlsx\", \"*.pptx\", \"*.odt\", \"*.ods\", \"*.odp\"]\n[watermark]\ndocuments = true\nfooter = true\n",
    );
    let m = mount(scope.path(), &profile, &store_dir);
    let mp = m.path("").display().to_string();
    let seen: Value =
        serde_json::from_str(&office(&["read", m.path("").to_str().unwrap()])).unwrap();
    let out = tempfile::tempdir().unwrap();
    for doc in DOCS {
        fs::copy(m.path(doc), out.path().join(doc)).unwrap();
    }
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
    let session = sessions(&store_dir).pop().unwrap();
    let mark = format!("veilfs watermark: mount={mp} session={session} mounted=");
    for doc in DOCS {
        let texts = seen[doc].as_array().unwrap();
        assert!(
            texts
                .iter()
                .any(|t| t.as_str().unwrap().contains("Served through veilfs")
                    && t.as_str().unwrap().contains(&mark)),
            "{doc}: no footer line in {texts:?}"
        );
        // From the property, and from the footer of a copy without it.
        let stripped = out.path().join(format!("stripped-{doc}"));
        strip_properties(&out.path().join(doc), &stripped);
        for f in [out.path().join(doc), stripped] {
            let (ok, o, e) = trace(&[f.to_str().unwrap()], "");
            assert!(ok && o.contains(&mark), "{}: {o} {e}", f.display());
        }
    }
    assert_eq!(tree_hash(scope.path()), before);
}

/// The code a view's mask of `rule` carries (`<redacted:RULE:CODE>`).
fn code_in(view: &str, rule: &str) -> String {
    let label = format!("<redacted:{rule}:");
    let at = view
        .find(&label)
        .unwrap_or_else(|| panic!("no coded mask in {view}"))
        + label.len();
    let code = &view[at..at + 4];
    assert_eq!(&view[at + 4..at + 5], ">", "{view}");
    code.to_string()
}

const ENV: &str = "GH_TOKEN=ghp_Zr8Kq2mVx7LpT4wNc9HbY3dFs6JgQ1eRu5Ak\nREGION=eu-west-1\n";

/// `[watermark] mask_codes = true`: masks carry a code of the session (the view keeps the
/// file's length, in documents too); a new session of the same store gets another code even
/// though its scan verdicts come from the saved cache; `veilfs trace` names each mask's session
/// and mount from a pasted line or a copied file, and nothing for an unknown code.
#[test]
fn masks_carry_a_session_code_that_trace_names_and_no_cache_carries_across_sessions() {
    let scope = tempfile::tempdir().unwrap();
    fs::write(scope.path().join("app.env"), ENV).unwrap();
    office(&[
        "make",
        scope.path().to_str().unwrap(),
        TOKEN,
        "jane.roe@example.org",
    ]);
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().join("s");
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\ndocuments = [\"*.docx\", \"*.xlsx\", \"*.pptx\", \"*.odt\", \"*.ods\", \"*.odp\"]\n[cache]\npersist_scans = true\n[watermark]\nmask_codes = true\n",
    );
    let mut views = Vec::new();
    let mut mps = Vec::new();
    for _ in 0..2 {
        let m = mount(scope.path(), &profile, &store_dir);
        let v = fs::read_to_string(m.path("app.env")).unwrap();
        assert_eq!(v.len(), ENV.len(), "{v}");
        assert!(
            !v.contains("ghp_Zr8") && v.contains("REGION=eu-west-1"),
            "{v}"
        );
        let docs: Value =
            serde_json::from_str(&office(&["read", m.path("").to_str().unwrap()])).unwrap();
        let code = code_in(&v, "github-pat");
        assert!(
            docs["report.docx"].as_array().unwrap().iter().any(|t| t
                .as_str()
                .unwrap()
                .contains(&format!("<redacted:github-pat:{code}>"))),
            "{docs}"
        );
        mps.push(m.path("").display().to_string());
        views.push(v);
        let (status, err) = m.stop();
        assert!(status.success(), "{err}");
    }
    assert!(store_dir.join("scan-cache").exists());
    let s = sessions(&store_dir);
    assert_eq!(s.len(), 2, "{s:?}");
    let (c1, c2) = (
        code_in(&views[0], "github-pat"),
        code_in(&views[1], "github-pat"),
    );
    // 16-bit codes of two sessions: equal once in 65536 runs.
    assert_ne!(c1, c2, "the second session was served the first one's code");
    let store_arg = store_dir.to_str().unwrap();
    for (i, code) in [c1, c2].iter().enumerate() {
        let pasted =
            format!("ticket 4711: the log shows GH_TOKEN=<redacted:github-pat:{code}>*** again");
        let (ok, o, e) = trace(&["--store", store_arg, "-"], &pasted);
        assert!(ok, "{o} {e}");
        assert!(
            o.contains(&format!("session {} ", s[i]))
                && o.contains(&format!("mount {}", mps[i]))
                && !o.contains(&s[1 - i]),
            "{o}"
        );
    }
    // A copied view names its session too.
    let copy = tempfile::NamedTempFile::new().unwrap();
    fs::write(copy.path(), &views[1]).unwrap();
    let (ok, o, _) = trace(&["--store", store_arg, copy.path().to_str().unwrap()], "");
    assert!(ok && o.contains(&format!("session {} ", s[1])), "{o}");
    let (ok, _, _) = trace(
        &["--store", store_arg, "-"],
        "<redacted:github-pat>****** plain",
    );
    assert!(!ok);
}

fn write_mode_profile(mode: &str) -> String {
    format!(
        "version = 1\n[visibility]\ndeny = []\n[redaction]\nrule_sets = [\"secrets\"]\n[write]\nmode = \"{mode}\"\n[watermark]\nmask_codes = true\n"
    )
}

fn seed(s: &Path) {
    fs::write(s.join("app.env"), ENV).unwrap();
}

/// An agent's edit of another line of a file whose masks carry codes reaches the real file
/// (snapshot mode at the write; overlay mode at commit, against the served record), and the
/// secret stays: the view merged against is the one with the codes the agent saw.
#[test]
fn an_edit_of_a_file_with_coded_masks_is_merged_in_snapshot_and_overlay_modes() {
    for mode in ["snapshot", "overlay"] {
        let e = common::WriteEnv::new(&write_mode_profile(mode), seed);
        let m = e.mount();
        let p: PathBuf = m.path("app.env");
        let v = fs::read_to_string(&p).unwrap();
        code_in(&v, "github-pat");
        // An editor's save: a new file renamed over the original.
        let tmp = m.path("app.env.swp");
        fs::write(&tmp, v.replace("eu-west-1", "us-east-2")).unwrap();
        fs::rename(&tmp, &p).unwrap();
        let (status, err) = m.stop();
        assert!(status.success(), "{err}");
        if mode == "overlay" {
            let (ok, o, err) = common::veilfs(&["commit", "--store", &e.store()]);
            assert!(ok, "{o} {err}");
        }
        assert_eq!(
            fs::read_to_string(e.scope.path().join("app.env")).unwrap(),
            ENV.replace("eu-west-1", "us-east-2"),
            "{mode}"
        );
    }
}
