//! What starts an agent: its argv (never a shell string), its environment and
//! its prompt (on stdin).

use crate::config::{AgentConfig, Config, CredentialKind, PoolConfig};
use crate::proc::TAG_VAR;

/// Inherited variables that would override an injected credential. claude
/// prefers an API key over an OAuth token, so a leftover key would bill every run.
pub(crate) const SCRUBBED_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// The variable that points claude at the model API (flocks' proxy, for an
/// agent given a `[[credentials]]` credential).
pub(crate) const BASE_URL_VAR: &str = "ANTHROPIC_BASE_URL";

/// Git settings every agent runs with, set through its environment
/// (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`), never in
/// the user's config: repository upkeep is flocks' job (`git::upkeep`), so
/// an agent's `git commit` never stops to gc or waits on `packed-refs.lock`.
pub(crate) const AGENT_GIT_CONFIG: &[(&str, &str)] =
    &[("gc.auto", "0"), ("maintenance.auto", "false")];

/// Add [`AGENT_GIT_CONFIG`] to an agent's environment `env`, after the
/// `GIT_CONFIG_KEY_n` entries it already carries: those `env` sets when it
/// sets `GIT_CONFIG_COUNT`, else the `inherited` count of the environment it
/// is set on top of (flocks' own for a local or sandboxed agent; a remote
/// backend's `env` sets its own count).
pub(crate) fn add_agent_git_config(env: &mut Vec<(String, String)>, inherited: usize) {
    let count = env
        .iter()
        .rev()
        .find(|(k, _)| k == "GIT_CONFIG_COUNT")
        .map_or(Some(inherited), |(_, v)| v.trim().parse::<usize>().ok())
        // An unreadable count: git refuses it anyway; ours starts a list.
        .unwrap_or(0);
    env.retain(|(k, _)| k != "GIT_CONFIG_COUNT");
    for (i, (key, value)) in AGENT_GIT_CONFIG.iter().enumerate() {
        let n = count + i;
        env.push((format!("GIT_CONFIG_KEY_{n}"), key.to_string()));
        env.push((format!("GIT_CONFIG_VALUE_{n}"), value.to_string()));
    }
    env.push((
        "GIT_CONFIG_COUNT".into(),
        (count + AGENT_GIT_CONFIG.len()).to_string(),
    ));
}

/// The `GIT_CONFIG_COUNT` of flocks' own environment, as a local agent
/// inherits it (0 when `remove_env` removes it).
pub(crate) fn inherited_git_config_count(remove_env: &[String]) -> usize {
    if remove_env.iter().any(|k| k == "GIT_CONFIG_COUNT") {
        return 0;
    }
    std::env::var("GIT_CONFIG_COUNT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A credential chosen for one attempt.
#[derive(Clone)]
pub struct Injected {
    pub name: String,
    pub kind: CredentialKind,
    pub value: String,
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injected")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct AgentSpec {
    /// `[agent] command`: a path or a name on PATH where the agent runs.
    pub program: String,
    pub args: Vec<String>,
    /// Variables flocks sets, on top of the environment where the agent runs.
    pub env: Vec<(String, String)>,
    /// Inherited variables to remove first.
    pub remove_env: Vec<String>,
    pub prompt: String,
    /// The value of `FLOCKS_ATTEMPT`.
    pub tag: String,
    /// The flocks credential this attempt uses: never put in an
    /// environment. The executor hands it to the proxy, which gives the
    /// agent a token for it instead (`proxy::Proxy::admit`).
    pub credential: Option<Injected>,
}

/// claude's flags, then `[agent] args`.
pub(crate) fn agent_args(
    agent: &AgentConfig,
    max_turns: Option<u32>,
    resume: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(n) = max_turns {
        args.push("--max-turns".into());
        args.push(n.to_string());
    }
    if let Some(m) = &agent.model {
        args.push("--model".into());
        args.push(m.clone());
    }
    if let Some(session) = resume {
        args.push(format!("--resume={session}"));
    }
    args.extend(agent.args.iter().cloned());
    args
}

pub(crate) struct SpecInput<'a> {
    pub config: &'a Config,
    pub pool: &'a PoolConfig,
    pub credential: Option<&'a Injected>,
    pub task_id: &'a str,
    pub prompt: String,
    pub tag: String,
    pub resume: Option<&'a str>,
}

pub(crate) fn build(input: SpecInput) -> AgentSpec {
    let SpecInput {
        config,
        pool,
        credential,
        task_id,
        prompt,
        tag,
        resume,
    } = input;
    // Credential source variables (and webhook header secrets) never reach
    // an agent; the inherited Anthropic ones are removed when the pool
    // injects a credential of its own (the proxy's token and URL, set by the
    // executor, take their place).
    let mut remove_env: Vec<String> = config.secret_vars();
    if credential.is_some() {
        remove_env.extend(SCRUBBED_VARS.iter().map(|s| s.to_string()));
        remove_env.push(BASE_URL_VAR.to_string());
    }
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    };
    for (k, v) in &config.agent.env {
        set(k, v);
    }
    for (k, v) in &pool.env {
        set(k, v);
    }
    set("IS_SANDBOX", "1");
    set(TAG_VAR, &tag);
    set("FLOCKS_TASK", task_id);
    AgentSpec {
        program: config.agent.command.clone(),
        args: agent_args(&config.agent, config.max_turns, resume),
        env,
        remove_env,
        prompt,
        tag,
        credential: credential.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn agent_git_config_is_appended_after_what_the_environment_carries() {
        let mut env = pairs(&[("FLOCKS_TASK", "a")]);
        add_agent_git_config(&mut env, 0);
        assert!(env.contains(&("GIT_CONFIG_KEY_0".into(), "gc.auto".into())));
        assert!(env.contains(&("GIT_CONFIG_VALUE_0".into(), "0".into())));
        assert!(env.contains(&("GIT_CONFIG_COUNT".into(), "2".into())));

        // Inherited entries 0 and 1 stay; ours follow.
        let mut env = Vec::new();
        add_agent_git_config(&mut env, 2);
        assert!(env.contains(&("GIT_CONFIG_KEY_2".into(), "gc.auto".into())));
        assert!(env.contains(&("GIT_CONFIG_COUNT".into(), "4".into())));

        // A backend's own count (safe.directory entries) wins over the inherited one.
        let mut env = pairs(&[
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_KEY_0", "safe.directory"),
            ("GIT_CONFIG_VALUE_0", "*"),
        ]);
        add_agent_git_config(&mut env, 5);
        assert!(env.contains(&("GIT_CONFIG_KEY_0".into(), "safe.directory".into())));
        assert!(env.contains(&("GIT_CONFIG_KEY_1".into(), "gc.auto".into())));
        assert!(env.contains(&("GIT_CONFIG_COUNT".into(), "3".into())));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "GIT_CONFIG_COUNT").count(),
            1
        );
    }
}
