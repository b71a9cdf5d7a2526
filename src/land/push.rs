//! `flocks land --push`: the target to a remote under a lease, and the
//! `[land] after_push` commands that check the push.
//!
//! The git CLI does the talking (it knows the user's ssh keys, credential
//! helpers and remote configuration); flocks passes argv, never a shell
//! string. The lease is explicit (`--force-with-lease=<ref>:<expected>`):
//! the push goes through only while the remote's branch is where the land
//! started from, whatever the remote-tracking refs say.

use std::path::Path;
use std::process::{Command, Stdio};

use git2::Oid;

use super::validate::{self, Run, Validation};
use crate::error::{Error, Result};
use crate::project::Project;

/// How a push went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The remote's branch is now `tip`.
    Done,
    /// The remote's branch is no longer at the expected commit (now: `now`,
    /// None when it is gone): nothing was pushed.
    Moved { now: Option<Oid> },
}

/// One remote branch flocks pushes to.
pub(crate) struct Remote<'a> {
    pub name: &'a str,
    pub branch: &'a str,
    repo: &'a Path,
}

impl<'a> Remote<'a> {
    /// `name` of the repository at `repo`, checked to be one of its remotes.
    pub(crate) fn new(repo: &'a Path, name: &'a str, branch: &'a str) -> Result<Remote<'a>> {
        let known = crate::config::remote_name_ok(name)
            && git(repo, &["remote", "get-url", "--", name]).is_ok();
        if !known {
            let remotes = git(repo, &["remote"]).unwrap_or_default();
            let list: Vec<&str> = remotes.lines().collect();
            return Err(Error::Usage(format!(
                "no remote `{name}` in {} (its remotes: {}): name one with --push=REMOTE or [land] push, \
                 or add it ({}); task ids go before --push",
                repo.display(),
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                },
                crate::suggest::command(&["git", "remote", "add", name, "URL"])
            )));
        }
        Ok(Remote { name, branch, repo })
    }

    fn refname(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// `origin/main`, for people.
    pub(crate) fn label(&self) -> String {
        format!("{}/{}", self.name, self.branch)
    }

    /// The remote's tip of the branch, asked now, with its objects fetched
    /// (and `refs/remotes/<name>/<branch>` updated). None: no such branch.
    pub(crate) fn fetch(&self) -> Result<Option<Oid>> {
        let refname = self.refname();
        let listed = git(self.repo, &["ls-remote", "--", self.name, &refname])
            .map_err(|e| Error::Remote(format!("ask {} for {refname}: {e}", self.name)))?;
        let Some(tip) = listed
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(refname.as_str()))
            .and_then(|l| l.split_whitespace().next())
        else {
            return Ok(None);
        };
        let tip: Oid = tip
            .parse()
            .map_err(|_| Error::Remote(format!("git ls-remote answered `{tip}` for {refname}")))?;
        let spec = format!("+{refname}:refs/remotes/{}/{}", self.name, self.branch);
        git(
            self.repo,
            &["fetch", "--quiet", "--no-tags", "--", self.name, &spec],
        )
        .map_err(|e| Error::Remote(format!("fetch {} from {}: {e}", refname, self.name)))?;
        Ok(Some(tip))
    }

    /// Push `tip` to the branch, only while the remote has it at `expected`
    /// (None: only while it has no such branch).
    pub(crate) fn push(&self, tip: Oid, expected: Option<Oid>) -> Result<Pushed> {
        let refname = self.refname();
        let lease = format!(
            "--force-with-lease={refname}:{}",
            expected.map(|o| o.to_string()).unwrap_or_default()
        );
        let spec = format!("{tip}:{refname}");
        match git(
            self.repo,
            &["push", "--porcelain", &lease, "--", self.name, &spec],
        ) {
            Ok(_) => Ok(Pushed::Done),
            Err(e) => {
                // Rejected by the lease, or failed for another reason: the
                // remote's branch says which.
                let now = self.fetch()?;
                if now == Some(tip) {
                    return Ok(Pushed::Done);
                }
                if now != expected {
                    return Ok(Pushed::Moved { now });
                }
                Err(Error::LandStopped(format!(
                    "push to {} failed: {e}; {} landed here only: `{}` pushes it by hand",
                    self.name,
                    self.branch,
                    crate::suggest::command(&["git", "push", self.name, self.branch])
                )))
            }
        }
    }
}

/// Run `git -C repo args...`; its stdout, or its stderr's last lines.
fn git(repo: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    Err(if tail.is_empty() {
        format!("git {} exited with {}", args[0], out.status)
    } else {
        tail
    })
}

/// Run `[land] after_push` in the repository (its output shown and logged
/// under `.flocks/land-logs/`), with `FLOCKS_REMOTE`, `FLOCKS_TARGET` and
/// `FLOCKS_PUSHED` (the commit pushed) set. Credentials are not in their
/// environment.
pub(crate) fn after_push(
    project: &Project,
    remote: &Remote,
    tip: Oid,
) -> Result<(Validation, std::path::PathBuf)> {
    let config = &project.config;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let log = project
        .state_dir()
        .join("land-logs")
        .join(format!("{stamp}-after-push.log"));
    let mut scrub: Vec<String> = crate::agent::SCRUBBED_VARS
        .iter()
        .map(|v| v.to_string())
        .collect();
    scrub.extend(config.credentials.iter().map(|c| c.env.clone()));
    let env = [
        ("FLOCKS_REMOTE".to_string(), remote.name.to_string()),
        ("FLOCKS_TARGET".to_string(), remote.branch.to_string()),
        ("FLOCKS_PUSHED".to_string(), tip.to_string()),
    ];
    let r = Run {
        commands: &config.land.after_push,
        dir: project.repo_dir(),
        timeout: config.validate.timeout,
        grace: config.kill_grace,
        scrub: &scrub,
        log: &log,
        echo: true,
        what: "after_push",
        env: &env,
    };
    let out = validate::open_log(&r)?;
    let (_caught, mut stop) = super::signals::catch();
    Ok((validate::run(&r, &out, &mut stop)?, log))
}

/// The remote's branch as the land found it: what the push's lease expects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    /// The remote's tip (None: it has no such branch yet).
    pub expected: Option<Oid>,
    /// The local target when the land started (after a fast-forward to the
    /// remote, if it was behind).
    pub base: Oid,
}

/// Before planning: fetch the remote's branch; when the local target is
/// behind it, fast-forward the target (and its checkout) first, so that the
/// land is built on top of what the remote has. A target that diverged from
/// the remote is refused, nothing changed. `say`: one line for people.
pub(crate) fn prepare(
    project: &Project,
    remote: &Remote,
    _lock: &super::LandLock,
    say: fn(&str),
) -> Result<Lease> {
    let repo = crate::git::open(project.repo_dir())?;
    let target = remote.branch;
    let local = crate::git::branch_tip(&repo, target)?.ok_or_else(|| {
        Error::Usage(format!(
            "land_target `{target}` is not a branch of {}: create it, or set [workspace] land_target",
            project.repo_dir().display()
        ))
    })?;
    let theirs = remote.fetch()?;
    let Some(theirs) = theirs else {
        say(&format!(
            "{} does not exist yet: the push creates it",
            remote.label()
        ));
        return Ok(Lease {
            expected: None,
            base: local,
        });
    };
    if theirs == local || repo.graph_descendant_of(local, theirs).unwrap_or(false) {
        let (ahead, _) = repo.graph_ahead_behind(local, theirs).unwrap_or((0, 0));
        if ahead > 0 {
            say(&format!(
                "{target} has {ahead} commit{} that {} has not: the push takes {} along",
                if ahead == 1 { "" } else { "s" },
                remote.label(),
                if ahead == 1 { "it" } else { "them" }
            ));
        }
        return Ok(Lease {
            expected: Some(theirs),
            base: local,
        });
    }
    if !repo.graph_descendant_of(theirs, local).unwrap_or(false) {
        return Err(Error::LandStopped(format!(
            "{target} and {} have diverged ({target} at {}, {} at {}); nothing was changed: \
             merge or rebase {target} onto {}, then land again",
            remote.label(),
            super::range::short(local),
            remote.label(),
            super::range::short(theirs),
            remote.label()
        )));
    }
    let refname = format!("refs/heads/{target}");
    let message = format!("flocks land --push: fast-forward to {}", remote.label());
    if let Err(stop) = super::target::move_ref(&repo, &refname, local, theirs, &message)? {
        return Err(Error::LandStopped(format!(
            "{target} is behind {} and could not be brought up to it: {stop}",
            remote.label()
        )));
    }
    say(&format!(
        "{target} was behind {}: fast-forwarded it to {} before planning",
        remote.label(),
        super::range::short(theirs)
    ));
    Ok(Lease {
        expected: Some(theirs),
        base: theirs,
    })
}

/// The remote moved under a land: put the local target on the remote's new
/// tip (its checkout too), and record the lands made since `since` as
/// undone (their commits are not on the target any more). Only when the
/// remote's new tip builds on the land's base: a remote that was rewritten,
/// or a target with commits of its own, stops with why.
pub(crate) fn rebase_onto(
    project: &Project,
    remote: &Remote,
    lease: &Lease,
    now: Option<Oid>,
    since: chrono::DateTime<chrono::Utc>,
    lock: &super::LandLock,
) -> Result<Lease> {
    let repo = crate::git::open(project.repo_dir())?;
    let target = remote.branch;
    let stays = format!(
        "the land stays on {target} here, not pushed: look at {} (`{}`), then land --push again",
        remote.label(),
        crate::suggest::command(&["git", "log", &format!("{target}..{}", remote.label())])
    );
    let Some(now) = now else {
        return Err(Error::LandStopped(format!(
            "{} was deleted while flocks landed; {stays}",
            remote.label()
        )));
    };
    let builds_on_base = repo.graph_descendant_of(now, lease.base).unwrap_or(false);
    if Some(lease.base) != lease.expected || !builds_on_base {
        return Err(Error::LandStopped(format!(
            "{} moved to {}, which does not build on where this land started ({}); {stays}",
            remote.label(),
            super::range::short(now),
            super::range::short(lease.base)
        )));
    }
    let local = crate::git::branch_tip(&repo, target)?
        .ok_or_else(|| Error::BranchGone(target.to_string()))?;
    let refname = format!("refs/heads/{target}");
    let message = format!(
        "flocks land --push: {} moved, land again on it",
        remote.label()
    );
    if let Err(stop) = super::target::move_ref(&repo, &refname, local, now, &message)? {
        return Err(Error::LandStopped(format!(
            "{} moved, and {target} could not be put on it to land again: {stop}; {stays}",
            remote.label()
        )));
    }
    let mut log = super::LandLog::load(&project.state_dir())?;
    for r in log
        .lands
        .iter_mut()
        .filter(|r| r.target == target && r.at >= since && r.state == super::LandState::Done)
    {
        r.state = super::LandState::Undone;
        r.undone_at = Some(chrono::Utc::now());
    }
    log.save(&project.state_dir(), lock)?;
    Ok(Lease {
        expected: Some(now),
        base: now,
    })
}

/// Record in land.json that the lands of `target` up to `tip` were pushed.
pub(crate) fn record_pushed(
    project: &Project,
    remote: &Remote,
    tip: Oid,
    lock: &super::LandLock,
) -> Result<()> {
    let repo = crate::git::open(project.repo_dir())?;
    let mut log = super::LandLog::load(&project.state_dir())?;
    let now = chrono::Utc::now();
    let mut changed = false;
    for r in log.lands.iter_mut().filter(|r| {
        r.target == remote.branch && r.state == super::LandState::Done && r.pushed.is_none()
    }) {
        let on_tip = r
            .new_tip
            .parse::<Oid>()
            .is_ok_and(|n| n == tip || repo.graph_descendant_of(tip, n).unwrap_or(false));
        if on_tip {
            r.pushed = Some(super::record::Pushed {
                remote: remote.name.to_string(),
                at: now,
            });
            changed = true;
        }
    }
    if changed {
        log.save(&project.state_dir(), lock)?;
    }
    Ok(())
}
