//! `flocks shell` on a Slurm pool: a job of its own (`srun --pty`) in the
//! task's worktree on the shared filesystem.

use super::SlurmBackend;

impl SlurmBackend {
    /// `srun --pty` with the pool's job options, in the task's `worktree`
    /// (`pool:/path`, as state.json records it).
    pub(super) fn shell_argv(
        &self,
        worktree: &str,
        task: &str,
    ) -> crate::error::Result<crate::backend::house::Shell> {
        let pool = &self.pool;
        let dir = worktree
            .strip_prefix(&format!("{pool}:"))
            .filter(|d| d.starts_with('/'))
            .ok_or_else(|| {
                crate::error::Error::Usage(format!(
                    "task {task} has no worktree recorded on Slurm pool {pool} (it has not run there yet)"
                ))
            })?;
        let mut argv: Vec<String> = vec!["srun".into(), "--pty".into()];
        argv.extend(super::job_options(&self.cfg, None));
        argv.push(format!("--chdir={dir}"));
        argv.extend(["/bin/sh", "-c", "exec \"${SHELL:-/bin/sh}\" -i"].map(String::from));
        Ok(crate::backend::house::Shell::status(
            argv,
            "cannot run srun (is Slurm installed here?)".into(),
        ))
    }
}
