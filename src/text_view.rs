//! Text views (`[present] text`): the plain text of a file the agent may not open, which the
//! mount shows as a read-only sibling `NAME.txt` (see [`crate::virtual_entries`]) after
//! masking it like any text.
//!
//! Why: an agent asked to summarise a folder of reports needs their words, not their bytes. A
//! PDF or an office document carries far more than its text (fonts, images, embedded files,
//! revision history, metadata) and is hard to scan whole; its text is easy to scan, mask and
//! read. The file itself stays refused.
//!
//! Extraction is a pure function of the bytes: a PDF through `pdf-extract` (pure Rust, on
//! `lopdf`: each page's content stream decoded through its fonts' encodings and CMaps), an office
//! document (Office Open XML or OpenDocument) by reading the text nodes of its content members
//! in order (`zip`, `quick-xml`), UTF-8 text as it is. Fail closed: an encrypted or malformed
//! PDF, a document that cannot be read, or any other bytes give an error (the view is refused,
//! with the reason audited), never a partial text. A parser that panics on hostile input is
//! caught and counts as malformed.

use std::io::{Cursor, Read};

/// The largest text a view holds (a bigger one is refused rather than cut).
const MAX_TEXT: usize = 64 << 20;

/// The text of `data`, a file named `name`, or why there is none.
pub(crate) fn extract(name: &[u8], data: &[u8]) -> Result<String, String> {
    let text = if data.starts_with(b"%PDF-") {
        guarded(|| pdf(data))?
    } else if data.starts_with(b"PK\x03\x04") && crate::redact::document::is_document_name(name) {
        guarded(|| office(data))?
    } else if data.starts_with(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        return Err("an OLE compound file (a legacy or encrypted office document)".into());
    } else {
        match std::str::from_utf8(data) {
            Ok(s) => s.to_string(),
            Err(_) => return Err("not PDF, an office document or UTF-8 text".into()),
        }
    };
    if text.len() > MAX_TEXT {
        return Err(format!("its text is larger than {MAX_TEXT} bytes"));
    }
    Ok(text)
}

/// Runs a parser on hostile input: a panic is an error, not a dead FUSE worker.
fn guarded(f: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("malformed (the parser gave up)".into()))
}

/// A PDF's text, page by page (a form feed between pages, as `pdftotext` writes). Encrypted
/// PDFs are refused: even one that opens with an empty password was protected on purpose.
fn pdf(data: &[u8]) -> Result<String, String> {
    let doc = pdf_extract::Document::load_mem(data).map_err(|e| format!("malformed PDF: {e}"))?;
    if doc.is_encrypted() || doc.trailer.get(b"Encrypt").is_ok() {
        return Err("an encrypted PDF".into());
    }
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    if pages.is_empty() {
        return Err("a PDF without pages".into());
    }
    let mut out = String::new();
    for p in pages {
        let mut page = String::new();
        {
            let mut sink = pdf_extract::PlainTextOutput::new(&mut page);
            pdf_extract::output_doc_page(&doc, &mut sink, p)
                .map_err(|e| format!("page {p}: cannot extract its text: {e}"))?;
        }
        out.push_str(page.trim_start_matches('\n'));
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push('\x0c');
    }
    Ok(out)
}

/// The members of an office document that hold its text, in reading order.
fn text_members(zip: &zip::ZipArchive<Cursor<&[u8]>>) -> Vec<String> {
    let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
    // Slides and sheets in their numeric order (slide10 after slide9).
    names.sort_by_key(|n| {
        let digits: String = n.chars().filter(char::is_ascii_digit).collect();
        (
            n.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c.is_alphabetic())
                .to_string(),
            digits.parse::<u64>().unwrap_or(0),
            n.clone(),
        )
    });
    let wanted = |n: &str| {
        n == "content.xml"
            || n == "word/document.xml"
            || n.starts_with("word/header")
            || n.starts_with("word/footer")
            || n == "word/footnotes.xml"
            || n == "word/comments.xml"
            || n == "xl/sharedStrings.xml"
            || (n.starts_with("xl/worksheets/sheet") && n.ends_with(".xml"))
            || (n.starts_with("ppt/slides/slide") && n.ends_with(".xml"))
            || (n.starts_with("ppt/notesSlides/") && n.ends_with(".xml"))
    };
    names.into_iter().filter(|n| wanted(n)).collect()
}

/// The text nodes of an office document's content members: one line per paragraph, table row
/// or spreadsheet row, cells separated by tabs. Encrypted documents are not zips (they are
/// refused above as OLE files); a zip without a content member is refused.
fn office(data: &[u8]) -> Result<String, String> {
    use quick_xml::events::Event;
    let mut zip =
        zip::ZipArchive::new(Cursor::new(data)).map_err(|e| format!("malformed document: {e}"))?;
    let members = text_members(&zip);
    if members.is_empty() {
        return Err("an office document without a text member".into());
    }
    let mut out = String::new();
    for name in members {
        let mut xml = String::new();
        zip.by_name(&name)
            .map_err(|e| format!("{name}: {e}"))?
            .take(MAX_TEXT as u64 * 4)
            .read_to_string(&mut xml)
            .map_err(|e| format!("{name}: {e}"))?;
        let mut r = quick_xml::Reader::from_str(&xml);
        // Only element text, not attribute values; in a worksheet only inline strings and
        // values (`v`, `t`): shared strings come from their own member.
        let mut depth_text = false;
        loop {
            match r.read_event() {
                Ok(Event::Start(e)) => {
                    let n = e.local_name().into_inner();
                    depth_text = matches!(n, "t" | "v" | "p" | "h" | "span" | "s");
                    if n == "tab" {
                        out.push('\t');
                    }
                }
                Ok(Event::Empty(e)) => match e.local_name().into_inner() {
                    "tab" => out.push('\t'),
                    "br" | "line-break" | "cr" => out.push('\n'),
                    "s" => out.push(' '),
                    _ => {}
                },
                Ok(Event::Text(t)) if depth_text => {
                    out.push_str(&t.xml10_content());
                }
                Ok(Event::GeneralRef(r)) if depth_text => {
                    // Entities the reader reports apart (`&amp;` and friends).
                    match r.as_ref() {
                        "amp" => out.push('&'),
                        "lt" => out.push('<'),
                        "gt" => out.push('>'),
                        "quot" => out.push('"'),
                        "apos" => out.push('\''),
                        other => {
                            if let Some(c) = other
                                .strip_prefix('#')
                                .and_then(|s| match s.strip_prefix('x') {
                                    Some(h) => u32::from_str_radix(h, 16).ok(),
                                    None => s.parse().ok(),
                                })
                                .and_then(char::from_u32)
                            {
                                out.push(c);
                            }
                        }
                    }
                }
                Ok(Event::End(e)) => {
                    depth_text = false;
                    match e.local_name().into_inner() {
                        "p" | "h" | "tr" | "row" | "si" | "table-row" => out.push('\n'),
                        "c" | "tc" | "table-cell" => out.push('\t'),
                        _ => {}
                    }
                }
                Ok(Event::Eof) => break,
                Err(e) => return Err(format!("{name}: malformed XML: {e}")),
                _ => {}
            }
            if out.len() > MAX_TEXT {
                return Err(format!("its text is larger than {MAX_TEXT} bytes"));
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redact::document::tests::doc as zipped;

    #[test]
    fn office_text_is_read_in_order_with_paragraphs_and_cells() {
        let docx = zipped(&[
            ("[Content_Types].xml", "<Types/>"),
            (
                "word/document.xml",
                "<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>Hello </w:t></w:r><w:r><w:t>world &amp; co</w:t></w:r></w:p><w:p><w:r><w:t>Second</w:t></w:r></w:p></w:body></w:document>",
            ),
        ]);
        assert_eq!(
            extract(b"r.docx", &docx).unwrap(),
            "Hello world & co\nSecond\n"
        );
        let xlsx = zipped(&[
            ("[Content_Types].xml", "<Types/>"),
            (
                "xl/sharedStrings.xml",
                "<sst><si><t>name</t></si><si><t>alice@example.com</t></si></sst>",
            ),
            (
                "xl/worksheets/sheet1.xml",
                "<worksheet><sheetData><row><c t=\"s\"><v>0</v></c><c><v>42</v></c></row></sheetData></worksheet>",
            ),
        ]);
        let t = extract(b"b.xlsx", &xlsx).unwrap();
        assert!(t.contains("alice@example.com") && t.contains("42"), "{t}");
    }

    /// A small valid PDF: one page per entry of `pages`, each line a text object in
    /// Helvetica; `trailer_extra` is added to the trailer dictionary.
    pub(crate) fn pdf_of(pages: &[&[&str]], trailer_extra: &str) -> Vec<u8> {
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
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
                .into(),
        ];
        for (i, lines) in pages.iter().enumerate() {
            let mut content = String::from("BT /F1 12 Tf 72 740 Td 14 TL\n");
            for l in lines.iter() {
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
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes(),
        );
        for off in offsets {
            out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R {trailer_extra}>>\nstartxref\n{xref}\n%%EOF\n",
                objs.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    #[test]
    fn pdf_text_is_extracted_page_by_page() {
        let pdf = pdf_of(
            &[&["Quarterly report", "mail bob@example.com"], &["Page two"]],
            "",
        );
        let t = extract(b"r.pdf", &pdf).unwrap();
        assert!(t.contains("Quarterly report"), "{t:?}");
        assert!(t.contains("bob@example.com"), "{t:?}");
        assert!(t.contains("Page two"), "{t:?}");
        assert_eq!(t.matches('\x0c').count(), 2, "{t:?}");
    }

    #[test]
    fn encrypted_and_malformed_pdfs_are_refused() {
        let enc = pdf_of(
            &[&["secret"]],
            "/Encrypt << /Filter /Standard /V 1 /R 2 /O (x) /U (y) /P -4 >> ",
        );
        let e = extract(b"e.pdf", &enc).unwrap_err();
        assert!(e.contains("encrypted") || e.contains("malformed"), "{e}");
        let mut cut = pdf_of(&[&["text"]], "");
        cut.truncate(cut.len() / 2);
        assert!(extract(b"c.pdf", &cut).is_err());
    }

    #[test]
    fn unreadable_inputs_are_refused_with_a_reason() {
        assert!(extract(b"x.pdf", b"%PDF-1.4 garbage").is_err());
        assert!(extract(b"x.docx", b"PK\x03\x04 not a zip").is_err());
        assert!(extract(b"x.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1....").is_err());
        assert!(extract(b"x.bin", b"\xff\xfe\x00").is_err());
        assert_eq!(extract(b"x.md", b"plain\n").unwrap(), "plain\n");
    }
}
