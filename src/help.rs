//! The command line as clap sees it, with two or three real examples at the
//! end of each command's `--help` (kept here, beside each other, so that a
//! new command gets its examples in the same place). `main`, completions and
//! the man page all use [`command`].

use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// Examples per command, `(command line, what it does)`.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "flocks",
        &[
            (
                "flocks init",
                "write flocks.toml and an example tasks.jsonl",
            ),
            ("flocks run", "dispatch every task, wait, report"),
            (
                "flocks land -y",
                "cherry-pick the finished work onto the target branch",
            ),
        ],
    ),
    (
        "run",
        &[
            (
                "flocks run --dry-run",
                "the plan: pools, branches, order, footprint lanes; runs nothing",
            ),
            (
                "flocks run --tasks tasks.jsonl",
                "dispatch the tasks of this file",
            ),
            (
                "flocks run --supervise --max-retries 2",
                "retry failures with what they learned",
            ),
        ],
    ),
    (
        "status",
        &[
            ("flocks status", "what is running, done, failed and blocked"),
            ("flocks status --watch", "the live dashboard"),
            ("flocks status --json | jq '.totals'", "for scripts"),
            (
                "flocks status --disk",
                "count the disk use of worktrees and logs in full",
            ),
        ],
    ),
    (
        "top",
        &[
            (
                "flocks top",
                "the live dashboard; q quits, Enter opens a task's log",
            ),
            ("flocks --color never top", "the same without colours"),
        ],
    ),
    (
        "serve",
        &[
            (
                "flocks serve",
                "the dashboard at http://127.0.0.1:7777/ (read-only)",
            ),
            (
                "flocks serve --addr 0.0.0.0:7777",
                "for other machines: open the URL with the token it prints",
            ),
            (
                "flocks serve --allow-actions",
                "with retry, stop and land buttons",
            ),
        ],
    ),
    (
        "report",
        &[
            (
                "flocks report",
                "this piece of work (every run since the last land) as flocks-report-<last run id>.html",
            ),
            (
                "flocks report --run 20261130-021500 -o night.html",
                "one run, to a file of your choosing",
            ),
            (
                "flocks report --since 7d",
                "everything of the last week, across lands",
            ),
        ],
    ),
    (
        "logs",
        &[
            (
                "flocks logs fix-login -f",
                "follow the agent of task fix-login",
            ),
            (
                "flocks logs fix-login --attempt 1 -n 40",
                "the last 40 lines of its first attempt",
            ),
            (
                "flocks logs fix-login --raw",
                "the stream-json lines as claude wrote them",
            ),
            (
                "flocks logs fix-login --variant 2",
                "variant 2 of a best-of task (--judge: its judge agent)",
            ),
        ],
    ),
    (
        "retry",
        &[
            (
                "flocks retry --all-failed",
                "every failed, timed-out, stalled or interrupted task",
            ),
            (
                "flocks retry fix-login --fresh",
                "start its branch over from the base",
            ),
            (
                "flocks retry fix-login --force",
                "run a task that succeeded again",
            ),
        ],
    ),
    (
        "stop",
        &[
            (
                "flocks stop",
                "ask the running `flocks run` to stop its agents; state is kept",
            ),
            (
                "flocks stop && flocks status",
                "then see where every task stands",
            ),
        ],
    ),
    (
        "land",
        &[
            (
                "flocks land --dry-run",
                "what would land and which tasks will conflict, changing nothing",
            ),
            (
                "flocks land -y --bisect",
                "land, and set aside the tasks that break validation",
            ),
            (
                "flocks land -y --push",
                "land, then push the target to origin under a lease (landing again if it moved)",
            ),
            (
                "flocks land --undo -y",
                "put the target back where the last land found it",
            ),
        ],
    ),
    (
        "clean",
        &[
            (
                "flocks clean",
                "remove the worktrees and branches of landed tasks",
            ),
            ("flocks clean --all", "also those of failed tasks"),
            (
                "flocks clean --logs --older-than 7d",
                "remove logs older than a week (never a running task's)",
            ),
        ],
    ),
    (
        "forget",
        &[
            (
                "flocks forget old-task",
                "drop a task gone from tasks.jsonl from the state (`removed` in status)",
            ),
            (
                "flocks forget --branches old-task other",
                "and remove their worktrees and landed branches",
            ),
            (
                "flocks forget --branches --force old-task",
                "even a branch with work that never landed",
            ),
        ],
    ),
    (
        "plan",
        &[
            (
                "flocks plan \"add OAuth login\"",
                "an agent writes tasks.jsonl for the objective",
            ),
            (
                "flocks plan \"add OAuth login\" --edit",
                "and open it in $EDITOR before saving",
            ),
        ],
    ),
    (
        "sail",
        &[
            (
                "flocks sail \"port the CLI to clap 4\"",
                "plan the objective, then run the plan with --supervise",
            ),
            (
                "flocks sail \"add OAuth login\" --edit --max-retries 1",
                "check the plan in $EDITOR first; one retry per task",
            ),
        ],
    ),
    (
        "tasks",
        &[
            (
                "flocks tasks",
                "every task with status, attempts, pool and cost",
            ),
            ("flocks tasks --status failed", "only the failed ones"),
            ("flocks tasks --json", "for scripts"),
        ],
    ),
    (
        "init",
        &[
            (
                "flocks init",
                "write a commented flocks.toml and an example tasks.jsonl",
            ),
            (
                "flocks init && flocks run --dry-run",
                "then see what a run would do",
            ),
        ],
    ),
    (
        "hosts",
        &[
            ("flocks hosts check", "check every ssh and exedev host"),
            (
                "flocks hosts check --pool box1",
                "only the hosts of pool box1",
            ),
        ],
    ),
    (
        "shell",
        &[
            (
                "flocks shell fix-login",
                "a shell in the worktree of fix-login, wherever it runs",
            ),
            (
                "flocks tasks --status failed",
                "first, which tasks to look at",
            ),
        ],
    ),
    (
        "up",
        &[
            (
                "flocks up",
                "create what every pool needs (containers, VMs)",
            ),
            ("flocks up --pool fleet", "only for pool fleet"),
        ],
    ),
    (
        "down",
        &[
            ("flocks down", "remove what `flocks up` created"),
            ("flocks down --pool fleet", "only for pool fleet"),
        ],
    ),
    (
        "diff",
        &[
            (
                "flocks diff fix-login",
                "the change of task fix-login, as land would apply it",
            ),
            ("flocks diff fix-login --stat", "a summary of it"),
            (
                "flocks diff fix-login --variant 2",
                "variant 2 of a best-of task, winner or not",
            ),
        ],
    ),
    (
        "pick",
        &[
            (
                "flocks pick fix-login 2",
                "variant 2 becomes the task's work, over the judgement",
            ),
            (
                "flocks pick fix-login 2 && flocks land fix-login",
                "pick, then land it",
            ),
        ],
    ),
    (
        "completions",
        &[
            (
                "flocks completions bash > ~/.local/share/bash-completion/completions/flocks",
                "bash",
            ),
            (
                "flocks completions zsh > ~/.zfunc/_flocks",
                "zsh (with ~/.zfunc in $fpath)",
            ),
            (
                "flocks completions fish > ~/.config/fish/completions/flocks.fish",
                "fish",
            ),
        ],
    ),
    (
        "trust",
        &[
            (
                "flocks trust",
                "accept flocks.toml and .git as they are now, after reviewing what the refusal named",
            ),
            ("flocks trust && flocks land -y", "accept, then land"),
        ],
    ),
    (
        "man",
        &[
            ("flocks man | man -l -", "read the manual now"),
            (
                "flocks man --dir ~/.local/share/man/man1",
                "install it: then `man flocks`",
            ),
        ],
    ),
];

/// The examples of a command as `(command line, what it does)`, by name
/// (`flocks` for the top level).
pub(crate) fn example_list(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    EXAMPLES.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// The examples of a command as the end of its `--help`.
pub fn examples(name: &str) -> Option<String> {
    let list = example_list(name)?;
    let width = list.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    let mut s = String::from("Examples:\n");
    for (cmd, what) in list {
        if cmd.len() > 48 {
            s.push_str(&format!("  {cmd}\n  {:48}  # {what}\n", ""));
        } else {
            s.push_str(&format!(
                "  {cmd:width$}  # {what}\n",
                width = width.min(48)
            ));
        }
    }
    Some(s.trim_end().to_string())
}

/// The clap command with its examples.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    if let Some(ex) = examples("flocks") {
        cmd = cmd.after_help(ex);
    }
    cmd.mut_subcommands(|sub| match examples(sub.get_name()) {
        Some(ex) => sub.after_help(ex),
        None => sub,
    })
}

/// Parse the process's arguments (exits with clap's message on bad usage).
/// `--color` also applies to clap's own help and errors, which are printed
/// before the flag is parsed.
pub fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = command().color(colour_flag(&args));
    // clap's own `help` subcommand, in words without "subcommand(s)".
    cmd.build();
    let cmd = cmd.mut_subcommand("help", |h| {
        h.about("Print this help, or the help of a command (`flocks help land`)")
    });
    let matches = cmd.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The last `--color WHEN` / `--color=WHEN` before a `--`, for clap's own
/// output; anything else is left to the parser to judge.
fn colour_flag(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    use clap::ValueEnum;
    let mut choice = clap::ColorChoice::Auto;
    let mut it = args.iter().filter_map(|a| a.to_str());
    while let Some(a) = it.next() {
        let value = match a {
            "--" => break,
            "--color" => it.next(),
            _ => a.strip_prefix("--color="),
        };
        if let Some(c) = value.and_then(|v| clap::ColorChoice::from_str(v, false).ok()) {
            choice = c;
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shell words of the first flocks command of an example line (up to a
    /// pipe, redirection or `&&`), with double quotes.
    fn first_command(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                _ => word.push(c),
            }
        }
        words.push(word);
        words
            .into_iter()
            .take_while(|w| !matches!(w.as_str(), "|" | ">" | "&&"))
            .collect()
    }

    /// Every example is a command line that flocks accepts.
    #[test]
    fn every_example_parses() {
        for (name, list) in EXAMPLES {
            for (line, _) in *list {
                let args = first_command(line);
                assert_eq!(args[0], "flocks", "{line}");
                if *name == "diff" && command().find_subcommand("diff").is_none() {
                    continue; // `flocks diff` comes with its own branch
                }
                if let Err(e) = command().try_get_matches_from(&args) {
                    panic!("example `{line}` of `{name}` does not parse: {e}");
                }
            }
        }
    }

    #[test]
    fn colour_flag_for_clap() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            colour_flag(&args(&["flocks", "run"])),
            clap::ColorChoice::Auto
        );
        assert_eq!(
            colour_flag(&args(&["flocks", "--color", "never", "run"])),
            clap::ColorChoice::Never
        );
        assert_eq!(
            colour_flag(&args(&["flocks", "run", "--color=always"])),
            clap::ColorChoice::Always
        );
        assert_eq!(
            colour_flag(&args(&["flocks", "--", "--color", "always"])),
            clap::ColorChoice::Auto
        );
    }

    /// Every visible command ends its help with examples that call it.
    #[test]
    fn every_command_has_examples() {
        let cmd = command();
        assert!(cmd.get_after_help().is_some());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            let help = sub
                .get_after_help()
                .unwrap_or_else(|| panic!("`flocks {name}` has no examples in src/help.rs"))
                .to_string();
            assert!(help.contains(&format!("flocks {name}")), "{name}: {help}");
        }
        cmd.debug_assert();
    }
}
