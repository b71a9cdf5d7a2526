//! The dispatch rules on the fleet alone: no process, no tokio, no git.
//! One module per rule file; the builder and helpers here.

mod best_of;
mod conflicts;
mod credentials;
mod disk;
mod finished;
mod input;
mod proxied;
mod schedule;
mod stop;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::land::predict::Prediction;
use crate::report::AttentionCause;
use crate::runner::AttemptReport;
use crate::runner::credentials::{Credentials, DEFAULT_LOGIN};
use crate::state::NextAttempt;
use crate::state::{Outcome, PredictedConflict, ResultInfo, State, TaskRecord, TaskStatus};
use crate::tasks::{BranchRules, TaskSet, parse_jsonl};

fn config(edit: impl FnOnce(&mut Config)) -> Arc<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flocks.toml");
    std::fs::write(&path, "max_agents = 8\n").unwrap();
    let mut c = Config::load(&path).unwrap();
    edit(&mut c);
    Arc::new(c)
}

pub(super) fn tasks(lines: &str) -> TaskSet {
    let rules = BranchRules {
        prefix: "flocks/",
        base: "main",
        land_target: "main",
        template_fields: &[],
    };
    parse_jsonl(Path::new("/p/tasks.jsonl"), lines, &rules).unwrap()
}

/// Each task of `set` as a pending record.
pub(super) fn state_for(set: &TaskSet) -> State {
    let mut state = State::default();
    for t in &set.tasks {
        let rec: TaskRecord = serde_json::from_value(serde_json::json!({
            "id": t.id,
            "branch": t.branch,
            "worktree": format!("/p/.worktrees/{}", t.id),
            "prompt_hash": t.prompt_hash(),
            "depends_on": t.depends_on,
            "status": {"state": "pending"},
        }))
        .unwrap();
        state.tasks.push(rec);
    }
    state
}

struct Setup {
    config: Arc<Config>,
    lines: &'static str,
    opts: RunOptions,
    scope: Option<HashSet<String>>,
    /// Credential values by variable (none: from the environment).
    values: Vec<(&'static str, &'static str)>,
}

impl Setup {
    fn new(lines: &'static str) -> Setup {
        Setup {
            config: config(|_| {}),
            lines,
            opts: RunOptions {
                supervise: false,
                max_retries: 2,
                no_wait: false,
                progress: false,
            },
            scope: None,
            values: Vec::new(),
        }
    }

    /// Credentials `names`, each in `$<NAME>_TOKEN` (set), edited by `edit`,
    /// that the only pool rotates through.
    fn credentials(
        mut self,
        names: &[&'static str],
        edit: impl Fn(&mut crate::config::CredentialConfig),
    ) -> Setup {
        let mut c = (*self.config).clone();
        for n in names {
            let mut cred = crate::config::CredentialConfig {
                name: n.to_string(),
                env: format!("{}_TOKEN", n.to_uppercase()),
                kind: crate::config::CredentialKind::Oauth,
                max_concurrent: None,
                max_cost_usd: None,
            };
            edit(&mut cred);
            c.credentials.push(cred);
            self.values.push((n, "secret"));
        }
        c.pools[0].credential = crate::config::CredentialChoice::Rotate;
        self.config = Arc::new(c);
        self
    }

    fn supervise(mut self, max_retries: u32) -> Setup {
        self.opts.supervise = true;
        self.opts.max_retries = max_retries;
        self
    }

    fn config(mut self, edit: impl FnOnce(&mut Config)) -> Setup {
        self.config = config(edit);
        self
    }

    fn build(self) -> Fleet {
        let set = tasks(self.lines);
        let mut state = state_for(&set);
        // Best-of tasks get their variants, as merging the task list does.
        for (t, rec) in set.tasks.iter().zip(state.tasks.iter_mut()) {
            let n = t.best_of.unwrap_or(1);
            let base = rec.clone();
            for k in (1..=n).filter(|_| n > 1) {
                let id = crate::tasks::variant_id(&t.id, k);
                let mut v = base.clone();
                v.branch = crate::tasks::variant_branch(&t.branch, k);
                v.worktree = format!("/p/.worktrees/{id}").into();
                v.id = id;
                rec.variants.push(v);
            }
        }
        state.reindex();
        let pools = self
            .config
            .pools
            .iter()
            .map(|p| PoolSlots {
                name: p.name.clone(),
                slots: p.max_worktrees,
                running: 0,
                down: None,
                host_loss_takes_pool_down: true,
            })
            .collect();
        let values = self.values;
        let creds = if values.is_empty() {
            Credentials::from_env(&self.config)
        } else {
            Credentials::with_values(&self.config, |var| {
                values
                    .iter()
                    .find(|(n, _)| format!("{}_TOKEN", n.to_uppercase()) == var)
                    .map(|(_, v)| v.to_string())
            })
        };
        Fleet::new(FleetParts {
            creds,
            config: self.config,
            state,
            tasks: set,
            scope: self.scope,
            template: None,
            pools,
            opts: self.opts,
            project_key: "test".into(),
        })
    }
}

/// The fleet fed as the dispatcher feeds it: each call is one input
/// through [`Fleet::handle`].
trait Feed {
    fn feed(&mut self, input: Input, now: Now) -> super::input::Step;
    /// The loop's turn: what it started and said.
    fn tick(&mut self, now: Now) -> Vec<Effect> {
        self.feed(Input::Tick, now).effects
    }
    /// The loop's turn: whether the run is over, and what it said.
    fn done(&mut self, now: Now) -> (bool, Vec<Effect>) {
        let step = self.feed(Input::Tick, now);
        (step.done, step.effects)
    }
    fn run_started(&mut self) -> Vec<Effect> {
        self.feed(Input::RunStarted, Now::current()).effects
    }
    fn finished(
        &mut self,
        id: &str,
        attempt: u32,
        report: &AttemptReport,
        now: Now,
    ) -> Vec<Effect> {
        let input = Input::Attempt(crate::runner::RunEvent::Finished {
            task: id.into(),
            attempt,
            report: Box::new(report.clone()),
        });
        self.feed(input, now).effects
    }
    fn job(&mut self, id: &str, attempt: u32, job: crate::state::Job, now: Now) -> Vec<Effect> {
        let input = Input::Attempt(crate::runner::RunEvent::Job {
            task: id.into(),
            attempt,
            job,
        });
        self.feed(input, now).effects
    }
    fn dependency_start(
        &mut self,
        id: &str,
        start: Result<Option<String>, StartError>,
        now: Now,
    ) -> Vec<Effect> {
        let input = Input::DependencyStart {
            task: id.into(),
            start,
        };
        self.feed(input, now).effects
    }
    fn retry_planned(&mut self, id: &str, next: NextAttempt) {
        let input = Input::RetryPlanned {
            task: id.into(),
            next,
        };
        self.feed(input, Now::current());
    }
    fn free_disk(&mut self, free: u64, place: &Path) -> Vec<Effect> {
        let input = Input::FreeDisk {
            free,
            place: place.into(),
        };
        self.feed(input, Now::current()).effects
    }
    fn predicted(&mut self, result: PredictResult) -> Vec<Effect> {
        self.feed(Input::Predicted(result), Now::current()).effects
    }
    fn redo_prepared(&mut self, id: &str, next: Result<NextAttempt, RedoError>) -> Vec<Effect> {
        let input = Input::RedoPrepared {
            task: id.into(),
            next,
        };
        self.feed(input, Now::current()).effects
    }
    fn judged(&mut self, id: &str, judged: Judged, now: Now) -> Vec<Effect> {
        let input = Input::Judged {
            task: id.into(),
            judged: Ok(Some(Box::new(judged))),
        };
        self.feed(input, now).effects
    }
    fn proxy(&mut self, ev: crate::proxy::ProxyEvent, now: Now) -> Vec<Effect> {
        self.feed(Input::Proxy(ev), now).effects
    }
    fn interrupt(&mut self) -> Vec<Effect> {
        self.feed(Input::Interrupt, Now::current()).effects
    }
    fn stop_requested(&mut self) -> Vec<Effect> {
        self.feed(Input::StopRequested, Now::current()).effects
    }
}

impl Feed for Fleet {
    fn feed(&mut self, input: Input, now: Now) -> super::input::Step {
        self.handle(input, now)
    }
}

const TWO: &str = "{\"id\":\"a\",\"prompt\":\"do a\"}\n{\"id\":\"b\",\"prompt\":\"do b\"}\n";
const ONE: &str = "{\"id\":\"a\",\"prompt\":\"do a\"}\n";

fn t0() -> Now {
    Now::current()
}

fn later(now: Now, secs: u64) -> Now {
    Now {
        wall: now.wall + chrono::Duration::seconds(secs as i64),
        mono: now.mono + Duration::from_secs(secs),
    }
}

/// The starts among `effects`: (task, attempt, pool).
fn spawned(effects: &[Effect]) -> Vec<(String, u32, usize)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(s) => Some((s.task.clone(), s.attempt, s.pool)),
            _ => None,
        })
        .collect()
}

/// The dependency start asked for in `effects`: its task and the ids of
/// the dependencies it is built from.
fn dependency_start(effects: &[Effect]) -> Option<(&str, Vec<&str>)> {
    effects.iter().find_map(|e| match e {
        Effect::ResolveStart(j) => Some((
            j.task.as_str(),
            j.deps.iter().map(|r| r.id.as_str()).collect(),
        )),
        _ => None,
    })
}

fn events(effects: &[Effect]) -> Vec<&Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(ev) => Some(ev),
            _ => None,
        })
        .collect()
}

fn notices(effects: &[Effect]) -> Vec<String> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::Notice { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn report(outcome: Outcome) -> AttemptReport {
    AttemptReport {
        exit_code: Some(1),
        ..AttemptReport::new(outcome, 1.0, None)
    }
}

fn with_result(mut r: AttemptReport, cost: f64) -> AttemptReport {
    r.result = Some(ResultInfo {
        total_cost_usd: Some(cost),
        num_turns: Some(3),
        ..ResultInfo::default()
    });
    r
}

fn failed() -> Outcome {
    Outcome::Failed {
        reason: "tests fail".into(),
    }
}

fn status(f: &Fleet, id: &str) -> TaskStatus {
    f.record(id).unwrap().status.clone()
}

/// Answer the predictions among `effects` as the dispatcher would: `found`
/// are the tasks (landing order) and their conflicts.
fn answer(
    f: &mut Fleet,
    effects: &[Effect],
    found: &[(&str, Option<PredictedConflict>)],
) -> Vec<Effect> {
    let mut out = Vec::new();
    for e in effects {
        if let Effect::Predict(_) = e {
            out.extend(
                f.predicted(PredictResult {
                    prediction: Ok(Prediction {
                        target_tip: git2::Oid::ZERO_SHA1,
                        tasks: found
                            .iter()
                            .map(|(id, c)| (id.to_string(), c.clone()))
                            .collect(),
                        applied: found.len(),
                    }),
                }),
            );
        }
    }
    out
}

fn conflict(with: &[&str], file: &str) -> PredictedConflict {
    PredictedConflict {
        commit: "c0ffee".into(),
        files: vec![file.into()],
        with: with.iter().map(|w| w.to_string()).collect(),
        with_target: false,
        target: "main".into(),
        target_tip: "abc".into(),
    }
}

fn predicts(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Predict(_)))
        .count()
}

/// Carry out the plan-retry effects the way the dispatcher does, without the log.
fn plan_retries(f: &mut Fleet, effects: &[Effect]) {
    for e in effects {
        if let Effect::PlanRetry {
            task,
            from_attempt,
            fresh_session,
            ..
        } = e
        {
            let a = f
                .record(task)
                .unwrap()
                .attempts
                .iter()
                .find(|a| a.number == *from_attempt)
                .cloned()
                .unwrap();
            f.retry_planned(
                task,
                NextAttempt {
                    fresh: false,
                    resume_session: if *fresh_session { None } else { a.session_id },
                    resume_pool: Some(a.pool),
                    ended: Some("failed".into()),
                    context: None,
                    base: None,
                },
            );
        }
    }
}

/// The `needs_attention` events among `effects`: (cause, task, credential).
fn attention(effects: &[Effect]) -> Vec<(AttentionCause, Option<String>, Option<String>)> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::NeedsAttention {
                cause,
                task,
                credential,
                ..
            } => Some((*cause, task.clone(), credential.clone())),
            _ => None,
        })
        .collect()
}

/// `n` tasks `t0`, `t1`, ... with `extra` fields on each line.
fn many(n: usize, extra: &str) -> &'static str {
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\":\"t{i}\",\"prompt\":\"do {i}\"{extra}}}\n"))
        .collect();
    Box::leak(lines.into_boxed_str())
}

/// The starts among `effects`: (task, credential).
fn started_on(effects: &[Effect]) -> Vec<(String, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(s) => Some((s.task.clone(), s.credential.clone())),
            _ => None,
        })
        .collect()
}

fn with_run(f: &mut Fleet) {
    f.state_mut().run = Some(crate::state::RunInfo {
        id: "r".into(),
        pid: 1,
        started_at: Utc::now(),
        ended_at: None,
        supervise: false,
        pid_start: None,
        waiting: None,
    });
}

const PAIRS: &str = "{\"id\":\"a1\",\"prompt\":\"a\",\"touches\":[\"a/**\"]}\n\
{\"id\":\"b1\",\"prompt\":\"b\",\"touches\":[\"b/**\"]}\n\
{\"id\":\"a2\",\"prompt\":\"a\",\"touches\":[\"a/x.rs\"]}\n\
{\"id\":\"c\",\"prompt\":\"c\"}\n";

const BEST3: &str = "{\"id\":\"a\",\"prompt\":\"do a\",\"best_of\":3}\n";
