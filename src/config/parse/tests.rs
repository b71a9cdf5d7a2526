//! Tests of flocks.toml parsing: every table, its defaults and its errors.

use super::*;

fn parse_str(text: &str) -> Result<Config> {
    parse(Path::new("/p/flocks.toml"), text)
}

fn err(text: &str) -> String {
    parse_str(text).unwrap_err().to_string()
}

#[test]
fn guards_parse_and_bad_values_name_the_key() {
    let c = parse_str(
            "min_free_disk_gb = 2.5\ncredential_ramp_secs = 5\n[[credentials]]\nname = \"a\"\nenv = \"A\"\nmax_concurrent = 2\nmax_cost_usd = 10\n[workspace]\nmax_spare_worktrees = 3\n",
        )
        .unwrap();
    assert_eq!(c.min_free_disk, Some(5 * GIB / 2));
    assert_eq!(c.credential_ramp, Duration::from_secs(5));
    assert_eq!(c.credentials[0].max_concurrent, Some(2));
    assert_eq!(c.credentials[0].max_cost_usd, Some(10.0));
    assert_eq!(c.workspace.max_spare_worktrees, Some(3));
    let d = parse_str("").unwrap();
    assert_eq!(d.min_free_disk, None);
    assert_eq!(d.credential_ramp, Duration::from_secs(30));
    assert_eq!(d.workspace.max_spare_worktrees, None);
    let e = err("min_free_disk_gb = -1\n");
    assert!(
        e.contains(
            "flocks.toml:1: field `min_free_disk_gb`: must be a non-negative number of gigabytes"
        ),
        "{e}"
    );
    let e = err("[[credentials]]\nname = \"a\"\nenv = \"A\"\nmax_concurrent = 0\n");
    assert!(
        e.contains("flocks.toml:4: field `credentials.max_concurrent`: must be at least 1"),
        "{e}"
    );
    let e = err("[[credentials]]\nname = \"a\"\nenv = \"A\"\nmax_cost_usd = -2\n");
    assert!(e.contains("flocks.toml:4: field `credentials.max_cost_usd`: must be a non-negative number of dollars"), "{e}");
    let e = err("[workspace]\nmax_spare_worktrees = -1\n");
    assert!(
        e.contains("flocks.toml:2: field `workspace.max_spare_worktrees`: must be at least 0"),
        "{e}"
    );
}

#[test]
fn defaults() {
    let c = parse_str("").unwrap();
    assert_eq!(c.max_agents, 5);
    assert_eq!(c.pools.len(), 1);
    assert_eq!(c.pools[0].max_worktrees, 5);
    assert_eq!(c.workspace.base, "main");
    assert_eq!(c.agent.command, "claude");
    assert_eq!(c.agent_timeout, Some(Duration::from_secs(1800)));
    assert_eq!(c.stall_timeout, None);
    assert_eq!(c.max_retries, 3);
}

#[test]
fn durations_with_units() {
    let c = parse_str(
            "agent_timeout_secs = \"30m\"\nstall_timeout_secs = \"1h30m\"\nkill_grace_secs = \"90s\"\n\
             stagger_delay_secs = \"0.5s\"\ncredential_ramp_secs = \"2m\"\n\
             [workspace]\nsetup_timeout_secs = \"10m\"\n[validate]\ntimeout_secs = \"1h\"\n\
             [[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\ntimeout_secs = \"20s\"\ncoalesce_secs = \"1m\"\n",
        )
        .unwrap();
    assert_eq!(c.agent_timeout, Some(Duration::from_secs(1800)));
    assert_eq!(c.stall_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(c.kill_grace, Duration::from_secs(90));
    assert_eq!(c.stagger_delay, Duration::from_millis(500));
    assert_eq!(c.credential_ramp, Duration::from_secs(120));
    assert_eq!(c.workspace.setup_timeout, Some(Duration::from_secs(600)));
    assert_eq!(c.validate.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(c.notify[0].timeout, Duration::from_secs(20));
    assert_eq!(c.notify[0].coalesce, Duration::from_secs(60));
    let e = err("kill_grace_secs = 1\nagent_timeout_secs = \"soon\"\n");
    assert!(
        e.contains("flocks.toml:2: field `agent_timeout_secs`: `soon` is not a duration"),
        "{e}"
    );
    let e = err("stall_timeout_secs = true\n");
    assert!(
        e.contains("expected a number of seconds or a duration such as \"30m\", got true"),
        "{e}"
    );
}

#[test]
fn fractions_and_zero() {
    let c =
        parse_str("stagger_delay_secs = 0.5\nagent_timeout_secs = 0\nkill_grace_secs = 2").unwrap();
    assert_eq!(c.stagger_delay, Duration::from_millis(500));
    assert_eq!(c.agent_timeout, None);
    assert_eq!(c.kill_grace, Duration::from_secs(2));
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err("max_agents = 2\n\n[agent]\ncommnd = \"x\"\n");
    assert!(e.contains("flocks.toml:4"), "{e}");
    assert!(e.contains("commnd"), "{e}");
}

#[test]
fn key_of_another_backend() {
    let e = err(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\nhost = \"x\"\n",
    );
    assert!(e.contains("flocks.toml:5"), "{e}");
    assert!(e.contains("`host` belongs to ssh pools"), "{e}");
}

#[test]
fn slurm_pools() {
    let c = parse_str(
            "[[containers]]\nname = \"cluster\"\nbackend = \"slurm\"\npartition = \"gpu-small\"\naccount = \"lab-ai\"\nqos = \"normal\"\nsbatch_args = [\"--mem=8G\", \"--cpus-per-task\", \"4\"]\nremote_dir = \"/shared/$USER/flocks\"\nmax_worktrees = 50\nsetup = [\"module load git\"]\n",
        )
        .unwrap();
    let BackendConfig::Slurm(s) = &c.pools[0].backend else {
        panic!("{:?}", c.pools[0].backend);
    };
    assert_eq!(s.partition.as_deref(), Some("gpu-small"));
    assert_eq!(s.account.as_deref(), Some("lab-ai"));
    assert_eq!(s.qos.as_deref(), Some("normal"));
    assert_eq!(s.sbatch_args, ["--mem=8G", "--cpus-per-task", "4"]);
    assert_eq!(s.remote_dir, "/shared/$USER/flocks");
    assert_eq!(c.pools[0].max_worktrees, 50);
    assert_eq!(c.pools[0].backend.kind(), "slurm");
    // A key of another backend, and a slurm key elsewhere.
    let e = err(
        "[[containers]]\nname = \"c\"\nbackend = \"docker\"\ncontainer = \"x\"\npartition = \"gpu\"\n",
    );
    assert!(
        e.contains("flocks.toml:5") && e.contains("`partition` belongs to slurm pools"),
        "{e}"
    );
    let e = err("[[containers]]\nname = \"c\"\nbackend = \"slurm\"\nhost = \"x\"\n");
    assert!(e.contains("`host` belongs to ssh pools"), "{e}");
    // sbatch_args is argv, not a string.
    let e = err("[[containers]]\nname = \"c\"\nbackend = \"slurm\"\nsbatch_args = \"--mem=8G\"\n");
    assert!(
        e.contains("flocks.toml:4") && e.contains("containers.sbatch_args"),
        "{e}"
    );
    // Options flocks sets itself, and names that would be options.
    for (bad, line) in [
        ("sbatch_args = [\"--job-name=x\"]", "sbatch_args"),
        ("sbatch_args = [\"-Jx\"]", "sbatch_args"),
        ("sbatch_args = [\"--comment\", \"x\"]", "sbatch_args"),
        ("sbatch_args = [\"-p\", \"debug\"]", "sbatch_args"),
        ("partition = \"--wrap=x\"", "partition"),
        ("account = \"a b\"", "account"),
        ("qos = \"\"", "qos"),
    ] {
        let e = err(&format!(
            "[[containers]]\nname = \"c\"\nbackend = \"slurm\"\n{bad}\n"
        ));
        assert!(
            e.contains("flocks.toml:4") && e.contains(&format!("containers.{line}")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn land_redo_conflicts() {
    assert_eq!(
        parse_str("").unwrap().land.redo_conflicts,
        RedoConflicts::AtLand
    );
    let c = parse_str("[land]\nredo_conflicts = \"early\"\n").unwrap();
    assert_eq!(c.land.redo_conflicts, RedoConflicts::Early);
    let c = parse_str("[land]\npush = \"origin\"\nafter_push = [\"true\", [\"echo\", \"ok\"]]\n")
        .unwrap();
    assert_eq!(c.land.push.as_deref(), Some("origin"));
    assert_eq!(c.land.after_push.len(), 2);
    for bad in ["", "-o", "a b", "x..y"] {
        let e = err(&format!("[land]\npush = {bad:?}\n"));
        assert!(
            e.contains("flocks.toml:2")
                && e.contains("land.push")
                && e.contains("not a git remote"),
            "{bad}: {e}"
        );
    }
    let e = err("[land]\nafter_push = 3\n");
    assert!(
        e.contains("flocks.toml:2") && e.contains("land.after_push"),
        "{e}"
    );
    let e = err("[land]\nredo_conflicts = \"soon\"\n");
    assert!(
        e.contains("flocks.toml:2") && e.contains("land.redo_conflicts") && e.contains("early"),
        "{e}"
    );
}

#[test]
fn validate_pool_is_a_docker_pool() {
    let pools = "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\n\n\
                     [[containers]]\nname = \"here\"\nbackend = \"local\"\n\n";
    let c = parse_str(&format!(
        "{pools}[validate]\ncommands = [\"true\"]\npool = \"dev\"\n"
    ))
    .unwrap();
    assert_eq!(c.validate.pool.as_deref(), Some("dev"));
    let e = err(&format!("{pools}[validate]\npool = \"here\"\n"));
    assert!(
        e.contains("flocks.toml:11") && e.contains("validate.pool"),
        "{e}"
    );
    assert!(e.contains("`here` is a local pool"), "{e}");
    let e = err(&format!("{pools}[validate]\npool = \"nope\"\n"));
    assert!(
        e.contains("flocks.toml:11") && e.contains("no pool named `nope`"),
        "{e}"
    );
}

#[test]
fn a_root_exec_user_needs_allow_root() {
    let pool = "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\n";
    for user in ["root", "0", "0:0", "root:wheel", "000"] {
        let e = err(&format!("{pool}user = \"{user}\"\n"));
        assert!(
            e.contains("flocks.toml:5") && e.contains("containers.user"),
            "{e}"
        );
        assert!(
            e.contains("allow_root = true") && e.contains("reaper"),
            "{e}"
        );
        let c = parse_str(&format!("{pool}user = \"{user}\"\nallow_root = true\n")).unwrap();
        assert!(matches!(&c.pools[0].backend, BackendConfig::Docker(d) if d.allow_root));
    }
    for user in ["1000", "1000:1000", "dev", "10"] {
        parse_str(&format!("{pool}user = \"{user}\"\n")).unwrap();
    }
    let e = err("[[containers]]\nname = \"l\"\nallow_root = true\n");
    assert!(e.contains("allow_root"), "{e}");
}

#[test]
fn workspace_setup() {
    let c = parse_str("").unwrap();
    assert!(c.workspace.setup.is_empty());
    assert_eq!(c.workspace.setup_timeout, Some(Duration::from_secs(1800)));
    assert!(!c.workspace.setup_on_reuse);
    let c = parse_str(
            "[workspace]\nsetup = [\"npm ci\", [\"make\", \"deps\"]]\nsetup_timeout_secs = 0\nsetup_on_reuse = true\n",
        )
        .unwrap();
    assert_eq!(c.workspace.setup[0].argv(), vec!["sh", "-c", "npm ci"]);
    assert_eq!(c.workspace.setup[1].argv(), vec!["make", "deps"]);
    assert_eq!(c.workspace.setup_timeout, None);
    assert!(c.workspace.setup_on_reuse);
    let e = err("[workspace]\nsetup_timeout_secs = -1\n");
    assert!(
        e.contains("flocks.toml:2") && e.contains("workspace.setup_timeout_secs"),
        "{e}"
    );
    let e = err("[workspace]\nsetup = [\"\"]\n");
    assert!(
        e.contains("flocks.toml:2") && e.contains("empty command"),
        "{e}"
    );
    let e = err("[workspace]\nsetup_on_reuse = \"yes\"\n");
    assert!(
        e.contains("flocks.toml:2") && e.contains("setup_on_reuse"),
        "{e}"
    );
}

#[test]
fn unknown_backend() {
    let e = err("[[containers]]\nname = \"x\"\nbackend = \"k8s\"\n");
    assert!(
        e.contains(":3") && e.contains("unknown backend `k8s`"),
        "{e}"
    );
}

#[test]
fn mistyped_value() {
    let e = err("max_agents = \"five\"\n");
    assert!(e.contains("flocks.toml:1"), "{e}");
}

#[test]
fn unknown_credential() {
    let e = err("[[containers]]\nname = \"a\"\ncredential = \"nope\"\n");
    assert!(e.contains("no [[credentials]] entry named `nope`"), "{e}");
}

#[test]
fn commands_string_or_argv() {
    let c = parse_str("[validate]\ncommands = [\"cargo test\", [\"make\", \"check\"]]\n").unwrap();
    assert_eq!(
        c.validate.commands[0].argv(),
        vec!["sh", "-c", "cargo test"]
    );
    assert_eq!(c.validate.commands[1].argv(), vec!["make", "check"]);
}

#[test]
fn plan_template_is_resolved_and_typos_name_the_line() {
    let c = parse_str("[prompt]\nplan_template = \"plan.md\"\n").unwrap();
    assert_eq!(c.plan_template.as_deref(), Some(Path::new("/p/plan.md")));
    let e = err("[prompt]\nplan_templte = \"plan.md\"\n");
    assert!(
        e.contains("flocks.toml:2") && e.contains("plan_templte"),
        "{e}"
    );
}

#[test]
fn best_of_and_variants() {
    let c = parse_str("best_of = 3\n").unwrap();
    assert_eq!(c.best_of, BestOfConfig { n: 3, judge: false });
    let c = parse_str("[best_of]\nn = 2\njudge = true\n").unwrap();
    assert_eq!(c.best_of, BestOfConfig { n: 2, judge: true });
    let c = parse_str("[best_of]\njudge = true\n").unwrap();
    assert_eq!(c.best_of, BestOfConfig { n: 1, judge: true });
    assert_eq!(parse_str("").unwrap().best_of, BestOfConfig::default());
    let e = err("max_agents = 2\nbest_of = 0\n");
    assert!(
        e.contains("flocks.toml:2: field `best_of`: must be a whole number from 1 to 10"),
        "{e}"
    );
    let e = err("[best_of]\njudge = \"yes\"\n");
    assert!(e.contains("`best_of.judge`: expected true or false"), "{e}");
    let e = err("[best_of]\njury = true\n");
    assert!(e.contains("`best_of.jury`: unknown key"), "{e}");
    let e = err("best_of = \"3\"\n");
    assert!(
        e.contains("`best_of`: expected a number of variants"),
        "{e}"
    );
    let c = parse_str(
            "[[variants]]\nmodel = \"opus\"\n[[variants]]\nargs = [\"-x\"]\nprompt_suffix = \"small\"\n",
        )
        .unwrap();
    assert_eq!(c.variants.len(), 2);
    assert_eq!(c.variant(1).unwrap().model.as_deref(), Some("opus"));
    assert_eq!(
        c.variant(2).unwrap().prompt_suffix.as_deref(),
        Some("small")
    );
    assert_eq!(c.variant(3), c.variant(1));
    let e = err("max_agents = 2\n[[variants]]\n");
    assert!(
        e.contains("flocks.toml:2: field `variants`: this [[variants]] table changes nothing"),
        "{e}"
    );
    let e = err("[[variants]]\nmodle = \"x\"\n");
    assert!(e.contains("modle"), "{e}");
}

#[test]
fn docker_workspace_keys() {
    let pool = "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"c\"\n";
    let c = parse_str(pool).unwrap();
    match &c.pools[0].backend {
        BackendConfig::Docker(d) => {
            assert_eq!(d.workspace, WorkspaceMode::Clone);
            assert_eq!(d.clone_dir(), "/var/tmp/flocks");
            assert_eq!(d.max_fetch_bytes(), 500 << 20);
        }
        other => panic!("{other:?}"),
    }
    let c = parse_str(&format!(
        "{pool}workspace = \"clone\"\nclone_dir = \"/srv/f/\"\nmax_fetch_mb = 20\n"
    ))
    .unwrap();
    match &c.pools[0].backend {
        BackendConfig::Docker(d) => {
            assert_eq!(d.clone_dir(), "/srv/f");
            assert_eq!(d.max_fetch_bytes(), 20 << 20);
        }
        other => panic!("{other:?}"),
    }
    for (extra, line, said) in [
        ("workspace = \"copy\"\n", 5, "containers.workspace"),
        ("clone_dir = \"rel/dir\"\n", 5, "absolute path"),
        ("clone_dir = \"/a/../b\"\n", 5, "`..`"),
        ("clone_dir = \"/\"\n", 5, "must not be `/`"),
        ("max_fetch_mb = 0\n", 5, "containers.max_fetch_mb"),
        ("max_fetch_mb = \"big\"\n", 5, "max_fetch_mb"),
        (
            "workspace = \"mount\"\nclone_dir = \"/x\"\n",
            6,
            "workspace = \"mount\"",
        ),
    ] {
        let e = err(&format!("{pool}{extra}"));
        assert!(
            e.contains(&format!("flocks.toml:{line}")) && e.contains(said),
            "{extra}: {e}"
        );
    }
    for key in [
        "workspace = \"clone\"",
        "clone_dir = \"/x\"",
        "max_fetch_mb = 5",
    ] {
        let e = err(&format!(
            "[[containers]]\nname = \"s\"\nbackend = \"ssh\"\nhost = \"h\"\n{key}\n"
        ));
        assert!(
            e.contains("flocks.toml:5") && e.contains("belongs to docker pools"),
            "{key}: {e}"
        );
    }
    let e = err("[[containers]]\nname = \"l\"\nmax_fetch_mb = 5\n");
    assert!(
        e.contains("flocks.toml:3") && e.contains("belongs to docker pools"),
        "{e}"
    );
}

#[test]
fn sandbox_keys() {
    let c = parse_str("").unwrap();
    assert_eq!(c.pools[0].sandbox, SandboxMode::None);
    assert_eq!(c.sandbox, SandboxConfig::default());
    let c = parse_str(
            "[[containers]]\nname = \"here\"\nsandbox = \"bwrap\"\n\n[sandbox]\nread = [\"/opt/tool\", \"/opt/tool/\", \"/usr/../srv\"]\nnetwork = \"host\"\n",
        )
        .unwrap();
    assert_eq!(c.pools[0].sandbox, SandboxMode::Bwrap);
    assert_eq!(
        c.sandbox.read,
        vec![PathBuf::from("/opt/tool"), PathBuf::from("/srv")]
    );
    assert_eq!(c.sandbox.network, SandboxNetwork::Host);
    let c = parse_str("[[containers]]\nname = \"here\"\nsandbox = \"none\"\n").unwrap();
    assert_eq!(c.pools[0].sandbox, SandboxMode::None);
    assert_eq!(c.sandbox.network, SandboxNetwork::Proxy);
}

#[test]
fn sandbox_mistakes_name_the_line_and_field() {
    let cases = [
        (
            "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"c\"\nsandbox = \"bwrap\"\n",
            5,
            "containers.sandbox",
            "`sandbox` belongs to local pools, but pool `d` has backend = \"docker\"",
        ),
        (
            "[[containers]]\nname = \"s\"\nbackend = \"ssh\"\nhost = \"h\"\nsandbox = \"none\"\n",
            5,
            "containers.sandbox",
            "belongs to local pools",
        ),
        (
            "[[containers]]\nname = \"l\"\nsandbox = \"firejail\"\n",
            3,
            "containers.sandbox",
            "unknown sandbox `firejail`",
        ),
        (
            "max_agents = 1\n[sandbox]\nread = [\"/opt\"]\nwrite = [\"/srv\"]\n",
            4,
            "sandbox.write",
            "unknown",
        ),
        (
            "[sandbox]\nread = [\"/opt\",\n  \"toolchain/bin\"]\n",
            3,
            "sandbox.read",
            "`toolchain/bin` is not an absolute path",
        ),
        (
            "[sandbox]\nread = [\"/\"]\n",
            2,
            "sandbox.read",
            "visible read-only already",
        ),
        (
            "[sandbox]\nread = [\"/p/vendor\"]\n",
            2,
            "sandbox.read",
            "inside the repository",
        ),
        (
            "[sandbox]\nread = \"/opt\"\n",
            2,
            "sandbox.read",
            "expected",
        ),
        (
            "[sandbox]\nnetwork = \"bridge\"\n",
            2,
            "sandbox.network",
            "unknown network `bridge`",
        ),
    ];
    for (text, line, field, says) in cases {
        let e = parse_str(text).unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::BadInput, "{text:?}");
        let e = e.to_string();
        assert!(
            e.contains(&format!("flocks.toml:{line}:")) && e.contains(field) && e.contains(says),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn kap_project_alias() {
    let c = parse_str("[[containers]]\nname = \"d\"\nbackend = \"docker\"\nkap_project = \"/x\"\n")
        .unwrap();
    match &c.pools[0].backend {
        BackendConfig::Docker(d) => assert_eq!(d.project.as_deref(), Some(Path::new("/x"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn notify_tables() {
    let c = parse_str(
            "[[notify]]\non = [\"needs_attention\", \"run_finished\", \"run_finished\"]\n\
             command = [\"notify-send\", \"flocks\"]\n\n\
             [[notify]]\non = [\"finished\"]\nwebhook = \"https://ntfy.sh/topic\"\nformat = \"text\"\n\
             headers_env = { Authorization = \"NTFY_TOKEN\" }\ntimeout_secs = 2.5\ncoalesce_secs = 0\n",
        )
        .unwrap();
    assert_eq!(c.notify.len(), 2);
    assert_eq!(c.notify[0].on, vec!["needs_attention", "run_finished"]);
    assert_eq!(c.notify[0].timeout, Duration::from_secs(10));
    assert_eq!(c.notify[0].coalesce, Duration::from_secs(5));
    assert!(
        matches!(&c.notify[0].target, NotifyTarget::Command { argv } if argv == &["notify-send", "flocks"])
    );
    assert_eq!(c.notify[1].number, 2);
    assert_eq!(c.notify[1].timeout, Duration::from_millis(2500));
    assert_eq!(c.notify[1].coalesce, Duration::ZERO);
    match &c.notify[1].target {
        NotifyTarget::Webhook {
            url,
            format,
            headers,
        } => {
            assert_eq!(url, "https://ntfy.sh/topic");
            assert_eq!(*format, WebhookFormat::Text);
            assert_eq!(headers[0].name, "Authorization");
            assert_eq!(headers[0].env, "NTFY_TOKEN");
            assert_eq!(headers[0].line, 9);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.notify[1].target.describe(), "webhook to ntfy.sh");
}

#[test]
fn notify_mistakes_name_the_line_and_field() {
    let cases = [
        (
            "[[notify]]\non = [\"finished\", \"finnished\"]\ncommand = [\"x\"]\n",
            2,
            "notify.on",
            "unknown event kind `finnished`",
        ),
        (
            "[[notify]]\non = [\"activity\"]\ncommand = [\"x\"]\n",
            2,
            "notify.on",
            "`activity` is not sent",
        ),
        (
            "\n[[notify]]\ncommand = [\"x\"]\n",
            2,
            "notify.on",
            "notify #1 is sent nothing",
        ),
        (
            "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\nwebhook = \"https://e.x/\"\n",
            4,
            "notify.webhook",
            "both `command` and `webhook`",
        ),
        (
            "[[notify]]\non = [\"finished\"]\n",
            1,
            "notify.command",
            "needs `command`",
        ),
        (
            "[[notify]]\non = [\"finished\"]\nwebhook = \"ntfy.sh/topic\"\n",
            3,
            "notify.webhook",
            "not a URL",
        ),
        (
            "[[notify]]\non = [\"finished\"]\nwebhook = \"file:///etc/passwd\"\n",
            3,
            "notify.webhook",
            "`file:` URLs are not posted to",
        ),
        (
            "[[notify]]\non = [\"finished\"]\nwebhook = \"https://e.x/\"\nformat = \"xml\"\n",
            4,
            "notify.format",
            "unknown format `xml`",
        ),
        (
            "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\nformat = \"text\"\n",
            4,
            "notify.format",
            "is for a webhook",
        ),
        (
            "[[notify]]\non = [\"finished\"]\nwebhook = \"https://e.x/\"\nheaders_env = { \"Bad Header\" = \"T\" }\n",
            4,
            "notify.headers_env",
            "not an HTTP header name",
        ),
        (
            "[[notify]]\non = [\"finished\"]\nwebhook = \"https://e.x/\"\nheaders_env = { Authorization = \"Bearer abc\" }\n",
            4,
            "notify.headers_env",
            "not an environment variable name",
        ),
        (
            "[[notify]]\non = [\"finished\"]\ncommand = []\n",
            3,
            "notify.command",
            "non-empty argv",
        ),
        (
            "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\ntimeout_secs = 0\n",
            4,
            "notify.timeout_secs",
            "more than 0",
        ),
        (
            "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\nretries = 3\n",
            4,
            "retries",
            "",
        ),
    ];
    for (text, line, field, says) in cases {
        let e = parse_str(text).unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::BadInput);
        let e = e.to_string();
        assert!(
            e.contains(&format!("flocks.toml:{line}:")) && e.contains(field) && e.contains(says),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn a_notify_script_is_found_from_this_file_and_kept_out_of_agents_reach() {
    let c =
        parse_str("[[notify]]\non = [\"finished\"]\ncommand = [\"./hooks/notify.sh\", \"x\"]\n")
            .unwrap();
    assert!(
        matches!(&c.notify[0].target, NotifyTarget::Command { argv } if argv[0] == "/p/hooks/notify.sh")
    );
    let docker = "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\n\n";
    let e = err(&format!(
        "{docker}[[notify]]\non = [\"finished\"]\ncommand = [\"./hooks/notify.sh\"]\n"
    ));
    assert!(
        e.contains("flocks.toml:8")
            && e.contains("notify.command")
            && e.contains("in the repository"),
        "{e}"
    );
    let e = err(&format!(
        "{docker}[[notify]]\non = [\"finished\"]\ncommand = [\"python3\", \"/p/sub/../notify.py\"]\n"
    ));
    assert!(
        e.contains("`/p/sub/../notify.py` is in the repository"),
        "{e}"
    );
    let c = parse_str(&format!(
            "{docker}[[notify]]\non = [\"finished\"]\ncommand = [\"/usr/local/bin/notify\", \"flocks\"]\n"
        ))
        .unwrap();
    assert_eq!(c.notify.len(), 1);
}

#[test]
fn proxy_and_network_tables() {
    let d = parse_str("").unwrap();
    assert!(d.network.is_none(), "no [network]: open");
    assert_eq!(d.proxy.upstream, None);
    assert_eq!(d.proxy.listen.to_string(), "127.0.0.1:0");
    let c = parse_str(
            "[proxy]\nupstream = \"http://127.0.0.1:9/base\"\nlisten = \"0.0.0.0:7878\"\n[network]\nallow = [\"pypi.org\", \"*.example.com\", \"10.0.0.1:8080\"]\nnotify_denied = true\n",
        )
        .unwrap();
    assert_eq!(c.proxy.upstream.as_deref(), Some("http://127.0.0.1:9/base"));
    assert_eq!(c.proxy.listen.port(), 7878);
    let n = c.network.unwrap();
    assert!(n.notify_denied);
    assert!(n.allows("pypi.org", 443) && n.allows("x.example.com", 1));
    assert!(!n.allows("10.0.0.1", 80) && !n.allows("example.com", 443));
    let empty = parse_str("[network]\n").unwrap().network.unwrap();
    assert!(empty.allow.is_empty() && !empty.allows("pypi.org", 443));

    for (text, says) in [
        (
            "[network]\nallow = [\"pypi.org\",\n  \"https://x.org\"]\n",
            "flocks.toml:3: field `network.allow`: `https://x.org` is not a host",
        ),
        (
            "[network]\nallowed = [\"pypi.org\"]\n",
            "flocks.toml:2: field `network.allowed`",
        ),
        (
            "[proxy]\nupstrem = \"https://x\"\n",
            "flocks.toml:2: field `proxy.upstrem`",
        ),
        (
            "[proxy]\nupstream = \"ftp://x.org\"\n",
            "flocks.toml:2: field `proxy.upstream`: `ftp://x.org` is a ftp: URL",
        ),
        (
            "\n[proxy]\nlisten = \"localhost\"\n",
            "flocks.toml:3: field `proxy.listen`: `localhost` is not an address",
        ),
        (
            "[network]\nallow = [\"*.com\"]\n",
            "flocks.toml:2: field `network.allow`",
        ),
    ] {
        let e = err(text);
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn agents_that_need_the_proxy_must_be_able_to_reach_it() {
    let bwrap = "[[credentials]]\nname = \"k\"\nenv = \"K\"\n[[containers]]\nname = \"box\"\nsandbox = \"bwrap\"\ncredential = \"k\"\n";
    let e = err(&format!("{bwrap}[sandbox]\nnetwork = \"none\"\n"));
    assert!(e.contains("flocks.toml:9: field `sandbox.network`"), "{e}");
    assert!(e.contains("use \"proxy\""), "{e}");
    let c = parse_str(bwrap).unwrap();
    assert_eq!(c.sandbox.network, SandboxNetwork::Proxy);
    assert!(c.pools[0].egress_enforced(c.sandbox.network));
    assert!(!c.pools[0].egress_enforced(SandboxNetwork::Host));
    // Without a credential, "none" is no network at all.
    parse_str(
        "[[containers]]\nname = \"box\"\nsandbox = \"bwrap\"\n[sandbox]\nnetwork = \"none\"\n",
    )
    .unwrap();

    let slurm = "[[credentials]]\nname = \"k\"\nenv = \"K\"\n[[containers]]\nname = \"hpc\"\nbackend = \"slurm\"\ncredential = \"k\"\n";
    let e = err(slurm);
    assert!(e.contains("field `proxy.listen`"), "{e}");
    assert!(e.contains("pool hpc's Slurm compute nodes"), "{e}");
    let e = err(&format!("{slurm}[proxy]\nlisten = \"127.0.0.1:7878\"\n"));
    assert!(e.contains("flocks.toml:9: field `proxy.listen`"), "{e}");
    parse_str(&format!("{slurm}[proxy]\nlisten = \"0.0.0.0:0\"\n")).unwrap();
    // Its own login and no [network]: nothing to reach.
    parse_str("[[containers]]\nname = \"hpc\"\nbackend = \"slurm\"\n").unwrap();
    let e = err("[[containers]]\nname = \"hpc\"\nbackend = \"slurm\"\n[network]\nallow = []\n");
    assert!(e.contains("[network] is set"), "{e}");
}

#[test]
fn docker_egress_is_enforced_only_for_clone_mode_without_a_network() {
    let enforced = |pool: &str| {
        let c = parse_str(&format!(
            "[[containers]]\nname = \"d\"\nbackend = \"docker\"\n{pool}"
        ))
        .unwrap();
        c.pools[0].egress_enforced(c.sandbox.network)
    };
    assert!(
        enforced("image = \"img\"\n"),
        "flocks up makes it without a network"
    );
    assert!(enforced("container = \"c\"\nnetwork = \"none\"\n"));
    assert!(
        !enforced("container = \"c\"\n"),
        "a devcontainer's own network"
    );
    assert!(!enforced("image = \"img\"\nnetwork = \"host\"\n"));
    assert!(!enforced("image = \"img\"\nnetwork = \"bridge\"\n"));
    assert!(!enforced(
        "image = \"img\"\nworkspace = \"mount\"\nnetwork = \"none\"\n"
    ));
}
