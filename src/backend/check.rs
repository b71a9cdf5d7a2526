//! `flocks hosts check`'s findings: a pool's report, and the one reading of
//! the helper's `check` reply (git, the agent, free disk, setup, tar) that
//! an ssh or exe.dev host and a Slurm compute node share.

use super::helper::Reply;

/// One line of a check: what, and what was found.
pub(crate) type Line = (&'static str, String);

/// What `hosts check` found for one host of a pool (or one Slurm pool).
#[derive(Debug)]
pub(crate) struct Checked {
    /// Its first line: `pool NAME (KIND) HOST`, or a problem on its own.
    pub heading: String,
    /// What was found, one line each.
    pub lines: Vec<Line>,
    /// Whether all is well.
    pub ok: bool,
}

impl Checked {
    /// A problem said in one line (a VM refused, no VMs).
    pub(crate) fn problem(heading: String) -> Checked {
        Checked {
            heading,
            lines: Vec::new(),
            ok: false,
        }
    }
}

/// Where the helper ran, in the words of what it found missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// An ssh or exe.dev host.
    Host,
    /// A Slurm compute node, reached by a short job.
    ComputeNode,
}

/// The findings of the helper's `check` reply, for the agent command
/// `agent`, with `setup` configured or not, the root at `root`, and
/// `.worktreeinclude` files to carry (`includes`): appended to `lines`;
/// whether all is well.
pub(crate) fn reply_lines(
    reply: &Reply,
    place: Place,
    agent: &str,
    setup: bool,
    root: &str,
    includes: bool,
    lines: &mut Vec<Line>,
) -> bool {
    let get = |k: &str| reply.get(k).unwrap_or_default().to_string();
    let node = place == Place::ComputeNode;
    let mut ok = true;
    let git = get("git");
    if git.is_empty() || git == "missing" {
        ok = false;
        lines.push((
            "git",
            if node {
                "missing on the compute node: install git there"
            } else {
                "missing: install git on the host"
            }
            .into(),
        ));
    } else {
        lines.push(("git", git));
    }
    let path = get("agent_path");
    if path.is_empty() {
        ok = false;
        lines.push((
            "agent",
            if node {
                format!(
                    "`{agent}` not found on the compute node: install it there, or set [agent] command"
                )
            } else {
                format!("`{agent}` not found: install it, or set [agent] command")
            },
        ));
    } else {
        lines.push(("agent", format!("{path} ({})", get("agent_version"))));
    }
    let free = get("free_kb")
        .parse::<u64>()
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|_| "unknown".into());
    lines.push(("free disk", format!("{free} under {root}")));
    let setup_line = if !setup {
        "none configured"
    } else if get("setup") == "done" {
        "ran"
    } else if node {
        "not yet (it runs in the pool's first job)"
    } else {
        "not yet (it runs before the host's first task)"
    };
    lines.push(("setup", setup_line.to_string()));
    if includes {
        if get("tar") == "yes" {
            lines.push(("tar", "yes (for .worktreeinclude's files)".into()));
        } else {
            ok = false;
            lines.push((
                "tar",
                if node {
                    "missing on the compute node (.worktreeinclude's files travel with it)"
                } else {
                    "missing: install tar on the host (.worktreeinclude's files travel with it)"
                }
                .into(),
            ));
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::helper::{parse, reply::CHECK};

    fn reply(text: &str) -> Reply {
        parse(text, &CHECK).expect("a check reply")
    }

    #[test]
    fn a_host_with_all_it_needs_is_well() {
        let r = reply(
            "root /srv/f\ngit git version 2.43.0\nagent_path /usr/bin/claude\nagent_version 1.0\nfree_kb 2097152\ntar yes\nsetup done\n",
        );
        let mut lines = Vec::new();
        assert!(reply_lines(
            &r,
            Place::Host,
            "claude",
            true,
            "/srv/f",
            true,
            &mut lines
        ));
        assert_eq!(
            lines,
            vec![
                ("git", "git version 2.43.0".to_string()),
                ("agent", "/usr/bin/claude (1.0)".to_string()),
                ("free disk", "2.0 GiB under /srv/f".to_string()),
                ("setup", "ran".to_string()),
                ("tar", "yes (for .worktreeinclude's files)".to_string()),
            ]
        );
    }

    #[test]
    fn what_is_missing_is_said_in_the_words_of_its_place() {
        let r =
            reply("root /srv/f\ngit missing\nagent_path \nfree_kb \ntar missing\nsetup needed\n");
        for (place, git, setup) in [
            (
                Place::Host,
                "missing: install git on the host",
                "not yet (it runs before the host's first task)",
            ),
            (
                Place::ComputeNode,
                "missing on the compute node: install git there",
                "not yet (it runs in the pool's first job)",
            ),
        ] {
            let mut lines = Vec::new();
            assert!(!reply_lines(
                &r, place, "claude", true, "/srv/f", true, &mut lines
            ));
            assert_eq!(lines[0], ("git", git.to_string()));
            assert!(
                lines[1].1.starts_with("`claude` not found"),
                "{:?}",
                lines[1]
            );
            assert_eq!(lines[2], ("free disk", "unknown under /srv/f".to_string()));
            assert_eq!(lines[3], ("setup", setup.to_string()));
            assert!(lines[4].1.starts_with("missing"), "{:?}", lines[4]);
        }
    }
}
