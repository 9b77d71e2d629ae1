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
//! The rebuilt container is a pure function of the input: members keep their order, names,
//! compression method and timestamps, so the same version always yields the same bytes (a view
//! rebuilt after its cached copy was dropped matches what the kernel may still cache).

use std::borrow::Cow;
use std::io::{Cursor, Read, Write};

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesCData, BytesStart, BytesText, Event};

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

/// Redacts the document `data` with the rules `sel` selects, inflating at most `budget` bytes.
/// `Err` is the reason it is refused (for the audit; never names a secret).
pub(crate) fn redact(
    engine: &Engine,
    sel: &RuleSelection,
    data: &[u8],
    refuse_macros: bool,
    budget: u64,
    mark: Option<&str>,
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
            members.push((name, method, modified, None));
            continue;
        }
        let mut bytes = Vec::new();
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
            mask_xml(engine, sel, &bytes)
                .map_err(|e| format!("malformed document: member `{name}`: {e}"))?
        } else {
            match engine.scan_with(sel, &bytes) {
                ScanOutcome::Clean => None,
                ScanOutcome::Redact(r) => Some((mask_all(&bytes, &r), MaskedIds::of(&r))),
                ScanOutcome::Unscannable(_) if IMAGE_EXTS.contains(&ext.as_str()) => None,
                ScanOutcome::Unscannable(why) => {
                    return Err(format!("member `{name}` cannot be scanned ({why})"));
                }
                ScanOutcome::Refused(why) => return Err(format!("member `{name}`: {why}")),
            }
        };
        if let Some((m, ids)) = masked {
            changed = true;
            redactions += ids.count;
            rules.extend(ids.rules);
            bytes = m;
        }
        if let Some(mark) = mark
            && (name == "docProps/core.xml" || name == "meta.xml")
        {
            bytes = insert_mark(&bytes, mark)
                .map_err(|e| format!("malformed document: member `{name}`: {e}"))?;
            changed = true;
        }
        members.push((name, method, modified, Some(bytes)));
    }
    if !changed {
        return Ok(Outcome::Clean);
    }
    rules.sort();
    rules.dedup();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(data.len())));
    let fail = |e: zip::result::ZipError| format!("cannot rebuild the document: {e}");
    for (name, method, modified, bytes) in members {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .last_modified_time(modified);
        match bytes {
            None => w.add_directory(name, opts).map_err(fail)?,
            Some(b) => {
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

/// The namespaces of the properties a mark is written as.
const DC_NS: &str = "http://purl.org/dc/elements/1.1/";
const ODF_META_NS: &str = "urn:oasis:names:tc:opendocument:xmlns:meta:1.0";
/// The name of the OpenDocument user-defined property holding the mark.
const ODF_MARK: &str = "veilfs-watermark";
/// Every mark starts with this, so `read_mark` tells it from any other identifier.
const MARK_PREFIX: &str = "veilfs watermark: ";

/// The mark of a mount's document views: mount point, session and time.
pub(crate) fn mark_text(mountpoint: &std::path::Path, session: &str, time: &str) -> String {
    format!(
        "{MARK_PREFIX}mount={} session={session} mounted={time}",
        mountpoint.display()
    )
}

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

/// The watermark a document view carries, if any (`veilfs trace`).
pub(crate) fn read_mark(data: &[u8]) -> Option<String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    for name in ["docProps/core.xml", "meta.xml"] {
        let Ok(f) = zip.by_name(name) else {
            continue;
        };
        let mut xml = String::new();
        f.take(16 << 20).read_to_string(&mut xml).ok()?;
        let mut r = quick_xml::Reader::from_str(&xml);
        let mut inside = false;
        loop {
            match r.read_event() {
                Ok(Event::Start(e)) => {
                    inside = matches!(e.local_name().as_ref(), "identifier" | "user-defined")
                }
                Ok(Event::Text(t)) if inside => {
                    let t = t.xml10_content();
                    if t.starts_with(MARK_PREFIX) {
                        return Some(t.into_owned());
                    }
                }
                Ok(Event::Eof) | Err(_) => break,
                _ => inside = false,
            }
        }
    }
    None
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
                mask_all(self.buf.as_bytes(), &r)
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

/// One piece of a parsed XML member.
enum Item<'a> {
    Event(Event<'a>),
    /// Consecutive text and entity references: one text segment.
    Text(usize, Vec<Event<'a>>),
    /// A start or empty tag, with the segment of each attribute value (None: not scanned).
    Tag(Event<'a>, Vec<Option<usize>>),
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
fn mask_xml(
    engine: &Engine,
    sel: &RuleSelection,
    bytes: &[u8],
) -> Result<Option<(Vec<u8>, MaskedIds)>, String> {
    let src = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut reader = quick_xml::Reader::from_str(src);
    reader.config_mut().trim_text(false);
    let (mut text, mut attrs) = (Segments::default(), Segments::default());
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut run: Vec<Event<'_>> = Vec::new();
    // Whether the next text continues the previous one (no block ended in between).
    let mut joined = false;
    fn flush<'a>(
        run: &mut Vec<Event<'a>>,
        items: &mut Vec<Item<'a>>,
        text: &mut Segments,
        joined: bool,
    ) -> Result<(), String> {
        if !run.is_empty() {
            let s = decode_text(run)?;
            let seg = text.push(&s, joined);
            items.push(Item::Text(seg, std::mem::take(run)));
        }
        Ok(())
    }
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        match ev {
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => run.push(ev),
            Event::Eof => {
                flush(&mut run, &mut items, &mut text, joined)?;
                break;
            }
            other => {
                if !run.is_empty() {
                    flush(&mut run, &mut items, &mut text, joined)?;
                    joined = true;
                }
                match other {
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
                        items.push(Item::Tag(other, segs));
                    }
                    Event::End(ref e) => {
                        if !INLINE.contains(&e.local_name().as_ref()) {
                            joined = false;
                        }
                        items.push(Item::Event(other));
                    }
                    _ => items.push(Item::Event(other)),
                }
            }
        }
    }
    let mut ids = None;
    let new_text = text.mask(engine, sel, &mut ids)?;
    let new_attrs = attrs.mask(engine, sel, &mut ids)?;
    let Some(ids) = ids else {
        return Ok(None);
    };
    let mut w = quick_xml::Writer::new(Vec::with_capacity(bytes.len() + 256));
    let io = |e: std::io::Error| e.to_string();
    for item in items {
        match item {
            Item::Event(e) => w.write_event(e).map_err(io)?,
            Item::Text(seg, events) => match &new_text[seg] {
                None => {
                    for e in events {
                        w.write_event(e).map_err(io)?;
                    }
                }
                Some(new) => if matches!(events.as_slice(), [Event::CData(_)]) {
                    w.write_event(Event::CData(BytesCData::new(new.as_str())))
                } else {
                    w.write_event(Event::Text(BytesText::new(new)))
                }
                .map_err(io)?,
            },
            Item::Tag(e, segs) => {
                let changed = segs.iter().flatten().any(|&s| new_attrs[s].is_some());
                if !changed {
                    w.write_event(e).map_err(io)?;
                    continue;
                }
                let (t, empty) = match e {
                    Event::Start(t) => (t, false),
                    Event::Empty(t) => (t, true),
                    _ => continue,
                };
                let name = t.name().as_ref().to_string();
                let mut nt = BytesStart::new(name);
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
                w.write_event(if empty {
                    Event::Empty(nt)
                } else {
                    Event::Start(nt)
                })
                .map_err(io)?;
            }
        }
    }
    Ok(Some((w.into_inner(), ids)))
}

#[cfg(test)]
mod tests {
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
        match redact(&e, &e.all_rules(), data, true, 1 << 30, None).unwrap() {
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
        let mark = mark_text(
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
            let Ok(Outcome::Masked(r)) = redact(&e, &all, &d, true, 1 << 30, Some(&mark)) else {
                panic!("not rebuilt")
            };
            assert_eq!(r.redactions, 0);
            assert_eq!(read_mark(&r.bytes).as_deref(), Some(mark.as_str()));
        }
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
            redact(&e, &all, &clean, true, 1 << 30, None),
            Ok(Outcome::Clean)
        ));
        let err = |d: &[u8]| redact(&e, &all, d, true, 1 << 30, None).unwrap_err();
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
            redact(&e, &all, &macros, false, 1 << 30, None),
            Ok(Outcome::Clean)
        ));
        assert!(
            redact(&e, &all, &clean, true, 10, None)
                .unwrap_err()
                .contains("scan limit")
        );
    }
}
