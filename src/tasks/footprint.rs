//! A task's declared footprint (`"touches": ["src/auth/**", "docs/auth.md"]`):
//! gitignore-style globs of the paths it expects to change. The scheduler
//! never runs two tasks whose footprints overlap at once; a task that changes
//! a path outside its own is flagged.
//!
//! Patterns, as in `.gitignore`: a pattern with a `/` at its start or in its
//! middle is anchored at the repository's top (`src/auth/**`, `/Cargo.toml`);
//! one without (`*.md`, `auth.rs`) matches at any depth; a trailing `/`
//! matches a directory; a pattern that names a directory also covers
//! everything under it. `*` and `?` never cross a `/`, `**` does. (Negations,
//! `!pat`, are refused: a footprint says what a task touches, not what it
//! does not.)
//!
//! Overlap, decided from the patterns alone and erring on the side of
//! "overlaps": two footprints overlap when a pattern of one and a pattern of
//! the other could match the same path. Every path a pattern matches starts
//! with its literal part (the text before its first `*`, `?`, `[` or `{`; an
//! unanchored pattern has none), so if a path matches both, one literal part
//! is a prefix of the other: that is the test. Two patterns without wildcards
//! are compared as paths (equal, or one a directory holding the other). It
//! never misses a real overlap, and may see one where none can happen
//! (`src/a*.rs` and `src/ab.txt`); an unanchored pattern overlaps everything.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::TaskSet;

/// A validated footprint.
#[derive(Debug, Clone)]
pub(crate) struct Footprint {
    /// The patterns as written on the task line.
    pub patterns: Vec<String>,
    /// Each pattern's literal leading part and whether it has wildcards.
    parts: Vec<Literal>,
    set: GlobSet,
}

#[derive(Debug, Clone)]
struct Literal {
    /// Anchored at the repository's top.
    anchored: bool,
    /// Up to the first wildcard (without a leading `/`).
    prefix: String,
    /// The whole pattern is literal (a path, maybe a directory).
    exact: bool,
}

const WILDCARDS: &[char] = &['*', '?', '[', '{'];

/// Why a footprint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FootprintError {
    #[error("holds an empty pattern")]
    Empty,
    #[error("`{pattern}` {why}")]
    Pattern { pattern: String, why: BadPattern },
    #[error("the patterns do not compile: {0}")]
    Compile(String),
}

/// What is wrong with one pattern (reads after the pattern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadPattern {
    #[error("is negated: negations are not supported (list what the task touches)")]
    Negated,
    #[error("uses `\\`: put `/` between path components")]
    Backslash,
    #[error("has `..`, which would leave the repository")]
    Parent,
    #[error("names the whole repository")]
    Everything,
    #[error("is not a valid glob: {0}")]
    Glob(String),
}

impl Footprint {
    /// Parse `patterns`; the error says which pattern is wrong and why.
    pub(crate) fn new(patterns: &[String]) -> Result<Footprint, FootprintError> {
        let mut set = GlobSetBuilder::new();
        let mut parts = Vec::with_capacity(patterns.len());
        for raw in patterns {
            let p = raw.trim();
            let bad = |why: BadPattern| FootprintError::Pattern {
                pattern: raw.clone(),
                why,
            };
            if p.is_empty() {
                return Err(FootprintError::Empty);
            }
            if p.starts_with('!') {
                return Err(bad(BadPattern::Negated));
            }
            if p.contains('\\') {
                return Err(bad(BadPattern::Backslash));
            }
            if p.split('/').any(|c| c == "..") {
                return Err(bad(BadPattern::Parent));
            }
            let dir = p.ends_with('/');
            let body = p.trim_end_matches('/');
            let anchored = body.starts_with('/') || body.trim_start_matches('/').contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(bad(BadPattern::Everything));
            }
            let glob = if anchored {
                body.to_string()
            } else {
                format!("**/{body}")
            };
            // The path itself (unless only a directory is meant) and
            // everything under it, as .gitignore does.
            let mut globs = vec![format!("{glob}/**")];
            if !dir {
                globs.push(glob.clone());
            }
            for g in globs {
                let compiled = GlobBuilder::new(&g)
                    .literal_separator(true)
                    .backslash_escape(false)
                    .build()
                    .map_err(|e| bad(BadPattern::Glob(e.kind().to_string())))?;
                set.add(compiled);
            }
            let cut = body.find(WILDCARDS).unwrap_or(body.len());
            parts.push(Literal {
                anchored,
                prefix: body[..cut].to_string(),
                exact: cut == body.len(),
            });
        }
        let set = set
            .build()
            .map_err(|e| FootprintError::Compile(e.to_string()))?;
        Ok(Footprint {
            patterns: patterns.to_vec(),
            parts,
            set,
        })
    }

    /// Does the footprint cover `path` (relative to the repository's top,
    /// `/`-separated)?
    pub(crate) fn covers(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// The paths of `paths` it does not cover.
    pub(crate) fn outside<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        paths
            .into_iter()
            .filter(|p| !self.covers(p))
            .map(str::to_string)
            .collect()
    }

    /// Could a path match both footprints (see the module note)?
    pub(crate) fn overlaps(&self, other: &Footprint) -> bool {
        self.parts
            .iter()
            .any(|a| other.parts.iter().any(|b| literal_overlap(a, b)))
    }
}

fn literal_overlap(a: &Literal, b: &Literal) -> bool {
    if !a.anchored || !b.anchored {
        return true;
    }
    let (pa, pb) = (a.prefix.as_str(), b.prefix.as_str());
    let under = |dir: &str, path: &str| {
        path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
    };
    match (a.exact, b.exact) {
        (true, true) => under(pa, pb) || under(pb, pa),
        // A literal path and a pattern: the pattern's matches start with its
        // prefix; the literal's are itself and what lies under it.
        (true, false) => pb.starts_with(pa) && under_or_sibling(pa, pb) || pa.starts_with(pb),
        (false, true) => pa.starts_with(pb) && under_or_sibling(pb, pa) || pb.starts_with(pa),
        (false, false) => pa.starts_with(pb) || pb.starts_with(pa),
    }
}

/// `prefix` (a pattern's literal part) extends the literal path `lit`: the
/// pattern can match `lit` itself or something under it only when `prefix`
/// is `lit`, or continues it with a `/`.
fn under_or_sibling(lit: &str, prefix: &str) -> bool {
    prefix.len() == lit.len() || prefix[lit.len()..].starts_with('/')
}

/// For each task with a footprint, the tasks before it in `order` (the
/// dependency order) whose footprints overlap its own: it never runs while
/// they do, and starts from their work.
pub(crate) fn footprint_before(tasks: &TaskSet, order: &[usize]) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    let with: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| tasks.tasks[i].touches.is_some())
        .collect();
    for (k, &i) in with.iter().enumerate() {
        let Some(mine) = &tasks.tasks[i].touches else {
            continue;
        };
        let before: Vec<String> = with[..k]
            .iter()
            .filter(|&&j| {
                tasks.tasks[j]
                    .touches
                    .as_ref()
                    .is_some_and(|theirs| theirs.overlaps(mine))
            })
            .map(|&j| tasks.tasks[j].id.clone())
            .collect();
        if !before.is_empty() {
            out.insert(tasks.tasks[i].id.clone(), before);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(p: &[&str]) -> Footprint {
        Footprint::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn matches_like_gitignore() {
        let f = fp(&["src/auth/**", "docs/auth.md", "*.lock", "build/"]);
        assert!(f.covers("src/auth/mod.rs"));
        assert!(f.covers("src/auth/deep/x.rs"));
        assert!(!f.covers("src/authz.rs"));
        assert!(f.covers("docs/auth.md"));
        assert!(!f.covers("other/docs/auth.md"));
        assert!(f.covers("Cargo.lock"));
        assert!(f.covers("sub/dir/yarn.lock"));
        assert!(f.covers("build/out.o"));
        let d = fp(&["src/auth"]);
        assert!(d.covers("src/auth"));
        assert!(d.covers("src/auth/mod.rs"));
        assert!(!d.covers("src/auth.rs"));
        let star = fp(&["src/*.rs"]);
        assert!(star.covers("src/lib.rs"));
        assert!(!star.covers("src/a/lib.rs"));
        assert_eq!(
            fp(&["src/**"]).outside(["src/a.rs", "README.md"]),
            vec!["README.md"]
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        let bad = |p: &str| Footprint::new(&[p.to_string()]).unwrap_err().to_string();
        assert!(bad("").contains("empty"));
        assert!(bad("!src/**").contains("negated"));
        assert!(
            bad("src/[a").contains("not a valid glob"),
            "{}",
            bad("src/[a")
        );
        assert!(bad("../x").contains(".."));
        assert!(bad("/").contains("whole repository"));
    }

    #[test]
    fn overlap_errs_on_the_side_of_overlapping() {
        let o = |a: &[&str], b: &[&str]| {
            let (a, b) = (fp(a), fp(b));
            assert_eq!(a.overlaps(&b), b.overlaps(&a), "symmetric");
            a.overlaps(&b)
        };
        assert!(o(&["src/auth/**"], &["src/auth/login.rs"]));
        assert!(o(&["src/**"], &["src/auth.rs"]));
        assert!(o(&["docs/auth.md"], &["docs/auth.md"]));
        assert!(o(&["src/auth"], &["src/auth/mod.rs"]));
        assert!(o(&["src/auth*"], &["src/authz.rs"]));
        assert!(o(&["src/auth/*.rs"], &["src/auth"]));
        assert!(o(&["*.md"], &["src/lib.rs"]), "unanchored overlaps all");
        // Errs: both prefixes agree, though the globs cannot both match.
        assert!(o(&["src/a*.rs"], &["src/ab.txt"]));

        assert!(!o(&["src/auth/**"], &["src/billing/**"]));
        assert!(!o(&["src/auth/**"], &["src/auth.rs"]));
        assert!(!o(&["src/a"], &["src/ab"]));
        assert!(!o(&["src/a"], &["src/ab*"]));
        assert!(!o(
            &["docs/auth.md", "src/auth/**"],
            &["docs/billing.md", "src/billing/**"]
        ));
    }
}
