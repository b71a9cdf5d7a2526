//! What the benchmarks share: the committing bench agent, a generated repo,
//! environment knobs.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const AGENT: &str = r#"#!/bin/sh
prompt=$(cat)
echo '{"type":"system","subtype":"init","session_id":"bench","model":"bench"}'
name=$(printf '%s' "$prompt" | tr -cd 'a-z0-9-')
echo "$prompt" > "out-$name.txt"
git add "out-$name.txt" && git commit -q -m "bench $name"
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok","session_id":"bench","total_cost_usd":0}'
"#;

/// The load average (1, 5, 15 minutes), printed beside every figure.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn make_repo(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| run(Command::new("git").args(args).current_dir(dir));
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.name", "bench"]);
    git(&["config", "user.email", "bench@example.invalid"]);
    // Thousands of agents' commits would start `git gc --auto` again and
    // again, each waiting up to a second on the others' packed-refs lock:
    // that measures git, not flocks.
    git(&["config", "gc.auto", "0"]);
    for i in 0..files {
        let sub = dir.join(format!("src/m{:02}", i % 50));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}.rs")),
            format!("// file {i}\npub fn f{i}() -> u32 {{ {i} }}\n").repeat(20),
        )
        .unwrap();
    }
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "initial"]);
}

pub fn write_agent(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("bench-agent");
    std::fs::write(&p, AGENT).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// flocks.toml (one local pool of `p` slots running `agent`) and `n` tasks.
pub fn write_project(repo: &Path, agent: &Path, p: usize, n: usize) {
    std::fs::write(
        repo.join("flocks.toml"),
        format!(
            "max_agents = {p}\n[agent]\ncommand = \"{}\"\n[[containers]]\nname = \"local\"\nmax_worktrees = {p}\n",
            agent.display()
        ),
    )
    .unwrap();
    let tasks: String = (1..=n)
        .map(|i| format!("{{\"id\":\"t{i}\",\"prompt\":\"t{i}\"}}\n"))
        .collect();
    std::fs::write(repo.join("tasks.jsonl"), tasks).unwrap();
}
