//! Hostile agents (issue 13): each test runs a fake agent that attacks flocks
//! the way a steered agent could, and shows the attack held: nothing ran on
//! the host, nothing outlived the attempt, no secret reached a file or an
//! output in any encoding, and the failure names what the agent tried.
//! Docker attacks on the repo mount are in `tests/hostile_docker.rs`.

#[path = "support/docker.rs"]
mod dsupport;
#[path = "support/sshd.rs"]
mod sshd;
mod support;

use serde_json::json;
use support::*;

const SECRET: &str = "sk-ant-oat01-HOSTILE-5f3a9c1e7b2d4086";

/// Every form of `SECRET` (and of its halves) that must not appear anywhere.
fn secret_forms() -> Vec<String> {
    let half = SECRET.len() / 2;
    let escaped: String = SECRET
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        SECRET.to_string(),
        SECRET[..half].to_string(),
        SECRET[half..].to_string(),
        escaped,
        hex,
        // base64 of "x" + SECRET, as the hostile agent prints it, minus the
        // characters that depend on the "x".
        "LWFudC1vYXQwMS1IT1NUSUxF".to_string(),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for form in secret_forms() {
        assert!(
            !text.contains(&form),
            "{what} holds the secret as {form:?}:\n{}",
            &text[text.find(&form).unwrap_or(0).saturating_sub(200)..]
                .chars()
                .take(600)
                .collect::<String>()
        );
    }
}

fn credential_project() -> TestProject {
    TestProject::new(
        "[[credentials]]\nname = \"sub-1\"\nenv = \"HOSTILE_TOKEN\"\n\n\
         [[containers]]\nname = \"local\"\nmax_worktrees = 1\ncredential = \"sub-1\"\n",
    )
}

/// Findings 10 and 11: the agent prints its token JSON-escaped, as hex and
/// base64, and cut in two across lines (stdout, stderr, inside a tool
/// result). None of it reaches state.json, events.jsonl, the raw log,
/// `flocks logs`, `status --json` or the run's output.
#[test]
fn encoded_and_split_secrets_are_redacted_everywhere() {
    let p = credential_project();
    p.tasks(&[json!({"id": "leak", "prompt":
        "@fake leak-env CLAUDE_CODE_OAUTH_TOKEN\n@fake commit x.txt"})]);
    let out = p
        .cmd(&["run"])
        .env("HOSTILE_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_no_secret("the run's output", &text(&out));
    let files = p.flocks_dir_text();
    assert!(
        files.contains("[redacted:sub-1]"),
        "the secret was not redacted but dropped: {files}"
    );
    assert_no_secret("a file under .flocks", &files);
    for args in [
        vec!["logs", "leak"],
        vec!["logs", "--raw", "leak"],
        vec!["status", "--json"],
        vec!["status"],
    ] {
        let out = p.cmd(&args).env("HOSTILE_TOKEN", SECRET).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out));
        assert_no_secret(&format!("flocks {}", args.join(" ")), &text(&out));
    }
    // The agent's own words around the secret survive.
    let logs = text(&p.flocks(&["logs", "leak"]));
    assert!(logs.contains("as you asked"), "{logs}");
}

/// Issue 24: an agent reads its credential from its environment and
/// `/proc/self/environ`, and commits both. Its commits go wherever its
/// branch goes (land, a push), unredacted: it must never hold the secret.
/// It holds a token for flocks' proxy instead, which dies with the attempt.
#[test]
fn an_agent_never_holds_its_credential() {
    let p = credential_project();
    p.tasks(&[json!({"id": "env", "prompt": format!(
        "@fake environ environ.txt\n@fake bash \"env > env.txt; cat /proc/$$/environ | tr '\\\\0' '\\\\n' > shell-environ.txt\"\n@fake env CLAUDE_CODE_OAUTH_TOKEN {}/token\n@fake commit x.txt",
        p.out.display()
    )})]);
    let out = p
        .cmd(&["run"])
        .env("HOSTILE_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let environ = p.git(&["show", "flocks/env:environ.txt"]);
    assert!(environ.contains("FLOCKS_TASK=env"), "{environ}");
    for file in ["environ.txt", "env.txt", "shell-environ.txt"] {
        let committed = p.git(&["show", &format!("flocks/env:{file}")]);
        assert_no_secret(&format!("the agent's committed {file}"), &committed);
    }
    assert_no_secret("the branch's history", &p.git(&["log", "-p", "flocks/env"]));
    let token = std::fs::read_to_string(p.out_file("token")).unwrap();
    assert!(
        token.starts_with("flocks-"),
        "a token in its place: {token}"
    );
}

/// Finding 11: a 33 MiB line is written out in pieces at the 32 MiB line
/// buffer; no cut falls inside the secret, which appears all around it.
#[test]
fn secrets_across_the_line_buffer_boundary_are_redacted() {
    let p = credential_project();
    // 33 MiB through redaction takes a while in a debug build on a busy
    // machine: no timeout here.
    let config = std::fs::read_to_string(p.path("flocks.toml")).unwrap();
    std::fs::write(
        p.path("flocks.toml"),
        config.replace("agent_timeout_secs = 60", "agent_timeout_secs = 0"),
    )
    .unwrap();
    p.tasks(&[json!({"id": "huge", "prompt":
        "@fake leak-env-huge CLAUDE_CODE_OAUTH_TOKEN\n@fake commit x.txt"})]);
    let out = p
        .cmd(&["run"])
        .env("HOSTILE_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let log = std::fs::read(p.path(".flocks/logs/huge/1.log")).unwrap();
    let log = String::from_utf8_lossy(&log);
    let pieces: Vec<usize> = log.lines().map(str::len).filter(|n| *n > 1 << 19).collect();
    assert_eq!(pieces.len(), 2, "the long line is in the log in two pieces");
    assert!(
        pieces[0] <= 32 << 20,
        "the first piece is cut at the buffer"
    );
    let redacted = log.matches("[redacted:sub-1]").count();
    let planted = ((33usize << 20) - SECRET.len() - (31 << 20)).div_ceil(4093);
    assert_eq!(redacted, planted, "every planted secret is redacted whole");
    assert_no_secret("the raw log", &log);
}

/// Finding 12: a branch named like a command substitution. The command land
/// suggests holds it as one quoted word: pasted into a shell it runs `git
/// log` on that branch, and nothing else.
#[test]
fn suggested_commands_quote_branch_names() {
    let p = TestProject::new("");
    // Relative: a ref name cannot hold the temp dir's `/.` components.
    let marker = p.path("pwned");
    let branch = "y/$(touch${IFS}pwned)".to_string();
    p.tasks(&[json!({"id": "evil", "prompt": "@fake commit a.txt", "branch": branch})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The branch moves after the task succeeded: land refuses and says how
    // to look.
    p.git(&["checkout", "-q", &branch]);
    std::fs::write(p.path("b.txt"), "moved\n").unwrap();
    p.git(&["add", "b.txt"]);
    p.git(&["commit", "-q", "-m", "moved by hand"]);
    p.git(&["checkout", "-q", "main"]);
    let out = p.flocks(&["land", "-y"]);
    let said = text(&out);
    let at = said
        .find("git log '")
        .unwrap_or_else(|| panic!("no quoted git log suggestion in: {said}"));
    let rest = &said[at + "git log '".len()..];
    let suggested = format!("git log '{}'", &rest[..rest.find('\'').unwrap()]);
    assert!(suggested.contains(&branch), "{suggested}");
    let run = std::process::Command::new("sh")
        .args(["-c", &suggested])
        .current_dir(&p.repo)
        .output()
        .unwrap();
    assert!(run.status.success(), "{suggested}: {}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("moved by hand"),
        "{suggested} did not show the branch's new commit"
    );
    assert!(
        !marker.exists(),
        "the suggested command ran the branch name"
    );
}

/// Processes (pids) whose parent is `parent` and whose command line holds
/// `needle`.
fn children_with(parent: i32, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// `ps` lines that mention `needle` (the test's own temp dir marks its
/// processes).
fn ps_with(needle: &str) -> Vec<String> {
    let out = std::process::Command::new("ps")
        .args(["-eo", "pid,ppid,args"])
        .output()
        .expect("ps runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A survivor that leaves its session, its parent and its attempt tag: it
/// writes its pid to `pidfile` and sleeps.
fn survivor(pidfile: &std::path::Path) -> String {
    format!(
        "env -u FLOCKS_ATTEMPT setsid sh -c 'echo $$ > {}; exec sleep 300' > /dev/null 2>&1 &",
        pidfile.display()
    )
}

/// Finding 13: the agent double-forks a tag-stripped survivor, then flocks
/// and the attempt's supervisor are both killed with SIGKILL. The attempt's
/// cgroup (cgroup v2 `cgroup.kill`, by the supervisor's watchdog) stops it.
#[test]
fn a_survivor_dies_with_its_attempt_after_kill_9_of_flocks_and_supervisor() {
    let p = TestProject::new("");
    let pidfile = p.out_file("survivor.pid");
    let script = survivor(&pidfile);
    p.tasks(&[json!({"id": "escape", "prompt":
        format!("@fake bash \"{}\"\n@fake hang", script.replace('"', "\\\""))})]);
    let mut flocks = p.spawn(&["run"]);
    let flocks_pid = flocks.id() as i32;
    wait_for(30, "the survivor to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let survivor = read_pid(&pidfile);
    let log = std::fs::read_to_string(p.path(".flocks/logs/escape/1.log")).unwrap();
    let mechanism = log
        .lines()
        .find_map(|l| l.split_once("containment: ").map(|(_, m)| m.to_string()))
        .unwrap_or_else(|| panic!("the supervisor did not say how it contains: {log}"));
    println!("containment exercised: {mechanism}");
    assert!(
        mechanism.starts_with("cgroup v2"),
        "this machine offers no writable cgroup v2 hierarchy ({mechanism}): run the \
         tests as root, or inside `systemd-run --user --scope`, so the supervisor can \
         make its cgroup"
    );
    let supervisors = children_with(flocks_pid, "__supervise");
    assert_eq!(supervisors.len(), 1, "one supervisor: {supervisors:?}");
    for pid in [flocks_pid, supervisors[0]] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let _ = flocks.wait();
    wait_for(20, "the survivor to be stopped", || !pid_alive(survivor));
    let tmp = p.tmp.path().display().to_string();
    wait_for(20, "every process of the attempt to end", || {
        ps_with(&tmp).is_empty()
    });
    let cgroup = mechanism["cgroup v2 ".len()..].to_string();
    wait_for(20, "the attempt's cgroup to be removed", || {
        !std::path::Path::new(&cgroup).exists()
    });
}

/// Finding 14: a `[validate]` command starts a setsid'd grandchild and then
/// times out. Validation fails naming the timeout, and the grandchild is
/// stopped with it.
#[test]
fn a_validate_timeout_stops_setsid_grandchildren() {
    let p = TestProject::new("");
    let pidfile = p.out_file("validate-survivor.pid");
    let command = format!("{} sleep 300", survivor(&pidfile));
    p.config(&format!(
        "[validate]\ncommands = [[\"sh\", \"-c\", {}]]\ntimeout_secs = 2\n",
        toml_string(&command)
    ));
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit a.txt"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("timed out"), "{}", text(&out));
    let survivor = read_pid(&pidfile);
    wait_for(
        10,
        "the validate command's grandchild to be stopped",
        || !pid_alive(survivor),
    );
    let tmp = p.tmp.path().display().to_string();
    assert!(
        ps_with(&tmp).is_empty(),
        "left running: {:?}",
        ps_with(&tmp)
    );
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// An ssh pool for `h`, whose `setup` leaves `marker` on the host.
fn ssh_project(h: &sshd::TestSshd, marker: &std::path::Path) -> TestProject {
    let p = TestProject::new("");
    let mut opts = h.ssh_options_without_identity();
    opts.extend(["-o", "ServerAliveInterval=1"].map(String::from));
    let opts: Vec<String> = opts.iter().map(|o| toml_string(o)).collect();
    std::fs::write(
        p.path("flocks.toml"),
        format!(
            "kill_grace_secs = 1\n\n[[containers]]\nname = \"box\"\nbackend = \"ssh\"\n\
             host = \"{}\"\nidentity_file = \"{}\"\nremote_dir = \"~/flocks\"\n\
             ssh_options = [{}]\nsetup = [{}]\n\n[agent]\ncommand = \"{}\"\n",
            h.host(),
            h.key_path().display(),
            opts.join(", "),
            toml_string(&format!("touch {}", marker.display())),
            fake_claude().display()
        ),
    )
    .unwrap();
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit a.txt"})]);
    p
}

/// Finding 9: the directory of ssh's multiplexing sockets (which carry the
/// connection's credentials) is made by mkdtemp and checked. A parent that
/// another user owns, or that anyone may write without the sticky bit, is
/// refused before ssh runs: nothing reaches the host and no socket is made
/// there. A private parent works.
#[test]
fn ssh_refuses_a_control_directory_others_could_take() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        sshd::TestSshd::available(),
        "needs root, /usr/sbin/sshd, ssh and ssh-keygen: install OpenSSH with .ci/ensure-sshd.sh"
    );
    let h = sshd::TestSshd::start_any();
    let marker = tempfile::tempdir().unwrap();
    let marker = marker.path().join("setup-ran");
    let p = ssh_project(&h, &marker);
    for (name, mode, owner) in [("open", 0o777, None), ("theirs", 0o755, Some(65534))] {
        let hostile = p.out_file(name);
        std::fs::create_dir(&hostile).unwrap();
        std::fs::set_permissions(&hostile, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&hostile, Some(uid), Some(uid)).unwrap();
        }
        let out = p
            .cmd(&["run", "--no-progress"])
            .env("FLOCKS_SSH_CONTROL_DIR", &hostile)
            .output()
            .unwrap();
        let said = text(&out);
        assert_eq!(code(&out), 5, "{name}: {said}");
        assert!(
            said.contains("refusing to use ssh") && said.contains(&hostile.display().to_string()),
            "{name}: the refusal does not name the directory: {said}"
        );
        assert!(!marker.exists(), "{name}: flocks reached the host");
        let left: Vec<_> = std::fs::read_dir(&hostile).unwrap().flatten().collect();
        assert!(left.is_empty(), "{name}: flocks made {left:?} there");
    }
    let private = p.out_file("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = p
        .cmd(&["run", "--no-progress"])
        .env("FLOCKS_SSH_CONTROL_DIR", &private)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(marker.exists(), "the setup did not run on the host");
    assert_eq!(p.status_of("t"), "success");
    let left: Vec<_> = std::fs::read_dir(&private).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "the socket directory outlived the run: {left:?}"
    );
}

/// Finding 2: `[validate] pool` runs validation in the docker pool's
/// container, at the land worktree's path there. The agent's "test script"
/// tries to write on the host (a path the container does not see) and
/// leaves a process in a new session; validation times out, nothing of it
/// ran on the host, nothing of it is left in the container, and the target
/// does not move. Then a passing validation lands.
#[test]
fn validate_pool_runs_agent_code_in_the_container() {
    dsupport::ready();
    let p = dsupport::DockerProject::new();
    let ctr = dsupport::Ctr::start(dsupport::CtrSpec {
        project: &p,
        label: false,
        env: vec![],
    });
    let host_only = p.t.tmp.path().join("host-only");
    std::fs::create_dir(&host_only).unwrap();
    let marker = host_only.join("pwned");
    let pwd = p.out("validate-pwd");
    let pool = format!(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
        ctr.name
    );
    let validate = |commands: &str| {
        format!("[validate]\npool = \"dev\"\ntimeout_secs = 3\ncommands = {commands}\n")
    };
    p.config(&validate("[\"sh check.sh\"]"), &pool);
    let check = format!(
        "touch built.txt && pwd > {}; touch {}; setsid sleep 317 > /dev/null 2>&1 & sleep 300",
        pwd.display(),
        marker.display()
    );
    p.t.tasks(&[
        json!({"id": "t", "prompt": format!("@fake commit check.sh {}", toml_string(&check))}),
    ]);
    let out = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let main_before = p.git(&["rev-parse", "main"]);

    let out = p.t.flocks(&["land", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    assert!(said.contains("timed out"), "{said}");
    assert!(
        said.contains(&format!("docker container `{}`", ctr.name)),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&pwd).unwrap().trim(),
        "/workspace/.worktrees/.land",
        "validation did not run at the land worktree's path in the container"
    );
    assert!(
        !marker.exists(),
        "validation ran the agent's code on the host"
    );
    let ps = ctr.ps();
    assert!(
        !ps.contains("sleep 30") && !ps.contains("sleep 317"),
        "left running in the container:\n{ps}"
    );
    // A duration no other test uses: ps_with sees every process here.
    assert!(
        ps_with("sleep 317").is_empty(),
        "left running on the host: {:?}",
        ps_with("sleep 317")
    );
    assert_eq!(p.git(&["rev-parse", "main"]), main_before, "main moved");

    // A validation that passes lands the work (once the user accepts the
    // flocks.toml they changed after container agents ran).
    p.config(
        &validate(&format!(
            "[{}]",
            toml_string(&format!("pwd > {}.ok", pwd.display()))
        )),
        &pool,
    );
    // The user changed flocks.toml after container agents ran: flocks asks
    // them to accept it before it runs what it says.
    let out = p.t.flocks(&["trust"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_ne!(
        p.git(&["rev-parse", "main"]),
        main_before,
        "main did not move"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{}.ok", pwd.display()))
            .unwrap()
            .trim(),
        "/workspace/.worktrees/.land"
    );
}

/// Finding 13, the last line of defence: flocks, the supervisor and its
/// watchdog are all killed with SIGKILL. The survivor stays in its cgroup,
/// and the next `flocks run` of the project kills that cgroup.
#[test]
fn the_next_run_stops_what_a_fully_killed_attempt_left_in_its_cgroup() {
    let p = TestProject::new("");
    let pidfile = p.out_file("survivor.pid");
    let script = survivor(&pidfile);
    // Only the first attempt escapes and hangs; the next one finishes.
    let (once_a, once_b) = (p.out_file("once-a"), p.out_file("once-b"));
    p.tasks(&[json!({"id": "escape", "prompt": format!(
        "@fake once {} bash \"{}\"\n@fake once {} hang\n@fake commit x.txt",
        once_a.display(),
        script.replace('"', "\\\""),
        once_b.display()
    )})]);
    let mut flocks = p.spawn(&["run"]);
    let flocks_pid = flocks.id() as i32;
    wait_for(30, "the survivor to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let survivor = read_pid(&pidfile);
    let supervisors = children_with(flocks_pid, "__supervise");
    assert_eq!(supervisors.len(), 1, "one supervisor: {supervisors:?}");
    let watchdogs = children_with(supervisors[0], "--watch-cgroup");
    assert_eq!(
        watchdogs.len(),
        1,
        "no cgroup watchdog: this machine offers no writable cgroup v2 hierarchy; run \
         the tests as root, or inside `systemd-run --user --scope`"
    );
    println!("containment exercised: cgroup v2, watchdog killed too");
    for pid in [watchdogs[0], flocks_pid, supervisors[0]] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let _ = flocks.wait();
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !pid_alive(survivor),
        "the next run left the survivor running"
    );
    assert!(
        text(&out).contains("of an earlier flocks run"),
        "{}",
        text(&out)
    );
}

/// Finding 13, the fallback: without a cgroup (`FLOCKS_CGROUP=off`, as on a
/// machine that offers none) the supervisor says so and keeps its
/// subreaper: a double-forked survivor is stopped when flocks dies, as
/// long as the supervisor lives.
#[test]
fn without_a_cgroup_the_subreaper_stops_survivors_when_flocks_dies() {
    let p = TestProject::new("");
    let pidfile = p.out_file("survivor.pid");
    let script = survivor(&pidfile);
    p.tasks(&[json!({"id": "escape", "prompt":
        format!("@fake bash \"{}\"\n@fake hang", script.replace('"', "\\\""))})]);
    let mut flocks = p
        .cmd(&["run"])
        .env("FLOCKS_CGROUP", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(30, "the survivor to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let survivor = read_pid(&pidfile);
    let log = std::fs::read_to_string(p.path(".flocks/logs/escape/1.log")).unwrap();
    assert!(
        log.contains(
            "containment: subreaper and attempt tag (no cgroup: turned off by FLOCKS_CGROUP=off)"
        ),
        "{log}"
    );
    println!("containment exercised: subreaper and attempt tag");
    let supervisors = children_with(flocks.id() as i32, "__supervise");
    assert_eq!(supervisors.len(), 1, "one supervisor: {supervisors:?}");
    assert!(
        children_with(supervisors[0], "--watch-cgroup").is_empty(),
        "a watchdog without a cgroup"
    );
    flocks.kill().unwrap();
    let _ = flocks.wait();
    wait_for(20, "the survivor to be stopped", || !pid_alive(survivor));
    wait_for(20, "the supervisor to end", || !pid_alive(supervisors[0]));
}

/// Finding 2, bisection: every round of `land --bisect` validates in the
/// container too.
#[test]
fn validate_pool_bisects_in_the_container() {
    dsupport::ready();
    let p = dsupport::DockerProject::new();
    let ctr = dsupport::Ctr::start(dsupport::CtrSpec {
        project: &p,
        label: false,
        env: vec![],
    });
    let rounds = p.out("rounds");
    p.config(
        &format!(
            "[validate]\npool = \"dev\"\ncommands = [{}]\n",
            toml_string(&format!("pwd >> {} && test ! -f bad.txt", rounds.display()))
        ),
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
            ctr.name
        ),
    );
    p.t.tasks(&[
        json!({"id": "good", "prompt": "@fake commit good.txt"}),
        json!({"id": "bad", "prompt": "@fake commit bad.txt"}),
    ]);
    let out = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.t.flocks(&["land", "-y", "--bisect"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    assert!(said.contains("bad"), "{said}");
    let lines: Vec<String> = std::fs::read_to_string(&rounds)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(lines.len() >= 2, "one validation only: {lines:?}");
    assert!(
        lines.iter().all(|l| l == "/workspace/.worktrees/.land"),
        "a round ran elsewhere: {lines:?}"
    );
    assert!(
        p.git(&["log", "--format=%s", "main"])
            .contains("fake: good.txt")
    );
    assert!(
        !p.git(&["log", "--format=%s", "main"])
            .contains("fake: bad.txt")
    );
}

/// Finding 2, errors: a `[validate] pool` that is not a docker pool is a
/// load error naming the line and key; a docker pool whose container is not
/// there stops land before the target moves (exit 5), naming both.
#[test]
fn validate_pool_errors_name_what_is_wrong() {
    dsupport::ready();
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit a.txt"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let main_before = p.git(&["rev-parse", "main"]);
    p.config(
        "[[containers]]\nname = \"here\"\nbackend = \"local\"\n\n\
         [validate]\ncommands = [\"true\"]\npool = \"here\"\n",
    );
    let out = p.flocks(&["land", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 2, "{said}");
    assert!(
        said.contains("flocks.toml:")
            && said.contains("validate.pool")
            && said.contains("`here` is a local pool"),
        "{said}"
    );
    let gone = dsupport::unique("flocks-gone");
    p.config(&format!(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{gone}\"\n\n\
         [validate]\ncommands = [\"true\"]\npool = \"dev\"\n"
    ));
    let out = p.flocks(&["land", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 5, "{said}");
    assert!(
        said.contains("pool `dev`") && said.contains(&gone),
        "{said}"
    );
    assert_eq!(p.git(&["rev-parse", "main"]), main_before, "main moved");
}

/// Finding 2 with finding 3's survivor: a `[validate] pool` command starts a
/// tag-stripped, setsid'd, double-forked process that would write a marker
/// later. Validation runs under the reaper, as agents do: the survivor is
/// gone after validation when the command times out, when flocks is killed
/// with SIGKILL mid-validation, and when the command exits normally; no
/// marker appears later and `ps` in the container shows nothing of it.
#[test]
fn validate_pool_stops_tag_stripped_survivors() {
    dsupport::ready();
    let p = dsupport::DockerProject::new();
    let ctr = dsupport::Ctr::start(dsupport::CtrSpec {
        project: &p,
        label: false,
        env: vec![],
    });
    let pool = format!(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
        ctr.name
    );
    // The out dir is mounted at its host path: the marker is seen on the host.
    let marker = |case: &str| p.t.out.join(format!("late-{case}"));
    let validate = |case: &str, then: &str, timeout: u64| {
        let plant = format!("sleep 5; touch {}", marker(case).display());
        let command = format!(
            "(env -u FLOCKS_ATTEMPT setsid sh -c '{plant}' >/dev/null 2>&1 </dev/null &); {then}"
        );
        p.config(
            &format!(
                "[validate]\npool = \"dev\"\ntimeout_secs = {timeout}\ncommands = [[\"sh\", \"-c\", {}]]\n",
                toml_string(&command)
            ),
            &pool,
        );
        // The user accepts the flocks.toml they wrote after container agents ran.
        let out = p.t.flocks(&["trust"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    };
    let assert_gone = |case: &str| {
        let ps = ctr.ps();
        assert!(
            !ps.contains("late-") && !ps.contains("sleep 5") && !ps.contains("sleep 300"),
            "{case}: left running in the container:\n{ps}"
        );
    };

    // Times out.
    validate("timeout", "sleep 300", 3);
    p.t.tasks(&[json!({"id": "t", "prompt": "@fake commit t.txt"})]);
    let out = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        p.t.repo.join(".flocks/logs/t/1.log").exists(),
        "the agent did not run"
    );
    let main_before = p.git(&["rev-parse", "main"]);
    let out = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("timed out"), "{}", text(&out));
    assert!(
        !text(&out).contains("cannot run flocks' reaper"),
        "{}",
        text(&out)
    );
    assert_gone("timeout");

    // flocks killed with SIGKILL mid-validation.
    let started = p.t.out.join("validating");
    validate(
        "killed",
        &format!("touch {}; sleep 300", started.display()),
        600,
    );
    let mut child = p.t.spawn(&["land", "-y"]);
    wait_for(60, "validation to start", || started.exists());
    wait_for(10, "the survivor to start", || {
        ctr.ps().contains("late-killed")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(30, "validation and its survivor to stop", || {
        let ps = ctr.ps();
        !ps.contains("late-") && !ps.contains("sleep 300")
    });
    assert_gone("killed");
    assert_eq!(p.git(&["rev-parse", "main"]), main_before, "main moved");

    // Exits normally: validation passes and the work lands.
    validate("exit", "true", 60);
    let out = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_ne!(
        p.git(&["rev-parse", "main"]),
        main_before,
        "main did not move"
    );
    assert_gone("exit");

    // Longer than the survivors would have slept.
    std::thread::sleep(std::time::Duration::from_secs(7));
    for case in ["timeout", "killed", "exit"] {
        assert!(
            !marker(case).exists(),
            "{case}: the survivor outlived validation"
        );
    }
    assert_gone("after");
}

// ---- Issue 23: what a hostile agent that can write the repo (a docker
// mount, or a local agent) could make flocks itself do. Each test was run
// against the code before its fix and failed for the reason it names.

/// A `@fake bash` line for `command` (quoted for the fake's shlex).
fn bash(command: &str) -> String {
    format!("@fake bash '{}'\n", command.replace('\'', r"'\''"))
}

/// A file of the user's, outside the repo, with `text` in it.
fn victim_file(p: &TestProject, name: &str, text: &str) -> std::path::PathBuf {
    let dir = p.tmp.path().join("victims");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

/// Finding 1: an agent replaces what flocks writes under `.flocks/` with
/// links to the user's files (the next attempt's log, the project lock, the
/// events file, the land logs' directory), then fails. The retry, its lock
/// and land write fresh files in their place and say so; nothing reaches the
/// files the links named. (Before: the retry's output, which the agent
/// controls, was appended to the linked file; the lock truncated its target.)
#[test]
fn links_planted_under_flocks_are_never_written_through() {
    let p = TestProject::new("[validate]\ncommands = [\"echo validated\"]\n");
    let rc = victim_file(&p, "bashrc", "# my shell rc\n");
    let lock = victim_file(&p, "lock-victim", "keep\n");
    let events = victim_file(&p, "events-victim", "keep\n");
    let land_dir = p.tmp.path().join("victims/land-dir");
    std::fs::create_dir_all(&land_dir).unwrap();
    let marker = p.out_file("ran");
    let plant = format!(
        "ln -s {rc} ../../.flocks/logs/t/2.log && \
         rm -f ../../.flocks/lock && ln -s {lock} ../../.flocks/lock && \
         rm -f ../../.flocks/events.jsonl && ln -s {events} ../../.flocks/events.jsonl && \
         ln -s {land} ../../.flocks/land-logs",
        rc = rc.display(),
        lock = lock.display(),
        events = events.display(),
        land = land_dir.display()
    );
    let out = p.out.display();
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "@fake once {out}/planted bash '{}'\n@fake fail-once {out}/failed planted\n\
         @fake text x=\"$(touch {})\"\n@fake commit t.txt\n",
        plant.replace('\'', r"'\''"),
        marker.display()
    )})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        std::fs::symlink_metadata(p.path(".flocks/logs/t/2.log"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the attack did not plant its link"
    );
    let retry = p.flocks(&["retry", "t", "--no-progress"]);
    let land = p.flocks(&["land", "-y"]);
    let mut broken = Vec::new();
    for (f, was) in [
        (&rc, "# my shell rc\n"),
        (&lock, "keep\n"),
        (&events, "keep\n"),
    ] {
        let now = std::fs::read_to_string(f).unwrap();
        if now != was {
            broken.push(format!(
                "{} was written through a link: {now:?}",
                f.display()
            ));
        }
    }
    let in_land_dir: Vec<_> = std::fs::read_dir(&land_dir).unwrap().flatten().collect();
    if !in_land_dir.is_empty() {
        broken.push(format!(
            "land wrote its log into the linked directory: {in_land_dir:?}"
        ));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert_eq!(code(&retry), 0, "{}", text(&retry));
    assert_eq!(code(&land), 0, "{}", text(&land));
    assert!(!marker.exists());
    // Fresh files where the links were, and flocks said so.
    for f in [
        ".flocks/logs/t/2.log",
        ".flocks/lock",
        ".flocks/events.jsonl",
    ] {
        let m = std::fs::symlink_metadata(p.path(f)).unwrap();
        assert!(m.is_file(), "{f} is not a fresh regular file");
    }
    assert!(
        std::fs::symlink_metadata(p.path(".flocks/land-logs"))
            .unwrap()
            .is_dir()
    );
    let log = std::fs::read_to_string(p.path(".flocks/logs/t/2.log")).unwrap();
    assert!(
        log.contains("[flocks] .flocks/logs/t/2.log was a link") && log.contains("x=$(touch"),
        "{log}"
    );
    assert!(
        text(&retry).contains(".flocks/lock was a link")
            && text(&retry).contains(".flocks/events.jsonl was a link"),
        "{}",
        text(&retry)
    );
    assert!(
        text(&land).contains(".flocks/land-logs was a link"),
        "{}",
        text(&land)
    );
    assert!(
        p.git_ok(&["cat-file", "-e", "main:t.txt"]),
        "t did not land"
    );
}

/// Finding 2: `flocks clean --logs` walks `.flocks/` by descriptor: a link
/// where `land-logs` or a task's log directory was is removed as a link,
/// and the old files of the directory it names stay. (Before: the files
/// under the link's target were removed.)
#[test]
fn clean_logs_never_follows_a_link() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit t.txt"})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let victim = p.tmp.path().join("victims/photos");
    std::fs::create_dir_all(victim.join("2019")).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86400);
    for f in ["a.jpg", "2019/b.jpg"] {
        let path = victim.join(f);
        std::fs::write(&path, "precious").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(p.path(".flocks/land-logs"));
    std::os::unix::fs::symlink(&victim, p.path(".flocks/land-logs")).unwrap();
    std::os::unix::fs::symlink(&victim, p.path(".flocks/logs/gone")).unwrap();
    // An old log of flocks' own goes.
    let own = p.path(".flocks/logs/t/1.log");
    std::fs::File::options()
        .write(true)
        .open(&own)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = p.flocks(&["clean", "--logs", "--older-than", "7d"]);
    assert!(
        victim.join("a.jpg").exists() && victim.join("2019/b.jpg").exists(),
        "clean --logs removed files through a link: {}",
        text(&o)
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!own.exists(), "flocks' own old log stayed: {}", text(&o));
    assert!(
        text(&o).contains(".flocks/land-logs was a link"),
        "{}",
        text(&o)
    );
}

/// Finding 4, local pools (one `.git` for every agent, as in docker's mount
/// mode): while `t3` runs, `t2` builds a commit on `flocks/t3`'s tip in a
/// side index, moves `flocks/t3` onto it with `update-ref` and copies the
/// file into t3's worktree. `t3` did not make that commit in its worktree:
/// its attempt fails naming it, its branch goes back to where flocks left
/// it, and nothing of it lands; t2's own work lands. (Before: t3 landed it.)
#[test]
fn a_commit_put_on_another_tasks_branch_is_not_landed() {
    let p = TestProject::new("[[containers]]\nname = \"local\"\nmax_worktrees = 2\n");
    sibling_attack(&p.out, |tasks| p.tasks(tasks));
    let o = p.flocks(&["run", "--no-progress"]);
    let o_text = text(&o);
    let land = p.flocks(&["land", "-y"]);
    let log = p.git(&["log", "--format=%s", "main"]);
    assert!(
        !log.contains("planted") && !p.git_ok(&["cat-file", "-e", "main:evil.txt"]),
        "t3 landed the planted commit: {log}\n{o_text}\n{}",
        text(&land)
    );
    assert_eq!(code(&o), 3, "{o_text}");
    assert_eq!(p.status_of("t2"), "success");
    assert_eq!(p.status_of("t3"), "failed");
    let reason = p.task("t3")["attempts"][0]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("not made in its worktree") && reason.contains("planted"),
        "{reason}"
    );
    assert_eq!(
        p.git(&["rev-parse", "flocks/t3"]),
        p.task("t3")["attempts"][0]["start_commit"]
            .as_str()
            .unwrap(),
        "flocks/t3 is not back where flocks left it"
    );
    assert!(
        p.git_ok(&["cat-file", "-e", "main:t2.txt"]),
        "{}",
        text(&land)
    );
}

/// Finding 5: state.json (writable by container agents) names "VMs" of an
/// exedev pool that `flocks up` never made: one with a name up never gives,
/// one with the project's VM name pattern at a host of the attacker's.
/// `hosts check` and `run` connect to neither, and say why. (Before: both
/// were connected to over ssh, with the repository pushed to them.)
#[test]
fn forged_vm_records_are_never_connected_to() {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit t.txt"})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // The attacker's hosts: count who connects, hang up at once.
    let connected = std::sync::Arc::new(AtomicUsize::new(0));
    let mut ports = Vec::new();
    for _ in 0..2 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap().port());
        let c = connected.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let mut s = s;
                let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
                let _ = s.read(&mut [0u8; 64]);
            }
        });
    }
    // The name `flocks up` would give a VM of this project.
    let key = {
        use sha2::{Digest, Sha256};
        let dir = p.path(".flocks").canonicalize().unwrap();
        let d = Sha256::digest(dir.display().to_string().as_bytes());
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let letters: String = key
        .chars()
        .map(|c| char::from(b'a' + c.to_digit(16).unwrap() as u8))
        .collect();
    let lookalike = format!("flocks-{letters}-qwerty");
    let state_path = p.path(".flocks/state.json");
    let mut state = p.state();
    state["managed"] = json!([
        {"kind": "vm", "pool": "fleet", "name": "evil", "ssh_dest": "127.0.0.1", "ssh_port": ports[0]},
        {"kind": "vm", "pool": "fleet", "name": lookalike, "ssh_dest": "root@127.0.0.1", "ssh_port": ports[1]},
    ]);
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();
    let _ = std::fs::remove_file(p.path(".flocks/state.journal"));
    p.config(
        "[[containers]]\nname = \"fleet\"\nbackend = \"exedev\"\ncount = 2\nlobby = \"lobby.invalid\"\n\
         ssh_options = [\"-o\", \"BatchMode=yes\", \"-o\", \"ConnectTimeout=3\", \"-o\", \"StrictHostKeyChecking=no\", \"-o\", \"UserKnownHostsFile=/dev/null\"]\n",
    );
    p.tasks(&[json!({"id": "u", "prompt": "@fake commit u.txt"})]);
    let check = p.flocks(&["hosts", "check"]);
    let run = p.flocks(&["run", "--no-progress"]);
    assert_eq!(
        connected.load(Ordering::SeqCst),
        0,
        "flocks connected to a forged VM record's host:\n{}\n{}",
        text(&check),
        text(&run)
    );
    for o in [&check, &run] {
        assert_eq!(code(o), 5, "{}", text(o));
        assert!(
            text(o).contains("\"evil\"") && text(o).contains(&lookalike),
            "the refusal names the records: {}",
            text(o)
        );
        assert!(text(o).contains("not one `flocks up` made"), "{}", text(o));
    }
}

/// Finding 6: a webhook's header secret (`[[notify]] headers_env`) is not
/// in any agent's or setup command's environment, and when an agent prints
/// its value anyway it is redacted in the log, state and output. (Before:
/// both had it, and it stayed in clear in the log.)
#[test]
fn webhook_header_secrets_never_reach_agents_or_logs() {
    const HOOK: &str = "hook-secret-7c1f04b9e2d3a8";
    let p = TestProject::new("");
    p.config(&format!(
        "[[notify]]\non = [\"finished\"]\nwebhook = \"http://127.0.0.1:9/hook\"\n\
         headers_env = {{ Authorization = \"HOOK_TOKEN\" }}\n\n\
         [workspace]\nsetup = [\"echo setup:${{HOOK_TOKEN:-unset}} > {}\"]\n",
        p.out_file("setup-env").display()
    ));
    std::fs::write(p.out_file("leak"), HOOK).unwrap();
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "@fake env HOOK_TOKEN {}\n{}@fake commit t.txt\n",
        p.out_file("agent-env").display(),
        bash(&format!("echo leaked: $(cat {})", p.out_file("leak").display()))
    )})]);
    let o = p
        .cmd(&["run", "--no-progress"])
        .env("HOOK_TOKEN", HOOK)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(p.out_file("agent-env")).unwrap(),
        "<unset>",
        "the agent had the webhook's header secret"
    );
    assert_eq!(
        std::fs::read_to_string(p.out_file("setup-env"))
            .unwrap()
            .trim(),
        "setup:unset",
        "the setup command had the webhook's header secret"
    );
    let files = p.flocks_dir_text();
    assert!(
        !files.contains(HOOK),
        "the header secret is in clear under .flocks/"
    );
    assert!(
        files.contains("leaked: [redacted:"),
        "not redacted but dropped"
    );
    assert!(!text(&o).contains(HOOK));
}

/// Finding 8: `flocks serve` streams only the logs of the state's tasks: a
/// task id that climbs out of `.flocks/logs/` (`..%2F`) is refused, and the
/// file it names is not sent. (Before: any `<n>.log` on the host streamed.)
#[test]
fn serve_streams_no_log_outside_the_tasks() {
    use std::io::{BufRead, BufReader, Read, Write};
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit t.txt"})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let outside = p.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("1.log"), "TOP-SECRET-LINE\n").unwrap();
    let mut child = p
        .cmd(&["serve", "--addr", "127.0.0.1:0"])
        .env_remove("FLOCKS_SERVE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _serve = Kill(child);
    let port: u16 = first
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    for path in [
        "/tasks/..%2F..%2F..%2Foutside/events?attempt=1",
        "/tasks/..%2F..%2F..%2Foutside?attempt=1",
        "/tasks/t%2F..%2F..%2F..%2F..%2Foutside/events?attempt=1",
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the server closes (a refusal), or the file shows up.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains("TOP-SECRET-LINE") {
                break;
            }
        }
        let got = String::from_utf8_lossy(&got).to_string();
        assert!(
            !got.contains("TOP-SECRET-LINE"),
            "{path} streamed a file outside .flocks/logs: {got}"
        );
        let status = got.lines().next().unwrap_or_default().to_string();
        assert!(
            status.contains(" 404 ") || status.contains(" 400 "),
            "{path}: {got}"
        );
    }
}

/// Finding 9: `mv .flocks .flocks-old; mkdir .flocks` while a run goes on
/// does not let a second `flocks run` in: it exits 5 naming the run that
/// holds the project. (Before: the second run started the tasks again.)
#[test]
fn moving_flocks_aside_does_not_free_the_lock() {
    let p = TestProject::new("");
    let go = p.out_file("go");
    let started = p.out_file("started");
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "{}@fake commit t.txt\n",
        bash(&format!(
            "touch {}; until [ -f {} ]; do sleep 0.1; done",
            started.display(),
            go.display()
        ))
    )})]);
    let first = p.spawn(&["run", "--no-progress"]);
    let holder = first.id();
    wait_for(60, "the first run's agent to start", || started.exists());
    std::fs::rename(p.path(".flocks"), p.path(".flocks-old")).unwrap();
    std::fs::create_dir(p.path(".flocks")).unwrap();
    std::fs::remove_file(&started).unwrap();
    let second = p
        .spawn(&["run", "--no-progress"])
        .wait_or_kill(30, "a second `flocks run` got past the lock");
    std::fs::write(&go, "").unwrap();
    first.wait_or_kill(60, "the first run did not end");
    assert!(
        !started.exists(),
        "the second run started the task again: {}",
        text(&second)
    );
    assert_eq!(code(&second), 5, "{}", text(&second));
    assert!(
        text(&second).contains(&format!("`flocks run` (pid {holder}")),
        "the refusal names the holder: {}",
        text(&second)
    );
}
