//! Docker helpers for the integration tests: the tiny test image, containers
//! shaped like devcontainers that are removed (by id) when the test ends even
//! on failure, and a test project whose repo belongs to uid 1000 like a
//! developer's checkout.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::support::{TestProject, fake_claude};

pub const IMAGE: &str = "flocks-test-base:latest";

/// `tests/support/zero-blob.py` (a hostile agent's 1 GiB blob in a ~5 MB
/// pack), mounted at its host path in the test containers.
pub fn zero_blob() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/zero-blob.py")
}
pub const LABEL: &str = "devcontainer.local_folder";
/// The devcontainer CLI's keep-alive PID 1 (it reaps orphans).
const KEEP_ALIVE: &str =
    "echo Container started\ntrap \"exit 0\" 15\nexec \"$@\"\nwhile sleep 1 & wait $!; do :; done";

/// Docker is there and the test image is built (once per test binary).
/// Without an engine the tests fail, saying how to get one or how to leave
/// them out (`--profile skip-docker`); it never lets a test return early.
pub fn ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let info = Command::new("docker").arg("info").output();
        super::support::require(
            "a Docker Engine (`docker info` did not answer)",
            info.is_ok_and(|o| o.status.success()),
            "start or install one with .ci/ensure-docker.sh",
            Some("skip-docker"),
        );
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/docker/make-test-image.sh");
        let out = Command::new("bash").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "make-test-image.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A running container; removed by id when dropped.
pub struct Ctr {
    pub id: String,
    pub name: String,
}

impl Drop for Ctr {
    fn drop(&mut self) {
        remove(&self.id);
    }
}

pub fn remove(id: &str) {
    let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
}

/// Remove a container by id when dropped (one that flocks made).
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

pub struct CtrSpec<'a> {
    pub project: &'a DockerProject,
    pub label: bool,
    pub env: Vec<(&'a str, &'a str)>,
}

impl Ctr {
    /// A devcontainer-like container of the test image: the host's /usr
    /// (read-only), the repo at /workspace, the fake agent and the out dir at
    /// their host paths, no network.
    pub fn start(spec: CtrSpec) -> Ctr {
        Ctr::start_with(spec, true)
    }

    /// The same without the repo: nothing of the host repository is in the
    /// container (clone mode's containers).
    pub fn start_without_repo(spec: CtrSpec) -> Ctr {
        Ctr::start_with(spec, false)
    }

    fn start_with(spec: CtrSpec, mount_repo: bool) -> Ctr {
        let name = unique("flocks-test");
        let p = spec.project;
        let fake = fake_claude().display().to_string();
        let zero = zero_blob().display().to_string();
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            "none".into(),
            "-v".into(),
            "/usr:/usr:ro".into(),
            "-v".into(),
            format!("{fake}:{fake}:ro"),
            "-v".into(),
            format!("{zero}:{zero}:ro"),
            "-v".into(),
            format!("{}:{}", p.t.out.display(), p.t.out.display()),
            "--entrypoint".into(),
            "/bin/sh".into(),
        ];
        if mount_repo {
            args.push("-v".into());
            args.push(format!("{}:/workspace", p.t.repo.display()));
        }
        if spec.label {
            args.push("--label".into());
            args.push(format!("{LABEL}={}", p.t.repo.display()));
        }
        for (k, v) in spec.env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.extend([
            IMAGE.to_string(),
            "-c".into(),
            KEEP_ALIVE.into(),
            "-".into(),
        ]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = docker(&a);
        assert!(ok, "docker run: {out}");
        Ctr {
            id: out.lines().last().unwrap().to_string(),
            name,
        }
    }

    /// `docker exec` as the repo's owner; stdout+stderr.
    pub fn exec(&self, args: &[&str]) -> String {
        // As flocks gives it to agents: git checks ownership along the host
        // path it finds in the worktree's back link, which does not exist here.
        let mut a = vec![
            "exec",
            "-u",
            "1000:1000",
            "-e",
            "GIT_CONFIG_COUNT=1",
            "-e",
            "GIT_CONFIG_KEY_0=safe.directory",
            "-e",
            "GIT_CONFIG_VALUE_0=*",
            &self.id,
        ];
        a.extend_from_slice(args);
        docker(&a).1
    }

    /// The host paths the container mounts.
    pub fn mount_sources(&self) -> Vec<String> {
        let (ok, out) = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Source}}\n{{end}}",
            &self.id,
        ]);
        assert!(ok, "{out}");
        out.lines().map(str::to_string).collect()
    }

    /// Every process in the container, as `pid args`.
    pub fn ps(&self) -> String {
        self.exec(&["ps", "-eo", "pid,user,args"])
    }
}

/// A test project whose repo belongs to uid 1000 (flocks runs as root here,
/// as in CI).
pub struct DockerProject {
    pub t: TestProject,
    pub home: PathBuf,
}

impl DockerProject {
    pub fn new() -> DockerProject {
        let mut t = TestProject::new("");
        let home = t.tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        // Root on a repo owned by someone else: git (and libgit2) need this.
        std::fs::write(home.join(".gitconfig"), "[safe]\n\tdirectory = *\n").unwrap();
        t.env.push(("HOME".into(), home.display().to_string()));
        let st = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(&t.repo)
            .arg(&t.out)
            .status()
            .unwrap();
        assert!(st.success());
        DockerProject { t, home }
    }

    /// flocks.toml: the fake agent (at its host path, which the containers
    /// mount too), short timeouts, then `pools` (and anything else).
    pub fn config(&self, top: &str, pools: &str) {
        let timeout = if top.contains("agent_timeout_secs") {
            ""
        } else {
            "agent_timeout_secs = 60\n"
        };
        let text = format!(
            "{timeout}kill_grace_secs = 1\n{top}\n\n[agent]\ncommand = \"{}\"\n\n{pools}\n",
            fake_claude().display()
        );
        std::fs::write(self.t.repo.join("flocks.toml"), text).unwrap();
    }

    /// git on the host, as root, on the uid-1000 repo.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.t.repo)
            .env("HOME", &self.home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.t.out_file(name)
    }

    pub fn read_out(&self, name: &str) -> String {
        std::fs::read_to_string(self.out(name)).unwrap_or_default()
    }

    /// The reason of a task's last outcome.
    pub fn reason(&self, id: &str) -> String {
        let t = self.t.task(id);
        t["attempts"]
            .as_array()
            .and_then(|a| a.last())
            .map(|a| a["outcome"]["reason"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }
}

/// Paths under `root` (not under `skip`) whose owner uid is not `uid`.
pub fn not_owned_by(root: &Path, uid: u32, skip: &[&str]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if skip.iter().any(|s| p.ends_with(s)) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.uid() != uid {
            bad.push(p.clone());
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    bad
}
