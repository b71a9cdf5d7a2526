//! A transport that runs the helper as a process on this machine, with
//! pipes for its stdin and stdout: `<prefix...> sh -c <script> flocks-helper`
//! with its root in the environment. The prefix is what confines it (a
//! `bwrap ... --` command line), or nothing (tests).

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use super::session::{CallError, Input, Transport};
use super::{ROOT_VAR, Reply, ReplyError, SCRIPT, Spec};
use crate::backend::BoxFuture;
use crate::git::intake::Want;

/// The helper as a local process.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    /// The command line before `sh -c <script> flocks-helper` (empty: none).
    pub prefix: Vec<OsString>,
    /// Its environment, added to flocks' own (`env_clear` is the prefix's
    /// business).
    pub env: Vec<(OsString, OsString)>,
    /// The helper's root directory, as the helper sees it.
    pub root: String,
    /// How long one call may take.
    pub limit: Duration,
}

impl Process {
    fn command(&self) -> tokio::process::Command {
        let mut argv: Vec<OsString> = self.prefix.clone();
        argv.extend(["/bin/sh", "-c", SCRIPT, "flocks-helper"].map(OsString::from));
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(ROOT_VAR, &self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        c
    }
}

/// The helper's last words on stderr (its `flocks-helper: error: ...`).
pub(crate) fn last_words(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.strip_prefix("flocks-helper: ").unwrap_or(l).to_string())
        .unwrap_or_else(|| "no message".into())
}

impl Transport for Process {
    fn call<'a>(
        &'a self,
        input: Input,
        spec: &'static Spec,
        want: Option<&'a Want>,
    ) -> BoxFuture<'a, Result<Reply, CallError>> {
        Box::pin(async move {
            let child = self
                .command()
                .spawn()
                .map_err(|e| CallError::Lost(format!("cannot start the helper: {e}")))?;
            let (reply, err, status) =
                super::pipe::exchange(child, &input.header, input.body, spec, want, self.limit)
                    .await
                    .ok_or_else(|| {
                        CallError::Lost(format!(
                            "the helper did not answer within {}s",
                            self.limit.as_secs()
                        ))
                    })?;
            match (reply, status) {
                (Err(ReplyError::Intake(e)), _) => Err(CallError::Intake(e)),
                (reply, Ok(s)) if s.success() => Ok(reply?),
                (_, Ok(_)) => Err(CallError::Failed(last_words(&err))),
                (_, Err(e)) => Err(CallError::Lost(format!("the helper: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::session::{Known, Session};
    use super::*;
    use crate::backend::PrepareJob;
    use crate::git::intake::Check;

    use crate::git::testing::git;

    struct Fixture {
        tmp: tempfile::TempDir,
        host: std::path::PathBuf,
        process: Process,
        known: Known,
        env: Vec<(String, String)>,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir(&host).unwrap();
        crate::git::testing::init_repo(&host);
        let root = tmp.path().join("agent-side/flocks/key");
        Fixture {
            process: Process {
                prefix: Vec::new(),
                env: Vec::new(),
                root: root.display().to_string(),
                limit: Duration::from_secs(60),
            },
            host,
            tmp,
            known: Known::default(),
            env: vec![
                ("GIT_AUTHOR_NAME".into(), "A".into()),
                ("GIT_AUTHOR_EMAIL".into(), "a@example.com".into()),
                ("GIT_COMMITTER_NAME".into(), "A".into()),
                ("GIT_COMMITTER_EMAIL".into(), "a@example.com".into()),
            ],
        }
    }

    impl Fixture {
        fn session(&self) -> Session<'_> {
            Session {
                transport: &self.process,
                repo_dir: &self.host,
                env: &self.env,
                max_bytes: 50 << 20,
                known: &self.known,
            }
        }
    }

    /// The whole round trip over pipes: the start commit's objects in, a
    /// worktree there, the agent's commit and its leftovers back through
    /// the intake, the branch moved here; a second task reuses what the
    /// agent side has; salvage after a "crash"; release.
    #[tokio::test]
    async fn a_task_round_trip_over_pipes() {
        let f = fixture();
        let s = f.session();
        let root = super::super::session::init(&f.process, "abc")
            .await
            .unwrap();
        assert_eq!(root.root, f.process.root);
        assert!(!root.setup_done);
        let start = git2::Oid::from_str(&git(&f.host, &["rev-parse", "HEAD"])).unwrap();
        git(&f.host, &["branch", "flocks/t1", "HEAD"]);
        s.send_start("t1", start).await.unwrap();
        let p = s.prepare("t1", "flocks/t1", start).await.unwrap();
        assert!(p.worktree.ends_with("/worktrees/t1"), "{p:?}");
        let wt = std::path::PathBuf::from(&p.worktree);
        assert_eq!(
            std::fs::read_to_string(wt.join("README.md")).unwrap(),
            "hello\n"
        );
        // The agent: one commit, one file left uncommitted.
        std::fs::write(wt.join("a.txt"), "a").unwrap();
        git(&wt, &["add", "a.txt"]);
        git(&wt, &["commit", "-q", "-m", "a"]);
        std::fs::write(wt.join("left.txt"), "l").unwrap();
        s.mark("t1", "abc").await.unwrap();
        let fin = s
            .finish(
                "t1",
                "flocks/t1",
                1,
                &start.to_string(),
                &start.to_string(),
                None,
                "flocks: t1",
            )
            .await
            .unwrap();
        assert!(fin.leftovers_committed);
        assert_eq!(fin.new_commits, 2);
        assert_eq!(git(&f.host, &["rev-parse", "flocks/t1"]), fin.tip);
        assert_eq!(git(&f.host, &["show", "flocks/t1:left.txt"]), "l");
        assert_eq!(
            git(&f.host, &["reflog", "-1", "--format=%gs", "flocks/t1"]),
            "flocks: t1"
        );
        // The next attempt keeps the worktree and its setup mark.
        let p = s
            .prepare("t1", "flocks/t1", git2::Oid::from_str(&fin.tip).unwrap())
            .await
            .unwrap();
        assert_eq!(p.setup_mark.as_deref(), Some("abc"));

        // flocks "crashed" mid-attempt: the agent's work is only there.
        std::fs::write(wt.join("b.txt"), "b").unwrap();
        git(&wt, &["add", "b.txt"]);
        git(&wt, &["commit", "-q", "-m", "b"]);
        std::fs::write(wt.join("c.txt"), "c").unwrap();
        let job = PrepareJob {
            task: "t1".into(),
            branch: "flocks/t1".into(),
            base: "main".into(),
            fresh: false,
            origin: Some(start.to_string()),
        };
        let note = s
            .salvage(&job, None, "the test host")
            .await
            .unwrap()
            .unwrap();
        assert!(note.contains("recovered 2 commits"), "{note}");
        assert_eq!(git(&f.host, &["show", "flocks/t1:c.txt"]), "c");
        // Nothing new: nothing to say.
        assert!(
            s.salvage(&job, None, "the test host")
                .await
                .unwrap()
                .is_none()
        );

        s.release("t1").await.unwrap();
        assert!(!wt.exists());
    }

    /// A transport that counts its calls.
    struct Counting<'a>(&'a Process, std::sync::atomic::AtomicUsize);

    impl Transport for Counting<'_> {
        fn call<'a>(
            &'a self,
            input: Input,
            spec: &'static Spec,
            want: Option<&'a Want>,
        ) -> BoxFuture<'a, Result<Reply, CallError>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.call(input, spec, want)
        }
    }

    /// `prepare_ready`: the start sent when missing, one call when it is
    /// there, an interrupted attempt's work taken back first.
    #[tokio::test]
    async fn prepare_ready_takes_as_few_calls_as_the_work_allows() {
        use std::sync::atomic::Ordering;
        let f = fixture();
        let counting = Counting(&f.process, Default::default());
        let s = Session {
            transport: &counting,
            repo_dir: &f.host,
            env: &f.env,
            max_bytes: 50 << 20,
            known: &f.known,
        };
        super::super::session::init(&f.process, "").await.unwrap();
        let start = git2::Oid::from_str(&git(&f.host, &["rev-parse", "HEAD"])).unwrap();
        git(&f.host, &["branch", "flocks/t", "HEAD"]);
        let job = PrepareJob {
            task: "t".into(),
            branch: "flocks/t".into(),
            base: "main".into(),
            fresh: false,
            origin: Some(start.to_string()),
        };
        // The start is not there: prepare, receive, prepare.
        let (p, at, note) = s
            .prepare_ready(&job, start, true, None, "here")
            .await
            .unwrap();
        assert_eq!((at, note), (start, None));
        assert_eq!(counting.1.swap(0, Ordering::SeqCst), 3);
        let wt = std::path::PathBuf::from(&p.worktree);
        // It is there now: one call.
        s.prepare_ready(&job, start, true, None, "here")
            .await
            .unwrap();
        assert_eq!(counting.1.swap(0, Ordering::SeqCst), 1);
        // An interrupted attempt left a commit and a file: it comes back
        // first, and the attempt starts from it.
        std::fs::write(wt.join("b.txt"), "b").unwrap();
        git(&wt, &["add", "b.txt"]);
        git(&wt, &["commit", "-q", "-m", "b"]);
        std::fs::write(wt.join("c.txt"), "c").unwrap();
        let (_, at, note) = s
            .prepare_ready(&job, start, true, None, "here")
            .await
            .unwrap();
        assert!(note.unwrap().contains("recovered 2 commits"));
        assert_eq!(at.to_string(), git(&f.host, &["rev-parse", "flocks/t"]));
        assert_eq!(git(&f.host, &["show", "flocks/t:c.txt"]), "c");
        assert_eq!(counting.1.swap(0, Ordering::SeqCst), 2);
        // Without salvage (a fresh attempt) the work there is checked out over.
        std::fs::write(wt.join("d.txt"), "d").unwrap();
        let (_, at2, note) = s
            .prepare_ready(&job, at, false, None, "here")
            .await
            .unwrap();
        assert_eq!((at2, note), (at, None));
        assert!(!wt.join("d.txt").exists());
    }

    #[tokio::test]
    async fn include_sends_files_and_hostile_work_is_refused() {
        let f = fixture();
        let s = f.session();
        super::super::session::init(&f.process, "").await.unwrap();
        let start = git2::Oid::from_str(&git(&f.host, &["rev-parse", "HEAD"])).unwrap();
        git(&f.host, &["branch", "flocks/t2", "HEAD"]);
        s.send_start("t2", start).await.unwrap();
        let p = s.prepare("t2", "flocks/t2", start).await.unwrap();
        let wt = std::path::PathBuf::from(&p.worktree);
        // .worktreeinclude's files travel as a tar stream.
        std::fs::write(f.host.join(".worktreeinclude"), ".env\n").unwrap();
        std::fs::write(f.host.join(".gitignore"), ".env\n.worktreeinclude\n").unwrap();
        std::fs::write(f.host.join(".env"), "K=V\n").unwrap();
        let set = crate::git::include::collect(&f.host, &[]).unwrap().unwrap();
        let copied = s.include("t2", Arc::new(set)).await.unwrap();
        assert_eq!(copied.written.len(), 1);
        assert_eq!(std::fs::read_to_string(wt.join(".env")).unwrap(), "K=V\n");
        // A hostile agent rewrites history below the origin: refused, and
        // the branch here stays where it was.
        std::fs::write(wt.join("x.txt"), "x").unwrap();
        git(&wt, &["add", "x.txt"]);
        git(&wt, &["commit", "-q", "--amend", "-m", "rewritten"]);
        let e = s
            .finish(
                "t2",
                "flocks/t2",
                1,
                &start.to_string(),
                &start.to_string(),
                None,
                "r",
            )
            .await
            .unwrap_err();
        match e {
            CallError::Intake(e) => assert_eq!(e.check(), Some(Check::Range), "{e}"),
            e => panic!("{e}"),
        }
        assert_eq!(git(&f.host, &["rev-parse", "flocks/t2"]), start.to_string());
        // A helper that fails says why.
        let e = s
            .prepare("nope", "flocks/nope", git2::Oid::ZERO_SHA1)
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Failed(_)), "{e}");
        let _ = &f.tmp;
    }
}
