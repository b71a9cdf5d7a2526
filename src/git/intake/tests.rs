//! Tests.

use std::io::Write;
use std::path::Path;

use super::bundle::*;
use super::pack::*;
use super::*;
use std::process::Command;

use crate::git::testing::git;

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
