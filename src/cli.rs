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

    /// Colour: auto (on a terminal, unless NO_COLOR is set; CLICOLOR_FORCE forces it), always, never
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: clap::ColorChoice,

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
    /// Serve a live dashboard of the fleet to a web browser
    ///
    /// Tasks, pools, credentials, a timeline of the slots, costs, each task's
    /// log and diff, and what `land` would do now; updated live (server-sent
    /// events) while a run goes on in another process. Read-only unless
    /// --allow-actions. Bound to anything but loopback, every request needs
    /// the token printed at start (or $FLOCKS_SERVE_TOKEN).
    Serve(ServeArgs),
    /// Write a run's timeline, costs and outcomes as one self-contained HTML file
    Report(ReportArgs),
    /// Show one task's agent output
    Logs(LogsArgs),
    /// Show a task's change (what `land` would apply) through your pager
    Diff(DiffArgs),
    /// Make variant k of a best-of task its work, over the judgement, before it lands
    Pick(PickArgs),
    /// Run failed, timed-out, stalled or interrupted tasks again
    Retry(RetryArgs),
    /// Ask the running dispatcher to stop its agents gracefully (state is kept)
    Stop,
    /// Cherry-pick finished work onto the target branch and validate it
    Land(LandArgs),
    /// Remove the worktrees and branches of landed tasks
    Clean(CleanArgs),
    /// Drop tasks their task file no longer has (`removed`) from the state
    ///
    /// A task whose task file (or [source] script) no longer lists it shows
    /// as `removed`, and `land` leaves it out unless named. `forget` drops it
    /// from .flocks/state.json; its logs stay. With --branches, its worktree
    /// and branch go too, never a branch with commits that have not landed
    /// (nor a worktree with uncommitted changes) unless --force.
    Forget(ForgetArgs),
    /// Let one agent study the repo and write the task list for an objective
    Plan(PlanArgs),
    /// Plan an objective, then run the plan with --supervise
    Sail(SailArgs),
    /// List the tasks with status, attempts, pool, dependencies and cost
    Tasks(TasksArgs),
    /// Write a commented flocks.toml (at --config PATH if given) and an example tasks.jsonl beside it
    Init,
    /// Check the hosts of ssh and exedev pools
    Hosts(HostsArgs),
    /// Open an interactive shell in a task's worktree, wherever it runs
    Shell(ShellArgs),
    /// Create what pools need before a run: exe.dev VMs, docker containers
    ///
    /// For an exedev pool: its `count` VMs, through the exe.dev lobby. For a
    /// docker pool with an `image` (or whose repository's
    /// .devcontainer/devcontainer.json names one): its container, with the
    /// repository mounted, unless it runs already. Local and ssh pools need
    /// nothing. What is created is recorded in .flocks/state.json.
    Up(UpArgs),
    /// Remove what `flocks up` created, and only that: exe.dev VMs, docker containers
    ///
    /// Removes the exe.dev VMs and the docker containers that `flocks up`
    /// recorded in .flocks/state.json; a container or VM that flocks did not
    /// create (a running devcontainer you named with `container`) is left alone.
    Down(DownArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory
    Man(ManArgs),
    /// Accept flocks.toml, the task source, templates and .git's hooks and
    /// configs as they are now, after container or remote agents ran
    Trust,
}

#[derive(Args, Debug)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub action: HostsAction,
}

#[derive(Subcommand, Debug)]
pub enum HostsAction {
    /// Reachable? git? the agent command and its version? free disk? setup ran? tar (with a .worktreeinclude)?
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
    /// Exit (code 5) instead of waiting when every credential is parked, or
    /// the free disk is below min_free_disk_gb
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
    /// Count the disk use of worktrees and logs in full (plain `status`
    /// counts for a moment and says when its sizes are lower bounds)
    #[arg(long, conflicts_with = "watch")]
    pub disk: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (IP:PORT); anything but loopback needs the token
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7777")]
    pub addr: String,
    /// Show retry, stop and land buttons (they run `flocks retry`, `stop`, `land -y`)
    #[arg(long)]
    pub allow_actions: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Only this run (an id from .flocks/events.jsonl; default: this piece
    /// of work, every run since the last land)
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Everything since DATE (2026-01-31, "2026-01-31 14:00" in UTC, an RFC
    /// 3339 time, or an age such as 2d), across lands
    #[arg(long, value_name = "DATE", conflicts_with = "run")]
    pub since: Option<String>,
    /// Where to write it (`-` for standard output; default: flocks-report-<last run id>.html)
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
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
    /// A best-of task's variant k (default: its winner)
    #[arg(long, value_name = "K", conflicts_with = "judge")]
    pub variant: Option<u32>,
    /// A best-of task's judge agent
    #[arg(long)]
    pub judge: bool,
}

#[derive(Args, Debug)]
pub struct PickArgs {
    /// The best-of task's id
    pub task: String,
    /// The variant to make its work (1-based, as `flocks status` numbers them)
    #[arg(value_name = "K")]
    pub variant: u32,
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
    /// Exit (code 5) instead of waiting when every credential is parked, or
    /// the free disk is below min_free_disk_gb
    #[arg(long)]
    pub no_wait: bool,
    /// Plain line-by-line output even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flocks diff fix-login            the change land would apply, in your pager\n  \
    flocks diff fix-login --stat     files changed, with counts\n  \
    flocks diff fix-login | less     plain text when not on a terminal")]
pub struct DiffArgs {
    /// The task id
    pub task: String,
    /// Only a summary: the files changed and how much
    #[arg(long)]
    pub stat: bool,
    /// A best-of task's variant k instead of its winner
    #[arg(long, value_name = "K")]
    pub variant: Option<u32>,
}

#[derive(Args, Debug, Default)]
pub struct LandArgs {
    /// Land only these tasks (default: every succeeded task not landed yet).
    pub ids: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Only list what would land; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Do not run [validate] commands before moving the target.
    #[arg(long)]
    pub no_validate: bool,
    /// When validation fails, find the tasks that break it by bisection and
    /// land the others.
    #[arg(long, conflicts_with = "no_validate")]
    pub bisect: bool,
    /// Redo each task whose cherry-pick conflicts with an agent, from the
    /// current target, and land it (needs the project lock).
    #[arg(long)]
    pub resolve: bool,
    /// With --resolve: the task file the tasks come from.
    #[command(flatten)]
    pub source: TaskSource,
    /// Then push the target to REMOTE (default: `[land] push`, else
    /// origin) under a lease: the remote's branch must still be where the
    /// land started from; if it moved, flocks fetches it and lands again on
    /// top. `[land] after_push` commands run after the push.
    #[arg(long, value_name = "REMOTE", num_args = 0..=1, default_missing_value = "", conflicts_with = "no_push")]
    pub push: Option<String>,
    /// Do not push, even with `[land] push` in flocks.toml.
    #[arg(long)]
    pub no_push: bool,
    /// Put the target back where the last land found it.
    #[arg(long, conflicts_with_all = ["ids", "json", "no_validate", "bisect", "resolve", "push"])]
    pub undo: bool,
    /// With --undo: undo a land that was pushed (the remote keeps it).
    #[arg(long, requires = "undo")]
    pub force: bool,
}

#[derive(Args, Debug, Default)]
pub struct CleanArgs {
    /// Also remove the worktrees of failed tasks (and their branches when
    /// they hold nothing unlanded).
    #[arg(long, conflicts_with = "logs")]
    pub all: bool,
    /// Remove old attempt logs and land logs instead (those of running
    /// tasks stay); needs --older-than. Worktrees and branches are left alone
    #[arg(long, requires = "older_than")]
    pub logs: bool,
    /// With --logs: remove the files last written longer ago than AGE
    /// (a number and a unit: 30m, 12h, 7d, 2w)
    #[arg(long, value_name = "AGE", requires = "logs", value_parser = crate::output::units::parse_age)]
    pub older_than: Option<std::time::Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct ForgetArgs {
    /// The tasks to forget (each gone from its task file)
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Also remove their worktrees and delete their branches (and their
    /// best-of variants'); refused for a branch with commits that have not
    /// landed, unless --force
    #[arg(long)]
    pub branches: bool,
    /// With --branches: delete branches with unlanded commits and worktrees
    /// with uncommitted changes too
    #[arg(long, requires = "branches")]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SailArgs {
    /// What the fleet should achieve
    pub objective: String,
    #[command(flatten)]
    pub plan: PlanOptions,
    /// Extra attempts after a failure (default: max_retries from flocks.toml)
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Exit (code 5) instead of waiting when every credential is parked, or
    /// the free disk is below min_free_disk_gb
    #[arg(long)]
    pub no_wait: bool,
    /// Plain line-by-line output even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
pub struct TasksArgs {
    #[command(flatten)]
    pub source: TaskSource,
    /// Only tasks with this status: new, pending, running, succeeded, landed, failed,
    /// timed-out, stalled, interrupted, blocked, removed, ...
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// Print the list as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write flocks.1 and flocks-<command>.1 into this directory (e.g. ~/.local/share/man/man1)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// What the fleet should achieve
    pub objective: String,
    #[command(flatten)]
    pub plan: PlanOptions,
}

#[derive(Args, Debug, Clone, Default)]
pub struct PlanOptions {
    #[command(flatten)]
    pub source: TaskSource,
    /// Replace an existing task file
    #[arg(long)]
    pub force: bool,
    /// Open the plan in $VISUAL/$EDITOR before saving it (it is checked again after)
    #[arg(long)]
    pub edit: bool,
    /// Planning prompt template ({{objective}}, {{plan_path}}); default: [prompt] plan_template, or built in
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// Run the planning agent on this pool (default: the first usable one)
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
}
