//! The docker backend against the Docker Engine on this machine: the real
//! `flocks` binary, containers of the tiny test image that mount the repo
//! like devcontainers, and the fake agent inside them.

#[path = "support/docker.rs"]
mod dsupport;
mod support;

use dsupport::{Ctr, CtrSpec, DockerProject, RemoveOnDrop, docker, not_owned_by, ready, unique};
use serde_json::json;
use support::{code, fake_bash, text, wait_for};

fn ctr(p: &DockerProject, label: bool) -> Ctr {
    Ctr::start(CtrSpec {
        project: p,
        label,
        env: vec![],
    })
}

/// Dispatch by label and by name, two containers sharing the load; commits
/// made inside land on the host branches, owned by the repo's owner, with
/// the repo's identity; the agent runs at the matching path, as the owner.
#[test]
fn two_containers_by_label_and_by_name() {
    ready();
    let p = DockerProject::new();
    let a = ctr(&p, true);
    let b = ctr(&p, false);
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"bylabel\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\nmax_worktrees = 1\n\n\
             [[containers]]\nname = \"byname\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
            p.t.repo.display(),
            b.name
        ),
    );
    let out = p.t.out.display().to_string();
    let tasks: Vec<_> = (1..=4)
        .map(|i| {
            json!({"id": format!("t{i}"), "prompt": format!(
                "@fake record {out}/t{i}.json\n@fake env HOSTNAME {out}/t{i}.host\n@fake sleep 0.5\n{}@fake commit f{i}.txt hello{i}\n",
                fake_bash("git config gc.auto > gc.txt && git add gc.txt"))})
        })
        .collect();
    p.t.tasks(&tasks);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // Agents in containers run with gc.auto=0 (flocks' upkeep is the gc).
    for i in 1..=4 {
        assert_eq!(p.git(&["show", &format!("flocks/t{i}:gc.txt")]), "0");
    }

    let hosts: std::collections::BTreeSet<String> =
        (1..=4).map(|i| p.read_out(&format!("t{i}.host"))).collect();
    let (_, ha) = docker(&["inspect", "-f", "{{.Config.Hostname}}", &a.id]);
    let (_, hb) = docker(&["inspect", "-f", "{{.Config.Hostname}}", &b.id]);
    assert!(
        hosts.contains(&ha) && hosts.contains(&hb),
        "both containers ran agents: {hosts:?} vs {ha} {hb}"
    );
    let pools: std::collections::BTreeSet<String> = (1..=4)
        .map(|i| {
            p.t.task(&format!("t{i}"))["attempts"][0]["pool"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(pools.len(), 2, "{pools:?}");

    for i in 1..=4 {
        let rec: serde_json::Value =
            serde_json::from_str(p.read_out(&format!("t{i}.json")).trim()).unwrap();
        assert_eq!(rec["cwd"], format!("/workspace/.worktrees/t{i}"));
        assert_eq!(rec["env"]["IS_SANDBOX"], "1");
        assert_eq!(
            p.git(&["show", &format!("flocks/t{i}:f{i}.txt")]),
            format!("hello{i}")
        );
        // Committed by the agent inside the container, not by flocks after it.
        assert_eq!(
            p.git(&["log", "-1", "--format=%s", &format!("flocks/t{i}")]),
            format!("fake: f{i}.txt")
        );
        assert_eq!(
            p.git(&["log", "-1", "--format=%an <%ae>", &format!("flocks/t{i}")]),
            "Test User <test@example.com>"
        );
    }
    // Everything in the repo but flocks' own state belongs to its owner.
    let bad = not_owned_by(&p.t.repo, 1000, &[".flocks", "tasks.jsonl"]);
    assert!(bad.is_empty(), "not owned by 1000: {bad:?}");
    // Git works at both paths: the finished worktrees went to the spare pool,
    // whose links must still resolve on the host and in the container.
    let spare = p.t.repo.join(".worktrees/.spare/0");
    let st = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&spare)
        .env("HOME", &p.home)
        .output()
        .unwrap();
    assert!(
        st.status.success() && st.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let inside = a.exec(&[
        "git",
        "-C",
        "/workspace/.worktrees/.spare/0",
        "status",
        "--porcelain",
    ]);
    assert!(inside.is_empty(), "{inside}");
}

/// The credential, `[agent] env` and the pool's `env` reach the agent through
/// the exec's environment, never its command line; inherited keys are removed.
#[test]
fn credentials_travel_in_the_environment_only() {
    ready();
    let p = DockerProject::new();
    let c = Ctr::start(CtrSpec {
        project: &p,
        label: true,
        env: vec![("ANTHROPIC_API_KEY", "container-key")],
    });
    let secret = unique("sekrit-value");
    p.config(
        "[[credentials]]\nname = \"sub-1\"\nenv = \"CLAUDE_TOKEN_1\"\n",
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\ncredential = \"sub-1\"\nenv = {{ POOL_VAR = \"pv\" }}\n",
            p.t.repo.display()
        ),
    );
    let out = p.t.out.display().to_string();
    p.t.tasks(&[json!({"id": "cred", "prompt": format!(
        "@fake env CLAUDE_CODE_OAUTH_TOKEN {out}/tok\n@fake env ANTHROPIC_API_KEY {out}/api\n@fake env CLAUDE_TOKEN_1 {out}/src\n\
         @fake env POOL_VAR {out}/pool\n@fake env GIT_CONFIG_COUNT {out}/gcc\n@fake text go\n@fake sleep 3\n@fake commit c.txt\n")})]);
    let mut child =
        p.t.cmd(&["run", "--no-progress"])
            .env("CLAUDE_TOKEN_1", &secret)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    wait_for(30, "the agent to start", || !p.read_out("gcc").is_empty());
    let ps = c.ps();
    assert!(
        ps.contains("fake-claude"),
        "the agent runs in the container: {ps}"
    );
    assert!(
        !ps.contains(&secret),
        "the secret is on a command line: {ps}"
    );
    let st = child.wait().unwrap();
    assert!(st.success());
    // A token for flocks' model proxy in its place, never the secret.
    assert!(
        p.read_out("tok").starts_with("flocks-"),
        "{}",
        p.read_out("tok")
    );
    assert_eq!(
        p.read_out("api"),
        "<unset>",
        "the container's own key must be removed"
    );
    assert_eq!(p.read_out("src"), "<unset>");
    assert_eq!(p.read_out("pool"), "pv");
    assert!(!p.t.flocks_dir_text().contains(&secret));
}

/// A hook planted in the host repo's .git from inside the container is found,
/// undone, and fails the attempt with the reason.
#[test]
fn planted_hook_fails_the_attempt_and_is_removed() {
    ready();
    let p = DockerProject::new();
    let _c = ctr(&p, true);
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\n",
            p.t.repo.display()
        ),
    );
    p.t.tasks(&[json!({"id": "evil", "prompt": "@fake write ../../.git/hooks/pre-commit 'echo pwned'\n@fake commit e.txt\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_eq!(p.t.status_of("evil"), "failed");
    let reason = p.reason("evil");
    assert!(reason.contains(".git/hooks/pre-commit added"), "{reason}");
    assert!(!p.t.repo.join(".git/hooks/pre-commit").exists());
}

/// A timeout stops the agent and everything it started in the container.
#[test]
fn timeout_leaves_no_process_behind() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p, true);
    p.config(
        "agent_timeout_secs = 3",
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\n",
            p.t.repo.display()
        ),
    );
    let out = p.t.out.display().to_string();
    p.t.tasks(&[json!({"id": "slow", "prompt": format!("@fake orphan {out}/orphan.pid\n@fake ignore-term\n@fake hang\n")})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_eq!(p.t.status_of("slow"), "timed_out");
    assert!(!p.read_out("orphan.pid").is_empty());
    let ps = c.ps();
    assert!(
        !ps.contains("sleep 600") && !ps.contains("fake-claude") && !ps.contains("flocks"),
        "left behind: {ps}"
    );

    // `flocks shell` opens a shell in the container, in the task's worktree,
    // as the repo's owner, with git working there.
    use std::io::Write;
    let mut sh = p.t.cmd(&["shell", "slow"]);
    sh.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = sh.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pwd; id -u; git rev-parse --abbrev-ref HEAD; exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(shown.contains("/.worktrees/slow"), "{shown}");
    assert!(
        shown.contains("1000") && shown.contains("flocks/slow"),
        "{shown}"
    );
}

/// A container killed mid-task: that task fails with a reason naming the
/// container, its pool is not used again, and the other pool does the rest.
#[test]
fn container_killed_mid_task() {
    ready();
    let p = DockerProject::new();
    let d = ctr(&p, false);
    let e = ctr(&p, false);
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"d\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nworkspace_mount = \"/workspace\"\nmax_worktrees = 1\n\n\
             [[containers]]\nname = \"e\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nmax_worktrees = 1\n",
            d.name, e.name
        ),
    );
    let out = p.t.out.display().to_string();
    p.t.tasks(&[
        json!({"id": "victim", "prompt": format!("@fake env HOSTNAME {out}/victim.host\n@fake hang\n")}),
        json!({"id": "ok1", "prompt": "@fake sleep 1\n@fake commit a.txt\n"}),
        json!({"id": "ok2", "prompt": "@fake commit b.txt\n"}),
    ]);
    let child = p.t.spawn(&["run", "--no-progress"]);
    wait_for(30, "the victim to start", || {
        !p.read_out("victim.host").is_empty()
    });
    let host = p.read_out("victim.host");
    let victim = [&d, &e]
        .into_iter()
        .find(|c| docker(&["inspect", "-f", "{{.Config.Hostname}}", &c.id]).1 == host)
        .unwrap();
    let (ok, msg) = docker(&["kill", &victim.id]);
    assert!(ok, "{msg}");
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    let reason = p.reason("victim");
    assert_eq!(p.t.status_of("victim"), "host_lost", "{reason}");
    assert!(reason.contains(&victim.name), "{reason}");
    assert_eq!(p.t.status_of("ok1"), "success");
    assert_eq!(p.t.status_of("ok2"), "success");
}

/// A missing container takes its pool out with a message that names it; the
/// other pools keep working, and with none left flocks says why (exit 5).
#[test]
fn missing_container() {
    ready();
    let p = DockerProject::new();
    let missing = unique("flocks-test-missing");
    let docker_pool = format!(
        "[[containers]]\nname = \"gone\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{missing}\"\n"
    );
    p.config(
        "",
        &format!("{docker_pool}\n[[containers]]\nname = \"here\"\nbackend = \"local\"\n"),
    );
    p.t.tasks(&[json!({"id": "t", "prompt": "@fake commit t.txt\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains(&missing), "{}", text(&o));
    assert_eq!(p.t.task("t")["attempts"][0]["pool"], "here");

    p.config("", &docker_pool);
    // The first run started container agents: an edited flocks.toml is
    // trusted again only when the user says so.
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("flocks.toml changed"), "{}", text(&o));
    let o = p.t.flocks(&["trust"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("flocks.toml changed"), "{}", text(&o));
    p.t.tasks(&[json!({"id": "u", "prompt": "@fake commit u.txt\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("`{missing}` does not exist")),
        "{}",
        text(&o)
    );
}

/// `flocks up` creates the pool's container from its image (once), `run`
/// uses it, `down` removes it and nothing else.
#[test]
fn up_run_down() {
    ready();
    let p = DockerProject::new();
    let foreign = ctr(&p, true);
    let fake = support::fake_claude().display().to_string();
    let out = p.t.out.display().to_string();
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"managed\"\nbackend = \"docker\"\nworkspace = \"mount\"\nimage = \"{}\"\nworkspace_mount = \"/workspace\"\n\
             mounts = [\"/usr:/usr:ro\", \"{fake}:{fake}:ro\", \"{out}:{out}\"]\nnetwork = \"none\"\nenv = {{ UPVAR = \"up\" }}\n",
            dsupport::IMAGE
        ),
    );
    let o = p.t.flocks(&["up"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let managed = p.t.state()["managed"].clone();
    assert_eq!(managed.as_array().unwrap().len(), 1, "{managed}");
    let id = managed[0]["id"].as_str().unwrap().to_string();
    let _guard = RemoveOnDrop(id.clone());
    let (_, labels) = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"devcontainer.local_folder\"}}",
        &id,
    ]);
    assert_eq!(labels, p.t.repo.display().to_string());

    let o = p.t.flocks(&["up"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("is running"), "{}", text(&o));
    assert_eq!(p.t.state()["managed"].as_array().unwrap().len(), 1);

    p.t.tasks(&[
        json!({"id": "m", "prompt": format!("@fake env UPVAR {out}/upvar\n@fake commit m.txt\n")}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.read_out("upvar"), "up");

    let o = p.t.flocks(&["down"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        !docker(&["inspect", &id]).0,
        "the managed container is gone"
    );
    assert!(
        docker(&["inspect", &foreign.id]).0,
        "a container flocks did not make stays"
    );
    assert!(
        p.t.state()
            .get("managed")
            .is_none_or(|m| m.as_array().unwrap().is_empty())
    );
}

/// A run first stops what a crashed run of the project left in the container;
/// `flocks stop` reaches the dispatcher, which stops the agents in the
/// container gracefully and keeps the state.
#[test]
fn survivors_are_stopped_and_stop_is_graceful() {
    ready();
    let p = DockerProject::new();
    let c = ctr(&p, true);
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\n",
            p.t.repo.display()
        ),
    );
    std::fs::create_dir_all(p.t.repo.join(".flocks")).unwrap();
    let key = flocks::paths::key_of(&p.t.repo.join(".flocks"));
    let tag = format!("FLOCKS_ATTEMPT={key}:old:1");
    let (ok, msg) = docker(&[
        "exec",
        "-d",
        "-u",
        "1000:1000",
        "-e",
        &tag,
        &c.id,
        "sleep",
        "601",
    ]);
    assert!(ok, "{msg}");
    wait_for(10, "the survivor", || c.ps().contains("sleep 601"));

    let out = p.t.out.display().to_string();
    p.t.tasks(&[
        json!({"id": "long", "prompt": format!("@fake env HOSTNAME {out}/long\n@fake hang\n")}),
    ]);
    let child = p.t.spawn(&["run", "--no-progress"]);
    wait_for(30, "the agent to start", || !p.read_out("long").is_empty());
    let ps = c.ps();
    assert!(
        !ps.contains("sleep 601"),
        "the survivor of the crashed run lives: {ps}"
    );
    let o = p.t.flocks(&["stop"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = child.wait_with_output().unwrap();
    assert!(text(&o).contains("earlier flocks run"), "{}", text(&o));
    assert_eq!(p.t.status_of("long"), "interrupted");
    let ps = c.ps();
    assert!(!ps.contains("fake-claude"), "left behind: {ps}");
}
