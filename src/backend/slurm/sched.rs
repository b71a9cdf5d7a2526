//! The Slurm commands flocks runs on the login node (`salloc`, `srun`,
//! `scancel`, `squeue`, `sinfo`, `sacct`, `sbatch --test-only`): their argv
//! (never a shell string), their environment, and a strict reading of what
//! they print.
//!
//! Each runs with flocks' environment minus the credentials' variables and
//! minus the job context of a Slurm job flocks itself may run in
//! (`SLURM_*` but `SLURM_CONF`: srun and salloc read their defaults from
//! them); in a process group of its own (a Ctrl-C on the terminal reaches
//! flocks only); with SIGPIPE ignored (when flocks is killed, `salloc` and
//! `srun` must still release the allocation, not die writing to it); and
//! with SIGHUP as its parent-death signal: when flocks is killed (`kill
//! -9`), a `salloc` still waiting for its job cancels it, and `srun` ends
//! its step (a `salloc` whose job runs ignores SIGHUP: its holder sees its
//! stdin close and the job is relinquished; SIGTERM there races salloc's
//! own revocation and can leave it spinning).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long a query of the scheduler (squeue, sinfo, scancel) may take.
pub(crate) const QUERY_LIMIT: Duration = Duration::from_secs(30);

/// Why a scheduler command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SchedError {
    /// The command is not installed on this machine.
    #[error("`{0}` is not installed here (flocks runs Slurm's commands on the login node)")]
    Missing(&'static str),
    /// The scheduler did not answer (or the command could not run).
    #[error("the Slurm scheduler does not answer: {0}")]
    NoAnswer(String),
    /// The scheduler answered no: its words.
    #[error("{0}")]
    Refused(String),
}

/// `program` with the environment, process group and signals described
/// above; `scrub` names more variables to leave out (the credentials').
pub(crate) fn command(program: &'static str, scrub: &[String]) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SLURM_") && k != "SLURM_CONF" {
            c.env_remove(k.as_ref());
        }
    }
    for v in scrub {
        c.env_remove(v);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = nix::unistd::getpid();
    // SAFETY: signal(2), prctl(2), getppid(2) and raise(3) are
    // async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigIgn,
            )
            .map_err(std::io::Error::from)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // flocks died before the line above: as if it died after.
            if nix::unistd::getppid() != parent {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP);
            }
            Ok(())
        });
    }
    c
}

/// Run `program args`, within `limit`: its stdout, or why not.
pub(crate) async fn output(
    program: &'static str,
    args: &[String],
    limit: Duration,
) -> Result<String, SchedError> {
    let mut c = command(program, &[]);
    c.args(args);
    let out = match tokio::time::timeout(limit, c.output()).await {
        Err(_) => {
            return Err(SchedError::NoAnswer(format!(
                "`{program}` did not answer within {}s",
                limit.as_secs()
            )));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SchedError::Missing(program));
        }
        Ok(Err(e)) => return Err(SchedError::NoAnswer(format!("cannot run `{program}`: {e}"))),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let words = last_words(&String::from_utf8_lossy(&out.stderr));
    Err(if no_answer(&words) {
        SchedError::NoAnswer(words)
    } else {
        SchedError::Refused(words)
    })
}

/// The scheduler's words mean it could not be reached (rather than that it
/// refused).
pub(crate) fn no_answer(words: &str) -> bool {
    [
        "Unable to contact slurm controller",
        "Socket timed out",
        "Zero Bytes were transmitted",
        "Connection refused",
        "Communication connection failure",
    ]
    .iter()
    .any(|m| words.contains(m))
}

/// The last lines a command wrote on stderr, joined (its error, usually).
pub(crate) fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    if tail.is_empty() {
        return "no message".into();
    }
    tail.join("; ").chars().take(400).collect()
}

/// One job as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub state: String,
    /// `None` for `None` (nothing to wait for).
    pub reason: Option<String>,
    pub node: Option<String>,
}

/// The `squeue -o` format of [`parse_rows`].
pub(crate) const ROW_FORMAT: &str = "%i|%T|%r|%N";

/// squeue's lines (`id|STATE|reason|nodes`), strictly: a line that does not
/// have this form is left out, and so is a field that is not a plain word.
pub(crate) fn parse_rows(text: &str) -> HashMap<String, Row> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        let [id, state, reason, node] = f[..] else {
            continue;
        };
        if !is_job_id(id) || !is_word(state) {
            continue;
        }
        let reason = Some(reason)
            .filter(|r| !r.is_empty() && *r != "None" && *r != "(null)")
            .map(|r| r.chars().take(120).collect::<String>())
            .filter(|r| r.chars().all(|c| !c.is_control()));
        let node = Some(node)
            .filter(|n| !n.is_empty() && *n != "(null)" && is_nodelist(n))
            .map(str::to_string);
        out.insert(
            id.to_string(),
            Row {
                state: state.to_string(),
                reason,
                node,
            },
        );
    }
    out
}

/// A job id as squeue prints it (a number; an array task's `N_M`).
pub(crate) fn is_job_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 24 && s.bytes().all(|b| b.is_ascii_digit() || b == b'_')
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// A node name or list (`vm`, `node[1-4,7]`).
pub(crate) fn is_nodelist(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.[],".contains(&b))
}

/// Where these jobs stand (jobs that ended recently included; jobs the
/// scheduler no longer knows are left out).
pub(crate) async fn jobs(ids: &[String]) -> Result<HashMap<String, Row>, SchedError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let args = vec![
        "-h".to_string(),
        "-t".into(),
        "all".into(),
        "-j".into(),
        ids.join(","),
        "-o".into(),
        ROW_FORMAT.into(),
    ];
    match output("squeue", &args, QUERY_LIMIT).await {
        Ok(text) => Ok(parse_rows(&text)),
        // Every id is unknown to the scheduler (they ended long ago).
        Err(SchedError::Refused(m)) if m.contains("Invalid job id") => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

/// A node's state and the reason an administrator gave
/// (`("drained", "maintenance")`), as sinfo says.
pub(crate) async fn node_state(node: &str) -> Option<(String, String)> {
    if !is_nodelist(node) {
        return None;
    }
    let args = ["-h", "-N", "-n", node, "-o", "%T|%E"].map(String::from);
    let text = output("sinfo", &args, QUERY_LIMIT).await.ok()?;
    let line = text.lines().next()?.trim();
    let (state, reason) = line.split_once('|')?;
    let reason = if reason == "none" { "" } else { reason };
    Some((state.to_string(), reason.chars().take(120).collect()))
}

/// The node cannot run jobs (drained, down, failing): its jobs were lost.
pub(crate) fn node_unusable(state: &str) -> bool {
    let s = state.trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-', '+']);
    [
        "drain",
        "down",
        "fail",
        "maint",
        "reboot",
        "unknown",
        "not_responding",
    ]
    .iter()
    .any(|w| s.contains(w))
}

/// Job states that mean the job's node or place was lost, not its work's fault.
pub(crate) fn lost_state(state: &str) -> bool {
    matches!(state, "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL")
}

/// States a job ends in (it no longer runs, and will not run again as this job).
pub(crate) fn ended_state(state: &str) -> bool {
    !matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "STOPPED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
    )
}

/// `scancel [--signal=SIG] TARGET...` (a job, or `job.step`).
pub(crate) async fn cancel(targets: &[String], signal: Option<&str>) -> Result<(), SchedError> {
    let mut args = Vec::new();
    if let Some(s) = signal {
        args.push(format!("--signal={s}"));
    }
    args.extend(targets.iter().cloned());
    output("scancel", &args, QUERY_LIMIT).await.map(|_| ())
}

/// The steps of a job that run now (`12.0`, `12.3`), without its batch and
/// extern steps.
pub(crate) async fn steps(job: &str) -> Result<Vec<String>, SchedError> {
    let args = ["-h", "-s", "-j", job, "-o", "%i"].map(String::from);
    let text = output("squeue", &args, QUERY_LIMIT).await?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|s| {
            s.split_once('.').is_some_and(|(j, st)| {
                j == job && !st.is_empty() && st.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .map(str::to_string)
        .collect())
}

/// What `sacct` recorded for a job: state, nodes, elapsed seconds. None
/// where accounting does not run (or does not know the job yet).
pub(crate) async fn accounting(job: &str) -> Option<(String, Option<String>, f64)> {
    let args = [
        "-n",
        "-X",
        "-P",
        "-j",
        job,
        "-o",
        "State,NodeList,ElapsedRaw",
    ]
    .map(String::from);
    let text = output("sacct", &args, QUERY_LIMIT).await.ok()?;
    parse_accounting(&text)
}

/// `State|NodeList|ElapsedRaw`: `CANCELLED by 0` is `CANCELLED`.
pub(crate) fn parse_accounting(text: &str) -> Option<(String, Option<String>, f64)> {
    let line = text.lines().next()?.trim();
    let f: Vec<&str> = line.split('|').collect();
    let [state, nodes, elapsed] = f[..] else {
        return None;
    };
    let state = state.split_whitespace().next()?;
    if !is_word(state) {
        return None;
    }
    let elapsed: f64 = elapsed.parse::<u64>().ok()? as f64;
    let nodes = Some(nodes)
        .filter(|n| is_nodelist(n) && *n != "None")
        .map(str::to_string);
    Some((state.to_string(), nodes, elapsed))
}

/// `sinfo`'s partitions: name (the default one's `*` removed), whether it is
/// the default, availability.
pub(crate) async fn partitions() -> Result<Vec<(String, bool, String)>, SchedError> {
    let args = ["-h", "-o", "%P|%a"].map(String::from);
    let text = output("sinfo", &args, QUERY_LIMIT).await?;
    let mut out: Vec<(String, bool, String)> = Vec::new();
    for line in text.lines() {
        let Some((p, avail)) = line.trim().split_once('|') else {
            continue;
        };
        let default = p.ends_with('*');
        let name = p.trim_end_matches('*').to_string();
        if !out.iter().any(|(n, ..)| *n == name) {
            out.push((name, default, avail.to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_rows_are_read_strictly() {
        let rows = parse_rows(
            "12|PENDING|Priority|\n13|RUNNING|None|vm\n14|PENDING|QOSMaxJobsPerUserLimit|(null)\nnonsense\n15|running|None|vm\n16|RUNNING|None|vm;rm -rf\n",
        );
        assert_eq!(rows["12"].reason.as_deref(), Some("Priority"));
        assert_eq!(rows["13"].node.as_deref(), Some("vm"));
        assert_eq!(rows["13"].reason, None);
        assert_eq!(rows["14"].reason.as_deref(), Some("QOSMaxJobsPerUserLimit"));
        assert!(!rows.contains_key("15"), "a state is an upper-case word");
        assert_eq!(rows["16"].node, None, "not a node list");
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn states_and_nodes() {
        assert!(lost_state("NODE_FAIL") && lost_state("PREEMPTED") && lost_state("BOOT_FAIL"));
        assert!(!lost_state("CANCELLED") && !lost_state("TIMEOUT"));
        assert!(ended_state("COMPLETED") && ended_state("CANCELLED"));
        assert!(!ended_state("RUNNING") && !ended_state("COMPLETING"));
        for s in [
            "drained",
            "draining",
            "down*",
            "drained*",
            "mixed+drain",
            "fail",
        ] {
            assert!(node_unusable(s), "{s}");
        }
        for s in ["idle", "mixed", "allocated", "completing"] {
            assert!(!node_unusable(s), "{s}");
        }
        assert!(is_nodelist("node[1-4,7]") && !is_nodelist("a b"));
    }

    #[test]
    fn accounting_lines() {
        assert_eq!(
            parse_accounting("CANCELLED by 0|vm|42\n"),
            Some(("CANCELLED".into(), Some("vm".into()), 42.0))
        );
        assert_eq!(
            parse_accounting("Slurm accounting storage is disabled\n"),
            None
        );
        assert_eq!(parse_accounting(""), None);
    }

    #[test]
    fn last_words_and_no_answer() {
        let w = last_words(
            "salloc: error: a\n\nsalloc: error: Unable to contact slurm controller (connect failure)\n",
        );
        assert!(no_answer(&w), "{w}");
        assert!(!no_answer(
            "salloc: error: invalid partition specified: nope"
        ));
        assert_eq!(last_words(""), "no message");
    }
}
