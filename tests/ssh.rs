//! The SSH and exe.dev backends against real sshd processes on 127.0.x.y,
//! started (and stopped, by PID) by the tests. They fail with a message when
//! the machine cannot run them (`.ci/ensure-sshd.sh` installs OpenSSH), or
//! are left out with `cargo nextest run --profile skip-ssh`.

#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sshd::TestSshd;
use support::{Mirror, TestProject, fake_bash, fake_claude, text};

/// True, or the test fails saying what is missing (never a silent pass).
fn available() -> bool {
    support::require(
        "root, /usr/sbin/sshd, ssh and ssh-keygen (test sshds run on 127.0.x.y)",
        TestSshd::available(),
        "install OpenSSH with .ci/ensure-sshd.sh and run the tests as root",
        Some("skip-ssh"),
    );
    true
}

fn toml_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An ssh pool for a test host; `extra` lines go into its table.
fn ssh_pool(name: &str, h: &TestSshd, slots: usize, extra: &str) -> String {
    let mut opts = h.ssh_options_without_identity();
    opts.extend(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"].map(String::from));
    format!(
        "[[containers]]\nname = \"{name}\"\nbackend = \"ssh\"\nhost = \"{}\"\nmax_worktrees = {slots}\nidentity_file = \"{}\"\nremote_dir = \"~/flocks\"\nssh_options = [{}]\n{extra}\n",
        h.host(),
        h.key_path().display(),
        toml_list(&opts)
    )
}

/// flocks.toml from scratch (the shared builder fixes the timeouts).
fn write_config(p: &TestProject, top: &str, pools: &str) {
    let text = format!(
        "{top}\n{pools}\n[agent]\ncommand = \"{}\"\n",
        fake_claude().display()
    );
    std::fs::write(p.repo.join("flocks.toml"), text).unwrap();
}

fn project(top: &str, pools: &str) -> TestProject {
    let p = TestProject::new("");
    write_config(&p, top, pools);
    p
}

fn run(p: &TestProject, args: &[&str]) -> (i32, String) {
    let o = p.flocks(args);
    (o.status.code().unwrap_or(-1), text(&o))
}

fn attempts(p: &TestProject, id: &str) -> Vec<Value> {
    p.task(id)["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Processes (not zombies) whose environment holds `needle`.
fn procs_with_env(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if zombie {
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

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Every file under `dir` whose content holds `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn a_run_over_two_hosts_lands_locally() {
    available();
    let a = TestSshd::start_any();
    let b = TestSshd::start_any();
    let pools = ssh_pool("a", &a, 2, "") + &ssh_pool("b", &b, 2, "");
    let p = project("kill_grace_secs = 1", &pools);
    p.tasks(
        &(1..=4)
            .map(|i| json!({"id": format!("t{i}"), "prompt": format!("@fake sleep 0.5\n{}@fake commit t{i}.txt hello-{i}", fake_bash("git config gc.auto > gc.txt && git add gc.txt"))}))
            .collect::<Vec<_>>(),
    );
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 0, "{out}");
    let mut pools_used = std::collections::BTreeSet::new();
    for i in 1..=4 {
        let id = format!("t{i}");
        assert_eq!(p.status_of(&id), "success", "{out}");
        // The commit is on the local branch, and it is the recorded tip.
        let content = p.git(&["show", &format!("flocks/{id}:{id}.txt")]);
        assert_eq!(content, format!("hello-{i}"));
        // The agent ran with gc.auto=0 (flocks' upkeep is the gc).
        assert_eq!(p.git(&["show", &format!("flocks/{id}:gc.txt")]), "0");
        let at = &attempts(&p, &id)[0];
        assert_eq!(
            at["end_tip"].as_str().unwrap(),
            p.git(&["rev-parse", &format!("flocks/{id}")])
        );
        assert_eq!(
            at["start_commit"].as_str().unwrap(),
            p.git(&["rev-parse", "main"])
        );
        pools_used.insert(at["pool"].as_str().unwrap().to_string());
        // The agent's output streamed into the local log.
        let logs = p.flocks(&["logs", &id, "--raw"]);
        assert!(
            text(&logs).contains("Fake agent finished"),
            "{}",
            text(&logs)
        );
    }
    assert_eq!(pools_used.len(), 2, "both hosts were used");
    let status = p.flocks(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "succeeded"),
        "{v}"
    );
    // The commits were made with the local repo's identity.
    assert_eq!(
        p.git(&["log", "-1", "--format=%an <%ae>", "flocks/t1"]),
        "Test User <test@example.com>"
    );
    // Multiplexing masters stopped with flocks: only the listener is left.
    for h in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(5), || h.processes().len() <= 2),
            "sessions left on {}: {:?}",
            h.host(),
            h.processes()
        );
    }
}

#[test]
fn a_timeout_leaves_no_process_on_the_host() {
    available();
    let h = TestSshd::start_any();
    let p = project(
        "agent_timeout_secs = 3\nkill_grace_secs = 1",
        &ssh_pool("box", &h, 1, ""),
    );
    let pidfile = p.out_file("orphan.pid");
    p.tasks(&[json!({"id": "slow", "prompt": format!(
        "@fake write left.txt unsaved\n@fake orphan {}\n@fake hang", pidfile.display()
    )})]);
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(p.status_of("slow"), "timed_out", "{out}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "the agent's orphan {pid} survived the timeout"
    );
    let tag = attempts(&p, "slow")[0]["tag"].as_str().unwrap().to_string();
    assert!(
        procs_with_env(&format!("FLOCKS_ATTEMPT={tag}")).is_empty(),
        "processes of the attempt are left"
    );
    // Leftovers were committed remotely and fetched back.
    assert_eq!(
        p.git(&["log", "-1", "--format=%s", "flocks/slow"]),
        "flocks: uncommitted changes left by attempt 1"
    );
    assert_eq!(p.git(&["show", "flocks/slow:left.txt"]), "unsaved");

    // `flocks shell` opens a shell in the remote worktree.
    let mut child = p
        .cmd(&["shell", "slow"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"pwd\ncat left.txt\nexit\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let shown = text(&o);
    assert!(
        shown.contains(&format!("{}/flocks/worktrees/slow", h.home().display())),
        "{shown}"
    );
    assert!(shown.contains("unsaved"), "{shown}");
}

#[test]
fn a_host_stopped_mid_task_fails_the_task_naming_it() {
    available();
    let mut a = TestSshd::start_any();
    let b = TestSshd::start_any();
    let pools = ssh_pool("a", &a, 1, "") + &ssh_pool("b", &b, 1, "");
    let p = project("kill_grace_secs = 1", &pools);
    let started = p.out_file("started");
    p.tasks(&[
        json!({"id": "doomed", "prompt": format!("@fake record {}\n@fake hang", started.display())}),
        json!({"id": "fine", "prompt": "@fake sleep 3\n@fake commit fine.txt"}),
    ]);
    let child = p.spawn(&["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert!(
        wait_until(Duration::from_secs(30), || started.exists()),
        "the agent never started on host a"
    );
    a.stop();
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert_eq!(p.status_of("fine"), "success", "{out}");
    assert_eq!(p.status_of("doomed"), "host_lost", "{out}");
    let reason = p.task("doomed")["status"]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains(a.addr()), "{reason}");
    assert_eq!(attempts(&p, "doomed")[0]["pool"], "a");
}

#[test]
fn with_supervise_a_lost_task_moves_to_a_healthy_pool() {
    available();
    let mut a = TestSshd::start_any();
    let b = TestSshd::start_any();
    let pools = ssh_pool("a", &a, 1, "env = { WHERE = \"a\" }")
        + &ssh_pool("b", &b, 1, "env = { WHERE = \"b\" }");
    let p = project("kill_grace_secs = 1", &pools);
    let started = p.out_file("started");
    p.tasks(&[json!({"id": "mover", "prompt": format!(
        "@fake record {}\n@fake if-env WHERE a hang\n@fake commit moved.txt", started.display()
    )})]);
    let child = p.spawn(&[
        "run",
        "--tasks",
        "tasks.jsonl",
        "--no-progress",
        "--supervise",
    ]);
    assert!(wait_until(Duration::from_secs(30), || started.exists()));
    a.stop();
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let at = attempts(&p, "mover");
    assert_eq!(at.len(), 2, "{out}");
    assert_eq!(at[0]["outcome"]["kind"], "host_lost");
    assert_eq!(at[1]["pool"], "b");
    assert_eq!(p.status_of("mover"), "success");
    p.git(&["show", "flocks/mover:moved.txt"]);
}

#[test]
fn an_unreachable_host_is_named_and_the_other_pools_run() {
    available();
    let mut down = TestSshd::start_any();
    let up = TestSshd::start_any();
    down.stop();
    let pools = ssh_pool("gone", &down, 2, "") + &ssh_pool("here", &up, 2, "");
    let p = project("", &pools);
    p.tasks(&[
        json!({"id": "one", "prompt": "@fake commit one.txt"}),
        json!({"id": "two", "prompt": "@fake commit two.txt"}),
    ]);
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pool gone is not used in this run"), "{out}");
    assert!(out.contains(&down.host()), "{out}");
    for id in ["one", "two"] {
        assert_eq!(p.status_of(id), "success");
        assert_eq!(attempts(&p, id)[0]["pool"], "here");
    }

    let (code, out) = run(&p, &["hosts", "check"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("reachable   no"), "{out}");
    assert!(out.contains("reachable   yes"), "{out}");
    assert!(out.contains("git version"), "{out}");
    assert!(out.contains(&fake_claude().display().to_string()), "{out}");
    assert!(out.contains("free disk"), "{out}");
}

#[test]
fn branch_names_with_shell_metacharacters_are_refused_or_inert() {
    available();
    let h = TestSshd::start_any();
    let p = project("", &ssh_pool("box", &h, 2, ""));
    let pwned = p.out_file("pwned");
    let evil = [
        format!("flocks/x;touch$IFS{}", pwned.display()),
        format!("flocks/$(touch$IFS{})", pwned.display()),
        format!("flocks/`touch$IFS{}`", pwned.display()),
    ];
    for (i, branch) in evil.iter().enumerate() {
        p.tasks(&[
            json!({"id": format!("e{i}"), "branch": branch, "prompt": "@fake commit e.txt"}),
        ]);
        let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
        assert!(!pwned.exists(), "branch {branch} ran a command: {out}");
        if code == 0 {
            // Accepted: the work landed on exactly that branch.
            assert!(
                p.git_ok(&["rev-parse", "--verify", &format!("refs/heads/{branch}")]),
                "{out}"
            );
        } else {
            assert_eq!(code, 2, "refused as bad input: {out}");
        }
    }
}

#[test]
fn secrets_stay_off_remote_command_lines_and_disks() {
    available();
    let h = TestSshd::start_any();
    let secret = format!("sk-flocks-test-{}", std::process::id());
    let pools = ssh_pool("box", &h, 1, "credential = \"key\"");
    let p = project(
        "[[credentials]]\nname = \"key\"\nenv = \"FLOCKS_SSH_TEST_SECRET\"\nkind = \"api_key\"\n",
        &pools,
    );
    let seen = p.out_file("seen-key");
    p.tasks(&[json!({"id": "sec", "prompt": format!(
        "@fake env ANTHROPIC_API_KEY {}\n@fake sleep 3\n@fake commit s.txt", seen.display()
    )})]);
    let mut cmd = p.cmd(&["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    cmd.env("FLOCKS_SSH_TEST_SECRET", &secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut on_cmdline = Vec::new();
    while child.try_wait().unwrap().is_none() {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        for l in String::from_utf8_lossy(&ps.stdout).lines() {
            if l.contains(&secret) {
                on_cmdline.push(l.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        on_cmdline.is_empty(),
        "secret on a command line: {on_cmdline:?}"
    );
    // The remote agent got a token for flocks' proxy in its place, and
    // nothing under remote_dir keeps the secret.
    let token = std::fs::read_to_string(&seen).unwrap();
    assert!(
        token.trim().starts_with("flocks-") && !token.contains(&secret),
        "{token}"
    );
    let hits = files_containing(&h.home().join("flocks"), &secret);
    assert!(hits.is_empty(), "secret left in {hits:?}");
    assert!(!p.flocks_dir_text().contains(&secret), "secret in .flocks");
}

#[test]
fn exedev_up_run_down_through_the_lobby() {
    available();
    let lobby = TestSshd::start_any();
    let vm1 = TestSshd::start_any();
    let vm2 = TestSshd::start_any();
    let lobby_dir = tempfile::tempdir().unwrap();
    let pool_json = json!([
        {"ssh_host": vm1.addr(), "ssh_port": 22, "ssh_user": "root"},
        {"ssh_host": vm2.addr(), "ssh_port": 22, "ssh_user": "root"},
    ]);
    std::fs::write(lobby_dir.path().join("pool.json"), pool_json.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/lobby.py");
    lobby.set_forced_command(&format!(
        "/usr/bin/python3 {} --state {}",
        script.display(),
        lobby_dir.path().display()
    ));
    // One client key for the lobby and its VMs; one known_hosts for all three.
    for vm in [&vm1, &vm2] {
        vm.authorize_key(&lobby.public_key());
    }
    let known = lobby_dir.path().join("known_hosts");
    std::fs::write(
        &known,
        [&lobby, &vm1, &vm2]
            .iter()
            .map(|h| h.known_hosts_line() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let pools = format!(
        "[[containers]]\nname = \"fleet\"\nbackend = \"exedev\"\ncount = 2\nmax_worktrees = 1\nlobby = \"{}\"\nidentity_file = \"{}\"\nssh_options = [\"-o\", \"UserKnownHostsFile={}\", \"-o\", \"StrictHostKeyChecking=yes\", \"-o\", \"IdentitiesOnly=yes\"]\nsetup = [\"touch setup-ran\"]\n",
        lobby.host(),
        lobby.key_path().display(),
        known.display()
    );
    let p = project("", &pools);

    let (code, out) = run(&p, &["up"]);
    assert_eq!(code, 0, "{out}");
    let managed = p.state()["managed"].as_array().cloned().unwrap();
    assert_eq!(managed.len(), 2, "{managed:?}");
    for vm in [&vm1, &vm2] {
        assert!(
            vm.home().join("flocks/setup-ran").exists(),
            "setup did not run on {}",
            vm.host()
        );
    }
    let (code, out) = run(&p, &["up"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        p.state()["managed"].as_array().unwrap().len(),
        2,
        "up twice made more VMs"
    );

    let status: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["vms"].as_array().unwrap().len(), 2, "{status}");
    let (_, shown) = run(&p, &["status"]);
    assert!(shown.contains("vms (2"), "{shown}");

    p.tasks(&[
        json!({"id": "v1", "prompt": "@fake sleep 1\n@fake commit v1.txt"}),
        json!({"id": "v2", "prompt": "@fake sleep 1\n@fake commit v2.txt"}),
    ]);
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 0, "{out}");
    for id in ["v1", "v2"] {
        assert_eq!(p.status_of(id), "success");
        p.git(&["show", &format!("flocks/{id}:{id}.txt")]);
    }

    // A forged record (state.json is writable by agents) naming a VM that
    // `flocks up` did not name: refused, and never sent to the lobby.
    let state_path = p.path(".flocks/state.json");
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["managed"].as_array_mut().unwrap().push(json!({
        "kind": "vm", "pool": "fleet", "name": "flock-bystander",
        "ssh_dest": "root@127.0.0.1", "ssh_port": 22
    }));
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();

    let (code, out) = run(&p, &["down"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("refused to remove VM \"flock-bystander\""),
        "{out}"
    );
    assert!(p.state()["managed"].as_array().is_none_or(|a| a.is_empty()));
    let calls = std::fs::read_to_string(lobby_dir.path().join("calls.log")).unwrap();
    assert_eq!(calls.matches("new --name=flocks-").count(), 2, "{calls}");
    assert_eq!(calls.matches("rm ").count(), 2, "{calls}");
    assert!(!calls.contains("bystander"), "{calls}");
    for m in &managed {
        assert!(
            calls.contains(&format!("rm {} --json", m["name"].as_str().unwrap())),
            "{calls}"
        );
    }
}

/// flocks is killed mid-task: the next run brings back what the attempt left
/// on the host (its commits, and its uncommitted changes committed there)
/// before the next attempt starts.
#[test]
fn work_left_on_a_host_by_a_killed_flocks_comes_back() {
    available();
    let a = TestSshd::start_any();
    let p = project("kill_grace_secs = 1", &ssh_pool("a", &a, 1, ""));
    let started = p.out_file("started");
    p.tasks(&[json!({"id": "crash", "prompt": format!(
        "@fake commit part1.txt\n@fake write part2.txt left\n@fake record {}\n@fake hang",
        started.display()
    )})]);
    let mut child = p.spawn(&["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert!(wait_until(Duration::from_secs(30), || started.exists()));
    child.kill().unwrap(); // SIGKILL: no cleanup, no fetch
    child.wait().unwrap();
    p.tasks(&[json!({"id": "crash", "prompt": "@fake commit part3.txt"})]);
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("recovered 2 commits"), "{out}");
    let log = p.git(&["log", "--format=%s", "flocks/crash"]);
    for want in [
        "fake: part1.txt",
        "uncommitted changes left by an interrupted attempt",
        "fake: part3.txt",
    ] {
        assert!(log.contains(want), "{want} missing from:\n{log}");
    }
    assert_eq!(p.git(&["show", "flocks/crash:part2.txt"]), "left");
}

/// Hostile agents on an ssh host (issue 23): one sends back a branch with a
/// `..` path, one a 1 GiB blob (a 5 MB pack). The intake refuses both,
/// naming the check, and their branches here stay where they started; the
/// honest task beside them lands.
#[test]
fn an_ssh_agents_dotdot_path_and_gigabyte_are_refused() {
    available();
    let a = TestSshd::start_any();
    let p = project("max_retries = 0", &ssh_pool("a", &a, 3, ""));
    let zero = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/zero-blob.py");
    let dotdot = "t=$(printf \"100644 blob %s\\tx\\n\" $(echo evil | git hash-object -w --stdin) | git mktree); \
         r=$( (git ls-tree HEAD; printf \"040000 tree %s\\t..\\n\" $t) | git mktree --missing); \
         c=$(git commit-tree $r -p HEAD -m dotdot); git update-ref HEAD $c";
    let big = format!(
        "c=$(python3 {} 1073741824 $(git rev-parse HEAD) $(git rev-parse --git-common-dir)/objects); git update-ref HEAD $c",
        zero.display()
    );
    let bash = |c: &str| format!("@fake bash '{}'\n", c.replace('\'', r"'\''"));
    p.tasks(&[
        json!({"id": "honest", "prompt": "@fake commit honest.txt fine\n"}),
        json!({"id": "dd", "prompt": bash(dotdot)}),
        json!({"id": "big", "prompt": bash(&big)}),
    ]);
    let start = p.git(&["rev-parse", "main"]);
    let (code, out) = run(&p, &["run", "--no-progress"]);
    assert_eq!(code, 3, "{out}");
    let reason = |id: &str| attempts(&p, id)[0]["outcome"]["reason"].to_string();
    assert!(
        reason("dd").contains("refused its branch (fsck)") && reason("dd").contains("hasDotdot"),
        "{}",
        reason("dd")
    );
    assert!(
        reason("big").contains("refused its branch (size cap (objects))"),
        "{}",
        reason("big")
    );
    for t in ["dd", "big"] {
        assert_eq!(p.git(&["rev-parse", &format!("flocks/{t}")]), start, "{t}");
    }
    p.git(&["fsck", "--strict", "--no-dangling"]);
    let (code, out) = run(&p, &["land", "-y"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(p.git(&["show", "main:honest.txt"]), "fine");
}

/// Issue 25: the host's `mirror.git` is packed by flocks' upkeep between
/// waves, through the helper's `pack` op, and the events say so. Its loose
/// refs (one per task's start) are packed past 64, its loose objects
/// repacked past the mirror's own `gc.auto`, and nothing a task's
/// repository borrows is dropped: the tasks started from those objects
/// still succeed and come back.
#[test]
fn the_hosts_mirror_is_packed_between_waves() {
    available();
    let a = TestSshd::start_any();
    let p = project("kill_grace_secs = 1", &ssh_pool("a", &a, 2, ""));
    let commit = |i: usize| json!({"id": format!("t{i}"), "prompt": format!("@fake commit t{i}.txt hello-{i}")});
    p.tasks(&[commit(1)]);
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 0, "{out}");
    // A mirror that many tasks used: 80 loose refs and a past-due gc.auto.
    let mirror = Mirror {
        dir: a.home().join("flocks/mirror.git"),
    };
    assert!(mirror.dir.is_dir(), "{}", mirror.dir.display());
    let start = mirror.git(&["rev-parse", "refs/flocks/start/t1"]);
    mirror.age("old", &p.out_file("blobs"));

    // A wave is the pool's 2 slots: 4 tasks end two waves.
    p.tasks(&(2..=5).map(commit).collect::<Vec<_>>());
    let (code, out) = run(&p, &["run", "--tasks", "tasks.jsonl", "--no-progress"]);
    assert_eq!(code, 0, "{out}");
    let events = std::fs::read_to_string(p.repo.join(".flocks/events.jsonl")).unwrap();
    let upkeep: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "upkeep" && v["host"].is_string())
        .collect();
    assert!(!upkeep.is_empty(), "no remote upkeep event:\n{events}");
    let first = &upkeep[0];
    assert_eq!(first["pool"], "a", "{first}");
    assert_eq!(first["host"].as_str(), Some(a.host().as_str()), "{first}");
    assert!(first["packed_refs"].as_u64().unwrap() > 64, "{first}");
    assert_eq!(first["gc"], true, "{first}");
    assert!(
        out.contains("mirror on") && out.contains("packed in the background"),
        "{out}"
    );
    // Packed: no loose refs, nothing loose in objects/17, and every object
    // kept (the unreachable blobs too: -k).
    assert_eq!(mirror.loose_refs(), 0);
    assert_eq!(mirror.loose_in_17(), 0);
    mirror.git(&["cat-file", "-e", &start]);
    for i in 1..=5 {
        let id = format!("t{i}");
        assert_eq!(p.status_of(&id), "success", "{out}");
        assert_eq!(
            p.git(&["show", &format!("flocks/{id}:{id}.txt")]),
            format!("hello-{i}")
        );
    }
}
