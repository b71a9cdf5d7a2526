//! The per-attempt supervisor: a small process between flocks and the agent.
//!
//! flocks runs `flocks __supervise --parent PID --grace-ms N -- AGENT ARGS...`.
//! The supervisor makes itself a child subreaper, so every process the agent
//! starts (even in a new session, as claude's Bash tool does) stays in its
//! subtree. It then:
//! - on SIGTERM (or SIGINT/SIGHUP): TERM to the whole tree, `grace`, KILL;
//! - on SIGUSR1: KILL to the whole tree at once;
//! - when the agent exits: stops whatever it left running, the same way;
//! - when flocks dies (its parent changes): stops the tree.
//!
//! It exits with the agent's code (128+N for signal N), or 127 when the agent
//! could not be started. It runs before any async runtime exists: plain
//! threads and blocking calls only.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getppid};

use crate::agent::classify::EXIT_CANNOT_EXEC;
use crate::proc;

pub const SUBCOMMAND: &str = "__supervise";

/// Write to stderr, ignoring errors: once flocks is gone the pipe is broken,
/// and `eprintln!` would panic instead of letting us stop the agent's tree.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Parse our own argv (after the subcommand) and run. Returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut parent: Option<i32> = None;
    let mut grace = Duration::from_secs(10);
    let mut it = args.into_iter();
    let mut argv: Vec<OsString> = Vec::new();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--parent") => parent = it.next().and_then(|v| v.to_str()?.parse().ok()),
            Some("--grace-ms") => {
                grace = Duration::from_millis(
                    it.next()
                        .and_then(|v| v.to_str()?.parse().ok())
                        .unwrap_or(10_000),
                )
            }
            Some("--") => {
                argv = it.collect();
                break;
            }
            _ => {
                say!("flocks supervisor: unexpected argument {a:?}");
                return 2;
            }
        }
    }
    if argv.is_empty() {
        say!("flocks supervisor: no agent command");
        return 2;
    }
    supervise(argv, parent, grace)
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

fn supervise(argv: Vec<OsString>, parent: Option<i32>, grace: Duration) -> i32 {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        say!("flocks supervisor: cannot become a subreaper ({e}); orphans may escape");
    }
    let set = signals();
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        say!("flocks supervisor: cannot block signals: {e}");
        return 1;
    }
    let me = std::process::id() as i32;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let empty = SigSet::empty();
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            say!(
                "flocks: cannot start the agent `{}`: {e} (check [agent] command in flocks.toml)",
                argv[0].to_string_lossy()
            );
            return EXIT_CANNOT_EXEC;
        }
    };
    let agent = child.id() as i32;
    let mut agent_status: Option<i32> = None;
    let mut stopping = false;

    let reap = |agent_status: &mut Option<i32>| {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    if pid.as_raw() == agent {
                        *agent_status = Some(code);
                    }
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    if pid.as_raw() == agent {
                        *agent_status = Some(128 + sig as i32);
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };

    loop {
        let sig = timed_wait(&set, Duration::from_millis(200));
        reap(&mut agent_status);
        let parent_gone = parent.is_some_and(|p| getppid().as_raw() != p);
        match sig {
            Some(Signal::SIGUSR1) => {
                proc::kill_all(|| proc::descendants(me), || reap(&mut agent_status));
            }
            Some(Signal::SIGTERM) | Some(Signal::SIGINT) | Some(Signal::SIGHUP) if !stopping => {
                stopping = true;
                stop_tree(me, grace, &mut agent_status, &reap);
            }
            _ if parent_gone && !stopping => {
                stopping = true;
                say!("flocks supervisor: flocks went away; stopping the agent");
                stop_tree(me, grace, &mut agent_status, &reap);
            }
            _ => {}
        }
        if let Some(code) = agent_status {
            // The agent is gone: stop whatever it left running.
            let left = proc::descendants(me);
            if !left.is_empty() {
                if !stopping {
                    say!(
                        "flocks supervisor: the agent exited; stopping {} process(es) it left running",
                        left.len()
                    );
                }
                stop_tree(me, grace, &mut agent_status, &reap);
            }
            return code;
        }
    }
}

fn stop_tree(me: i32, grace: Duration, status: &mut Option<i32>, reap: &impl Fn(&mut Option<i32>)) {
    proc::stop_all(|| proc::descendants(me), grace, || reap(status));
}

/// Wait for one of the blocked signals in `set`, at most `timeout`.
fn timed_wait(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid signal set and timespec; a null siginfo is allowed.
    let n = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if n < 0 {
        None
    } else {
        Signal::try_from(n).ok()
    }
}

/// Exit code of a finished supervisor as flocks reports it.
pub fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}
