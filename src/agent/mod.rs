//! The agent contract: how claude is started (argv, env, prompt on stdin), how
//! its stream-json is read, and how an attempt's outcome is decided.

pub mod classify;
pub mod redact;
pub mod spec;
pub mod stream;

pub use classify::classify;
pub use redact::Redactor;
pub use spec::{AgentSpec, SCRUBBED_VARS};
pub use stream::{StreamEvent, StreamParser};
