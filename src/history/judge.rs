//! The redaction engine over every object of an object file: the verdict that gates a pack or
//! loose object, and the report of `veilfs scan` (which commit and path holds which secret).
//!
//! Every object is judged, reachable or not, with every rule (an object has no one path: the
//! same blob can be in many trees, and unreachable ones in none), the way file contents are:
//! blobs, commit and tag messages as they are, trees by their entry names (their binary ids
//! would only look like noise). A blob the engine cannot scan (compressed or encrypted bytes)
//! makes the file unscannable, except media whose magic number says what they are (the
//! pictures, fonts and sounds the shipped profiles call opaque), as in the working tree.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::objects::{self, Format, Kind, Object, ObjectId};
use crate::redact::{Engine, RuleSelection, ScanOutcome};

/// What an object file may do for the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Verdict {
    /// No rule matches any object in it: served as it is.
    Clean,
    /// An object holds a secret; the reason names the rule and the object, never the secret.
    Secret(String),
    /// It cannot be read whole (corrupt, a delta base elsewhere, too large, unscannable blob).
    Unscannable(String),
}

impl Verdict {
    /// The reason a refused object file is refused, as the agent and the audit read it.
    pub(crate) fn reason(&self) -> Option<String> {
        match self {
            Verdict::Clean => None,
            Verdict::Secret(why) => Some(format!(
                "git history holds a secret ({why}); history = \"allow-if-clean\" serves only clean object files (`veilfs scan` names the commits and paths)"
            )),
            Verdict::Unscannable(why) => Some(format!(
                "git object file cannot be scanned ({why}); history = \"allow-if-clean\" serves only object files found clean"
            )),
        }
    }
}

/// One object with a secret: the rules that match in it.
struct Hit {
    rules: Vec<String>,
}

/// The rules matching in one object (`Ok(None)`: clean), or why it cannot be scanned.
fn object_hit(engine: &Engine, sel: &RuleSelection, o: &Object<'_>) -> Result<Option<Hit>, String> {
    let names;
    let data = match o.kind {
        Some(Kind::Tree) => {
            let entries = objects::tree_entries(o.data).ok_or("a tree that does not parse")?;
            names = entries
                .into_iter()
                .flat_map(|(n, _, _)| n.into_iter().chain([b'\n']))
                .collect::<Vec<u8>>();
            &names[..]
        }
        _ => o.data,
    };
    Ok(match engine.scan_with(sel, data) {
        ScanOutcome::Clean => None,
        ScanOutcome::Redact(r) => Some(Hit {
            rules: crate::audit::rules_fired(&r).0,
        }),
        ScanOutcome::Refused(why) => Some(Hit {
            rules: vec![why.to_string()],
        }),
        ScanOutcome::Unscannable(_) if is_media(data) => None,
        ScanOutcome::Unscannable(why) => return Err(why.to_string()),
    })
}

/// Pictures, fonts and sounds by magic number: compressed samples, never text.
fn is_media(d: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF87a",
        b"GIF89a",
        b"wOFF",
        b"wOF2",
        b"OggS",
        b"fLaC",
        b"ID3",
    ];
    MAGICS.iter().any(|m| d.starts_with(m))
        || (d.len() >= 12 && &d[..4] == b"RIFF" && matches!(&d[8..12], b"WEBP" | b"WAVE"))
        || (d.len() >= 12 && &d[4..8] == b"ftyp")
}

fn kind_name(k: Option<Kind>) -> &'static str {
    match k {
        Some(Kind::Blob) => "blob",
        Some(Kind::Tree) => "tree",
        Some(Kind::Commit) => "commit",
        Some(Kind::Tag) => "tag",
        None => "zlib data",
    }
}

/// The verdict on the object file `data` of format `fmt`: the first secret ends the scan.
pub(crate) fn verdict(engine: &Engine, fmt: Format, data: &[u8], limit: u64) -> Verdict {
    let sel = engine.all_rules();
    let mut found: Option<Result<String, String>> = None;
    let walked = objects::each(fmt, data, limit, &mut |o| {
        match object_hit(engine, &sel, &o) {
            Ok(None) => return false,
            Ok(Some(h)) => {
                found = Some(Ok(format!(
                    "rule `{}` matches in {} {}",
                    h.rules.join("`, `"),
                    kind_name(o.kind),
                    o.id
                )))
            }
            Err(why) => found = Some(Err(format!("{} {}: {why}", kind_name(o.kind), o.id))),
        }
        true
    });
    match (walked, found) {
        (_, Some(Ok(why))) => Verdict::Secret(why),
        (_, Some(Err(why))) | (Err(why), None) => Verdict::Unscannable(why),
        (Ok(_), None) => Verdict::Clean,
    }
}

/// One line of `veilfs scan`'s history report.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Finding {
    pub rule: String,
    /// The commit whose tree holds the object (`None`: no commit reaches it).
    pub commit: Option<ObjectId>,
    /// The path in that commit's tree, `<commit message>`/`<tag message>`, or the object's id.
    pub path: String,
}

/// Everything `report` gathers from one object database.
#[derive(Default)]
pub(crate) struct Database {
    hits: HashMap<ObjectId, (Option<Kind>, Vec<String>)>,
    /// Commit → (tree, parents).
    commits: HashMap<ObjectId, (ObjectId, Vec<ObjectId>)>,
    trees: HashMap<ObjectId, Vec<(Vec<u8>, ObjectId, bool)>>,
    /// Files that could not be read whole, with why.
    pub unscannable: Vec<String>,
}

impl Database {
    /// Adds the objects of one object file (`name` is for messages).
    pub(crate) fn add(
        &mut self,
        engine: &Engine,
        name: &str,
        fmt: Format,
        data: &[u8],
        limit: u64,
    ) {
        let sel = engine.all_rules();
        let mut bad = None;
        let r = objects::each(fmt, data, limit, &mut |o| {
            match o.kind {
                Some(Kind::Commit) => {
                    if let Some(t) = objects::commit_tree(o.data) {
                        self.commits.insert(o.id, t);
                    }
                }
                Some(Kind::Tree) => {
                    if let Some(e) = objects::tree_entries(o.data) {
                        self.trees.insert(o.id, e);
                    }
                }
                _ => {}
            }
            match object_hit(engine, &sel, &o) {
                Ok(None) => {}
                Ok(Some(h)) => {
                    self.hits.insert(o.id, (o.kind, h.rules));
                }
                Err(why) => bad = Some(format!("{} {}: {why}", kind_name(o.kind), o.id)),
            }
            false
        });
        if let Some(why) = r.err().or(bad) {
            self.unscannable.push(format!("{name}: {why}"));
        }
    }

    /// Every (rule, commit, path) where a commit brings a secret in (the object at that path
    /// differs from every parent's), sorted; objects no commit reaches are named by id. A
    /// secret that stays for many commits is told once, at the commit that added it.
    pub(crate) fn findings(&self) -> Vec<Finding> {
        let mut memo: HashMap<ObjectId, Rc<Vec<(String, ObjectId)>>> = HashMap::new();
        let mut out = Vec::new();
        let mut reached: HashSet<ObjectId> = HashSet::new();
        for (commit, (tree, parents)) in &self.commits {
            if let Some((_, rules)) = self.hits.get(commit) {
                reached.insert(*commit);
                for r in rules {
                    out.push(Finding {
                        rule: r.clone(),
                        commit: Some(*commit),
                        path: "<commit message>".into(),
                    });
                }
            }
            let in_parents: Vec<_> = parents
                .iter()
                .filter_map(|p| self.commits.get(p))
                .map(|(t, _)| self.flagged_under(*t, &mut memo, 0))
                .collect();
            for (path, id) in self.flagged_under(*tree, &mut memo, 0).iter() {
                reached.insert(*id);
                if in_parents
                    .iter()
                    .any(|p| p.iter().any(|(pp, pid)| pp == path && pid == id))
                {
                    continue;
                }
                for r in &self.hits[id].1 {
                    out.push(Finding {
                        rule: r.clone(),
                        commit: Some(*commit),
                        path: path.clone(),
                    });
                }
            }
        }
        for (id, (kind, rules)) in &self.hits {
            if !reached.contains(id) {
                for r in rules {
                    out.push(Finding {
                        rule: r.clone(),
                        commit: None,
                        path: format!("{} {id}", kind_name(*kind)),
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The flagged objects under tree `id` as (path, object), memoised per tree: a history of
    /// thousands of commits shares almost all of its subtrees.
    fn flagged_under(
        &self,
        id: ObjectId,
        memo: &mut HashMap<ObjectId, Rc<Vec<(String, ObjectId)>>>,
        depth: u32,
    ) -> Rc<Vec<(String, ObjectId)>> {
        if let Some(v) = memo.get(&id) {
            return v.clone();
        }
        let mut v = Vec::new();
        if let Some(entries) = self.trees.get(&id).filter(|_| depth < 256) {
            for (name, child, is_tree) in entries {
                let name = String::from_utf8_lossy(name);
                if self.hits.contains_key(child) {
                    v.push((name.to_string(), *child));
                }
                if *is_tree {
                    for (p, o) in self.flagged_under(*child, memo, depth + 1).iter() {
                        v.push((format!("{name}/{p}"), *o));
                    }
                }
            }
        }
        let v = Rc::new(v);
        memo.insert(id, v.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::objects::tests::{loose_blob, pack_of, zlib};
    use super::*;

    const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";

    fn engine() -> Engine {
        Engine::load(&["secrets".into()], &[]).unwrap()
    }

    #[test]
    fn a_secret_in_any_object_refuses_the_file() {
        let e = engine();
        let clean = loose_blob(b"fn main() {}\n");
        assert_eq!(verdict(&e, Format::Loose, &clean, 1 << 20), Verdict::Clean);
        let dirty = loose_blob(format!("export GH={TOKEN}\n").as_bytes());
        let Verdict::Secret(why) = verdict(&e, Format::Loose, &dirty, 1 << 20) else {
            panic!("not refused")
        };
        assert!(
            why.contains("`github-pat`") && why.contains("blob "),
            "{why}"
        );
        assert!(!why.contains(TOKEN));
        // In a pack, behind a clean object, and in a commit message.
        let msg = format!(
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nrotate {TOKEN}\n"
        );
        let p = pack_of(&[(Kind::Blob, b"ok\n"), (Kind::Commit, msg.as_bytes())]);
        let v = verdict(&e, Format::Pack, &p, 1 << 20);
        assert!(
            matches!(&v, Verdict::Secret(w) if w.contains("commit ")),
            "{v:?}"
        );
        // A compressed blob that is not media cannot be vouched for; a PNG can.
        let gz = loose_blob(&zlib(&[7u8; 4000]));
        assert!(matches!(
            verdict(&e, Format::Loose, &gz, 1 << 20),
            Verdict::Unscannable(_) | Verdict::Clean
        ));
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        assert_eq!(
            verdict(&e, Format::Loose, &loose_blob(&png), 1 << 20),
            Verdict::Clean
        );
        let mut enc = b"Salted__".to_vec();
        enc.extend_from_slice(&png[8..]);
        assert!(matches!(
            verdict(&e, Format::Loose, &loose_blob(&enc), 1 << 20),
            Verdict::Unscannable(_)
        ));
        assert!(
            Verdict::Secret("x".into())
                .reason()
                .unwrap()
                .contains("veilfs scan")
        );
    }

    fn tree(entries: &[(&str, &str, ObjectId)]) -> Vec<u8> {
        let mut t = Vec::new();
        for (mode, name, id) in entries {
            t.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            t.extend_from_slice(id.as_bytes());
        }
        t
    }

    #[test]
    fn the_report_names_commit_and_path() {
        let e = engine();
        let hash = |k, d: &[u8]| gix_object::compute_hash(gix_hash::Kind::Sha1, k, d).unwrap();
        let secret = format!("GH={TOKEN}\n");
        let blob = hash(Kind::Blob, secret.as_bytes());
        let sub = tree(&[("100644", "cfg.sh", blob)]);
        let sub_id = hash(Kind::Tree, &sub);
        let root = tree(&[("40000", "conf", sub_id)]);
        let root_id = hash(Kind::Tree, &root);
        let commit =
            format!("tree {root_id}\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nadd\n");
        let commit_id = hash(Kind::Commit, commit.as_bytes());
        // A later commit that keeps the file: the secret is told once, where it came in.
        let later = format!(
            "tree {root_id}\nparent {commit_id}\nauthor a <a@b> 2 +0000\ncommitter a <a@b> 2 +0000\n\nkeep\n"
        );
        let p = pack_of(&[
            (Kind::Commit, later.as_bytes()),
            (Kind::Commit, commit.as_bytes()),
            (Kind::Tree, &root),
            (Kind::Tree, &sub),
            (Kind::Blob, secret.as_bytes()),
        ]);
        let mut db = Database::default();
        db.add(&e, "p.pack", Format::Pack, &p, 1 << 20);
        // An unreachable secret, loose.
        let lone = loose_blob(b"export GH2=ghp_Q8vT2mLx9RwK4zN7pB3cY6hJ1sD5fG0aE2uW\n");
        db.add(&e, "ab/cd", Format::Loose, &lone, 1 << 20);
        let f = db.findings();
        assert!(db.unscannable.is_empty(), "{:?}", db.unscannable);
        assert_eq!(f.len(), 2, "{f:?}");
        let reached = f.iter().find(|f| f.commit.is_some()).unwrap();
        assert_eq!(
            (reached.rule.as_str(), reached.commit, reached.path.as_str()),
            ("github-pat", Some(commit_id), "conf/cfg.sh")
        );
        let lone = f.iter().find(|f| f.commit.is_none()).unwrap();
        assert!(lone.path.starts_with("blob "), "{lone:?}");
    }
}
