//! The quarantine: a temporary bare repository of flocks' own under the host's common git dir, where what came back is fetched and checked before any object reaches the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::Repository;

use super::*;

/// A temporary bare repository of flocks' own under the host's common git
/// dir; removed when dropped.
pub(super) struct Quarantine {
    pub(super) dir: PathBuf,
    pub(super) host_objects: PathBuf,
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Quarantine {
    pub(super) fn new(want: &Want) -> Result<Quarantine, IntakeError> {
        let repo = Repository::open(&want.repo_dir).map_err(|e| want.failed(e.message()))?;
        let common = repo.commondir().to_path_buf();
        let host_objects = common.join("objects");
        let base = common.join("flocks-intake");
        let io = |p: &Path, e: &dyn std::fmt::Display| want.failed(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(&base).map_err(|e| io(&base, &e))?;
        let dir = nix::unistd::mkdtemp(&base.join("q-XXXXXX")).map_err(|e| io(&base, &e))?;
        let q = Quarantine { dir, host_objects };
        for d in ["objects/pack", "objects/info", "refs"] {
            let p = q.dir.join(d);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, &e))?;
        }
        let files = [
            ("HEAD", "ref: refs/heads/main\n".to_string()),
            (
                "config",
                "[core]\n\trepositoryformatversion = 0\n\tbare = true\n".to_string(),
            ),
            (
                "objects/info/alternates",
                format!("{}\n", q.host_objects.display()),
            ),
        ];
        for (name, text) in files {
            let p = q.dir.join(name);
            std::fs::write(&p, text).map_err(|e| io(&p, &e))?;
        }
        Ok(q)
    }

    pub(super) fn bundle_path(&self) -> PathBuf {
        self.dir.join("in.bundle")
    }

    /// The system git, with the quarantine as its repository and nothing of
    /// the environment's git settings.
    pub(super) fn git(&self) -> Command {
        let mut c = Command::new("git");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GIT_") {
                c.env_remove(k);
            }
        }
        c.env("GIT_DIR", &self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }
}
