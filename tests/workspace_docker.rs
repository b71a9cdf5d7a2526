//! Every worktree ready to work, on docker pools (the Docker Engine on this
//! machine, the tiny test image): `.worktreeinclude`'s files reach the agent
//! in the container through the repo's mount, `[workspace] setup` runs in
//! the container as the agent does, a failing setup spends no agent run, and
//! a setup that plants git config on the host is undone and fails.

#[path = "support/docker.rs"]
mod dsupport;
mod support;

use std::os::unix::fs::PermissionsExt;

use dsupport::{Ctr, CtrSpec, DockerProject, docker, ready};
use serde_json::json;
use support::{code, text};

fn project(setup: &str) -> (DockerProject, Ctr) {
    let p = DockerProject::new();
    let c = Ctr::start(CtrSpec {
        project: &p,
        label: true,
        env: vec![],
    });
    p.config(
        &format!("[workspace]\nsetup = {setup}\n"),
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\nproject = \"{}\"\n",
            p.t.repo.display()
        ),
    );
    std::fs::write(p.t.path(".gitignore"), ".env\nsetup-out.txt\n").unwrap();
    std::fs::write(p.t.path(".worktreeinclude"), ".env\n").unwrap();
    p.git(&["add", ".gitignore", ".worktreeinclude"]);
    p.git(&["commit", "-q", "-m", "ignore and include"]);
    // Written by flocks' user (root here), readable by it alone: the agent
    // (the repo's owner in the container) must still read its copy.
    std::fs::write(p.t.path(".env"), "TOKEN=abc\n").unwrap();
    std::fs::set_permissions(p.t.path(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    (p, c)
}

#[test]
fn docker_agent_sees_included_files_and_the_setups_work() {
    ready();
    let (p, c) = project(r#"["echo setup ran as $(id -u) on $(hostname) >> setup-out.txt"]"#);
    p.t.tasks(&[json!({"id": "t1", "prompt":
        "@fake bash \"cat .env > seen.txt; stat -c %a .env > mode.txt; cat setup-out.txt > setup.txt\"\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.git(&["show", "flocks/t1:seen.txt"]), "TOKEN=abc");
    assert_eq!(p.git(&["show", "flocks/t1:mode.txt"]), "600");
    let (_, hostname) = docker(&["inspect", "-f", "{{.Config.Hostname}}", &c.id]);
    assert_eq!(
        p.git(&["show", "flocks/t1:setup.txt"]),
        format!("setup ran as 1000 on {hostname}"),
        "the setup runs in the container, as the agent's user"
    );
}

#[test]
fn docker_failing_setup_spends_no_agent_run() {
    ready();
    let (p, _c) = project(r#"["echo cannot reach registry >&2; exit 3"]"#);
    let marker = p.out("agent-ran.jsonl");
    p.t.tasks(&[json!({"id": "t1", "prompt": format!("@fake record {}\n", marker.display())})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!marker.exists(), "the agent must not start");
    let outcome = &p.t.task("t1")["status"]["outcome"];
    assert_eq!(outcome["kind"], "setup_failed", "{outcome}");
    assert_eq!(outcome["reason"], "exit status 3");
    assert_eq!(outcome["output"], json!(["cannot reach registry"]));
}

/// A setup (a package's install script, say) that points git's hooks at the
/// worktree: git on the host would run them. The guard undoes it and the
/// setup fails, naming the change.
#[test]
fn docker_setup_that_plants_git_config_is_undone() {
    ready();
    let (p, _c) = project(r#"["git config core.hooksPath .husky"]"#);
    let marker = p.out("agent-ran.jsonl");
    p.t.tasks(&[json!({"id": "t1", "prompt": format!("@fake record {}\n", marker.display())})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!marker.exists());
    let outcome = &p.t.task("t1")["status"]["outcome"];
    assert_eq!(outcome["kind"], "setup_failed", "{outcome}");
    let reason = outcome["reason"].as_str().unwrap();
    assert!(
        reason.contains(".git/config") && reason.contains("flocks undid it"),
        "{reason}"
    );
    let config = std::fs::read_to_string(p.t.path(".git/config")).unwrap();
    assert!(!config.contains("hooksPath"), "{config}");
}

/// Task b takes a's worktree from the spare pool: its `.env` is copied
/// again (a spoiled it), and the setup does not run again.
#[test]
fn docker_spare_reuse_refreshes_includes_and_skips_the_setup() {
    ready();
    let (p, _c) = project(r#"["echo setup ran >> setup-out.txt"]"#);
    let look = |id: &str| {
        format!(
            "@fake bash \"cat .env > seen-{id}.txt; cat setup-out.txt > setup-{id}.txt; echo spoiled > .env\"\n"
        )
    };
    p.t.tasks(&[
        json!({"id": "a", "prompt": look("a")}),
        json!({"id": "b", "depends_on": ["a"], "prompt": look("b")}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.git(&["show", "flocks/b:seen-b.txt"]), "TOKEN=abc");
    assert_eq!(p.git(&["show", "flocks/b:setup-b.txt"]), "setup ran");
    let log = std::fs::read_to_string(p.t.path(".flocks/logs/b/1.log")).unwrap();
    assert!(log.contains("setup already ran in this worktree"), "{log}");
}
