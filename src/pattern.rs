//! Compiling the profile's path patterns: one gitignore-like pattern into a glob, and a
//! `[[visibility.dir]]` path into its normal form. A leaf module shared by [`crate::profile`]
//! (which compiles every pattern while loading, to report errors with file:line) and
//! [`crate::policy`] (which matches with them); the language itself is documented in
//! [`crate::policy`].

use std::path::{Component, Path};

use globset::GlobBuilder;

/// One compiled gitignore-like pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    /// As written in the profile (reported in `Hidden::Denied`).
    pub(crate) text: String,
    pub(crate) negated: bool,
    pub(crate) dir_only: bool,
    pub(crate) glob: globset::Glob,
}

/// Compile one pattern; the error message is for the profile loader to locate.
pub(crate) fn compile_pattern(text: &str) -> Result<Pattern, String> {
    let mut s = text;
    if s.is_empty() {
        return Err("empty pattern".into());
    }
    let negated = s.starts_with('!');
    if negated {
        s = &s[1..];
    }
    let dir_only = s.ends_with('/') && !s.ends_with("\\/");
    if dir_only {
        s = s.trim_end_matches('/');
    }
    let leading = s.starts_with('/');
    if leading {
        s = s.trim_start_matches('/');
    }
    if s.is_empty() {
        return Err("pattern matches nothing (only `!` or `/`)".into());
    }
    let anchored = leading || s.contains('/');
    let glob_text = if anchored {
        s.to_string()
    } else {
        format!("**/{s}")
    };
    let glob = GlobBuilder::new(&glob_text)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(true)
        .build()
        .map_err(|e| e.kind().to_string())?;
    Ok(Pattern {
        text: text.to_string(),
        negated,
        dir_only,
        glob,
    })
}

/// Normalise a `[[visibility.dir]]` path: relative to the scope root, `/`-separated, no `.`/`..`,
/// no leading or trailing `/`; `""` is the root.
pub(crate) fn normalize_dir(p: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => return Err("`..` is not allowed".into()),
            Component::Prefix(_) => return Err("not a relative path".into()),
        }
    }
    Ok(parts.join("/"))
}
