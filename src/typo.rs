//! "Did you mean": the known name a small edit away from a name that was not
//! understood (task-line fields, flocks.toml keys, subcommands).

/// The known name nearest to `name`, if it is a small edit away: at most two
/// edits (an insertion, a deletion, a changed letter or two swapped ones),
/// and at most one per three letters of the known name, so that short names
/// are not matched by anything. Case, `-` and `_` count as one edit each.
pub(crate) fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        if k == name {
            continue;
        }
        let d = distance(name, k);
        let close = d <= 2 && d * 3 <= k.chars().count();
        if close && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

/// The optimal string alignment distance (Damerau-Levenshtein without
/// repeated edits of a substring), on characters.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    // Three rows: two back (for transpositions), one back, this one.
    let mut prev2 = vec![0usize; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur = vec![0usize; m + 1];
    for i in 1..=n {
        cur[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &[&str] = &[
        "id",
        "prompt",
        "branch",
        "title",
        "description",
        "depends_on",
        "start_from",
        "expect_commits",
        "max_cost_usd",
        "touches",
        "best_of",
    ];

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("promt", "prompt"), 1);
        assert_eq!(distance("expect_commit", "expect_commits"), 1);
        assert_eq!(distance("tiltle", "title"), 1);
        assert_eq!(distance("tilte", "title"), 1, "a swap is one edit");
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn near_names_are_suggested_far_ones_not() {
        let t = TASK.iter().copied();
        assert_eq!(nearest("expect_commit", t.clone()), Some("expect_commits"));
        assert_eq!(nearest("promt", t.clone()), Some("prompt"));
        assert_eq!(nearest("expect-commits", t.clone()), Some("expect_commits"));
        assert_eq!(nearest("dependson", t.clone()), Some("depends_on"));
        assert_eq!(nearest("bestof", t.clone()), Some("best_of"));
        assert_eq!(nearest("team", t.clone()), None);
        assert_eq!(nearest("ib", t.clone()), None, "two letters match nothing");
        assert_eq!(
            nearest("prompt", t.clone()),
            None,
            "a known name is no typo"
        );
        assert_eq!(
            nearest("max_agent", ["max_agents", "max_turns"]),
            Some("max_agents")
        );
        assert_eq!(nearest("lnad", ["land", "logs"]), Some("land"));
        assert_eq!(nearest("zzz", ["land"]), None);
    }
}
