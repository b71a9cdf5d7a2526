//! Finding and stopping process trees through /proc: the descendants of a
//! process, and processes that carry an attempt tag in their environment.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable that tags every process of an attempt, so that
/// survivors can be found after flocks itself was killed.
pub(crate) const TAG_VAR: &str = "FLOCKS_ATTEMPT";

/// pid -> (ppid, is_zombie) for every process we can see.
fn process_table() -> HashMap<i32, (i32, bool)> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: parse after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.insert(pid, (ppid, state == "Z" || state == "X"));
    }
    out
}

/// Live (non-zombie) descendants of `root`, parents before children.
pub(crate) fn descendants(root: i32) -> Vec<i32> {
    let table = process_table();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &table {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    let mut seen = HashSet::new();
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                if !table[&c].1 {
                    out.push(c);
                }
                queue.push(c);
            }
        }
    }
    out
}

/// Processes whose environment holds `FLOCKS_ATTEMPT=<value>` with `value`
/// starting with `prefix`.
pub(crate) fn tagged(prefix: &str) -> Vec<i32> {
    let needle = format!("{}={prefix}", TAG_VAR);
    let me = std::process::id() as i32;
    let table = process_table();
    let mut out = Vec::new();
    for (&pid, &(_, zombie)) in &table {
        if zombie || pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|var| var.starts_with(needle.as_bytes()))
        {
            out.push(pid);
        }
    }
    out
}

pub(crate) fn signal_all(pids: &[i32], sig: Signal) {
    for &p in pids {
        let _ = kill(Pid::from_raw(p), sig);
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL, for processes found by `find`
/// (called again each round, so that children started meanwhile are caught).
/// `reap` runs while waiting (a parent must reap its own children).
pub(crate) fn stop_all(
    mut find: impl FnMut() -> Vec<i32>,
    grace: Duration,
    mut reap: impl FnMut(),
) {
    let pids = find();
    if pids.is_empty() {
        return;
    }
    signal_all(&pids, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        reap();
        let left = find();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        // Newly started processes get the TERM too.
        signal_all(&left, Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_all(find, reap);
}

/// SIGKILL until none is left (bounded).
pub(crate) fn kill_all(mut find: impl FnMut() -> Vec<i32>, mut reap: impl FnMut()) {
    for _ in 0..100 {
        let left = find();
        if left.is_empty() {
            return;
        }
        signal_all(&left, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(20));
        reap();
    }
}
