//! Where each key and value of a profile's TOML text is, so errors found after
//! deserialisation can name FILE:LINE:COLUMN and the field.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;

use super::validate::{Seg, path_string};

/// Spans of every key and value of a (syntactically valid) TOML document, so errors found after
/// deserialisation can point at the text. Built by deserialising the document a second time into a
/// generic tree, asking the TOML deserializer for spans via the `serde_spanned` protocol (the same
/// one `toml::Spanned` uses).
#[derive(Debug, Default)]
pub(super) struct SpanTree {
    root: Vec<(String, Option<Range<usize>>, Node)>,
}

#[derive(Debug)]
struct Node {
    span: Option<Range<usize>>,
    kind: NodeKind,
}

#[derive(Debug)]
enum NodeKind {
    Table(Vec<(String, Option<Range<usize>>, Node)>),
    Array(Vec<Node>),
    Scalar,
}

impl SpanTree {
    pub(super) fn parse(text: &str) -> Option<SpanTree> {
        let node: Node = toml::from_str(text).ok()?;
        match node.kind {
            NodeKind::Table(root) => Some(SpanTree { root }),
            _ => None,
        }
    }

    /// The span of the value at `path` (or of its key, if the value has none).
    pub(super) fn span_of(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let (first, rest) = path.split_first()?;
        let Seg::Key(k) = first else { return None };
        let (_, kspan, node) = self.root.iter().find(|(name, _, _)| name == k)?;
        match node.descend(rest) {
            Some(span) => Some(span),
            None if rest.is_empty() => kspan.clone(),
            None => None,
        }
    }

    /// The deepest field path whose key or value contains byte offset `off` (only tables when
    /// `tables_only`: a missing-field error points at the table that lacks the field).
    pub(super) fn field_at(&self, off: usize, tables_only: bool) -> Option<String> {
        let mut best: Option<(usize, String)> = None;
        let mut path = Vec::new();
        let mut search = Search {
            off,
            tables_only,
            best: &mut best,
        };
        search.table(&self.root, &mut path);
        best.map(|(_, s)| s)
    }
}

impl Node {
    fn descend(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let Some((first, rest)) = path.split_first() else {
            return self.span.clone();
        };
        match (first, &self.kind) {
            (Seg::Key(k), NodeKind::Table(entries)) => {
                let (_, kspan, node) = entries.iter().find(|(name, _, _)| name == k)?;
                match node.descend(rest) {
                    Some(s) => Some(s),
                    None if rest.is_empty() => kspan.clone(),
                    None => None,
                }
            }
            (Seg::Idx(i), NodeKind::Array(items)) => items.get(*i)?.descend(rest),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum OwnedSeg {
    Key(String),
    Idx(usize),
}

fn owned_path_string(path: &[OwnedSeg]) -> String {
    let segs: Vec<Seg<'_>> = path
        .iter()
        .map(|s| match s {
            OwnedSeg::Key(k) => Seg::Key(k),
            OwnedSeg::Idx(i) => Seg::Idx(*i),
        })
        .collect();
    path_string(&segs)
}

struct Search<'a> {
    off: usize,
    tables_only: bool,
    best: &'a mut Option<(usize, String)>,
}

impl Search<'_> {
    fn consider(&mut self, span: &Option<Range<usize>>, is_table: bool, path: &[OwnedSeg]) {
        if self.tables_only && !is_table {
            return;
        }
        if let Some(s) = span
            && s.start <= self.off
            && self.off < s.end.max(s.start + 1)
        {
            let depth = path.len();
            if self.best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                *self.best = Some((depth, owned_path_string(path)));
            }
        }
    }

    fn table(
        &mut self,
        entries: &[(String, Option<Range<usize>>, Node)],
        path: &mut Vec<OwnedSeg>,
    ) {
        for (name, kspan, node) in entries {
            path.push(OwnedSeg::Key(name.clone()));
            self.consider(kspan, false, path);
            self.node(node, path);
            path.pop();
        }
    }

    fn node(&mut self, node: &Node, path: &mut Vec<OwnedSeg>) {
        let is_table = matches!(node.kind, NodeKind::Table(_));
        self.consider(&node.span, is_table, path);
        match &node.kind {
            NodeKind::Table(entries) => self.table(entries, path),
            NodeKind::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(OwnedSeg::Idx(i));
                    self.node(item, path);
                    path.pop();
                }
            }
            NodeKind::Scalar => {}
        }
    }
}

// The `serde_spanned` protocol (serde_spanned 0.6, used by toml 0.8): a deserializer that supports
// spans answers `deserialize_struct(NAME, FIELDS)` with a map of start, end and value. One that
// has no span for this item falls back to `deserialize_any`, which the visitor also handles.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// The value inside a spanned wrapper: asking for a span again would recurse forever.
struct Unspanned(Node);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unspanned, D::Error> {
        d.deserialize_any(NodeVisitor).map(Unspanned)
    }
}

/// A map key with its span, read through the same protocol.
struct Key(String, Option<Range<usize>>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let node = d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)?;
        Ok(node)
    }
}

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_string(), None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let mut start = None;
        let mut end = None;
        let mut value = None;
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => value = Some(map.next_value::<String>()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let span = match (start, end) {
            (Some(s), Some(e)) => Some(s..e),
            _ => None,
        };
        Ok(Key(value.unwrap_or_default(), span))
    }
}

struct NodeVisitor;

fn scalar<E>() -> Result<Node, E> {
    Ok(Node {
        span: None,
        kind: NodeKind::Scalar,
    })
}

/// Distinguishes the spanned wrapper from an ordinary table by its first key.
enum MapKey {
    Start,
    Other(Key),
}

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MapKey, D::Error> {
        let k = Key::deserialize(d)?;
        if k.0 == SPANNED_START && k.1.is_none() {
            Ok(MapKey::Start)
        } else {
            Ok(MapKey::Other(k))
        }
    }
}

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        scalar()
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        scalar()
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        scalar()
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        scalar()
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        scalar()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Node {
            span: None,
            kind: NodeKind::Array(items),
        })
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        match map.next_key::<MapKey>()? {
            None => {}
            Some(MapKey::Start) => {
                // The spanned wrapper: start, end, value (in that order).
                let start: usize = map.next_value()?;
                let mut end = start;
                let mut inner = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        SPANNED_END => end = map.next_value()?,
                        SPANNED_VALUE => inner = Some(map.next_value::<Unspanned>()?.0),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let mut node = inner.unwrap_or(Node {
                    span: None,
                    kind: NodeKind::Scalar,
                });
                node.span = Some(start..end);
                return Ok(node);
            }
            Some(MapKey::Other(Key(name, span))) => {
                let v: Node = map.next_value()?;
                entries.push((name, span, v));
            }
        }
        while let Some(Key(name, span)) = map.next_key::<Key>()? {
            let v: Node = map.next_value()?;
            entries.push((name, span, v));
        }
        Ok(Node {
            span: None,
            kind: NodeKind::Table(entries),
        })
    }
}
