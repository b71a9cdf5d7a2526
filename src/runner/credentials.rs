//! Credentials: their secret values (read from the host environment), which
//! pool may use which, and which are parked or disabled.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::agent::spec::Injected;
use crate::config::{Config, CredentialChoice, CredentialKind};
use crate::state::State;

/// The name under which a pool's own login ("default") is parked.
pub const DEFAULT_LOGIN: &str = "default";

pub struct Credentials {
    entries: Vec<Entry>,
    in_use: HashMap<String, usize>,
}

struct Entry {
    name: String,
    env: String,
    kind: CredentialKind,
    value: Option<String>,
}

/// Whether a pool can get a credential now.
#[derive(Debug)]
pub enum Availability {
    /// Use this (None: inject nothing).
    Ready(Option<Injected>),
    /// Every candidate is parked; the earliest is free at this time.
    ParkedUntil(DateTime<Utc>),
    /// None can ever be used in this run; why.
    Unusable(String),
}

impl Credentials {
    /// Read every credential's value from this process's environment.
    pub fn from_env(config: &Config) -> Credentials {
        let entries = config
            .credentials
            .iter()
            .map(|c| Entry {
                name: c.name.clone(),
                env: c.env.clone(),
                kind: c.kind,
                value: std::env::var(&c.env).ok().filter(|v| !v.is_empty()),
            })
            .collect();
        Credentials {
            entries,
            in_use: HashMap::new(),
        }
    }

    /// Secret values and their names, for redaction: every credential, and
    /// the ambient Anthropic variables.
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .entries
            .iter()
            .filter_map(|e| e.value.clone().map(|v| (v, e.name.clone())))
            .collect();
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
    pub fn missing(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter(|e| e.value.is_none())
            .map(|e| (e.name.clone(), e.env.clone()))
            .collect()
    }

    pub fn acquire(&mut self, name: &str) {
        *self.in_use.entry(name.to_string()).or_default() += 1;
    }

    pub fn release(&mut self, name: &str) {
        if let Some(n) = self.in_use.get_mut(name) {
            *n = n.saturating_sub(1);
        }
    }

    /// What a pool with this choice can use now.
    pub fn available(
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
                    Ok(()) => Availability::Ready(Some(self.inject(e))),
                    Err(Some(t)) => Availability::ParkedUntil(t),
                    Err(None) => Availability::Unusable(self.disabled_reason(state, name)),
                }
            }
            CredentialChoice::Rotate => {
                let mut best: Option<&Entry> = None;
                let mut earliest: Option<DateTime<Utc>> = None;
                for e in self.entries.iter().filter(|e| e.value.is_some()) {
                    match status(&e.name) {
                        Ok(()) => {
                            let load = |x: &Entry| self.in_use.get(&x.name).copied().unwrap_or(0);
                            if best.is_none_or(|b| load(e) < load(b)) {
                                best = Some(e);
                            }
                        }
                        Err(Some(t)) => {
                            earliest = Some(earliest.map_or(t, |x: DateTime<Utc>| x.min(t)))
                        }
                        Err(None) => {}
                    }
                }
                match (best, earliest) {
                    (Some(e), _) => Availability::Ready(Some(self.inject(e))),
                    (None, Some(t)) => Availability::ParkedUntil(t),
                    (None, None) => {
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
