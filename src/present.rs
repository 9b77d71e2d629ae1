//! Metadata stubs: what the agent reads of a file the profile presents as metadata
//! (`[present] metadata = [...]`) instead of its bytes.
//!
//! Why: an agent asked to sort, rename or file a folder of contracts needs to know what each
//! file is (its kind, size, dates, how many pages or sheets, its title), not what it says. The
//! stub is a few lines of text in place of the content, so `cat`, `grep` and `ls -l` work on it
//! and nothing of the body reaches the agent. The file keeps its name, so renaming it (in a
//! writable mount) renames the real file, within the names the profile also presents as
//! metadata (a rename that would show its content is refused as a loosening, see `fs::view`).
//!
//! The stub is a pure function of the file's bytes and stat, so the same version always yields
//! the same stub. Counts and titles are read from the formats' own metadata (Office Open XML's
//! `docProps/app.xml` and `core.xml`, OpenDocument's `meta.xml`, a PDF's page objects); any
//! of them may be missing. The caller masks the stub (a title can hold an e-mail address).

use std::io::{Cursor, Read};

use crate::backing::Stat;

/// A stub's fields, in the order they are written.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub kind: String,
    pub pages: Option<u64>,
    pub sheets: Option<u64>,
    pub slides: Option<u64>,
    pub title: Option<String>,
}

/// The stub the agent reads for a file named `name` with stat `st` and bytes `data`.
pub(crate) fn stub(name: &[u8], st: &Stat, data: &[u8]) -> String {
    write_stub(meta(name, data), st)
}

/// The stub of a file too large to read (above `max_scan_size`): from its stat alone.
pub(crate) fn stub_unread(name: &[u8], st: &Stat) -> String {
    let ext = String::from_utf8_lossy(name).to_ascii_lowercase();
    let kind = match ext.rsplit_once('.') {
        Some((_, e)) => format!("{e} file (not inspected: above max_scan_size)"),
        None => "file (not inspected: above max_scan_size)".into(),
    };
    write_stub(
        Meta {
            kind,
            ..Meta::default()
        },
        st,
    )
}

fn write_stub(m: Meta, st: &Stat) -> String {
    let ns = |t: (i64, i64)| (t.0 as i128) * 1_000_000_000 + t.1 as i128;
    let mut s = String::from(
        "veilfs metadata view: the profile shows what this file is, not what it says.\n",
    );
    s += &format!("kind: {}\n", m.kind);
    s += &format!("size: {} bytes\n", st.size);
    s += &format!("modified: {}\n", crate::time::format_time(ns(st.mtime)));
    s += &format!("changed: {}\n", crate::time::format_time(ns(st.ctime)));
    for (k, v) in [
        ("pages", m.pages),
        ("sheets", m.sheets),
        ("slides", m.slides),
    ] {
        if let Some(v) = v {
            s += &format!("{k}: {v}\n");
        }
    }
    if let Some(t) = m.title.filter(|t| !t.trim().is_empty()) {
        // One line, whatever the title holds.
        let t: String = t
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        s += &format!("title: {t}\n");
    }
    s
}

/// What a file is, from its name and bytes.
pub(crate) fn meta(name: &[u8], data: &[u8]) -> Meta {
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if data.starts_with(b"%PDF-") {
        return pdf(data);
    }
    if data.starts_with(b"PK\x03\x04")
        && let Some(m) = office(ext, data)
    {
        return m;
    }
    let kind = if data.starts_with(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        "OLE compound file (legacy or encrypted office document)".to_string()
    } else if std::str::from_utf8(data).is_ok() {
        format!("text{}", if ext.is_empty() { "" } else { " file" })
    } else {
        "binary data".to_string()
    };
    Meta {
        kind,
        ..Meta::default()
    }
}

/// Page count of a PDF: its page objects (`/Type /Page`, not `/Pages`). Pages inside
/// compressed object streams are not seen: the count is then missing rather than wrong.
fn pdf(data: &[u8]) -> Meta {
    let finder = memchr::memmem::Finder::new(b"/Type");
    let mut pages = 0u64;
    for at in finder.find_iter(data) {
        let rest = &data[at + 5..data.len().min(at + 5 + 16)];
        let rest = rest.trim_ascii_start();
        if rest.starts_with(b"/Page") && !rest.starts_with(b"/Pages") {
            pages += 1;
        }
    }
    Meta {
        kind: "PDF document".into(),
        pages: (pages > 0).then_some(pages),
        ..Meta::default()
    }
}

fn member(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Option<String> {
    let mut f = zip.by_name(name).ok()?;
    let mut s = String::new();
    f.by_ref().take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// The text of the first element named `local` (any prefix), and how many there are.
fn elements(xml: &str, local: &str) -> (Option<String>, u64) {
    let mut r = quick_xml::Reader::from_str(xml);
    let (mut first, mut n, mut inside) = (None, 0, false);
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(e)) if e.local_name().as_ref() == local => {
                n += 1;
                inside = first.is_none();
            }
            Ok(quick_xml::events::Event::Empty(e)) if e.local_name().as_ref() == local => n += 1,
            Ok(quick_xml::events::Event::Text(t)) if inside => {
                first = Some(t.xml10_content().into_owned());
                inside = false;
            }
            Ok(quick_xml::events::Event::End(_)) => inside = false,
            Ok(quick_xml::events::Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    (first, n)
}

/// The value of attribute `attr` of the first element named `local`.
fn attribute(xml: &str, local: &str, attr: &str) -> Option<String> {
    let mut r = quick_xml::Reader::from_str(xml);
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e))
                if e.local_name().as_ref() == local =>
            {
                return e.attributes().flatten().find_map(|a| {
                    (a.key.local_name().as_ref() == attr).then(|| a.value.to_string())
                });
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

fn office(ext: &str, data: &[u8]) -> Option<Meta> {
    let mut zip = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(mime) = member(&mut zip, "mimetype") {
        let meta = member(&mut zip, "meta.xml").unwrap_or_default();
        let title = elements(&meta, "title").0;
        let mut m = Meta {
            title,
            ..Meta::default()
        };
        let stat = |a| num(attribute(&meta, "document-statistic", a));
        match mime.trim() {
            "application/vnd.oasis.opendocument.text" => {
                m.kind = "OpenDocument text".into();
                m.pages = stat("page-count");
            }
            "application/vnd.oasis.opendocument.spreadsheet" => {
                m.kind = "OpenDocument spreadsheet".into();
                m.sheets = stat("table-count");
            }
            "application/vnd.oasis.opendocument.presentation" => {
                m.kind = "OpenDocument presentation".into();
                let content = member(&mut zip, "content.xml").unwrap_or_default();
                m.slides = Some(elements(&content, "page").1);
            }
            other => m.kind = format!("OpenDocument ({other})"),
        }
        return Some(m);
    }
    zip.index_for_name("[Content_Types].xml")?;
    let app = member(&mut zip, "docProps/app.xml").unwrap_or_default();
    let core = member(&mut zip, "docProps/core.xml").unwrap_or_default();
    let mut m = Meta {
        title: elements(&core, "title").0,
        ..Meta::default()
    };
    if zip.index_for_name("word/document.xml").is_some() || ext == "docx" {
        m.kind = "Word document".into();
        m.pages = num(elements(&app, "Pages").0);
    } else if zip.index_for_name("xl/workbook.xml").is_some() {
        m.kind = "Excel workbook".into();
        let wb = member(&mut zip, "xl/workbook.xml").unwrap_or_default();
        m.sheets = Some(elements(&wb, "sheet").1);
    } else if zip.index_for_name("ppt/presentation.xml").is_some() {
        m.kind = "PowerPoint presentation".into();
        // The slide list itself: `app.xml`'s count is whatever the last writer left there.
        let p = member(&mut zip, "ppt/presentation.xml").unwrap_or_default();
        m.slides = Some(elements(&p, "sldId").1);
    } else {
        m.kind = "Office Open XML package".into();
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redact::document::tests::doc as zipped;

    #[test]
    fn kinds_counts_and_titles() {
        let xlsx = zipped(&[
            ("[Content_Types].xml", "<Types/>"),
            (
                "xl/workbook.xml",
                "<workbook><sheets><sheet name=\"a\"/><sheet name=\"b\"/></sheets></workbook>",
            ),
            (
                "docProps/core.xml",
                "<cp:coreProperties xmlns:cp=\"c\" xmlns:dc=\"d\"><dc:title>Budget 2025</dc:title></cp:coreProperties>",
            ),
        ]);
        let m = meta(b"b.xlsx", &xlsx);
        assert_eq!(
            (m.kind.as_str(), m.sheets, m.title.as_deref()),
            ("Excel workbook", Some(2), Some("Budget 2025"))
        );
        let docx = zipped(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", "<d/>"),
            (
                "docProps/app.xml",
                "<Properties><Pages>7</Pages></Properties>",
            ),
        ]);
        assert_eq!(meta(b"r.docx", &docx).pages, Some(7));
        let odt = zipped(&[
            ("mimetype", "application/vnd.oasis.opendocument.text"),
            (
                "meta.xml",
                "<office:document-meta xmlns:office=\"o\" xmlns:meta=\"m\" xmlns:dc=\"d\"><office:meta><dc:title>Minutes</dc:title><meta:document-statistic meta:page-count=\"3\"/></office:meta></office:document-meta>",
            ),
        ]);
        let m = meta(b"m.odt", &odt);
        assert_eq!((m.pages, m.title.as_deref()), (Some(3), Some("Minutes")));
        let pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Count 2 >>\n2 0 obj << /Type /Page >>\n3 0 obj <</Type/Page>>\n";
        let m = meta(b"x.pdf", pdf);
        assert_eq!((m.kind.as_str(), m.pages), ("PDF document", Some(2)));
        assert_eq!(meta(b"x.bin", b"\0\x01\x02\xff").kind, "binary data");
    }

    #[test]
    fn the_stub_is_a_few_lines_and_never_the_content() {
        let st = Stat {
            dev: 0,
            ino: 0,
            mode: libc::S_IFREG | 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 42,
            blocks: 0,
            blksize: 4096,
            atime: (1_700_000_000, 0),
            mtime: (1_700_000_000, 0),
            ctime: (1_700_000_000, 0),
        };
        let s = stub(b"notes.txt", &st, b"the secret plan");
        assert!(
            s.contains("kind: text file\n") && s.contains("size: 42 bytes\n"),
            "{s}"
        );
        assert!(s.contains("modified: 2023-11-14T22:13:20"), "{s}");
        assert!(!s.contains("secret plan"));
        assert_eq!(s, stub(b"notes.txt", &st, b"the secret plan"));
    }
}
