//! Compressed containers that are cheap to open: gzip files and zip archives.
//!
//! Why: compressed bytes hide their text from the run scan (`binary.rs`), so a `.gz` or `.zip`
//! would otherwise be unscannable (refused, or served unscanned where the profile allows it). Both
//! formats are common in project folders (logs, exports, `.jar`/`.whl`/`.docx` are zips) and
//! inflate quickly, so their members are scanned instead. A mask cannot be applied inside
//! compressed data without rewriting it (and changing the file's size), so the verdict is all or
//! nothing: a container whose members hold no secret is served as it is, one that holds any is
//! refused, with the rule and the member named.
//!
//! Bounds: members are inflated up to a total budget (the engine's inflate limit: 4 ×
//! `max_scan_size` in a mount); more than that, an encrypted member, or a compression method
//! other than stored or deflate makes the container unscannable. Members are held in memory
//! only up to that budget.

use std::io::{Cursor, Read};

/// Is `data` a container this module opens (gzip, zip)?
pub(crate) fn is_container(data: &[u8]) -> bool {
    data.starts_with(b"\x1f\x8b")
        || data.starts_with(b"PK\x03\x04")
        || data.starts_with(b"PK\x05\x06")
}

/// The members of the gzip file or zip archive `data` as `(name, inflated bytes)`, inflating at
/// most `*budget` bytes in all (the budget is reduced by what was inflated), or why they cannot
/// be read.
pub(crate) fn members(
    data: &[u8],
    budget: &mut u64,
) -> Result<Vec<(String, Vec<u8>)>, &'static str> {
    if data.starts_with(b"\x1f\x8b") {
        let mut d = flate2::read::MultiGzDecoder::new(data);
        let name = d
            .header()
            .and_then(|h| h.filename())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|| "gzip content".to_string());
        let bytes = inflate(&mut d, budget).map_err(|e| e.unwrap_or("corrupt gzip stream"))?;
        // The header is parsed on the first read.
        let name = d
            .header()
            .and_then(|h| h.filename())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or(name);
        return Ok(vec![(name, bytes)]);
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(data)).map_err(|_| "unreadable zip archive")?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|_| "zip archive with an encrypted or unreadable entry")?;
        if f.is_dir() {
            continue;
        }
        if !matches!(
            f.compression(),
            zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated
        ) {
            return Err("zip entry compressed with a method other than deflate");
        }
        let name = f.name().to_string();
        let bytes = inflate(&mut f, budget).map_err(|e| e.unwrap_or("corrupt zip entry"))?;
        out.push((name, bytes));
    }
    Ok(out)
}

/// Reads `r` to the end within `*budget` bytes. `Err(Some(_))`: over budget; `Err(None)`: a
/// read error (corrupt data).
fn inflate(r: &mut impl Read, budget: &mut u64) -> Result<Vec<u8>, Option<&'static str>> {
    let mut bytes = Vec::new();
    r.take(budget.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|_| None)?;
    if bytes.len() as u64 > *budget {
        return Err(Some("compressed content inflates beyond the scan limit"));
    }
    *budget -= bytes.len() as u64;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn gzip(name: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new();
        if let Some(n) = name {
            b = b.filename(n);
        }
        let mut e = b.write(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zipped(entries: &[(&str, &[u8])]) -> Vec<u8> {
        // A stored-only zip, written by hand (the zip crate is built for reading only).
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in entries {
            let crc = crc32(data);
            let off = out.len() as u32;
            let mut h = Vec::new();
            h.extend_from_slice(b"PK\x03\x04\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00");
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central
                .extend_from_slice(b"PK\x01\x02\x0a\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00");
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0u8; 12]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = flate2::Crc::new();
        c.update(data);
        c.sum()
    }

    #[test]
    fn gzip_and_zip_members_are_inflated_within_budget() {
        let g = gzip(Some("app.env"), b"TOKEN=x\n");
        assert!(is_container(&g));
        let mut budget = 100;
        let m = members(&g, &mut budget).unwrap();
        assert_eq!(m, vec![("app.env".to_string(), b"TOKEN=x\n".to_vec())]);
        assert_eq!(budget, 92);
        let mut budget = 4;
        assert_eq!(
            members(&g, &mut budget),
            Err("compressed content inflates beyond the scan limit")
        );

        let z = zipped(&[("a.txt", b"hello"), ("dir/b.txt", b"world!")]);
        assert!(is_container(&z));
        let mut budget = 100;
        let m = members(&z, &mut budget).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[1].0.as_str(), m[1].1.as_slice()),
            ("dir/b.txt", &b"world!"[..])
        );
        let mut budget = 100;
        assert!(members(b"PK\x03\x04garbage", &mut budget).is_err());
        assert!(members(b"\x1f\x8b\x08\x00garbage", &mut budget).is_err());
    }

    /// Through the engine: a secret in a member refuses the container, naming rule and member;
    /// a clean container is served as it is; too much inflated content is unscannable.
    #[test]
    fn a_secret_inside_refuses_the_container() {
        use crate::redact::{Engine, ScanOutcome};
        use std::path::Path;
        let e = Engine::load(&["secrets".into()], &[]).unwrap();
        let token = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
        let secret = format!("export GH={token}\n");
        let why = |o: ScanOutcome| match o {
            ScanOutcome::Refused(w) => w.to_string(),
            o => panic!("not refused: {o:?}"),
        };
        let w = why(e.scan(Path::new("a.gz"), &gzip(Some("env.sh"), secret.as_bytes())));
        assert!(w.contains("`github-pat`") && w.contains("`env.sh`"), "{w}");
        assert!(!w.contains(token));
        let z = zipped(&[("README", b"hello"), ("conf/env.sh", secret.as_bytes())]);
        let w = why(e.scan(Path::new("a.zip"), &z));
        assert!(w.contains("`conf/env.sh`"), "{w}");
        // A gzip inside a zip, and UTF-16 text in a binary member, are looked into too.
        let inner = gzip(None, secret.as_bytes());
        let w = why(e.scan(Path::new("a.zip"), &zipped(&[("x.gz", &inner)])));
        assert!(w.contains("inside `x.gz`"), "{w}");
        let mut bin = b"\x7fELF\0\0".to_vec();
        bin.extend(secret.encode_utf16().flat_map(|u| u.to_le_bytes()));
        why(e.scan(Path::new("a.zip"), &zipped(&[("lib.so", &bin)])));

        let clean = zipped(&[("README", b"hello"), ("x.gz", &gzip(None, b"fine\n"))]);
        assert!(matches!(
            e.scan(Path::new("a.zip"), &clean),
            ScanOutcome::Clean
        ));
        let small = Engine::load(&["secrets".into()], &[])
            .unwrap()
            .with_inflate_limit(3);
        assert!(matches!(
            small.scan(Path::new("a.zip"), &clean),
            ScanOutcome::Unscannable(_)
        ));
        assert_ne!(small.fingerprint(), e.fingerprint());
    }
}
