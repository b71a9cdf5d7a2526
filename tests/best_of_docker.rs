//! Best of N on the docker backend: variants run in the container like any
//! task, and the judgement moves the task's branch on the host while another
//! agent still runs in the container, which the host `.git` guard leaves be.

#[path = "support/docker.rs"]
mod dsupport;
mod support;

use dsupport::{Ctr, CtrSpec, DockerProject, ready};
use serde_json::json;
use support::{code, text};

#[test]
fn variants_in_a_container_and_a_judgement_beside_a_running_agent() {
    ready();
    let p = DockerProject::new();
    let c = Ctr::start(CtrSpec {
        project: &p,
        label: true,
        env: vec![],
    });
    p.config(
        "",
        &format!(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\nworkspace = \"mount\"\ncontainer = \"{}\"\nmax_worktrees = 3\n",
            c.name
        ),
    );
    p.t.tasks(&[
        json!({"id": "t", "best_of": 2, "prompt": "@fake sleep 0.5\n\
            @fake if-env FLOCKS_TASK t@v1 bash 'seq 30 > n.txt && git add n.txt && git commit -qm thirty'\n\
            @fake if-env FLOCKS_TASK t@v2 bash 'seq 3 > n.txt && git add n.txt && git commit -qm three'\n"}),
        json!({"id": "slow", "prompt": "@fake sleep 6\n@fake commit slow.txt done"}),
    ]);
    let o = p.t.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let t = p.t.task("t");
    assert_eq!(t["best_of"]["judgement"]["winner"], 2, "{t:#}");
    assert_eq!(t["variants"][0]["attempts"][0]["pool"], "dev");
    // The judgement moved flocks/t while `slow` ran in the container: the
    // guard kept the move, and `slow` finished clean.
    assert_eq!(
        p.git(&["rev-parse", "flocks/t"]),
        p.git(&["rev-parse", "flocks/t@v2"])
    );
    assert_eq!(p.t.status_of("slow"), "success");
    assert_eq!(p.git(&["show", "flocks/t:n.txt"]), "1\n2\n3");
}
