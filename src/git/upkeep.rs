//! Repository upkeep: flocks' job, off the agents' path. Agents run with
//! `gc.auto=0` (`agent::spec::AGENT_GIT_CONFIG`), so that their `git commit`
//! never stops to gc nor waits on `packed-refs.lock`; the run calls
//! [`run`] in the background between waves instead. It packs the loose
//! refs when there are many (every task's branch starts as one), and runs
//! `git gc --auto` when git's own rule says it is due: more loose objects
//! than `gc.auto` or more packs than `gc.autoPackLimit`, both read from the
//! repository's config (the user's thresholds; `gc.auto = 0` turns it off).
//! Pools whose agents work on other machines pack what they keep there the
//! same way, at the same time ([`Remote`]: `Backend::upkeep`, the helper's
//! `pack` op on a host's `mirror.git`, or on a Slurm pool's in a step of
//! one of its jobs).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Loose refs from which `git pack-refs --all` runs.
pub(crate) const PACK_REFS_FROM: usize = 64;

/// git's defaults of `gc.auto` and `gc.autoPackLimit`.
const GC_AUTO_DEFAULT: i64 = 6700;
const PACK_LIMIT_DEFAULT: i64 = 50;

/// What one upkeep did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Done {
    /// Loose refs packed (0: `pack-refs` did not run).
    pub packed_refs: usize,
    /// `git gc --auto` ran.
    pub gc: bool,
    /// Loose objects before, as git estimates them (`objects/17` × 256).
    pub loose_objects: usize,
    /// Packs before.
    pub packs: usize,
    pub secs: f64,
}

/// The upkeep of a repository the pool's agents borrow objects from on
/// another machine (a remote host's `mirror.git`, packed by the helper's
/// `pack` op): where, and what it did (`Ok(None)`: nothing was due) or why
/// it failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Remote {
    pub pool: String,
    pub host: String,
    pub done: Result<Option<Done>, String>,
}

/// What the repository holds that upkeep looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Look {
    loose_refs: usize,
    loose_objects: usize,
    /// Files in `objects/17` (what git's own estimate reads).
    in_17: usize,
    packs: usize,
}

/// Look at the repository of `repo` (its common git dir) and pack what is
/// due. `Ok(None)`: nothing was.
pub(crate) fn run(repo: &Path) -> Result<Option<Done>, String> {
    let started = Instant::now();
    let r = git2::Repository::open(repo).map_err(|e| format!("{}: {e}", repo.display()))?;
    let git_dir = r.commondir().to_path_buf();
    let (gc_auto, pack_limit) = match r.config() {
        Ok(c) => (
            c.get_i64("gc.auto").unwrap_or(GC_AUTO_DEFAULT),
            c.get_i64("gc.autoPackLimit").unwrap_or(PACK_LIMIT_DEFAULT),
        ),
        Err(_) => (GC_AUTO_DEFAULT, PACK_LIMIT_DEFAULT),
    };
    drop(r);
    let look = look(&git_dir);
    let pack_refs = look.loose_refs >= PACK_REFS_FROM;
    let gc = gc_due(&look, gc_auto, pack_limit);
    if !pack_refs && !gc {
        return Ok(None);
    }
    if pack_refs {
        git(repo, &["pack-refs", "--all"])?;
    }
    if gc {
        // In the foreground: the event says how long it took, and the run
        // ends only after it (git detaches it by default).
        git(
            repo,
            &["-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
        )?;
    }
    Ok(Some(Done {
        packed_refs: if pack_refs { look.loose_refs } else { 0 },
        gc,
        loose_objects: look.loose_objects,
        packs: look.packs,
        secs: started.elapsed().as_secs_f64(),
    }))
}

/// git's own rule (`need_to_gc`): more than `gc.auto` loose objects,
/// estimated from `objects/17`, or more than `gc.autoPackLimit` packs.
/// `gc.auto` of 0 or less turns both off.
fn gc_due(look: &Look, gc_auto: i64, pack_limit: i64) -> bool {
    if gc_auto <= 0 {
        return false;
    }
    let threshold = (gc_auto as usize).div_ceil(256);
    look.in_17 > threshold || (pack_limit > 0 && look.packs > pack_limit as usize)
}

fn look(git_dir: &Path) -> Look {
    let in_17 = std::fs::read_dir(git_dir.join("objects/17"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.len() == 38 && n.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .count()
        })
        .unwrap_or(0);
    let packs = std::fs::read_dir(git_dir.join("objects/pack"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy().into_owned();
                    n.ends_with(".pack")
                        && !git_dir
                            .join("objects/pack")
                            .join(n.replace(".pack", ".keep"))
                            .exists()
                })
                .count()
        })
        .unwrap_or(0);
    Look {
        loose_refs: count_files(&git_dir.join("refs"), 0),
        loose_objects: in_17 * 256,
        in_17,
        packs,
    }
}

/// Regular files under `dir` (loose refs), without following links.
fn count_files(dir: &Path, depth: usize) -> usize {
    if depth > 32 {
        return 0;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += count_files(&e.path(), depth + 1),
            Ok(t) if t.is_file() => n += 1,
            _ => {}
        }
    }
    n
}

/// `git -C repo args...`, its output kept for the error.
fn git(repo: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test's own git, which never gcs (as an agent's).
    fn sh_git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "gc.auto")
            .env("GIT_CONFIG_VALUE_0", "0")
            .env("GIT_CONFIG_KEY_1", "maintenance.auto")
            .env("GIT_CONFIG_VALUE_1", "false")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }

    #[test]
    fn packs_many_loose_refs_and_gc_by_the_users_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sh_git(d, &["init", "-q"]);
        sh_git(d, &["commit", "-q", "--allow-empty", "-m", "a"]);
        // Few refs, default threshold: nothing to do.
        assert_eq!(run(d).unwrap(), None);
        for i in 0..PACK_REFS_FROM {
            sh_git(d, &["branch", &format!("flocks/t{i}")]);
        }
        let done = run(d).unwrap().expect("refs packed");
        assert!(done.packed_refs > PACK_REFS_FROM, "{done:?}");
        assert!(!done.gc);
        assert_eq!(count_files(&d.join(".git/refs"), 0), 0);
        assert_eq!(run(d).unwrap(), None);
        // The user's gc.auto is the threshold: 1 (one object in objects/17
        // is past it) makes gc run.
        sh_git(d, &["config", "gc.auto", "1"]);
        let mut n = 0;
        add_objects(d, &mut n);
        let done = run(d).unwrap().expect("gc ran");
        assert!(done.gc && done.loose_objects >= 512, "{done:?}");
        assert_eq!(count_in_17(d), 0);
        // gc.auto = 0: never.
        sh_git(d, &["config", "gc.auto", "0"]);
        add_objects(d, &mut n);
        assert_eq!(run(d).unwrap(), None);
    }

    /// Commit files until `objects/17` holds two loose objects.
    fn add_objects(d: &Path, n: &mut usize) {
        while count_in_17(d) < 2 {
            for _ in 0..200 {
                std::fs::write(d.join(format!("f{n}")), format!("{n}")).unwrap();
                *n += 1;
            }
            sh_git(d, &["add", "."]);
            sh_git(d, &["commit", "-q", "-m", "more"]);
        }
    }

    fn count_in_17(d: &Path) -> usize {
        look(&d.join(".git")).in_17
    }
}
