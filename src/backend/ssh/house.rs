//! What `flocks hosts check` and `flocks shell` do on an ssh or exe.dev
//! host: reachable, what the helper's `check` finds there (git, the agent,
//! free disk, setup, tar); a login shell in a task's remote worktree.

use std::time::Duration;

use super::SshBackend;
use super::conn::{self, SshError, Target};
use crate::backend::check::{Checked, Line, Place, reply_lines};
use crate::backend::helper::{self, Header};
use crate::backend::house::{At, Records, Shell, ShellEnd, ShellTask};
use crate::config::{BackendConfig, CommandSpec};
use crate::error::{Error, Result};

impl SshBackend {
    /// `flocks up` for an exe.dev pool: its VMs, made and recorded.
    pub(super) async fn up_vms(&self, at: &At<'_>, rec: &mut Records<'_>) -> Result<bool> {
        let BackendConfig::Exedev(x) = &at.pool.backend else {
            return Ok(false);
        };
        let notes = super::exedev::up(at.pool, x, at.key, rec.vms, rec.state, rec.save).await?;
        for note in notes {
            (rec.say)(note);
        }
        Ok(true)
    }

    /// `flocks down` for an exe.dev pool: the VMs `up` made for it.
    pub(super) async fn down_vms(&self, at: &At<'_>, rec: &mut Records<'_>) -> Result<()> {
        if !matches!(at.pool.backend, BackendConfig::Exedev(_)) {
            return Ok(());
        }
        let notes = super::exedev::down(
            at.config,
            at.key,
            rec.vms,
            Some(&at.pool.name),
            rec.state,
            rec.save,
        )
        .await?;
        for note in notes {
            (rec.say)(note);
        }
        Ok(())
    }

    /// `hosts check` on every host of the pool: the VM records refused
    /// and a pool without VMs are problems of their own.
    pub(super) async fn check_hosts(&self, at: &At<'_>, includes: bool) -> Vec<Checked> {
        let pool = &at.pool.name;
        let mut out: Vec<Checked> = self.refused.iter().cloned().map(Checked::problem).collect();
        if self.hosts.is_empty() {
            out.push(Checked::problem(format!(
                "pool {pool} (exedev): no VMs; `flocks up` creates them"
            )));
        }
        let kind = at.pool.backend.kind();
        for h in &self.hosts {
            let t = &h.target;
            let (ok, lines) = host(t, &at.config.agent.command, &self.setup, includes).await;
            out.push(Checked {
                heading: format!("pool {pool} ({kind}) {}", t.host),
                lines,
                ok,
            });
        }
        out
    }

    /// `ssh -t host` into the task's worktree on the host that ran it; on
    /// an exe.dev pool, one of the VMs still recorded.
    pub(super) fn shell_for(&self, at: &At<'_>, task: &ShellTask<'_>) -> Result<Shell> {
        let id = task.asked;
        let ran_on = |t: &&Target| task.worktree.starts_with(&format!("{}:", t.host));
        let mut targets = self.hosts.iter().map(|h| &h.target);
        let t = match at.pool.backend {
            BackendConfig::Exedev(_) => targets.find(ran_on).ok_or_else(|| {
                Error::Usage(format!(
                    "task {id} ran on a VM of pool {} that is no longer recorded (`flocks status` lists the VMs)",
                    at.pool.name
                ))
            })?,
            _ => targets
                .next()
                .ok_or_else(|| Error::Usage(format!("pool {} has no host", at.pool.name)))?,
        };
        remote_shell(t, &task.worktree, id)
    }
}

/// `ssh -t host` with a fixed command; the path is quoted, never spliced raw.
fn remote_shell(t: &Target, worktree: &str, task: &str) -> Result<Shell> {
    let path = worktree
        .strip_prefix(&format!("{}:", t.host))
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| {
            Error::Usage(format!(
                "task {task} has not run on host {} yet: nothing to open",
                t.host
            ))
        })?;
    let remote = format!(
        "cd {} && exec \"${{SHELL:-/bin/sh}}\" -l",
        conn::sh_quote(path)
    );
    let options = t.options().map_err(|e| Error::CannotStart(e.to_string()))?;
    conn::register_master(t);
    let mut argv: Vec<std::ffi::OsString> = vec!["ssh".into()];
    argv.extend(options.into_iter().map(Into::into));
    argv.extend(["-t", "--", &t.host, &remote].map(Into::into));
    Ok(Shell {
        argv,
        dir: None,
        note: None,
        cannot_start: "cannot run ssh".into(),
        start_error: Error::Other,
        end: ShellEnd::Ssh(format!(
            "cannot open a shell on host {} (ssh exited with 255)",
            t.host
        )),
    })
}

/// Check host `t` for agent command `agent`, with the pool's `setup`, and
/// `tar` wanted when `.worktreeinclude`'s files travel (`includes`): its
/// lines, and whether all is well.
pub(crate) async fn host(
    t: &Target,
    agent: &str,
    setup: &[CommandSpec],
    includes: bool,
) -> (bool, Vec<Line>) {
    let mut lines = Vec::new();
    if let Err(e) = t.output("true", b"", Duration::from_secs(30)).await {
        lines.push(("reachable", format!("no: {e}")));
        return (false, lines);
    }
    lines.push(("reachable", "yes".into()));
    let header = match Header::new("check")
        .line("agent", agent)
        .and_then(|h| h.line("setup_hash", super::setup_hash(setup)))
    {
        Ok(h) => h.end(),
        Err(e) => {
            lines.push(("agent", e.to_string()));
            return (false, lines);
        }
    };
    let out = match t.install_helper().await {
        Ok(()) => t.helper(&header, Duration::from_secs(60)).await,
        Err(e) => Err(e),
    };
    let out = match out {
        Ok(o) => o,
        Err(SshError::Unreachable(m) | SshError::Failed(m)) => {
            lines.push(("remote_dir", format!("cannot use {}: {m}", t.remote_dir)));
            return (false, lines);
        }
    };
    let reply = match helper::parse(&out, &helper::reply::CHECK) {
        Ok(o) => o,
        Err(e) => {
            lines.push(("remote_dir", format!("{}: {e}", t.remote_dir)));
            return (false, lines);
        }
    };
    let root = reply.get("root").unwrap_or_default().to_string();
    let ok = reply_lines(
        &reply,
        Place::Host,
        agent,
        !setup.is_empty(),
        &root,
        includes,
        &mut lines,
    );
    (ok, lines)
}
