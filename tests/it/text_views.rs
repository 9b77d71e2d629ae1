//! Text views (`[present] text`) through real mounts: a PDF or office document the profile
//! shows as text is refused itself, and a read-only virtual sibling `NAME.txt` holds its
//! extracted text with masks where the secrets and personal data were. A real `NAME.txt`
//! wins; a PDF that cannot be extracted gives a refused view with an audited reason.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::common::{Mount, tree_hash, veilfs, write_profile};

const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

const PROFILE: &str = r#"
version = 1
name = "text-views"
[redaction]
rule_sets = ["secrets", "pii"]
[present]
text = ["*.pdf", "*.docx"]
"#;

/// A small valid PDF written by hand: one page per entry of `pages`, a Helvetica text line
/// per string (the test owns every byte, so nothing but the text can carry a secret).
pub(crate) fn pdf_of(pages: &[Vec<String>]) -> Vec<u8> {
    let n = pages.len();
    let mut objs: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    for (i, lines) in pages.iter().enumerate() {
        let mut content = String::from("BT /F1 12 Tf 72 740 Td 14 TL\n");
        for l in lines {
            let esc = l
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            content.push_str(&format!("({esc}) Tj T*\n"));
        }
        content.push_str("ET\n");
        objs.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objs.push(format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objs.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn docx(paragraphs: &[&str]) -> Vec<u8> {
    let body: String = paragraphs
        .iter()
        .map(|p| format!("<w:p><w:r><w:t>{p}</w:t></w:r></w:p>"))
        .collect();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in [
        ("[Content_Types].xml", "<Types/>".to_string()),
        (
            "word/document.xml",
            format!("<w:document xmlns:w=\"w\"><w:body>{body}</w:body></w:document>"),
        ),
    ] {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn seed(s: &Path) {
    fs::create_dir(s.join("docs")).unwrap();
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    fs::write(
        s.join("docs/report.pdf"),
        pdf_of(&[
            lines(&[
                "Quarterly revenue grew in every region",
                &format!("deploy token {TOKEN}"),
            ]),
            lines(&["Contact carol.jones@example.org for the figures"]),
        ]),
    )
    .unwrap();
    fs::write(
        s.join("docs/memo.docx"),
        docx(&["Board memo about the merger", "reach dave@example.net"]),
    )
    .unwrap();
    // A real sibling of the text view's name: it wins.
    fs::write(s.join("docs/x.pdf"), pdf_of(&[lines(&["shadowed text"])])).unwrap();
    fs::write(s.join("docs/x.pdf.txt"), "the real x.pdf.txt\n").unwrap();
    // A PDF that cannot be extracted.
    let mut cut = pdf_of(&[lines(&["cut short"])]);
    cut.truncate(cut.len() / 2);
    fs::write(s.join("docs/broken.pdf"), cut).unwrap();
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
fn a_pdf_shown_as_text_is_refused_and_its_txt_sibling_holds_its_masked_text() {
    let scope = tempfile::tempdir().unwrap();
    seed(scope.path());
    let before = tree_hash(scope.path());
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PROFILE);
    let store = pdir.path().join("store");
    let m = Mount::start(
        scope.path(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
    );
    assert_eq!(
        names(&m.path("docs")),
        [
            "broken.pdf",
            "broken.pdf.txt",
            "memo.docx",
            "memo.docx.txt",
            "report.pdf",
            "report.pdf.txt",
            "x.pdf",
            "x.pdf.txt"
        ]
    );
    // The files themselves stay refused.
    for f in ["docs/report.pdf", "docs/memo.docx"] {
        assert_eq!(
            fs::read(m.path(f)).unwrap_err().raw_os_error(),
            Some(libc::EACCES),
            "{f}"
        );
    }
    // Their text, masked where the secrets and addresses were, every other word intact.
    let t = fs::read_to_string(m.path("docs/report.pdf.txt")).unwrap();
    assert!(t.contains("Quarterly revenue grew in every region"), "{t}");
    assert!(t.contains("deploy token <redacted:"), "{t}");
    assert!(t.contains("Contact <redacted:"), "{t}");
    assert!(!t.contains(TOKEN) && !t.contains("carol.jones"), "{t}");
    assert_eq!(
        fs::metadata(m.path("docs/report.pdf.txt")).unwrap().len(),
        t.len() as u64,
        "the size lookup reports is the size read"
    );
    let d = fs::read_to_string(m.path("docs/memo.docx.txt")).unwrap();
    assert!(d.contains("Board memo about the merger"), "{d}");
    assert!(
        d.contains("reach <redacted:") && !d.contains("dave@"),
        "{d}"
    );
    // A real file of the text view's name wins.
    assert_eq!(
        fs::read_to_string(m.path("docs/x.pdf.txt")).unwrap(),
        "the real x.pdf.txt\n"
    );
    // A PDF that cannot be extracted: its view is refused (fail closed).
    assert_eq!(
        fs::read(m.path("docs/broken.pdf.txt"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EACCES)
    );
    // Read-only, as every view.
    assert_eq!(
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("docs/report.pdf.txt"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    drop(m);
    assert_eq!(tree_hash(scope.path()), before);
    let (ok, out, err) = veilfs(&["audit", "--store", store.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("docs/report.pdf.txt") && l.contains("synthesized text view")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("docs/broken.pdf.txt") && l.contains("text view refused")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("docs/report.pdf") && l.contains("shown as text only")),
        "{out}"
    );
}

/// Regression: with no redaction rules at all, reads skipped the view and served a file
/// shown as text raw (no-open mode reads without an OPEN). It stays refused.
#[test]
fn a_file_shown_as_text_stays_refused_without_any_redaction_rule() {
    let scope = tempfile::tempdir().unwrap();
    seed(scope.path());
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = []\n[present]\ntext = [\"*.pdf\"]\n",
    );
    let m = Mount::start(scope.path(), &["--profile", profile.to_str().unwrap()]);
    assert_eq!(
        fs::read(m.path("docs/report.pdf"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EACCES)
    );
    let t = fs::read_to_string(m.path("docs/report.pdf.txt")).unwrap();
    assert!(t.contains(TOKEN), "no rules, nothing masked: {t}");
}

/// In a writable mount a text view is as read-only as a decoy, its source cannot be renamed
/// to a name that would show its bytes, and nothing reaches the real folder.
#[test]
fn text_views_are_read_only_and_their_source_cannot_be_renamed_out_of_them() {
    let e = crate::common::WriteEnv::new(
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\n[present]\ntext = [\"*.pdf\"]\n[write]\nmode = \"snapshot\"\n[breaker]\nmax_deletes = 0\nmax_renames = 0\n",
        seed,
    );
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    let view = m.path("docs/report.pdf.txt");
    assert!(fs::read_to_string(&view).unwrap().contains("<redacted:"));
    assert_eq!(errno(fs::write(&view, "x")), Some(libc::EACCES));
    assert_eq!(errno(fs::remove_file(&view)), Some(libc::EACCES));
    assert_eq!(
        errno(fs::rename(&view, m.path("docs/stolen.txt"))),
        Some(libc::EACCES)
    );
    assert_eq!(
        errno(fs::rename(
            m.path("docs/report.pdf"),
            m.path("docs/report.bin")
        )),
        Some(libc::EACCES),
        "a rename that would show the PDF's bytes"
    );
    assert_eq!(
        errno(fs::rename(
            m.path("docs/memo.docx"),
            m.path("docs/report.pdf.txt")
        )),
        Some(libc::EACCES)
    );
    drop(m);
    assert_eq!(tree_hash(e.scope.path()), before);
}

/// A text view is a document view: with `[watermark] footer` and `mask_codes` it ends with the
/// visible mark and its masks carry the session's code, and `veilfs trace` on a copy of it
/// names the session and the mount.
#[test]
fn a_text_view_carries_the_footer_line_and_coded_masks_that_trace_reads_back() {
    let scope = tempfile::tempdir().unwrap();
    seed(scope.path());
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        &format!("{PROFILE}[watermark]\nfooter = true\nmask_codes = true\n"),
    );
    let store = pdir.path().join("store");
    let m = Mount::start(
        scope.path(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
    );
    let t = fs::read_to_string(m.path("docs/report.pdf.txt")).unwrap();
    let mp = m
        .path("")
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    drop(m);
    let session = fs::read_dir(store.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .unwrap();
    let last = t.lines().last().unwrap();
    assert!(
        last.starts_with("Served through veilfs")
            && last.contains(&format!("session={session}"))
            && last.contains(&format!("mount={mp}")),
        "{t}"
    );
    assert!(t.contains("deploy token <redacted:github-pat:"), "{t}");
    let copy = pdir.path().join("pasted.txt");
    fs::write(&copy, t.replace(last, "")).unwrap();
    let (ok, out, err) = veilfs(&[
        "trace",
        "--store",
        store.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains(&format!("session {session}")),
        "{out} {err}"
    );
}

/// `veilfs scan` tells what each text view will show, with the mount's extraction and rules.
#[test]
fn scan_names_each_text_view_and_what_it_shows() {
    let scope = tempfile::tempdir().unwrap();
    seed(scope.path());
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(pdir.path(), "p.toml", PROFILE);
    let (_, out, err) = veilfs(&[
        "scan",
        "--profile",
        profile.to_str().unwrap(),
        scope.path().to_str().unwrap(),
    ]);
    let line = |view: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("text\t{view}\t")))
            .unwrap_or_else(|| panic!("no line for {view}: {out} {err}"))
            .to_string()
    };
    let report = line("docs/report.pdf.txt");
    assert!(
        report.contains("shown: ") && report.contains("github-pat") && report.contains("email"),
        "{report}"
    );
    assert!(
        line("docs/memo.docx.txt").contains("shown: 1 span(s) masked"),
        "{out}"
    );
    assert!(line("docs/broken.pdf.txt").contains("refused: "), "{out}");
    assert!(
        line("docs/x.pdf.txt").contains("not shown: a real file of this name wins"),
        "{out}"
    );
    assert!(!out.contains(TOKEN), "scan never prints a secret");
}
