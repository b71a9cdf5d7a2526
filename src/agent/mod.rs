//! The agent contract: how claude is started (argv, env, prompt on stdin), how
//! its stream-json is read, and how an attempt's outcome is decided.

pub(crate) mod classify;
pub(crate) mod redact;
pub(crate) mod spec;
pub(crate) mod stream;

pub(crate) use classify::classify;
pub(crate) use redact::Redactor;
pub(crate) use spec::{AgentSpec, SCRUBBED_VARS};
pub(crate) use stream::{StreamEvent, StreamParser};
