//! The tables of flocks.toml as serde reads them, each value with its span
//! (for the line of an error); every key checked by the table modules.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{S, Secs};
use crate::config::CommandSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) max_agents: S<i64>,
    pub(super) stagger_delay_secs: S<Secs>,
    pub(super) agent_timeout_secs: S<Secs>,
    pub(super) kill_grace_secs: S<Secs>,
    pub(super) stall_timeout_secs: S<Secs>,
    pub(super) max_turns: S<i64>,
    pub(super) max_retries: S<i64>,
    pub(super) max_cost_usd: S<f64>,
    pub(super) min_free_disk_gb: S<f64>,
    pub(super) credential_ramp_secs: S<Secs>,
    #[serde(default)]
    pub(super) agent: RawAgent,
    #[serde(default)]
    pub(super) credentials: Vec<RawCredential>,
    #[serde(default)]
    pub(super) containers: Vec<Spanned<RawPool>>,
    pub(super) source: Option<Spanned<RawSource>>,
    #[serde(default)]
    pub(super) workspace: RawWorkspace,
    #[serde(default)]
    pub(super) prompt: RawPrompt,
    #[serde(default)]
    pub(super) validate: RawValidate,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<RawNotify>>,
    #[serde(default)]
    pub(super) land: RawLand,
    pub(super) best_of: S<toml::Value>,
    #[serde(default)]
    pub(super) variants: Vec<Spanned<RawVariant>>,
    #[serde(default)]
    pub(super) sandbox: RawSandbox,
    #[serde(default)]
    pub(super) proxy: RawProxy,
    pub(super) network: Option<Spanned<RawNetwork>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    pub(super) read: S<Vec<Spanned<String>>>,
    pub(super) network: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub(super) upstream: S<String>,
    pub(super) listen: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) allow: S<Vec<Spanned<String>>>,
    pub(super) notify_denied: S<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVariant {
    pub(super) model: S<String>,
    #[serde(default)]
    pub(super) args: Vec<String>,
    pub(super) prompt_suffix: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) on: S<Vec<Spanned<String>>>,
    pub(super) command: S<Vec<String>>,
    pub(super) webhook: S<String>,
    pub(super) format: S<String>,
    pub(super) headers_env: S<BTreeMap<String, Spanned<String>>>,
    pub(super) timeout_secs: S<Secs>,
    pub(super) coalesce_secs: S<Secs>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLand {
    pub(super) redo_conflicts: S<String>,
    pub(super) push: S<String>,
    #[serde(default)]
    pub(super) after_push: Vec<CommandSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) command: S<String>,
    #[serde(default)]
    pub(super) args: Vec<String>,
    pub(super) model: S<String>,
    pub(super) env: S<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) name: Spanned<String>,
    pub(super) env: Spanned<String>,
    pub(super) kind: S<String>,
    pub(super) max_concurrent: S<i64>,
    pub(super) max_cost_usd: S<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: S<String>,
    pub(super) backend: S<String>,
    pub(super) max_worktrees: S<i64>,
    pub(super) credential: S<String>,
    pub(super) env: S<BTreeMap<String, String>>,
    // local
    pub(super) sandbox: S<String>,
    // docker
    pub(super) container: S<String>,
    pub(super) project: S<String>,
    pub(super) kap_project: S<String>,
    pub(super) workspace_mount: S<String>,
    pub(super) user: S<String>,
    pub(super) allow_root: S<bool>,
    pub(super) image: S<String>,
    pub(super) mounts: S<Vec<String>>,
    pub(super) network: S<String>,
    pub(super) workspace: S<String>,
    pub(super) clone_dir: S<String>,
    pub(super) max_fetch_mb: S<i64>,
    // ssh
    pub(super) host: S<String>,
    pub(super) port: S<i64>,
    pub(super) identity_file: S<String>,
    pub(super) ssh_options: S<Vec<String>>,
    pub(super) remote_dir: S<String>,
    pub(super) setup: S<Vec<CommandSpec>>,
    // exedev
    pub(super) count: S<i64>,
    pub(super) lobby: S<String>,
    // slurm
    pub(super) partition: S<String>,
    pub(super) account: S<String>,
    pub(super) qos: S<String>,
    pub(super) sbatch_args: S<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(rename = "type")]
    pub(super) kind: S<String>,
    pub(super) path: S<String>,
    pub(super) command: S<CommandSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkspace {
    pub(super) repo: S<String>,
    pub(super) branch_prefix: S<String>,
    pub(super) land_target: S<String>,
    pub(super) base: S<String>,
    #[serde(default)]
    pub(super) setup: Vec<CommandSpec>,
    pub(super) setup_timeout_secs: S<Secs>,
    pub(super) setup_on_reuse: S<bool>,
    pub(super) max_spare_worktrees: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrompt {
    pub(super) template: S<String>,
    pub(super) plan_template: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidate {
    #[serde(default)]
    pub(super) commands: Vec<CommandSpec>,
    pub(super) timeout_secs: S<Secs>,
    pub(super) pool: S<String>,
}
