//! How an attempt ended (`Outcome`) and what it recorded: its result, usage,
//! tokens and pending jobs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed {
        reason: String,
    },
    TimedOut,
    Stalled,
    Interrupted,
    SpawnFailed {
        reason: String,
    },
    RateLimited {
        #[serde(default)]
        credential: Option<String>,
        #[serde(default)]
        resets_at: Option<DateTime<Utc>>,
    },
    Overloaded,
    CredentialRejected {
        #[serde(default)]
        credential: Option<String>,
        reason: String,
    },
    HostLost {
        reason: String,
    },
    /// The worktree could not be set up (`.worktreeinclude` or `[workspace]
    /// setup`): the agent did not start.
    SetupFailed {
        /// The setup command that failed, or `.worktreeinclude`.
        command: String,
        reason: String,
        /// Its last lines of output (redacted).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        output: Vec<String>,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Stalled => "stalled",
            Outcome::Interrupted => "interrupted",
            Outcome::SpawnFailed { .. } => "spawn failed",
            Outcome::RateLimited { .. } => "rate limited",
            Outcome::Overloaded => "overloaded",
            Outcome::CredentialRejected { .. } => "credential rejected",
            Outcome::HostLost { .. } => "host lost",
            Outcome::SetupFailed { .. } => "setup failed",
        }
    }

    /// Does this outcome use one of the task's `max_retries`?
    pub fn counts_against_retries(&self) -> bool {
        match self {
            Outcome::Failed { .. }
            | Outcome::TimedOut
            | Outcome::Stalled
            | Outcome::SetupFailed { .. } => true,
            Outcome::Success
            | Outcome::Interrupted
            | Outcome::SpawnFailed { .. }
            | Outcome::RateLimited { .. }
            | Outcome::Overloaded
            | Outcome::CredentialRejected { .. }
            | Outcome::HostLost { .. } => false,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Success => "succeeded".into(),
            Outcome::Failed { reason } => format!("failed: {reason}"),
            Outcome::TimedOut => "timed out (agent_timeout_secs)".into(),
            Outcome::Stalled => "stalled: no output for stall_timeout_secs".into(),
            Outcome::Interrupted => "interrupted".into(),
            Outcome::SpawnFailed { reason } => format!("could not start: {reason}"),
            Outcome::RateLimited {
                credential,
                resets_at,
            } => {
                let mut s = "rate limited".to_string();
                if let Some(c) = credential {
                    s.push_str(&format!(" (credential {c})"));
                }
                if let Some(t) = resets_at {
                    s.push_str(&format!(
                        ", resets at {}",
                        t.format("%Y-%m-%d %H:%M:%S UTC")
                    ));
                }
                s
            }
            Outcome::Overloaded => "API overloaded (529)".into(),
            Outcome::CredentialRejected { credential, reason } => match credential {
                Some(c) => format!("credential {c} rejected: {reason}"),
                None => format!("credential rejected: {reason}"),
            },
            Outcome::HostLost { reason } => format!("host lost: {reason}"),
            Outcome::SetupFailed {
                command,
                reason,
                output,
            } => {
                let mut s = format!("setup failed: `{command}`: {reason}");
                if let Some(last) = output.iter().rev().find(|l| !l.trim().is_empty()) {
                    s.push_str(&format!(" (last output: {})", last.trim()));
                }
                s
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Attempt {
    pub number: u32,
    pub pool: String,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(deserialize_with = "super::stamp::read")]
    pub started_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "super::stamp::read_option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// The branch tip when the attempt started (history only: the task's
    /// work is `origin..tip`, see [`TaskRecord::origin`]).
    #[serde(default)]
    pub start_commit: Option<String>,
    /// The branch tip when it ended (after flocks committed leftovers).
    #[serde(default)]
    pub end_tip: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// The session this attempt resumed, if it did.
    #[serde(default)]
    pub resumed_from: Option<String>,
    #[serde(default, deserialize_with = "super::tagged::read_outcome_option")]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub result: Option<ResultInfo>,
    /// flocks committed changes the agent left uncommitted.
    #[serde(default)]
    pub leftovers_committed: bool,
    /// The `FLOCKS_ATTEMPT` tag in the agent's environment.
    pub tag: String,
    /// The hash of the task's prompt this attempt was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hash: Option<String>,
    /// Tokens and their cost as flocks' proxy read them from the API's
    /// answers, live while the attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Box<Usage>>,
    /// Connections `[network] allow` refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_denied: u32,
    /// Seconds the attempt waited in its pool's scheduler before its job
    /// ran (Slurm pools), counted apart from its run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_secs: Option<f64>,
    /// The scheduler's job that ran the attempt (Slurm pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<Job>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What an attempt's answers used, summed as flocks' proxy read them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Usage {
    /// Answers read.
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// What they cost by the proxy's price table (the manual lists it: docs/src/threat-model/proxy.md).
    pub cost_usd: f64,
    /// A model the price table does not know: its tokens are counted, not priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_model: Option<String>,
}

/// A scheduler's job (Slurm): one per attempt of a Slurm pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Job {
    /// The scheduler's job id.
    pub id: String,
    /// As the scheduler says: `PENDING`, `RUNNING`, then how it ended
    /// (`COMPLETED`, `CANCELLED`, `NODE_FAIL`, `PREEMPTED`, ...).
    pub state: String,
    /// Why it waits (`Priority`, `Resources`, `QOSMaxJobsPerUserLimit`, ...),
    /// while it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The node it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Its run time, from its start to its end (once it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_secs: Option<f64>,
}

impl Job {
    /// It waits in the scheduler's queue.
    pub fn is_pending(&self) -> bool {
        self.state == "PENDING"
    }

    /// "pending in Slurm: Priority (job 123)", "Slurm job 123 runs on
    /// node7", "Slurm job 123 ended CANCELLED".
    pub fn describe(&self) -> String {
        match self.state.as_str() {
            "PENDING" => {
                let reason = self.reason.as_deref().unwrap_or("queued");
                format!("pending in Slurm: {reason} (job {})", self.id)
            }
            "RUNNING" => match &self.node {
                Some(n) => format!("Slurm job {} runs on {n}", self.id),
                None => format!("Slurm job {} runs", self.id),
            },
            state => format!("Slurm job {} ended {state}", self.id),
        }
    }
}

impl Attempt {
    /// How long it has waited, or waited, for its scheduler (None: it did
    /// not wait for one).
    pub fn pending_at(&self, now: DateTime<Utc>) -> Option<f64> {
        if let Some(p) = self.pending_secs {
            return Some(p);
        }
        let job = self.job.as_ref()?;
        let until = match job.started_at {
            Some(t) => t,
            None if job.is_pending() && self.ended_at.is_none() => now,
            None => self.ended_at?,
        };
        Some(((until - self.started_at).num_milliseconds().max(0)) as f64 / 1000.0)
    }

    /// The result's `total_cost_usd` when the agent reported one; else what
    /// the proxy priced its answers at (live while it runs); else 0.
    pub fn cost(&self) -> f64 {
        self.result
            .as_ref()
            .and_then(|r| r.total_cost_usd)
            .or_else(|| self.usage.as_ref().map(|u| u.cost_usd))
            .unwrap_or(0.0)
    }

    /// The connections `[network] allow` refused in this attempt.
    pub fn denied(&self) -> u64 {
        u64::from(self.egress_denied)
    }

    pub fn turns(&self) -> u64 {
        self.result.as_ref().and_then(|r| r.num_turns).unwrap_or(0)
    }
}

/// What the agent's result object said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ResultInfo {
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub num_turns: Option<u64>,
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The result text (cut to a few KB).
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub api_error_status: Option<serde_json::Value>,
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// The result's `usage`: tokens the attempt used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Tokens>,
}

/// Tokens, as the result's `usage` counts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Tokens {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}
