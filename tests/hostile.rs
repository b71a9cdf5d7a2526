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
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
        ctr.name
    );
    let validate = |commands: &str| {
        format!("[validate]\npool = \"dev\"\ntimeout_secs = 3\ncommands = {commands}\n")
    };
    p.config(&validate("[\"sh check.sh\"]"), &pool);
    let check = format!(
        "touch built.txt && pwd > {}; touch {}; setsid sleep 301 > /dev/null 2>&1 & sleep 300",
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
        !ps.contains("sleep 30"),
        "left running in the container:\n{ps}"
    );
    assert!(
        ps_with("sleep 301").is_empty(),
        "left running on the host: {:?}",
        ps_with("sleep 301")
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
        text(&out).contains("cgroup(s) of an earlier flocks run"),
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
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
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
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"{gone}\"\n\n\
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
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
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
