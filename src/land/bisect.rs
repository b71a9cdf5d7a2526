//! Finding the tasks that break validation, by bisection over prefixes of the
//! batch in landing order (every prefix is a commit of the chain, so every
//! candidate applies cleanly).
//!
//! The whole batch is validated first. While it fails: binary-search the
//! shortest failing prefix between the longest prefix known to pass and the
//! whole batch; its last task is a culprit; take it out (the tasks after it
//! are applied again) and validate what is left. Each culprit costs at most
//! `ceil(log2 n)` validations to find plus one to re-validate the rest, so
//! `k` culprits in `n` tasks cost at most `k * (ceil(log2 n) + 1) + 1`.
//!
//! The target itself is assumed to pass. When the search blames the first task
//! of the batch a second time, the target is validated on its own (once): if it
//! fails, no task can be blamed and the bisection stops. (That extra round is
//! paid for by the short search that ends on the first task; the tests check
//! the bound exhaustively for up to 20 tasks and 2 culprits, 16 tasks and 3.)

use std::path::PathBuf;

use git2::Repository;

use super::chain::Chain;
use super::plan::Plan;
use super::validator::Validator;
use super::{Round, TaskOutcome, Validation};
use crate::error::Result;

/// Lines of a condemning log shown with its culprit.
const TAIL_LINES: usize = 12;

/// How one validation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Fail,
    /// Interrupted: stop everything.
    Stop,
}

/// The batch being bisected: the tasks that change the result, in landing
/// order. Prefix lengths count those tasks (0 is the target alone).
pub(crate) trait Batch {
    /// How many tasks the result is built from now.
    fn len(&self) -> usize;
    /// Validate the first `j` tasks; returns the verdict and an id of that
    /// validation round.
    fn validate(&mut self, j: usize) -> Result<(Verdict, usize)>;
    /// Take the `j`-th task (1-based) out, condemned by validation `round`;
    /// the tasks after it are applied again (some may now conflict).
    fn condemn(&mut self, j: usize, round: usize) -> Result<()>;
}

/// How the bisection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// What is left of the batch passed (validated in `round`; `None` when
    /// nothing is left, or what is left is known to pass without a new round).
    Passed {
        round: Option<usize>,
    },
    /// The target fails validation on its own, in `round`.
    TargetFails {
        round: usize,
    },
    Interrupted,
}

pub(crate) fn bisect(batch: &mut impl Batch) -> Result<Ended> {
    // The longest prefix known to pass; its tasks are never blamed.
    let mut good = 0;
    let mut target_checked = false;
    let mut blamed_first = false;
    loop {
        let n = batch.len();
        if n == good && (good > 0 || target_checked || !blamed_first) {
            return Ok(Ended::Passed { round: None });
        }
        let (verdict, mut bad_round) = batch.validate(n)?;
        match verdict {
            Verdict::Pass => {
                return Ok(Ended::Passed {
                    round: Some(bad_round),
                });
            }
            Verdict::Stop => return Ok(Ended::Interrupted),
            Verdict::Fail if n == 0 => return Ok(Ended::TargetFails { round: bad_round }),
            Verdict::Fail => {}
        }
        let (mut lo, mut hi) = (good, n);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let (verdict, round) = batch.validate(mid)?;
            match verdict {
                Verdict::Pass => lo = mid,
                Verdict::Fail => {
                    hi = mid;
                    bad_round = round;
                }
                Verdict::Stop => return Ok(Ended::Interrupted),
            }
        }
        if lo == 0 && !target_checked {
            if blamed_first {
                // Twice the first task: is it the target that fails?
                target_checked = true;
                let (verdict, round) = batch.validate(0)?;
                match verdict {
                    Verdict::Pass => {}
                    Verdict::Fail => return Ok(Ended::TargetFails { round }),
                    Verdict::Stop => return Ok(Ended::Interrupted),
                }
            }
            blamed_first = true;
        }
        batch.condemn(hi, bad_round)?;
        good = lo;
    }
}

/// A bisection of a built chain, validating in the land worktree; each round
/// is logged as `<dir>/<NN>.log` and recorded in `rounds`.
pub(crate) struct Bisection<'a, 'v> {
    pub repo: &'a Repository,
    pub plan: &'a Plan,
    pub chain: &'a mut Chain,
    pub validator: &'a Validator<'v>,
    pub dir: PathBuf,
    pub rounds: &'a mut Vec<Round>,
    pub echo: bool,
    pub progress: Option<fn(&str)>,
}

/// What the bisection leaves for the report.
pub(crate) struct Found {
    /// Of the result that will land (`NotNeeded` when nothing is left).
    pub validation: Validation,
    pub log: Option<PathBuf>,
    pub stopped: Option<String>,
}

impl Bisection<'_, '_> {
    /// Bisect; the chain is left with the culprits taken out. Interrupted, or
    /// with a target that fails on its own, the chain is put back as it was
    /// (and nothing will move).
    pub(super) fn run(&mut self) -> Result<Found> {
        let original = self.chain.clone();
        let found = match bisect(self)? {
            Ended::Passed { round } => {
                let tip = self.chain.tip();
                let passed = match round {
                    Some(n) => self.rounds.get(n - 1),
                    None => self
                        .rounds
                        .iter()
                        .rev()
                        .find(|r| r.tip == tip && r.validation == Validation::Passed),
                };
                Found {
                    validation: if passed.is_some() {
                        Validation::Passed
                    } else {
                        Validation::NotNeeded
                    },
                    log: passed.map(|r| r.log.clone()),
                    stopped: None,
                }
            }
            Ended::TargetFails { round } => {
                *self.chain = original;
                let r = &self.rounds[round - 1];
                Found {
                    validation: r.validation.clone(),
                    log: Some(r.log.clone()),
                    stopped: Some(format!(
                        "{} fails validation on its own (round {round}), so no task can be blamed: \
                         fix {} first, then land again",
                        self.plan.target, self.plan.target
                    )),
                }
            }
            Ended::Interrupted => {
                *self.chain = original;
                let last = self.rounds.last();
                Found {
                    validation: last.map(|r| r.validation.clone()).unwrap_or(
                        Validation::Interrupted {
                            command: String::new(),
                        },
                    ),
                    log: last.map(|r| r.log.clone()),
                    stopped: None,
                }
            }
        };
        Ok(found)
    }

    fn say(&self, line: &str) {
        if let Some(p) = self.progress {
            p(line);
        }
    }

    fn ids(&self, count: usize) -> Vec<String> {
        self.chain.changing()[..count]
            .iter()
            .map(|&i| self.plan.tasks[i].id.clone())
            .collect()
    }
}

/// "all 16 tasks (a .. p)", "the first 8 of 16 tasks (a .. h)", "the target alone".
fn describe(tasks: &[String], of: usize) -> String {
    let ids = match tasks {
        [] => return "the target alone".into(),
        [one] => one.clone(),
        [first, .., last] => format!("{first} .. {last}"),
    };
    if tasks.len() == of {
        format!("all {} ({ids})", crate::output::units::count(of, "task"))
    } else {
        format!("the first {} of {of} tasks ({ids})", tasks.len())
    }
}

impl Batch for Bisection<'_, '_> {
    fn len(&self) -> usize {
        self.chain.changing().len()
    }

    fn validate(&mut self, j: usize) -> Result<(Verdict, usize)> {
        let changing = self.chain.changing();
        let tip = match j {
            0 => self.chain.base,
            _ => self.chain.steps[changing[j - 1]].tip,
        };
        let tasks = self.ids(j);
        let number = self.rounds.len() + 1;
        let what = describe(&tasks, changing.len());
        self.say(&format!("bisect round {number}: validating {what}"));
        let log = self.dir.join(format!("{number:02}.log"));
        let validation = self.validator.run(self.repo, tip, &log, self.echo)?;
        let (verdict, said) = match &validation {
            Validation::Passed => (Verdict::Pass, "passed".to_string()),
            Validation::Interrupted { command } => {
                (Verdict::Stop, format!("interrupted during `{command}`"))
            }
            Validation::Failed { command, reason } => {
                (Verdict::Fail, format!("failed: `{command}`: {reason}"))
            }
            other => (Verdict::Fail, format!("{other:?}")),
        };
        self.say(&format!(
            "bisect round {number}: {said} (log: {})",
            log.display()
        ));
        self.rounds.push(Round {
            number,
            tasks,
            tip,
            validation,
            log,
        });
        Ok((verdict, number))
    }

    fn condemn(&mut self, j: usize, round: usize) -> Result<()> {
        let i = self.chain.changing()[j - 1];
        let r = &self.rounds[round - 1];
        let commits = match &self.chain.steps[i].outcome {
            TaskOutcome::Landed { commits, .. } => *commits,
            _ => 0,
        };
        let text = crate::fsat::read_to_string(&r.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| l.to_string())
            .collect();
        let outcome = TaskOutcome::Culprit {
            commits,
            round,
            failure: r.validation.clone(),
            log: r.log.clone(),
            tail,
        };
        self.say(&format!(
            "bisect: {} breaks validation (the shortest failing prefix ends with it, round {round}); \
             leaving it out",
            self.plan.tasks[i].id,
        ));
        self.chain.remove(self.repo, self.plan, i, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks 1..=n (by original number); validation fails when a culprit is
    /// in the prefix, or always when the target is broken.
    struct Fake {
        left: Vec<usize>,
        culprits: Vec<usize>,
        target_broken: bool,
        validations: usize,
        condemned: Vec<usize>,
    }

    impl Fake {
        fn new(n: usize, culprits: &[usize]) -> Fake {
            Fake {
                left: (1..=n).collect(),
                culprits: culprits.to_vec(),
                target_broken: false,
                validations: 0,
                condemned: Vec::new(),
            }
        }
    }

    impl Batch for Fake {
        fn len(&self) -> usize {
            self.left.len()
        }
        fn validate(&mut self, j: usize) -> Result<(Verdict, usize)> {
            self.validations += 1;
            let bad =
                self.target_broken || self.left[..j].iter().any(|t| self.culprits.contains(t));
            Ok((
                if bad { Verdict::Fail } else { Verdict::Pass },
                self.validations,
            ))
        }
        fn condemn(&mut self, j: usize, _round: usize) -> Result<()> {
            self.condemned.push(self.left.remove(j - 1));
            Ok(())
        }
    }

    fn bound(k: usize, n: usize) -> usize {
        let log = (n as f64).log2().ceil() as usize;
        k * (log + 1) + 1
    }

    #[test]
    fn one_or_two_culprits_anywhere_within_the_bound() {
        for n in 1..=20 {
            for a in 1..=n {
                let mut f = Fake::new(n, &[a]);
                assert!(matches!(bisect(&mut f).unwrap(), Ended::Passed { .. }));
                assert_eq!(f.condemned, vec![a]);
                assert!(
                    f.validations <= bound(1, n),
                    "n={n} a={a}: {}",
                    f.validations
                );
                for b in a + 1..=n {
                    let mut f = Fake::new(n, &[a, b]);
                    assert!(matches!(bisect(&mut f).unwrap(), Ended::Passed { .. }));
                    assert_eq!(f.condemned, vec![a, b]);
                    // Even with the first two guilty (the target is checked).
                    assert!(
                        f.validations <= bound(2, n),
                        "n={n} a={a} b={b}: {}",
                        f.validations
                    );
                }
            }
        }
    }

    #[test]
    fn many_culprits_within_the_bound() {
        let n = 16;
        for culprits in [
            &[2, 3, 7, 11, 16][..],
            &[1, 2, 3, 4, 5],
            &[12, 13, 14, 15, 16],
        ] {
            let mut f = Fake::new(n, culprits);
            bisect(&mut f).unwrap();
            assert_eq!(f.condemned, culprits.to_vec());
            assert!(f.validations <= bound(culprits.len(), n));
        }
        for a in 1..=n {
            for b in a + 1..=n {
                for c in b + 1..=n {
                    let mut f = Fake::new(n, &[a, b, c]);
                    bisect(&mut f).unwrap();
                    assert_eq!(f.condemned, vec![a, b, c]);
                    assert!(f.validations <= bound(3, n), "{a} {b} {c}");
                }
            }
        }
    }

    #[test]
    fn a_passing_batch_costs_one_validation() {
        let mut f = Fake::new(16, &[]);
        assert_eq!(bisect(&mut f).unwrap(), Ended::Passed { round: Some(1) });
        assert_eq!(f.validations, 1);
    }

    #[test]
    fn a_broken_target_blames_nobody_for_long() {
        let mut f = Fake::new(16, &[]);
        f.target_broken = true;
        assert!(matches!(bisect(&mut f).unwrap(), Ended::TargetFails { .. }));
        assert!(f.condemned.len() <= 1, "{:?}", f.condemned);
        let mut f = Fake::new(1, &[]);
        f.target_broken = true;
        assert!(matches!(bisect(&mut f).unwrap(), Ended::TargetFails { .. }));
    }

    #[test]
    fn every_task_guilty() {
        let mut f = Fake::new(4, &[1, 2, 3, 4]);
        assert!(matches!(bisect(&mut f).unwrap(), Ended::Passed { .. }));
        assert_eq!(f.condemned, vec![1, 2, 3, 4]);
    }
}
