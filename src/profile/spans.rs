//! Where each key and value of a profile's TOML text is, so errors found after
//! deserialisation can name FILE:LINE:COLUMN and the field.
//!
//! The spans come from `toml_edit`'s parse of the text (the parser `toml` itself uses, so the
//! offsets agree with `toml::de::Error::span`). Not `toml::Spanned` throughout: toml has no span
//! for an implicit table (`visibility` when only `[[visibility.dir]]` is written), and a
//! `Spanned<T>` there fails to deserialise; here such a node simply has no span and a lookup
//! falls back to its key or an ancestor.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Key, Table, TableLike, Value};

use super::validate::{Seg, path_string};

/// A parsed, syntactically valid profile text, asked for spans by field path.
#[derive(Default)]
pub(super) struct SpanTree {
    doc: Option<ImDocument<String>>,
}

/// One node of the document: what holds a value differs by where it sits.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }

    fn table(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
            Node::Table(t) => Some(t),
        }
    }

    /// The entries of a table (standard or inline), with their keys.
    fn entries(self) -> Vec<(&'a Key, Node<'a>)> {
        let Some(t) = self.table() else {
            return Vec::new();
        };
        t.iter()
            .filter_map(|(name, _)| t.get_key_value(name))
            .map(|(k, i)| (k, Node::Item(i)))
            .collect()
    }

    /// The elements of an array (of values or of tables).
    fn items(self) -> Vec<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.iter().map(Node::Table).collect(),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                a.iter().map(Node::Value).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The span of the value at `path` below this node (or of its key, if the value has none).
    fn descend(self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let Some((first, rest)) = path.split_first() else {
            return self.span();
        };
        match *first {
            Seg::Key(k) => {
                let (key, node) = self.entries().into_iter().find(|(key, _)| key.get() == k)?;
                match node.descend(rest) {
                    Some(s) => Some(s),
                    None if rest.is_empty() => key.span(),
                    None => None,
                }
            }
            Seg::Idx(i) => self.items().get(i)?.descend(rest),
        }
    }
}

impl SpanTree {
    /// `None` when `text` is not valid TOML.
    pub(super) fn parse(text: &str) -> Option<SpanTree> {
        let doc = ImDocument::parse(text.to_string()).ok()?;
        Some(SpanTree { doc: Some(doc) })
    }

    fn root(&self) -> Option<Node<'_>> {
        self.doc.as_ref().map(|d| Node::Table(d.as_table()))
    }

    /// The span of the value at `path` (or of its key, if the value has none).
    pub(super) fn span_of(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        if !matches!(path.first(), Some(Seg::Key(_))) {
            return None;
        }
        self.root()?.descend(path)
    }

    /// The deepest field path whose key or value contains byte offset `off` (only tables when
    /// `tables_only`: a missing-field error points at the table that lacks the field).
    pub(super) fn field_at(&self, off: usize, tables_only: bool) -> Option<String> {
        let mut search = Search {
            off,
            tables_only,
            best: None,
        };
        search.table(self.root()?, &mut Vec::new());
        search.best.map(|(_, s)| s)
    }
}

struct Search {
    off: usize,
    tables_only: bool,
    best: Option<(usize, String)>,
}

impl Search {
    fn consider(&mut self, span: Option<Range<usize>>, is_table: bool, path: &[Seg<'_>]) {
        if self.tables_only && !is_table {
            return;
        }
        if let Some(s) = span
            && s.start <= self.off
            && self.off < s.end.max(s.start + 1)
        {
            let depth = path.len();
            if self.best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                self.best = Some((depth, path_string(path)));
            }
        }
    }

    fn table<'a>(&mut self, node: Node<'a>, path: &mut Vec<Seg<'a>>) {
        for (key, child) in node.entries() {
            path.push(Seg::Key(key.get()));
            self.consider(key.span(), false, path);
            self.node(child, path);
            path.pop();
        }
    }

    fn node<'a>(&mut self, node: Node<'a>, path: &mut Vec<Seg<'a>>) {
        let is_table = node.table().is_some();
        self.consider(node.span(), is_table, path);
        if is_table {
            self.table(node, path);
        } else {
            for (i, item) in node.items().into_iter().enumerate() {
                path.push(Seg::Idx(i));
                self.node(item, path);
                path.pop();
            }
        }
    }
}
