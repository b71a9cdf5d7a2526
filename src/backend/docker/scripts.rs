//! The small programs flocks runs inside a container: the reaper (perl), and
//! the `sh` wrapper and killer it falls back to where there is no perl.
//!
//! Docker has no API to kill an exec (moby#35703). The reaper
//! (`reaper.pl`, its protocol in its header) is the agent exec's first
//! process: it makes itself the child subreaper, so every descendant of the
//! agent reparents to it whatever the agent does (setsid, double forks,
//! removing its environment tag), runs the agent as the exec user, who cannot
//! signal it (it runs as root), and stops the whole tree when the agent exits,
//! when flocks says so on its stdin, and when that stream ends because flocks
//! is gone. A PID namespace or a cgroup would need privileges a stock
//! devcontainer does not give (`unshare` is refused by docker's default
//! seccomp profile, `/sys/fs/cgroup` is read-only); prctl needs none.
//!
//! Without perl, every process of an
//! attempt carries `FLOCKS_ATTEMPT=<tag>` in its environment (inherited through
//! setsid, double forks and reparenting), and stopping an attempt is a second
//! exec, the killer, that finds them in `/proc/*/environ` and applies the
//! policy: TERM, grace, KILL. It must run as the agent's user: without
//! CAP_SYS_PTRACE even root cannot read another user's environ.
//!
//! Only fixed text is ever a script; data (the agent's argv, the tag, the
//! variables to unset) travels as argv elements or in the environment.

/// The reaper: `perl -e REAPER -- <user> <grace secs> <program> <args>...`.
pub(crate) const REAPER: &str = include_str!("reaper.pl");

/// The reaper exec's argv.
pub(crate) fn reaper_argv(
    user: &str,
    grace_secs: u64,
    program: String,
    args: &[String],
) -> Vec<String> {
    let mut argv = vec![
        "perl".to_string(),
        "-e".into(),
        REAPER.into(),
        "--".into(),
        user.into(),
        grace_secs.to_string(),
        program,
    ];
    argv.extend(args.iter().cloned());
    argv
}

/// What the reaper reads first on its stdin: the prompt's length, the prompt.
pub(crate) fn reaper_input(prompt: &[u8]) -> Vec<u8> {
    let mut v = format!("{}\n", prompt.len()).into_bytes();
    v.extend_from_slice(prompt);
    v
}

/// The probe for the reaper, run as root: perl is there, and the reaper can
/// be the subreaper and become `user`.
pub(crate) fn reaper_probe(user: &str) -> Vec<String> {
    let mut argv = reaper_argv(user, 0, "true".into(), &[]);
    argv[5] = "probe".into();
    argv
}

/// The agent exec without perl: `sh -c AGENT flocks-agent <program> <args>...`. Unsets the
/// container's own variables listed in `FLOCKS_UNSET` (an exec's Env can set
/// but not remove), then becomes the agent.
pub(crate) const AGENT: &str = r#"for v in $FLOCKS_UNSET; do unset "$v"; done
unset FLOCKS_UNSET
exec "$@"
"#;

/// argv[0] of the agent exec's shell, as `ps` shows it.
pub(crate) const AGENT_NAME: &str = "flocks-agent";

/// The killer exec: `sh -c KILLER flocks-killer <exact|prefix> <tag> <grace secs>`.
/// The tag is in argv, not in the environment, so the killer never matches
/// itself. Exit 0: nothing of the attempt is left (among the processes it
/// could inspect: non-dumpable ones, such as ssh-agent, hide their
/// environment, and are listed); 1: survivors.
pub(crate) const KILLER: &str = r#"mode="$1"; tag="$2"; grace="${3:-5}"; me=$$
myuid=$(id -u)
matches() {
  v=$(printf '%s\n' "$1" | grep -m1 '^FLOCKS_ATTEMPT=') || return 1
  v=${v#FLOCKS_ATTEMPT=}
  if [ "$mode" = prefix ]; then
    case "$v" in "$tag"*) return 0;; esac
    return 1
  fi
  [ "$v" = "$tag" ]
}
tagged() {
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$me" ] && continue
    if e=$(tr '\0' '\n' 2>/dev/null < "$d/environ"); then
      case "$e" in *FLOCKS_ATTEMPT=*) matches "$e" && echo "$p";; esac
    else
      st=$(cat "$d/stat" 2>/dev/null) || continue
      st=${st##*) }; [ "${st%% *}" = Z ] && continue
      uid=$(while read -r k v _; do [ "$k" = Uid: ] && echo "$v"; done < "$d/status" 2>/dev/null)
      { [ "$myuid" = 0 ] || [ "$uid" = "$myuid" ]; } && echo "?$p"
    fi
  done
}
scan() {
  all=$(tagged)
  pids=$(printf '%s\n' $all | grep -v '^?')
  blind=$(printf '%s\n' $all | grep '^?' | tr -d '?')
}
sent=" "
deadline=$(( $(date +%s) + grace + (grace > 0) ))
while :; do
  scan
  if [ -z "$pids" ]; then
    [ -n "$blind" ] && echo "flocks-killer: could not inspect:" $blind
    echo "flocks-killer: clean (TERM sent to:$sent)"; exit 0
  fi
  [ "$(date +%s)" -ge "$deadline" ] && break
  for p in $pids; do
    case "$sent" in *" $p "*) ;; *) kill -TERM "$p" 2>/dev/null; sent="$sent$p ";; esac
  done
  sleep 0.2
done
for i in 1 2 3 4 5 6 7 8 9 10; do
  scan
  [ -z "$pids" ] && { echo "flocks-killer: clean after KILL (TERM sent to:$sent)"; exit 0; }
  kill -KILL $pids 2>/dev/null
  sleep 0.1
done
scan
echo "flocks-killer: survivors:" $pids >&2
exit 1
"#;

/// Which processes a killer stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Match {
    /// One attempt: `FLOCKS_ATTEMPT` equals the tag.
    Exact,
    /// Every attempt of a project: `FLOCKS_ATTEMPT` starts with the tag.
    Prefix,
}

/// The killer's argv.
pub(crate) fn killer_argv(m: Match, tag: &str, grace_secs: u64) -> Vec<String> {
    let mode = match m {
        Match::Exact => "exact",
        Match::Prefix => "prefix",
    };
    vec![
        "/bin/sh".into(),
        "-c".into(),
        KILLER.into(),
        "flocks-killer".into(),
        mode.into(),
        tag.into(),
        grace_secs.to_string(),
    ]
}

/// Whether a killer's report says it found processes to stop.
pub(crate) fn stopped_any(report: &str) -> bool {
    report
        .split("TERM sent to:")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .is_some_and(|pids| !pids.trim().is_empty())
}

/// A name `sh` accepts for `unset` (anything else would abort the script).
pub(crate) fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    #[test]
    fn killer_reports() {
        assert!(!stopped_any("flocks-killer: clean (TERM sent to: )\n"));
        assert!(stopped_any(
            "flocks-killer: clean after KILL (TERM sent to: 12 13 )\n"
        ));
    }

    #[test]
    fn var_names() {
        assert!(is_var_name("ANTHROPIC_API_KEY"));
        assert!(is_var_name("_x1"));
        assert!(!is_var_name("1X"));
        assert!(!is_var_name("A-B"));
        assert!(!is_var_name(""));
    }

    #[test]
    fn agent_wrapper_unsets_and_execs() {
        let out = Command::new("/bin/sh")
            .args([
                "-c",
                AGENT,
                AGENT_NAME,
                "/bin/sh",
                "-c",
                "echo \"${GONE-unset} $KEPT $# $1\"",
                "x",
                "a b",
            ])
            .env("GONE", "secret")
            .env("KEPT", "kept")
            .env("FLOCKS_UNSET", "GONE OTHER")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "unset kept 1 a b\n");
    }

    /// The killer on this machine: it stops tagged processes, including ones
    /// in a new session, and leaves others alone.
    #[test]
    fn killer_stops_tagged_processes_only() {
        let tag = format!("test-killer-{}", std::process::id());
        let spawn = |t: &str| {
            Command::new("/bin/sh")
                .args(["-c", "setsid sleep 300 & sleep 301 & wait"])
                .env("FLOCKS_ATTEMPT", t)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut ours = spawn(&format!("{tag}:a:1"));
        let mut other = spawn(&format!("x{tag}:a:1"));
        std::thread::sleep(Duration::from_millis(300));
        let run = |argv: Vec<String>| Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        let out = run(killer_argv(Match::Prefix, &format!("{tag}:"), 2));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(ours.wait().is_ok());
        assert!(
            other.try_wait().unwrap().is_none(),
            "an untagged tree was stopped"
        );
        let out = run(killer_argv(Match::Exact, &format!("x{tag}:a:1"), 0));
        assert_eq!(out.status.code(), Some(0));
        other.wait().unwrap();
        // Nothing tagged survives (the setsid'd sleeps included).
        let left = crate::proc::tagged(&tag);
        assert!(left.is_empty(), "left: {left:?}");
    }

    /// Run the reaper here, as this user, on `script`; returns the child,
    /// its stdin held open, and the file where `script` writes a pid.
    fn reaper(script: &str, d: &tempfile::TempDir) -> (std::process::Child, std::path::PathBuf) {
        use std::io::Write;
        let pidfile = d.path().join("pid");
        let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
        let argv = reaper_argv(
            &me,
            1,
            "/bin/sh".into(),
            &[
                "-c".into(),
                script.into(),
                "x".into(),
                pidfile.display().to_string(),
            ],
        );
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&reaper_input(b"the prompt"))
            .unwrap();
        (child, pidfile)
    }

    fn pid_in(path: &std::path::Path) -> i32 {
        for _ in 0..100 {
            if let Ok(t) = std::fs::read_to_string(path)
                && let Ok(p) = t.trim().parse()
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no pid in {}", path.display());
    }

    fn gone(pid: i32) -> bool {
        // Reaped by the reaper, or a zombie not yet: either way not running.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
            .unwrap_or(true)
    }

    /// The agent gets the prompt; what it detached (new session, no tag) is
    /// stopped when it exits; its exit code is the reaper's.
    #[test]
    fn reaper_stops_detached_processes_when_the_agent_exits() {
        let d = tempfile::tempdir().unwrap();
        let (mut child, pidfile) = reaper(
            "cat; env -u FLOCKS_ATTEMPT setsid sh -c 'echo $$ > \"$1\"; exec sleep 300' x \"$1\" >/dev/null 2>&1 & \
             while [ ! -s \"$1\" ]; do sleep 0.05; done; exit 3",
            &d,
        );
        // The prompt ends at its length: the agent's stdin is closed then,
        // while the reaper's stays open (wait() would close it).
        let pid = pid_in(&pidfile);
        let _held = child.stdin.take();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(3));
        assert!(gone(pid), "the detached process outlived the agent");
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert_eq!(out, "the prompt");
    }

    /// When its stdin ends (flocks is gone), the reaper stops everything.
    #[test]
    fn reaper_stops_everything_when_flocks_goes_away() {
        let d = tempfile::tempdir().unwrap();
        let (mut child, pidfile) = reaper(
            "trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ > \"$1\"; while :; do sleep 1; done' x \"$1\" & sleep 300",
            &d,
        );
        let pid = pid_in(&pidfile);
        drop(child.stdin.take());
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(137), "the agent was killed");
        assert!(gone(pid), "a TERM-ignoring detached process survived");
    }

    #[test]
    fn reaper_probe_succeeds_here() {
        let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
        let argv = reaper_probe(&me);
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
