//! Every worktree ready to work, on ssh pools (real sshd processes on
//! 127.0.x.y): `.worktreeinclude`'s files travel to the remote worktree over
//! the pool's ssh connection with their modes, `[workspace] setup` runs on
//! the remote host (a script of several lines too), a retry in the same
//! remote worktree gets fresh copies and no second setup, and a failing
//! setup spends no agent run.

#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use sshd::TestSshd;
use support::{TestProject, code, fake_claude, text};

fn project(h: &TestSshd, setup: &str) -> TestProject {
    support::require(
        "root, /usr/sbin/sshd, ssh and ssh-keygen (test sshds run on 127.0.x.y)",
        TestSshd::available(),
        "install OpenSSH with .ci/ensure-sshd.sh and run the tests as root",
        Some("skip-ssh"),
    );
    let p = TestProject::new("");
    let mut opts = h.ssh_options_without_identity();
    opts.extend(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"].map(String::from));
    let opts: Vec<String> = opts.iter().map(|o| format!("{o:?}")).collect();
    std::fs::write(
        p.path("flocks.toml"),
        format!(
            "kill_grace_secs = 1\n[workspace]\nsetup = {setup}\n\n\
             [[containers]]\nname = \"remote\"\nbackend = \"ssh\"\nhost = \"{}\"\nmax_worktrees = 1\n\
             identity_file = \"{}\"\nremote_dir = \"~/flocks\"\nssh_options = [{}]\n\n\
             [agent]\ncommand = \"{}\"\n",
            h.host(),
            h.key_path().display(),
            opts.join(", "),
            fake_claude().display()
        ),
    )
    .unwrap();
    std::fs::write(p.path(".gitignore"), ".env\nconf/local/\nsetup-out.txt\n").unwrap();
    std::fs::write(p.path(".worktreeinclude"), ".env\nconf/local/\n").unwrap();
    p.git(&["add", ".gitignore", ".worktreeinclude"]);
    p.git(&["commit", "-q", "-m", "ignore and include"]);
    std::fs::write(p.path(".env"), "TOKEN=abc\n").unwrap();
    std::fs::set_permissions(p.path(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(p.path("conf/local")).unwrap();
    std::fs::write(p.path("conf/local/run.sh"), "echo local\n").unwrap();
    std::fs::set_permissions(
        p.path("conf/local/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    p
}

#[test]
fn ssh_remote_worktree_gets_included_files_and_its_setup() {
    let h = TestSshd::start_any();
    // Several lines: the helper's header is line by line, so the script
    // travels on the command's stdin.
    let p = project(
        &h,
        "[\"\"\"\necho line one >> setup-out.txt\necho line two >> setup-out.txt\n\"\"\"]",
    );
    let once = p.out_file("failed-once");
    p.tasks(&[json!({"id": "t1", "prompt": format!(
        "@fake bash \"cat .env >> seen.txt; stat -c %a .env conf/local/run.sh > modes.txt; cat setup-out.txt > setup.txt; pwd > where.txt; echo spoiled > .env\"\n@fake fail-once {}\n",
        once.display()
    )})]);
    let o = p.flocks(&["run", "--no-progress", "--supervise", "--max-retries", "1"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let t = p.task("t1");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 2, "{t}");
    let show = |f: &str| p.git(&["show", &format!("flocks/t1:{f}")]);
    assert!(
        show("where.txt").contains("/flocks/worktrees/t1"),
        "the agent ran in the remote worktree: {}",
        show("where.txt")
    );
    // Both attempts saw the checkout's .env: the retry's copy was refreshed.
    assert_eq!(show("seen.txt"), "TOKEN=abc\nTOKEN=abc");
    assert_eq!(show("modes.txt"), "600\n750");
    // The setup ran once, before the first attempt.
    assert_eq!(show("setup.txt"), "line one\nline two");
    let log = std::fs::read_to_string(p.path(".flocks/logs/t1/2.log")).unwrap();
    assert!(log.contains("setup already ran in this worktree"), "{log}");
}

#[test]
fn ssh_failing_setup_spends_no_agent_run() {
    let h = TestSshd::start_any();
    let p = project(&h, r#"["echo no network >&2; exit 5"]"#);
    let marker = p.out_file("agent-ran.jsonl");
    p.tasks(&[json!({"id": "t1", "prompt": format!("@fake record {}\n", marker.display())})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!marker.exists(), "the agent must not start");
    let outcome = &p.task("t1")["status"]["outcome"];
    assert_eq!(outcome["kind"], "setup_failed", "{outcome}");
    assert_eq!(outcome["reason"], "exit status 5");
    assert_eq!(outcome["output"], json!(["no network"]));
    // `hosts check` looks for what carries .worktreeinclude's files.
    let o = p.flocks(&["hosts", "check"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("tar         yes (for .worktreeinclude's files)"),
        "{}",
        text(&o)
    );
}
