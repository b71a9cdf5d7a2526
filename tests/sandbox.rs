//! Sandboxed local pools (`sandbox = "bwrap"`) with the real bubblewrap:
//! hostile agents against the host (its `.git`, `.flocks/`, checkout and
//! home, another task's branch, a process left behind, the network, a `..`
//! path, a 1 GiB blob), as root and as an unprivileged user; and the
//! everyday flow in a sandbox (retries resume in the same home and path,
//! setup and `.worktreeinclude`, `start_from`, best-of, `land --resolve`,
//! `logs -f`, `flocks shell`, timeouts, the work of an attempt interrupted
//! by a killed flocks).
//!
//! Every test needs bwrap: `.ci/ensure-bwrap.sh` installs it; `cargo
//! nextest run --profile skip-bwrap` leaves this file out.

#[path = "support/http.rs"]
mod http;
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use support::*;

fn require_bwrap() {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        on_path("bwrap")
            && Command::new("bwrap")
                .args([
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--unshare-pid",
                    "--unshare-net",
                    "--die-with-parent",
                    "true",
                ])
                .status()
                .is_ok_and(|s| s.success())
    });
    require(
        "bubblewrap (bwrap) able to start a sandbox with its own PID and network namespaces",
        found,
        "install it with .ci/ensure-bwrap.sh (apt-get install bubblewrap)",
        Some("skip-bwrap"),
    );
}

fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// A project whose one pool is sandboxed, with a HOME of its own holding a
/// fake ssh key and a `.bashrc`; the fake agent keeps its sessions in the
/// home it sees (the sandbox's private one).
struct Sandboxed {
    p: TestProject,
    home: PathBuf,
    /// The fake private key's text.
    secret: String,
    /// Scripts the agents run (shown in the sandbox by `[sandbox] read`).
    scripts: PathBuf,
    /// Run flocks (and git) as this user (uid = gid), not as the test.
    user: Option<u32>,
}

/// `[sandbox] read` shows the test's whole temporary directory (the
/// scripts the agents run are there): the repository and flocks' files in
/// it are hidden all the same, by construction.
fn sandboxed(slots: usize, extra: &str) -> Sandboxed {
    sandboxed_pool(slots, "", extra)
}

/// The same with `pool` (lines) in the sandboxed pool's table.
fn sandboxed_pool(slots: usize, pool: &str, extra: &str) -> Sandboxed {
    require_bwrap();
    let mut p = TestProject::new("");
    let top = p.tmp.path().canonicalize().unwrap();
    let (head, tail) = match extra.split_once("[sandbox]\n") {
        Some((h, t)) => (h, t),
        None => (extra, ""),
    };
    p.config(&format!(
        "{head}\n[[containers]]\nname = \"box\"\nsandbox = \"bwrap\"\nmax_worktrees = {slots}\n{pool}\n\
         [sandbox]\nread = [\"{}\", \"{}\"]\n{tail}",
        top.display(),
        support_dir().display()
    ));
    let scripts = p.tmp.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let home = p.tmp.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let secret = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nsandbox-test-{}\n-----END OPENSSH PRIVATE KEY-----\n",
        std::process::id()
    );
    std::fs::write(home.join(".ssh/id_ed25519"), &secret).unwrap();
    std::fs::write(home.join(".bashrc"), "alias ll='ls -l'\n").unwrap();
    p.env.retain(|(k, _)| k != "FAKE_CLAUDE_HOME");
    p.env.push(("HOME".into(), home.display().to_string()));
    Sandboxed {
        p,
        home,
        secret,
        scripts,
        user: None,
    }
}

impl Sandboxed {
    fn cmd(&self, args: &[&str]) -> Command {
        let c = self.p.cmd(args);
        match self.user {
            None => c,
            Some(uid) => {
                let mut w = Command::new("setpriv");
                w.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "--".into(),
                    FLOCKS.into(),
                ])
                .args(args)
                .current_dir(&self.p.repo)
                .stdin(Stdio::null());
                for (k, v) in c.get_envs() {
                    match v {
                        Some(v) => w.env(k, v),
                        None => w.env_remove(k),
                    };
                }
                w
            }
        }
    }

    fn flocks(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// git in the host repository (as root it may not own it: any owner).
    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(&self.p.repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn git_ok(&self, args: &[&str]) -> bool {
        Command::new("git")
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(&self.p.repo)
            .output()
            .unwrap()
            .status
            .success()
    }

    fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.scripts.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The task's sandbox directory on the host (home/, work/).
    fn sandbox_of(&self, task: &str) -> PathBuf {
        let flocks = self.p.tmp.path().join("state-home/flocks");
        let key = std::fs::read_dir(&flocks)
            .unwrap()
            .flatten()
            .find(|e| e.path().join("sandbox").is_dir())
            .unwrap_or_else(|| panic!("no sandbox under {}", flocks.display()))
            .path();
        key.join("sandbox/tasks").join(task)
    }

    /// The raw log of a task's attempt.
    fn log(&self, task: &str, attempt: u32) -> String {
        std::fs::read_to_string(self.p.path(&format!(".flocks/logs/{task}/{attempt}.log")))
            .unwrap_or_default()
    }

    fn chown_all(&self, uid: u32) {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(self.p.tmp.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// A path relative to `root` -> a fingerprint of what is there (links by
/// their target, never followed).
fn fingerprints(root: &Path, skip: &dyn Fn(&Path) -> bool) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if skip(&rel) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let key = rel.display().to_string();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(key, format!("link {}", target.display()));
            } else if meta.is_dir() {
                out.insert(key, "dir".into());
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(key, format!("{:x}", Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// The host as the hostile tests compare it: the repository's git dir (but
/// objects, reflogs, task branches and flocks' quarantine, which a run
/// changes), the main checkout, the logs of an earlier run, the home.
fn host(s: &Sandboxed) -> BTreeMap<String, BTreeMap<String, String>> {
    let repo = &s.p.repo;
    let mut out = BTreeMap::new();
    out.insert(
        ".git".into(),
        fingerprints(&repo.join(".git"), &|r| {
            r.starts_with("objects")
                || r.starts_with("logs")
                || r.starts_with("refs/heads/flocks")
                || r.starts_with("refs/flocks")
                || r.starts_with("flocks-intake")
        }),
    );
    out.insert(
        "checkout".into(),
        fingerprints(repo, &|r| {
            r.starts_with(".git") || r.starts_with(".flocks") || r.starts_with(".worktrees")
        }),
    );
    out.insert(
        ".flocks/logs/victim".into(),
        fingerprints(&repo.join(".flocks/logs/victim"), &|_| false),
    );
    out.insert("home".into(), fingerprints(&s.home, &|_| false));
    out
}

/// Every file under `root` (no link followed) that holds `needle`.
fn files_holding(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file()
                && std::fs::read(e.path())
                    .unwrap_or_default()
                    .windows(needle.len())
                    .any(|w| w == needle)
            {
                hits.push(e.path());
            }
        }
    }
    hits
}

/// Host processes whose environment holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
            && pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// A TCP server on the host's loopback that counts what connects.
fn listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let mut b = [0u8; 16];
            let _ = c.read(&mut b);
        }
    });
    (port, n)
}

/// A hostile agent: each line tries to reach the host; it says
/// `refused: ...` when the attempt failed and `ATTACK WORKED: ...` when it
/// did not. The marker it would write is built at run time, so that it
/// appears only where a write got through.
const EVIL: &str = r#"#!/bin/sh
# $1 = the host repository, $2 = a TCP port on the host's loopback,
# $3 = an environment marker for the process it leaves behind.
R="$1"
M=$(printf 'PWN%s' ED)
try() { if "$@" 2>/dev/null; then echo "ATTACK WORKED: $*"; else echo "refused: $*"; fi; }
w() { printf '%s\n' "$M" >>"$1"; }
try w "$R/.git/hooks/pre-commit"
try w "$R/.git/config"
try w "$R/.git/index"
try w "$R/.flocks/logs/victim/1.log"
try ln -s "$R/.git/hooks/post-checkout" "$R/.flocks/logs/evil/2.log"
try w "$R/README.md"
try test -e "$R/.git/HEAD"
try ls /proc/1/root"$R"/.git
# Root's ways out of a mount namespace, and the Docker daemon's socket.
try umount "$R"
try mount -o remount,rw /
try python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock")'
# Its own home: a private one (the host's .bashrc is not this one).
w "$HOME/.bashrc"
grep -q "$M" "$HOME/.bashrc" && echo "wrote its own home"
# The user's keys.
cat "$HOME"/.ssh/id_* /root/.ssh/id_* >loot.txt 2>&1
try cat "$HOME"/.ssh/id_ed25519
# Another task's branch: not in its view; in its own repository, never sent.
try git --git-dir="$R/.git" update-ref refs/heads/flocks/victim HEAD
git branch -f flocks/victim HEAD && echo "moved flocks/victim in its own repository"
# A process left behind, in a session of its own, deaf to TERM.
setsid sh -c 'trap "" TERM HUP; exec env "$0" sleep 300' "$3" </dev/null >/dev/null 2>&1 &
sleep 0.5
kill -0 $! 2>/dev/null && echo "left a process behind"
# The network.
try python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)' "$2"
git add loot.txt && git commit -qm loot && echo "committed its loot"
"#;

/// A commit whose tree has a `..` entry, on the task's branch.
const DOTDOT: &str = r#"#!/bin/sh
set -e
blob=$(printf 'x\n' | git hash-object -w --stdin)
sub=$(printf '100644 blob %s\tx\n' "$blob" | git mktree)
root=$( (git ls-tree HEAD; printf '040000 tree %s\t..\n' "$sub") | git mktree --missing)
c=$(git commit-tree "$root" -p HEAD -m dotdot)
git update-ref "refs/heads/$1" "$c"
echo "made $c"
"#;

/// A commit with a 1 GiB blob of zeros (a pack of a few MB), on the
/// task's branch.
const BIG: &str = r#"#!/bin/sh
set -e
objects=$(cd "$(git rev-parse --git-common-dir)" && pwd)/objects
c=$(python3 "$2" 1073741824 "$(git rev-parse HEAD)" "$objects")
git update-ref "refs/heads/$1" "$c"
echo "made $c"
"#;

/// The hostile run: a victim task first, then an honest task beside three
/// hostile ones. Every attack fails, the host is unchanged, the honest work
/// lands.
fn hostile_run(user: Option<u32>) {
    let mut s = sandboxed(4, "");
    let evil = s.script("evil.sh", EVIL);
    let dotdot = s.script("dotdot.sh", DOTDOT);
    let big = s.script("big.sh", BIG);
    let zero_blob = support_dir().join("zero-blob.py");
    if let Some(uid) = user {
        s.chown_all(uid);
        s.user = Some(uid);
    }
    let victim = json!({"id": "victim", "prompt": "@fake commit victim.txt mine"});
    s.p.tasks(std::slice::from_ref(&victim));
    let out = s.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let victim_tip = s.git(&["rev-parse", "flocks/victim"]);
    let main_tip = s.git(&["rev-parse", "main"]);

    let (port, connections) = listener();
    let marker = format!("SANDBOX_ORPHAN={}-{}", std::process::id(), port);
    let repo = s.p.repo.canonicalize().unwrap();
    s.p.tasks(&[
        victim,
        json!({"id": "honest", "prompt": "@fake commit honest.txt fine"}),
        json!({"id": "evil", "prompt": format!(
            "@fake bash 'sh {} {} {port} {marker}'", evil.display(), repo.display())}),
        json!({"id": "dotdot", "prompt": format!(
            "@fake bash 'sh {} flocks/dotdot'", dotdot.display())}),
        json!({"id": "big", "prompt": format!(
            "@fake bash 'sh {} flocks/big {}'", big.display(), zero_blob.display())}),
    ]);
    if let Some(uid) = user {
        s.chown_all(uid);
    }
    let before = host(&s);
    let out = s.flocks(&["run"]);
    let said = text(&out);
    assert_eq!(code(&out), 3, "two tasks are refused: {said}");
    assert!(said.contains("isolation bwrap"), "{said}");
    let after = host(&s);
    for (part, was) in &before {
        assert_eq!(&after[part], was, "{part} changed");
    }
    assert_eq!(s.git(&["rev-parse", "flocks/victim"]), victim_tip);
    assert_eq!(s.git(&["rev-parse", "main"]), main_tip);

    // The hostile agent ran every attack, and none worked.
    let log = s.log("evil", 1);
    assert!(!log.contains("ATTACK WORKED"), "{log}");
    assert_eq!(log.matches("refused: ").count(), 14, "{log}");
    for did in [
        "wrote its own home",
        "moved flocks/victim in its own repository",
        "left a process behind",
        "committed its loot",
    ] {
        assert!(log.contains(did), "{did}: {log}");
    }
    assert_eq!(s.p.status_of("evil"), "success");
    let loot = s.git(&["show", "flocks/evil:loot.txt"]);
    assert!(!loot.contains("sandbox-test-"), "{loot}");
    assert!(loot.contains("No such file"), "{loot}");
    // Its process is gone with its attempt.
    assert_eq!(processes_with(&marker), Vec::<i32>::new());
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a connection got through"
    );
    // Nothing it wrote reached the host.
    for place in [
        s.p.repo.join(".git"),
        s.p.repo.join(".flocks"),
        s.home.clone(),
    ] {
        assert_eq!(files_holding(&place, b"PWNED"), Vec::<PathBuf>::new());
    }
    assert_eq!(
        files_holding(&s.p.repo.join(".flocks"), s.secret.as_bytes()),
        Vec::<PathBuf>::new()
    );

    // The intake refused the `..` path and the gigabyte, and nothing moved.
    for (id, check) in [
        ("dotdot", "refused its branch (fsck)"),
        ("big", "refused its branch (size cap (objects))"),
    ] {
        assert_eq!(s.p.status_of(id), "failed", "{id}");
        let t = s.p.task(id);
        let reason = t["status"]["outcome"]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains(check), "{id}: {reason}");
        assert_eq!(
            s.git(&["rev-parse", &format!("flocks/{id}")]),
            main_tip,
            "{id}"
        );
    }
    assert!(s.p.task("dotdot").to_string().contains("hasDotdot"));

    // The honest task beside them lands.
    assert_eq!(s.p.status_of("honest"), "success");
    let out = s.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(s.git(&["show", "main:honest.txt"]), "fine");
    assert_eq!(s.git(&["show", "main:victim.txt"]), "mine");
}

#[test]
fn bwrap_hostile_agents_leave_the_host_unchanged() {
    hostile_run(None);
}

/// The same, with flocks run by an unprivileged user (bubblewrap then
/// makes a user namespace). Run as root, the test switches to `nobody`;
/// run as another user, it is that user already.
#[test]
fn bwrap_hostile_agents_as_an_unprivileged_user() {
    let root = euid() == 0;
    hostile_run(root.then_some(65534));
}

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The positive control of the network attack: with `network = "host"`
/// the same connection gets through.
#[test]
fn bwrap_agents_run_with_gc_auto_0() {
    let s = sandboxed(1, "");
    s.p.tasks(&[json!({"id": "gc", "prompt": fake_bash(
        "git config gc.auto > gc.txt && git add gc.txt && git commit -qm gc"
    )})]);
    let out = s.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(s.p.git(&["show", "flocks/gc:gc.txt"]), "0");
}

#[test]
fn bwrap_network_host_shares_the_hosts_network() {
    let s = sandboxed(1, "[sandbox]\nnetwork = \"host\"\n");
    let (port, connections) = listener();
    s.p.tasks(&[json!({"id": "net", "prompt": format!(
        "@fake bash 'python3 -c \"import socket; socket.create_connection((\\\"127.0.0.1\\\", {port}), timeout=5)\" && echo connected'\n@fake commit n.txt n")})]);
    let out = s.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(s.log("net", 1).contains("connected"), "{}", s.log("net", 1));
    wait_for(10, "the connection", || {
        connections.load(Ordering::SeqCst) == 1
    });
}

/// Egress from a sandbox (issue 24), hostile first: with `[network]
/// allow` and a flocks credential, the sandbox has no network but flocks'
/// proxy (a forwarder inside it, to the proxy's socket bound in). The
/// agent's model requests reach the upstream with the real key; through
/// the proxy the allowed server answers and the denied one is an
/// `egress_denied` event naming its host and port; a direct connection to
/// either fails; a setup command reaches the allowed one too.
#[test]
fn bwrap_egress_only_through_the_proxy() {
    egress_run(None);
}

/// The same with flocks run by an unprivileged user (the proxy's socket
/// is that user's; bubblewrap makes a user namespace).
#[test]
fn bwrap_egress_only_through_the_proxy_as_an_unprivileged_user() {
    egress_run((euid() == 0).then_some(65534));
}

fn egress_run(user: Option<u32>) {
    let api = http::Server::start(http::Answer::Status(200));
    let allowed = http::Server::start(http::Answer::Status(200));
    let denied = http::Server::start(http::Answer::Status(200));
    let (a, d) = (allowed.port, denied.port);
    let key = format!("sk-ant-api03-SANDBOXPROXY-{}", std::process::id());
    let fetch = "import os, sys, urllib.request\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status)\n\
        except Exception as e:\n    print(getattr(e, 'code', None) or e)\n";
    let mut s = sandboxed_pool(
        1,
        "credential = \"k\"\n",
        &format!(
            "[proxy]\nupstream = \"http://127.0.0.1:{}\"\n\
             [network]\nallow = [\"127.0.0.1:{a}\"]\n\
             [workspace]\nsetup = [[\"sh\", \"-c\", \"python3 -c \\\"$0\\\" http://127.0.0.1:{a}/setup > setup.txt\", {fetch:?}]]\n\
             [[credentials]]\nname = \"k\"\nenv = \"SBX_KEY\"\nkind = \"api_key\"\n",
            api.port
        ),
    );
    s.p.env.push(("SBX_KEY".into(), key.clone()));
    if let Some(uid) = user {
        s.chown_all(uid);
        s.user = Some(uid);
    }
    s.p.tasks(&[json!({"id": "net", "prompt": format!(
        "@fake api out=api.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/plain out=f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/plain out=f.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/tunnel tunnel out=f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/tunnel tunnel out=f.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/direct direct out=f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/direct direct out=f.jsonl\n\
         @fake fetch http://127.0.0.1:{}/v1/messages direct out=f.jsonl\n\
         {}\
         @fake commit done.txt",
        api.port,
        fake_bash("git add api.jsonl f.jsonl setup.txt && git commit -qm results"),
    )})]);
    if let Some(uid) = user {
        s.chown_all(uid);
    }
    let out = s.flocks(&["run"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(
        !said.contains("[network] allow is advisory"),
        "a sandbox's allowlist is enforced: {said}"
    );

    let file = |name: &str| s.git(&["show", &format!("flocks/net:{name}")]);
    let got: Vec<Value> = file("f.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(got[0]["status"], 200, "allowed, through the proxy: {got:?}");
    assert_eq!(got[1]["status"], 403, "denied, through the proxy: {got:?}");
    assert_eq!(got[2]["status"], 200, "allowed, tunnelled: {got:?}");
    assert!(
        got[3]["error"].as_str().unwrap_or_default().contains("403"),
        "{got:?}"
    );
    for (i, what) in [(4, "allowed"), (5, "denied"), (6, "the model API")] {
        assert_eq!(got[i]["status"], Value::Null, "{what}, direct: {got:?}");
        assert!(got[i]["error"].is_string(), "{what}, direct: {got:?}");
    }
    assert_eq!(
        file("setup.txt"),
        "200",
        "the setup command, through the proxy"
    );
    let reached: Vec<String> = allowed.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(reached, ["/setup", "/plain", "/tunnel"]);
    assert_eq!(
        denied.requests().len(),
        0,
        "nothing reached the denied server"
    );

    // The model request went through the proxy, with the real key.
    let api_said: Value = serde_json::from_str(file("api.jsonl").lines().last().unwrap()).unwrap();
    assert_eq!(api_said["status"], 200, "{api_said}");
    let asked = api.requests_to("/v1/messages");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].headers["x-api-key"], key);

    let events = std::fs::read_to_string(s.p.path(".flocks/events.jsonl")).unwrap();
    let refused: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "egress_denied")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for e in &refused {
        assert_eq!(
            (e["task"].as_str(), e["host"].as_str(), e["port"].as_u64()),
            (Some("net"), Some("127.0.0.1"), Some(d as u64))
        );
    }
    let st: Value = serde_json::from_slice(&s.flocks(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["pools"][0]["egress"], "enforced");
    assert_eq!(st["tasks"][0]["egress_denied"], 2);
}

/// Retries resume: the same path and the same private home (the fake
/// agent's sessions live there), setup and `.worktreeinclude` in the same
/// sandbox, `status --json` says how the pool is isolated, `logs` shows
/// the output.
#[test]
fn bwrap_retries_resume_in_the_same_home_and_path_with_setup_and_includes() {
    let s = sandboxed(
        1,
        "max_retries = 1\n\n[workspace]\nsetup = [\"pwd > setup-pwd.txt && echo setup >> $HOME/setup-runs\"]\n",
    );
    std::fs::write(s.p.path(".worktreeinclude"), ".env\n").unwrap();
    std::fs::write(s.p.path(".gitignore"), ".env\n.flocks\n").unwrap();
    std::fs::write(s.p.path(".env"), "TOKEN=local-only\n").unwrap();
    s.git(&["add", ".worktreeinclude", ".gitignore"]);
    s.git(&["commit", "-qm", "include"]);
    let home = s.home.display();
    s.p.tasks(&[json!({"id": "r", "prompt": format!(
        "@fake bash 'cat .env > seen-env.txt; pwd > pwd.txt; ls ~/setup-runs; ls {home}/.ssh 2>&1 | head -1'\n\
         @fake fail-once {home}/failed-once\n\
         @fake commit r.txt done")})]);
    let out = s.flocks(&["run", "--supervise"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    let r = s.p.task("r");
    let attempts = r["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{r:#}");
    assert_eq!(attempts[0]["outcome"]["kind"], "failed");
    // The second attempt resumed the first one's session: the fake agent
    // finds sessions only in the home it sees and only for the same cwd.
    let events = std::fs::read_to_string(s.p.path(".flocks/events.jsonl")).unwrap();
    let started: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "started" && e["task"] == "r")
        .collect();
    assert_eq!(started.len(), 2);
    assert_eq!(started[1]["resumed"], true, "{started:?}");
    // Where it ran, for people: the sandbox's directory on the host.
    let wt = r["worktree"].as_str().unwrap();
    assert!(
        wt.starts_with("bwrap:") && wt.ends_with("/sandbox/tasks/r/work/worktrees/r"),
        "{wt}"
    );
    assert!(!s.log("r", 2).contains("No conversation found"));
    // The work came back: both attempts' files, the setup's and the include's.
    assert_eq!(s.git(&["show", "flocks/r:r.txt"]), "done");
    assert_eq!(
        s.git(&["show", "flocks/r:pwd.txt"]),
        "/var/tmp/flocks/work/worktrees/r"
    );
    assert_eq!(
        s.git(&["show", "flocks/r:setup-pwd.txt"]),
        "/var/tmp/flocks/work/worktrees/r"
    );
    assert_eq!(
        s.git(&["show", "flocks/r:seen-env.txt"]),
        "TOKEN=local-only"
    );
    // The setup ran once: the second attempt found it recorded.
    let home_dir = s.sandbox_of("r").join("home");
    assert_eq!(
        std::fs::read_to_string(home_dir.join("setup-runs")).unwrap(),
        "setup\n"
    );
    assert!(home_dir.join("failed-once").exists());
    // The host's home has none of it, and the sandbox's had no .ssh.
    assert!(!s.home.join("failed-once").exists());
    assert!(!s.home.join("setup-runs").exists());
    assert!(s.log("r", 1).contains("No such file"), "{}", s.log("r", 1));

    let out = s.flocks(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pools"][0]["isolation"], "bwrap", "{v:#}");
    let out = s.flocks(&["status"]);
    assert!(text(&out).contains("isolation: bwrap"), "{}", text(&out));
    let out = s.flocks(&["logs", "r"]);
    assert!(text(&out).contains("Fake agent finished"), "{}", text(&out));
    let run_started = events
        .lines()
        .find(|l| l.contains(r#""event":"run_started""#))
        .unwrap();
    assert!(
        run_started.contains(r#""isolation":"bwrap""#),
        "{run_started}"
    );

    // `clean` removes the sandbox with the landed task.
    let out = s.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = s.flocks(&["clean"]);
    assert!(
        text(&out).contains("Removed sandboxes: r"),
        "{}",
        text(&out)
    );
    assert!(!s.sandbox_of("r").exists());
}

/// `start_from = "dependencies"`, best-of variants and `land --resolve` on
/// a sandboxed pool.
#[test]
fn bwrap_start_from_best_of_and_resolve() {
    let s = sandboxed(3, "");
    s.p.tasks(&[
        json!({"id": "a", "prompt": "@fake append notes.txt from-a"}),
        json!({"id": "b", "prompt": "@fake append notes.txt from-b"}),
        json!({"id": "c", "prompt": "@fake bash 'ls > c-saw.txt'\n@fake commit c.txt c",
               "depends_on": ["a"], "start_from": "dependencies"}),
        json!({"id": "v", "best_of": 2, "prompt": "@fake if-env FLOCKS_TASK v@v1 bash 'seq 20 > v.txt && git add v.txt && git commit -qm twenty'\n\
              @fake if-env FLOCKS_TASK v@v2 bash 'seq 3 > v.txt && git add v.txt && git commit -qm three'"}),
    ]);
    let out = s.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // c started from a's work.
    let saw = s.git(&["show", "flocks/c:c-saw.txt"]);
    assert!(saw.lines().any(|l| l == "notes.txt"), "{saw}");
    // The smaller variant won.
    assert_eq!(s.p.task("v")["best_of"]["judgement"]["winner"], 2);
    // a and b conflict: land --resolve redoes b in its sandbox, from the
    // new target.
    let out = s.flocks(&["land", "-y", "--resolve"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(said.contains("Resolved"), "{said}");
    assert_eq!(s.git(&["show", "main:notes.txt"]), "from-a\nfrom-b");
    assert_eq!(s.git(&["show", "main:v.txt"]), "1\n2\n3");
    assert!(s.git(&["show", "main:c.txt"]) == "c");
}

/// flocks killed mid-attempt: the sandbox ends with its supervisor, and
/// the next run takes back what the interrupted attempt committed in the
/// sandbox (through the intake) before the task goes on there.
#[test]
fn bwrap_work_an_interrupted_attempt_left_comes_back() {
    let s = sandboxed(1, "");
    let home = s.home.display();
    s.p.tasks(&[json!({"id": "k", "prompt": format!(
        "@fake once {home}/first commit a.txt early\n\
         @fake once {home}/hung hang\n\
         @fake commit b.txt late")})]);
    let mut run = s
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(60, "the agent to hang after its first commit", || {
        s.log("k", 1).contains("fake: a.txt")
            && s.p.tmp.path().join("state-home").is_dir()
            && s.sandbox_of("k").join("home/hung").exists()
    });
    run.kill().unwrap();
    run.wait().unwrap();
    wait_for(30, "the attempt's processes to end", || {
        processes_with("FLOCKS_TASK=k").is_empty()
    });
    // Nothing came back yet: the commit is only in the sandbox.
    assert!(!s.git_ok(&["cat-file", "-e", "flocks/k:a.txt"]));
    let out = s.flocks(&["run"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert_eq!(s.git(&["show", "flocks/k:a.txt"]), "early");
    assert_eq!(s.git(&["show", "flocks/k:b.txt"]), "late");
    let attempts = s.p.task("k")["attempts"].clone();
    assert_eq!(
        attempts[0]["outcome"]["kind"], "interrupted",
        "{attempts:#}"
    );
    assert!(
        said.contains("task k: recovered 1 commit an interrupted attempt left on its sandbox"),
        "{said}"
    );
}

/// `flocks logs -f` follows a sandboxed agent's output until it ends.
#[test]
fn bwrap_logs_follow_until_the_task_ends() {
    let s = sandboxed(1, "");
    s.p.tasks(&[json!({"id": "f", "prompt": "@fake text first\n@fake sleep 2\n@fake text second\n@fake commit f.txt"})]);
    let mut run = s
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(30, "the log to appear", || {
        s.p.path(".flocks/logs/f/1.log").exists()
    });
    let out = s.flocks(&["logs", "f", "-f"]);
    let t = text(&out);
    assert!(
        t.contains("first") && t.contains("second") && t.contains("■ result: success"),
        "{t}"
    );
    assert!(run.wait().unwrap().success());
}

/// `flocks shell` opens a shell in the task's sandbox: its worktree, its
/// view (no host home, no repository), no rc file of the agent's.
#[test]
fn bwrap_shell_opens_in_the_tasks_sandbox() {
    let s = sandboxed(1, "");
    s.p.tasks(&[json!({"id": "sh", "prompt": "@fake bash 'echo \"echo RC-RAN\" >> ~/.bashrc'\n@fake write wip.txt wip\n@fake fail stop here"})]);
    let out = s.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let repo = s.p.repo.canonicalize().unwrap();
    let mut c = s.cmd(&["shell", "sh"]);
    c.env("SHELL", "/bin/bash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let script = format!(
        "pwd; git log -1 --format=%s; cat {}/.ssh/id_ed25519 2>&1 | head -1; ls {}/.git 2>&1 | head -1; exit\n",
        s.home.display(),
        repo.display()
    );
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(said.contains("a shell in task sh's sandbox"), "{said}");
    assert!(said.contains("/var/tmp/flocks/work/worktrees/sh"), "{said}");
    assert!(
        said.contains("flocks: uncommitted changes left by attempt 1"),
        "{said}"
    );
    assert!(!said.contains("sandbox-test-"), "{said}");
    assert!(!said.contains("RC-RAN"), "{said}");
    assert!(said.matches("No such file").count() >= 2, "{said}");
}

/// The supervisor outside the sandbox keeps the termination policy: TERM
/// reaches the agent inside (which ends on it), an agent deaf to TERM gets
/// KILL after the grace; both end as timed out.
#[test]
fn bwrap_timeouts_term_what_runs_inside_then_kill() {
    // A grace of some seconds: on a busy machine the polite agent may take
    // more than two to end on TERM. The timeout leaves the deaf agent time
    // to start (python in a fresh sandbox) and stop listening to TERM
    // before TERM comes: under a full test run, 3 s was seen to be too few
    // (it ended on TERM, 143, not on KILL).
    let s = sandboxed(2, "agent_timeout_secs = 8\nkill_grace_secs = 5\n");
    s.p.tasks(&[
        json!({"id": "polite", "prompt": "@fake hang"}),
        json!({"id": "deaf", "prompt": "@fake ignore-term\n@fake hang"}),
    ]);
    let out = s.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    for (id, exit) in [("polite", 143), ("deaf", 137)] {
        assert_eq!(s.p.status_of(id), "timed_out", "{id}");
        let t = s.p.task(id);
        assert_eq!(t["attempts"][0]["exit_code"], exit, "{id}: {t:#}");
    }
}

/// A sandboxed pool without bwrap: exit 5, saying how to install it.
#[test]
fn bwrap_missing_says_how_to_install_it() {
    let s = sandboxed(1, "");
    s.p.tasks(&[json!({"id": "t", "prompt": "@fake commit t.txt"})]);
    let mut c = s.cmd(&["run"]);
    c.env("PATH", "/nonexistent");
    let out = c.output().unwrap();
    let said = text(&out);
    assert_eq!(code(&out), 5, "{said}");
    assert!(
        said.contains("bwrap is not on PATH") && said.contains("apt-get install bubblewrap"),
        "{said}"
    );
}
