//! The library's error type and the documented exit codes it maps to.

use std::path::{Path, PathBuf};

/// Exit codes, as the manual documents them (docs/src/reference/exit-codes.md)
/// and `flocks man` prints them (EXIT STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: all good.
    Ok,
    /// 1: unexpected error.
    Unexpected,
    /// 2: bad usage, config or input.
    BadInput,
    /// 3: some tasks failed, timed out or stayed blocked, or the budget stopped the run.
    TasksFailed,
    /// 4: land stopped on conflicts or failed validation.
    LandStopped,
    /// 5: could not start (lock held, nothing usable).
    CouldNotStart,
    /// 130: interrupted.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Unexpected => 1,
            Exit::BadInput => 2,
            Exit::TasksFailed => 3,
            Exit::LandStopped => 4,
            Exit::CouldNotStart => 5,
            Exit::Interrupted => 130,
        }
    }
}

/// Errors of the library. Messages read after "failed to ..." or stand alone,
/// and say what to do next where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or input that has no file position (exit 2).
    #[error("{0}")]
    Usage(String),

    /// Bad input at a known place in a file (exit 2).
    #[error("{}", format_input(.file, *.line, .field.as_deref(), .message))]
    Input {
        file: PathBuf,
        line: Option<usize>,
        field: Option<String>,
        message: String,
    },

    /// Land (or its undo) refused before changing anything (exit 4).
    #[error("{0}")]
    LandStopped(String),

    /// Another dispatcher holds the lock, or nothing is usable (exit 5).
    #[error("{0}")]
    CannotStart(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {}", .source.message())]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },

    /// flocks broke a rule of its own bookkeeping: a bug (exit 1).
    #[error("internal error, please report it: {0}")]
    Internal(String),

    /// The remote could not be asked, or its branch fetched (exit 1).
    #[error(
        "{0}; check that `git fetch` reaches the remote from this repository (network, credentials), then run the command again"
    )]
    Remote(String),

    /// A branch flocks works on vanished while it worked (exit 1).
    #[error(
        "{0} is gone: something deleted it while flocks worked; recreate it (`git reflog` shows where it was), then run the command again"
    )]
    BranchGone(String),

    /// Anything else that should not happen (exit 1).
    #[error("{0}")]
    Other(String),
}

fn format_input(file: &Path, line: Option<usize>, field: Option<&str>, message: &str) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    out.push_str(": ");
    if let Some(field) = field {
        out.push_str(&format!("field `{field}`: "));
    }
    out.push_str(message);
    out
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) | Error::Input { .. } => Exit::BadInput,
            Error::LandStopped(_) => Exit::LandStopped,
            Error::CannotStart(_) => Exit::CouldNotStart,
            Error::Io { .. }
            | Error::Git { .. }
            | Error::Internal(_)
            | Error::Remote(_)
            | Error::BranchGone(_)
            | Error::Other(_) => Exit::Unexpected,
        }
    }

    pub fn input(
        file: &Path,
        line: Option<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Error::Input {
            file: file.to_path_buf(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a context to I/O and git errors: `fs::read(p).io(|| format!("read {}", p.display()))`.
pub trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, git2::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Git {
            context: context(),
            source,
        })
    }
}
