//! The integration-test builder: a temporary git repo with a flocks.toml whose
//! agent is the fake claude (tests/support/fake-claude), and helpers to run
//! the real `flocks` binary in it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const FLOCKS: &str = env!("CARGO_BIN_EXE_flocks");

pub fn fake_claude() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake-claude")
}

/// A test whose prerequisite is missing fails, saying how to get it (and,
/// for the optional ones, which nextest profile leaves such tests out, so
/// that the summary counts them as skipped). A test never passes without
/// running what it claims.
pub fn require(what: &str, found: bool, how: &str, skip_profile: Option<&str>) {
    if found {
        return;
    }
    let opt_out = match skip_profile {
        Some(p) => format!(
            "; or leave these tests out explicitly: cargo nextest run --profile {p} (see docs/src/development.md)"
        ),
        None => String::new(),
    };
    panic!("this test needs {what}: {how}{opt_out}");
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join(program)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// The fake agent is a python3 script.
pub fn require_python3() {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    require(
        "python3 (the fake agent, tests/support/fake-claude, is a python3 script)",
        *FOUND.get_or_init(|| on_path("python3")),
        "install it with .ci/ensure-tools.sh (apt-get install python3)",
        None,
    );
}

pub struct TestProject {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    /// Files the fake agent writes for the test to read (outside the repo).
    pub out: PathBuf,
    pub env: Vec<(String, String)>,
}

impl TestProject {
    /// A repo with one commit on main and a flocks.toml with `extra` appended.
    pub fn new(extra: &str) -> TestProject {
        require_python3();
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let p = TestProject {
            repo,
            out,
            env: vec![
                (
                    "FAKE_CLAUDE_HOME".into(),
                    tmp.path().join("fake-home").display().to_string(),
                ),
                // flocks' trust records, out of the repo (and the user's home).
                (
                    "XDG_STATE_HOME".into(),
                    tmp.path().join("state-home").display().to_string(),
                ),
            ],
            tmp,
        };
        p.git(&["init", "-q", "-b", "main"]);
        p.git(&["config", "user.name", "Test User"]);
        p.git(&["config", "user.email", "test@example.com"]);
        std::fs::write(p.repo.join("README.md"), "test repo\n").unwrap();
        p.git(&["add", "."]);
        p.git(&["commit", "-q", "-m", "initial"]);
        p.config(extra);
        p
    }

    /// Write flocks.toml: short timeouts and the fake agent, unless `extra`
    /// sets them itself.
    pub fn config(&self, extra: &str) {
        let mut text = String::new();
        for (key, default) in [("agent_timeout_secs", "60"), ("kill_grace_secs", "1")] {
            if !extra.contains(key) {
                text.push_str(&format!("{key} = {default}\n"));
            }
        }
        text.push_str(extra);
        if !extra.contains("[agent]") {
            text.push_str(&format!(
                "\n\n[agent]\ncommand = \"{}\"\n",
                fake_claude().display()
            ));
        }
        std::fs::write(self.repo.join("flocks.toml"), text).unwrap();
    }

    /// Write tasks.jsonl from (id, prompt) pairs plus optional JSON fields.
    pub fn tasks(&self, tasks: &[Value]) {
        let text: String = tasks.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(self.repo.join("tasks.jsonl"), text).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.repo.join(rel)
    }

    pub fn out_file(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(Path::new(FLOCKS), args)
    }

    /// [`TestProject::cmd`] with another flocks binary (a copy of this one).
    pub fn cmd_of(&self, flocks: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(flocks);
        c.args(args).current_dir(&self.repo);
        for v in [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
            // The model proxy's upstream follows the test's config.
            "ANTHROPIC_BASE_URL",
            // Colour follows the test, not the environment it runs in.
            "NO_COLOR",
            "CLICOLOR",
            "CLICOLOR_FORCE",
        ] {
            c.env_remove(v);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null());
        c
    }

    pub fn flocks(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Spawned {
        self.spawn_of(Path::new(FLOCKS), args)
    }

    /// [`TestProject::spawn`] with another flocks binary.
    pub fn spawn_of(&self, flocks: &Path, args: &[&str]) -> Spawned {
        Spawned(Some(
            self.cmd_of(flocks, args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.repo, args, &[])
    }

    pub fn git_ok(&self, args: &[&str]) -> bool {
        Command::new("git")
            .args(args)
            .current_dir(&self.repo)
            .output()
            .unwrap()
            .status
            .success()
    }

    /// The state as a reader sees it: state.json plus the journal after it.
    pub fn state(&self) -> Value {
        state_with_journal(&self.repo.join(".flocks"))
    }

    pub fn task(&self, id: &str) -> Value {
        self.state()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no task {id} in state"))
    }

    /// "succeeded", "failed", "timed_out", ... (the outcome kind) or the state.
    pub fn status_of(&self, id: &str) -> String {
        let t = self.task(id);
        let st = &t["status"];
        match st["state"].as_str().unwrap() {
            "done" => st["outcome"]["kind"].as_str().unwrap().to_string(),
            other => other.to_string(),
        }
    }

    /// Every file under .flocks as one string.
    pub fn flocks_dir_text(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.repo.join(".flocks")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(t) = std::fs::read_to_string(&p) {
                    out.push_str(&t);
                }
            }
        }
        out
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Wait until `f` holds, or panic after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// state.json with its journal applied, read the way the README documents
/// it (independently of flocks' own reader): the journal continues the
/// snapshot when its header's generation is the snapshot's
/// `journal_generation`; task records replace the task with their id (or are
/// added), fleet records replace `run`, `credentials`, `backoff_until` and
/// `managed`; a torn last line is ignored.
pub fn state_with_journal(dir: &Path) -> Value {
    for _ in 0..50 {
        let text = std::fs::read_to_string(dir.join("state.json")).unwrap();
        let mut state: Value = serde_json::from_str(&text).unwrap();
        let Ok(journal) = std::fs::read_to_string(dir.join("state.journal")) else {
            return state;
        };
        let mut lines = journal.split_inclusive('\n').filter(|l| l.ends_with('\n'));
        let header = lines
            .next()
            .and_then(|l| serde_json::from_str::<Value>(l).ok());
        let Some(header) = header else {
            return state;
        };
        if header["rec"]["generation"] != state["journal_generation"] {
            // Compacted under us (read again), or an old journal.
            let again = std::fs::read_to_string(dir.join("state.json")).unwrap();
            if again == text {
                return state;
            }
            continue;
        }
        for line in lines {
            let Ok(line) = serde_json::from_str::<Value>(line) else {
                break;
            };
            let rec = &line["rec"];
            match rec["kind"].as_str() {
                Some("task") => {
                    let tasks = state["tasks"].as_array_mut().unwrap();
                    match tasks.iter_mut().find(|t| t["id"] == rec["task"]["id"]) {
                        Some(t) => *t = rec["task"].clone(),
                        None => tasks.push(rec["task"].clone()),
                    }
                }
                Some("fleet") => {
                    for key in ["run", "credentials", "backoff_until", "managed"] {
                        state[key] = rec[key].clone();
                    }
                }
                other => panic!("unknown journal record {other:?}"),
            }
        }
        return state;
    }
    panic!("state.json kept changing");
}

/// The tasks of the sibling-branch attack, for `tasks` (a local or a docker
/// project); `out` is the directory both see at the same path.
pub fn sibling_attack(out: &Path, tasks: impl Fn(&[Value])) {
    let out = out.display();
    let attack = format!(
        "until [ -f {out}/t3-committed ]; do sleep 0.1; done; \
         tip=$(git rev-parse refs/heads/flocks/t3) && \
         export GIT_INDEX_FILE={out}/side.idx && git read-tree $tip && \
         echo evil > {out}/evil && blob=$(git hash-object -w {out}/evil) && \
         git update-index --add --cacheinfo 100644,$blob,evil.txt && \
         tree=$(git write-tree) && c=$(git commit-tree $tree -p $tip -m planted) && \
         git update-ref refs/heads/flocks/t3 $c && unset GIT_INDEX_FILE && \
         cp {out}/evil ../t3/evil.txt && git -C ../t3 update-index --add --cacheinfo 100644,$blob,evil.txt && \
         touch {out}/planted"
    );
    tasks(&[
        serde_json::json!({"id": "t2", "prompt": format!("{}@fake commit t2.txt\n", fake_bash(&attack))}),
        serde_json::json!({"id": "t3", "prompt": format!(
            "@fake commit t3.txt\n{}",
            fake_bash(&format!("touch {out}/t3-committed; until [ -f {out}/planted ]; do sleep 0.1; done"))
        )}),
    ]);
}

/// A `@fake bash` line for `command` (quoted for the fake's shlex).
pub fn fake_bash(command: &str) -> String {
    format!("@fake bash '{}'\n", command.replace('\'', r"'\''"))
}

/// `git ARGS` in `dir` with `env` added; its trimmed stdout. Fails the test,
/// with git's stderr, when git fails.
pub fn git_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A remote `mirror.git` the upkeep tests age and then look at, reached
/// by the test directly (the tests' cluster and hosts are this machine).
pub struct Mirror {
    pub dir: PathBuf,
}

impl Mirror {
    /// `git --git-dir <mirror> args`, which must succeed: its stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let o = Command::new("git")
            .arg("--git-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Make it a mirror that many tasks used: 80 more loose refs at the
    /// start of task `t1` (`refs/flocks/start/<prefix><i>`), a past-due
    /// `gc.auto`, and loose objects until some are in `objects/17` (git's
    /// estimate reads that one), their files written under `scratch`.
    /// The id of the first blob written (unreachable: a repack keeps it).
    pub fn age(&self, prefix: &str, scratch: &Path) -> String {
        let start = self.git(&["rev-parse", "refs/flocks/start/t1"]);
        for i in 0..80 {
            self.git(&[
                "update-ref",
                &format!("refs/flocks/start/{prefix}{i}"),
                &start,
            ]);
        }
        self.git(&["config", "gc.auto", "1"]);
        std::fs::create_dir_all(scratch).unwrap();
        let mut n = 0;
        while self.loose_in_17() < 2 {
            let mut paths = String::new();
            for _ in 0..300 {
                let f = scratch.join(format!("b{n}"));
                std::fs::write(&f, format!("blob {n}\n")).unwrap();
                paths.push_str(&format!("{}\n", f.display()));
                n += 1;
            }
            let mut child = Command::new("git")
                .arg("--git-dir")
                .arg(&self.dir)
                .args(["hash-object", "-w", "--stdin-paths"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(paths.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        }
        assert!(self.loose_refs() > 64);
        self.git(&["hash-object", &scratch.join("b0").display().to_string()])
    }

    /// Loose objects in `objects/17`.
    pub fn loose_in_17(&self) -> usize {
        std::fs::read_dir(self.dir.join("objects/17"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Loose refs under `refs/`.
    pub fn loose_refs(&self) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| match e.file_type() {
                            Ok(t) if t.is_dir() => count(&e.path()),
                            Ok(_) => 1,
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.dir.join("refs"))
    }
}

/// A flocks process a test started. Dropped before it ended (the test
/// failed, or never waited for it), it is stopped as `flocks stop` would
/// (SIGTERM), and killed after 10 s: a failed test leaves no run behind to
/// hold jobs, containers or agents the next tests would meet.
pub struct Spawned(Option<Child>);

impl Spawned {
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0.take().expect("waited for once").wait_with_output()
    }

    /// Its output once it ends. Not ended after `secs`, it is killed and
    /// the test fails, saying `what` and what it printed.
    pub fn wait_or_kill(mut self, secs: u64, what: &str) -> Output {
        let mut child = self.0.take().expect("waited for once");
        if !ended_within(&mut child, Duration::from_secs(secs)) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("{what}: {}", text(&o));
        }
        child.wait_with_output().unwrap()
    }
}

/// Whether `child` ended (or can no longer be asked) within `limit`.
fn ended_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("waited for once")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("waited for once")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if ended_within(&mut child, Duration::ZERO) {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !ended_within(&mut child, Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
