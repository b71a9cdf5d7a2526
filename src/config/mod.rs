//! flocks.toml: the validated configuration and where to find it.
//!
//! `parse` turns the TOML text into these types; every check that can name a
//! line happens there. What is here is what the rest of flocks relies on.

mod command;
mod network;
mod parse;
mod toml_error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use command::CommandSpec;
pub use network::{DEFAULT_UPSTREAM, HostPattern, NetworkConfig, ProxyConfig, check_upstream};
pub(crate) use parse::remote_name_ok;
pub(crate) use resolve_from as resolve_path;

use crate::error::{Context, Error, Result};

pub(crate) const FILE_NAME: &str = "flocks.toml";

/// A gigabyte as `min_free_disk_gb` counts it (GiB, as `df -h` shows).
pub const GIB: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct Config {
    /// The flocks.toml this was read from.
    pub path: PathBuf,
    /// Its directory: `.flocks/` lives here and relative paths start here.
    pub dir: PathBuf,
    pub max_agents: usize,
    pub stagger_delay: Duration,
    pub agent_timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub stall_timeout: Option<Duration>,
    pub max_turns: Option<u32>,
    pub max_retries: u32,
    pub max_cost_usd: Option<f64>,
    /// Below this much free space on the worktrees' filesystem (bytes), no
    /// new agent starts; dispatch resumes when space comes back.
    pub min_free_disk: Option<u64>,
    /// The credential ramp's step: after a credential is parked or retired,
    /// each other credential may run at most 1, then 2, 4, ... agents more
    /// than it ran then, a step each. Zero: no ramp.
    pub credential_ramp: Duration,
    pub agent: AgentConfig,
    pub credentials: Vec<CredentialConfig>,
    pub pools: Vec<PoolConfig>,
    pub source: Option<SourceConfig>,
    pub workspace: WorkspaceConfig,
    pub prompt_template: Option<PathBuf>,
    /// `[prompt] plan_template`: the prompt of `flocks plan` (built in when unset).
    pub plan_template: Option<PathBuf>,
    pub validate: ValidateConfig,
    /// `[[notify]]`: where to tell people what happened.
    pub notify: Vec<NotifyConfig>,
    pub land: LandConfig,
    /// `best_of` / `[best_of]`: variants per task and how they are judged.
    pub best_of: BestOfConfig,
    /// `[[variants]]`: how the variants of a best-of task differ, used in turn.
    pub variants: Vec<VariantConfig>,
    /// `[sandbox]`: what the agents of `sandbox = "bwrap"` pools see.
    pub sandbox: SandboxConfig,
    /// `[proxy]`: flocks' model proxy (upstream, listen address).
    pub proxy: ProxyConfig,
    /// `[network]`: the agents' egress allowlist; None: open.
    pub network: Option<NetworkConfig>,
}

/// `sandbox` on a local pool: what its agents run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// On this machine as flocks runs (the default): a convenience, not a boundary.
    #[default]
    None,
    /// In a bubblewrap sandbox of its own per attempt (`backend/bwrap/`).
    Bwrap,
}

impl SandboxMode {
    pub fn parse(s: &str) -> Option<SandboxMode> {
        match s {
            "none" => Some(SandboxMode::None),
            "bwrap" => Some(SandboxMode::Bwrap),
            _ => None,
        }
    }
}

/// `[sandbox]`: what a sandboxed agent sees beyond its own workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// `read`: host paths bound read-only where they are (absolute,
    /// lexically clean), even where the sandbox hides (a toolchain in the
    /// home directory).
    pub read: Vec<PathBuf>,
    pub network: SandboxNetwork,
}

/// `[sandbox] network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxNetwork {
    /// A network namespace of its own whose only way out is flocks' proxy,
    /// forwarded in when the run has one (a flocks credential, `[network]`);
    /// without one, no network at all (the default).
    #[default]
    Proxy,
    /// A network namespace of its own with only a loopback device: not even
    /// flocks' proxy.
    None,
    /// The host's network.
    Host,
}

impl SandboxNetwork {
    pub fn parse(s: &str) -> Option<SandboxNetwork> {
        match s {
            "proxy" => Some(SandboxNetwork::Proxy),
            "none" => Some(SandboxNetwork::None),
            "host" => Some(SandboxNetwork::Host),
            _ => None,
        }
    }

    /// Its own network namespace (`--unshare-net`).
    pub fn private(self) -> bool {
        self != SandboxNetwork::Host
    }
}

/// `[land]`.
#[derive(Debug, Clone, Default)]
pub struct LandConfig {
    pub redo_conflicts: RedoConflicts,
    /// `[land] push`: the remote every land pushes the target to (as
    /// `--push` does); None: the target moves only here.
    pub push: Option<String>,
    /// `[land] after_push`: commands run after a push, as a check of it
    /// (their failure is reported; the push stands).
    pub after_push: Vec<CommandSpec>,
}

/// `[land] redo_conflicts`: when a task predicted to conflict is redone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedoConflicts {
    /// By `flocks land --resolve` (the default).
    #[default]
    AtLand,
    /// With `--supervise`: as soon as the conflict is predicted, during the run.
    Early,
}

impl RedoConflicts {
    pub fn parse(s: &str) -> Option<RedoConflicts> {
        match s {
            "at_land" => Some(RedoConflicts::AtLand),
            "early" => Some(RedoConflicts::Early),
            _ => None,
        }
    }
}

/// `best_of = N`, or `[best_of]` with `n` and `judge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BestOfConfig {
    /// Variants of every task whose line has no `best_of` (1: no variants).
    pub n: u32,
    /// A judge agent picks among the variants that passed validation.
    pub judge: bool,
}

impl Default for BestOfConfig {
    fn default() -> Self {
        BestOfConfig { n: 1, judge: false }
    }
}

/// Most variants a task may have.
pub const MAX_BEST_OF: u32 = 10;

/// One `[[variants]]` table: what variant k (1-based, in turn) changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariantConfig {
    /// Instead of `[agent] model`.
    pub model: Option<String>,
    /// Appended to `[agent] args`.
    pub args: Vec<String>,
    /// Appended to the rendered prompt (after a blank line).
    pub prompt_suffix: Option<String>,
}

impl Config {
    /// The `[[variants]]` table of variant `k` (1-based), used in turn.
    pub fn variant(&self, k: u32) -> Option<&VariantConfig> {
        if self.variants.is_empty() {
            return None;
        }
        let i = (k.max(1) as usize - 1) % self.variants.len();
        self.variants.get(i)
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub command: String,
    pub args: Vec<String>,
    pub model: Option<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Injected as `CLAUDE_CODE_OAUTH_TOKEN`.
    Oauth,
    /// Injected as `ANTHROPIC_API_KEY`.
    ApiKey,
}

impl CredentialKind {
    pub fn target_var(self) -> &'static str {
        match self {
            CredentialKind::Oauth => "CLAUDE_CODE_OAUTH_TOKEN",
            CredentialKind::ApiKey => "ANTHROPIC_API_KEY",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CredentialConfig {
    pub name: String,
    /// The host environment variable that holds the secret.
    pub env: String,
    pub kind: CredentialKind,
    /// Agents on this credential at once (None: as many as the pools allow).
    pub max_concurrent: Option<usize>,
    /// What this credential may spend in one run; reached, it is retired
    /// for the rest of the run.
    pub max_cost_usd: Option<f64>,
}

/// Which credential a pool's agents get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChoice {
    /// Inject nothing: the environment's own login stands.
    Default,
    /// One named credential.
    Named(String),
    /// Draw from every credential that is not parked.
    Rotate,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub max_worktrees: usize,
    pub credential: CredentialChoice,
    pub env: BTreeMap<String, String>,
    pub backend: BackendConfig,
    /// `sandbox` (local pools only; `None` elsewhere).
    pub sandbox: SandboxMode,
}

impl PoolConfig {
    /// Whether `[network] allow` binds this pool's agents: they have no way
    /// out but flocks' proxy (a bwrap sandbox with a network of its own,
    /// `sandbox`'s `network` as given). Not so for agents that share a
    /// network (advisory: they get the proxy variables and may ignore them).
    pub fn egress_enforced(&self, sandbox: SandboxNetwork) -> bool {
        match &self.backend {
            BackendConfig::Local => self.sandbox == SandboxMode::Bwrap && sandbox.private(),
            // A clone-mode container with no network: `network = "none"`,
            // or one `flocks up` makes from `image` (it has none under
            // `[network]`). The docker backend refuses a container that has one.
            BackendConfig::Docker(d) => {
                d.workspace == WorkspaceMode::Clone
                    && match d.network.as_deref() {
                        Some(n) => n == "none",
                        None => d.image.is_some(),
                    }
            }
            // A devcontainer's own network, a remote host's.
            BackendConfig::Ssh(_) | BackendConfig::Exedev(_) | BackendConfig::Slurm(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Local,
    Docker(DockerConfig),
    Ssh(SshConfig),
    Exedev(ExedevConfig),
    Slurm(SlurmConfig),
}

impl BackendConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Local => "local",
            BackendConfig::Docker(_) => "docker",
            BackendConfig::Ssh(_) => "ssh",
            BackendConfig::Exedev(_) => "exedev",
            BackendConfig::Slurm(_) => "slurm",
        }
    }
}

/// `workspace`: where a docker pool's agents work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspaceMode {
    /// A repository of its own inside the container, under `clone_dir`,
    /// filled and emptied over git (the default).
    #[default]
    Clone,
    /// The task's worktree on the host, seen through the repo's mount.
    Mount,
}

impl WorkspaceMode {
    pub fn parse(s: &str) -> Option<WorkspaceMode> {
        match s {
            "clone" => Some(WorkspaceMode::Clone),
            "mount" => Some(WorkspaceMode::Mount),
            _ => None,
        }
    }
}

/// `clone_dir`'s default: in the container, one directory per project under it.
pub const DEFAULT_CLONE_DIR: &str = "/var/tmp/flocks";

#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// A container name or id.
    pub container: Option<String>,
    /// Find the running container whose `devcontainer.local_folder` label is this folder.
    pub project: Option<PathBuf>,
    pub workspace_mount: Option<String>,
    pub user: Option<String>,
    /// Agents may run as root in the container (`user` root, or a repo
    /// that root owns): root there can kill flocks' reaper.
    pub allow_root: bool,
    pub image: Option<String>,
    pub mounts: Vec<String>,
    pub network: Option<String>,
    /// `workspace`: clone (default) or mount.
    pub workspace: WorkspaceMode,
    /// `clone_dir`: where clone-mode repositories live in the container
    /// (None: [`DEFAULT_CLONE_DIR`]).
    pub clone_dir: Option<String>,
    /// `max_fetch_mb`: the intake's cap on what comes back (None: 500).
    pub max_fetch_mb: Option<u64>,
}

impl DockerConfig {
    /// Where clone-mode repositories live in the container.
    pub fn clone_dir(&self) -> &str {
        self.clone_dir.as_deref().unwrap_or(DEFAULT_CLONE_DIR)
    }

    /// The intake's cap, in bytes.
    pub fn max_fetch_bytes(&self) -> u64 {
        self.max_fetch_mb
            .unwrap_or(crate::git::intake::DEFAULT_MAX_FETCH_MB)
            << 20
    }
}

/// What to do about a root exec user, said wherever one is refused.
pub const ROOT_REFUSED: &str = "agents would run as uid 0 in the container, where they can kill flocks' reaper and so outlive their attempt. Set `user` on the pool to an unprivileged user (`user = \"1000:1000\"`, or a name), or, if root is what you want, `allow_root = true` (and accept that an agent can stop the reaper)";

/// Whether a docker exec user names root: `root`, `0`, `root:<group>`,
/// `0:<group>` (a name that maps to uid 0 in the container is found when the
/// container is: see the docker backend).
pub fn names_root(user: &str) -> bool {
    let who = user.split(':').next().unwrap_or(user).trim();
    who == "root" || who.trim_start_matches('0').is_empty() && !who.is_empty()
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    pub host: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub ssh_options: Vec<String>,
    pub remote_dir: String,
    pub setup: Vec<CommandSpec>,
}

#[derive(Debug, Clone)]
pub struct ExedevConfig {
    pub count: usize,
    pub lobby: String,
    pub identity_file: Option<PathBuf>,
    pub ssh_options: Vec<String>,
    pub remote_dir: String,
    pub setup: Vec<CommandSpec>,
}

/// A `backend = "slurm"` pool: each attempt is one job of the cluster's
/// scheduler (flocks runs on the login node).
#[derive(Debug, Clone, Default)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// More options for each job's allocation, as argv (`["--mem=8G"]`).
    pub sbatch_args: Vec<String>,
    /// On the cluster's shared filesystem, as written (`~` and `$VAR` are
    /// expanded on the login node).
    pub remote_dir: String,
    /// Run once (per `remote_dir`) in a job before the pool's first attempt.
    pub setup: Vec<CommandSpec>,
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Jsonl { path: PathBuf },
    Script { command: CommandSpec },
}

#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// The git repository (absolute).
    pub repo: PathBuf,
    pub branch_prefix: String,
    pub land_target: String,
    pub base: String,
    /// `[workspace] setup`: run in a worktree before its first agent, where
    /// the agent runs.
    pub setup: Vec<CommandSpec>,
    /// `setup_timeout_secs`: bounds all the setup commands together.
    pub setup_timeout: Option<Duration>,
    /// `setup_on_reuse`: run the setup again in a worktree that had it.
    pub setup_on_reuse: bool,
    /// Spare worktrees kept for reuse at most (None: no cap; the oldest go first).
    pub max_spare_worktrees: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// A docker pool whose container runs the commands (at the land
    /// worktree's path there); None: on this host.
    pub pool: Option<String>,
    pub commands: Vec<CommandSpec>,
    pub timeout: Option<Duration>,
}

/// Every event kind, as events.jsonl's `event` field spells it: what
/// `[[notify]] on` may name. `report::Event` has exactly these variants
/// (tested there).
pub(crate) const EVENT_KINDS: &[&str] = &[
    "run_started",
    "notice",
    "queued",
    "started",
    "job",
    "stalled",
    "activity",
    "finished",
    "requeued",
    "blocked",
    "credential_parked",
    "credential_disabled",
    "waiting",
    "conflict_predicted",
    "variant_judged",
    "landed",
    "run_finished",
    "needs_attention",
    "usage",
    "egress_denied",
    "upkeep",
];

/// One `[[notify]]` table.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// 1-based, in file order: messages call it `notify #N`.
    pub number: usize,
    /// The event kinds it is sent (`EVENT_KINDS`, never `activity`).
    pub on: Vec<String>,
    pub target: NotifyTarget,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// At most one message per this long; events in between are coalesced.
    pub coalesce: Duration,
}

#[derive(Debug, Clone)]
pub enum NotifyTarget {
    /// argv (no shell), the message's JSON on stdin.
    Command { argv: Vec<String> },
    /// An HTTP POST.
    Webhook {
        url: String,
        format: WebhookFormat,
        headers: Vec<HeaderFromEnv>,
    },
}

impl NotifyTarget {
    /// How messages name it: the program, or the webhook's host (a webhook's
    /// path or user part may be a secret: Slack's are).
    pub fn describe(&self) -> String {
        match self {
            NotifyTarget::Command { argv } => format!("command {}", argv[0]),
            NotifyTarget::Webhook { url, .. } => {
                let host = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                format!("webhook to {host}")
            }
        }
    }
}

/// A header whose value is read from the environment when a notifier starts.
#[derive(Debug, Clone)]
pub struct HeaderFromEnv {
    pub name: String,
    /// The environment variable that holds the value.
    pub env: String,
    /// Its line in flocks.toml, for the error when the variable is not set.
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event's JSON, as in events.jsonl.
    Json,
    /// `{"text": "..."}`, as Slack's incoming webhooks take.
    Slack,
    /// A plain text body (ntfy and similar services).
    Text,
}

impl Config {
    /// Find flocks.toml (`explicit`, or walking up from `start`) and load it.
    pub fn discover(explicit: Option<&Path>, start: &Path) -> Result<Config> {
        let path = match explicit {
            Some(p) => {
                if !p.is_file() {
                    return Err(Error::Usage(format!(
                        "no config file at {p}: check the --config path, or write one there with `flocks init --config {p}`",
                        p = p.display()
                    )));
                }
                p.to_path_buf()
            }
            None => find_upwards(start).ok_or_else(|| {
                Error::Usage(format!(
                    "no {FILE_NAME} found in {} or any parent directory: run `flocks init` at the top of your repository to write one, or pass --config PATH",
                    start.display()
                ))
            })?,
        };
        Config::load(&path)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let path = std::path::absolute(path).ctx(|| format!("resolve {}", path.display()))?;
        let text = std::fs::read_to_string(&path).ctx(|| format!("read {}", path.display()))?;
        parse::parse(&path, &text)
    }

    /// The environment variables that hold secrets flocks itself uses: the
    /// credentials' and the webhook headers' (`[[notify]] headers_env`).
    /// None reaches an agent, a setup or a validate command.
    pub fn secret_vars(&self) -> Vec<String> {
        let mut vars: Vec<String> = self.credentials.iter().map(|c| c.env.clone()).collect();
        vars.extend(self.header_vars().map(str::to_string));
        vars
    }

    /// The variables `[[notify]] headers_env` reads header values from.
    pub fn header_vars(&self) -> impl Iterator<Item = &str> {
        self.notify.iter().flat_map(|n| match &n.target {
            NotifyTarget::Webhook { headers, .. } => {
                headers.iter().map(|h| h.env.as_str()).collect()
            }
            NotifyTarget::Command { .. } => Vec::new(),
        })
    }

    /// A config from `text`, as if read at `path` (the trust check reads
    /// the text it trusted).
    pub(crate) fn parse_text(path: &Path, text: &str) -> Result<Config> {
        parse::parse(path, text)
    }

    /// Directory of flocks' own files: `.flocks/` next to flocks.toml.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(".flocks")
    }

    /// Directory of the task worktrees: `.worktrees/` at the repo root, so that a
    /// container that mounts the repo sees them.
    pub fn worktrees_dir(&self) -> PathBuf {
        self.workspace.repo.join(".worktrees")
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Resolve a path from the config relative to its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_from(&self.dir, p)
    }
}

pub(crate) fn resolve_from(dir: &Path, p: &Path) -> PathBuf {
    let expanded = expand_tilde(p);
    if expanded.is_absolute() {
        expanded
    } else {
        dir.join(expanded)
    }
}

pub(crate) fn expand_tilde(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    p.to_path_buf()
}

fn find_upwards(start: &Path) -> Option<PathBuf> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        let candidate = d.join(FILE_NAME);
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent();
    }
    None
}
