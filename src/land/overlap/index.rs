//! Paths to tasks, with their directories: which tasks touch a path, a
//! directory above it or a path below it.

use std::collections::HashMap;

/// Paths to tasks, with their directories.
#[derive(Default)]
pub(super) struct PathIndex {
    files: HashMap<String, Vec<String>>,
    dirs: HashMap<String, Vec<String>>,
}

impl PathIndex {
    pub(super) fn add(&mut self, id: &str, paths: impl IntoIterator<Item = impl AsRef<str>>) {
        for p in paths {
            let p = p.as_ref();
            self.files
                .entry(p.to_string())
                .or_default()
                .push(id.to_string());
            for d in ancestors(p) {
                self.dirs
                    .entry(d.to_string())
                    .or_default()
                    .push(id.to_string());
            }
        }
    }

    pub(super) fn remove(&mut self, id: &str, paths: impl IntoIterator<Item = impl AsRef<str>>) {
        let drop = |m: &mut HashMap<String, Vec<String>>, k: &str| {
            if let Some(v) = m.get_mut(k) {
                if let Some(i) = v.iter().position(|x| x == id) {
                    v.swap_remove(i);
                }
                if v.is_empty() {
                    m.remove(k);
                }
            }
        };
        for p in paths {
            let p = p.as_ref();
            drop(&mut self.files, p);
            for d in ancestors(p) {
                drop(&mut self.dirs, d);
            }
        }
    }

    /// Tasks at `p` exactly.
    pub(super) fn at(&self, p: &str) -> &[String] {
        self.files.get(p).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Tasks with a path below the directory `d`.
    pub(super) fn below(&self, d: &str) -> &[String] {
        self.dirs.get(d).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Tasks at `p`, at a directory above it (as a file) or below it.
    pub(super) fn related<'a>(&'a self, p: &str, out: &mut Vec<&'a str>) {
        out.extend(self.at(p).iter().map(String::as_str));
        self.prefix_related(p, out);
    }

    /// Tasks with a file at a directory above `p`, or with files below `p`.
    pub(super) fn prefix_related<'a>(&'a self, p: &str, out: &mut Vec<&'a str>) {
        for d in ancestors(p) {
            out.extend(self.at(d).iter().map(String::as_str));
        }
        out.extend(self.below(p).iter().map(String::as_str));
    }
}

/// The directories above a path: "a/b/c" gives "a/b", "a".
pub(super) fn ancestors(p: &str) -> impl Iterator<Item = &str> {
    let mut rest = p;
    std::iter::from_fn(move || {
        let i = rest.rfind('/')?;
        rest = &rest[..i];
        Some(rest)
    })
}

/// Is one of `a` and `b` a path below the other?
pub(super) fn is_prefix_related(a: &str, b: &str) -> bool {
    let under =
        |x: &str, d: &str| x.len() > d.len() && x.starts_with(d) && x.as_bytes()[d.len()] == b'/';
    under(a, b) || under(b, a)
}
