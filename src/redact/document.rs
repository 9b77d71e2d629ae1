//! Office documents redacted inside: Office Open XML (`docx`, `xlsx`, `pptx`) and OpenDocument
//! (`odt`, `ods`, `odp`) files rebuilt with their secrets masked.
//!
//! Why: these are zip containers of XML. Scanned as containers (`container.rs`), a document with
//! one e-mail address in it is refused whole, since a mask cannot be written into compressed
//! bytes; an agent then cannot read a single report. Rebuilt, the agent gets the same kind of
//! document, readable by the same tools, with each secret replaced by its mask.
//!
//! What is scanned: every XML member (`*.xml`, `*.rels`): the text of every element (body,
//! table cells, shared and inline strings, comments, tracked insertions and deletions, headers,
//! footers, notes, document properties in `docProps/*.xml` and `meta.xml`) and every attribute
//! value (a tracked change's author, a hyperlink's target). Text is scanned as the reader sees
//! it: the runs of one paragraph joined (Word splits a word into runs at every formatting or
//! spell-check boundary, so a token can be cut across elements), a line break between blocks.
//! Other members (images, embedded objects) are scanned like any file: matches in text or
//! binary members are masked in place; images are kept unscanned (their bytes are compressed
//! pixels); anything else that cannot be scanned refuses the document.
//!
//! Masks keep their length (`mask::mask_all` over the decoded text), although nothing here needs
//! it (the container is rebuilt): it keeps one mask format everywhere, and lets the masked text
//! be cut back into the same elements it came from. Masked text is written escaped, so the XML
//! stays valid (a mask is `<redacted:…>`).
//!
//! Refused, with a reason for the audit: encrypted documents (an OLE compound file holding an
//! `EncryptedPackage`, which is how Office stores a password-protected file), legacy OLE
//! documents, malformed containers or XML, members that cannot be scanned, and (when the
//! profile says so) documents carrying macros (`vbaProject.bin`, OpenDocument `Basic/`).
//!
//! The rebuilt container is a pure function of the input (and the mount's marks): members keep
//! their order, names, compression method and timestamps, so the same version always yields the
//! same bytes (a view rebuilt after its cached copy was dropped matches what the kernel may still
//! cache). Members with nothing to change are copied compressed as they are; changed ones are
//! deflated at the fastest level (see `measure.py` and the README for what that saves).
//!
//! Watermarks (`crate::watermark`): the mark as a property (`insert_mark`) and as a visible
//! footer line (`insert_footer`, where each format lets a reader see it), and mask codes inside
//! every mask.

use std::borrow::Cow;
use std::io::{Cursor, Read, Write};

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, BytesText, Event};

use super::engine::{Engine, RuleSelection, ScanOutcome};
use super::mask::mask_all;

/// A rebuilt document and what was masked in it.
#[derive(Debug)]
pub(crate) struct Rebuilt {
    pub bytes: Vec<u8>,
    /// Distinct ids of the rules whose matches were masked (never the secrets).
    pub rules: Vec<String>,
    /// Masked spans, in all members.
    pub redactions: usize,
}

/// What redacting a document gave.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing to mask: the document may be served as it is.
    Clean,
    /// The document with its secrets masked.
    Masked(Rebuilt),
}

/// OLE compound file magic: legacy `.doc`/`.xls` and password-protected OOXML.
const OLE_MAGIC: &[u8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1";

/// Image members: compressed pixels, kept as they are (see the module comment).
const IMAGE_EXTS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "emf", "wmf", "webp", "svm", "wdp",
];

/// Elements inside one run of text: text on both sides of their end tag is one word
/// (`<w:r><w:t>ab</w:t></w:r><w:r><w:t>cd</w:t></w:r>` reads "abcd"). The end of any other
/// element puts a line break between the texts around it.
const INLINE: &[&str] = &[
    "t",
    "r",
    "rPr",
    "span",
    "a",
    "ins",
    "del",
    "delText",
    "hyperlink",
    "smartTag",
    "fldSimple",
    "s",
    "tab",
    "proofErr",
];

/// Does this name look like a document this module rebuilds (by extension)?
pub(crate) fn is_document_name(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    [".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp"]
        .iter()
        .any(|e| lower.ends_with(e.as_bytes()))
}

fn ext_of(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn has_macros(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with("vbaproject.bin") || n.starts_with("basic/") || n.starts_with("scripts/")
}

/// The marks a document view carries (`[watermark]`, see `crate::watermark`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Marks<'a> {
    /// Written as a document property (`documents = true`).
    pub property: Option<&'a str>,
    /// Written as a visible line (`footer = true`): [`crate::watermark::footer_line`].
    pub footer: Option<&'a str>,
    /// Written into every mask (`mask_codes = true`).
    pub codes: Option<&'a crate::watermark::MaskCodes>,
}

impl Marks<'_> {
    fn any(&self) -> bool {
        self.property.is_some() || self.footer.is_some()
    }
}

/// How a rebuilt member is written.
enum Member {
    Dir,
    /// Unchanged: its compressed bytes are copied as they are (no inflate, no deflate).
    Copy,
    /// Changed: written anew.
    Bytes(Vec<u8>),
}

/// Redacts the document `data` with the rules `sel` selects, inflating at most `budget` bytes.
/// `Err` is the reason it is refused (for the audit; never names a secret).
pub(crate) fn redact(
    engine: &Engine,
    sel: &RuleSelection,
    data: &[u8],
    refuse_macros: bool,
    budget: u64,
    marks: Marks<'_>,
) -> Result<Outcome, String> {
    if data.starts_with(OLE_MAGIC) {
        let wide: Vec<u8> = "EncryptedPackage"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        return Err(if memchr::memmem::find(data, &wide).is_some() {
            "encrypted document (an OLE compound file holding an EncryptedPackage): its text cannot be read to redact".into()
        } else {
            "legacy binary office document (OLE compound file): not redacted inside".into()
        });
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(data))
        .map_err(|_| "malformed document: not a readable zip container".to_string())?;
    if zip.index_for_name("[Content_Types].xml").is_none()
        && zip.index_for_name("mimetype").is_none()
    {
        return Err(
            "malformed document: neither Office Open XML ([Content_Types].xml) nor OpenDocument (mimetype)"
                .into(),
        );
    }
    let slide_size = match marks.footer {
        Some(_) => slide_size(&mut zip),
        None => DEFAULT_SLIDE,
    };
    let mut budget = budget;
    let mut members = Vec::with_capacity(zip.len());
    let (mut rules, mut redactions, mut changed) = (Vec::new(), 0usize, false);
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|_| "malformed document: an encrypted or unreadable member".to_string())?;
        let name = f.name().to_string();
        if refuse_macros && has_macros(&name) {
            return Err(format!(
                "holds macros (`{name}`) and the profile refuses macro-bearing documents"
            ));
        }
        let method = f.compression();
        if !matches!(
            method,
            zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated
        ) {
            return Err(format!(
                "member `{name}` is compressed with a method other than deflate"
            ));
        }
        let modified = f.last_modified().unwrap_or_default();
        if f.is_dir() {
            members.push((name, method, modified, Member::Dir));
            continue;
        }
        let mut bytes = Vec::with_capacity(f.size().min(budget) as usize);
        (&mut f)
            .take(budget.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|_| format!("malformed document: member `{name}` is corrupt"))?;
        if bytes.len() as u64 > budget {
            return Err("document content inflates beyond the scan limit".into());
        }
        budget -= bytes.len() as u64;
        let ext = ext_of(&name);
        let masked = if ext == "xml" || ext == "rels" {
            mask_xml(engine, sel, &bytes, marks.codes)
                .map_err(|e| format!("malformed document: member `{name}`: {e}"))?
        } else {
            match engine.scan_with(sel, &bytes) {
                ScanOutcome::Clean => None,
                ScanOutcome::Redact(r) => {
                    let ids = MaskedIds::of(&r);
                    Some((mask_all(&bytes, &coded(&r, marks.codes)), ids))
                }
                ScanOutcome::Unscannable(_) if IMAGE_EXTS.contains(&ext.as_str()) => None,
                ScanOutcome::Unscannable(why) => {
                    return Err(format!("member `{name}` cannot be scanned ({why})"));
                }
                ScanOutcome::Refused(why) => return Err(format!("member `{name}`: {why}")),
            }
        };
        let mut out = None;
        if let Some((m, ids)) = masked {
            redactions += ids.count;
            rules.extend(ids.rules);
            out = Some(m);
        }
        if let Some(mark) = marks.property
            && (name == "docProps/core.xml" || name == "meta.xml")
        {
            let b = insert_mark(out.as_deref().unwrap_or(&bytes), mark)
                .map_err(|e| format!("malformed document: member `{name}`: {e}"))?;
            out = Some(b);
        }
        if let Some(mark) = marks.footer
            && let Some(place) = footer_place(&name)
        {
            let line = crate::watermark::footer_line(mark);
            let b = insert_footer(out.as_deref().unwrap_or(&bytes), place, &line, slide_size)
                .map_err(|e| format!("malformed document: member `{name}`: {e}"))?;
            out = Some(b);
        }
        members.push(match out {
            Some(b) => {
                changed = true;
                (name, method, modified, Member::Bytes(b))
            }
            None => (name, method, modified, Member::Copy),
        });
    }
    if !changed && !marks.any() {
        return Ok(Outcome::Clean);
    }
    rules.sort();
    rules.dedup();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(data.len() + 4096)));
    let fail = |e: zip::result::ZipError| format!("cannot rebuild the document: {e}");
    for (i, (name, method, modified, member)) in members.into_iter().enumerate() {
        // The fastest deflate level: a rebuilt member is served once to a reader on the same
        // machine, where its size matters far less than the time to build it (level 6 took
        // most of a large sheet's rebuild).
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .compression_level((method == zip::CompressionMethod::Deflated).then_some(1))
            .last_modified_time(modified);
        match member {
            Member::Dir => w.add_directory(name, opts).map_err(fail)?,
            Member::Copy => {
                let f = zip.by_index_raw(i).map_err(fail)?;
                w.raw_copy_file(f).map_err(fail)?;
            }
            Member::Bytes(b) => {
                w.start_file(name, opts).map_err(fail)?;
                w.write_all(&b)
                    .map_err(|e| format!("cannot rebuild the document: {e}"))?;
            }
        }
    }
    let bytes = w.finish().map_err(fail)?.into_inner();
    Ok(Outcome::Masked(Rebuilt {
        bytes,
        rules,
        redactions,
    }))
}

/// `r` labelled with this session's mask codes, when there are any.
fn coded<'r>(
    r: &'r super::Redactions,
    codes: Option<&crate::watermark::MaskCodes>,
) -> Cow<'r, super::Redactions> {
    match codes {
        Some(c) => Cow::Owned(r.with_codes(|rule| c.code(rule))),
        None => Cow::Borrowed(r),
    }
}

/// The namespaces of the properties a mark is written as.
const DC_NS: &str = "http://purl.org/dc/elements/1.1/";
const ODF_META_NS: &str = "urn:oasis:names:tc:opendocument:xmlns:meta:1.0";
/// The name of the OpenDocument user-defined property holding the mark.
const ODF_MARK: &str = "veilfs-watermark";

/// Writes `mark` as the last property of a core-properties (`dc:identifier`) or OpenDocument
/// `meta.xml` (`meta:user-defined`) member; the element declares its own namespace, so the
/// member's prefixes do not matter.
fn insert_mark(xml: &[u8], mark: &str) -> Result<Vec<u8>, String> {
    let src = std::str::from_utf8(xml).map_err(|_| "not UTF-8".to_string())?;
    let mut reader = quick_xml::Reader::from_str(src);
    let mut w = quick_xml::Writer::new(Vec::with_capacity(xml.len() + 256));
    let io = |e: std::io::Error| e.to_string();
    let mut depth = 0usize;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        match &ev {
            Event::Start(_) => depth += 1,
            Event::End(e) => {
                let local = e.local_name();
                let at = match local.as_ref() {
                    // The root of docProps/core.xml.
                    "coreProperties" if depth == 1 => Some(false),
                    // office:meta, inside office:document-meta.
                    "meta" if depth == 2 => Some(true),
                    _ => None,
                };
                if let Some(odf) = at {
                    let el = if odf {
                        BytesStart::new("vfsmeta:user-defined").with_attributes([
                            ("xmlns:vfsmeta", ODF_META_NS),
                            ("vfsmeta:name", ODF_MARK),
                        ])
                    } else {
                        BytesStart::new("vfsdc:identifier")
                            .with_attributes([("xmlns:vfsdc", DC_NS)])
                    };
                    let end = el.to_end().into_owned();
                    w.write_event(Event::Start(el.clone())).map_err(io)?;
                    w.write_event(Event::Text(BytesText::new(mark)))
                        .map_err(io)?;
                    w.write_event(Event::End(end)).map_err(io)?;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
        w.write_event(ev).map_err(io)?;
    }
    Ok(w.into_inner())
}

/// The watermark a document view carries, if any (`veilfs trace`): the property, or else a
/// footer line found in the text of any XML member (a copy whose properties were stripped).
pub(crate) fn read_mark(data: &[u8]) -> Option<String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    let read = |zip: &mut zip::ZipArchive<Cursor<&[u8]>>, i: usize| -> Option<String> {
        let f = zip.by_index(i).ok()?;
        let mut xml = String::new();
        f.take(64 << 20).read_to_string(&mut xml).ok()?;
        Some(xml)
    };
    for name in ["docProps/core.xml", "meta.xml"] {
        let Some(i) = zip.index_for_name(name) else {
            continue;
        };
        let Some(xml) = read(&mut zip, i) else {
            continue;
        };
        let mut r = quick_xml::Reader::from_str(&xml);
        let mut inside = false;
        loop {
            match r.read_event() {
                Ok(Event::Start(e)) => {
                    inside = matches!(e.local_name().as_ref(), "identifier" | "user-defined")
                }
                Ok(Event::Text(t)) if inside => {
                    let t = t.xml10_content();
                    if t.starts_with(crate::watermark::MARK_PREFIX) {
                        return Some(t.into_owned());
                    }
                }
                Ok(Event::Eof) | Err(_) => break,
                _ => inside = false,
            }
        }
    }
    for i in 0..zip.len() {
        let is_xml = zip
            .name_for_index(i)
            .is_some_and(|n| matches!(ext_of(n).as_str(), "xml" | "rels"));
        if !is_xml {
            continue;
        }
        if let Some(m) = read(&mut zip, i).and_then(|x| crate::watermark::find_mark(&x)) {
            return Some(
                quick_xml::escape::unescape(&m)
                    .map(Cow::into_owned)
                    .unwrap_or(m),
            );
        }
    }
    None
}

/// The XML members of the document `data` (none if it is not a zip), entities decoded, so
/// text in them (a mask, a footer line) reads as a reader sees it (`veilfs trace`).
pub(crate) fn xml_texts(data: &[u8]) -> Vec<String> {
    let Ok(mut zip) = zip::ZipArchive::new(Cursor::new(data)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let Ok(f) = zip.by_index(i) else { continue };
        if !matches!(ext_of(f.name()).as_str(), "xml" | "rels") {
            continue;
        }
        let mut xml = String::new();
        if f.take(64 << 20).read_to_string(&mut xml).is_ok() {
            out.push(match quick_xml::escape::unescape(&xml) {
                Ok(Cow::Owned(s)) => s,
                _ => xml,
            });
        }
    }
    out
}

/// Where in a document a footer line goes, by member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FooterPlace {
    /// `word/document.xml`: a last paragraph of the body (before its section properties).
    WordBody,
    /// `xl/worksheets/*.xml`: a row after the last one (a blank row between), first column.
    Sheet,
    /// `ppt/slides/*.xml`: a text box along the bottom of the slide.
    Slide,
    /// OpenDocument `content.xml`: a last paragraph of a text, a last row of every table of a
    /// spreadsheet, a text frame on every page of a presentation.
    OdfContent,
}

fn footer_place(name: &str) -> Option<FooterPlace> {
    let in_dir = |dir: &str| {
        name.strip_prefix(dir)
            .is_some_and(|n| !n.contains('/') && n.ends_with(".xml"))
    };
    match name {
        "word/document.xml" => Some(FooterPlace::WordBody),
        "content.xml" => Some(FooterPlace::OdfContent),
        _ if in_dir("xl/worksheets/") => Some(FooterPlace::Sheet),
        _ if in_dir("ppt/slides/") => Some(FooterPlace::Slide),
        _ => None,
    }
}

/// A presentation's slide size in EMU when it names none (4:3).
const DEFAULT_SLIDE: (u64, u64) = (9_144_000, 6_858_000);

/// The slide size `ppt/presentation.xml` declares (`p:sldSz`).
fn slide_size(zip: &mut zip::ZipArchive<Cursor<&[u8]>>) -> (u64, u64) {
    let Ok(f) = zip.by_name("ppt/presentation.xml") else {
        return DEFAULT_SLIDE;
    };
    let mut xml = String::new();
    if f.take(16 << 20).read_to_string(&mut xml).is_err() {
        return DEFAULT_SLIDE;
    }
    let mut r = quick_xml::Reader::from_str(&xml);
    loop {
        match r.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) if e.local_name().as_ref() == "sldSz" => {
                let num = |k: &str| {
                    e.try_get_attribute(k)
                        .ok()
                        .flatten()
                        .and_then(|a| a.value.parse::<u64>().ok())
                };
                return match (num("cx"), num("cy")) {
                    (Some(cx), Some(cy)) => (cx, cy),
                    _ => DEFAULT_SLIDE,
                };
            }
            Ok(Event::Eof) | Err(_) => return DEFAULT_SLIDE,
            _ => {}
        }
    }
}

const W_NS: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
const A_NS: &str = "http://schemas.openxmlformats.org/drawingml/2006/main";
const P_NS: &str = "http://schemas.openxmlformats.org/presentationml/2006/main";
const ODF_NS: &str = concat!(
    r#"xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" "#,
    r#"xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" "#,
    r#"xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" "#,
    r#"xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" "#,
    r#"xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0""#
);

/// A container whose footer goes in before its closing tag, or before the run of trailing
/// children the schema wants last (a body's section properties, a shape tree's extensions).
struct Target {
    /// Depth of the container element (the root is 0).
    depth: usize,
    /// Where the trailing children start, if the last children seen are trailing ones.
    trailer_at: Option<usize>,
}

/// `xml` with the footer line `line` written where `place` says; the rest of the member is
/// copied byte for byte (only the insertion points are found by parsing).
fn insert_footer(
    xml: &[u8],
    place: FooterPlace,
    line: &str,
    slide: (u64, u64),
) -> Result<Vec<u8>, String> {
    let src = std::str::from_utf8(xml).map_err(|_| "not UTF-8".to_string())?;
    let esc = quick_xml::escape::escape(line);
    let mut reader = quick_xml::Reader::from_str(src);
    reader.config_mut().trim_text(false);
    // (replace from, replace to, text): sorted, non-overlapping.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut target: Option<Target> = None;
    let (mut max_row, mut rows, mut max_id) = (0u64, 0u64, 0u64);
    let mut odf_kind = String::new();
    let footer = |prefix: &str, max_row: u64, max_id: u64, odf_kind: &str| -> String {
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}:")
        };
        match place {
            FooterPlace::WordBody => format!(
                r#"<{p}p xmlns:{pw}="{W_NS}"><{pw}:r><{pw}:t xml:space="preserve">{esc}</{pw}:t></{pw}:r></{p}p>"#,
                pw = if prefix.is_empty() { "w" } else { prefix },
            ),
            FooterPlace::Sheet => {
                let n = max_row + 2;
                format!(
                    r#"<{p}row r="{n}"><{p}c r="A{n}" t="inlineStr"><{p}is><{p}t xml:space="preserve">{esc}</{p}t></{p}is></{p}c></{p}row>"#
                )
            }
            FooterPlace::Slide => {
                let h = 369_332u64.min(slide.1);
                format!(
                    r#"<vp:sp xmlns:vp="{P_NS}" xmlns:va="{A_NS}"><vp:nvSpPr><vp:cNvPr id="{}" name="veilfs watermark"/><vp:cNvSpPr txBox="1"/><vp:nvPr/></vp:nvSpPr><vp:spPr><va:xfrm><va:off x="0" y="{}"/><va:ext cx="{}" cy="{h}"/></va:xfrm><va:prstGeom prst="rect"><va:avLst/></va:prstGeom></vp:spPr><vp:txBody><va:bodyPr wrap="square"/><va:lstStyle/><va:p><va:r><va:rPr lang="en-US" sz="800"/><va:t>{esc}</va:t></va:r></va:p></vp:txBody></vp:sp>"#,
                    max_id + 1,
                    slide.1 - h,
                    slide.0,
                )
            }
            FooterPlace::OdfContent => match odf_kind {
                "spreadsheet" => format!(
                    r#"<table:table-row {ODF_NS}><table:table-cell office:value-type="string"><text:p>{esc}</text:p></table:table-cell></table:table-row>"#
                ),
                "presentation" => format!(
                    r#"<draw:frame {ODF_NS} svg:x="0.5cm" svg:y="0.2cm" svg:width="24cm" svg:height="0.8cm"><draw:text-box><text:p>{esc}</text:p></draw:text-box></draw:frame>"#
                ),
                _ => format!(r#"<text:p {ODF_NS}>{esc}</text:p>"#),
            },
        }
    };
    // Is the element `local` at `depth` (its parent at depth - 1) a footer's container, and
    // which of its children must stay last?
    let container = |local: &str, depth: usize, parents: &[String], odf_kind: &str| -> bool {
        let parent = |i: usize| parents.get(i).map(String::as_str);
        match place {
            FooterPlace::WordBody => depth == 1 && local == "body",
            FooterPlace::Sheet => depth == 1 && local == "sheetData",
            FooterPlace::Slide => depth == 2 && local == "spTree" && parent(1) == Some("cSld"),
            FooterPlace::OdfContent => match odf_kind {
                "spreadsheet" => depth == 3 && local == "table",
                "presentation" => depth == 3 && local == "page",
                _ => depth == 2 && local == "text",
            },
        }
    };
    let trailing = |local: &str| match place {
        FooterPlace::WordBody => local == "sectPr",
        FooterPlace::Slide => local == "extLst",
        FooterPlace::OdfContent => matches!(local, "named-expressions" | "notes"),
        FooterPlace::Sheet => false,
    };
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        let after = reader.buffer_position() as usize;
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name().as_ref().to_string();
                let depth = stack.len();
                if depth == 2 && place == FooterPlace::OdfContent && stack[1] == "body" {
                    odf_kind = local.clone();
                }
                match local.as_str() {
                    "row" if place == FooterPlace::Sheet && depth == 2 => {
                        rows += 1;
                        let r = e
                            .try_get_attribute("r")
                            .ok()
                            .flatten()
                            .and_then(|a| a.value.parse::<u64>().ok())
                            .unwrap_or(rows);
                        max_row = max_row.max(r).max(rows);
                    }
                    "cNvPr" if place == FooterPlace::Slide => {
                        if let Some(id) = e
                            .try_get_attribute("id")
                            .ok()
                            .flatten()
                            .and_then(|a| a.value.parse::<u64>().ok())
                        {
                            max_id = max_id.max(id);
                        }
                    }
                    _ => {}
                }
                if let Some(t) = &mut target
                    && depth == t.depth + 1
                {
                    if trailing(&local) {
                        t.trailer_at.get_or_insert(before);
                    } else {
                        t.trailer_at = None;
                    }
                }
                let is_container = target.is_none() && container(&local, depth, &stack, &odf_kind);
                if matches!(ev, Event::Start(_)) {
                    if is_container {
                        target = Some(Target {
                            depth,
                            trailer_at: None,
                        });
                    }
                    stack.push(local);
                } else if is_container {
                    // An empty container (`<sheetData/>`): opened and closed around the footer.
                    let name = e.name().as_ref().to_string();
                    let prefix = name.rsplit_once(':').map_or("", |(p, _)| p).to_string();
                    let attrs = &src[before + 1 + name.len()..after - 2];
                    edits.push((
                        before,
                        after,
                        format!(
                            "<{name}{attrs}>{}</{name}>",
                            footer(&prefix, max_row, max_id, &odf_kind)
                        ),
                    ));
                }
            }
            Event::End(e) => {
                stack.pop();
                if let Some(t) = &target
                    && stack.len() == t.depth
                {
                    let name = e.name().as_ref().to_string();
                    let prefix = name.rsplit_once(':').map_or("", |(p, _)| p);
                    let at = t.trailer_at.unwrap_or(before);
                    edits.push((at, at, footer(prefix, max_row, max_id, &odf_kind)));
                    target = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(xml.len() + edits.iter().map(|e| e.2.len()).sum::<usize>());
    let mut at = 0;
    for (from, to, text) in edits {
        out.extend_from_slice(&xml[at..from]);
        out.extend_from_slice(text.as_bytes());
        at = to;
    }
    out.extend_from_slice(&xml[at..]);
    Ok(out)
}

/// The rules and span count of one masked piece.
struct MaskedIds {
    rules: Vec<String>,
    count: usize,
}

impl MaskedIds {
    fn of(r: &super::Redactions) -> MaskedIds {
        MaskedIds {
            rules: r.spans().iter().map(|s| s.rule_id.to_string()).collect(),
            count: r.spans().len(),
        }
    }
}

/// Pieces of text cut from one XML member, scanned as one buffer.
#[derive(Default)]
struct Segments {
    buf: String,
    /// `(start, end)` of each segment in `buf`.
    at: Vec<(usize, usize)>,
}

impl Segments {
    fn push(&mut self, text: &str, joined: bool) -> usize {
        if !joined && !self.buf.is_empty() {
            self.buf.push('\n');
        }
        let start = self.buf.len();
        self.buf.push_str(text);
        self.at.push((start, self.buf.len()));
        self.at.len() - 1
    }

    /// The masked text of each segment that changed (None where it did not).
    fn mask(
        &self,
        engine: &Engine,
        sel: &RuleSelection,
        codes: Option<&crate::watermark::MaskCodes>,
        ids: &mut Option<MaskedIds>,
    ) -> Result<Vec<Option<String>>, String> {
        let masked = match engine.scan_with(sel, self.buf.as_bytes()) {
            ScanOutcome::Clean => return Ok(vec![None; self.at.len()]),
            ScanOutcome::Redact(r) => {
                let m = MaskedIds::of(&r);
                let acc = ids.get_or_insert(MaskedIds {
                    rules: Vec::new(),
                    count: 0,
                });
                acc.rules.extend(m.rules);
                acc.count += m.count;
                mask_all(self.buf.as_bytes(), &coded(&r, codes))
            }
            ScanOutcome::Unscannable(why) => return Err(format!("text cannot be scanned ({why})")),
            ScanOutcome::Refused(why) => return Err(why.to_string()),
        };
        Ok(self
            .at
            .iter()
            .map(|&(a, b)| {
                let new = &masked[a..b];
                (new != &self.buf.as_bytes()[a..b])
                    .then(|| String::from_utf8_lossy(new).into_owned())
            })
            .collect())
    }
}

/// The text a run of text events stands for.
fn decode_text(events: &[Event<'_>]) -> Result<String, String> {
    let mut s = String::new();
    for e in events {
        match e {
            Event::Text(t) => s.push_str(&t.xml10_content()),
            Event::CData(c) => s.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => match r.resolve_char_ref().map_err(|e| e.to_string())? {
                Some(c) => s.push(c),
                None => match r.as_ref() {
                    "amp" => s.push('&'),
                    "lt" => s.push('<'),
                    "gt" => s.push('>'),
                    "quot" => s.push('"'),
                    "apos" => s.push('\''),
                    other => {
                        s.push('&');
                        s.push_str(other);
                        s.push(';');
                    }
                },
            },
            _ => {}
        }
    }
    Ok(s)
}

/// Masks the text and attribute values of one XML member; `None` when nothing matched.
///
/// The member is parsed once to cut out its text; only the pieces whose text changed are
/// written anew (a text run escaped, a tag with a changed attribute rebuilt) and every other
/// byte is copied from the source, so a large member with a few masks costs one parse and one
/// copy.
fn mask_xml(
    engine: &Engine,
    sel: &RuleSelection,
    bytes: &[u8],
    codes: Option<&crate::watermark::MaskCodes>,
) -> Result<Option<(Vec<u8>, MaskedIds)>, String> {
    let src = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut reader = quick_xml::Reader::from_str(src);
    reader.config_mut().trim_text(false);
    let (mut text, mut attrs) = (Segments::default(), Segments::default());
    // Source range of each text segment, and whether it is one CDATA section.
    let mut text_at: Vec<(usize, usize, bool)> = Vec::new();
    // Source range of each tag with scanned attributes, and the segment of each attribute.
    let mut tags: Vec<(usize, usize, Vec<Option<usize>>)> = Vec::new();
    let mut run: Vec<Event<'_>> = Vec::new();
    let mut run_start = 0usize;
    let mut run_end = 0usize;
    // Whether the next text continues the previous one (no block ended in between).
    let mut joined = false;
    loop {
        let before = reader.buffer_position() as usize;
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        let after = reader.buffer_position() as usize;
        match ev {
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => {
                if run.is_empty() {
                    run_start = before;
                }
                run_end = after;
                run.push(ev);
                continue;
            }
            _ => {}
        }
        if !run.is_empty() {
            let s = decode_text(&run)?;
            text.push(&s, joined);
            text_at.push((
                run_start,
                run_end,
                matches!(run.as_slice(), [Event::CData(_)]),
            ));
            run.clear();
            joined = true;
        }
        match ev {
            Event::Eof => break,
            Event::Start(ref t) | Event::Empty(ref t) => {
                let mut segs = Vec::new();
                for a in t.attributes() {
                    let a = a.map_err(|e| format!("bad attribute: {e}"))?;
                    let key = a.key.as_ref();
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        segs.push(None);
                        continue;
                    }
                    let v = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| e.to_string())?;
                    segs.push(Some(attrs.push(&v, false)));
                }
                if !segs.is_empty() {
                    tags.push((before, after, segs));
                }
            }
            Event::End(ref e) if !INLINE.contains(&e.local_name().as_ref()) => joined = false,
            _ => {}
        }
    }
    let mut ids = None;
    let new_text = text.mask(engine, sel, codes, &mut ids)?;
    let new_attrs = attrs.mask(engine, sel, codes, &mut ids)?;
    let Some(ids) = ids else {
        return Ok(None);
    };
    // (from, to, replacement), in source order (text runs and tags never overlap).
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (&(from, to, cdata), new) in text_at.iter().zip(&new_text) {
        if let Some(new) = new {
            edits.push((
                from,
                to,
                if cdata {
                    format!("<![CDATA[{}]]>", new.replace("]]>", "]]]]><![CDATA[>"))
                } else {
                    quick_xml::escape::partial_escape(new.as_str()).into_owned()
                },
            ));
        }
    }
    for (from, to, segs) in &tags {
        if segs.iter().flatten().any(|&s| new_attrs[s].is_some()) {
            edits.push((*from, *to, rebuild_tag(&src[*from..*to], segs, &new_attrs)?));
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(bytes.len() + 256);
    let mut at = 0;
    for (from, to, new) in edits {
        out.extend_from_slice(&bytes[at..from]);
        out.extend_from_slice(new.as_bytes());
        at = to;
    }
    out.extend_from_slice(&bytes[at..]);
    Ok(Some((out, ids)))
}

/// The start or empty tag `tag` (its source text) with the attributes whose segment changed
/// set to their masked values.
fn rebuild_tag(
    tag: &str,
    segs: &[Option<usize>],
    new_attrs: &[Option<String>],
) -> Result<String, String> {
    let mut reader = quick_xml::Reader::from_str(tag);
    let (t, empty) = match reader.read_event().map_err(|e| e.to_string())? {
        Event::Start(t) => (t, false),
        Event::Empty(t) => (t, true),
        _ => return Err("a tag changed while it was rewritten".into()),
    };
    let mut nt = BytesStart::new(t.name().as_ref().to_string());
    for (a, seg) in t.attributes().zip(segs) {
        let a = a.map_err(|e| format!("bad attribute: {e}"))?;
        match seg.and_then(|s| new_attrs[s].as_deref()) {
            Some(v) => {
                let key = a.key.as_ref().to_string();
                nt.push_attribute((key.as_str(), v));
            }
            None => nt.push_attribute(Attribute {
                key: a.key,
                value: Cow::Owned(a.value.into_owned()),
            }),
        }
    }
    let mut w = quick_xml::Writer::new(Vec::new());
    w.write_event(if empty {
        Event::Empty(nt)
    } else {
        Event::Start(nt)
    })
    .map_err(|e| e.to_string())?;
    String::from_utf8(w.into_inner()).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

    fn engine() -> Engine {
        Engine::load(&["secrets".into(), "pii".into()], &[]).unwrap()
    }

    /// A document zip built with the zip crate's writer (deflated members).
    pub(crate) fn doc(members: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body) in members {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn member(data: &[u8], name: &str) -> String {
        let mut z = zip::ZipArchive::new(Cursor::new(data)).unwrap();
        let mut s = String::new();
        z.by_name(name).unwrap().read_to_string(&mut s).unwrap();
        s
    }

    fn redacted(data: &[u8]) -> Rebuilt {
        let e = engine();
        match redact(&e, &e.all_rules(), data, true, 1 << 30, Marks::default()).unwrap() {
            Outcome::Masked(r) => r,
            Outcome::Clean => panic!("nothing masked"),
        }
    }

    #[test]
    fn text_split_across_runs_attributes_and_properties_are_masked_and_the_xml_stays_valid() {
        let (a, b) = TOKEN.split_at(12);
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>Deploy key </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>{a}</w:t></w:r><w:proofErr w:type="spellStart"/><w:r><w:t>{b}</w:t></w:r></w:p>
<w:p><w:ins w:author="jane.roe@example.org"><w:r><w:t>Fish &amp; chips &lt;ok&gt;</w:t></w:r></w:ins></w:p>
</w:body></w:document>"#
        );
        let core = r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="c" xmlns:dc="d"><dc:title>Quarterly plan</dc:title><dc:creator>john.doe@example.com</dc:creator></cp:coreProperties>"#;
        let d = doc(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", &body),
            ("docProps/core.xml", core),
        ]);
        let r = redacted(&d);
        assert!(r.redactions >= 3, "{r:?}");
        let out = member(&r.bytes, "word/document.xml");
        assert!(!out.contains(a) && !out.contains(b), "{out}");
        assert!(!out.contains("jane.roe@example.org"), "{out}");
        assert!(out.contains("&lt;redacted:"), "masks are escaped: {out}");
        assert!(out.contains("Deploy key "), "{out}");
        assert!(out.contains("Fish &amp; chips &lt;ok&gt;"), "{out}");
        let props = member(&r.bytes, "docProps/core.xml");
        assert!(
            props.contains("Quarterly plan") && !props.contains("john.doe"),
            "{props}"
        );
        // Valid XML: parses to the end.
        for m in [out, props] {
            let mut rd = quick_xml::Reader::from_str(&m);
            while !matches!(rd.read_event().unwrap(), Event::Eof) {}
        }
        // Deterministic: the same input gives the same bytes.
        assert_eq!(redacted(&d).bytes, r.bytes);
    }

    #[test]
    fn a_mark_is_written_into_the_properties_and_read_back() {
        let e = engine();
        let all = e.all_rules();
        let mark = crate::watermark::mark_text(
            std::path::Path::new("/mnt/view"),
            "s-1234",
            "2026-01-01T00:00:00Z",
        );
        let core = r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="c" xmlns:dc="d"><dc:title>Plan</dc:title></cp:coreProperties>"#;
        let ooxml = doc(&[
            ("[Content_Types].xml", "<Types/>"),
            ("docProps/core.xml", core),
        ]);
        let meta = r#"<office:document-meta xmlns:office="o"><office:meta><x>1</x></office:meta></office:document-meta>"#;
        let odf = doc(&[
            ("mimetype", "application/vnd.oasis.opendocument.text"),
            ("meta.xml", meta),
        ]);
        for d in [ooxml, odf] {
            assert_eq!(read_mark(&d), None);
            // A clean document is rebuilt to carry it.
            let Ok(Outcome::Masked(r)) = redact(
                &e,
                &all,
                &d,
                true,
                1 << 30,
                Marks {
                    property: Some(&mark),
                    ..Default::default()
                },
            ) else {
                panic!("not rebuilt")
            };
            assert_eq!(r.redactions, 0);
            assert_eq!(read_mark(&r.bytes).as_deref(), Some(mark.as_str()));
        }
    }

    /// The footer goes where each schema allows it: before a body's section properties, into
    /// an empty `<sheetData/>` with the next free row number, before a shape tree's extensions
    /// with a fresh shape id; the rest of the member is unchanged and the XML stays valid.
    #[test]
    fn footer_lines_go_where_each_schema_allows_them() {
        let line = "mark <&>";
        let f = |xml: &str, place| {
            let out = insert_footer(xml.as_bytes(), place, line, (100, 50)).unwrap();
            let out = String::from_utf8(out).unwrap();
            let mut rd = quick_xml::Reader::from_str(&out);
            while !matches!(rd.read_event().unwrap(), Event::Eof) {}
            out
        };
        let body = f(
            r#"<w:document xmlns:w="x"><w:body><w:p/><w:sectPr><w:pgSz/></w:sectPr></w:body></w:document>"#,
            FooterPlace::WordBody,
        );
        assert!(
            body.contains(r#"<w:p/><w:p xmlns:w=""#)
                && body.contains("mark &lt;&amp;&gt;</w:t></w:r></w:p><w:sectPr>"),
            "{body}"
        );
        let sheet = f(
            r#"<worksheet><dimension ref="A1"/><sheetData/><pageMargins/></worksheet>"#,
            FooterPlace::Sheet,
        );
        assert!(
            sheet.contains(r#"<sheetData><row r="2"><c r="A2" t="inlineStr">"#)
                && sheet.ends_with("</row></sheetData><pageMargins/></worksheet>"),
            "{sheet}"
        );
        let sheet = f(
            r#"<x:worksheet><x:sheetData><x:row r="7"/><x:row r="9"/></x:sheetData></x:worksheet>"#,
            FooterPlace::Sheet,
        );
        assert!(sheet.contains(r#"<x:row r="11"><x:c r="A11""#), "{sheet}");
        let slide = f(
            r#"<p:sld><p:cSld><p:spTree><p:nvGrpSpPr><p:cNvPr id="1" name=""/></p:nvGrpSpPr><p:sp><p:nvSpPr><p:cNvPr id="4" name="t"/></p:nvSpPr></p:sp><p:extLst/></p:spTree></p:cSld></p:sld>"#,
            FooterPlace::Slide,
        );
        assert!(
            slide.contains(r#"<vp:cNvPr id="5" name="veilfs watermark"/>"#)
                && slide.contains(r#"<va:off x="0" y="0"/><va:ext cx="100" cy="50"/>"#)
                && slide.contains("</vp:sp><p:extLst/></p:spTree>"),
            "{slide}"
        );
        let ods = f(
            r#"<office:document-content><office:body><office:spreadsheet><table:table><table:table-row/><table:named-expressions/></table:table></office:spreadsheet></office:body></office:document-content>"#,
            FooterPlace::OdfContent,
        );
        assert!(
            ods.contains("<table:table-row/><table:table-row xmlns:office")
                && ods.contains("</table:table-row><table:named-expressions/>"),
            "{ods}"
        );
    }

    #[test]
    fn clean_documents_are_clean_and_bad_ones_are_refused_with_a_reason() {
        let e = engine();
        let all = e.all_rules();
        let clean = doc(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", "<d><p><t>hello world</t></p></d>"),
        ]);
        assert!(matches!(
            redact(&e, &all, &clean, true, 1 << 30, Marks::default()),
            Ok(Outcome::Clean)
        ));
        let err = |d: &[u8]| redact(&e, &all, d, true, 1 << 30, Marks::default()).unwrap_err();
        let mut ole = OLE_MAGIC.to_vec();
        ole.extend(
            "EncryptedPackage"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes()),
        );
        assert!(err(&ole).contains("encrypted"));
        assert!(err(b"PK\x03\x04 not really").contains("malformed"));
        let plain_zip = doc(&[("a.txt", "hi")]);
        assert!(err(&plain_zip).contains("neither"));
        let broken = doc(&[("[Content_Types].xml", "<Types/>"), ("x.xml", "<a><b></a>")]);
        assert!(err(&broken).contains("malformed"), "{}", err(&broken));
        let macros = doc(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/vbaProject.bin", "Sub AutoOpen()"),
        ]);
        assert!(err(&macros).contains("macros"));
        assert!(matches!(
            redact(&e, &all, &macros, false, 1 << 30, Marks::default()),
            Ok(Outcome::Clean)
        ));
        assert!(
            redact(&e, &all, &clean, true, 10, Marks::default())
                .unwrap_err()
                .contains("scan limit")
        );
    }
}
