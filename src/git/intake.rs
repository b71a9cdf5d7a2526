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

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::{Oid, Repository};

/// `max_fetch_mb`'s default.
pub const DEFAULT_MAX_FETCH_MB: u64 = 500;

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
pub enum Check {
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
pub enum IntakeError {
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
    pub fn check(&self) -> Option<Check> {
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
pub struct Want {
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
    pub fn admit(&self, len: u64) -> Result<Admitted, IntakeError> {
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
pub struct Admitted {
    q: Quarantine,
    pub file: File,
    pub len: u64,
}

impl Admitted {
    /// All `len` bytes are in the file.
    pub fn spooled(self) -> Spooled {
        Spooled {
            q: self.q,
            len: self.len,
        }
    }
}

/// A received bundle, in its quarantine.
pub struct Spooled {
    q: Quarantine,
    len: u64,
}

/// What came back: the tip the helper names, and the objects (none when the
/// host has them all already).
pub struct Incoming {
    pub head: Option<Oid>,
    pub bundle: Option<Spooled>,
}

/// Work that passed the checks and is in the host repository.
#[derive(Debug, Clone)]
pub struct Received {
    pub tip: Oid,
}

/// A temporary bare repository of flocks' own under the host's common git
/// dir; removed when dropped.
struct Quarantine {
    dir: PathBuf,
    host_objects: PathBuf,
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Quarantine {
    fn new(want: &Want) -> Result<Quarantine, IntakeError> {
        let repo = Repository::open(&want.repo_dir).map_err(|e| want.failed(e.message()))?;
        let common = repo.commondir().to_path_buf();
        let host_objects = common.join("objects");
        let base = common.join("flocks-intake");
        let io = |p: &Path, e: &dyn std::fmt::Display| want.failed(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(&base).map_err(|e| io(&base, &e))?;
        let dir = nix::unistd::mkdtemp(&base.join("q-XXXXXX")).map_err(|e| io(&base, &e))?;
        let q = Quarantine { dir, host_objects };
        for d in ["objects/pack", "objects/info", "refs"] {
            let p = q.dir.join(d);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, &e))?;
        }
        let files = [
            ("HEAD", "ref: refs/heads/main\n".to_string()),
            (
                "config",
                "[core]\n\trepositoryformatversion = 0\n\tbare = true\n".to_string(),
            ),
            (
                "objects/info/alternates",
                format!("{}\n", q.host_objects.display()),
            ),
        ];
        for (name, text) in files {
            let p = q.dir.join(name);
            std::fs::write(&p, text).map_err(|e| io(&p, &e))?;
        }
        Ok(q)
    }

    fn bundle_path(&self) -> PathBuf {
        self.dir.join("in.bundle")
    }

    /// The system git, with the quarantine as its repository and nothing of
    /// the environment's git settings.
    fn git(&self) -> Command {
        let mut c = Command::new("git");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GIT_") {
                c.env_remove(k);
            }
        }
        c.env("GIT_DIR", &self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }
}

/// Check what came back and bring its objects into the host repository.
/// Nothing but objects changes there; see [`take`] for the branch.
pub fn receive(want: &Want, incoming: Incoming) -> Result<Received, IntakeError> {
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
pub fn take(want: &Want, incoming: Incoming, old: Option<Oid>) -> Result<Received, IntakeError> {
    let received = receive(want, incoming)?;
    move_branch(want, received.tip, old)?;
    Ok(received)
}

/// Point `refs/heads/<branch>` at `tip`, if it is still at `old`.
pub fn move_branch(want: &Want, tip: Oid, old: Option<Oid>) -> Result<(), IntakeError> {
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

/// A bundle's header.
struct BundleHeader {
    prerequisites: Vec<Oid>,
    refs: Vec<(Oid, String)>,
    pack_offset: u64,
}

/// Read a v2 or v3 (sha1, no filter) bundle header, strictly.
fn read_header(file: &mut File) -> Result<BundleHeader, String> {
    let mut r = BufReader::new(&mut *file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    let mut next = |r: &mut BufReader<&mut File>, offset: &mut u64| -> Result<String, String> {
        line.clear();
        let n = r
            .by_ref()
            .take(MAX_HEADER_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        *offset += n as u64;
        if *offset > MAX_HEADER as u64 {
            return Err("its header is too long".into());
        }
        if line.last() != Some(&b'\n') {
            return Err("its header ends early or has a line that is too long".into());
        }
        line.pop();
        String::from_utf8(line.clone()).map_err(|_| "its header is not text".to_string())
    };
    let magic = next(&mut r, &mut offset)?;
    let v3 = match magic.as_str() {
        "# v2 git bundle" => false,
        "# v3 git bundle" => true,
        _ => return Err(format!("not a git bundle (first line {magic:?})")),
    };
    let mut h = BundleHeader {
        prerequisites: Vec::new(),
        refs: Vec::new(),
        pack_offset: 0,
    };
    let oid = |s: &str| -> Result<Oid, String> {
        if s.len() == 40
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Oid::from_str(s).map_err(|e| e.message().to_string())
        } else {
            Err(format!("{s:?} is not an object id"))
        }
    };
    loop {
        let l = next(&mut r, &mut offset)?;
        if l.is_empty() {
            break;
        }
        if let Some(cap) = l.strip_prefix('@') {
            if !v3 || cap != "object-format=sha1" {
                return Err(format!("unsupported bundle capability @{cap}"));
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix('-') {
            let id = rest.split(' ').next().unwrap_or_default();
            h.prerequisites.push(oid(id)?);
            continue;
        }
        let (id, name) = l
            .split_once(' ')
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        if !git2::Reference::is_valid_name(name) {
            return Err(format!("bad ref name {name:?}"));
        }
        h.refs.push((oid(id)?, name.to_string()));
    }
    h.pack_offset = offset;
    Ok(h)
}

/// What a pack scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackScan {
    pub objects: u32,
    /// Inflated size of the objects (a delta counts as its result).
    pub inflated: u64,
}

#[derive(Debug)]
pub(crate) enum ScanError {
    /// Over the cap: the size found so far.
    TooLarge(u64),
    Bad(String),
    Io(std::io::Error),
}

/// Walk a pack stream's objects: each object's size is read from its header
/// (a delta's result size from the delta's own header) and added up against
/// `max` before the object is inflated, so that a small pack of huge
/// objects is refused without the work of inflating it; each object is then
/// inflated (to find where it ends), and must be exactly the size it said.
pub(crate) fn scan_pack<R: BufRead>(mut r: R, max: u64) -> Result<PackScan, ScanError> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|_| bad("shorter than a pack header"))?;
    if &head[..4] != b"PACK" {
        return Err(bad("no PACK signature"));
    }
    let version = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if version != 2 && version != 3 {
        return Err(bad(format!("pack version {version}")));
    }
    let count = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let mut inflated = 0u64;
    let mut work = 0u64;
    for i in 0..count {
        let byte = |r: &mut R| -> Result<u8, ScanError> {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)
                .map_err(|_| bad(format!("object {i} of {count} is cut short")))?;
            Ok(b[0])
        };
        let mut c = byte(&mut r)?;
        let kind = (c >> 4) & 7;
        let mut size = u64::from(c & 15);
        let mut shift = 4;
        while c & 0x80 != 0 {
            c = byte(&mut r)?;
            if shift > 60 {
                return Err(bad("an object size does not fit 64 bits"));
            }
            size |= u64::from(c & 0x7f) << shift;
            shift += 7;
        }
        let delta = match kind {
            1..=4 => false,
            6 => {
                let mut c = byte(&mut r)?;
                let mut n = 0;
                while c & 0x80 != 0 {
                    c = byte(&mut r)?;
                    n += 1;
                    if n > 9 {
                        return Err(bad("a delta offset does not fit 64 bits"));
                    }
                }
                true
            }
            7 => {
                let mut base = [0u8; 20];
                r.read_exact(&mut base)
                    .map_err(|_| bad(format!("object {i} of {count} is cut short")))?;
                true
            }
            k => return Err(bad(format!("object {i} has type {k}"))),
        };
        if !delta {
            inflated = inflated.saturating_add(size);
            if inflated > max {
                return Err(ScanError::TooLarge(inflated));
            }
        }
        // Inflating costs its declared size (a delta's too): bounded before
        // it is done.
        work = work.saturating_add(size);
        if work > max.saturating_mul(2) {
            return Err(ScanError::TooLarge(work.max(inflated)));
        }
        let first = inflate(&mut r, size, if delta { 20 } else { 0 })?;
        if delta {
            let result =
                delta_result_size(&first).ok_or_else(|| bad("a delta without a header"))?;
            inflated = inflated.saturating_add(result);
            if inflated > max {
                return Err(ScanError::TooLarge(inflated));
            }
        }
    }
    let mut trailer = Vec::new();
    r.take(21)
        .read_to_end(&mut trailer)
        .map_err(ScanError::Io)?;
    if trailer.len() != 20 {
        return Err(bad(format!(
            "{} bytes after the last object, not a 20-byte checksum",
            trailer.len()
        )));
    }
    Ok(PackScan {
        objects: count,
        inflated,
    })
}

fn bad(why: impl Into<String>) -> ScanError {
    ScanError::Bad(why.into())
}

/// Inflate one object's zlib stream from `r`, which must give exactly
/// `size` bytes; consumes exactly the stream. Returns the first `keep`
/// bytes of what it inflated (a delta's header).
fn inflate<R: BufRead>(r: &mut R, size: u64, keep: usize) -> Result<Vec<u8>, ScanError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    let mut out = vec![0u8; 64 * 1024];
    let mut first: Vec<u8> = Vec::new();
    loop {
        let input = r.fill_buf().map_err(ScanError::Io)?;
        let eof = input.is_empty();
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            .decompress(input, &mut out, FlushDecompress::None)
            .map_err(|e| bad(format!("bad zlib data: {e}")))?;
        let used = (z.total_in() - in0) as usize;
        let made = (z.total_out() - out0) as usize;
        r.consume(used);
        if z.total_out() > size {
            return Err(bad("an object inflates to more than its header says"));
        }
        if first.len() < keep {
            first.extend_from_slice(&out[..made.min(keep - first.len())]);
        }
        match status {
            Status::StreamEnd => break,
            _ if eof && used == 0 && made == 0 => {
                return Err(bad("the pack ends inside an object"));
            }
            _ => {}
        }
    }
    if z.total_out() != size {
        return Err(bad("an object inflates to less than its header says"));
    }
    Ok(first)
}

/// A delta's header: base size, then result size (7-bit little-endian
/// varints). The result size, once both are complete.
fn delta_result_size(b: &[u8]) -> Option<u64> {
    let mut i = 0;
    let mut varint = || -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let c = *b.get(i)?;
            i += 1;
            if shift > 63 {
                return Some(u64::MAX);
            }
            v |= u64::from(c & 0x7f) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                return Some(v);
            }
        }
    };
    varint()?;
    varint()
}

/// Write a bundle of `tip` (under `refname`) for a repository that has
/// `haves` (commits this repository has too; others are left out): the way
/// in, host to agent. The pack is libgit2's, streamed into `out`.
pub fn write_bundle(
    repo: &Repository,
    tip: Oid,
    refname: &str,
    haves: &[Oid],
    out: &mut impl Write,
) -> Result<u64, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    let mut prerequisites = Vec::new();
    for h in haves {
        if repo.find_commit(*h).is_ok() {
            walk.hide(*h)?;
            prerequisites.push(*h);
        }
    }
    let mut header = String::from("# v2 git bundle\n");
    for p in &prerequisites {
        header.push_str(&format!("-{p}\n"));
    }
    header.push_str(&format!("{tip} {refname}\n\n"));
    let mut written = header.len() as u64;
    out.write_all(header.as_bytes())
        .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    let mut pb = repo.packbuilder()?;
    pb.insert_walk(&mut walk)?;
    let mut failed = None;
    pb.foreach(|chunk| match out.write_all(chunk) {
        Ok(()) => {
            written += chunk.len() as u64;
            true
        }
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(git2::Error::from_str(&e.to_string()));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "A")
            .env("GIT_COMMITTER_EMAIL", "a@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn git_in(dir: &Path, args: &[&str], input: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new("git")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The host repo (with `flocks/t` at its first commit) and the agent's
    /// clone of it, on `flocks/t`.
    struct Pair {
        _tmp: tempfile::TempDir,
        host: PathBuf,
        agent: PathBuf,
        start: Oid,
    }

    fn pair() -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir(&host).unwrap();
        crate::git::testing::init_repo(&host);
        git(&host, &["branch", "flocks/t"]);
        let start = Oid::from_str(&git(&host, &["rev-parse", "HEAD"])).unwrap();
        let agent = tmp.path().join("agent");
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                "-b",
                "flocks/t",
                host.to_str().unwrap(),
                "agent",
            ],
        );
        Pair {
            _tmp: tmp,
            host,
            agent,
            start,
        }
    }

    impl Pair {
        fn want(&self, origin: Oid) -> Want {
            Want {
                repo_dir: self.host.clone(),
                task: "t".into(),
                branch: "flocks/t".into(),
                origin,
                max_bytes: 10 << 20,
                reflog: "flocks: test".into(),
                host_worktree: None,
            }
        }

        fn commit(&self, file: &str, text: &str) -> Oid {
            std::fs::write(self.agent.join(file), text).unwrap();
            git(&self.agent, &["add", file]);
            git(&self.agent, &["commit", "-q", "-m", file]);
            Oid::from_str(&git(&self.agent, &["rev-parse", "HEAD"])).unwrap()
        }

        /// `git bundle create` in the agent's repo: `args` after the file.
        fn bundle(&self, args: &[&str]) -> Vec<u8> {
            let path = self.agent.join("../out.bundle");
            let mut a = vec!["bundle", "create", path.to_str().unwrap()];
            a.extend_from_slice(args);
            git(&self.agent, &a);
            let b = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            b
        }

        fn incoming(&self, want: &Want, bytes: &[u8]) -> Result<Incoming, IntakeError> {
            let mut a = want.admit(bytes.len() as u64)?;
            a.file.write_all(bytes).unwrap();
            Ok(Incoming {
                head: None,
                bundle: Some(a.spooled()),
            })
        }

        fn tip(&self) -> Oid {
            Oid::from_str(&git(&self.host, &["rev-parse", "flocks/t"])).unwrap()
        }

        /// Every object file and ref of the host repo, for "unchanged".
        fn fingerprint(&self) -> String {
            let mut out = git(&self.host, &["for-each-ref"]);
            out.push_str(&git(&self.host, &["count-objects", "-v"]));
            let mut packs: Vec<_> = std::fs::read_dir(self.host.join(".git/objects/pack"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            packs.sort();
            out.push_str(&packs.join(","));
            out
        }
    }

    #[test]
    fn honest_work_comes_back_and_the_branch_moves_with_a_reflog() {
        let p = pair();
        p.commit("a.txt", "a");
        let tip = p.commit("b.txt", "b");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let want = p.want(p.start);
        let got = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap();
        assert_eq!(got.tip, tip);
        assert_eq!(p.tip(), tip);
        assert_eq!(git(&p.host, &["show", "flocks/t:b.txt"]), "b");
        let reflog = git(&p.host, &["reflog", "-1", "--format=%gs", "flocks/t"]);
        assert_eq!(reflog, "flocks: test");
        // The quarantine is gone; the objects pass git's own fsck.
        assert_eq!(
            std::fs::read_dir(p.host.join(".git/flocks-intake"))
                .unwrap()
                .count(),
            0
        );
        git(&p.host, &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn a_tip_the_host_has_needs_no_objects() {
        let p = pair();
        let want = p.want(p.start);
        let inc = Incoming {
            head: Some(p.start),
            bundle: None,
        };
        let got = take(&want, inc, Some(p.start)).unwrap();
        assert_eq!(got.tip, p.start);
        // A tip the host does not have is refused.
        let ghost = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
        let inc = Incoming {
            head: Some(ghost),
            bundle: None,
        };
        let e = take(&want, inc, Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Range), "{e}");
    }

    /// A tree with `entry` (a path component git itself would never write)
    /// holding a tree `hooks/x`, committed on top of the branch.
    fn hostile_tree(p: &Pair, entry: &str) -> Oid {
        let blob = git_in(
            &p.agent,
            &["hash-object", "-w", "--stdin"],
            b"#!/bin/sh\necho pwned\n",
        );
        let hooks = git_in(
            &p.agent,
            &["mktree"],
            format!("100755 blob {blob}\tx\n").as_bytes(),
        );
        let dotgit = git_in(
            &p.agent,
            &["mktree"],
            format!("040000 tree {hooks}\thooks\n").as_bytes(),
        );
        let head_tree = git(&p.agent, &["rev-parse", "HEAD^{tree}"]);
        let mut listing = git(&p.agent, &["ls-tree", &head_tree]);
        listing.push_str(&format!("\n040000 tree {dotgit}\t{entry}\n"));
        let root = git_in(&p.agent, &["mktree", "--missing"], listing.as_bytes());
        let c = git(
            &p.agent,
            &["commit-tree", &root, "-p", "HEAD", "-m", "evil"],
        );
        git(&p.agent, &["update-ref", "refs/heads/flocks/t", &c]);
        Oid::from_str(&c).unwrap()
    }

    #[test]
    fn a_dotgit_path_is_refused_by_fsck_and_nothing_changes() {
        let p = pair();
        hostile_tree(&p, ".git");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let before = p.fingerprint();
        let want = p.want(p.start);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Fsck), "{e}");
        let said = e.to_string();
        assert!(
            said.contains("task t") && said.contains("hasDotgit"),
            "{said}"
        );
        assert_eq!(p.fingerprint(), before);
        assert_eq!(p.tip(), p.start);
    }

    #[test]
    fn a_dotdot_name_is_refused() {
        let p = pair();
        hostile_tree(&p, "..");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let before = p.fingerprint();
        let want = p.want(p.start);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Fsck), "{e}");
        assert!(e.to_string().contains("hasDotdot"), "{e}");
        assert_eq!(p.fingerprint(), before);
    }

    #[test]
    fn a_case_folded_dotgit_is_refused_too() {
        let p = pair();
        hostile_tree(&p, ".GIT");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let want = p.want(p.start);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Fsck), "{e}");
    }

    /// A 1 GiB blob of zeros (streamed into a pack of about 5 MB, never
    /// held whole) is refused from the pack's headers, before anything
    /// inflates it.
    #[test]
    fn a_gigabyte_of_zeros_is_refused_by_its_inflated_size() {
        let p = pair();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/zero-blob.py");
        let out = Command::new("python3")
            .arg(script)
            .arg((1u64 << 30).to_string())
            .arg(p.start.to_string())
            .arg(p.agent.join(".git/objects"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        git(&p.agent, &["update-ref", "refs/heads/flocks/t", &commit]);
        assert_eq!(
            git(&p.agent, &["cat-file", "-s", "flocks/t:big"]),
            "1073741824"
        );
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        assert!(b.len() < 10 << 20, "the bundle is small: {}", b.len());
        let before = p.fingerprint();
        let want = p.want(p.start);
        let started = std::time::Instant::now();
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Inflated), "{e}");
        assert!(e.to_string().contains("1024.0 MB"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "refused from the headers"
        );
        assert_eq!(p.fingerprint(), before);
    }

    #[test]
    fn a_bundle_over_the_cap_is_refused_before_it_is_read() {
        let p = pair();
        let mut want = p.want(p.start);
        want.max_bytes = 1 << 20;
        let e = want.admit(2 << 20).err().unwrap();
        assert_eq!(e.check(), Some(Check::Transfer), "{e}");
        assert!(e.to_string().contains("max_fetch_mb = 1"), "{e}");
        assert!(!p.host.join(".git/flocks-intake").exists());
    }

    #[test]
    fn a_rewrite_below_the_origin_is_refused() {
        let p = pair();
        // The task's origin is a commit on top of the start...
        let origin = p.commit("o.txt", "o");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let want = p.want(p.start);
        take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap();
        // ...and the next attempt rewrote it away.
        git(&p.agent, &["reset", "-q", "--hard", &p.start.to_string()]);
        p.commit("other.txt", "x");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let before = p.fingerprint();
        let want = p.want(origin);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(origin)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Range), "{e}");
        assert!(e.to_string().contains("does not descend"), "{e}");
        assert_eq!(p.fingerprint(), before);
        assert_eq!(p.tip(), origin);
        // Below the origin only: rewriting its own commits above it is fine.
        git(&p.agent, &["reset", "-q", "--hard", &origin.to_string()]);
        let t = p.commit("again.txt", "y");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        take(&want, p.incoming(&want, &b).unwrap(), Some(origin)).unwrap();
        assert_eq!(p.tip(), t);
    }

    #[test]
    fn an_extra_ref_or_another_branch_is_refused() {
        let p = pair();
        p.commit("a.txt", "a");
        git(&p.agent, &["branch", "main-evil"]);
        let b = p.bundle(&[
            "refs/heads/flocks/t",
            "refs/heads/main-evil",
            &format!("^{}", p.start),
        ]);
        let before = p.fingerprint();
        let want = p.want(p.start);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Refs), "{e}");
        assert!(e.to_string().contains("refs/heads/main-evil"), "{e}");
        let b = p.bundle(&["refs/heads/main-evil", &format!("^{}", p.start)]);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Refs), "{e}");
        assert_eq!(p.fingerprint(), before);
        assert!(git(&p.host, &["branch", "--list", "main-evil"]).is_empty());
    }

    #[test]
    fn a_branch_moved_meanwhile_is_not_overwritten() {
        let p = pair();
        p.commit("a.txt", "a");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        // Something else moved the host branch during the attempt.
        std::fs::write(p.host.join("z.txt"), "z").unwrap();
        git(&p.host, &["add", "z.txt"]);
        git(&p.host, &["commit", "-q", "-m", "z"]);
        git(&p.host, &["branch", "-f", "flocks/t", "HEAD"]);
        let moved = p.tip();
        let want = p.want(p.start);
        let e = take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap_err();
        assert_eq!(e.check(), Some(Check::Branch), "{e}");
        assert_eq!(p.tip(), moved);
    }

    #[test]
    fn malformed_bundles_are_refused() {
        let p = pair();
        p.commit("a.txt", "a");
        let good = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let want = p.want(p.start);
        for (what, bytes) in [
            ("cut", good[..good.len() - 30].to_vec()),
            ("not a bundle", b"hello\n".to_vec()),
            ("no pack", b"# v2 git bundle\n".to_vec()),
            (
                "filter",
                [
                    b"# v3 git bundle\n@filter=blob:none\n".as_slice(),
                    &good[16..],
                ]
                .concat(),
            ),
        ] {
            let e = take(&want, p.incoming(&want, &bytes).unwrap(), Some(p.start)).unwrap_err();
            assert_eq!(e.check(), Some(Check::Form), "{what}: {e}");
        }
        // A prerequisite the host lacks.
        let ghost = "1234567890123456789012345678901234567890";
        let mut forged = format!("# v2 git bundle\n-{ghost}\n").into_bytes();
        forged.extend_from_slice(&good[16..]);
        let e = take(&want, p.incoming(&want, &forged).unwrap(), Some(p.start)).unwrap_err();
        assert!(e.to_string().contains("does not have"), "{e}");
        assert_eq!(p.tip(), p.start);
    }

    #[test]
    fn bundles_written_here_are_read_by_git() {
        let p = pair();
        p.commit("a.txt", "a");
        let tip = p.commit("b.txt", "b");
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let want = p.want(p.start);
        take(&want, p.incoming(&want, &b).unwrap(), Some(p.start)).unwrap();
        // Host to a repository that has the start only.
        let repo = Repository::open(&p.host).unwrap();
        let mut out = Vec::new();
        let n = write_bundle(&repo, tip, "refs/flocks/start", &[p.start], &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        let other = p.agent.join("../other");
        git(
            p.agent.parent().unwrap(),
            &[
                "clone",
                "-q",
                "--bare",
                "-b",
                "main",
                p.host.to_str().unwrap(),
                "other",
            ],
        );
        git(&other, &["update-ref", "-d", "refs/heads/flocks/t"]);
        let path = other.join("in.bundle");
        std::fs::write(&path, &out).unwrap();
        git(&other, &["bundle", "verify", path.to_str().unwrap()]);
        git(
            &other,
            &[
                "fetch",
                "-q",
                path.to_str().unwrap(),
                "refs/flocks/start:refs/heads/x",
            ],
        );
        assert_eq!(git(&other, &["rev-parse", "x"]), tip.to_string());
        // A have the host does not know is left out of the prerequisites.
        let ghost = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
        let mut out = Vec::new();
        write_bundle(&repo, tip, "refs/flocks/start", &[ghost, p.start], &mut out).unwrap();
        assert!(!String::from_utf8_lossy(&out[..200.min(out.len())]).contains("12345678"));
    }

    #[test]
    fn the_pack_scan_counts_deltas_by_their_result() {
        let p = pair();
        let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        p.commit("a.txt", &text);
        p.commit("a.txt", &format!("{text}one more\n"));
        let b = p.bundle(&["refs/heads/flocks/t", &format!("^{}", p.start)]);
        let pos = b.windows(4).position(|w| w == b"PACK").unwrap();
        let scan = scan_pack(&b[pos..], 10 << 20).unwrap();
        assert_eq!(scan.objects, 6);
        assert!(scan.inflated > 2 * text.len() as u64, "{scan:?}");
        assert!(matches!(
            scan_pack(&b[pos..], 1000),
            Err(ScanError::TooLarge(_))
        ));
    }
}
