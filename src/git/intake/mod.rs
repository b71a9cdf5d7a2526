//! The intake: an agent's work comes back to the host as git objects (a
//! bundle over the helper protocol), and is checked in quarantine before
//! flocks moves the task's branch itself. Used by every backend whose agent
//! has a repository of its own (docker clone mode, ssh, exe.dev, and the
//! sandboxed and Slurm pools that build on it).
//!
//! ```text
//!  helper stdout: "head <sha>", "bundle <n>", n bytes
//!     │  n <= max_fetch_mb (transfer), else refused before a byte is read
//!     ▼
//!  <common git dir>/flocks-intake/q-XXXXXX/      a bare repo of flocks' own
//!     in.bundle                                  (its config is ours; its
//!     objects/info/alternates -> host objects     objects see the host's)
//!     │  header: v2/v3 sha1 bundle, exactly one ref: refs/heads/<branch>;
//!     │          every prerequisite a commit the host has
//!     │  pack scan: each object's inflated size from its header, summed
//!     │          against max_fetch_mb before it is inflated
//!     │  git index-pack --strict (fsck: dotgit, dotdot, bad names... as errors)
//!     │  the tip is a commit; the task's origin is an ancestor of it
//!     ▼
//!  packs renamed into the host's objects/pack; refs/heads/<branch> moved
//!  from the value flocks expects (compare and swap), with a reflog message
//! ```
//!
//! Nothing here runs git in, or reads the config of, a repository the agent
//! can write: the system git runs with the quarantine as its repository,
//! without system or global config, and only reads the host's objects
//! through the alternates.
//!
//! Here the checks in order (`receive`, `take`); `quarantine.rs` the
//! temporary repository, `bundle.rs` bundle headers and writing,
//! `pack.rs` the pack scan.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::Stdio;

use git2::{Oid, Repository};

mod bundle;
mod pack;
mod quarantine;
#[cfg(test)]
mod tests;

use bundle::read_header;
pub(crate) use bundle::write_bundle;
pub(crate) use pack::{ScanError, scan_pack};
use quarantine::Quarantine;

/// `max_fetch_mb`'s default.
pub(crate) const DEFAULT_MAX_FETCH_MB: u64 = 500;

/// Git's fsck messages that are warnings (or less) by default, made errors:
/// names that git refuses to check out or that reach outside the worktree.
/// (Every id here is known to git 2.25 and later.)
const FSCK_AS_ERRORS: &[&str] = &[
    "hasDot",
    "hasDotdot",
    "hasDotgit",
    "emptyName",
    "fullPathname",
    "nullSha1",
    "zeroPaddedFilemode",
    "badFilemode",
    "nulInCommit",
    "badTagName",
    "missingTaggerEntry",
    "gitmodulesParse",
];

/// Longest bundle header line, and the whole header, flocks reads.
const MAX_HEADER_LINE: usize = 4096;
const MAX_HEADER: usize = 1 << 20;

/// Which check refused the work (said in every refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The bundle's bytes against `max_fetch_mb`.
    Transfer,
    /// The new objects' inflated size against `max_fetch_mb`.
    Inflated,
    /// The bundle's form (header, pack structure).
    Form,
    /// Only `refs/heads/<branch>` may come back.
    Refs,
    /// git's fsck, strict.
    Fsck,
    /// The range: the tip is a commit that descends from the task's origin.
    Range,
    /// The branch is where flocks left it.
    Branch,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::Transfer => "size cap (transfer)",
            Check::Inflated => "size cap (objects)",
            Check::Form => "bundle form",
            Check::Refs => "refs",
            Check::Fsck => "fsck",
            Check::Range => "range",
            Check::Branch => "branch",
        })
    }
}

/// Why an agent's work was not taken. Every message names the task and the
/// check; the host repository is unchanged by a refusal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IntakeError {
    /// Bigger than `max_fetch_mb`: the transfer, or the objects inflated.
    #[error(
        "task {task}: refused its branch ({check}): {what}: {:.1} MB, over max_fetch_mb = {max_mb}; \
         raise max_fetch_mb in the pool's [[containers]] table if the work is meant to be that big",
        *.bytes as f64 / (1u64 << 20) as f64
    )]
    TooLarge {
        task: String,
        check: Check,
        what: &'static str,
        bytes: u64,
        max_mb: u64,
    },
    /// Refused by a check: what was found, and what to do.
    #[error("task {task}: refused its branch ({check}): {why}")]
    Refused {
        task: String,
        check: Check,
        why: String,
    },
    /// flocks could not do its part (a file, git itself): nothing was taken.
    #[error("task {task}: cannot take its branch back: {why}")]
    Failed { task: String, why: String },
}

impl IntakeError {
    /// The check that refused the work (None: flocks failed, not the work).
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "for callers that act per check; tests say which check refused"
        )
    )]
    pub(crate) fn check(&self) -> Option<Check> {
        match self {
            IntakeError::TooLarge { check, .. } | IntakeError::Refused { check, .. } => {
                Some(*check)
            }
            IntakeError::Failed { .. } => None,
        }
    }
}

/// What flocks expects back from one task.
#[derive(Debug, Clone)]
pub(crate) struct Want {
    /// The host repository (any directory git2 opens it from).
    pub repo_dir: PathBuf,
    pub task: String,
    pub branch: String,
    /// The task's origin: the tip must descend from it (or be it).
    pub origin: Oid,
    /// `max_fetch_mb`, in bytes.
    pub max_bytes: u64,
    /// The reflog message of the branch move.
    pub reflog: String,
    /// The task's worktree on this machine, if one has the branch checked
    /// out (from a mount-mode or local attempt): detached before the move,
    /// so that it does not look changed.
    pub host_worktree: Option<PathBuf>,
}

impl Want {
    fn refused(&self, check: Check, why: impl Into<String>) -> IntakeError {
        IntakeError::Refused {
            task: self.task.clone(),
            check,
            why: why.into(),
        }
    }

    fn failed(&self, why: impl std::fmt::Display) -> IntakeError {
        IntakeError::Failed {
            task: self.task.clone(),
            why: why.to_string(),
        }
    }

    fn too_large(&self, check: Check, what: &'static str, bytes: u64) -> IntakeError {
        IntakeError::TooLarge {
            task: self.task.clone(),
            check,
            what,
            bytes,
            max_mb: self.max_bytes >> 20,
        }
    }

    /// A bundle of `len` bytes is announced: refused at once when over the
    /// cap; else a quarantine and the file to write exactly `len` bytes to.
    pub(crate) fn admit(&self, len: u64) -> Result<Admitted, IntakeError> {
        if len > self.max_bytes {
            return Err(self.too_large(Check::Transfer, "the bundle", len));
        }
        let q = Quarantine::new(self)?;
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(q.bundle_path())
            .map_err(|e| self.failed(format!("{}: {e}", q.bundle_path().display())))?;
        Ok(Admitted { q, file, len })
    }
}

/// A bundle being received: write exactly `len` bytes into `file`, then
/// [`Admitted::spooled`].
pub(crate) struct Admitted {
    q: Quarantine,
    pub file: File,
    pub len: u64,
}

impl Admitted {
    /// All `len` bytes are in the file.
    pub(crate) fn spooled(self) -> Spooled {
        Spooled {
            q: self.q,
            len: self.len,
        }
    }
}

/// A received bundle, in its quarantine.
pub(crate) struct Spooled {
    q: Quarantine,
    len: u64,
}

/// What came back: the tip the helper names, and the objects (none when the
/// host has them all already).
pub(crate) struct Incoming {
    pub head: Option<Oid>,
    pub bundle: Option<Spooled>,
}

/// Work that passed the checks and is in the host repository.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub tip: Oid,
}

/// Check what came back and bring its objects into the host repository.
/// Nothing but objects changes there; see [`take`] for the branch.
pub(crate) fn receive(want: &Want, incoming: Incoming) -> Result<Received, IntakeError> {
    let Some(spooled) = incoming.bundle else {
        // No objects: the tip must be a commit the host has already.
        let tip = incoming
            .head
            .ok_or_else(|| want.refused(Check::Form, "the helper named no tip"))?;
        let repo = Repository::open(&want.repo_dir).map_err(|e| want.failed(e.message()))?;
        check_range(want, &repo, tip)?;
        return Ok(Received { tip });
    };
    let q = &spooled.q;
    let mut file = File::open(q.bundle_path())
        .map_err(|e| want.failed(format!("{}: {e}", q.bundle_path().display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size != spooled.len {
        return Err(want.refused(
            Check::Form,
            format!(
                "the bundle is {size} bytes, not the {} announced",
                spooled.len
            ),
        ));
    }
    let header = read_header(&mut file).map_err(|why| want.refused(Check::Form, why))?;
    let tip = match header.refs.as_slice() {
        [(oid, name)] if *name == format!("refs/heads/{}", want.branch) => *oid,
        refs => {
            let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
            return Err(want.refused(
                Check::Refs,
                format!(
                    "only refs/heads/{} may come back, and the bundle holds {}",
                    want.branch,
                    if names.is_empty() {
                        "no ref".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
    };
    if let Some(head) = incoming.head
        && head != tip
    {
        return Err(want.refused(
            Check::Refs,
            format!("the helper says the branch is at {head}, the bundle says {tip}"),
        ));
    }
    let host = Repository::open(&want.repo_dir).map_err(|e| want.failed(e.message()))?;
    for p in &header.prerequisites {
        if host.find_commit(*p).is_err() {
            return Err(want.refused(
                Check::Form,
                format!("the bundle builds on commit {p}, which this repository does not have"),
            ));
        }
    }
    // The pack: sizes first, from the object headers, before inflating.
    file.seek(SeekFrom::Start(header.pack_offset))
        .map_err(|e| want.failed(e))?;
    scan_pack(BufReader::new(&mut file), want.max_bytes).map_err(|e| match e {
        ScanError::TooLarge(bytes) => want.too_large(Check::Inflated, "the new objects", bytes),
        ScanError::Bad(why) => want.refused(Check::Form, format!("malformed pack: {why}")),
        ScanError::Io(e) => want.failed(e),
    })?;
    // Then git's own checks, strict, into the quarantine.
    file.seek(SeekFrom::Start(header.pack_offset))
        .map_err(|e| want.failed(e))?;
    let strict: Vec<String> = FSCK_AS_ERRORS
        .iter()
        .map(|m| format!("{m}=error"))
        .collect();
    let out = q
        .git()
        .args([
            "index-pack",
            "--stdin",
            "--fix-thin",
            &format!("--strict={}", strict.join(",")),
            &format!("--max-input-size={}", want.max_bytes),
        ])
        .stdin(Stdio::from(file))
        .output()
        .map_err(|e| want.failed(format!("cannot run git index-pack: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(want.refused(Check::Fsck, format!("git index-pack --strict: {why}")));
    }
    let qrepo = Repository::open_bare(&q.dir).map_err(|e| want.failed(e.message()))?;
    check_range(want, &qrepo, tip)?;
    drop(qrepo);
    store(want, q)?;
    Ok(Received { tip })
}

/// [`receive`], then move `refs/heads/<branch>` to the tip, from `old`
/// (where flocks left it; None: the branch must not exist).
pub(crate) fn take(
    want: &Want,
    incoming: Incoming,
    old: Option<Oid>,
) -> Result<Received, IntakeError> {
    let received = receive(want, incoming)?;
    move_branch(want, received.tip, old)?;
    Ok(received)
}

/// Point `refs/heads/<branch>` at `tip`, if it is still at `old`.
pub(crate) fn move_branch(want: &Want, tip: Oid, old: Option<Oid>) -> Result<(), IntakeError> {
    let repo = Repository::open(&want.repo_dir).map_err(|e| want.failed(e.message()))?;
    let name = format!("refs/heads/{}", want.branch);
    let now = repo.find_reference(&name).ok().and_then(|r| r.target());
    if now != old {
        let show = |o: Option<Oid>| o.map_or_else(|| "nowhere".to_string(), |o| o.to_string());
        return Err(want.refused(
            Check::Branch,
            format!(
                "{name} is at {}, not at {} where flocks left it: something else moved it \
                 while the attempt ran; nothing was changed (look at `git reflog {name}`)",
                show(now),
                show(old)
            ),
        ));
    }
    if now == Some(tip) {
        return Ok(());
    }
    if let Some(wt) = &want.host_worktree
        && wt.exists()
        && let Ok(w) = Repository::open(wt)
        && let Ok(head) = w.head()
        && head.name().ok() == Some(name.as_str())
        && let Some(oid) = head.target()
    {
        let _ = w.set_head_detached(oid);
    }
    let r = match old {
        Some(o) => repo.reference_matching(&name, tip, true, o, &want.reflog),
        None => repo.reference(&name, tip, false, &want.reflog),
    };
    r.map(|_| ()).map_err(|e| {
        want.refused(
            Check::Branch,
            format!("{name} could not be moved: {}", e.message()),
        )
    })
}

/// The tip is a commit and descends from the task's origin (or is it).
fn check_range(want: &Want, repo: &Repository, tip: Oid) -> Result<(), IntakeError> {
    let is_commit = repo
        .find_object(tip, None)
        .is_ok_and(|o| o.kind() == Some(git2::ObjectType::Commit));
    if !is_commit {
        return Err(want.refused(
            Check::Range,
            format!("the branch's tip {tip} is not a commit this repository has or received"),
        ));
    }
    if tip != want.origin && !repo.graph_descendant_of(tip, want.origin).unwrap_or(false) {
        return Err(want.refused(
            Check::Range,
            format!(
                "the branch's tip {tip} does not descend from the task's origin {}: \
                 history below the origin was rewritten; `flocks retry --fresh {}` starts the task over",
                want.origin, want.task
            ),
        ));
    }
    Ok(())
}

/// Move the quarantine's packs into the host's objects: each pack's data and
/// reverse index first, its index (what makes git see it) last.
fn store(want: &Want, q: &Quarantine) -> Result<(), IntakeError> {
    let src = q.dir.join("objects/pack");
    let dst = q.host_objects.join("pack");
    std::fs::create_dir_all(&dst).map_err(|e| want.failed(format!("{}: {e}", dst.display())))?;
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .map_err(|e| want.failed(format!("{}: {e}", src.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pack-"))
        .collect();
    // .idx after .pack and .rev.
    names.sort_by_key(|n| (n.ends_with(".idx"), n.clone()));
    for n in names {
        let to = dst.join(&n);
        if to.exists() {
            // The same pack is there already (same name, same content).
            continue;
        }
        std::fs::rename(src.join(&n), &to)
            .map_err(|e| want.failed(format!("move {n} into {}: {e}", dst.display())))?;
    }
    Ok(())
}
