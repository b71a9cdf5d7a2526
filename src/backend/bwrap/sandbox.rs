//! One bubblewrap sandbox, described as data, and the `bwrap` argv it
//! becomes. Everything flocks runs in a sandbox (the helper, `[workspace]
//! setup`, the agent, `flocks shell`) is built from this, so what an agent
//! can see is said in one place:
//!
//! ```text
//!  --ro-bind / /  --dev /dev  --proc /proc     the host, read-only; a fresh /dev; its own /proc
//!  mounts, in order                            tmpfs over private places; the task's home and
//!                                              workspace read-write and `[sandbox] read`
//!                                              read-only (parents first); an empty read-only
//!                                              tmpfs over the repository and flocks' files
//!  --unshare-pid --unshare-ipc --unshare-uts   its own PID (and IPC, hostname, cgroup) namespace,
//!  --unshare-cgroup-try [--unshare-net]        its own network namespace unless network = "host"
//!                                              (with "proxy", flocks' proxy socket bound in and
//!                                              `flocks __forward` before the command)
//!  --die-with-parent [--new-session]           gone with its parent; no controlling terminal
//!  --cap-drop ALL                              no capabilities, even when flocks runs as root
//! ```
//!
//! A later mount wins over an earlier one at the same place or above it;
//! [`Sandbox::shows`] answers "is this host path readable in there" from the
//! same list.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::SandboxNetwork;

/// One mount, after the read-only view of `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mount {
    /// An empty tmpfs at this path: what was there is not visible.
    Tmpfs(PathBuf),
    /// An empty, read-only tmpfs at this path: nothing visible, nothing to
    /// write (the repository, flocks' own files).
    Empty(PathBuf),
    /// A host path, read-only.
    ReadOnly { src: PathBuf, dest: PathBuf },
    /// A host path, read-write.
    ReadWrite { src: PathBuf, dest: PathBuf },
    /// `/dev/null` over a file (an ssh agent's socket): nothing to connect to.
    Null(PathBuf),
}

impl Mount {
    pub(crate) fn dest(&self) -> &Path {
        match self {
            Mount::Tmpfs(d) | Mount::Empty(d) | Mount::Null(d) => d,
            Mount::ReadOnly { dest, .. } | Mount::ReadWrite { dest, .. } => dest,
        }
    }
}

/// The environment of what runs inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Env {
    /// Start from nothing (`--clearenv`); else from the environment bwrap
    /// is started with.
    pub clear: bool,
    pub set: Vec<(String, String)>,
    pub unset: Vec<String>,
}

/// A sandbox: bwrap's program, the mounts, the network, the environment.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    /// The `bwrap` binary.
    pub bwrap: PathBuf,
    /// After `--ro-bind / / --dev /dev --proc /proc`, in this order.
    pub mounts: Vec<Mount>,
    pub network: SandboxNetwork,
    pub env: Env,
    /// The working directory inside.
    pub chdir: Option<String>,
    /// A person's shell (`flocks shell`): keeps the terminal. Everything
    /// else runs in a new session, so that it cannot push input into a
    /// terminal (TIOCSTI).
    pub interactive: bool,
}

impl Sandbox {
    /// `bwrap <options> --`: what goes before the command.
    pub(crate) fn prefix(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.bwrap.clone().into()];
        let mut push = |words: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(words.iter().map(|w| w.as_ref().to_os_string()));
        };
        push(&[
            &"--ro-bind",
            &"/",
            &"/",
            &"--dev",
            &"/dev",
            &"--proc",
            &"/proc",
        ]);
        for m in &self.mounts {
            match m {
                Mount::Tmpfs(d) | Mount::Empty(d) => push(&[&"--tmpfs", d]),
                Mount::ReadOnly { src, dest } => push(&[&"--ro-bind", src, dest]),
                Mount::ReadWrite { src, dest } => push(&[&"--bind", src, dest]),
                Mount::Null(d) => push(&[&"--ro-bind", &"/dev/null", d]),
            }
        }
        // Read-only once everything is mounted (a mount point made in an
        // empty directory, for an agent program bound there, came first).
        for m in &self.mounts {
            if let Mount::Empty(d) = m {
                push(&[&"--remount-ro", d]);
            }
        }
        if self.env.clear {
            push(&[&"--clearenv"]);
        }
        for k in &self.env.unset {
            push(&[&"--unsetenv", k]);
        }
        for (k, v) in &self.env.set {
            push(&[&"--setenv", k, v]);
        }
        if let Some(d) = &self.chdir {
            push(&[&"--chdir", d]);
        }
        push(&[
            &"--unshare-pid",
            &"--unshare-ipc",
            &"--unshare-uts",
            &"--unshare-cgroup-try",
        ]);
        if self.network.private() {
            push(&[&"--unshare-net"]);
        }
        push(&[&"--die-with-parent"]);
        if !self.interactive {
            push(&[&"--new-session"]);
        }
        push(&[&"--cap-drop", &"ALL", &"--"]);
        a
    }

    /// The whole argv: `bwrap <options> -- <command...>`.
    pub(crate) fn argv(&self, command: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
        let mut a = self.prefix();
        a.extend(command);
        a
    }

    /// Whether the host's `path` (absolute, without `..`) is readable at
    /// the same path inside: the last mount at it or above it decides, and
    /// without one, the read-only view of `/` shows it.
    pub(crate) fn shows(&self, path: &Path) -> bool {
        let Some(m) = self
            .mounts
            .iter()
            .rev()
            .find(|m| path.starts_with(m.dest()))
        else {
            return true;
        };
        match m {
            Mount::Tmpfs(_) | Mount::Empty(_) | Mount::Null(_) => false,
            Mount::ReadOnly { src, dest } | Mount::ReadWrite { src, dest } => {
                // The same file only if the bind is of the same place.
                src == dest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(mounts: Vec<Mount>) -> Sandbox {
        Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            mounts,
            network: SandboxNetwork::None,
            env: Env::default(),
            chdir: None,
            interactive: false,
        }
    }

    fn words(v: &[OsString]) -> Vec<String> {
        v.iter().map(|w| w.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_argv_is_in_order_with_no_capabilities_and_no_network() {
        let mut s = sandbox(vec![
            Mount::Tmpfs("/home".into()),
            Mount::ReadWrite {
                src: "/state/t1/home".into(),
                dest: "/home/u".into(),
            },
            Mount::ReadOnly {
                src: "/home/u/.cargo".into(),
                dest: "/home/u/.cargo".into(),
            },
            Mount::Null("/srv/agent.sock".into()),
            Mount::Empty("/srv/repo".into()),
        ]);
        s.env = Env {
            clear: true,
            set: vec![("HOME".into(), "/home/u".into())],
            unset: vec!["TMPDIR".into()],
        };
        s.chdir = Some("/var/tmp/flocks/work".into());
        let a = words(&s.argv(["git".into(), "status".into()]));
        assert_eq!(
            a.join(" "),
            "/usr/bin/bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /home \
             --bind /state/t1/home /home/u --ro-bind /home/u/.cargo /home/u/.cargo \
             --ro-bind /dev/null /srv/agent.sock --tmpfs /srv/repo --remount-ro /srv/repo --clearenv --unsetenv TMPDIR \
             --setenv HOME /home/u --chdir /var/tmp/flocks/work --unshare-pid \
             --unshare-ipc --unshare-uts --unshare-cgroup-try --unshare-net \
             --die-with-parent --new-session --cap-drop ALL -- git status"
        );
        s.network = SandboxNetwork::Host;
        s.interactive = true;
        let a = words(&s.prefix());
        assert!(!a.contains(&"--unshare-net".to_string()), "{a:?}");
        assert!(!a.contains(&"--new-session".to_string()), "{a:?}");
        assert_eq!(a.last().map(String::as_str), Some("--"));
    }

    #[test]
    fn shows_follows_the_last_mount_above_a_path() {
        let s = sandbox(vec![
            Mount::Tmpfs("/home".into()),
            Mount::ReadWrite {
                src: "/state/t1/home".into(),
                dest: "/home/u".into(),
            },
            Mount::ReadOnly {
                src: "/home/u/.cargo".into(),
                dest: "/home/u/.cargo".into(),
            },
            Mount::Tmpfs("/home/u/.cargo/registry/secret".into()),
        ]);
        assert!(s.shows(Path::new("/usr/bin/git")));
        assert!(!s.shows(Path::new("/home/v/notes")));
        // The private home is another directory at the same path.
        assert!(!s.shows(Path::new("/home/u/.bashrc")));
        assert!(s.shows(Path::new("/home/u/.cargo/bin/cargo")));
        assert!(!s.shows(Path::new("/home/u/.cargo/registry/secret/x")));
        // A path component, not a string prefix.
        assert!(!s.shows(Path::new("/home/u/.cargox")));
    }
}
