//! Tests of the sandbox's view: what it hides and shows.

use super::*;

fn config(extra: &str) -> (tempfile::TempDir, Config) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    crate::git::testing::init_repo(&repo);
    let path = repo.join("flocks.toml");
    std::fs::write(
        &path,
        format!("[[containers]]\nname = \"s\"\nsandbox = \"bwrap\"\n{extra}"),
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    (tmp, c)
}

#[test]
fn the_view_hides_homes_temp_run_and_the_repository_after_the_reads() {
    let (tmp, c) = config("[sandbox]\nread = [\"/usr/share\"]\n");
    let view = View::new(&c).unwrap();
    let layout = Layout {
        root: tmp.path().join("state/sandbox"),
    };
    let s = view.sandbox(Path::new("/usr/bin/bwrap"), Some((&layout, "t1")));
    for hidden in ["/root/.ssh", "/tmp/x", "/var/tmp/x", "/run/docker.sock"] {
        assert!(!s.shows(Path::new(hidden)), "{hidden} shows");
    }
    // The repository is under /tmp here (hidden already); its files show
    // nowhere, whatever the order.
    assert!(!s.shows(&canonical(&c.workspace.repo).join(".git/config")));
    assert!(s.shows(Path::new("/usr/share/doc")));
    assert!(s.shows(Path::new("/usr/bin/git")));
    // The task's own directories are bound at the inner places.
    let words: Vec<String> = s
        .prefix()
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let joined = words.join(" ");
    assert!(
        joined.contains(&format!(
            "--bind {} {INNER_WORK}",
            layout.work("t1").display()
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "--ro-bind {} {INNER_BASE}",
            layout.base().display()
        )),
        "{joined}"
    );
    assert!(joined.contains("--cap-drop ALL"), "{joined}");
    // The private places first, then the binds.
    let read_at = words.iter().position(|w| w == "/usr/share").unwrap();
    assert!(read_at > words.iter().position(|w| w == "/tmp").unwrap());
}

#[test]
fn a_read_path_above_the_repository_or_the_home_shows_neither() {
    let (tmp, mut c) = config("");
    c.sandbox.read = vec![canonical(tmp.path())];
    let mut view = View::new(&c).unwrap();
    // A home inside the read path, and a read path inside the home.
    view.home = canonical(tmp.path()).join("home");
    view.reads.push(view.home.join(".cargo"));
    let layout = Layout {
        root: PathBuf::from("/nonexistent/sandbox"),
    };
    let s = view.sandbox(Path::new("/usr/bin/bwrap"), Some((&layout, "t1")));
    assert!(s.shows(&canonical(tmp.path())));
    let repo = canonical(&c.workspace.repo);
    assert!(!s.shows(&repo.join("README.md")));
    assert!(!s.shows(&repo.join(".git/hooks")));
    assert!(!s.shows(&repo.join(".flocks/logs")));
    assert!(
        s.mounts.contains(&Mount::Empty(repo.clone())),
        "{:?}",
        s.mounts
    );
    assert!(!s.shows(&view.home.join(".ssh/id_ed25519")));
    assert!(s.shows(&view.home.join(".cargo/bin/cargo")));
    let at = |d: &Path| s.mounts.iter().position(|m| m.dest() == d).unwrap();
    assert!(at(&canonical(tmp.path())) < at(&view.home));
    assert!(at(&view.home) < at(&view.home.join(".cargo")));
}

#[test]
fn an_agent_program_in_a_hidden_place_is_shown_and_one_in_the_repository_alone() {
    let (tmp, mut c) = config("");
    c.sandbox.read = vec![canonical(tmp.path())];
    let view = View::new(&c).unwrap();
    let bin = tmp.path().join("tools/agent");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    let in_repo = c.workspace.repo.join("agent.sh");
    std::fs::write(&in_repo, "#!/bin/sh\n").unwrap();
    let mut s = view.sandbox(Path::new("/usr/bin/bwrap"), None);
    s.mounts.push(Mount::Tmpfs(canonical(tmp.path())));
    let run = view.show_program(&mut s, &bin);
    assert_eq!(run, canonical(&bin));
    assert!(s.shows(&canonical(&bin)));
    let run = view.show_program(&mut s, &in_repo);
    assert!(s.shows(&run));
    assert!(!s.shows(&canonical(&c.workspace.repo).join("README.md")));
}
