//! Watermarks: what traces a leaked copy of a view back to the mount, session and time it was
//! served under (`[watermark]`, `veilfs trace`).
//!
//! Two kinds, both opt-in:
//! - The *mark*, one line naming mount point, session and mount time. A document view carries it
//!   as a document property (`documents = true`) and, where the profile asks for it, as a
//!   visible footer line (`footer = true`, see [`footer_line`]). Both are the same text, so
//!   `veilfs trace` recognises either by its prefix, wherever in the document it ended up.
//! - *Mask codes* (`mask_codes = true`): every mask carries a short code,
//!   `<redacted:RULE:CODE>`, so a mask pasted into a ticket or a chat names its session. The
//!   code is the keyed blake3 of the session id and the rule id, under a random key kept in the
//!   store (`mask-codes.key`): it depends on nothing in the secret, and without the store's key
//!   nobody can tell which session a code stands for, or forge one. Four hex digits: a code alone
//!   is one guess in 65536 per session, and every further mask of another rule in the same paste
//!   narrows it again; `veilfs trace` names every session of the store whose codes all match.
//!
//! Why the code sits inside the label: masks keep the length of what they replace (see
//! `redact::mask`), so a mask shorter than its label is cut, and a short secret's mask loses its
//! code (its rule id too). Nothing else in the file changes: code and configuration files still
//! parse as with plain masks, which is why mask codes are not held back from them.

use std::io::{Read, Write};
use std::path::Path;

/// Every mark starts with this, so it is told from any other text.
pub(crate) const MARK_PREFIX: &str = "veilfs watermark: ";

/// The mark of a mount's views: mount point, session and time.
pub(crate) fn mark_text(mountpoint: &Path, session: &str, time: &str) -> String {
    format!(
        "{MARK_PREFIX}mount={} session={session} mounted={time}",
        mountpoint.display()
    )
}

/// The visible line a view carries at its end (a document's last paragraph, a sheet's last row,
/// a text box on every slide; a text view's last line). It holds the mark as it is, so
/// `veilfs trace` reads it back from the footer when the property was stripped.
pub(crate) fn footer_line(mark: &str) -> String {
    format!("Served through veilfs for an agent session. {mark}")
}

/// The mark found in `text`: from its prefix through the mount time (the mount point may hold
/// spaces; the time does not).
pub(crate) fn find_mark(text: &str) -> Option<String> {
    let at = text.find(MARK_PREFIX)?;
    let rest = &text[at..];
    let t = rest.find(" mounted=")? + " mounted=".len();
    let end = rest[t..]
        .find(|c: char| c.is_whitespace() || c == '<' || c == '"')
        .map_or(rest.len(), |e| t + e);
    Some(rest[..end].to_string())
}

/// Hex digits of a mask code.
pub(crate) const CODE_LEN: usize = 4;

/// The file in a store holding the key mask codes are derived under.
pub(crate) const KEY_FILE: &str = "mask-codes.key";

/// The mask codes of one session.
#[derive(Clone)]
pub(crate) struct MaskCodes {
    key: [u8; 32],
    session: String,
}

impl std::fmt::Debug for MaskCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("MaskCodes")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl MaskCodes {
    pub(crate) fn new(key: [u8; 32], session: &str) -> MaskCodes {
        MaskCodes {
            key,
            session: session.to_string(),
        }
    }

    /// The code masks of rule `rule_id` carry in this session.
    pub(crate) fn code(&self, rule_id: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"veilfs mask code\0");
        h.update(self.session.as_bytes());
        h.update(b"\0");
        h.update(rule_id.as_bytes());
        let hex = h.finalize().to_hex();
        hex[..CODE_LEN].to_string()
    }
}

/// The store's mask-code key, made (random, mode 0600, durable) on first use.
pub(crate) fn load_or_create_key(store: &Path) -> std::io::Result<[u8; 32]> {
    let path = store.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            return b.try_into().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a 32-byte key", path.display()),
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let mut tmp = tempfile::NamedTempFile::new_in(store)?;
    tmp.write_all(&key)?;
    tmp.as_file().sync_all()?;
    // Two mounts racing to make it: the first one's key stays, the other reads it back.
    match tmp.persist_noclobber(&path) {
        Ok(_) => {
            std::fs::File::open(store)?.sync_all()?;
            Ok(key)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(store),
        Err(e) => Err(e.error),
    }
}

/// The store's key, if it has one (`veilfs trace` never makes one).
pub(crate) fn load_key(store: &Path) -> Option<[u8; 32]> {
    std::fs::read(store.join(KEY_FILE)).ok()?.try_into().ok()
}

/// Every `(rule id, code)` of a coded mask (`<redacted:RULE:CODE>`) in `text`, in order.
pub(crate) fn coded_masks(text: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for at in memchr::memmem::find_iter(text, b"<redacted:") {
        let rest = &text[at + b"<redacted:".len()..];
        let Some(end) = rest.iter().take(200).position(|&b| b == b'>') else {
            continue;
        };
        let Ok(label) = std::str::from_utf8(&rest[..end]) else {
            continue;
        };
        let Some((rule, code)) = label.rsplit_once(':') else {
            continue;
        };
        if code.len() == CODE_LEN
            && code.bytes().all(|b| b.is_ascii_hexdigit())
            && !rule.is_empty()
            && !rule.contains(char::is_whitespace)
        {
            out.push((rule.to_string(), code.to_ascii_lowercase()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_found_in_text() {
        let mark = mark_text(Path::new("/mnt/my view"), "s-12", "2026-01-01T00:00:00.5Z");
        let line = footer_line(&mark);
        assert_eq!(find_mark(&format!("a\n{line}\nmore")), Some(mark.clone()));
        assert_eq!(find_mark(&format!("<t>{line}</t>")), Some(mark.clone()));
        assert_eq!(find_mark("no mark here"), None);
    }

    #[test]
    fn codes_depend_on_key_session_and_rule_and_are_found_in_text() {
        let a = MaskCodes::new([1; 32], "s-1");
        assert_eq!(a.code("aws"), a.code("aws"));
        assert_eq!(a.code("aws").len(), CODE_LEN);
        let others = [
            MaskCodes::new([2; 32], "s-1").code("aws"),
            MaskCodes::new([1; 32], "s-2").code("aws"),
            a.code("github-pat"),
        ];
        // 16-bit codes: these three differ for these inputs (a fixed, checked example).
        assert!(others.iter().all(|c| *c != a.code("aws")), "{others:?}");
        let text = format!(
            "x <redacted:aws:{}>** y <redacted:github-pat> <redacted:pii-email:zzzz> <redacted:a",
            a.code("aws")
        );
        assert_eq!(
            coded_masks(text.as_bytes()),
            vec![("aws".to_string(), a.code("aws"))]
        );
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_key(d.path()), None);
        let k = load_or_create_key(d.path()).unwrap();
        assert_eq!(load_or_create_key(d.path()).unwrap(), k);
        assert_eq!(load_key(d.path()), Some(k));
        assert_ne!(k, [0; 32]);
    }
}
