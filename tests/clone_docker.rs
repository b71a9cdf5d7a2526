//! Docker clone mode (`workspace = "clone"`, the default) against the Docker
//! Engine on this machine: containers of the tiny test image that do NOT
//! mount the repository; each task works in a repository of its own in the
//! container, filled and emptied over git, and its work comes back through
//! the intake. The features of mount mode work the same (setup, include,
//! start_from, best of, land --resolve, [validate] pool, retries with
//! resume, shell, logs -f), and hostile agents cannot touch the host.

#[path = "support/docker.rs"]
mod dsupport;
#[path = "support/http.rs"]
mod http;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dsupport::{Ctr, CtrSpec, DockerProject, RemoveOnDrop, docker, ready};
use serde_json::json;
use support::{code, text, wait_for};

fn bare(p: &DockerProject) -> Ctr {
    Ctr::start_without_repo(CtrSpec {
        project: p,
        label: false,
        env: vec![],
    })
}

fn pool(c: &Ctr, extra: &str) -> String {
    format!(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"{}\"\n{extra}",
        c.name
    )
}

/// The project's key: clone mode's directory in the container.
fn key(p: &DockerProject) -> String {
    std::fs::create_dir_all(p.t.repo.join(".flocks")).unwrap();
    flocks::paths::key_of(&p.t.repo.join(".flocks"))
}

fn clone_dir(p: &DockerProject, task: &str) -> String {
    format!("/var/tmp/flocks/{}/worktrees/{task}", key(p))
}

/// A `@fake bash` line for `command` (quoted for the fake's shlex).
fn bash(command: &str) -> String {
    format!("@fake bash '{}'\n", command.replace('\'', r"'\''"))
}

fn main_files(p: &DockerProject) -> Vec<String> {
    let mut f: Vec<String> = p
        .git(&["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    f.sort();
    f
}

/// Two tasks in a container that does not mount the repository: each works
/// in its own clone there, as the repo's owner; the commits (and the
/// leftovers) come back onto the host branches, with the repo's identity
/// and flocks' reflog line; no host worktree is made; status, its JSON and
/// the run header say how the pool is isolated; land lands them.
#[test]
fn clone_mode_works_in_the_containers_own_clone_and_says_so() {
    ready();
    let p = DockerProject::new();
    let c = bare(&p);
    assert!(
        !c.mount_sources()
            .iter()
            .any(|s| Path::new(s).starts_with(&p.t.repo)),
        "the container must not mount the repository"
    );
    p.config("", &pool(&c, "max_worktrees = 2\n"));
    let out = p.t.out.display().to_string();
    p.t.tasks(&[
        json!({"id": "t1", "prompt": format!("@fake record {out}/t1.json\n@fake commit a.txt hello\n@fake write left.txt left\n")}),
        json!({"id": "t2", "prompt": format!("@fake record {out}/t2.json\n@fake commit b.txt bye\n")}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    let said = text(&o);
    assert_eq!(code(&o), 0, "{said}");
    assert!(
        said.contains("dev (docker, isolation clone, 2 slots)"),
        "{said}"
    );
    for (t, file, body) in [("t1", "a.txt", "hello"), ("t2", "b.txt", "bye")] {
        let rec: serde_json::Value =
            serde_json::from_str(p.read_out(&format!("{t}.json")).trim()).unwrap();
        assert_eq!(rec["cwd"], clone_dir(&p, t), "{rec}");
        assert_eq!(p.git(&["show", &format!("flocks/{t}:{file}")]), body);
        assert_eq!(
            p.git(&["log", "-1", "--format=%an <%ae>", &format!("flocks/{t}")]),
            "Test User <test@example.com>"
        );
        let reflog = p.git(&["reflog", "-1", "--format=%gs", &format!("flocks/{t}")]);
        assert!(
            reflog.contains(&format!("of {t} from docker container `{}`", c.name)),
            "{reflog}"
        );
        assert!(!p.t.repo.join(".worktrees").join(t).exists());
    }
    assert_eq!(p.git(&["show", "flocks/t1:left.txt"]), "left");
    assert_eq!(
        p.git(&["log", "-1", "--format=%s", "flocks/t1"]),
        "flocks: uncommitted changes left by attempt 1"
    );
    // Nothing left in quarantine; the host's own fsck is happy.
    let q = p.t.repo.join(".git/flocks-intake");
    assert!(std::fs::read_dir(&q).map(|d| d.count()).unwrap_or(0) == 0);
    p.git(&["fsck", "--no-dangling"]);
    // Everything flocks wrote in .git belongs to the repo's owner.
    let bad = dsupport::not_owned_by(&p.t.repo.join(".git"), 1000, &[]);
    assert!(bad.is_empty(), "not owned by 1000: {bad:?}");

    let o = p.t.flocks(&["status"]);
    assert!(text(&o).contains("isolation: clone"), "{}", text(&o));
    let o = p.t.flocks(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pools"][0]["isolation"], "clone", "{v}");

    let o = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(main_files(&p), ["README.md", "a.txt", "b.txt", "left.txt"]);
}

/// Retries resume the session in the same clone (claude resumes by path);
/// `flocks shell` opens in the task's clone in the container; `flocks logs
/// -f` follows a clone-mode attempt to its end.
#[test]
fn clone_mode_retries_resume_and_shell_and_logs_follow() {
    ready();
    let p = DockerProject::new();
    let c = bare(&p);
    p.config("max_retries = 1", &pool(&c, ""));
    let out = p.t.out.display().to_string();
    p.t.tasks(&[
        json!({"id": "r", "prompt": format!(
            "@fake record {out}/r.jsonl\n@fake once {out}/r-once commit first.txt 1\n@fake fail-once {out}/r-fail oops\n@fake commit second.txt 2\n")}),
        json!({"id": "f", "prompt": "@fake text first-line\n@fake sleep 3\n@fake text second-line\n@fake commit f.txt\n"}),
    ]);
    let mut run = p.t.spawn(&["run", "--no-progress", "--supervise"]);
    wait_for(60, "f's log", || {
        p.t.repo.join(".flocks/logs/f/1.log").exists()
    });
    let o = p.t.flocks(&["logs", "f", "-f"]);
    let t = text(&o);
    assert!(
        t.contains("first-line") && t.contains("second-line") && t.contains("■ result: success"),
        "{t}"
    );
    let st = run.wait().unwrap();
    assert!(st.success());
    let r = p.t.task("r");
    let attempts = r["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{r:#}");
    assert_eq!(attempts[1]["resumed_from"], attempts[0]["session_id"]);
    assert_eq!(attempts[1]["outcome"]["kind"], "success");
    let recs: Vec<serde_json::Value> = p
        .read_out("r.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["cwd"], recs[1]["cwd"], "the same clone, by path");
    assert!(recs[1]["argv"].to_string().contains("--resume"));
    assert_eq!(p.git(&["show", "flocks/r:first.txt"]), "1");
    assert_eq!(p.git(&["show", "flocks/r:second.txt"]), "2");

    // A task that failed keeps its clone: a shell opens there.
    p.t.tasks(&[json!({"id": "x", "prompt": "@fake commit x.txt\n@fake fail nope\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    use std::io::Write;
    let mut sh = p.t.cmd(&["shell", "x"]);
    sh.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = sh.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pwd; id -u; git rev-parse --abbrev-ref HEAD; ls; exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(shown.contains(&clone_dir(&p, "x")), "{shown}");
    assert!(
        shown.contains("1000") && shown.contains("flocks/x") && shown.contains("x.txt"),
        "{shown}"
    );
}

/// `.worktreeinclude` and `[workspace] setup` in the clone, `start_from`
/// (the dependency's work sent in as objects), and `[validate] pool`: land's
/// validation runs in the container, on the landed result sent in as
/// objects, in a clone there.
#[test]
fn clone_mode_setup_include_start_from_and_validation_in_the_container() {
    ready();
    let p = DockerProject::new();
    let c = bare(&p);
    let out = p.t.out.display().to_string();
    p.config(
        &format!(
            "[workspace]\nsetup = [\"echo setup as $(id -u) >> setup-out.txt\"]\n\n\
             [validate]\npool = \"dev\"\ncommands = [\"sh -c 'pwd > {out}/validate.pwd; ls > {out}/validate.ls; test -f b.txt'\"]\ntimeout_secs = 60\n"
        ),
        &pool(&c, ""),
    );
    std::fs::write(p.t.path(".gitignore"), ".env\nsetup-out.txt\n").unwrap();
    std::fs::write(p.t.path(".worktreeinclude"), ".env\n").unwrap();
    p.git(&["add", ".gitignore", ".worktreeinclude"]);
    p.git(&["commit", "-q", "-m", "ignore and include"]);
    std::fs::write(p.t.path(".env"), "TOKEN=abc\n").unwrap();
    p.t.tasks(&[
        json!({"id": "a", "prompt": format!("{}@fake commit a.txt from-a\n",
            bash("cat .env > seen.txt; cat setup-out.txt > setup.txt; git add seen.txt setup.txt; git commit -qm seen"))}),
        json!({"id": "b", "prompt": format!("@fake ls {out}/b.files\n@fake commit b.txt from-b\n"),
               "depends_on": ["a"], "start_from": "dependencies"}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.git(&["show", "flocks/a:seen.txt"]), "TOKEN=abc");
    assert_eq!(p.git(&["show", "flocks/a:setup.txt"]), "setup as 1000");
    let files = p.read_out("b.files");
    assert!(
        files.lines().any(|l| l == "a.txt"),
        "b starts from a's work: {files}"
    );

    let o = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        p.read_out("validate.pwd").trim(),
        format!("/var/tmp/flocks/{}/worktrees/@land", key(&p))
    );
    let ls = p.read_out("validate.ls");
    assert!(ls.contains("a.txt") && ls.contains("b.txt"), "{ls}");
    assert!(main_files(&p).contains(&"b.txt".to_string()));
}

/// Best of N in clone mode, judged by validation in the container; then a
/// conflict at land redone by `land --resolve` in the container.
#[test]
fn clone_mode_best_of_and_land_resolve() {
    ready();
    let p = DockerProject::new();
    let c = bare(&p);
    let out = p.t.out.display().to_string();
    p.config(
        "max_retries = 1\n[validate]\npool = \"dev\"\ncommands = [\"sh -c 'test ! -f n.txt || test $(wc -l < n.txt) -lt 10'\"]\ntimeout_secs = 60\n",
        &pool(&c, "max_worktrees = 2\n"),
    );
    let best = json!({"id": "t", "best_of": 2, "prompt": "\
        @fake if-env FLOCKS_TASK t@v1 bash 'seq 30 > n.txt && git add n.txt && git commit -qm thirty'\n\
        @fake if-env FLOCKS_TASK t@v2 bash 'seq 3 > n.txt && git add n.txt && git commit -qm three'\n"});
    p.t.tasks(std::slice::from_ref(&best));
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let t = p.t.task("t");
    assert_eq!(t["best_of"]["judgement"]["winner"], 2, "{t:#}");
    assert_eq!(p.git(&["show", "flocks/t:n.txt"]), "1\n2\n3");

    // Two tasks that append to the same file: the second conflicts at land
    // and is redone on the new target.
    let redo = format!("{out}/redo");
    p.t.tasks(&[
        best,
        json!({"id": "a", "prompt": "@fake append notes.txt from-a\n"}),
        json!({"id": "b", "prompt": format!("@fake if-exists {redo} fail-once {out}/b-once redo\n@fake append notes.txt from-b\n")}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    std::fs::write(&redo, "").unwrap();
    let o = p.t.flocks(&["land", "-y", "--resolve"]);
    let said = text(&o);
    assert_eq!(code(&o), 0, "{said}");
    assert!(
        said.contains("resolve: redoing 1 conflicted task from"),
        "{said}"
    );
    assert_eq!(p.git(&["show", "main:notes.txt"]), "from-a\nfrom-b");
    assert_eq!(p.git(&["show", "main:n.txt"]), "1\n2\n3");
}

/// `flocks up` makes a clone-mode container without the repository (the
/// pool's `mounts` still apply), and a run works in it.
#[test]
fn clone_mode_up_mounts_no_repository() {
    ready();
    let p = DockerProject::new();
    let fake = support::fake_claude().display().to_string();
    let out = p.t.out.display().to_string();
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"managed\"\nbackend = \"docker\"\nimage = \"{}\"\n\
             mounts = [\"/usr:/usr:ro\", \"{fake}:{fake}:ro\", \"{out}:{out}\"]\nnetwork = \"none\"\n",
            dsupport::IMAGE
        ),
    );
    let o = p.t.flocks(&["up"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let id = p.t.state()["managed"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _guard = RemoveOnDrop(id.clone());
    let (ok, mounts) = docker(&["inspect", "-f", "{{range .Mounts}}{{.Source}} {{end}}", &id]);
    assert!(ok, "{mounts}");
    assert!(mounts.contains(&out), "the pool's mounts apply: {mounts}");
    assert!(
        !mounts
            .split_whitespace()
            .any(|s| Path::new(s).starts_with(&p.t.repo)),
        "no mount of the repository: {mounts}"
    );
    p.t.tasks(&[
        json!({"id": "m", "prompt": format!("@fake record {out}/m.json\n@fake commit m.txt\n")}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rec: serde_json::Value = serde_json::from_str(p.read_out("m.json").trim()).unwrap();
    assert_eq!(rec["cwd"], clone_dir(&p, "m"));
    let o = p.t.flocks(&["down"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

/// Egress from a clone-mode container `flocks up` made (issue 24), hostile
/// first: under `[network]` it has no network (`none`) but the project's
/// proxy directory, read-only; the agent reaches flocks' proxy through
/// `flocks __forward` in the container. Its model request reaches the
/// upstream with the real key; through the proxy the allowed server
/// answers and the denied one is an `egress_denied` event; a direct
/// connection fails; status says the allowlist is enforced.
#[test]
fn clone_mode_up_egress_only_through_the_proxy() {
    ready();
    let api = http::Server::start(http::Answer::Status(200));
    let allowed = http::Server::start(http::Answer::Status(200));
    let denied = http::Server::start(http::Answer::Status(200));
    let (a, d) = (allowed.port, denied.port);
    let mut p = DockerProject::new();
    let key_text = unique_key();
    p.t.env.push(("DOCKER_EGRESS_KEY".into(), key_text.clone()));
    let fake = support::fake_claude().display().to_string();
    let out = p.t.out.display().to_string();
    p.config(
        &format!(
            "[proxy]\nupstream = \"http://127.0.0.1:{}\"\n[network]\nallow = [\"127.0.0.1:{a}\"]\n\
             [[credentials]]\nname = \"k\"\nenv = \"DOCKER_EGRESS_KEY\"\nkind = \"api_key\"\n",
            api.port
        ),
        &format!(
            "[[containers]]\nname = \"managed\"\nbackend = \"docker\"\nimage = \"{}\"\ncredential = \"k\"\n\
             mounts = [\"/usr:/usr:ro\", \"{fake}:{fake}:ro\", \"{out}:{out}\"]\n",
            dsupport::IMAGE
        ),
    );
    let o = p.t.flocks(&["up"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let id = p.t.state()["managed"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _guard = RemoveOnDrop(id.clone());
    let (ok, net) = docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", &id]);
    assert!(ok, "{net}");
    assert_eq!(net, "none", "no network of its own under [network]");
    p.t.tasks(&[json!({"id": "net", "prompt": format!(
        "@fake api out={out}/api.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/plain out={out}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/plain out={out}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/tunnel tunnel out={out}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/tunnel tunnel out={out}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/direct direct out={out}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/direct direct out={out}/f.jsonl\n\
         @fake commit done.txt")})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    let said = text(&o);
    assert_eq!(code(&o), 0, "{said}");
    assert!(!said.contains("advisory"), "{said}");
    let got: Vec<serde_json::Value> = p
        .read_out("f.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[0]["status"], 200, "allowed, through the proxy: {got:?}");
    assert_eq!(got[1]["status"], 403, "denied, through the proxy: {got:?}");
    assert_eq!(got[2]["status"], 200, "allowed, tunnelled: {got:?}");
    assert!(
        got[3]["error"].as_str().unwrap_or_default().contains("403"),
        "{got:?}"
    );
    for i in [4, 5] {
        assert!(
            got[i]["status"].is_null() && got[i]["error"].is_string(),
            "direct: {got:?}"
        );
    }
    let reached: Vec<String> = allowed.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(reached, ["/plain", "/tunnel"]);
    assert!(
        denied.requests().is_empty(),
        "nothing reached the denied server"
    );
    let api_said: serde_json::Value =
        serde_json::from_str(p.read_out("api.jsonl").lines().last().unwrap()).unwrap();
    assert_eq!(api_said["status"], 200, "{api_said}");
    let asked = api.requests_to("/v1/messages");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].headers["x-api-key"], key_text);
    let events = std::fs::read_to_string(p.t.path(".flocks/events.jsonl")).unwrap();
    let refused: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "egress_denied")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| e["port"] == d && e["host"] == "127.0.0.1")
    );
    let st: serde_json::Value =
        serde_json::from_slice(&p.t.flocks(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["pools"][0]["egress"], "enforced");
    let o = p.t.flocks(&["down"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
}

/// Hostile to the claim: a pool whose config says its allowlist binds
/// (clone mode, made from `image`, no `network`) but whose container has a
/// network (made before `[network]`, or by someone else) is refused before
/// any agent runs in it, naming the container and its network.
#[test]
fn clone_mode_egress_refuses_a_container_with_a_network() {
    ready();
    let p = DockerProject::new();
    let name = dsupport::unique("flocks-netful");
    let (ok, id) = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-v",
        "/usr:/usr:ro",
        "--entrypoint",
        "/bin/sh",
        dsupport::IMAGE,
        "-c",
        "sleep 600",
    ]);
    assert!(ok, "{id}");
    let _guard = RemoveOnDrop(id.lines().last().unwrap().to_string());
    p.config(
        "[network]\nallow = [\"example.org\"]\n",
        &format!(
            "[[containers]]\nname = \"managed\"\nbackend = \"docker\"\nimage = \"{}\"\ncontainer = \"{name}\"\n",
            dsupport::IMAGE
        ),
    );
    p.t.tasks(&[json!({"id": "x", "prompt": "@fake commit x.txt x"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    let said = text(&o);
    assert_ne!(code(&o), 0, "{said}");
    assert!(
        said.contains(&format!("docker container `{name}` is on network")),
        "{said}"
    );
    assert!(said.contains("flocks down"), "{said}");
    assert_ne!(p.t.status_of("x"), "success");
}

fn unique_key() -> String {
    format!("sk-ant-api03-DOCKEREGRESS-{}", dsupport::unique("k"))
}

/// A devcontainer that mounts the repository, in clone mode: agents work
/// in their clones in the container; the run says once that the container
/// can reach the repository; the guard stays on (a hook planted through the
/// mount is undone and fails the attempt).
#[test]
fn clone_mode_in_a_devcontainer_that_mounts_the_repo_keeps_the_guard() {
    ready();
    let p = DockerProject::new();
    let c = Ctr::start(CtrSpec {
        project: &p,
        label: true,
        env: vec![],
    });
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nproject = \"{}\"\nmax_worktrees = 2\n\n\
             [[containers]]\nname = \"dev2\"\nbackend = \"docker\"\ncontainer = \"{}\"\n",
            p.t.repo.display(),
            c.name
        ),
    );
    let out = p.t.out.display().to_string();
    p.t.tasks(&[
        json!({"id": "ok", "prompt": format!("@fake record {out}/ok.json\n@fake commit ok.txt\n")}),
        // After `ok`: a change the guard finds fails every attempt that ran
        // beside it (it cannot tell whose it was).
        json!({"id": "evil", "depends_on": ["ok"],
               "prompt": "@fake write /workspace/.git/hooks/pre-commit 'echo pwned'\n@fake commit e.txt\n"}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    let said = text(&o);
    assert_eq!(code(&o), 3, "{said}");
    assert_eq!(
        said.matches("can reach the repository through its mount")
            .count(),
        1,
        "said once: {said}"
    );
    let rec: serde_json::Value = serde_json::from_str(p.read_out("ok.json").trim()).unwrap();
    assert_eq!(rec["cwd"], clone_dir(&p, "ok"));
    assert_eq!(p.t.status_of("ok"), "success");
    assert_eq!(p.t.status_of("evil"), "failed");
    assert!(
        p.reason("evil").contains(".git/hooks/pre-commit added"),
        "{}",
        p.reason("evil")
    );
    assert!(!p.t.repo.join(".git/hooks/pre-commit").exists());
}

/// flocks is killed mid-task: the next run takes back, through the intake,
/// what the attempt left in its clone (its commit, and its uncommitted file
/// committed there) before the next attempt starts there.
#[test]
fn clone_mode_work_left_by_a_killed_flocks_comes_back() {
    ready();
    let p = DockerProject::new();
    let c = bare(&p);
    p.config("", &pool(&c, ""));
    let started = p.out("started");
    p.t.tasks(&[json!({"id": "crash", "prompt": format!(
        "@fake commit part1.txt\n@fake write part2.txt left\n@fake record {}\n@fake hang\n",
        started.display()
    )})]);
    let mut child = p.t.spawn(&["run", "--no-progress"]);
    wait_for(60, "the agent to start", || started.exists());
    child.kill().unwrap(); // SIGKILL: no finish, no intake
    child.wait().unwrap();
    p.t.tasks(&[json!({"id": "crash", "prompt": "@fake commit part3.txt\n"})]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    let said = text(&o);
    assert_eq!(code(&o), 0, "{said}");
    assert!(said.contains("recovered 2 commits"), "{said}");
    let log = p.git(&["log", "--format=%s", "flocks/crash"]);
    for want in [
        "fake: part1.txt",
        "uncommitted changes left by an interrupted attempt",
        "fake: part3.txt",
    ] {
        assert!(log.contains(want), "{want} missing from:\n{log}");
    }
    assert_eq!(p.git(&["show", "flocks/crash:part2.txt"]), "left");
    let ps = c.ps();
    assert!(!ps.contains("fake-claude"), "left behind: {ps}");
}

/// Hashes of every file under `root` (relative path -> content hash),
/// leaving out `skip` (relative prefixes).
fn tree_hash(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if skip
                .iter()
                .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                stack.push(path);
            } else if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                );
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(rel, format!("{:x}", sha2::Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// What the host holds that no agent may change: the repo's git setup (all
/// of .git but the objects and flocks' own task branches and reflogs), the
/// main checkout, and the home given to flocks.
fn host_snapshot(p: &DockerProject, home: &Path) -> Vec<BTreeMap<String, String>> {
    vec![
        tree_hash(
            &p.t.repo.join(".git"),
            // flocks' own: the objects and task branches the intake took,
            // their reflogs, the quarantine, and `run`'s ignore lines.
            &[
                "objects",
                "logs",
                "refs/heads/flocks",
                "flocks-intake",
                "packed-refs",
                "info/exclude",
            ],
        ),
        tree_hash(&p.t.repo, &[".git", ".flocks", "tasks.jsonl"]),
        tree_hash(home, &[]),
    ]
}

/// Every file under `dir` whose content holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Hostile agents in clone mode, beside an honest one. They try to write the
/// host's `.git/hooks`, `.git/config`, `.git/index`, `.flocks/logs/*` and
/// `$HOME/.bashrc`, to read `$HOME/.ssh/id_*`, to move another task's
/// branch, to leave a process behind, and to send a branch with a `..` path
/// or a 1 GiB blob. Each fails with the host unchanged; the honest task
/// lands.
#[test]
fn hostile_agents_in_clone_mode_leave_the_host_unchanged() {
    ready();
    let p = DockerProject::new();
    let c = bare(&p);
    // The home flocks runs with: a shell rc and an ssh key (fakes).
    let home = p.home.clone();
    std::fs::write(home.join(".bashrc"), "# the user's shell rc\n").unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), "FAKE-PRIVATE-KEY-7d1c\n").unwrap();
    p.config("max_retries = 0", &pool(&c, "max_worktrees = 4\n"));
    let repo = p.t.repo.display().to_string();
    let h = home.display().to_string();
    let out = p.t.out.display().to_string();
    let zero = dsupport::zero_blob().display().to_string();
    // The marker is computed in the agent, so that only what it wrote holds it.
    let write_host = format!(
        "for f in {repo}/.git/hooks/pre-commit {repo}/.git/config {repo}/.git/index \
         {repo}/.flocks/logs/honest/1.log {h}/.bashrc /workspace/.git/hooks/post-checkout; do \
         mkdir -p $(dirname $f) 2>/dev/null; echo $((6*7))PWN >> $f; done; true"
    );
    let read_key = format!(
        "cat {h}/.ssh/id_ed25519 ~/.ssh/id_* > stolen.txt 2>/dev/null; \
         git add stolen.txt; git commit -qm stolen; true"
    );
    let move_branch =
        "git update-ref refs/heads/flocks/honest HEAD; git branch -f flocks/honest HEAD; \
         git push -f {repo} HEAD:refs/heads/flocks/honest 2>/dev/null; true"
            .replace("{repo}", &repo);
    let dotdot = "t=$(printf \"100644 blob %s\\tx\\n\" $(echo evil | git hash-object -w --stdin) | git mktree); \
         r=$( (git ls-tree HEAD; printf \"040000 tree %s\\t..\\n\" $t) | git mktree --missing); \
         c=$(git commit-tree $r -p HEAD -m dotdot); git update-ref HEAD $c";
    let big = format!(
        "c=$(python3 {zero} 1073741824 $(git rev-parse HEAD) .git/objects); git update-ref HEAD $c"
    );
    p.t.tasks(&[
        json!({"id": "honest", "prompt": "@fake sleep 2\n@fake commit honest.txt fine\n"}),
        json!({"id": "w", "prompt": format!("{}@fake commit w.txt\n", bash(&write_host))}),
        json!({"id": "k", "prompt": bash(&read_key)}),
        json!({"id": "m", "prompt": format!("@fake commit m.txt\n{}", bash(&move_branch))}),
        json!({"id": "o", "prompt": format!("@fake orphan {out}/o.pid\n@fake commit o.txt\n")}),
        json!({"id": "dd", "prompt": bash(dotdot)}),
        json!({"id": "big", "prompt": bash(&big)}),
    ]);
    let before = host_snapshot(&p, &home);
    let o = p.t.flocks(&["run", "--no-progress"]);
    let said = text(&o);
    assert_eq!(code(&o), 3, "{said}");
    let after = host_snapshot(&p, &home);
    for (b, a) in before.iter().zip(&after) {
        let changed: Vec<&String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(b.keys().filter(|k| !a.contains_key(*k)))
            .collect();
        assert!(changed.is_empty(), "the host changed: {changed:?}");
    }
    // Nothing the agents wrote reached the host's files.
    let marker = "42PWN";
    assert!(
        files_holding(&p.t.repo, marker).is_empty(),
        "{:?}",
        files_holding(&p.t.repo, marker)
    );
    assert!(files_holding(&home, marker).is_empty());
    // The key was not there to read.
    assert!(files_holding(&p.t.repo.join(".flocks"), "FAKE-PRIVATE-KEY").is_empty());
    assert!(files_holding(&p.t.out, "FAKE-PRIVATE-KEY").is_empty());
    let stolen = p.git(&["show", "flocks/k:stolen.txt"]);
    assert!(stolen.is_empty(), "{stolen}");
    // The other task's branch holds its own work only.
    assert_eq!(p.t.status_of("honest"), "success");
    assert_eq!(
        p.git(&["log", "--format=%s", "-1", "flocks/honest"]),
        "fake: honest.txt"
    );
    assert!(!p.git_ok(&["cat-file", "-e", "flocks/honest:m.txt"]));
    // Nothing outlived its attempt in the container.
    let pid = p.read_out("o.pid");
    assert!(!pid.is_empty());
    let ps = c.ps();
    assert!(
        !ps.contains("sleep 600") && !ps.contains("fake-claude") && !ps.contains("flocks-reaper"),
        "left behind: {ps}"
    );
    // The `..` path and the gigabyte were refused by the intake, naming the
    // check; their branches stay where they started.
    let log = |t: &str| {
        std::fs::read_to_string(p.t.repo.join(format!(".flocks/logs/{t}/1.log")))
            .unwrap_or_default()
    };
    let dd = p.reason("dd");
    assert!(
        dd.contains("refused its branch (fsck)") && dd.contains("hasDotdot"),
        "{dd}\n{}",
        log("dd")
    );
    let big = p.reason("big");
    assert!(
        big.contains("refused its branch (size cap (objects))"),
        "{big}\n{}",
        log("big")
    );
    for t in ["dd", "big"] {
        assert_eq!(
            p.git(&["rev-parse", &format!("flocks/{t}")]),
            p.git(&["rev-parse", "main"]),
            "{t}"
        );
    }
    let o = p.t.flocks(&["land", "-y"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(main_files(&p).contains(&"honest.txt".to_string()));
}

impl DockerProjectExt for DockerProject {
    fn git_ok(&self, args: &[&str]) -> bool {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&self.t.repo)
            .env("HOME", &self.home)
            .output()
            .unwrap()
            .status
            .success()
    }
}

trait DockerProjectExt {
    fn git_ok(&self, args: &[&str]) -> bool;
}
