//! One SSH destination: the `ssh` argv flocks builds for it (the user's options
//! first, then multiplexing, batch mode and keep-alives), the remote helper it
//! installs under `remote_dir`, and the multiplexing masters it stops at the end.
//!
//! Only two kinds of remote command strings exist: the fixed helper invocation
//! and the user's own `setup` commands. Paths from the config are shell-quoted;
//! nothing from a task ever reaches a remote command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The helper script, installed as `<remote_dir>/helper.sh`.
pub(crate) const HELPER: &str = crate::backend::helper::SCRIPT;

/// Keep-alives: a silent host is given up after interval × count seconds.
const ALIVE_INTERVAL: u32 = 15;
const ALIVE_COUNT: u32 = 3;
/// How long a multiplexing master outlives its last client when flocks is killed.
const PERSIST_SECS: u32 = 60;

/// Why a remote operation failed.
#[derive(Debug, Clone)]
pub(crate) enum SshError {
    /// ssh itself failed (exit 255): the host is down, unreachable or refused us.
    Unreachable(String),
    /// The remote side ran and failed.
    Failed(String),
}

impl SshError {
    pub(crate) fn message(&self) -> &str {
        match self {
            SshError::Unreachable(m) | SshError::Failed(m) => m,
        }
    }
}

impl std::error::Error for SshError {}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Where and how to reach one host.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Anything ssh accepts: `user@host`, a `~/.ssh/config` name.
    pub host: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub ssh_options: Vec<String>,
    /// As written in flocks.toml (`~/flocks`); expanded on the host.
    pub remote_dir: String,
}

impl Target {
    /// The host of an `ssh` pool.
    pub(crate) fn from_config(s: &crate::config::SshConfig) -> Target {
        Target {
            host: s.host.clone(),
            port: s.port,
            identity_file: s.identity_file.clone(),
            ssh_options: s.ssh_options.clone(),
            remote_dir: s.remote_dir.clone(),
        }
    }

    /// The ssh options, without the destination. The user's options come
    /// first: for `-o` options, ssh keeps the first value it sees. Err when
    /// no private directory for the multiplexing sockets can be made.
    pub(crate) fn options(&self) -> Result<Vec<String>, SshError> {
        let control = control_dir().map_err(|e| SshError::Unreachable(e.to_string()))?;
        let mut v = self.ssh_options.clone();
        if let Some(p) = self.port {
            v.extend(["-p".into(), p.to_string()]);
        }
        if let Some(i) = &self.identity_file {
            v.extend(["-i".into(), i.display().to_string()]);
        }
        for o in [
            "ControlMaster=auto".to_string(),
            format!("ControlPath={}/%C", control.display()),
            format!("ControlPersist={PERSIST_SECS}"),
            "BatchMode=yes".to_string(),
            format!("ServerAliveInterval={ALIVE_INTERVAL}"),
            format!("ServerAliveCountMax={ALIVE_COUNT}"),
            "ConnectTimeout=15".to_string(),
        ] {
            v.push("-o".into());
            v.push(o);
        }
        Ok(v)
    }

    /// `ssh <options> -T <host> <remote>`, in its own process group so that a
    /// Ctrl-C on the terminal reaches flocks only.
    pub(crate) fn command(&self, remote: &str) -> Result<Command, SshError> {
        let options = self.options()?;
        register_master(self);
        let mut c = Command::new("ssh");
        c.args(options)
            .arg("-T")
            .arg("--")
            .arg(&self.host)
            .arg(remote)
            .process_group(0)
            .kill_on_drop(true);
        Ok(c)
    }

    /// `remote_dir` as a shell word (`~/x` becomes `"$HOME"/'x'`).
    pub(crate) fn remote_dir_word(&self) -> String {
        remote_path_word(&self.remote_dir)
    }

    /// The fixed command that runs the installed helper.
    pub(crate) fn helper_command(&self) -> String {
        format!("exec /bin/sh {}/helper.sh", self.remote_dir_word())
    }

    /// Run `remote`, feeding `input`, within `limit`.
    pub(crate) async fn output(
        &self,
        remote: &str,
        input: &[u8],
        limit: Duration,
    ) -> Result<String, SshError> {
        self.output_from(remote, input.to_vec(), limit).await
    }

    async fn output_from(
        &self,
        remote: &str,
        input: Vec<u8>,
        limit: Duration,
    ) -> Result<String, SshError> {
        let mut cmd = self.command(remote)?;
        cmd.stdin(Stdio::piped());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            SshError::Unreachable(format!("cannot run ssh (is OpenSSH installed?): {e}"))
        })?;
        let mut stdin = child.stdin.take();
        let feed = async move {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input).await;
                let _ = s.shutdown().await;
            }
        };
        let run = async {
            let (_, out) = tokio::join!(feed, child.wait_with_output());
            out
        };
        let out = match tokio::time::timeout(limit, run).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(SshError::Unreachable(format!("ssh failed: {e}"))),
            Err(_) => {
                return Err(SshError::Unreachable(format!(
                    "host {} did not answer within {}s",
                    self.host,
                    limit.as_secs()
                )));
            }
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(self.failure(out.status, &out.stderr))
    }

    /// Why a remote command failed, from its exit status and stderr.
    fn failure(&self, status: std::process::ExitStatus, stderr: &[u8]) -> SshError {
        let why = last_words(&String::from_utf8_lossy(stderr));
        match status.code() {
            Some(255) => SshError::Unreachable(format!("cannot reach host {}: {why}", self.host)),
            code => SshError::Failed(format!(
                "on host {}: {why} (exit {})",
                self.host,
                code.map(|c| c.to_string())
                    .unwrap_or_else(|| "by signal".into())
            )),
        }
    }

    /// Run one helper op whose reply is read strictly, as it streams
    /// (`helper::read_reply`): a bundle in it is admitted by `want`'s intake
    /// and spooled into its quarantine. Err: ssh or the helper failed;
    /// Ok(Err): the reply was refused.
    pub(crate) async fn helper_reply(
        &self,
        header: Vec<u8>,
        body: Option<std::fs::File>,
        spec: &crate::backend::helper::Spec,
        want: Option<&crate::git::intake::Want>,
        limit: Duration,
    ) -> Result<Result<crate::backend::helper::Reply, crate::backend::helper::ReplyError>, SshError>
    {
        use crate::backend::helper::{self, ReplyError};
        let mut cmd = self.command(&self.helper_command())?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| {
            SshError::Unreachable(format!("cannot run ssh (is OpenSSH installed?): {e}"))
        })?;
        let Some((reply, err, status)) =
            helper::pipe::exchange(child, &header, body, spec, want, limit).await
        else {
            return Err(SshError::Unreachable(format!(
                "host {} did not answer within {}s",
                self.host,
                limit.as_secs()
            )));
        };
        match (reply, status) {
            // Refused as it was announced: the helper may have died of the
            // closed pipe since; the refusal is what to say.
            (Err(e @ ReplyError::Intake(_)), _) => Ok(Err(e)),
            (reply, Ok(s)) if s.success() => Ok(reply),
            (_, Ok(s)) => Err(self.failure(s, &err)),
            (_, Err(e)) => Err(SshError::Unreachable(format!("ssh failed: {e}"))),
        }
    }

    /// Install (or refresh) the helper under `remote_dir`.
    pub(crate) async fn install_helper(&self) -> Result<(), SshError> {
        let d = self.remote_dir_word();
        let remote = format!(
            "umask 077 && mkdir -p {d} && cat >{d}/.helper.sh.$$ && mv -f {d}/.helper.sh.$$ {d}/helper.sh"
        );
        self.output(&remote, HELPER.as_bytes(), Duration::from_secs(60))
            .await
            .map(|_| ())
    }

    /// The pid of the host's multiplexing master, when one runs
    /// (`ssh -O check` says `Master running (pid=N)`).
    pub(crate) async fn master_pid(&self) -> Option<u32> {
        let mut c = Command::new("ssh");
        c.args(self.options().ok()?)
            .args(["-O", "check", "--", &self.host])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(15), c.output())
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        text.split("pid=")
            .nth(1)?
            .split(')')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Have the host's multiplexing master forward a free port on the
    /// host's loopback to `to` (`host:port` as this machine sees it):
    /// `ssh -O forward -R 127.0.0.1:0:<to>`, which prints the port it got.
    pub(crate) async fn forward_remote(&self, to: &str) -> Result<u16, SshError> {
        let mut c = Command::new("ssh");
        c.args(self.options()?)
            .args(["-O", "forward", "-R", &format!("127.0.0.1:0:{to}"), "--"])
            .arg(&self.host)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let out = match tokio::time::timeout(Duration::from_secs(30), c.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(SshError::Unreachable(format!("ssh failed: {e}"))),
            Err(_) => {
                return Err(SshError::Unreachable(format!(
                    "host {}: the port forward to flocks' proxy did not answer",
                    self.host
                )));
            }
        };
        let port = String::from_utf8_lossy(&out.stdout).trim().parse::<u16>();
        match (out.status.success(), port) {
            (true, Ok(p)) if p > 0 => Ok(p),
            _ => Err(SshError::Failed(format!(
                "host {}: cannot forward a port to flocks' proxy: {} (does its sshd allow TCP forwarding?)",
                self.host,
                last_words(&String::from_utf8_lossy(&out.stderr))
            ))),
        }
    }

    /// Run one helper operation whose header ends with `end`; its stdout.
    pub(crate) async fn helper(&self, header: &[u8], limit: Duration) -> Result<String, SshError> {
        self.output(&self.helper_command(), header, limit).await
    }
}

/// Quote a word for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    crate::suggest::quote(s).into_owned()
}

/// A remote path as a shell word; a leading `~/` means the remote `$HOME`.
pub(crate) fn remote_path_word(dir: &str) -> String {
    if dir == "~" {
        return "\"$HOME\"".into();
    }
    match dir.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", sh_quote(rest)),
        None => sh_quote(dir),
    }
}

/// The last meaningful stderr line (ssh's reason), without helper chatter.
pub(crate) fn last_words(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .map(|l| l.strip_prefix("flocks-helper: ").unwrap_or(l).to_string())
        .unwrap_or_else(|| "no message".into())
}

/// The directory of the multiplexing sockets, one per flocks process: made
/// by `mkdtemp` (0700, a name nobody can guess or take first) under
/// `FLOCKS_SSH_CONTROL_DIR` or `/tmp` (short: `%C` is 40 hex digits and a
/// unix socket path has about 104 bytes). A socket there carries the
/// connection's credentials, so flocks refuses to use ssh unless the
/// directory is ours, private, and sits in a parent nobody else can swap it
/// in. Err(why), naming the directory.
pub(crate) fn control_dir() -> Result<&'static Path, &'static ControlDirError> {
    static DIR: OnceLock<Result<PathBuf, ControlDirError>> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("FLOCKS_SSH_CONTROL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        private_dir(&base).map_err(ControlDirError)
    })
    .as_ref()
    .map(PathBuf::as_path)
}

/// Why flocks refuses to use ssh: it has no private directory for the
/// multiplexing sockets.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to use ssh: no private directory for its connection sockets: {0} \
     (set FLOCKS_SSH_CONTROL_DIR to a directory only you can write)"
)]
pub(crate) struct ControlDirError(PrivateDirError);

/// Why a directory is not private enough for the multiplexing sockets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrivateDirError {
    #[error("{}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} belongs to uid {uid}, who could replace what flocks makes there", .path.display())]
    ParentNotOurs { path: PathBuf, uid: u32 },
    #[error("{} is writable by others (mode {mode:o}) without the sticky bit", .path.display())]
    ParentOpen { path: PathBuf, mode: u32 },
    #[error("cannot make a directory in {}: {source}", .path.display())]
    Make { path: PathBuf, source: nix::Error },
    #[error("{} belongs to uid {uid}, not to us (uid {me})", .path.display())]
    NotOurs { path: PathBuf, uid: u32, me: u32 },
    #[error("{} has mode {mode:o}, not 700", .path.display())]
    Mode { path: PathBuf, mode: u32 },
}

/// A new private directory under `base`, checked after it was made.
fn private_dir(base: &Path) -> Result<PathBuf, PrivateDirError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let meta = std::fs::metadata(base).map_err(|source| PrivateDirError::Unreadable {
        path: base.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory(base.to_path_buf()));
    }
    let shared = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.uid() != me && meta.uid() != 0 {
        return Err(PrivateDirError::ParentNotOurs {
            path: base.to_path_buf(),
            uid: meta.uid(),
        });
    }
    if shared && !sticky {
        return Err(PrivateDirError::ParentOpen {
            path: base.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    let dir = nix::unistd::mkdtemp(&base.join("flocks-XXXXXX")).map_err(|source| {
        PrivateDirError::Make {
            path: base.to_path_buf(),
            source,
        }
    })?;
    let m = std::fs::symlink_metadata(&dir).map_err(|source| PrivateDirError::Unreadable {
        path: dir.clone(),
        source,
    })?;
    if !m.file_type().is_dir() {
        return Err(PrivateDirError::NotADirectory(dir));
    }
    if m.uid() != me {
        return Err(PrivateDirError::NotOurs {
            path: dir,
            uid: m.uid(),
            me,
        });
    }
    if m.permissions().mode() & 0o777 != 0o700 {
        return Err(PrivateDirError::Mode {
            path: dir,
            mode: m.permissions().mode() & 0o777,
        });
    }
    Ok(dir)
}

fn masters() -> &'static Mutex<Vec<Target>> {
    static M: OnceLock<Mutex<Vec<Target>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(Vec::new()))
}

pub(crate) fn register_master(t: &Target) {
    let mut m = masters().lock().unwrap_or_else(|e| e.into_inner());
    if !m.iter().any(|x| x.host == t.host && x.port == t.port) {
        m.push(t.clone());
    }
}

/// Stop every multiplexing master this process started (`ssh -O exit`), and
/// remove the socket directory. Called when a command ends.
pub(crate) fn stop_masters() {
    let targets = std::mem::take(&mut *masters().lock().unwrap_or_else(|e| e.into_inner()));
    if targets.is_empty() {
        return;
    }
    use std::os::unix::process::CommandExt;
    for t in targets {
        let Ok(options) = t.options() else {
            continue;
        };
        let _ = std::process::Command::new("ssh")
            .args(options)
            .args(["-O", "exit", "--"])
            .arg(&t.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .status();
    }
    if let Ok(dir) = control_dir() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("abc/d-e.f"), "abc/d-e.f");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$(id)"), "'$(id)'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(remote_path_word("~/flocks x"), "\"$HOME\"/'flocks x'");
        assert_eq!(remote_path_word("/srv/f"), "/srv/f");
    }

    #[test]
    fn user_options_come_first() {
        let t = Target {
            host: "h".into(),
            port: Some(2222),
            identity_file: Some("/k".into()),
            ssh_options: vec!["-o".into(), "ServerAliveInterval=1".into()],
            remote_dir: "~/flocks".into(),
        };
        let o = t.options().unwrap();
        assert_eq!(&o[..2], ["-o", "ServerAliveInterval=1"]);
        assert!(o.contains(&"BatchMode=yes".to_string()));
        assert!(
            o.iter()
                .any(|x| x.starts_with("ControlPath=") && x.ends_with("/%C"))
        );
        assert_eq!(
            t.helper_command(),
            "exec /bin/sh \"$HOME\"/flocks/helper.sh"
        );
        let dir = control_dir().unwrap();
        let m = std::fs::symlink_metadata(dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_a_parent_others_can_swap() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&open).unwrap_err().to_string();
        assert!(err.contains("without the sticky bit"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let dir = private_dir(&open).unwrap();
        assert!(dir.starts_with(&open));
    }
}
