//! Git's object files read by content, never by name: a pack (`PACK`, version 2 or 3) or a
//! zlib stream (a loose object, or any zlib data in its place).
//!
//! Why by content: the agent chooses names (any directory can be called `.git`, a `.git` file or
//! `GIT_DIR` can point anywhere, a pack can be renamed), but git and the agent read the bytes.
//! Every byte of a file judged here is accounted for: a pack's entries are walked one after the
//! other from its header to its trailing checksum, so no zlib stream can hide in a gap, after
//! the last entry or beside a forged index; a loose object's stream must end the file.
//!
//! Deltas are resolved (a secret split between a base and a delta's inserts is whole in the
//! object), with `gix-pack`: offset deltas within the pack, reference deltas against objects of
//! the same pack found earlier or later (thin-pack bases are appended at the end). A base that is
//! not in the pack makes the pack unscannable. Allocations follow `limit`.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

pub(crate) use gix_hash::ObjectId;
pub(crate) use gix_object::Kind;

use gix_pack::data::{self, decode::entry::ResolvedBase};

const HASH: gix_hash::Kind = gix_hash::Kind::Sha1;

/// What kind of object file a file's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A pack data file.
    Pack,
    /// A zlib stream: a loose object, or zlib data where one could be.
    Loose,
}

/// One object of an object file. `id` is its git id (computed, never taken from a name); data
/// of a zlib stream that is not a git object has kind `None` and the id of a blob of its bytes.
pub(crate) struct Object<'a> {
    pub id: ObjectId,
    pub kind: Option<Kind>,
    pub data: &'a [u8],
}

/// The format of `data`, if it is one this module reads.
pub(crate) fn detect(data: &[u8]) -> Option<Format> {
    if data.len() >= 12 && &data[..4] == b"PACK" && matches!(data[4..8], [0, 0, 0, 2 | 3]) {
        return Some(Format::Pack);
    }
    if is_zlib_header(data) && inflates(data) {
        return Some(Format::Loose);
    }
    None
}

/// Could a file whose first bytes are `prefix` be an object file (pack magic, or a zlib
/// header)? For files too large to read whole: an object file is then refused, never served
/// unscanned.
pub(crate) fn looks_like(prefix: &[u8]) -> bool {
    (prefix.len() >= 8 && &prefix[..4] == b"PACK" && matches!(prefix[4..8], [0, 0, 0, 2 | 3]))
        || is_zlib_header(prefix)
}

/// RFC 1950's header: deflate, a window of at most 32 KiB, the check bits, no preset dictionary.
fn is_zlib_header(d: &[u8]) -> bool {
    d.len() >= 2
        && d[0] & 0x0f == 8
        && d[0] >> 4 <= 7
        && d[1] & 0x20 == 0
        && (u16::from(d[0]) << 8 | u16::from(d[1])) % 31 == 0
}

/// Does the start of `data` inflate? (A random header that passes the check rarely does.)
fn inflates(data: &[u8]) -> bool {
    let mut out = [0u8; 64];
    flate2::read::ZlibDecoder::new(data).read(&mut out).is_ok()
}

/// Calls `f` with every object of the object file `data` (of format `fmt`); stops early and
/// returns `Ok(true)` when `f` returns true. `Err` says why the file cannot be read whole.
pub(crate) fn each(
    fmt: Format,
    data: &[u8],
    limit: u64,
    f: &mut dyn FnMut(Object<'_>) -> bool,
) -> Result<bool, String> {
    match fmt {
        Format::Loose => {
            let (kind, body) = loose(data, limit)?;
            let id = gix_object::compute_hash(HASH, kind.unwrap_or(Kind::Blob), &body)
                .map_err(|e| e.to_string())?;
            Ok(f(Object {
                id,
                kind,
                data: &body,
            }))
        }
        Format::Pack => pack(data, limit, f),
    }
}

/// The kind (when the stream is a git object) and content of a zlib stream that must end
/// exactly at the end of `data`, inflated within `limit` bytes.
fn loose(data: &[u8], limit: u64) -> Result<(Option<Kind>, Vec<u8>), String> {
    let mut d = flate2::read::ZlibDecoder::new(data);
    let mut out = Vec::new();
    (&mut d)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt zlib stream: {e}"))?;
    if out.len() as u64 > limit {
        return Err("object inflates beyond the scan limit".into());
    }
    if d.total_in() != data.len() as u64 {
        return Err("bytes after the end of the object's zlib stream".into());
    }
    match gix_object::decode::loose_header(&out) {
        Ok((kind, size, header)) if (out.len() - header) as u64 == size => {
            out.drain(..header);
            Ok((Some(kind), out))
        }
        _ => Ok((None, out)),
    }
}

/// Every entry of a pack, resolved, in file order (reference deltas whose base comes later are
/// resolved once it has been seen).
fn pack(data: &[u8], limit: u64, f: &mut dyn FnMut(Object<'_>) -> bool) -> Result<bool, String> {
    let err = |e: gix_error::Error| e.to_string();
    let file = data::File::from_data(data, PathBuf::new(), HASH)
        .map_err(err)?
        .with_alloc_limit_bytes(Some(usize::try_from(limit).unwrap_or(usize::MAX)));
    let end = data.len() - HASH.len_in_bytes();
    let mut ids: HashMap<ObjectId, u64> = HashMap::new();
    let mut waiting: Vec<data::Entry> = Vec::new();
    let mut inflate = gix_zlib::Inflate::default();
    let mut cache = gix_pack::cache::lru::StaticLinkedList::<64>::new(64 << 20);
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    let mut offset = data::header::SIZE as u64;
    for _ in 0..file.num_objects() {
        if offset as usize >= end {
            return Err("pack ends before its last object".into());
        }
        let entry = file.entry(offset).map_err(err)?;
        if entry.decompressed_size > limit {
            return Err("pack object inflates beyond the scan limit".into());
        }
        // Where this entry's zlib stream ends is where the next entry starts.
        scratch.clear();
        scratch.resize(entry.decompressed_size as usize, 0);
        let used = file
            .decompress_entry(&entry, &mut inflate, &mut scratch)
            .map_err(err)?;
        offset = entry.data_offset + used as u64;
        // A whole object is what was just inflated.
        if let Some(kind) = entry.header.as_kind() {
            let id = gix_object::compute_hash(HASH, kind, &scratch).map_err(|e| e.to_string())?;
            ids.insert(id, entry.pack_offset());
            if f(Object {
                id,
                kind: Some(kind),
                data: &scratch,
            }) {
                return Ok(true);
            }
            continue;
        }
        if let data::entry::Header::RefDelta { base_id } = &entry.header
            && !ids.contains_key(base_id)
        {
            waiting.push(entry);
            continue;
        }
        let (id, kind) = resolve(
            &file,
            &ids,
            entry.clone(),
            &mut out,
            &mut inflate,
            &mut cache,
        )?;
        ids.insert(id, entry.pack_offset());
        if f(Object {
            id,
            kind: Some(kind),
            data: &out,
        }) {
            return Ok(true);
        }
    }
    if offset as usize != end {
        return Err("bytes between the pack's last object and its checksum".into());
    }
    // Reference deltas against bases found later; each round must resolve at least one.
    while !waiting.is_empty() {
        let before = waiting.len();
        let mut still = Vec::new();
        for entry in waiting {
            let data::entry::Header::RefDelta { base_id } = &entry.header else {
                continue;
            };
            if !ids.contains_key(base_id) {
                still.push(entry);
                continue;
            }
            let at = entry.pack_offset();
            let (id, kind) = resolve(&file, &ids, entry, &mut out, &mut inflate, &mut cache)?;
            ids.insert(id, at);
            if f(Object {
                id,
                kind: Some(kind),
                data: &out,
            }) {
                return Ok(true);
            }
        }
        if still.len() == before {
            return Err("a delta's base object is not in the pack".into());
        }
        waiting = still;
    }
    Ok(false)
}

/// Decodes `entry` (resolving its delta chain) into `out`; its id and kind.
fn resolve(
    file: &data::File<&[u8]>,
    ids: &HashMap<ObjectId, u64>,
    entry: data::Entry,
    out: &mut Vec<u8>,
    inflate: &mut gix_zlib::Inflate,
    cache: &mut dyn gix_pack::cache::DecodeEntry,
) -> Result<(ObjectId, Kind), String> {
    let lookup = |id: &gix_hash::oid, _: &mut Vec<u8>| -> gix_error::Result<Option<ResolvedBase>> {
        match ids.get(id) {
            Some(&at) => file.entry(at).map(|e| Some(ResolvedBase::InPack(e))),
            None => Ok(None),
        }
    };
    let o = file
        .decode_entry(entry, out, inflate, &lookup, cache)
        .map_err(|e| e.to_string())?;
    let id = gix_object::compute_hash(HASH, o.kind, out).map_err(|e| e.to_string())?;
    Ok((id, o.kind))
}

/// The entries of a tree object as `(name, id, is a tree)`, or `None` if it does not parse.
pub(crate) fn tree_entries(data: &[u8]) -> Option<Vec<(Vec<u8>, ObjectId, bool)>> {
    gix_object::TreeRefIter::from_bytes(data, HASH)
        .map(|e| {
            e.ok()
                .map(|e| (e.filename.to_vec(), e.oid.to_owned(), e.mode.is_tree()))
        })
        .collect()
}

/// The tree a commit object points to, and its parents.
pub(crate) fn commit_tree(data: &[u8]) -> Option<(ObjectId, Vec<ObjectId>)> {
    let tree = gix_object::CommitRefIter::from_bytes(data, HASH)
        .tree_id()
        .ok()?;
    let parents = gix_object::CommitRefIter::from_bytes(data, HASH)
        .parent_ids()
        .collect();
    Some((tree, parents))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn loose_blob(content: &[u8]) -> Vec<u8> {
        let mut raw = format!("blob {}\0", content.len()).into_bytes();
        raw.extend_from_slice(content);
        zlib(&raw)
    }

    /// A version-2 pack of whole (undeltified) objects, with a real trailing checksum.
    pub(crate) fn pack_of(objects: &[(Kind, &[u8])]) -> Vec<u8> {
        let mut p = b"PACK\0\0\0\x02".to_vec();
        p.extend_from_slice(&(objects.len() as u32).to_be_bytes());
        for (kind, data) in objects {
            let t: u8 = match kind {
                Kind::Commit => 1,
                Kind::Tree => 2,
                Kind::Blob => 3,
                Kind::Tag => 4,
            };
            let mut size = data.len();
            let mut b = (t << 4) | (size & 0x0f) as u8;
            size >>= 4;
            while size > 0 {
                p.push(b | 0x80);
                b = (size & 0x7f) as u8;
                size >>= 7;
            }
            p.push(b);
            p.extend_from_slice(&zlib(data));
        }
        let mut h = gix_hash::hasher(HASH);
        h.update(&p);
        p.extend_from_slice(h.try_finalize().unwrap().as_bytes());
        p
    }

    type Read = Vec<(Option<Kind>, Vec<u8>)>;

    fn all(fmt: Format, data: &[u8]) -> Result<Read, String> {
        let mut v = Vec::new();
        each(fmt, data, 1 << 20, &mut |o| {
            v.push((o.kind, o.data.to_vec()));
            false
        })?;
        Ok(v)
    }

    #[test]
    fn loose_objects_and_zlib_data_are_read_whole() {
        let o = loose_blob(b"hello\n");
        assert_eq!(detect(&o), Some(Format::Loose));
        let got = all(Format::Loose, &o).unwrap();
        assert_eq!(got, vec![(Some(Kind::Blob), b"hello\n".to_vec())]);
        // The id is git's (`git hash-object` of "hello\n").
        each(Format::Loose, &o, 100, &mut |o| {
            assert_eq!(o.id.to_string(), "ce013625030ba8dba906f756967f9e9ca394464a");
            false
        })
        .unwrap();
        // Zlib data that is not a git object is still read (and judged) whole.
        let z = zlib(b"just text");
        assert_eq!(all(Format::Loose, &z).unwrap()[0].0, None);
        // A second stream hidden after the first, or too much content: not readable whole.
        let mut two = o.clone();
        two.extend_from_slice(&zlib(b"more"));
        assert!(all(Format::Loose, &two).is_err());
        assert!(each(Format::Loose, &o, 3, &mut |_| false).is_err());
        assert_eq!(detect(b"PACKAGE NAME\nversion 1\n"), None);
        assert_eq!(detect(b"plain text"), None);
    }

    #[test]
    fn packs_are_walked_entry_by_entry_to_the_checksum() {
        let p = pack_of(&[(Kind::Blob, b"one\n"), (Kind::Blob, b"two\n")]);
        assert_eq!(detect(&p), Some(Format::Pack));
        let got = all(Format::Pack, &p).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], (Some(Kind::Blob), b"two\n".to_vec()));
        // Bytes slipped in before the checksum (a zlib stream no entry accounts for).
        let mut gap = p[..p.len() - 20].to_vec();
        gap.extend_from_slice(&zlib(b"hidden"));
        gap.extend_from_slice(&p[p.len() - 20..]);
        assert!(all(Format::Pack, &gap).is_err());
        // A header that promises more objects than there are.
        let mut more = p.clone();
        more[11] = 3;
        assert!(all(Format::Pack, &more).is_err());
    }
}
