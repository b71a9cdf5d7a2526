//! A best-of task's judging: judgements, their verdicts and who judged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A best-of task's judging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BestOf {
    /// Judgements that found no survivor (what `max_retries` counts for it).
    #[serde(default)]
    pub failed_rounds: u32,
    /// The last judgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// Which variant won, how, and why; the others' verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Judgement {
    /// The winning variant's k; None: no variant survived.
    #[serde(default)]
    pub winner: Option<u32>,
    pub by: JudgedBy,
    /// Why the winner won (or why none did).
    pub reason: String,
    /// Every variant, the winner first, then in rank order.
    #[serde(default)]
    pub ranking: Vec<Verdict>,
    pub at: DateTime<Utc>,
    /// Something the user should know (a judge answer that could not be used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// What the judge agent cost.
    #[serde(default)]
    pub judge_cost_usd: f64,
}

/// Who picked the winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum JudgedBy {
    /// Validation, then the smallest change, then the lowest cost.
    Ranking,
    /// The judge agent (`[best_of] judge = true`).
    Judge,
    /// `flocks pick`.
    Pick,
}

impl JudgedBy {
    pub fn label(self) -> &'static str {
        match self {
            JudgedBy::Ranking => "ranking",
            JudgedBy::Judge => "judge",
            JudgedBy::Pick => "pick",
        }
    }
}

/// One variant's place in a judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Verdict {
    pub variant: u32,
    pub outcome: VerdictOutcome,
    pub reason: String,
    /// Lines added + removed by its work (variants that succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    #[serde(default)]
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerdictOutcome {
    Winner,
    /// Passed validation, ranked below the winner.
    Passed,
    FailedValidation,
    /// The variant's agent did not succeed.
    Failed,
}

impl VerdictOutcome {
    pub fn label(self) -> &'static str {
        match self {
            VerdictOutcome::Winner => "winner",
            VerdictOutcome::Passed => "passed",
            VerdictOutcome::FailedValidation => "failed validation",
            VerdictOutcome::Failed => "failed",
        }
    }
}
