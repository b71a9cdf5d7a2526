//! Hostile agents in a container, on the Docker Engine on this machine (issue
//! 13, "the container must not reach the host"). Each test has the fake agent
//! attack flocks from inside the container the way a steered agent could,
//! then shows that it held: nothing ran on the host (a marker file in a
//! directory the container does not mount), nothing outlived the attempt
//! (`ps` in the container), and flocks said what the agent tried.

#[path = "support/docker.rs"]
mod dsupport;
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use dsupport::{Ctr, CtrSpec, DockerProject, ready};
use serde_json::json;
use support::{code, sibling_attack, text, wait_for};

fn ctr(p: &DockerProject) -> Ctr {
    Ctr::start(CtrSpec {
        project: p,
        label: true,
        env: vec![],
    })
}

fn pool(p: &DockerProject) -> String {
    format!(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\n",
        p.t.repo.display()
    )
}

/// A directory on the host that no container mounts: payloads that run on
/// the host leave their marker here.
fn host_only(p: &DockerProject) -> PathBuf {
    let d = p.t.tmp.path().join("host-only");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `@fake bash` line for `command` (quoted for the fake's shlex).
fn bash(command: &str) -> String {
    format!("@fake bash '{}'\n", command.replace('\'', r"'\''"))
}

/// Nothing of any attempt is left in the container.
fn assert_nothing_left(c: &Ctr) {
    let ps = c.ps();
    assert!(
        !ps.contains("fake-claude") && !ps.contains("sleep 6") && !ps.contains("flocks-reaper"),
        "left behind in the container: {ps}"
    );
}

/// Finding 1: the agent appends a `[validate]` command to the main
/// checkout's flocks.toml (and rewrites the prompt template); the next `land`
/// and `run` refuse to run them, naming the files; putting them back (or
/// `flocks trust`) is the way on.
#[test]
fn config_written_from_the_container_is_not_run_on_the_host() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    std::fs::write(p.t.repo.join("prompt.md"), "{{prompt}}\n").unwrap();
    std::os::unix::fs::chown(p.t.repo.join("prompt.md"), Some(1000), Some(1000)).unwrap();
    p.config("[prompt]\ntemplate = \"prompt.md\"", &pool(&p));
    // Untracked, as flocks.toml often is: land's check for a dirty checkout
    // does not see it change.
    let originals: Vec<(PathBuf, String)> = ["flocks.toml", "prompt.md"]
        .iter()
        .map(|f| {
            let path = p.t.repo.join(f);
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    let payload = format!(
        "\n[validate]\ncommands = [\"touch {}/pwned\"]\n",
        host.display()
    );
    let attack = format!(
        "printf %b \"{}\" >> ../../flocks.toml; echo \"@fake bash evil\" >> ../../prompt.md",
        payload.replace('\n', "\\n").replace('"', "\\\"")
    );
    p.t.tasks(&[json!({"id": "cfg", "prompt": format!("{}@fake commit c.txt\n", bash(&attack))})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let toml = std::fs::read_to_string(p.t.repo.join("flocks.toml")).unwrap();
    assert!(
        toml.contains("pwned"),
        "the attack wrote flocks.toml: {toml}"
    );

    let o = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("refusing to land") && said.contains("flocks.toml changed"),
        "{said}"
    );
    assert!(said.contains("prompt.md changed"), "{said}");
    // What came in, for review.
    assert!(
        said.contains("+ commands = [\"touch") && said.contains("+ @fake bash evil"),
        "{said}"
    );
    assert!(said.contains("flocks trust"), "{said}");
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(!host.join("pwned").exists(), "the payload ran on the host");
    assert_nothing_left(&c);

    // Put back, it is trusted again without asking.
    for (path, text) in &originals {
        std::fs::write(path, text).unwrap();
    }
    let o = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!host.join("pwned").exists());
}

/// Finding 1, the task source: a script the agent rewrote is not run.
#[test]
fn task_source_script_written_from_the_container_is_not_run() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    std::fs::write(
        p.t.repo.join("gen.sh"),
        "printf '%s\\n' '{\"id\": \"s\", \"prompt\": \"@fake commit s.txt\"}'\n",
    )
    .unwrap();
    p.config(
        "[source]\ntype = \"script\"\ncommand = \"sh gen.sh\"",
        &pool(&p),
    );
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // What an agent could have done to it meanwhile.
    let mut script = std::fs::read_to_string(p.t.repo.join("gen.sh")).unwrap();
    script.push_str(&format!("touch {}/pwned\n", host.display()));
    std::fs::write(p.t.repo.join("gen.sh"), script).unwrap();
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("gen.sh changed"), "{}", text(&o));
    assert!(!host.join("pwned").exists(), "the source script ran");
    let o = p.t.flocks(&["trust"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("gen.sh changed"), "{}", text(&o));
    assert_nothing_left(&c);
}

/// Finding 3: a survivor that strips its tag and starts a new session, to
/// plant `core.fsmonitor` and a hook after the guard has looked, is stopped
/// with its attempt; and what is planted between runs (as a survivor would)
/// stops the next run and land.
#[test]
fn tag_stripped_survivor_dies_with_its_attempt() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    p.config("", &pool(&p));
    let plant = format!(
        "sleep 6; git config core.fsmonitor \"touch {h}/pwned\"; printf \"#!/bin/sh\\ntouch {h}/pwned2\\n\" > ../../.git/hooks/post-checkout; chmod +x ../../.git/hooks/post-checkout",
        h = host.display()
    );
    let attack = format!(
        "env -u FLOCKS_ATTEMPT setsid sh -c '{}' >/dev/null 2>&1 < /dev/null &",
        plant.replace('\'', r"'\''")
    );
    p.t.tasks(&[json!({"id": "surv", "prompt": format!("{}@fake commit s.txt\n", bash(&attack))})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // Longer than the survivor would have slept.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !p.t.repo.join(".git/hooks/post-checkout").exists(),
        "the survivor planted a hook"
    );
    let config = std::fs::read_to_string(p.t.repo.join(".git/config")).unwrap();
    assert!(!config.contains("fsmonitor"), "{config}");
    p.git(&["status"]);
    assert!(!host.join("pwned").exists() && !host.join("pwned2").exists());
    assert_nothing_left(&c);
    let log = std::fs::read_to_string(p.t.repo.join(".flocks/logs/surv/1.log")).unwrap();
    assert!(
        log.contains("stopped 2 process(es)") && log.contains("left running"),
        "the log says what was stopped: {log}"
    );

    // Planted after the run, as an escaped survivor would: refused.
    std::fs::write(
        p.t.repo.join(".git/hooks/post-checkout"),
        format!("#!/bin/sh\ntouch {}/pwned2\n", host.display()),
    )
    .unwrap();
    for cmd in [&["run", "--no-progress"][..], &["land", "-y"][..]] {
        let o = p.t.flocks(cmd);
        assert_eq!(code(&o), 5, "{}", text(&o));
        assert!(
            text(&o).contains(".git/hooks/post-checkout added"),
            "{}",
            text(&o)
        );
    }
    assert!(!host.join("pwned2").exists());
}

/// Finding 4: `git update-ref` on the user's main, `config.worktree`, the
/// worktree's own config and `info/attributes` are all found, undone, and
/// fail the attempt with what happened.
#[test]
fn refs_worktree_configs_and_attributes_are_guarded() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    p.config("", &pool(&p));
    let main_before = p.git(&["rev-parse", "main"]);
    let attack = format!(
        "git update-ref refs/heads/main HEAD; git tag evil HEAD; \
         printf \"[core]\\n\\tfsmonitor = touch {h}/pwned\\n\" > ../../.git/config.worktree; \
         printf \"[core]\\n\\tfsmonitor = touch {h}/pwned\\n\" > ../../.git/worktrees/refs/config.worktree; \
         mkdir -p ../../.git/info; printf \"* filter=evil\\n\" > ../../.git/info/attributes",
        h = host.display()
    );
    p.t.tasks(&[json!({"id": "refs", "prompt": format!("@fake commit r.txt\n{}", bash(&attack))})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_eq!(p.t.status_of("refs"), "failed");
    let reason = p.reason("refs");
    for what in [
        "refs/heads/main moved from",
        "refs/tags/evil added",
        ".git/config.worktree added",
        ".git/worktrees/refs/config.worktree added",
        ".git/info/attributes added",
    ] {
        assert!(reason.contains(what), "{what} missing from: {reason}");
    }
    assert_eq!(p.git(&["rev-parse", "main"]), main_before);
    assert!(!p.t.repo.join(".git/config.worktree").exists());
    assert!(!p.t.repo.join(".git/info/attributes").exists());
    assert!(p.git(&["tag"]).is_empty());
    p.git(&["status"]);
    assert!(!host.join("pwned").exists());
    assert_nothing_left(&c);
}

/// Finding 5: a FIFO in `.git/hooks` neither hangs this run nor the next.
#[test]
fn fifo_in_hooks_does_not_hang_flocks() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    p.config("", &pool(&p));
    p.t.tasks(&[
        json!({"id": "fifo", "prompt": format!("{}@fake commit f.txt\n", bash("mkfifo ../../.git/hooks/pre-commit")) }),
    ]);
    let o =
        p.t.spawn(&["run", "--no-progress"])
            .wait_or_kill(120, "flocks hangs");
    assert_eq!(code(&o), 3, "{}", text(&o));
    let reason = p.reason("fifo");
    assert!(
        reason.contains(".git/hooks/pre-commit is a FIFO"),
        "{reason}"
    );
    assert!(std::fs::symlink_metadata(p.t.repo.join(".git/hooks/pre-commit")).is_err());
    // The agent runs as the exec user, with its home, under the root reaper.
    let out = p.t.out.display().to_string();
    p.t.tasks(&[json!({"id": "next", "prompt": format!(
        "@fake env HOME {out}/home\n@fake env USER {out}/user\n{}@fake commit n.txt\n",
        bash(&format!("id -u > {out}/uid"))
    )})]);
    let o =
        p.t.spawn(&["run", "--no-progress"])
            .wait_or_kill(120, "flocks hangs");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.read_out("home"), "/home/dev");
    assert_eq!(p.read_out("user"), "dev");
    assert_eq!(p.read_out("uid").trim(), "1000");

    // One where git reads as it opens the repo (left between runs): flocks
    // refuses at once instead of hanging in libgit2.
    let packed = p.t.repo.join(".git/packed-refs");
    nix::unistd::mkfifo(&packed, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let o =
        p.t.spawn(&["run", "--no-progress"])
            .wait_or_kill(60, "flocks hangs");
    std::fs::remove_file(&packed).unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("packed-refs is not a regular file"),
        "{}",
        text(&o)
    );
    assert_nothing_left(&c);
}

/// Finding 6: while flocks (as root) hands files back to the repo's owner,
/// an agent keeps swapping a directory of `.git/objects` for a link to a
/// host directory holding a root-only file of the same name: the host file
/// keeps its owner.
#[test]
fn chown_never_follows_a_swapped_in_link() {
    ready();
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs flocks to run as root (as in CI), which is when it chowns");
    }
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    let secret = host.join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p.config("", &format!("{}max_worktrees = 4\n", pool(&p)));
    // `zz` (a directory holding `secret`) and `zl` (a link to the host
    // directory) trade places atomically (renameat2 RENAME_EXCHANGE), as fast
    // as they can, for 8 s: a walk that lists `zz` and then chowns
    // `zz/secret` by path hands the host's `secret` over.
    let swapper = p.t.out.join("swap.pl");
    std::fs::write(
        &swapper,
        r#"my %nr = (x86_64 => 316, aarch64 => 276);
my $nr = $nr{(POSIX::uname())[4]} or die "renameat2: unknown architecture";
mkdir "zz"; open(my $f, ">", "zz/secret"); close $f;
symlink($ARGV[0], "zl") or die "symlink: $!";
my ($x, $y, $n) = ("zz", "zl", 0);
my $end = time + 8;
while (time < $end) {
    for (1 .. 1000) { syscall($nr, -100, $x, -100, $y, 2) == 0 or die "renameat2: $!"; $n++ }
    select(undef, undef, undef, 0.001);
}
print "$n swaps\n";
unlink "zz", "zl", "zz/secret", "zl/secret"; rmdir "zz"; rmdir "zl";
"#,
    )
    .unwrap();
    let swap = format!(
        "cd ../../.git/objects && perl -MPOSIX {} {}",
        swapper.display(),
        host.display()
    );
    let mut tasks = vec![json!({"id": "swap", "prompt": bash(&swap)})];
    for i in 0..6 {
        tasks.push(json!({"id": format!("w{i}"), "prompt": format!("@fake sleep 0.5\n@fake commit w{i}.txt\n")}));
    }
    p.t.tasks(&tasks);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert!(code(&o) == 0 || code(&o) == 3, "{}", text(&o));
    let log = std::fs::read_to_string(p.t.repo.join(".flocks/logs/swap/1.log")).unwrap();
    assert!(log.contains(" swaps"), "the swapper ran: {log}");
    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "a host file was given away");
    assert_nothing_left(&c);
}

/// Finding 7: flocks killed with SIGKILL mid-attempt: the reaper in the
/// container sees its stream end and stops the agent and what it started
/// (a tag-stripped process in a new session included).
#[test]
fn agents_stop_when_flocks_is_killed() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    p.config("", &pool(&p));
    let out = p.t.out.display().to_string();
    let detach = "env -u FLOCKS_ATTEMPT setsid sleep 601 >/dev/null 2>&1 < /dev/null &";
    p.t.tasks(&[json!({"id": "k", "prompt": format!("{}@fake env HOSTNAME {out}/k.host\n@fake ignore-term\n@fake hang\n", bash(detach))})]);
    let mut child = p.t.spawn(&["run", "--no-progress"]);
    wait_for(60, "the agent to start", || {
        !p.read_out("k.host").is_empty()
    });
    wait_for(10, "the detached sleep", || c.ps().contains("sleep 601"));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(30, "the agent and its survivor to stop", || {
        let ps = c.ps();
        !ps.contains("fake-claude") && !ps.contains("sleep 601")
    });
    assert_nothing_left(&c);
}

/// Finding 8: a state.json that names another repository as a running
/// task's worktree: the next run commits nothing there and says so.
#[test]
fn forged_state_paths_are_left_alone() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    p.config("", &pool(&p));
    let out = p.t.out.display().to_string();
    p.t.tasks(&[
        json!({"id": "f", "prompt": format!("@fake env HOSTNAME {out}/f.host\n@fake hang\n")}),
    ]);
    let mut child = p.t.spawn(&["run", "--no-progress"]);
    wait_for(60, "the agent to start", || {
        !p.read_out("f.host").is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(30, "the agent to stop", || !c.ps().contains("fake-claude"));

    // An unrelated repository with work in progress.
    let other = p.t.tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let g = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args(args)
            .current_dir(&other)
            .env("HOME", &p.home)
            .status()
            .unwrap();
        assert!(st.success());
    };
    g(&["init", "-q", "-b", "main"]);
    g(&[
        "-c",
        "user.name=o",
        "-c",
        "user.email=o@o",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "o",
    ]);
    std::fs::write(other.join("wip.txt"), "mine\n").unwrap();
    // The agent can write both state.json and its journal: it rewrites the
    // state as flocks would read it, then drops the journal.
    let state_path = p.t.repo.join(".flocks/state.json");
    let mut state = p.t.state();
    for t in state["tasks"].as_array_mut().unwrap() {
        if t["id"] == "f" {
            t["worktree"] = json!(other.display().to_string());
        }
    }
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();
    let _ = std::fs::remove_file(p.t.repo.join(".flocks/state.journal"));

    p.t.tasks(&[json!({"id": "f", "prompt": "@fake commit f.txt\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert!(
        text(&o).contains("state.json names") && text(&o).contains("leaves it alone"),
        "{}",
        text(&o)
    );
    let log = std::process::Command::new("git")
        .args(["log", "--oneline"])
        .current_dir(&other)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout).lines().count(),
        1,
        "flocks committed in another repository"
    );
    let st = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&other)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&st.stdout).contains("wip.txt"));
    assert_nothing_left(&c);
}

/// A container that cannot run the reaper (no perl): the run says so as it
/// starts, and agents still run and stop by their tag.
#[test]
fn without_perl_flocks_says_so_and_falls_back() {
    ready();
    let p = DockerProject::new();
    let name = dsupport::unique("flocks-test-noperl");
    let fake = support::fake_claude().display().to_string();
    let (repo, out) = (p.t.repo.display(), p.t.out.display());
    let args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.clone(),
        "--network".into(),
        "none".into(),
        "-v".into(),
        "/usr:/usr:ro".into(),
        // perl, hidden: not executable.
        "-v".into(),
        "/dev/null:/usr/bin/perl:ro".into(),
        "-v".into(),
        format!("{repo}:/workspace"),
        "-v".into(),
        format!("{fake}:{fake}:ro"),
        "-v".into(),
        format!("{out}:{out}"),
        "--label".into(),
        format!("{}={repo}", dsupport::LABEL),
        "--entrypoint".into(),
        "/bin/sh".into(),
        dsupport::IMAGE.into(),
        "-c".into(),
        "trap 'exit 0' 15; while sleep 1 & wait $!; do :; done".into(),
    ];
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, msg) = dsupport::docker(&a);
    assert!(ok, "docker run: {msg}");
    let c = Ctr {
        id: msg.lines().last().unwrap().to_string(),
        name,
    };
    assert!(!c.exec(&["perl", "-e", "1"]).is_empty(), "perl still runs");
    p.config("agent_timeout_secs = 3", &pool(&p));
    p.t.tasks(&[
        json!({"id": "ok", "prompt": "@fake commit ok.txt\n"}),
        json!({"id": "slow", "prompt": format!("{}@fake hang\n", bash("setsid sleep 602 >/dev/null 2>&1 < /dev/null &"))}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        text(&o).contains("cannot run flocks' reaper"),
        "{}",
        text(&o)
    );
    assert_eq!(p.t.status_of("ok"), "success");
    assert_eq!(p.t.status_of("slow"), "timed_out");
    let ps = c.ps();
    assert!(
        !ps.contains("sleep 602") && !ps.contains("fake-claude"),
        "{ps}"
    );

    // `[validate] pool` in that container: the same notice, and the tag
    // still stops what a command leaves behind (tagged, in a new session).
    p.config(
        "[validate]\npool = \"dev\"\ncommands = [[\"sh\", \"-c\", \"setsid sleep 603 >/dev/null 2>&1 </dev/null &\"]]\n",
        &pool(&p),
    );
    let o = p.t.flocks(&["trust"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = p.t.flocks(&["land", "-y", "ok"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("flocks stops validate commands by their FLOCKS_ATTEMPT tag"),
        "{}",
        text(&o)
    );
    let ps = c.ps();
    assert!(!ps.contains("sleep 603"), "{ps}");
}

/// A forged `managed` record: state.json (writable from the container)
/// names a bystander container, by id and by name, as one `flocks up` made.
/// `flocks down` removes the container it really made and refuses the
/// others, naming them; the bystander keeps running.
#[test]
fn down_removes_only_containers_flocks_created() {
    ready();
    let p = DockerProject::new();
    let bystander = ctr(&p);
    let fake = support::fake_claude().display().to_string();
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"managed\"\nbackend = \"docker\"\nworkspace = \"mount\"\nimage = \"{}\"\nworkspace_mount = \"/workspace\"\n\
             mounts = [\"/usr:/usr:ro\", \"{fake}:{fake}:ro\"]\nnetwork = \"none\"\n",
            dsupport::IMAGE
        ),
    );
    let o = p.t.flocks(&["up"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let state_path = p.t.repo.join(".flocks/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let ours = state["managed"][0]["id"].as_str().unwrap().to_string();
    let _ours = dsupport::RemoveOnDrop(ours.clone());
    let managed = state["managed"].as_array_mut().unwrap();
    managed.push(json!({"kind": "container", "pool": "managed", "id": bystander.id, "name": "flocks-managed-x"}));
    managed.push(json!({"kind": "container", "pool": "managed", "id": bystander.name, "name": "flocks-managed-y"}));
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();

    let o = p.t.flocks(&["down"]);
    let said = text(&o);
    assert_eq!(code(&o), 5, "{said}");
    assert!(
        said.contains(&bystander.id) && said.contains(&bystander.name),
        "the refusal names the container: {said}"
    );
    assert!(said.contains("flocks.project="), "{said}");
    assert!(
        dsupport::docker(&["inspect", &bystander.id]).0,
        "flocks down removed a container it did not create"
    );
    assert!(
        c_running(&bystander),
        "the bystander was stopped: {}",
        bystander.ps()
    );
    assert!(
        !dsupport::docker(&["inspect", &ours]).0,
        "the container flocks made is still there"
    );
    assert!(
        p.t.state()
            .get("managed")
            .is_none_or(|m| m.as_array().unwrap().is_empty()),
        "{}",
        p.t.state()
    );
}

fn c_running(c: &Ctr) -> bool {
    dsupport::docker(&["inspect", "-f", "{{.State.Running}}", &c.id]).1 == "true"
}

// ---- Issue 23: the first half. Each test was run against the code before
// its fix and failed for the reason it names.

/// `.git`'s guarded places as text: config, hooks, modules, the main
/// checkout's index entries, and every ref but the tasks' branches (flocks
/// itself writes `info/exclude`).
fn guarded_git(p: &DockerProject) -> String {
    let git = p.t.repo.join(".git");
    let mut out = String::new();
    let mut stack = vec![git.join("config"), git.join("hooks"), git.join("modules")];
    while let Some(path) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        out.push_str(&format!("{} {:o}\n", path.display(), m.mode()));
        if m.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if m.is_file() {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    out.push_str(&p.git(&["ls-files", "-s"]));
    for line in p
        .git(&["for-each-ref", "--format=%(refname) %(objectname)"])
        .lines()
    {
        if !line.starts_with("refs/heads/flocks/") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The main checkout's files (not `.git`, `.flocks`, `.worktrees`, nor `skip`).
fn checkout_files(p: &DockerProject, skip: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![p.t.repo.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e
                .path()
                .strip_prefix(&p.t.repo)
                .unwrap()
                .display()
                .to_string();
            if [".git", ".flocks", ".worktrees"].contains(&rel.as_str())
                || skip.contains(&rel.as_str())
            {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((rel, std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Finding 3: a gitlink added to the main checkout's index (`update-index
/// --cacheinfo 160000,...`), for a nested repository whose `core.fsmonitor`
/// is a command, and one whose git dir is under `.git/modules/`. The attempt
/// fails naming both, the index and `.git/modules` are put back, and the
/// user's next plain `git status` runs nothing. (Before: the run succeeded
/// and `git status` ran the command.)
#[test]
fn a_gitlink_planted_in_the_index_is_undone() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    p.config("", &pool(&p));
    let before = guarded_git(&p);
    let attack = format!(
        "cd ../.. && git init -q sub && git -C sub commit -q --allow-empty -m x && \
         git -C sub config core.fsmonitor \"touch {h}/pwned #\" && \
         git update-index --add --cacheinfo 160000,$(git -C sub rev-parse HEAD),sub && \
         mkdir -p .git/modules && git init -q --separate-git-dir .git/modules/sub2 sub2 && git -C sub2 commit -q --allow-empty -m y && \
         git -C sub2 config core.fsmonitor \"touch {h}/pwned2 #\" && \
         git update-index --add --cacheinfo 160000,$(git -C sub2 rev-parse HEAD),sub2",
        h = host.display()
    );
    p.t.tasks(&[json!({"id": "gl", "prompt": format!("@fake commit g.txt\n{}", bash(&attack))})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    p.git(&["status"]);
    assert!(
        !host.join("pwned").exists() && !host.join("pwned2").exists(),
        "the user's git status ran a command the agent planted: {}",
        text(&o)
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    let reason = p.reason("gl");
    for what in [
        ".git/index: gitlink sub added",
        ".git/index: gitlink sub2 added",
        ".git/modules/sub2 added",
    ] {
        assert!(
            reason.contains(what),
            "{what} missing from: {reason}\n{}",
            std::fs::read_to_string(p.t.repo.join(".flocks/logs/gl/1.log")).unwrap_or_default()
        );
    }
    assert_eq!(guarded_git(&p), before);
    assert_nothing_left(&c);
}

/// Finding 7: an exec user that is root (`user = "root"`, `"0:0"`, or the
/// default when the repo belongs to root) is refused unless the pool says
/// `allow_root = true`: a config error naming the file, line and field, or
/// a refusal saying what to do. With `allow_root` the agent runs as root.
/// (Before: agents silently ran as uid 0, able to kill the reaper.)
#[test]
fn a_root_exec_user_needs_allow_root() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let out = p.t.out.display().to_string();
    p.t.tasks(&[json!({"id": "r", "prompt": format!("{}@fake commit r.txt\n", bash(&format!("id -u > {out}/uid")))})]);
    // A name the container maps to uid 0.
    let (ok, msg) = dsupport::docker(&[
        "exec",
        "-u",
        "0",
        &c.id,
        "sh",
        "-c",
        "echo toor:x:0:0::/root:/bin/sh >> /etc/passwd",
    ]);
    assert!(ok, "{msg}");
    p.config("", &format!("{}user = \"toor\"\n", pool(&p)));
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert!(p.read_out("uid").is_empty(), "an agent ran as toor (uid 0)");
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("`toor` is uid 0 in the container")
            && text(&o).contains("allow_root = true"),
        "{}",
        text(&o)
    );
    for user in ["root", "0:0"] {
        p.config("", &format!("{}user = \"{user}\"\n", pool(&p)));
        let o = p.t.flocks(&["run", "--no-progress"]);
        assert!(
            p.read_out("uid").is_empty(),
            "an agent ran as {user}: uid {}",
            p.read_out("uid")
        );
        assert_eq!(code(&o), 2, "{}", text(&o));
        let said = text(&o);
        let toml = std::fs::read_to_string(p.t.repo.join("flocks.toml")).unwrap();
        let line = 1 + toml.lines().position(|l| l.starts_with("user =")).unwrap();
        assert!(
            said.contains(&format!("flocks.toml:{line}:")) && said.contains("containers.user"),
            "{said}"
        );
        assert!(
            said.contains("allow_root = true") && said.contains("reaper"),
            "{said}"
        );
    }
    // The repo belongs to root: the default exec user would be uid 0.
    std::process::Command::new("chown")
        .args(["-R", "0:0"])
        .arg(&p.t.repo)
        .status()
        .unwrap();
    p.config("", &pool(&p));
    let o = p.t.flocks(&["trust"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert!(
        p.read_out("uid").is_empty(),
        "an agent ran as root by default"
    );
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains("allow_root = true") && text(&o).contains("user ="),
        "{}",
        text(&o)
    );
    // Allowed (the user accepts the flocks.toml they wrote): it runs, as root.
    p.config("", &format!("{}allow_root = true\n", pool(&p)));
    let o = p.t.flocks(&["trust"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.read_out("uid").trim(), "0");
}

/// Finding 4 in mount mode: the sibling's attack of
/// `hostile.rs::a_commit_put_on_another_tasks_branch_is_not_landed`, from
/// inside the container: t3 does not land t2's commit.
#[test]
fn a_commit_put_on_another_tasks_branch_in_the_container_is_not_landed() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    p.config("", &format!("{}max_worktrees = 2\n", pool(&p)));
    sibling_attack(&p.t.out, |t| p.t.tasks(t));
    let o = p.t.flocks(&["run", "--no-progress"]);
    let land = p.t.flocks(&["land", "-y"]);
    let log = p.git(&["log", "--format=%s", "main"]);
    assert!(
        !log.contains("planted"),
        "t3 landed the planted commit: {log}\n{}\n{}",
        text(&o),
        text(&land)
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_eq!(p.t.status_of("t3"), "failed");
    assert!(
        p.reason("t3").contains("not made in its worktree"),
        "{}",
        p.reason("t3")
    );
    assert_eq!(p.t.status_of("t2"), "success");
    assert_nothing_left(&c);
}

/// Mount mode, all at once: an agent writes `.git/hooks`, `.git/config`,
/// `.git/index` and links `.flocks/` files to a file of the user's, while an
/// honest task runs beside it. `.git`'s guarded places, the main checkout and
/// the user's file end as they were, `git status` runs nothing, and the
/// honest task lands (the guard cannot tell which agent of the mount changed
/// `.git`, so the honest attempt that overlapped fails with it and lands on
/// its retry).
#[test]
fn a_hostile_agent_in_mount_mode_leaves_the_host_as_it_was() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p);
    let host = host_only(&p);
    let rc = host.join("bashrc");
    std::fs::write(&rc, "# rc\n").unwrap();
    p.config("", &format!("{}max_worktrees = 2\n", pool(&p)));
    let git_before = guarded_git(&p);
    let out = p.t.out.display().to_string();
    let h = host.display();
    let attack = format!(
        "until [ -f {out}/ok-started ]; do sleep 0.1; done; \
         printf \"#!/bin/sh\\ntouch {h}/pwned-hook\\n\" > ../../.git/hooks/post-checkout; chmod +x ../../.git/hooks/post-checkout; \
         git config core.fsmonitor \"touch {h}/pwned-config #\"; \
         cd ../.. && git init -q sub && git -C sub commit -q --allow-empty -m x && \
         git -C sub config core.fsmonitor \"touch {h}/pwned-index #\" && \
         git update-index --add --cacheinfo 160000,$(git -C sub rev-parse HEAD),sub; \
         ln -s {rc} .flocks/logs/evil/2.log; rm -f .flocks/lock; ln -s {rc} .flocks/lock; \
         touch {out}/attacked",
        rc = rc.display()
    );
    let once = format!(
        "@fake once {out}/once {}",
        bash(&attack).trim_start_matches("@fake ")
    );
    let wait = bash(&format!(
        "touch {out}/ok-started; until [ -f {out}/attacked ]; do sleep 0.1; done"
    ));
    p.t.tasks(&[
        json!({"id": "evil", "prompt": format!("{once}@fake commit e.txt\n")}),
        json!({"id": "ok", "prompt": format!("{wait}@fake commit ok.txt\n")}),
    ]);
    let files_before = checkout_files(&p, &[]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_eq!(p.t.status_of("evil"), "failed");
    // The honest attempt ran while `.git` was changed: it fails with it.
    if p.t.status_of("ok") != "success" {
        assert!(p.reason("ok").contains("git setup"), "{}", p.reason("ok"));
        let o = p.t.flocks(&["retry", "ok", "--no-progress"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    // The attacker's next attempt, with its log and the lock linked.
    let o = p.t.flocks(&["retry", "evil", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    p.git(&["status"]);
    for m in ["pwned-hook", "pwned-config", "pwned-index"] {
        assert!(
            !host.join(m).exists(),
            "{m}: a planted command ran on the host"
        );
    }
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), "# rc\n");
    assert_eq!(guarded_git(&p), git_before);
    let o = p.t.flocks(&["land", "-y", "ok"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // The nested repository stays in the checkout, untracked: git does not
    // enter it (the status above ran nothing).
    let after: Vec<_> = checkout_files(&p, &["sub"])
        .into_iter()
        .filter(|(f, _)| f != "ok.txt")
        .collect();
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&files_before));
    assert_eq!(after, files_before);
    assert!(
        p.t.repo.join("ok.txt").exists(),
        "the honest task did not land"
    );
    p.git(&["status"]);
    assert!(!host.join("pwned-index").exists());
    assert_nothing_left(&c);
}
