//! Tests of the slurm backend: the compute nodes' proxy address, the remote dir, stale jobs.

use super::*;

#[test]
fn compute_nodes_get_the_listen_ip_or_the_login_hostname() {
    let at = |a: &str, h: Option<&str>| {
        node_proxy_address("hpc", a.parse().unwrap(), h.map(str::to_string))
            .map_err(|e| e.to_string())
    };
    assert_eq!(at("10.1.2.3:7878", Some("login")).unwrap(), "10.1.2.3:7878");
    assert_eq!(at("0.0.0.0:7878", Some("login1")).unwrap(), "login1:7878");
    assert_eq!(at("[::]:7878", Some("login1")).unwrap(), "login1:7878");
    assert_eq!(at("[fd00::1]:7878", None).unwrap(), "[fd00::1]:7878");
    assert!(
        at("127.0.0.1:7878", Some("login"))
            .unwrap_err()
            .contains("[proxy] listen")
    );
    assert!(at("0.0.0.0:1", None).unwrap_err().contains("no hostname"));
}

#[test]
fn remote_dir_is_expanded_here() {
    let home = std::env::var("HOME").unwrap();
    assert_eq!(
        expand_remote_dir("~/flocks").unwrap(),
        format!("{home}/flocks")
    );
    assert_eq!(
        expand_remote_dir("${HOME}/x/").unwrap(),
        format!("{home}/x")
    );
    assert_eq!(expand_remote_dir("$HOME/x").unwrap(), format!("{home}/x"));
    let e = expand_remote_dir("/s/$FLOCKS_TEST_NO_SUCH_VAR/x").unwrap_err();
    assert!(e.contains("FLOCKS_TEST_NO_SUCH_VAR"), "{e}");
    assert!(
        expand_remote_dir("rel/dir")
            .unwrap_err()
            .contains("absolute")
    );
    assert!(expand_remote_dir("/a/../b").is_err());
    assert!(expand_remote_dir("/a/${HOME").is_err());
}

#[test]
fn stale_jobs_are_this_projects_of_ended_runs() {
    let key = "0123456789ab";
    let text = format!(
        "10|flocks-app-t1-1|flocks project={key} run=r1\n\
             11|flocks-app-t2-1|flocks project={key} run=r2\n\
             12|flocks-app-t3-1|flocks project=ffffffffffff run=r1\n\
             13|other-job|flocks project={key} run=r1\n\
             14|flocks-app-t4-1|(null)\n\
             15|flocks-app-t5-1|flocks project={key} run=none\n\
             16|flocks-app-check|flocks project={key} run=check\n"
    );
    assert_eq!(stale_jobs(&text, "app", key, "r2"), vec!["10".to_string()]);
    assert!(stale_jobs(&text, "app", key, "r1").contains(&"11".to_string()));
}

#[test]
fn options_and_time_limit() {
    let cfg = SlurmConfig {
        partition: Some("debug".into()),
        account: Some("lab".into()),
        qos: None,
        sbatch_args: vec!["--mem=8G".into()],
        remote_dir: "~/flocks".into(),
        setup: Vec::new(),
    };
    assert_eq!(
        job_options(&cfg, Some(7)),
        vec!["--partition=debug", "--account=lab", "--time=7", "--mem=8G"]
    );
}
