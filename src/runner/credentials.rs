//! Credentials: their secret values (read from the host environment), which
//! pool may use which, and which are parked, disabled, at their
//! `max_concurrent`, retired at their `max_cost_usd`, or ramping up.
//!
//! The ramp: when a credential is parked or retired, its work moves to the
//! others, gradually: each of them may run, on top of the agents it ran at
//! that moment, at most 1 more agent in the first `credential_ramp_secs`, 2
//! more in the next step, then 4, 8, ... until a step allows `max_agents`
//! more. A fleet does not move its whole load onto the next account in one
//! burst, and the agents a credential already ran go on unslowed (a fleet of
//! one slot never waits for the ramp).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::agent::spec::Injected;
use crate::config::{Config, CredentialChoice, CredentialKind};
use crate::state::State;

/// The name under which a pool's own login ("default") is parked.
pub(crate) const DEFAULT_LOGIN: &str = "default";

pub(crate) struct Credentials {
    entries: Vec<Entry>,
    /// Other secrets flocks holds (webhook header values), with the
    /// variable each came from: redacted like credentials.
    others: Vec<(String, String)>,
    in_use: HashMap<String, usize>,
    /// What each credential's attempts cost in this run.
    spent: HashMap<String, f64>,
    /// Credentials retired at their `max_cost_usd` in this run.
    retired: HashSet<String>,
    /// Credentials rejected (authentication, billing) in this run.
    rejected: HashSet<String>,
    ramps: HashMap<String, Ramp>,
    ramp_step: chrono::Duration,
    /// A ramp ends at the first step that allows this many more agents.
    ramp_full: u32,
}

struct Entry {
    name: String,
    env: String,
    kind: CredentialKind,
    value: Option<String>,
    max_concurrent: Option<usize>,
    max_cost_usd: Option<f64>,
}

/// A credential ramping up: in step `k` after `since`, it may run `base +
/// 2^k` agents at once.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    since: DateTime<Utc>,
    /// The agents it ran when the ramp started.
    base: usize,
}

/// Whether a pool can get a credential now.
#[derive(Debug)]
pub(crate) enum Availability {
    /// Use this (None: inject nothing).
    Ready(Option<Injected>),
    /// Usable, but every candidate runs its `max_concurrent` agents or has
    /// as many as its ramp allows now: look again when an agent ends, or at
    /// the next ramp step ([`Credentials::next_ramp_step`]).
    Busy,
    /// Every candidate is parked; the earliest is free at this time.
    ParkedUntil(DateTime<Utc>),
    /// None can ever be used in this run; why.
    Unusable(String),
}

impl Credentials {
    /// Read every credential's value from this process's environment.
    pub(crate) fn from_env(config: &Config) -> Credentials {
        Credentials::with_values(config, |var| std::env::var(var).ok())
    }

    /// Every credential's value as `value_of` its variable gives it.
    pub(crate) fn with_values(
        config: &Config,
        value_of: impl Fn(&str) -> Option<String>,
    ) -> Credentials {
        let entries = config
            .credentials
            .iter()
            .map(|c| Entry {
                name: c.name.clone(),
                env: c.env.clone(),
                kind: c.kind,
                value: value_of(&c.env).filter(|v| !v.is_empty()),
                max_concurrent: c.max_concurrent,
                max_cost_usd: c.max_cost_usd,
            })
            .collect();
        let others = config
            .header_vars()
            .filter_map(|var| {
                value_of(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| (v, var.to_string()))
            })
            .collect();
        Credentials {
            entries,
            others,
            in_use: HashMap::new(),
            spent: HashMap::new(),
            retired: HashSet::new(),
            rejected: HashSet::new(),
            ramps: HashMap::new(),
            ramp_step: chrono::Duration::from_std(config.credential_ramp)
                .unwrap_or(chrono::Duration::zero()),
            ramp_full: u32::try_from(config.max_agents).unwrap_or(u32::MAX),
        }
    }

    /// Secret values and their names, for redaction: every credential, the
    /// webhook header values, and the ambient Anthropic variables.
    pub(crate) fn secrets(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .entries
            .iter()
            .filter_map(|e| e.value.clone().map(|v| (v, e.name.clone())))
            .collect();
        out.extend(self.others.iter().cloned());
        for var in crate::agent::SCRUBBED_VARS {
            if let Ok(v) = std::env::var(var)
                && !v.is_empty()
            {
                out.push((v, var.to_string()));
            }
        }
        out
    }

    /// Credentials whose variable is not set.
    pub(crate) fn missing(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|e| e.value.is_none())
            .map(|e| (e.name.clone(), e.env.clone()))
            .collect()
    }

    /// An agent starts on `name` at `now`.
    pub(crate) fn acquire(&mut self, name: &str, now: DateTime<Utc>) {
        *self.in_use.entry(name.to_string()).or_default() += 1;
        // A ramp that allows a whole fleet more is over.
        let (step, full) = (self.ramp_step, self.ramp_full);
        self.ramps
            .retain(|_, r| ramp_allows(ramp_step_at(r.since, step, now)) < full);
    }

    /// Agents on `name` now.
    pub(crate) fn in_use(&self, name: &str) -> usize {
        self.in_use.get(name).copied().unwrap_or(0)
    }

    /// `name` was parked or retired at `now`: the other credentials take its
    /// work gradually (see the module note). No ramp when its step is zero.
    pub(crate) fn start_ramp(&mut self, except: &str, now: DateTime<Utc>) {
        if self.ramp_step.is_zero() || self.ramp_full <= 1 {
            return;
        }
        self.ramps.remove(except);
        // One already ramping goes on where it is (a burst of rate limits
        // on one credential starts one ramp on each other, not many).
        for e in self
            .entries
            .iter()
            .filter(|e| e.name != except && e.value.is_some())
        {
            let base = self.in_use.get(&e.name).copied().unwrap_or(0);
            self.ramps
                .entry(e.name.clone())
                .or_insert(Ramp { since: now, base });
        }
    }

    /// The next time a ramp allows more agents, if any is still ramping.
    pub(crate) fn next_ramp_step(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.ramps
            .values()
            .filter_map(|r| {
                let k = ramp_step_at(r.since, self.ramp_step, now);
                (ramp_allows(k) < self.ramp_full).then(|| r.since + self.ramp_step * (k as i32 + 1))
            })
            .min()
    }

    /// Count what an attempt on `name` cost. When that brings the credential
    /// to its `max_cost_usd` for the first time in this run, says why it is
    /// retired (the caller disables it for the run).
    pub(crate) fn add_cost(&mut self, name: &str, cost: f64) -> Option<String> {
        let spent = self.spent.entry(name.to_string()).or_default();
        *spent = crate::output::units::sum_costs([*spent, cost]);
        let spent = *spent;
        let cap = self.entries.iter().find(|e| e.name == name)?.max_cost_usd?;
        if spent < cap || !self.retired.insert(name.to_string()) {
            return None;
        }
        Some(format!(
            "it has cost {} in this run, reaching its max_cost_usd = {cap}",
            crate::output::units::money(spent)
        ))
    }

    /// Whether a pool with this choice can run nothing more in this run
    /// because its credentials reached their `max_cost_usd`: the named one
    /// is retired, or every set one it rotates through is (at least one by
    /// its cap, the others rejected).
    pub(crate) fn spent_out(&self, choice: &CredentialChoice) -> bool {
        match choice {
            CredentialChoice::Default => false,
            CredentialChoice::Named(n) => self.retired.contains(n),
            CredentialChoice::Rotate => {
                let set: Vec<&Entry> = self.entries.iter().filter(|e| e.value.is_some()).collect();
                set.iter().any(|e| self.retired.contains(&e.name))
                    && set
                        .iter()
                        .all(|e| self.retired.contains(&e.name) || self.rejected.contains(&e.name))
            }
        }
    }

    /// `name` was rejected (authentication, billing) in this run.
    pub(crate) fn reject(&mut self, name: &str) {
        self.rejected.insert(name.to_string());
    }

    /// Whether `e` may start one more agent now: not at its
    /// `max_concurrent`, nor at what its ramp (if any) allows in this step.
    fn room(&self, e: &Entry, now: DateTime<Utc>) -> Result<(), ()> {
        if e.max_concurrent.is_some_and(|m| self.in_use(&e.name) >= m) {
            return Err(());
        }
        if let Some(r) = self.ramps.get(&e.name) {
            let k = ramp_step_at(r.since, self.ramp_step, now);
            let allowed = r.base.saturating_add(ramp_allows(k) as usize);
            if self.in_use(&e.name) >= allowed {
                return Err(());
            }
        }
        Ok(())
    }

    pub(crate) fn release(&mut self, name: &str) {
        if let Some(n) = self.in_use.get_mut(name) {
            *n = n.saturating_sub(1);
        }
    }

    /// What a pool with this choice can use now.
    pub(crate) fn available(
        &self,
        choice: &CredentialChoice,
        state: &State,
        now: DateTime<Utc>,
    ) -> Availability {
        let status = |name: &str| -> Result<(), Option<DateTime<Utc>>> {
            match state.credentials.get(name) {
                Some(s) if s.disabled.is_some() => Err(None),
                Some(s) => match s.parked_until {
                    Some(t) if t > now => Err(Some(t)),
                    _ => Ok(()),
                },
                None => Ok(()),
            }
        };
        match choice {
            CredentialChoice::Default => match status(DEFAULT_LOGIN) {
                Ok(()) => Availability::Ready(None),
                Err(Some(t)) => Availability::ParkedUntil(t),
                Err(None) => Availability::Unusable(self.disabled_reason(state, DEFAULT_LOGIN)),
            },
            CredentialChoice::Named(name) => {
                let Some(e) = self.entries.iter().find(|e| &e.name == name) else {
                    return Availability::Unusable(format!("credential {name} is not configured"));
                };
                if e.value.is_none() {
                    return Availability::Unusable(format!(
                        "credential {name}: ${} is not set",
                        e.env
                    ));
                }
                match status(name) {
                    Ok(()) => match self.room(e, now) {
                        Ok(()) => Availability::Ready(Some(self.inject(e))),
                        Err(()) => Availability::Busy,
                    },
                    Err(Some(t)) => Availability::ParkedUntil(t),
                    Err(None) => Availability::Unusable(self.disabled_reason(state, name)),
                }
            }
            CredentialChoice::Rotate => {
                let mut best: Option<&Entry> = None;
                let mut earliest: Option<DateTime<Utc>> = None;
                // Some are usable but full.
                let mut busy = false;
                for e in self.entries.iter().filter(|e| e.value.is_some()) {
                    match status(&e.name).map(|()| self.room(e, now)) {
                        Ok(Ok(())) => {
                            let load = |x: &Entry| self.in_use(&x.name);
                            if best.is_none_or(|b| load(e) < load(b)) {
                                best = Some(e);
                            }
                        }
                        Ok(Err(())) => busy = true,
                        Err(Some(t)) => {
                            earliest = Some(earliest.map_or(t, |x: DateTime<Utc>| x.min(t)))
                        }
                        Err(None) => {}
                    }
                }
                match (best, busy, earliest) {
                    (Some(e), _, _) => Availability::Ready(Some(self.inject(e))),
                    (None, true, _) => Availability::Busy,
                    (None, false, Some(t)) => Availability::ParkedUntil(t),
                    (None, false, None) => {
                        Availability::Unusable("every credential is disabled or unset".into())
                    }
                }
            }
        }
    }

    fn inject(&self, e: &Entry) -> Injected {
        Injected {
            name: e.name.clone(),
            kind: e.kind,
            value: e.value.clone().unwrap_or_default(),
        }
    }

    fn disabled_reason(&self, state: &State, name: &str) -> String {
        let why = state
            .credentials
            .get(name)
            .and_then(|s| s.disabled.clone())
            .unwrap_or_else(|| "disabled".into());
        format!("credential {name} is disabled ({why})")
    }
}

/// The ramp step `now` falls in.
fn ramp_step_at(since: DateTime<Utc>, step: chrono::Duration, now: DateTime<Utc>) -> u32 {
    let (elapsed, step) = ((now - since).num_milliseconds(), step.num_milliseconds());
    if elapsed <= 0 || step <= 0 {
        return 0;
    }
    u32::try_from(elapsed / step).unwrap_or(u32::MAX).min(31)
}

/// The agents that ramp step `k` allows on top of the ramp's base.
fn ramp_allows(k: u32) -> u32 {
    1u32 << k.min(31)
}
