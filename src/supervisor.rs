//! The per-attempt supervisor: a small process between flocks and the agent
//! (or a `[validate]` command).
//!
//! flocks runs `flocks __supervise --parent PID --grace-ms N [--quiet] [--wrapped] -- AGENT ARGS...`.
//! The supervisor holds the agent's processes in the strongest way the
//! machine offers, and says which in its first line on stderr:
//! - **cgroup v2** (see `cgroup.rs`): the agent starts in a cgroup of its
//!   own; every process it starts stays there whatever it does with its
//!   session, parent or environment, and stopping kills the whole cgroup.
//!   A watchdog (`__supervise --watch-cgroup DIR`, outside that cgroup)
//!   kills it when the supervisor dies, even by SIGKILL.
//! - **subreaper and tag** otherwise: the supervisor makes itself a child
//!   subreaper, so processes that double-fork or setsid stay in its subtree
//!   while it lives; after a SIGKILL of both flocks and the supervisor, only
//!   the `FLOCKS_ATTEMPT` tag (which a process can drop) lets the next run
//!   find them.
//!
//! It then:
//! - on SIGTERM (or SIGINT/SIGHUP): TERM to the whole tree, `grace`, KILL;
//! - on SIGUSR1: KILL to the whole tree at once;
//! - when the agent exits: stops whatever it left running, the same way;
//! - when flocks dies (its parent changes): stops the tree.
//!
//! `--wrapped`: the command is a sandbox (`bwrap ... -- AGENT`) whose own
//! end ends everything in it at once (SIGKILL, by its PID namespace). TERM
//! then goes to what runs inside it, never to it, so that the agent gets its
//! grace; KILL goes to all.
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
use crate::cgroup::Cgroup;
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
    let mut quiet = false;
    let mut wrapped = false;
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--watch-cgroup") => {
                return match it.next() {
                    Some(dir) => watch(std::path::PathBuf::from(dir)),
                    None => 2,
                };
            }
            Some("--quiet") => quiet = true,
            Some("--wrapped") => wrapped = true,
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
    supervise(argv, parent, grace, quiet, wrapped)
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

/// How the supervisor's stderr line about its containment begins (the
/// attempt's log keeps it; the agent's stderr tail does not).
pub(crate) const CONTAINMENT_NOTE: &str = "flocks supervisor: containment: ";

/// The environment variable that turns cgroup containment off
/// (`FLOCKS_CGROUP=off`): the subreaper and tag are used instead.
pub(crate) const CGROUP_VAR: &str = "FLOCKS_CGROUP";

/// The watchdog: wait until the supervisor is gone (our stdin, a pipe only
/// it holds, closes), then kill and remove the attempt's cgroup.
fn watch(dir: std::path::PathBuf) -> i32 {
    use std::io::Read as _;
    // Signals meant for the attempt's tree (a Ctrl-C, a killer) must not
    // end the watchdog before it has done its one job.
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigIgn) };
    }
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    Cgroup::at(dir).kill_and_remove();
    0
}

/// The cgroup and its watchdog, where the machine allows them.
struct Containment {
    cgroup: Cgroup,
    watchdog: std::process::Child,
}

/// Why an attempt runs without a cgroup of its own (said in its log).
#[derive(Debug, thiserror::Error)]
enum NoContainment {
    #[error("turned off by {CGROUP_VAR}=off")]
    TurnedOff,
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Exe(#[from] ExeError),
    #[error("cannot start the cgroup watchdog: {0}")]
    Watchdog(std::io::Error),
}

impl Containment {
    fn start() -> Result<Containment, NoContainment> {
        if std::env::var(CGROUP_VAR).is_ok_and(|v| v == "off") {
            return Err(NoContainment::TurnedOff);
        }
        let tag = std::env::var(crate::proc::TAG_VAR).unwrap_or_else(|_| "run".into());
        let cgroup = Cgroup::create(&crate::cgroup::name_for(&tag, std::process::id()))?;
        let watchdog = exe().map_err(NoContainment::Exe).and_then(|exe| {
            std::process::Command::new(exe)
                .arg(SUBCOMMAND)
                .arg("--watch-cgroup")
                .arg(cgroup.dir())
                .env_remove(crate::proc::TAG_VAR)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(NoContainment::Watchdog)
        });
        match watchdog {
            Ok(watchdog) => Ok(Containment { cgroup, watchdog }),
            Err(e) => {
                cgroup.kill_and_remove();
                Err(e)
            }
        }
    }

    fn end(mut self) {
        self.cgroup.kill_and_remove();
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

/// The flocks binary could not be found to run a supervisor.
#[derive(Debug, thiserror::Error)]
#[error("cannot find the flocks binary: {0} (set FLOCKS_SUPERVISOR to its path)")]
pub struct ExeError(#[from] std::io::Error);

/// The flocks binary that runs supervisors: `FLOCKS_SUPERVISOR` or ourselves.
/// Ourselves by `/proc/self/exe`, which a child execs as the binary this
/// process runs even after its file was replaced or removed (an upgrade or
/// a rebuild during an overnight run); its path would name the new file, or
/// nothing ("… (deleted)"), and every later attempt would fail to start.
pub fn exe() -> Result<std::path::PathBuf, ExeError> {
    if let Some(p) = std::env::var_os("FLOCKS_SUPERVISOR") {
        return Ok(std::path::PathBuf::from(p));
    }
    let own = std::path::Path::new("/proc/self/exe");
    if own.exists() {
        return Ok(own.to_path_buf());
    }
    Ok(std::env::current_exe()?)
}

/// Start the agent, in `cgroup` if given.
fn spawn(argv: &[OsString], cgroup: Option<&Cgroup>) -> std::io::Result<std::process::Child> {
    let procs = match cgroup.map(Cgroup::procs_path).transpose() {
        Ok(p) => p,
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(p) = &procs {
                crate::cgroup::enter(p)?;
            }
            let empty = SigSet::empty();
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// Start the agent in a cgroup of its own when it may (else under the
/// subreaper and the attempt tag alone, said unless `quiet`); `Err`: the
/// exit code when it cannot start.
fn start(
    argv: &[OsString],
    quiet: bool,
) -> Result<(std::process::Child, Option<Containment>), i32> {
    let mut contained = match Containment::start() {
        Ok(c) => Some(c),
        Err(why) => {
            if !quiet {
                say!("{CONTAINMENT_NOTE}subreaper and attempt tag (no cgroup: {why})");
            }
            None
        }
    };
    let mut spawned = spawn(argv, contained.as_ref().map(|c| &c.cgroup));
    if let (Err(e), Some(c)) = (&spawned, &contained) {
        // Not allowed into the cgroup (or the agent is missing): once more
        // without it, which tells the two apart.
        let why = format!("cannot enter {}: {e}", c.cgroup.dir().display());
        if let Some(c) = contained.take() {
            c.end();
        }
        spawned = spawn(argv, None);
        if spawned.is_ok() && !quiet {
            say!("{CONTAINMENT_NOTE}subreaper and attempt tag (no cgroup: {why})");
        }
    } else if let Some(c) = contained.as_ref().filter(|_| !quiet) {
        say!("{CONTAINMENT_NOTE}cgroup v2 {}", c.cgroup.dir().display());
    }
    match spawned {
        Ok(c) => Ok((c, contained)),
        Err(e) => {
            if let Some(c) = contained.take() {
                c.end();
            }
            say!(
                "flocks: cannot start the agent `{}`: {e} (check [agent] command in flocks.toml)",
                argv[0].to_string_lossy()
            );
            Err(EXIT_CANNOT_EXEC)
        }
    }
}

/// `quiet`: do not say which containment is used (validation's output is
/// the user's). `wrapped`: the command is a sandbox (see the module's note).
fn supervise(
    argv: Vec<OsString>,
    parent: Option<i32>,
    grace: Duration,
    quiet: bool,
    wrapped: bool,
) -> i32 {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        say!("flocks supervisor: cannot become a subreaper ({e}); orphans may escape");
    }
    let set = signals();
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        say!("flocks supervisor: cannot block signals: {e}");
        return 1;
    }
    let me = std::process::id() as i32;
    let (child, mut contained) = match start(&argv, quiet) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let agent = child.id() as i32;
    let watchdog = contained.as_ref().map(|c| c.watchdog.id() as i32);
    let cgroup = contained.as_ref().map(|c| &c.cgroup);
    let tree = Tree {
        me,
        watchdog,
        cgroup,
        wrapper: wrapped.then_some(agent),
    };
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
                tree.kill(&mut || reap(&mut agent_status));
            }
            Some(Signal::SIGTERM) | Some(Signal::SIGINT) | Some(Signal::SIGHUP) if !stopping => {
                stopping = true;
                tree.stop(grace, &mut || reap(&mut agent_status));
            }
            _ if parent_gone && !stopping => {
                stopping = true;
                say!("flocks supervisor: flocks went away; stopping the agent");
                tree.stop(grace, &mut || reap(&mut agent_status));
            }
            _ => {}
        }
        if let Some(code) = agent_status {
            // The agent is gone: stop whatever it left running.
            let left = tree.members();
            if !left.is_empty() {
                // A sandbox's PID namespace ended with it: what is left
                // there is the kernel's to tear down, not the agent's doing.
                if !stopping && !wrapped {
                    say!(
                        "flocks supervisor: the agent exited; stopping {} process(es) it left running",
                        left.len()
                    );
                }
                tree.stop(grace, &mut || reap(&mut agent_status));
            }
            if let Some(c) = contained.take() {
                c.end();
            }
            return code;
        }
    }
}

/// The agent's processes: the supervisor's descendants (but its watchdog)
/// and the members of its cgroup.
struct Tree<'a> {
    me: i32,
    watchdog: Option<i32>,
    cgroup: Option<&'a Cgroup>,
    /// The sandbox the agent runs in (`--wrapped`): spared the TERM.
    wrapper: Option<i32>,
}

impl Tree<'_> {
    fn members(&self) -> Vec<i32> {
        let mut out: Vec<i32> = proc::descendants(self.me)
            .into_iter()
            .filter(|p| Some(*p) != self.watchdog)
            .collect();
        if let Some(c) = self.cgroup {
            for p in c.members() {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// TERM, grace, KILL. A sandbox is spared the TERM (its end would KILL
    /// what it holds at once): the wait ends when what runs inside is gone.
    fn stop(&self, grace: Duration, reap: &mut dyn FnMut()) {
        let inside = || {
            let mut m = self.members();
            m.retain(|p| Some(*p) != self.wrapper);
            m
        };
        proc::stop_all(inside, grace, &mut *reap);
        self.kill(reap);
    }

    /// KILL at once.
    fn kill(&self, reap: &mut dyn FnMut()) {
        if let Some(c) = self.cgroup {
            c.kill();
        }
        proc::kill_all(|| self.members(), reap);
    }
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
pub(crate) fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}
