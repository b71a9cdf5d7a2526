//! Slurm pools against the real single-node cluster of
//! `.ci/ensure-slurm.sh` (munged, slurmctld, slurmd on this machine): jobs,
//! their limits and queue, stops, a killed flocks, a drained node, the
//! checks before a run. Nothing is faked: the agent is the fake claude, run
//! by the helper in a job step. A missing scheduler fails the tests with
//! how to get one (`cargo nextest run --profile skip-slurm` leaves them out);
//! they run one at a time (their nextest test group), since they share the
//! cluster's one node.

#[path = "support/http.rs"]
mod http;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Mirror, TestProject, code, fake_bash, text};

/// A partition of the test cluster that runs one job at a time (one CPU of
/// the node), made by the tests when missing.
const NARROW: &str = "flocks-narrow";

/// The cluster answers, or the test fails saying how to get one.
fn available() -> String {
    let out = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%N|%T"])
        .output();
    let node = out.ok().filter(|o| o.status.success()).and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .and_then(|l| l.split_once('|').map(|(n, _)| n.to_string()))
    });
    support::require(
        "a Slurm cluster answering sinfo (slurmctld, slurmd, munged on this machine)",
        node.is_some(),
        "run .ci/ensure-slurm.sh (as root)",
        Some("skip-slurm"),
    );
    let node = node.unwrap_or_default();
    // A node an earlier (killed) test left drained is resumed.
    let state = sh("sinfo", &["-h", "-N", "-n", &node, "-o", "%T"]);
    if state.contains("drain") || state.contains("down") {
        resume(&node);
    }
    node
}

fn sh(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// squeue's answer. A busy slurmctld can time a query out: that is asked
/// again, never read as an empty queue.
fn squeue(args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = Command::new("squeue").args(args).output().unwrap();
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "squeue kept failing: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn resume(node: &str) {
    let _ = Command::new("scontrol")
        .args(["update", &format!("nodename={node}"), "state=resume"])
        .output();
    support::wait_for(30, "the node to be idle again", || {
        let s = sh("sinfo", &["-h", "-N", "-n", node, "-o", "%T"]);
        !s.contains("drain") && !s.contains("down")
    });
}

/// Resumes the node when dropped (a test that drains it must leave it usable).
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        resume(&self.0);
    }
}

fn narrow_partition(node: &str) {
    let have = Command::new("scontrol")
        .args(["show", "partition", NARROW])
        .output()
        .unwrap();
    if !have.status.success() {
        let o = Command::new("scontrol")
            .args([
                "create",
                &format!("PartitionName={NARROW}"),
                &format!("Nodes={node}"),
                "MaxCPUsPerNode=1",
                "MaxTime=INFINITE",
                "State=UP",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A project whose one pool is a Slurm pool (`pool` holds its keys).
/// `{shared}` in `pool` is a directory of the test (the cluster's shared
/// filesystem is this machine's).
fn project(top: &str, pool: &str) -> TestProject {
    let p = TestProject::new("");
    let shared = p.tmp.path().join("shared");
    let pool = pool.replace("{shared}", &shared.display().to_string());
    let text = format!(
        "{top}\n[[containers]]\nname = \"cluster\"\nbackend = \"slurm\"\nremote_dir = \"{}\"\n{pool}\n\n[agent]\ncommand = \"{}\"\n",
        shared.display(),
        support::fake_claude().display()
    );
    std::fs::write(p.repo.join("flocks.toml"), text).unwrap();
    p
}

/// The project key, as flocks computes it (the comment of its jobs).
fn key(p: &TestProject) -> String {
    use sha2::Digest;
    let dir = p.repo.join(".flocks");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let d = sha2::Sha256::digest(dir.display().to_string().as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// One job of the project as squeue shows it now.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    name: String,
    state: String,
    reason: String,
    comment: String,
}

fn jobs(key: &str) -> Vec<Job> {
    squeue(&["-h", "-o", "%i|%j|%T|%r|%k"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().splitn(5, '|').collect();
            let [id, name, state, reason, comment] = f[..] else {
                return None;
            };
            comment.contains(&format!("project={key}")).then(|| Job {
                id: id.into(),
                name: name.into(),
                state: state.into(),
                reason: reason.into(),
                comment: comment.into(),
            })
        })
        .collect()
}

/// Samples the project's jobs every 100 ms until dropped: the most that
/// ran at once, the most that were pending or running, and every reason a
/// pending job had.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(usize, usize, Vec<String>)>>,
}

impl Sampler {
    fn start(key: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut running, mut held, mut reasons) = (0, 0, Vec::new());
            while !s.load(Ordering::SeqCst) {
                let js = jobs(&key);
                running = running.max(js.iter().filter(|j| j.state == "RUNNING").count());
                held = held.max(
                    js.iter()
                        .filter(|j| j.state == "RUNNING" || j.state == "PENDING")
                        .count(),
                );
                for j in js.iter().filter(|j| j.state == "PENDING") {
                    if !reasons.contains(&j.reason) {
                        reasons.push(j.reason.clone());
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (running, held, reasons)
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn status_json(p: &TestProject) -> Value {
    let o = p.flocks(&["status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

fn events(p: &TestProject) -> Vec<Value> {
    std::fs::read_to_string(p.repo.join(".flocks/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Processes (not zombies) whose environment holds `needle`.
fn procs_with_env(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !support::pid_alive(pid as i32) {
            continue;
        }
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env
                .split(|b| *b == 0)
                .any(|kv| String::from_utf8_lossy(kv).contains(needle))
        {
            out.push(pid);
        }
    }
    out
}

/// The children of `pid` whose command line holds `needle`.
fn children(pid: u32, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for k in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(k);
            }
        }
    }
    out
}

#[test]
fn six_tasks_run_three_jobs_at_a_time_all_land_and_planted_hooks_stay_in_jobs() {
    let node = available();
    let p = project(
        "kill_grace_secs = 1",
        "partition = \"debug\"\nmax_worktrees = 3",
    );
    // t1 is hostile: it plants hooks in the shared mirror, where t4..t6's
    // ops go after it.
    let (plant, hooks) = plant_hooks(&p);
    p.tasks(
        &(1..=6)
            .map(|i| {
                let mut prompt = format!(
                    "{}@fake commit t{i}.txt hello-{i}",
                    fake_bash("git config gc.auto > gc.txt && git add gc.txt")
                );
                if i == 1 {
                    prompt = format!("@fake bash 'sh {}'\n{prompt}", plant.display());
                }
                let after: Vec<&str> = if i > 3 { vec!["t1"] } else { vec![] };
                json!({"id": format!("t{i}"), "prompt": prompt, "depends_on": after})
            })
            .collect::<Vec<_>>(),
    );
    let sampler = Sampler::start(key(&p));
    let o = p.flocks(&["run", "--no-progress"]);
    let (running, held, _) = sampler.finish();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(running >= 1, "squeue never showed a job of the run");
    assert!(
        held <= 3,
        "{held} jobs were pending or running at once (max_worktrees = 3)"
    );
    // Each attempt is one job, named for it, whose accounting is in the
    // status, the events and the report.
    let v = status_json(&p);
    let mut ids = std::collections::BTreeSet::new();
    for t in v["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "succeeded", "{t}");
        // Agents in jobs run with gc.auto=0 (flocks' upkeep is the gc).
        let id = t["id"].as_str().unwrap();
        assert_eq!(p.git(&["show", &format!("flocks/{id}:gc.txt")]), "0");
        let job = &t["job"];
        assert_eq!(job["node"], node.as_str(), "{t}");
        assert_eq!(job["state"], "COMPLETED", "{t}");
        assert!(job["elapsed_secs"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["pending_secs"].as_f64().is_some(), "{t}");
        ids.insert(job["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 6, "one job per attempt");
    let evs = events(&p);
    for i in 1..=6 {
        let task = format!("t{i}");
        let states: Vec<&str> = evs
            .iter()
            .filter(|e| e["event"] == "job" && e["task"] == task.as_str())
            .map(|e| e["job"]["state"].as_str().unwrap())
            .collect();
        assert!(states.contains(&"RUNNING"), "{task}: {states:?}");
        assert_eq!(states.last(), Some(&"COMPLETED"), "{task}: {states:?}");
    }
    let report = p.flocks(&["report", "-o", "report.html"]);
    assert_eq!(code(&report), 0, "{}", text(&report));
    let html = std::fs::read_to_string(p.repo.join("report.html")).unwrap();
    for id in &ids {
        assert!(
            html.contains(&format!("Slurm job {id} on {node}: COMPLETED, ran ")),
            "the report names job {id}"
        );
    }
    // Every task's work lands.
    let land = p.flocks(&["land", "-y"]);
    assert_eq!(code(&land), 0, "{}", text(&land));
    for i in 1..=6 {
        assert_eq!(
            p.git(&["show", &format!("main:t{i}.txt")]),
            format!("hello-{i}")
        );
    }
    assert!(jobs(&key(&p)).is_empty(), "no job of the run is left");
    // Every planted hook that ran, ran inside a job (where the agent
    // itself runs): flocks never runs git in or against `remote_dir` on
    // the login node.
    let lines = std::fs::read_to_string(&hooks).unwrap_or_default();
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("reference-transaction")),
        "the planted hooks ran (in later tasks' jobs): {lines:?}"
    );
    for l in lines.lines() {
        assert!(
            !l.ends_with(" none"),
            "a planted hook ran outside a job: {l}"
        );
    }
}

/// Issue 25: the pool's mirror on the shared filesystem is packed by
/// flocks' upkeep between waves, through the helper's `pack` op in a step
/// of one of the pool's jobs (flocks never runs git in `remote_dir` on the
/// login node), and the events say so. A one-slot pool has no job running
/// when a wave ends: the next job granted packs it, beside its agent. Its
/// loose refs are packed past 64, its loose objects repacked past the
/// mirror's own `gc.auto`, and nothing a task's worktree borrows is
/// dropped: the later tasks still succeed and come back.
#[test]
fn the_pools_mirror_on_the_shared_filesystem_is_packed_between_waves() {
    let node = available();
    let p = project(
        "kill_grace_secs = 1",
        "partition = \"debug\"\nmax_worktrees = 1",
    );
    let commit = |i: usize| json!({"id": format!("t{i}"), "prompt": format!("@fake commit t{i}.txt hello-{i}")});
    p.tasks(&[commit(1)]);
    let o = p.flocks(&["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // A mirror that many tasks used: 80 loose refs and a past-due gc.auto.
    let mirror = Mirror {
        dir: p.tmp.path().join("shared").join(key(&p)).join("mirror.git"),
    };
    assert!(mirror.dir.is_dir(), "{}", mirror.dir.display());
    let start = mirror.git(&["rev-parse", "refs/flocks/start/t1"]);
    let blob = mirror.age("old", &p.out_file("blobs"));

    // A wave is the pool's one slot: each ended attempt ends one.
    p.tasks(&(2..=4).map(commit).collect::<Vec<_>>());
    let o = p.flocks(&["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    let out = text(&o);
    assert_eq!(code(&o), 0, "{out}");
    let upkeep: Vec<Value> = events(&p)
        .into_iter()
        .filter(|v| v["event"] == "upkeep" && v["pool"].is_string())
        .collect();
    assert!(
        !upkeep.is_empty(),
        "no upkeep event of the pool's mirror: {:?}",
        events(&p)
            .iter()
            .map(|v| v["event"].clone())
            .collect::<Vec<_>>()
    );
    let first = &upkeep[0];
    assert_eq!(first["pool"], "cluster", "{first}");
    assert_eq!(first["host"].as_str(), Some(node.as_str()), "{first}");
    assert!(first["packed_refs"].as_u64().unwrap() > 64, "{first}");
    assert_eq!(first["gc"], true, "{first}");
    assert!(first["secs"].as_f64().is_some(), "{first}");
    assert!(
        out.contains("pool cluster's mirror on") && out.contains("packed in the background"),
        "{out}"
    );
    // Packed: no loose refs, nothing loose in objects/17, and every object
    // kept (the unreachable blobs too: -k).
    assert_eq!(mirror.loose_refs(), 0);
    assert_eq!(mirror.loose_in_17(), 0);
    mirror.git(&["cat-file", "-e", &start]);
    mirror.git(&["cat-file", "-e", &blob]);
    for i in 2..=4 {
        let id = format!("t{i}");
        assert_eq!(p.status_of(&id), "success", "{out}");
        assert_eq!(
            p.git(&["show", &format!("flocks/{id}:{id}.txt")]),
            format!("hello-{i}")
        );
    }

    // Two slots, and a job that still runs when a wave ends (two short
    // attempts beside a long one): the pack runs in a step of it then.
    let toml = p.repo.join("flocks.toml");
    let text_toml = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text_toml.replace("max_worktrees = 1", "max_worktrees = 2"),
    )
    .unwrap();
    let o = p.flocks(&["trust"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    for i in 0..80 {
        mirror.git(&["update-ref", &format!("refs/flocks/start/again{i}"), &start]);
    }
    assert!(mirror.loose_refs() > 64);
    let before = events(&p).len();
    let mut tasks =
        vec![json!({"id": "long", "prompt": "@fake sleep 8\n@fake commit long.txt done"})];
    tasks.extend((5..=6).map(commit));
    p.tasks(&tasks);
    let o = p.flocks(&["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    let out = text(&o);
    assert_eq!(code(&o), 0, "{out}");
    let evs: Vec<Value> = events(&p).split_off(before);
    let at = |f: &dyn Fn(&Value) -> bool| evs.iter().position(f);
    let packed = at(&|v| v["event"] == "upkeep" && v["pool"] == "cluster");
    let long_ended = at(&|v| v["event"] == "finished" && v["task"] == "long");
    let names: Vec<String> = evs
        .iter()
        .map(|v| format!("{} {}", v["event"], v["task"]))
        .collect();
    assert!(
        packed.is_some() && packed < long_ended,
        "packed while long's job ran: {names:?}"
    );
    let ev = &evs[packed.unwrap()];
    assert!(ev["packed_refs"].as_u64().unwrap() >= 80, "{ev}");
    assert_eq!(mirror.loose_refs(), 0);
    for id in ["long", "t5", "t6"] {
        assert_eq!(p.status_of(id), "success", "{out}");
    }
    assert!(jobs(&key(&p)).is_empty(), "no job of the run is left");
}

#[test]
fn a_timed_out_job_is_cancelled_and_leaves_no_process() {
    available();
    let p = project(
        "agent_timeout_secs = 2\nkill_grace_secs = 1",
        "partition = \"debug\"",
    );
    let pidfile = p.out_file("orphan.pid");
    p.tasks(&[json!({"id": "slow", "prompt": format!(
        "@fake orphan {}\n@fake ignore-term\n@fake hang",
        pidfile.display()
    )})]);
    let key = key(&p);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_eq!(p.status_of("slow"), "timed_out", "{}", text(&o));
    // The agent ignored SIGTERM and left a grandchild in a session of its
    // own: neither outlives the attempt.
    let orphan = support::read_pid(&pidfile);
    assert!(
        !support::pid_alive(orphan),
        "the agent's grandchild {orphan} outlived its job"
    );
    assert!(
        procs_with_env(&format!("FLOCKS_ATTEMPT={key}:slow:")).is_empty(),
        "a process of the attempt is still running"
    );
    // Its job was ended by scancel: nothing of it is queued or running.
    let t = p.task("slow");
    let job = &t["attempts"][0]["job"];
    assert_eq!(job["state"], "CANCELLED", "{t}");
    assert!(jobs(&key).is_empty(), "{:?}", jobs(&key));
    let log = std::fs::read_to_string(p.repo.join(".flocks/logs/slow/1.log")).unwrap();
    assert!(log.contains("agent_timeout_secs reached"), "{log}");
}

#[test]
fn kill_9_of_flocks_leaves_no_job_once_the_next_run_starts() {
    let _node = available();
    // Two pools: one whose job runs, one whose job waits (its begin time
    // is ten minutes away).
    let top = "kill_grace_secs = 1";
    let p = project(
        top,
        "partition = \"debug\"\n\n[[containers]]\nname = \"later\"\nbackend = \"slurm\"\npartition = \"debug\"\nsbatch_args = [\"--begin=now+600\"]\nremote_dir = \"{shared}/later\"\n",
    );
    // Until the test says the second run started, agents hang (and say
    // they got there).
    let (second, there) = (p.out_file("second-run"), p.out_file("there"));
    p.tasks(&["a", "b"].map(|id| {
        json!({"id": id, "prompt": format!(
            "@fake unless-exists {s} write {t}-{id} x\n@fake unless-exists {s} hang\n@fake commit {id}.txt {id}",
            s = second.display(),
            t = there.display()
        )})
    }));
    let key = key(&p);
    let mut flocks = p.spawn(&["run", "--no-progress"]);
    let mut running = None;
    let mut pending = None;
    support::wait_for(60, "one job running its agent, one pending", || {
        let js = jobs(&key);
        running = js.iter().find(|j| j.state == "RUNNING").cloned();
        pending = js.iter().find(|j| j.state == "PENDING").cloned();
        // The running job's agent reached its `hang`.
        running.as_ref().is_some_and(|r| {
            let task = r
                .name
                .trim_end_matches("-1")
                .rsplit('-')
                .next()
                .unwrap_or("");
            p.out_file(&format!("there-{task}")).exists()
        }) && pending.as_ref().is_some_and(|j| j.reason == "BeginTime")
    });
    let (running, pending) = (running.unwrap(), pending.unwrap());
    // `status` says which job waits, and why (once flocks has polled the
    // queue: squeue may show the job before flocks does, and flocks says a
    // job is pending before it has the reason).
    let mut v = serde_json::Value::Null;
    support::wait_for(30, "status showing the pending job and its reason", || {
        v = status_json(&p);
        v["tasks"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["job"]["state"] == "PENDING" && !t["job"]["reason"].is_null())
        })
    });
    let waiting = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["job"]["state"] == "PENDING")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(waiting["job"]["reason"], "BeginTime", "{waiting}");
    assert!(
        waiting["activity"]
            .as_str()
            .unwrap()
            .starts_with("pending in Slurm: BeginTime"),
        "{waiting}"
    );
    let shown = p.flocks(&["status"]);
    assert!(
        text(&shown).contains("pending in Slurm: BeginTime"),
        "{}",
        text(&shown)
    );

    // The pending job's salloc dies with flocks (as in a kill of the whole
    // process tree): only the next run can end that job.
    let pid = flocks.id();
    let sallocs = children(pid, "salloc");
    let pending_salloc = sallocs
        .iter()
        .copied()
        .find(|c| {
            let cmd = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(&pending.name)
        })
        .expect("the pending job's salloc");
    let srun = children(pid, "srun");
    assert!(!srun.is_empty(), "the agent's step is an srun of flocks");
    // flocks is frozen first: were it to see its salloc die, it would
    // cancel that job itself (as it should), and the test would not test
    // what a kill of the whole tree leaves.
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(pending_salloc as i32), Signal::SIGKILL).unwrap();
    flocks.kill().unwrap();
    let _ = flocks.wait();
    // Nothing of flocks keeps running: its sallocs and sruns end, the
    // helper ends the agent (its stream closed), the running job ends.
    support::wait_for(30, "flocks' processes and the agent to end", || {
        sallocs
            .iter()
            .chain(&srun)
            .all(|c| !support::pid_alive(*c as i32))
            && procs_with_env(&format!("FLOCKS_ATTEMPT={key}:")).is_empty()
    });
    support::wait_for(30, "the running job to end", || {
        !jobs(&key).iter().any(|j| j.id == running.id)
    });
    assert!(
        jobs(&key).iter().any(|j| j.id == pending.id),
        "the pending job whose salloc was killed stays queued"
    );
    let old_run = pending.comment.rsplit("run=").next().unwrap().to_string();

    // The next run (without the begin time) cancels it first.
    std::fs::write(&second, "").unwrap();
    let text_before = std::fs::read_to_string(p.repo.join("flocks.toml")).unwrap();
    std::fs::write(
        p.repo.join("flocks.toml"),
        text_before.replace("\"--begin=now+600\"", ""),
    )
    .unwrap();
    let trust = p.flocks(&["trust"]);
    assert_eq!(code(&trust), 0, "{}", text(&trust));
    let o = p.flocks(&["run", "--no-progress"]);
    let out = text(&o);
    assert!(
        out.contains("cancelled 1 Slurm job left by an earlier flocks run"),
        "{out}"
    );
    assert!(
        !jobs(&key)
            .iter()
            .any(|j| j.comment.ends_with(&format!("run={old_run}"))),
        "a job of the killed run is left"
    );
    assert_eq!(code(&o), 0, "{out}");
    assert_eq!(p.status_of("a"), "success");
    assert_eq!(p.status_of("b"), "success");
}

#[test]
fn jobs_beyond_the_partition_limit_wait_pending_with_a_reason() {
    let node = available();
    narrow_partition(&node);
    // Two jobs at once for flocks, one at a time for the partition. The
    // stall watchdog (2 s) starts when a job runs: a long wait in the queue
    // is not a stalled agent. Each agent runs over 3 s (saying something
    // every 1.5 s), so the second job waits longer than the watchdog.
    let p = project(
        "kill_grace_secs = 1\nstall_timeout_secs = 2",
        &format!("partition = \"{NARROW}\"\nmax_worktrees = 2"),
    );
    p.tasks(
        &(1..=2)
            .map(|i| json!({"id": format!("n{i}"), "prompt": format!("@fake sleep 1.5\n@fake bash true\n@fake sleep 1.5\n@fake commit n{i}.txt {i}")}))
            .collect::<Vec<_>>(),
    );
    let sampler = Sampler::start(key(&p));
    let child = p.spawn(&["run", "--no-progress"]);
    let mut seen = None;
    support::wait_for(60, "a task pending in Slurm with its reason", || {
        let v = status_json(&p);
        seen = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["job"]["state"] == "PENDING" && t["job"]["reason"].is_string())
            .cloned();
        seen.is_some()
    });
    let seen = seen.unwrap();
    assert_eq!(
        seen["status"], "running",
        "it holds one of the pool's slots"
    );
    let reason = seen["job"]["reason"].as_str().unwrap();
    assert!(["Resources", "Priority"].contains(&reason), "{seen}");
    assert!(
        seen["activity"]
            .as_str()
            .unwrap()
            .starts_with(&format!("pending in Slurm: {reason}")),
        "{seen}"
    );
    let out = child.wait_with_output().unwrap();
    let (running, held, reasons) = sampler.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(running, 1, "the partition runs one job at a time");
    assert!(held >= 2, "flocks asked for more jobs than ran");
    assert!(!reasons.is_empty());
    // Pending time is counted apart: the second task waited for the first.
    let mut waited = 0;
    for i in 1..=2 {
        let t = p.task(&format!("n{i}"));
        assert_eq!(t["status"]["outcome"]["kind"], "success", "{t}");
        let a = &t["attempts"][0];
        let pending = a["pending_secs"].as_f64().unwrap();
        if pending > 2.0 {
            waited += 1;
        }
    }
    assert!(waited >= 1, "a task waited longer than the stall timeout");
    let pending_events: Vec<Value> = events(&p)
        .into_iter()
        .filter(|e| {
            e["event"] == "job" && e["job"]["state"] == "PENDING" && e["job"]["reason"].is_string()
        })
        .collect();
    assert!(!pending_events.is_empty());
    let finished: BTreeMap<String, f64> = events(&p)
        .iter()
        .filter(|e| e["event"] == "finished")
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_string(),
                e["duration_secs"].as_f64().unwrap(),
            )
        })
        .collect();
    for (task, run_secs) in &finished {
        let a = &p.task(task)["attempts"][0];
        let total = {
            let s =
                chrono::DateTime::parse_from_rfc3339(a["started_at"].as_str().unwrap()).unwrap();
            let e = chrono::DateTime::parse_from_rfc3339(a["ended_at"].as_str().unwrap()).unwrap();
            (e - s).num_milliseconds() as f64 / 1000.0
        };
        let pending = a["pending_secs"].as_f64().unwrap();
        assert!(
            *run_secs <= total - pending + 0.5,
            "{task}: run {run_secs}s, total {total}s, pending {pending}s"
        );
    }
}

#[test]
fn flocks_stop_cancels_a_job_still_pending() {
    available();
    let p = project(
        "kill_grace_secs = 1",
        "partition = \"debug\"\nsbatch_args = [\"--begin=now+600\"]",
    );
    p.tasks(&[json!({"id": "w", "prompt": "@fake commit w.txt w"})]);
    let key = key(&p);
    let child = p.spawn(&["run", "--no-progress"]);
    support::wait_for(60, "the job to wait in the queue", || {
        jobs(&key).iter().any(|j| j.state == "PENDING")
    });
    let stop = p.flocks(&["stop"]);
    assert_eq!(code(&stop), 0, "{}", text(&stop));
    let out = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.status_of("w"), "interrupted", "{out}");
    let a = &p.task("w")["attempts"][0];
    assert_eq!(a["outcome"]["kind"], "interrupted", "{a}");
    assert_eq!(a["job"]["state"], "CANCELLED", "it never ran: {a}");
    let log = std::fs::read_to_string(p.repo.join(".flocks/logs/w/1.log")).unwrap();
    assert!(
        log.contains("the job waiting in the scheduler's queue was cancelled"),
        "{log}"
    );
    // scancel was started before the run ended; the controller takes the
    // job out of the queue a moment later (it would wait 600 s otherwise).
    support::wait_for(15, "the cancelled job to leave the queue", || {
        jobs(&key).is_empty()
    });
}

#[test]
fn a_drained_node_mid_job_is_host_lost_and_runs_again_without_a_retry() {
    let node = available();
    let p = project(
        "kill_grace_secs = 1\nmax_retries = 0",
        "partition = \"debug\"",
    );
    let once = p.out_file("once");
    p.tasks(&[json!({"id": "d", "prompt": format!("@fake once {} hang\n@fake commit d.txt d", once.display())})]);
    let key = key(&p);
    let child = p.spawn(&["run", "--supervise", "--no-progress"]);
    let mut job = None;
    support::wait_for(60, "the agent to run in its job", || {
        job = jobs(&key).into_iter().find(|j| j.state == "RUNNING");
        job.is_some() && once.exists()
    });
    let job = job.unwrap();
    let guard = Resume(node.clone());
    let drained = Command::new("scontrol")
        .args([
            "update",
            &format!("nodename={node}"),
            "state=drain",
            "reason=flocks-test",
        ])
        .output()
        .unwrap();
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let killed = Command::new("scancel")
        .args(["--signal=KILL", &job.id])
        .output()
        .unwrap();
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    // host_lost, and the task is queued again: its next job waits for a node.
    support::wait_for(
        60,
        "the second attempt's job to wait for the drained node",
        || {
            events(&p)
                .iter()
                .any(|e| e["event"] == "job" && e["attempt"] == 2 && e["job"]["state"] == "PENDING")
        },
    );
    drop(guard);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let t = p.task("d");
    let a = t["attempts"].as_array().unwrap();
    assert_eq!(a[0]["outcome"]["kind"], "host_lost", "{t}");
    let reason = a[0]["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&node) && reason.contains("drain"),
        "{reason}"
    );
    assert_eq!(a[1]["outcome"]["kind"], "success", "{t}");
    assert_eq!(p.git(&["show", "flocks/d:d.txt"]), "d");
}

/// A script a hostile agent runs: hooks and an fsmonitor in the shared
/// mirror's git setup (where the next tasks' ops go), each logging whether
/// it runs inside a Slurm job.
fn plant_hooks(p: &TestProject) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = p.out_file("hooks.log");
    let plant = p.out_file("plant.sh");
    std::fs::write(
        &plant,
        format!(
            r#"set -e
c=$(git rev-parse --path-format=absolute --git-common-dir)
for h in reference-transaction post-checkout; do
  printf '#!/bin/sh\necho "$(basename "$0") ${{SLURM_JOB_ID:-none}}" >>{log}\ncat >/dev/null\nexit 0\n' >"$c/hooks/$h"
  chmod +x "$c/hooks/$h"
done
printf '#!/bin/sh\necho "fsmonitor ${{SLURM_JOB_ID:-none}}" >>{log}\nexit 1\n' >"$c/fsmon"
chmod +x "$c/fsmon"
git config --file "$c/config" core.fsmonitor "$c/fsmon"
"#,
            log = log.display()
        ),
    )
    .unwrap();
    (plant, log)
}

#[test]
fn a_bad_partition_is_refused_before_any_job() {
    available();
    let p = project("", "partition = \"no-such-partition\"\nmax_worktrees = 2");
    p.tasks(&[json!({"id": "x", "prompt": "@fake commit x.txt x"})]);
    let key = key(&p);
    for args in [&["run", "--dry-run"][..], &["run", "--no-progress"]] {
        let o = p.flocks(args);
        let out = text(&o);
        assert_eq!(code(&o), 2, "{args:?}: {out}");
        assert!(out.contains("flocks.toml:"), "{out}");
        assert!(out.contains("containers.partition"), "{out}");
        assert!(out.contains("no-such-partition"), "{out}");
    }
    assert!(jobs(&key).is_empty(), "no job was submitted");
    assert!(p.task_count() == 0, "nothing ran");

    // The partition fixed, the dry run says how many jobs it submits at most.
    let p = project("max_agents = 2", "partition = \"debug\"\nmax_worktrees = 4");
    p.tasks(&[json!({"id": "x", "prompt": "@fake commit x.txt x"})]);
    let o = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("slurm: pool cluster submits at most 2 jobs at once in partition debug"),
        "{}",
        text(&o)
    );
}

/// A Slurm pool with a flocks credential: a loopback `[proxy] listen` is a
/// config error naming the key, before any job; listening on every
/// address, the agent on the compute node reaches the proxy at the login
/// node's hostname with a token, and the upstream gets the real key.
#[test]
fn slurm_agents_reach_the_proxy_at_the_login_nodes_address() {
    available();
    let api = http::Server::start(http::Answer::Status(200));
    let key_text = format!("sk-ant-api03-SLURMPROXY-{}", std::process::id());
    let creds = "[[credentials]]\nname = \"k\"\nenv = \"SLURM_TEST_KEY\"\nkind = \"api_key\"\n";
    let upstream = format!("[proxy]\nupstream = \"http://127.0.0.1:{}\"\n", api.port);
    let mut p = project(
        &format!("{creds}{upstream}"),
        "partition = \"debug\"\ncredential = \"k\"",
    );
    p.env.push(("SLURM_TEST_KEY".into(), key_text.clone()));
    let o = p.out.display().to_string();
    p.tasks(&[json!({"id": "m", "prompt": format!(
        "@fake api fail out={o}/api.jsonl\n@fake env ANTHROPIC_BASE_URL {o}/base\n@fake env ANTHROPIC_API_KEY {o}/token\n@fake commit m.txt m")})]);
    let k = key(&p);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("field `proxy.listen`"),
        "{}",
        text(&out)
    );
    assert!(jobs(&k).is_empty(), "no job was submitted");

    let toml = std::fs::read_to_string(p.path("flocks.toml")).unwrap();
    std::fs::write(
        p.path("flocks.toml"),
        toml.replace(&upstream, &format!("{upstream}listen = \"0.0.0.0:0\"\n")),
    )
    .unwrap();
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let base = std::fs::read_to_string(p.out_file("base")).unwrap();
    let host = sh("hostname", &[]).trim().to_string();
    assert!(
        base.starts_with(&format!("http://{host}:")),
        "the login node's hostname: {base}"
    );
    let token = std::fs::read_to_string(p.out_file("token")).unwrap();
    assert!(
        token.starts_with("flocks-") && !token.contains(&key_text),
        "{token}"
    );
    let asked = api.requests_to("/v1/messages");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].headers["x-api-key"], key_text);
    assert_eq!(p.status_of("m"), "success");
}

#[test]
fn hosts_check_asks_the_scheduler_and_a_compute_node() {
    let node = available();
    let p = project("", "partition = \"debug\"");
    let o = p.flocks(&["hosts", "check"]);
    let out = text(&o);
    assert_eq!(code(&o), 0, "{out}");
    assert!(out.contains("scheduler   answers (sinfo)"), "{out}");
    assert!(out.contains("partition   debug"), "{out}");
    assert!(out.contains(&format!("writable from node {node}")), "{out}");
    assert!(out.contains("git version"), "{out}");
    assert!(out.contains("fake-claude"), "{out}");
    let p = project("", "partition = \"nope\"");
    let o = p.flocks(&["hosts", "check"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("`nope` does not exist"), "{}", text(&o));
}

trait Count {
    fn task_count(&self) -> usize;
}

impl Count for TestProject {
    fn task_count(&self) -> usize {
        let path = self.repo.join(".flocks/state.json");
        if !Path::new(&path).exists() {
            return 0;
        }
        self.state()["tasks"].as_array().map_or(0, Vec::len)
    }
}

#[test]
fn slurm_keys_are_checked_where_they_are_written() {
    // No scheduler needed: these are config errors.
    let p = TestProject::new("");
    std::fs::write(
        p.repo.join("flocks.toml"),
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\npartition = \"gpu\"\n",
    )
    .unwrap();
    p.tasks(&[json!({"id": "x", "prompt": "x"})]);
    let o = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("flocks.toml:5"), "{}", text(&o));
    assert!(
        text(&o).contains("`partition` belongs to slurm pools"),
        "{}",
        text(&o)
    );
    std::fs::write(
        p.repo.join("flocks.toml"),
        "[[containers]]\nname = \"c\"\nbackend = \"slurm\"\nsbatch_args = \"--mem=8G\"\n",
    )
    .unwrap();
    let o = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("flocks.toml:4"), "{}", text(&o));
    assert!(text(&o).contains("sbatch_args"), "{}", text(&o));
}
