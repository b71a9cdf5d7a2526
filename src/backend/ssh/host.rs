//! One host of a pool: connected on first use, its `[[pool]] setup` run once
//! per content.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{OP_LIMIT, SshError, Target, conn};
use crate::backend::helper::session::{self, CallError, Known};
use crate::config::CommandSpec;

/// One host of a pool, connected on first use.
pub(crate) struct Host {
    pub target: Target,
    /// The absolute remote dir once the helper is installed and setup ran.
    pub(super) ready: OnceCell<Result<String, SshError>>,
    pub(super) running: AtomicUsize,
    /// Serializes git ref and worktree changes in the host's mirror.
    pub(super) admin: tokio::sync::Mutex<()>,
    /// Commits the host's mirror is known to have.
    pub(super) known: Known,
    /// The reverse forward to flocks' proxy on this host: the multiplexing
    /// master that holds it (pid) and the host's loopback port.
    pub(super) forward: tokio::sync::Mutex<Option<(u32, u16)>>,
}

impl Host {
    pub(crate) fn new(target: Target) -> Host {
        Host {
            target,
            ready: OnceCell::new(),
            running: AtomicUsize::new(0),
            admin: tokio::sync::Mutex::new(()),
            known: Known::default(),
            forward: tokio::sync::Mutex::new(None),
        }
    }

    /// Install the helper, make the mirror, run `setup` once per host.
    pub(crate) async fn connect(&self, setup: &[CommandSpec]) -> Result<String, SshError> {
        self.ready
            .get_or_init(|| connect(&self.target, setup))
            .await
            .clone()
    }

    pub(super) fn down(&self) -> Option<String> {
        match self.ready.get() {
            Some(Err(SshError::Unreachable(m))) => Some(m.clone()),
            // Not tried yet, connected, or up but its setup failed.
            None | Some(Ok(_)) | Some(Err(SshError::Failed(_))) => None,
        }
    }
}

/// What `setup` hashes to: the marker under `remote_dir` says it ran.
pub(crate) fn setup_hash(setup: &[CommandSpec]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in setup {
        h.update(serde_json::to_string(c).unwrap_or_default());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// Connect one host: helper, mirror, setup. Returns the absolute remote dir.
pub(crate) async fn connect(t: &Target, setup: &[CommandSpec]) -> Result<String, SshError> {
    t.install_helper().await?;
    let hash = setup_hash(setup);
    let root = session::init(t, &hash).await.map_err(|e| match e {
        CallError::Lost(m) => SshError::Unreachable(m),
        e => SshError::Failed(format!("host {}: {e}", t.host)),
    })?;
    if !setup.is_empty() && !root.setup_done {
        run_setup(t, setup, &hash).await?;
    }
    Ok(root.root)
}

/// Run the pool's `setup` commands (the user's own config) in `remote_dir`,
/// then record that they ran.
pub(super) async fn run_setup(
    t: &Target,
    setup: &[CommandSpec],
    hash: &str,
) -> Result<(), SshError> {
    let d = t.remote_dir_word();
    for c in setup {
        let cmd = match c {
            CommandSpec::Shell(s) => format!("cd {d} && sh -c {}", conn::sh_quote(s)),
            CommandSpec::Argv(v) => format!(
                "cd {d} && {}",
                v.iter()
                    .map(|w| conn::sh_quote(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        t.output(&cmd, b"", Duration::from_secs(3600))
            .await
            .map_err(|e| match e {
                SshError::Failed(m) => SshError::Failed(format!("setup command `{c}` failed {m}")),
                other => other,
            })?;
    }
    t.output(
        &format!("printf '%s\\n' {hash} >{d}/setup.done"),
        b"",
        OP_LIMIT,
    )
    .await
    .map(|_| ())
}
