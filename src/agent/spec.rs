//! What starts an agent: its argv (never a shell string), its environment and
//! its prompt (on stdin).

use crate::config::{AgentConfig, Config, CredentialKind, PoolConfig};

/// Inherited variables that would override an injected credential. claude
/// prefers an API key over an OAuth token, so a leftover key would bill every run.
pub const SCRUBBED_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
];

/// The attempt tag's variable (it lives with the process tree it finds).
pub use crate::proc::TAG_VAR;

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

#[derive(Debug, Clone)]
pub struct AgentSpec {
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
pub fn agent_args(
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

pub struct SpecInput<'a> {
    pub config: &'a Config,
    pub pool: &'a PoolConfig,
    pub credential: Option<&'a Injected>,
    pub task_id: &'a str,
    pub prompt: String,
    pub tag: String,
    pub resume: Option<&'a str>,
}

pub fn build(input: SpecInput) -> AgentSpec {
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
        remove_env.push(crate::proxy::BASE_URL_VAR.to_string());
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
