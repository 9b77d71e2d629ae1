//! Conversion of Nosey Parker rule files (YAML) into veilfs rule sets. The format is the one
//! Kingfisher's grew from (`rules:` entries with `id`, `name`, `pattern`, `examples`,
//! `negative_examples`, `references`, `categories`), so the converter is
//! [`super::kingfisher`]'s, with Nosey Parker's field set; see there for the mapping and for
//! what is reported as not converted.
pub(crate) use super::gitleaks::Conversion;
use super::kingfisher::{Tool, convert_yaml};

/// Converts a Nosey Parker rules file. `name` becomes the rule set's name.
pub(crate) fn convert(src: &str, name: &str) -> Result<Conversion, String> {
    convert_yaml(src, name, Tool::NoseyParker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Engine, ScanOutcome};

    const FIXTURE: &str = r#"
rules:
- name: Frob Token
  id: np.frob.1
  pattern: '\b(frob_[A-Za-z0-9]{20})\b'
  references:
  - https://example.com/frob
  categories: [api]
  examples:
  - 'FROB=frob_Ab3dE5gH7jK9mN1pQ3sT'
  negative_examples:
  - 'frob_short'
- name: Backref
  id: np.backref.1
  pattern: '(["''])secret_([a-z]{8})\1'
- name: Plain
  id: np.plain.1
  pattern: 'plaintok-([0-9a-f]{12})'
  examples:
  - 'plaintok-9f3a0c7e1b5d'
"#;

    #[test]
    fn converts_fixture_and_output_loads() {
        let c = convert(FIXTURE, "np").unwrap();
        assert_eq!(c.converted, 2, "{:?}", c.not_converted);
        assert_eq!(c.not_converted.len(), 1);
        assert_eq!(c.not_converted[0].0, "np.backref.1");
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let e = Engine::from_sources(&[("np.toml".into(), c.toml.clone())])
            .unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(e.rule_ids(), ["np.frob.1", "np.plain.1"]);
        for ex in ["FROB=frob_Ab3dE5gH7jK9mN1pQ3sT", "x plaintok-9f3a0c7e1b5d"] {
            assert!(
                matches!(
                    e.scan("a.txt".as_ref(), ex.as_bytes()),
                    ScanOutcome::Redact(_)
                ),
                "{ex}\n{}",
                c.toml
            );
        }
        assert!(matches!(
            e.scan("a.txt".as_ref(), b"frob_short"),
            ScanOutcome::Clean
        ));
    }
}
