//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "flocks",
    version,
    about = "Run a fleet of headless Claude Code agents in parallel on one git repository"
)]
pub struct Cli {
    /// flocks.toml to use (default: found by walking up from the current directory)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Dispatch every task, wait, report
    Run(RunArgs),
    /// Show what is running, done, failed and blocked
    Status(StatusArgs),
    /// Live dashboard of the run (same as `status --watch`)
    Top,
    /// Show one task's agent output
    Logs(LogsArgs),
    /// Run failed, timed-out, stalled or interrupted tasks again
    Retry(RetryArgs),
    /// Ask the running dispatcher to stop its agents gracefully (state is kept)
    Stop,
    /// Cherry-pick finished work onto the target branch and validate it
    Land(crate::commands::land::LandArgs),
    /// Remove the worktrees and branches of landed tasks
    Clean(crate::commands::clean::CleanArgs),
    /// Let one agent study the repo and write the task list for an objective
    Plan(crate::commands::plan::PlanArgs),
    /// Plan an objective, then run the plan with --supervise
    Sail(crate::commands::sail::SailArgs),
    /// List the tasks with status, attempts, pool, dependencies and cost
    Tasks(crate::commands::tasks::TasksArgs),
    /// Write a commented flocks.toml and an example tasks.jsonl for this repository
    Init,
    /// Check the hosts of ssh and exedev pools
    Hosts(HostsArgs),
    /// Open an interactive shell in a task's worktree, wherever it runs
    Shell(ShellArgs),
    /// Create what pools need before a run (exe.dev VMs)
    Up(UpArgs),
    /// Remove what `flocks up` created, and only that
    Down(DownArgs),
}

#[derive(Args, Debug)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub action: HostsAction,
}

#[derive(Subcommand, Debug)]
pub enum HostsAction {
    /// Reachable? git? the agent command and its version? free disk? setup ran?
    Check {
        /// Only this pool
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// The task id
    pub task: String,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Only this pool
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// Only this pool
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct TaskSource {
    /// Task file (JSONL); default: [source] in flocks.toml
    #[arg(long, value_name = "PATH")]
    pub tasks: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: TaskSource,
    /// Show the plan (task, pool, branch, worktree, order) and run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the plan as JSON
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Retry failures with what the failed attempt learned, until all succeed or retries run out
    #[arg(long)]
    pub supervise: bool,
    /// Extra attempts after a failure (default: max_retries from flocks.toml)
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Exit (code 5) instead of waiting when every credential is parked
    #[arg(long)]
    pub no_wait: bool,
    /// Plain line-by-line output even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the status as JSON
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Full-screen live dashboard (as `flocks top`)
    #[arg(long, short = 'w')]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The task id
    pub task: String,
    /// Print the raw stream-json lines as they are
    #[arg(long)]
    pub raw: bool,
    /// Only the last N lines
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
    /// Keep printing new output until the task ends
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Which attempt (default: the last)
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// Print the attempt's metadata as JSON instead of its output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// Tasks to run again
    pub ids: Vec<String>,
    /// Every failed, timed-out, stalled or interrupted task
    #[arg(long, conflicts_with = "ids")]
    pub all_failed: bool,
    /// Also run a task that succeeded
    #[arg(long)]
    pub force: bool,
    /// Start the branch over from the base, a new origin for the task (the old
    /// tip is kept under refs/flocks/backup/); also redoes, without --force, a
    /// succeeded task whose branch was rewritten by hand
    #[arg(long)]
    pub fresh: bool,
    #[command(flatten)]
    pub source: TaskSource,
    /// Keep retrying failures, as run --supervise does
    #[arg(long)]
    pub supervise: bool,
    /// Exit (code 5) instead of waiting when every credential is parked
    #[arg(long)]
    pub no_wait: bool,
    /// Plain line-by-line output even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}
