//! What every sandbox of this project hides and shows, and the helper's
//! environment in it.

use std::path::{Path, PathBuf};

use super::UNSET;
use super::layout::{INNER_BASE, INNER_ROOT, INNER_WORK, Layout};
use super::sandbox::{Env, Mount, Sandbox};
use crate::config::{Config, SandboxNetwork};

/// What every sandbox of this project hides and shows, from the config and
/// the environment flocks runs in (canonical host paths).
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// Private places: a tmpfs over each (the user's and root's homes, the
    /// temporary directories, `/run` and its sockets, `$XDG_*` dirs).
    hidden: Vec<PathBuf>,
    /// `$HOME`: where the task's private home is bound.
    home: PathBuf,
    /// An ssh agent's socket, if visible otherwise.
    agent_socket: Option<PathBuf>,
    /// `[sandbox] read`.
    reads: Vec<PathBuf>,
    /// The repository, its git dir, `.flocks/`, flocks' state directory:
    /// a tmpfs over each that would still show.
    protected: Vec<PathBuf>,
    pub(super) network: SandboxNetwork,
    /// `/etc/resolv.conf`'s target, when it lies in a hidden place (a
    /// resolver under `/run`) and the network is the host's.
    resolv: Option<PathBuf>,
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Top-level places a stray `$XDG_*` value must not hide.
fn is_system(p: &Path) -> bool {
    p == Path::new("/")
        || [
            "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/var", "/dev", "/proc",
            "/sys", "/opt",
        ]
        .iter()
        .any(|s| Path::new(s).starts_with(p))
}

impl View {
    /// Why a sandbox cannot be built here, or the view.
    pub(crate) fn new(config: &Config) -> Result<View, String> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or("HOME is not set: a sandboxed agent's private home is bound there")?;
        let home = canonical(&home);
        if home == Path::new("/") || !home.is_absolute() {
            return Err(format!(
                "HOME is {}: a sandboxed agent's private home replaces it, so it must be a directory of its own",
                home.display()
            ));
        }
        let mut hidden: Vec<PathBuf> = ["/home", "/root", "/tmp", "/var/tmp", "/run"]
            .iter()
            .map(|p| canonical(Path::new(p)))
            .filter(|p| p.is_dir())
            .collect();
        let xdg = [
            "XDG_CONFIG_HOME",
            "XDG_DATA_HOME",
            "XDG_STATE_HOME",
            "XDG_CACHE_HOME",
            "XDG_RUNTIME_DIR",
        ];
        for v in xdg {
            if let Some(p) = std::env::var_os(v).map(PathBuf::from)
                && p.is_absolute()
                && p.is_dir()
            {
                let p = canonical(&p);
                if !is_system(&p) {
                    hidden.push(p);
                }
            }
        }
        // Parents first; nothing under a place already hidden.
        hidden.sort();
        hidden.dedup();
        let mut kept: Vec<PathBuf> = Vec::new();
        for h in hidden {
            if !kept.iter().any(|k| h.starts_with(k)) {
                kept.push(h);
            }
        }
        let mut protected = vec![canonical(&config.workspace.repo)];
        if let Ok(repo) = crate::git::open(&config.workspace.repo) {
            protected.push(canonical(repo.commondir()));
            protected.push(canonical(repo.path()));
        }
        protected.push(canonical(&config.state_dir()));
        protected.push(canonical(&config.worktrees_dir()));
        if let Some(s) = crate::trust::state_home() {
            protected.push(canonical(&s.join("flocks")));
        }
        protected.sort();
        protected.dedup();
        let agent_socket = std::env::var_os("SSH_AUTH_SOCK")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.exists())
            .map(|p| canonical(&p));
        let network = config.sandbox.network;
        let resolv = (network == SandboxNetwork::Host)
            .then(|| canonical(Path::new("/etc/resolv.conf")))
            .filter(|r| r != Path::new("/etc/resolv.conf") && r.is_file());
        Ok(View {
            hidden: kept,
            home,
            agent_socket,
            reads: config.sandbox.read.clone(),
            protected,
            network,
            resolv,
        })
    }

    /// `[sandbox] read` paths that are not there.
    pub(super) fn missing_reads(&self) -> Vec<&Path> {
        self.reads
            .iter()
            .filter(|p| !p.exists())
            .map(PathBuf::as_path)
            .collect()
    }

    /// The sandbox of `task` (its home and workspace bound in), or of no
    /// task (a probe: the view alone). The mounts: a tmpfs over each
    /// private place; then the binds (the private home, the workspace,
    /// `[sandbox] read`), a parent before what lies under it, so that a read
    /// path around the home never covers the private one and one inside it
    /// shows through; last an empty read-only directory over each protected
    /// place that still shows.
    pub(crate) fn sandbox(&self, bwrap: &Path, layout: Option<(&Layout, &str)>) -> Sandbox {
        let hidden: Vec<Mount> = self.hidden.iter().cloned().map(Mount::Tmpfs).collect();
        let mut binds: Vec<Mount> = self
            .reads
            .iter()
            .map(|r| Mount::ReadOnly {
                src: r.clone(),
                dest: r.clone(),
            })
            .collect();
        match layout {
            Some((l, task)) => binds.extend([
                Mount::ReadWrite {
                    src: l.home(task),
                    dest: self.home.clone(),
                },
                Mount::Tmpfs(INNER_ROOT.into()),
                Mount::ReadOnly {
                    src: l.base(),
                    dest: INNER_BASE.into(),
                },
                Mount::ReadWrite {
                    src: l.work(task),
                    dest: INNER_WORK.into(),
                },
            ]),
            None => binds.push(Mount::Tmpfs(self.home.clone())),
        }
        let mut s = Sandbox {
            bwrap: bwrap.to_path_buf(),
            mounts: Vec::new(),
            network: self.network,
            env: Env {
                clear: false,
                set: Vec::new(),
                unset: UNSET.iter().map(|v| v.to_string()).collect(),
            },
            chdir: None,
            interactive: false,
        };
        let arrange = |binds: &mut Vec<Mount>| {
            // Stable: at the same depth, in the order given.
            binds.sort_by_key(|m| m.dest().components().count());
            hidden
                .iter()
                .cloned()
                .chain(binds.iter().cloned())
                .collect()
        };
        s.mounts = arrange(&mut binds);
        let mut more = false;
        if let Some(sock) = &self.agent_socket
            && s.shows(sock)
        {
            binds.push(Mount::Null(sock.clone()));
            more = true;
        }
        if let Some(r) = &self.resolv
            && !s.shows(r)
        {
            binds.push(Mount::ReadOnly {
                src: r.clone(),
                dest: r.clone(),
            });
            more = true;
        }
        if more {
            s.mounts = arrange(&mut binds);
        }
        // Last, so that nothing above shows them.
        for p in &self.protected {
            if p.exists() && s.shows(p) {
                s.mounts.push(Mount::Empty(p.clone()));
            }
        }
        s
    }

    /// Make `program` (a host path) runnable inside `s`: bound read-only
    /// where it is, if hidden (the file alone when it lies in the
    /// repository, else its directory: an interpreted agent's package).
    /// Returns the path to run.
    pub(super) fn show_program(&self, s: &mut Sandbox, program: &Path) -> PathBuf {
        let real = canonical(program);
        if !s.shows(&real) {
            let in_protected = self.protected.iter().any(|p| real.starts_with(p));
            let src = match real.parent() {
                Some(dir) if !in_protected && dir != Path::new("/") => dir.to_path_buf(),
                _ => real.clone(),
            };
            s.mounts.push(Mount::ReadOnly {
                src: src.clone(),
                dest: src,
            });
        }
        real
    }
}

/// The helper's environment: nothing of flocks' own (no credential source
/// variable reaches a hook the agent may have planted), but a PATH and the
/// home.
pub(super) fn helper_env(view: &View) -> Env {
    let mut set = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        ),
        ("HOME".to_string(), view.home.display().to_string()),
        (
            crate::backend::helper::ROOT_VAR.to_string(),
            INNER_WORK.to_string(),
        ),
    ];
    if let Ok(l) = std::env::var("LANG") {
        set.push(("LANG".into(), l));
    }
    Env {
        clear: true,
        set,
        unset: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
