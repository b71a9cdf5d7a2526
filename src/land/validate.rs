//! `[validate] commands`, run one after the other in the land worktree on the
//! landed result. `timeout_secs` bounds the whole validation. Output is shown
//! as it comes (when asked) and logged. Credential variables are removed from
//! the commands' environment.
//!
//! Each command runs under the same per-attempt supervisor as a local agent
//! (`supervisor.rs`: its own cgroup where the machine allows, else a
//! subreaper), so what it starts in a new session is stopped with it: on
//! expiry of `timeout_secs` the whole tree gets SIGTERM, then SIGKILL after
//! `kill_grace_secs`, and whatever a command leaves running when it exits is
//! stopped too. The supervisor has its own process group, so a Ctrl-C on the
//! terminal reaches flocks only: while a command runs, SIGINT and SIGTERM are
//! caught and passed on the same way as a timeout.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::Pid;

use crate::config::CommandSpec;
use crate::error::{Context, Result};

/// How validation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Nothing new to validate: the target does not move.
    NotNeeded,
    /// `--no-validate`.
    Skipped,
    /// No `[validate] commands`.
    NotConfigured,
    Passed,
    /// `command` failed for `reason` (exit status, signal, timeout).
    Failed {
        command: String,
        reason: String,
    },
    /// Ctrl-C (or SIGTERM) while `command` ran; it was stopped.
    Interrupted {
        command: String,
    },
}

impl Validation {
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Validation::Failed { .. } | Validation::Interrupted { .. }
        )
    }
}

/// Where and how to run the commands.
pub struct Run<'a> {
    pub commands: &'a [CommandSpec],
    pub dir: &'a Path,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    /// Environment variables to remove (credentials).
    pub scrub: &'a [String],
    pub log: &'a Path,
    /// Also copy the output to this process's stdout.
    pub echo: bool,
    /// What the commands are, for the log ("validation", "after_push").
    pub what: &'a str,
    /// Variables to set for the commands.
    pub env: &'a [(String, String)],
}

/// The validation log, shared by the threads that copy output into it.
pub(super) type Out = Arc<Mutex<File>>;

/// Create the validation log `r.log`, for [`run`] or the docker pool's run.
pub(super) fn open_log(r: &Run) -> Result<Out> {
    // `.flocks/land-logs/` is agent-writable: no link is followed.
    let opened = crate::fsat::create(r.log).ctx(|| format!("create {}", r.log.display()))?;
    crate::fsat::tell(&opened.notes);
    Ok(Arc::new(Mutex::new(opened.file)))
}

/// Run the commands here, on the host, logging to `out` (with a
/// [`SignalGuard`] installed, or, inside `flocks run`, with the dispatcher
/// calling [`interrupt`]: a Ctrl-C stops the command, not flocks).
pub(super) fn run(r: &Run, out: &Out) -> Result<Validation> {
    let deadline = r.timeout.map(|t| Instant::now() + t);
    for spec in r.commands {
        let header = format!("$ {spec}\n");
        emit(out, r.echo, header.as_bytes());
        let supervisor = match crate::supervisor::exe() {
            Ok(s) => s,
            Err(e) => {
                let reason = e.to_string();
                emit(out, r.echo, format!("{reason}\n").as_bytes());
                return Ok(Validation::Failed {
                    command: spec.to_string(),
                    reason,
                });
            }
        };
        let mut cmd = std::process::Command::new(supervisor);
        cmd.arg(crate::supervisor::SUBCOMMAND)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--grace-ms")
            .arg(r.grace.as_millis().to_string())
            .arg("--quiet")
            .arg("--")
            .args(spec.argv())
            .current_dir(r.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for var in r.scrub {
            cmd.env_remove(var);
        }
        cmd.envs(r.env.iter().map(|(k, v)| (k, v)));
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("could not start: {e}");
                emit(out, r.echo, format!("{reason}\n").as_bytes());
                return Ok(Validation::Failed {
                    command: spec.to_string(),
                    reason,
                });
            }
        };
        let readers = [
            child.stdout.take().map(|s| pump(s, out.clone(), r.echo)),
            child.stderr.take().map(|s| pump(s, out.clone(), r.echo)),
        ];
        let status = wait(&mut child, deadline, r.grace)?;
        for rx in readers.into_iter().flatten() {
            // A grandchild that keeps the pipe open must not hold land up.
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
        let reason = match status {
            Waited::Exited(s) if s.success() => continue,
            Waited::Exited(s) => match s.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("killed by a signal ({s})"),
            },
            Waited::Interrupted => {
                emit(out, r.echo, format!("interrupted: {spec}\n").as_bytes());
                return Ok(Validation::Interrupted {
                    command: spec.to_string(),
                });
            }
            Waited::TimedOut => format!(
                "timed out after {}s ([validate] timeout_secs)",
                r.timeout.unwrap_or_default().as_secs_f64()
            ),
        };
        emit(
            out,
            r.echo,
            format!("{} failed: {spec}: {reason}\n", r.what).as_bytes(),
        );
        return Ok(Validation::Failed {
            command: spec.to_string(),
            reason,
        });
    }
    Ok(Validation::Passed)
}

enum Waited {
    Exited(std::process::ExitStatus),
    TimedOut,
    Interrupted,
}

fn wait(child: &mut Child, deadline: Option<Instant>, grace: Duration) -> Result<Waited> {
    loop {
        if let Some(s) = child
            .try_wait()
            .ctx(|| "wait for a validate command".into())?
        {
            return Ok(Waited::Exited(s));
        }
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        if interrupted || deadline.is_some_and(|d| Instant::now() >= d) {
            // The supervisor stops the command's whole tree: TERM, grace,
            // KILL; then it exits. SIGUSR1 asks it to KILL at once.
            let supervisor = Pid::from_raw(child.id() as i32);
            let _ = kill(supervisor, Signal::SIGTERM);
            let mut until = Instant::now() + grace + Duration::from_secs(5);
            let mut hurried = false;
            loop {
                if child
                    .try_wait()
                    .ctx(|| "wait for a validate command".into())?
                    .is_some()
                {
                    break;
                }
                if Instant::now() >= until {
                    if hurried {
                        let _ = kill(supervisor, Signal::SIGKILL);
                        let _ = child.wait();
                        break;
                    }
                    let _ = kill(supervisor, Signal::SIGUSR1);
                    hurried = true;
                    until = Instant::now() + Duration::from_secs(5);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(if interrupted {
                Waited::Interrupted
            } else {
                Waited::TimedOut
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copy a pipe to the log (and stdout) until it closes; the receiver hears
/// when it is done.
fn pump(
    mut src: impl Read + Send + 'static,
    out: Arc<Mutex<File>>,
    echo: bool,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => emit(&out, echo, &buf[..n]),
            }
        }
        let _ = tx.send(());
    });
    rx
}

pub(super) fn emit(out: &Out, echo: bool, bytes: &[u8]) {
    if let Ok(mut f) = out.lock() {
        let _ = f.write_all(bytes);
    }
    if echo {
        // Quiet on a closed pipe: validation goes on, its log has it all.
        let _ = crate::output::stdout().write_all(bytes);
    }
}

pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Stop the validation that runs now (and any later one in this process):
/// the dispatcher's Ctrl-C while a best-of task is judged.
pub(crate) fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_signal(_: std::ffi::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM while validation runs; puts the previous
/// handlers back on drop.
pub(super) struct SignalGuard {
    old: Vec<(Signal, SigAction)>,
}

impl SignalGuard {
    pub(super) fn install() -> SignalGuard {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is
            // async-signal-safe.
            if let Ok(prev) = unsafe { sigaction(sig, &action) } {
                old.push((sig, prev));
            }
        }
        SignalGuard { old }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores the action that was in place before.
            let _ = unsafe { sigaction(*sig, prev) };
        }
    }
}
