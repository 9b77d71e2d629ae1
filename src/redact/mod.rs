//! Redaction: rule files → compiled engine → length-preserving masked view, plus a scan cache.
//!
//! Why it exists: the agent should still read `config.yaml`, just not the password in it.
//! Blocking whole files makes agents useless; masking in place keeps the file readable while the
//! secret never reaches the agent's context (and so never reaches a model provider or a log).
//!
//! How it fits together:
//! - [`rules`]: the TOML schema (`redaction-rules/*.toml`), strict validation with
//!   file:line:column errors, compilation. Built-in sets `secrets` and `pii` are compiled into
//!   the binary; admins add their own files.
//! - [`engine`]: one keyword pass per file (`keywords.rs`) decides which regexes run where.
//! - [`mask`]: `Redactions` (merged spans) and `apply` for any read window; masks keep the length
//!   and the line breaks so `st_size`, offsets and `mmap` stay valid.
//! - [`text`]: binary detection and UTF-16 support.
//! - [`binary`]: the printable runs of binaries (ASCII/UTF-8 and UTF-16LE, as `strings` finds
//!   them), scanned and masked in place; compressed and encrypted content is unscannable.
//! - [`container`]: gzip files and zip archives, scanned inside (a secret there refuses the file).
//! - [`document`]: office documents (docx, xlsx, pptx, odt, ods, odp) rebuilt with secrets masked.
//! - [`cache`]: results keyed by file identity and rule fingerprint.
//! - [`generic`]: the credential parser behind `detector` rules (any `NAME <op> value` syntax)
//!   and the placeholder filter every candidate secret goes through.
//! - [`gitleaks`]: converts gitleaks configs to our schema (`veilfs rules import-gitleaks`).
//!
//! Nothing here touches the filesystem except [`Engine::load`] reading admin rule files; nothing
//! on the data path panics on file contents.

pub(crate) mod binary;
pub(crate) mod cache;
pub(crate) mod container;
pub(crate) mod document;
pub(crate) mod engine;
pub(crate) mod generic;
pub(crate) mod gitleaks;
mod keywords;
pub(crate) mod kingfisher;
pub(crate) mod mask;
pub(crate) mod noseyparker;
pub(crate) mod rules;
#[doc(hidden)]
pub(crate) mod samples;
mod span;
pub(crate) mod text;

pub(crate) use cache::{FileId, ScanCache};
pub(crate) use engine::RuleSelection;
pub use engine::{Engine, ScanOutcome};
pub(crate) use mask::Span;
pub use mask::{Redactions, mask_all};
pub(crate) use rules::RulesError;
pub(crate) use text::Encoding;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn engine(src: &str) -> Engine {
        Engine::from_sources(&[("t.toml".into(), src.into())]).unwrap()
    }

    #[test]
    fn engine_is_send_sync() {
        fn f<T: Send + Sync>() {}
        f::<Engine>();
        f::<ScanCache>();
        f::<ScanOutcome>();
    }

    #[test]
    fn unknown_set_lists_known() {
        let e = Engine::load(&["nope".into()], &[]).unwrap_err().to_string();
        assert_eq!(e, "unknown rule set `nope` (known: secrets, pii)");
    }

    #[test]
    fn duplicate_ids_name_both() {
        let a = "version = 1\nname = \"a\"\n[[rules]]\nid = \"x\"\nregex = 'x'\nkeywords = ['x']\n";
        let e = Engine::from_sources(&[("a.toml".into(), a.into()), ("b.toml".into(), a.into())])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "duplicate rule id `x`: a.toml:4:6 and b.toml:4:6");
    }

    #[test]
    fn pem_block_keeps_lines() {
        let e = engine(
            "version = 1\nname = \"t\"\n[[rules]]\nid = \"pk\"\nwindow = 65536\nkeywords = ['private key']\nregex = '''(?s)-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----'''\n",
        );
        let d = b"x\n-----BEGIN PRIVATE KEY-----\nMIIEvAIBADANBg\nkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----\ny\n";
        let ScanOutcome::Redact(r) = e.scan(Path::new("k.pem"), d) else {
            panic!("not redacted")
        };
        let m = mask_all(d, &r);
        assert_eq!(m.len(), d.len());
        let s = String::from_utf8(m).unwrap();
        assert_eq!(s.lines().count(), 6);
        assert!(s.starts_with("x\n<redacted:pk>****"), "{s}");
        assert!(!s.contains("MII") && s.ends_with("*****\ny\n"), "{s}");
        let f = e.findings(Path::new("k.pem"), d);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].line, 2);
    }

    #[test]
    fn utf16_file_is_scanned_and_masked_in_units() {
        let e = engine(
            "version = 1\nname = \"t\"\n[[rules]]\nid = \"gh\"\nkeywords = ['ghp_']\nregex = 'ghp_[A-Za-z0-9]{8}'\n",
        );
        let text = "token: ghp_QZvkeTmw1 \r\n";
        let mut d = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            d.extend_from_slice(&u.to_le_bytes());
        }
        let ScanOutcome::Redact(r) = e.scan(Path::new("a.txt"), &d) else {
            panic!("utf16 not redacted")
        };
        assert_eq!(r.encoding(), Encoding::Utf16Le);
        let m = mask_all(&d, &r);
        let units: Vec<u16> = m[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&units).unwrap(),
            "token: <redacted:gh1 \r\n"
        );
        // A binary is scanned through its printable runs and masked in place.
        let bin = b"ghp_QZvkeTmw\0\x01\x02\x03\x04\x05\x06\x07\x08\x09\x10";
        let ScanOutcome::Redact(r) = e.scan(Path::new("b"), bin) else {
            panic!("binary not redacted")
        };
        assert_eq!(&mask_all(bin, &r)[..12], b"<redacted:gh");
        assert_eq!(&mask_all(bin, &r)[12..], &bin[12..]);
        assert!(matches!(
            Engine::empty().scan(Path::new("b"), bin),
            ScanOutcome::Clean
        ));
    }
}
