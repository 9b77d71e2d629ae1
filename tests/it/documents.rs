//! Office documents through a real mount (issue #20): docx, xlsx, pptx, odt, ods and odp holding
//! a token and an e-mail address everywhere a document can hold text are built with the real
//! consumers' Python libraries (python-docx, openpyxl, python-pptx, odfpy), read back through
//! the mount with the same libraries, and must show the masks exactly where the secrets were and
//! every other word as it was. On the code before, each of them was refused (a zip holding a
//! secret), and an encrypted document was served unscanned.
//!
//! The libraries live in a virtualenv `tests/run-all.sh` makes; `VEILFS_DOC_PYTHON` names its
//! python (default: `target/doc-venv/bin/python`).

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mount, tree_hash, write_profile};
use serde_json::Value;

/// Made-up values of the shapes `github-pat` and `email-addr` mask.
pub(crate) const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
pub(crate) const EMAIL: &str = "jane.roe@example.org";

pub(crate) const DOCS: [&str; 6] = [
    "report.docx",
    "budget.xlsx",
    "deck.pptx",
    "minutes.odt",
    "vendors.ods",
    "pitch.odp",
];

pub(crate) fn python() -> PathBuf {
    let p = std::env::var_os("VEILFS_DOC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/doc-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{} is missing: run tests/run-all.sh (it makes the virtualenv with python-docx, openpyxl, python-pptx, odfpy) or set VEILFS_DOC_PYTHON",
        p.display()
    );
    p
}

pub(crate) fn office(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/documents/office.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "office.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The mask of a secret of `len` bytes found by `rule` (masks keep the secret's length).
fn mask(rule: &str, len: usize) -> String {
    let mut m = format!("<redacted:{rule}>");
    while m.len() < len {
        m.push('*');
    }
    m.truncate(len);
    m
}

/// The audit events (OCSF JSON lines) of the store's one trail.
fn audit_events(store: &Path) -> Vec<Value> {
    let dir = store.join("audit");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        for l in fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(l)
                && v.get("class_uid").is_some()
            {
                out.push(v);
            }
        }
    }
    out
}

fn veilfs_fields<'a>(events: &'a [Value], event: &str, path: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter_map(|v| v.pointer("/unmapped/veilfs"))
        .filter(|d| d["event"] == event && d["path"] == path)
        .collect()
}

#[test]
fn office_documents_are_served_rebuilt_with_masks_where_the_secrets_were() {
    let scope = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    office(&["make", scope.path().to_str().unwrap(), TOKEN, EMAIL]);
    let before = tree_hash(scope.path());
    let real: Value =
        serde_json::from_str(&office(&["read", scope.path().to_str().unwrap()])).unwrap();
    let store_dir = store.path().join("s");
    let m = Mount::start(scope.path(), &["--store", store_dir.to_str().unwrap()]);

    // The libraries open every view, and find each text as it was with the secrets masked.
    let seen: Value =
        serde_json::from_str(&office(&["read", m.path("").to_str().unwrap()])).unwrap();
    let (mt, me) = (
        mask("github-pat", TOKEN.len()),
        mask("email-address", EMAIL.len()),
    );
    for doc in DOCS {
        let (r, s) = (real[doc].as_array().unwrap(), seen[doc].as_array().unwrap());
        assert_eq!(r.len(), s.len(), "{doc}: {s:?}");
        let mut masked = 0;
        for (r, s) in r.iter().zip(s) {
            let (r, s) = (r.as_str().unwrap(), s.as_str().unwrap());
            let want = r.replace(TOKEN, &mt).replace(EMAIL, &me);
            assert_eq!(s, want, "{doc}");
            masked += usize::from(want != r);
        }
        assert!(
            masked >= 2,
            "{doc}: the secrets were in several places: {s:?}"
        );
        let text = seen[doc].to_string();
        assert!(!text.contains(TOKEN) && !text.contains(EMAIL), "{doc}");

        // One size everywhere: stat, read and mmap agree, and it is the rebuilt document's.
        let p = m.path(doc);
        let bytes = fs::read(&p).unwrap();
        let size = fs::metadata(&p).unwrap().size();
        assert_eq!(size, bytes.len() as u64, "{doc}");
        assert_ne!(
            size,
            fs::metadata(scope.path().join(doc)).unwrap().size(),
            "{doc}"
        );
        let f = fs::File::open(&p).unwrap();
        assert_eq!(common::mmap_read(&f, bytes.len()), bytes, "{doc}");
        // Sparse-aware copies (`cp`) ask where the data ends: at the view's end.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: lseek on a descriptor this test holds open.
        let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
        assert_eq!(hole as u64, size, "{doc}: SEEK_HOLE");
        let copy = store.path().join(doc);
        assert!(
            Command::new("cp")
                .arg(&p)
                .arg(&copy)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(fs::read(&copy).unwrap(), bytes, "{doc}: cp");
        // And the raw bytes hold no secret either (any member, compressed or not).
        let listed: Vec<String> = fs::read_dir(m.path(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(listed.iter().any(|n| n == doc), "{doc} not listed");
    }
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
    assert_eq!(tree_hash(scope.path()), before, "the real folder changed");

    // Audited as what they are: a synthesized document view, naming the rules, never a secret.
    let events = audit_events(&store_dir);
    for doc in DOCS {
        let ev = veilfs_fields(&events, "synthesized", doc);
        assert!(!ev.is_empty(), "no synthesized event for {doc}: {events:?}");
        assert_eq!(ev[0]["view"], "document");
        let rules = ev[0]["rules"].to_string();
        assert!(
            rules.contains("github-pat") && rules.contains("email-address"),
            "{rules}"
        );
    }
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(TOKEN) && !all.contains(EMAIL));

    // The admin's dry run says the same as the mount does.
    let (ok, report, err) = common::veilfs(&["scan", scope.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    for doc in DOCS {
        assert!(
            report.contains(&format!("document\t{doc}\tserved rebuilt, ")),
            "{report}"
        );
    }
}

/// A zip with these members, written with the zip crate.
fn zipped(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in members {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn encrypted_malformed_and_macro_bearing_documents_are_refused_with_an_audited_reason() {
    let scope = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    // Office's password-protected file: an OLE compound file holding an EncryptedPackage
    // stream (the header is enough: nothing inside it can be read without the password).
    let mut ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1".to_vec();
    ole.resize(512, 0);
    ole.extend(
        "EncryptedPackage"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes()),
    );
    ole.resize(4096, 0x5a);
    fs::write(scope.path().join("locked.docx"), &ole).unwrap();
    // Cut short: the central directory is gone.
    let whole = zipped(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("xl/sharedStrings.xml", b"<sst><si><t>hello</t></si></sst>"),
    ]);
    fs::write(scope.path().join("broken.xlsx"), &whole[..whole.len() - 30]).unwrap();
    let body = format!(
        "<w:document><w:body><w:p><w:r><w:t>{EMAIL}</w:t></w:r></w:p></w:body></w:document>"
    );
    fs::write(
        scope.path().join("macro.docx"),
        zipped(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", body.as_bytes()),
            ("word/vbaProject.bin", b"Attribute VB_Name = \"Module1\""),
        ]),
    )
    .unwrap();
    let store_dir = store.path().join("s");
    let m = Mount::start(scope.path(), &["--store", store_dir.to_str().unwrap()]);
    for doc in ["locked.docx", "broken.xlsx", "macro.docx"] {
        let e = fs::read(m.path(doc)).expect_err(doc);
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{doc}: {e}");
    }
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
    let events = audit_events(&store_dir);
    for (doc, why) in [
        ("locked.docx", "encrypted"),
        ("broken.xlsx", "malformed"),
        ("macro.docx", "macros"),
    ] {
        let ev = veilfs_fields(&events, "denied", doc);
        assert!(
            ev.iter()
                .any(|d| d["reason"].as_str().unwrap().contains(why)),
            "{doc}: {ev:?}"
        );
    }

    // A profile that allows macros serves the document rebuilt, its e-mail masked.
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\ndocuments = [\"*.docx\"]\nrefuse_macros = false\n",
    );
    let m = Mount::start(scope.path(), &["--profile", profile.to_str().unwrap()]);
    let view = fs::read(m.path("macro.docx")).unwrap();
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(view)).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut z.by_name("word/document.xml").unwrap(), &mut s).unwrap();
    assert!(!s.contains(EMAIL) && s.contains("&lt;redacted:"), "{s}");
}

#[test]
fn a_synthesized_view_is_read_only_even_in_a_writable_mount() {
    let scope = tempfile::tempdir().unwrap();
    office(&["make", scope.path().to_str().unwrap(), TOKEN, EMAIL]);
    let real = fs::read(scope.path().join("report.docx")).unwrap();
    fs::copy(
        scope.path().join("budget.xlsx"),
        scope.path().join("leak.zip"),
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\ndocuments = [\"*.docx\"]\n[write]\nmode = \"snapshot\"\n[breaker]\nmax_deletes = 0\nmax_renames = 0\n",
    );
    let m = Mount::start(
        scope.path(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--store",
            store.path().join("s").to_str().unwrap(),
        ],
    );
    let p = m.path("report.docx");
    let view = fs::read(&p).unwrap();
    assert_ne!(view, real);
    let denied = |r: std::io::Result<fs::File>| {
        let e = r.expect_err("opened for writing");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    };
    denied(fs::OpenOptions::new().write(true).open(&p));
    denied(fs::OpenOptions::new().append(true).open(&p));
    denied(fs::OpenOptions::new().write(true).truncate(true).open(&p));
    let e = Command::new("truncate")
        .args(["-s", "0"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!e.status.success(), "truncate went through");
    // A hard link would give it a second name (and another view): refused too.
    assert!(fs::hard_link(&p, m.path("copy.docx")).is_err());
    // Laundering: a zip refused for the secret inside may not be renamed into a document name
    // (where it would be served rebuilt); the other way round is stricter and allowed.
    let e = fs::rename(m.path("leak.zip"), m.path("leak.docx")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(fs::read(m.path("leak.zip")).is_err());
    fs::rename(m.path("report.docx"), m.path("report.zip")).unwrap();
    assert!(
        fs::read(m.path("report.zip")).is_err(),
        "refused as a zip holding secrets"
    );
    fs::rename(m.path("report.zip"), m.path("report.docx")).unwrap_err();
    let p = scope.path().join("report.zip");
    fs::rename(&p, scope.path().join("report.docx")).unwrap();
    let p = m.path("report.docx");
    // The failed rename left the kernel holding "report.docx" as absent; a name made outside a
    // write-mode mount shows within `write_ttl_ms`.
    assert!(common::eventually(|| fs::read(&p).is_ok_and(|v| v == view)));
    drop(m);
    assert_eq!(fs::read(scope.path().join("report.docx")).unwrap(), real);
}

/// `[present] metadata`: the agent sees what each file is (kind, size, dates, counts, title),
/// never what it says, and can still sort and rename the files (renames stay within the names
/// shown as metadata: out of them would show the content).
#[test]
fn files_presented_as_metadata_show_a_stub_and_can_be_renamed_but_not_out_of_it() {
    let scope = tempfile::tempdir().unwrap();
    let dir = scope.path().join("contracts");
    fs::create_dir(&dir).unwrap();
    office(&["make", dir.to_str().unwrap(), TOKEN, EMAIL]);
    fs::write(
        dir.join("notes.txt"),
        format!("call {EMAIL} about the merger\n"),
    )
    .unwrap();
    let real_docx = fs::read(dir.join("report.docx")).unwrap();
    let mut big = format!("scan of the signed original, {EMAIL}\n").into_bytes();
    big.resize(300_000, b'x');
    fs::write(dir.join("scan.tiff"), &big).unwrap();
    let store = tempfile::tempdir().unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\nmax_scan_size = \"100 KB\"\ndocuments = [\"*.docx\", \"*.xlsx\"]\n[present]\nmetadata = [\"contracts/\"]\n[write]\nmode = \"snapshot\"\n[breaker]\nmax_deletes = 0\nmax_renames = 0\n",
    );
    let m = Mount::start(
        scope.path(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--store",
            store.path().join("s").to_str().unwrap(),
        ],
    );
    let stub = fs::read_to_string(m.path("contracts/report.docx")).unwrap();
    assert!(stub.contains("kind: Word document\n"), "{stub}");
    assert!(
        stub.contains(&format!("size: {} bytes\n", real_docx.len())),
        "{stub}"
    );
    assert!(stub.contains("title: Quarterly revenue plan\n"), "{stub}");
    assert!(stub.contains("modified: "), "{stub}");
    assert!(
        !stub.contains("Deploy key") && !stub.contains(TOKEN),
        "{stub}"
    );
    assert_eq!(
        fs::metadata(m.path("contracts/report.docx"))
            .unwrap()
            .size(),
        stub.len() as u64
    );
    let xlsx = fs::read_to_string(m.path("contracts/budget.xlsx")).unwrap();
    assert!(
        xlsx.contains("kind: Excel workbook\nsize:") && xlsx.contains("sheets: 1\n"),
        "{xlsx}"
    );
    let pptx = fs::read_to_string(m.path("contracts/deck.pptx")).unwrap();
    assert!(pptx.contains("slides: 1\n"), "{pptx}");
    // Too large to read (above max_scan_size): a stub from the stat alone, never the bytes.
    let tiff = fs::read_to_string(m.path("contracts/scan.tiff")).unwrap();
    assert!(
        tiff.contains("kind: tiff file (not inspected: above max_scan_size)\nsize: 300000 bytes\n"),
        "{tiff}"
    );
    assert_eq!(
        fs::metadata(m.path("contracts/scan.tiff")).unwrap().size(),
        tiff.len() as u64
    );
    let txt = fs::read_to_string(m.path("contracts/notes.txt")).unwrap();
    assert!(
        txt.contains("kind: text file") && !txt.contains("merger"),
        "{txt}"
    );

    // Renamed within the metadata names: the real file moves, its bytes untouched.
    fs::rename(
        m.path("contracts/report.docx"),
        m.path("contracts/2024-report.docx"),
    )
    .unwrap();
    assert_eq!(fs::read(dir.join("2024-report.docx")).unwrap(), real_docx);
    assert!(!dir.join("report.docx").exists());
    // Out of them, its content would show: refused, the real file stays.
    let e = fs::rename(m.path("contracts/notes.txt"), m.path("notes.txt")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(dir.join("notes.txt").exists());
    // A directory carrying stubs out of them: refused too.
    fs::create_dir(m.path("contracts/old")).unwrap();
    fs::rename(
        m.path("contracts/budget.xlsx"),
        m.path("contracts/old/budget.xlsx"),
    )
    .unwrap();
    let e = fs::rename(m.path("contracts/old"), m.path("old")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    // A stub is read-only.
    let e = fs::OpenOptions::new()
        .append(true)
        .open(m.path("contracts/deck.pptx"))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
}

/// The view follows the real file: rewritten outside the mount, the document is rebuilt from
/// its new version (never from a mix of two), and stat, read and the content agree again.
#[test]
fn a_document_changed_outside_is_rebuilt_from_its_new_version() {
    let scope = tempfile::tempdir().unwrap();
    let doc = |who: &str, filler: usize| {
        let body = format!(
            "<w:document><w:body><w:p><w:r><w:t>{}Contact {who} today</w:t></w:r></w:p></w:body></w:document>",
            "word ".repeat(filler)
        );
        zipped(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", body.as_bytes()),
        ])
    };
    let p = scope.path().join("memo.docx");
    fs::write(&p, doc(EMAIL, 10)).unwrap();
    let m = Mount::start(scope.path(), &[]);
    let view_xml = |bytes: Vec<u8>| {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut z.by_name("word/document.xml").unwrap(), &mut s)
            .unwrap();
        s
    };
    let first = fs::read(m.path("memo.docx")).unwrap();
    assert!(view_xml(first.clone()).contains("Contact &lt;redacted:"));
    let other = "max.mustermann@example.net";
    fs::write(&p, doc(other, 500)).unwrap();
    assert!(
        common::eventually(|| fs::read(m.path("memo.docx")).is_ok_and(|b| b != first)),
        "the view never changed"
    );
    let now = fs::read(m.path("memo.docx")).unwrap();
    assert_eq!(
        fs::metadata(m.path("memo.docx")).unwrap().size(),
        now.len() as u64
    );
    let xml = view_xml(now);
    assert!(
        !xml.contains(other) && xml.contains("word word") && xml.contains("Contact &lt;redacted:"),
        "{xml}"
    );
}

/// `[watermark] documents = true`: every document view names its mount, session and time in
/// its properties (python-docx reads it as the identifier), clean documents included, and
/// `veilfs trace` reads it back from a copy taken out of the mount.
#[test]
fn document_views_carry_a_watermark_that_trace_reads_back() {
    let scope = tempfile::tempdir().unwrap();
    office(&["make", scope.path().to_str().unwrap(), TOKEN, EMAIL]);
    let clean = zipped(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", b"<w:document><w:body><w:p><w:r><w:t>nothing to hide</w:t></w:r></w:p></w:body></w:document>"),
        ("docProps/core.xml", br#"<cp:coreProperties xmlns:cp="c" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Clean</dc:title></cp:coreProperties>"#),
    ]);
    fs::write(scope.path().join("clean.docx"), &clean).unwrap();
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().join("s");
    let pdir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        pdir.path(),
        "p.toml",
        "version = 1\n[redaction]\nrule_sets = [\"secrets\", \"pii\"]\ndocuments = [\"*.docx\", \"*.odt\"]\n[watermark]\ndocuments = true\n",
    );
    let m = Mount::start(
        scope.path(),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--store",
            store_dir.to_str().unwrap(),
        ],
    );
    let out = tempfile::tempdir().unwrap();
    for doc in ["report.docx", "minutes.odt", "clean.docx"] {
        fs::copy(m.path(doc), out.path().join(doc)).unwrap();
    }
    let mp = m.path("").display().to_string();
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
    // The session the mount's audit trail was written under.
    let session = fs::read_dir(store_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap();
    for doc in ["report.docx", "minutes.odt", "clean.docx"] {
        let (ok, mark, err) = common::veilfs(&["trace", out.path().join(doc).to_str().unwrap()]);
        assert!(ok, "{doc}: {err}");
        assert!(
            mark.contains(&format!("mount={mp} ")) && mark.contains(&format!("session={session} ")),
            "{doc}: {mark}"
        );
    }
    assert_ne!(fs::read(out.path().join("clean.docx")).unwrap(), clean);
    // The real consumer still opens it, and sees the mark as the document's identifier.
    let py = format!(
        "import docx; print(docx.Document('{}').core_properties.identifier)",
        out.path().join("report.docx").display()
    );
    let o = Command::new(python()).args(["-c", &py]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("session={session}")));
    // A real file carries none.
    let (ok, _, _) = common::veilfs(&["trace", scope.path().join("report.docx").to_str().unwrap()]);
    assert!(!ok);
}
