//! What a task's planning reads of its record: a task whose record still
//! says the same is not planned again.

use chrono::{DateTime, Utc};

use crate::state::TaskRecord;

/// What planning a task reads of its record: a task whose record still
/// says the same is not planned again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Key {
    branch: String,
    origin: Option<String>,
    attempt: Option<u32>,
    end_tip: Option<String>,
    ended_at: Option<DateTime<Utc>>,
    depends_on: Vec<String>,
}

impl Key {
    pub(super) fn of(t: &TaskRecord) -> Key {
        let a = t.successful_attempt();
        Key {
            branch: t.branch.clone(),
            origin: t.origin_commit(),
            attempt: a.map(|a| a.number),
            end_tip: a.and_then(|a| a.end_tip.clone()),
            ended_at: a.and_then(|a| a.ended_at),
            depends_on: t.depends_on.clone(),
        }
    }

    /// Does `t` still say the same? Allocates nothing for a record that
    /// names its origin.
    pub(super) fn matches(&self, t: &TaskRecord) -> bool {
        let a = t.successful_attempt();
        self.branch == t.branch
            && self.attempt == a.map(|a| a.number)
            && self.end_tip.as_deref() == a.and_then(|a| a.end_tip.as_deref())
            && self.ended_at == a.and_then(|a| a.ended_at)
            && self.depends_on == t.depends_on
            && same_origin(t, self.origin.as_deref())
    }
}

/// Is `t.origin_commit()` `want`?
fn same_origin(t: &TaskRecord, want: Option<&str>) -> bool {
    if let Some(w) = t.winner() {
        return same_origin(w, want);
    }
    match &t.origin {
        Some(o) => Some(o.as_str()) == want,
        None => t.origin_commit().as_deref() == want,
    }
}
