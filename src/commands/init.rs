//! `flocks init`: a commented flocks.toml for the current repository (with a
//! pool for its running devcontainer, if one is found) and an example
//! tasks.jsonl. Existing files are never overwritten. `--config PATH` writes
//! the config at PATH (its tasks.jsonl beside it), pointing back at the
//! repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Exit, Result};

/// The result of looking around the repository.
#[derive(Debug, Clone, Default)]
pub(super) struct Detected {
    /// The branch checked out now (land target and base).
    pub branch: String,
    /// A running container whose `devcontainer.local_folder` label is the repo.
    pub devcontainer: Option<String>,
    /// A test command suggested by the build files found.
    pub test_command: Option<&'static str>,
    /// A bubblewrap sandbox starts here: local agents run in one.
    pub bwrap: bool,
}

/// `explicit`: the `--config PATH` to write instead of `<repo>/flocks.toml`.
pub(super) fn run(explicit: Option<&Path>) -> Result<Exit> {
    let cwd = std::env::current_dir().ctx(|| "read the current directory".into())?;
    let repo = git2::Repository::discover(&cwd).map_err(|_| {
        Error::Usage(format!(
            "{} is not in a git repository: run `git init` (and make a first commit) first",
            cwd.display()
        ))
    })?;
    let root = repo
        .workdir()
        .ok_or_else(|| {
            Error::Usage("the repository is bare: run flocks init in a checkout".into())
        })?
        .components()
        .collect::<PathBuf>();
    let config_path = match explicit {
        Some(p) if p.as_os_str().is_empty() || p.to_string_lossy().ends_with('/') || p.is_dir() => {
            return Err(Error::Usage(format!(
                "--config {} names a directory: give the path of the file to write, e.g. {}",
                p.display(),
                p.join(crate::config::FILE_NAME).display()
            )));
        }
        Some(p) => std::path::absolute(cwd.join(p))
            .ctx(|| format!("resolve {}", p.display()))?
            .components()
            .collect::<PathBuf>(),
        None => root.join(crate::config::FILE_NAME),
    };
    let config_dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.clone());
    let tasks_path = config_dir.join("tasks.jsonl");
    for p in [&config_path, &tasks_path] {
        if p.exists() {
            return Err(Error::Usage(format!(
                "{} already exists: flocks init does not overwrite it (move it away to start over)",
                p.display()
            )));
        }
    }
    let detected = Detected {
        branch: current_branch(&repo),
        devcontainer: devcontainer_for(&root),
        test_command: test_command(&root),
        bwrap: crate::backend::bwrap::probe(),
    };
    std::fs::create_dir_all(&config_dir).ctx(|| format!("create {}", config_dir.display()))?;
    let repo_setting = relative_to(&root, &config_dir);
    std::fs::write(&config_path, config_text(&root, &repo_setting, &detected))
        .ctx(|| format!("write {}", config_path.display()))?;
    std::fs::write(&tasks_path, EXAMPLE_TASKS).ctx(|| format!("write {}", tasks_path.display()))?;
    crate::outln!("wrote {}", config_path.display());
    crate::outln!(
        "wrote {} (an example: two tasks, one building on the other)",
        tasks_path.display()
    );
    if let Some(name) = &detected.devcontainer {
        crate::outln!(
            "found the running devcontainer {name}: agents run in it (pool `devcontainer`)"
        );
    }
    // flocks finds flocks.toml by walking up; any other file needs --config.
    let found = config_path.file_name() == Some(crate::config::FILE_NAME.as_ref())
        && cwd.starts_with(&config_dir);
    let flag = if found {
        String::new()
    } else {
        format!(" --config {}", config_path.display())
    };
    crate::outln!(
        "next: edit the tasks, or let an agent write them: `flocks{flag} plan --force \"<objective>\"`; then `flocks{flag} run`"
    );
    Ok(Exit::Ok)
}

/// `[workspace] repo` for a config in `config_dir`: relative when the config
/// is inside the repository, absolute otherwise.
fn relative_to(root: &Path, config_dir: &Path) -> String {
    match config_dir.strip_prefix(root) {
        Ok(rest) if rest.as_os_str().is_empty() => ".".into(),
        Ok(rest) => vec![".."; rest.components().count()].join("/"),
        Err(_) => root.display().to_string(),
    }
}

fn current_branch(repo: &git2::Repository) -> String {
    repo.find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
        .and_then(|t| t.strip_prefix("refs/heads/").map(str::to_string))
        .unwrap_or_else(|| "main".into())
}

/// `docker ps` for a running container labelled with this folder; nothing
/// when docker is missing, not running or finds none.
fn devcontainer_for(root: &Path) -> Option<String> {
    let out = Command::new("docker")
        .args(["ps", "--filter"])
        .arg(format!(
            "label=devcontainer.local_folder={}",
            root.display()
        ))
        .args(["--format", "{{.Names}}"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn test_command(root: &Path) -> Option<&'static str> {
    [
        ("Cargo.toml", "cargo test"),
        ("go.mod", "go test ./..."),
        ("package.json", "npm test"),
        ("pyproject.toml", "python -m pytest"),
        ("Makefile", "make test"),
    ]
    .into_iter()
    .find(|(f, _)| root.join(f).exists())
    .map(|(_, c)| c)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The commented flocks.toml; `repo` is its `[workspace] repo` (relative to
/// the file's directory, or absolute).
pub(super) fn config_text(root: &Path, repo: &str, d: &Detected) -> String {
    let mut s = format!(
        r#"# flocks.toml for {root}, written by `flocks init`.
# flocks finds this file by walking up from the current directory. Unknown
# keys are an error naming the key and its line. Every key, with its default,
# is in flocks.toml.example in flocks' repository.

max_agents = 4                 # global cap on concurrent agents
agent_timeout_secs = 1800      # 0 = none; on expiry: SIGTERM, grace, SIGKILL to the whole tree
stall_timeout_secs = 0         # 0 = off; no agent output this long = stalled
max_retries = 3                # extra attempts after a failure (with --supervise)
max_cost_usd = 0               # 0 = no budget; stop dispatching once a run has cost this much
# min_free_disk_gb = 5         # below this much free disk (GiB), no new agent starts

[agent]
command = "claude"             # a path or a name on PATH where the agent runs
args = []                      # extra args after flocks' claude flags
# model = "sonnet"             # passed as --model

# A credential's secret stays in a host environment variable and in flocks: agents
# get a token for flocks' model proxy instead. Without any, agents use the
# environment's own login.
# [[credentials]]
# name = "sub-1"
# env = "CLAUDE_TOKEN_1"
# kind = "oauth"               # or "api_key"
# max_concurrent = 3           # agents on it at once
# max_cost_usd = 20            # retired for the run once its attempts cost this much

"#,
        root = root.display()
    );
    let sandbox = if d.bwrap {
        "sandbox = \"bwrap\"             # each agent in a bubblewrap sandbox: read-only host, private home,\n                              # a repository of its own, no network but flocks' proxy (\"none\": unsandboxed)\n"
    } else {
        "# sandbox = \"bwrap\"           # each agent in a bubblewrap sandbox (install bubblewrap first)\n"
    };
    let local = format!(
        "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 4             # concurrent agents on this machine\ncredential = \"default\"        # \"default\", a credential name, or \"rotate\"\n{sandbox}"
    );
    match &d.devcontainer {
        Some(name) => {
            s.push_str(&format!(
                "# The running devcontainer of this repository ({name}), found by its\n\
                 # devcontainer.local_folder label: agents run inside it.\n\
                 [[containers]]\n\
                 name = \"devcontainer\"\n\
                 backend = \"docker\"\n\
                 project = {}\n\
                 max_worktrees = 4\n\
                 credential = \"default\"\n\n\
                 # Agents on this machine instead (or as well):\n",
                quote(&root.display().to_string())
            ));
            for l in local.lines() {
                s.push_str("# ");
                s.push_str(l);
                s.push('\n');
            }
        }
        None => {
            s.push_str("# Agents run on this machine. A docker, ssh or exedev pool is another\n# [[containers]] table (see flocks.toml.example).\n");
            s.push_str(&local);
            if d.bwrap {
                s.push_str("\n[sandbox]\n# read = [\"~/.cargo\", \"~/.rustup\"]   # hidden places agents may read (your home is hidden)\nnetwork = \"proxy\"             # none but flocks' proxy; \"none\": no network at all; \"host\": the host's\n");
            }
        }
    }
    s.push_str(&format!(
        r#"
[source]
type = "jsonl"
path = "tasks.jsonl"           # one task per line; `flocks plan "<objective>"` writes one

[workspace]
repo = {repo}{repo_pad}# the repository, from this file's directory
branch_prefix = "flocks/"      # a task's branch defaults to branch_prefix + id
land_target = {branch}{pad}# where `flocks land` cherry-picks finished work
base = {branch}{pad}# where task branches start
# setup = ["npm ci"]           # run in each new worktree before its agent (where it runs)
# Ignored files of this checkout (.env) reach the worktrees through .worktreeinclude.

[prompt]
# template = "flocks-prompt.md"      # {{{{prompt}}}} {{{{task.id}}}} {{{{task.<field>}}}} ...
# plan_template = "flocks-plan.md"   # the prompt of `flocks plan`: {{{{objective}}}} {{{{plan_path}}}}

[validate]
{validate}
timeout_secs = 1800
"#,
        repo = quote(repo),
        repo_pad = " ".repeat(23usize.saturating_sub(quote(repo).len()).max(1)),
        branch = quote(&d.branch),
        pad = " ".repeat(23usize.saturating_sub(quote(&d.branch).len()).max(1)),
        validate = match d.test_command {
            Some(c) => format!(
                "commands = []                  # run on the landed result before the target moves,\n# commands = [{}]",
                quote(c)
            ),
            None => "commands = []                  # run on the landed result before the target moves, e.g. [\"make test\"]".to_string(),
        }
    ));
    s
}

const EXAMPLE_TASKS: &str = r#"{"id": "example-layout", "title": "Describe the layout", "prompt": "Write docs/LAYOUT.md: one short paragraph per top-level directory of this repository, saying what it holds. Commit it."}
{"id": "example-review", "title": "Check the layout notes", "prompt": "Read docs/LAYOUT.md and correct anything it gets wrong about this repository. Commit your fixes.", "depends_on": ["example-layout"], "start_from": "dependencies"}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(d: &Detected) -> crate::config::Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flocks.toml");
        std::fs::write(&path, config_text(dir.path(), ".", d)).unwrap();
        crate::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_config_parses_with_and_without_a_devcontainer() {
        let c = load(&Detected {
            branch: "trunk".into(),
            devcontainer: None,
            test_command: Some("cargo test"),
            bwrap: false,
        });
        assert_eq!(c.workspace.land_target, "trunk");
        assert_eq!(c.workspace.base, "trunk");
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pools[0].backend.kind(), "local");
        assert_eq!(crate::backend::isolation(&c.pools[0]), "none");
        assert!(c.validate.commands.is_empty());

        // Where a sandbox starts, local agents run in one.
        let c = load(&Detected {
            branch: "main".into(),
            devcontainer: None,
            test_command: None,
            bwrap: true,
        });
        assert_eq!(crate::backend::isolation(&c.pools[0]), "bwrap");
        assert_eq!(c.sandbox.network, crate::config::SandboxNetwork::Proxy);

        let c = load(&Detected {
            branch: "main".into(),
            devcontainer: Some("proj_devcontainer-app-1".into()),
            test_command: None,
            bwrap: true,
        });
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pools[0].name, "devcontainer");
        assert_eq!(c.pools[0].backend.kind(), "docker");
    }

    #[test]
    fn the_example_tasks_are_valid() {
        let rules = crate::tasks::BranchRules {
            prefix: "flocks/",
            base: "main",
            land_target: "main",
            template_fields: &[],
        };
        let set =
            crate::tasks::parse_jsonl(Path::new("tasks.jsonl"), EXAMPLE_TASKS, &rules).unwrap();
        assert_eq!(set.tasks.len(), 2);
    }

    #[test]
    fn quotes_toml_strings() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
