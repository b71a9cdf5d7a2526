//! Throw-away OpenSSH servers ("test hosts") for integration tests.
//!
//! Meant for `tests/support/sshd.rs`. Uses only std + tempfile. Needs, on the test machine:
//! root (sshd must run as root to log in as root and for privilege separation), and the
//! Debian packages openssh-server + openssh-client (`/usr/sbin/sshd`, `ssh`, `ssh-keygen`).
//!
//! Every `TestSshd` listens on its own loopback address (127.0.0.2, 127.0.0.3, ... all work on
//! Linux without configuration) on port 22, so it looks like a separate host to `ssh`.
//! It has its own host key, client key, known_hosts and `$HOME` (`SetEnv HOME=<dir>/home`),
//! but of course shares the file system and process table with the test.
//!
//! ```ignore
//! let h = TestSshd::start("127.0.0.2");
//! let out = h.ssh("echo hi").output().unwrap();
//! // flocks.toml: host = h.host(), ssh_options = h.ssh_options()
//! ```
#![allow(dead_code)]

use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const SSHD: &str = "/usr/sbin/sshd";

/// $1 = sshd binary, $2 = config. Exits (killing sshd's tree) when its stdin reaches EOF.
const WATCHDOG: &str = r#"
"$1" -D -e -f "$2" </dev/null &
p=$!
kt() { for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kt "$c"; done; kill -KILL "$1" 2>/dev/null; }
trap 'kill -KILL $p 2>/dev/null; exit 0' TERM
read _ || true
kill -STOP $p 2>/dev/null   # no new connections while we walk the tree
kt $p
"#;

pub struct TestSshd {
    addr: String,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl TestSshd {
    /// True if this machine can run test sshds (root + sshd + ssh + ssh-keygen present).
    pub fn available() -> bool {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        root && Path::new(SSHD).exists() && which("ssh") && which("ssh-keygen")
    }

    /// Start an sshd on `addr`:22. Panics if it does not come up within 10 s.
    pub fn start(addr: &str) -> TestSshd {
        Self::start_on(addr, 22)
    }

    /// Start an sshd on a free 127.0.N.M address (port 22), so tests running in parallel
    /// (threads or nextest processes) never collide: an address in use makes sshd fail to
    /// bind, and we move on to the next one.
    pub fn start_any() -> TestSshd {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // spread processes apart a bit (nextest runs each test in its own process)
        let base = std::process::id() % 200;
        for _ in 0..64 {
            let n = base + NEXT.fetch_add(1, Ordering::SeqCst);
            // 127.0.10.2 ..= 127.0.59.253 ; stays clear of 127.0.0.x used by explicit tests
            let addr = format!("127.0.{}.{}", 10 + (n / 252) % 50, 2 + n % 252);
            match Self::try_start_on(&addr, 22) {
                Ok(s) => return s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("test sshd on {addr}: {e}"),
            }
        }
        panic!("no free loopback address for a test sshd");
    }

    pub fn start_on(addr: &str, port: u16) -> TestSshd {
        Self::try_start_on(addr, port).unwrap_or_else(|e| panic!("test sshd on {addr}:{port}: {e}"))
    }

    pub fn try_start_on(addr: &str, port: u16) -> io::Result<TestSshd> {
        // short path: keeps ControlPath=<dir>/... well under the 104-byte socket path limit
        let dir = tempfile::Builder::new()
            .prefix("sshd.")
            .tempdir_in("/tmp")?;
        let d = dir.path();
        fs::create_dir_all(d.join("home"))?;
        // privilege separation dir; normally made by the init script / systemd unit
        fs::create_dir_all("/run/sshd")?;

        keygen(&d.join("host_ed25519"), &format!("testhost@{addr}"))?;
        keygen(&d.join("client_ed25519"), &format!("client@{addr}"))?;
        fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys"))?;

        let mut s = TestSshd {
            addr: addr.to_string(),
            port,
            dir,
            child: None,
        };
        fs::write(s.known_hosts_path(), format!("{}\n", s.known_hosts_line()))?;
        fs::write(s.dir.path().join("sshd_config"), s.config_text())?;
        s.spawn()?;
        Ok(s)
    }

    fn config_text(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "ListenAddress {addr}\n\
             Port {port}\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             UsePAM no\n\
             LoginGraceTime 10\n\
             MaxSessions 50\n\
             MaxStartups 100:30:200\n\
             MaxAuthTries 3\n\
             X11Forwarding no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             SetEnv HOME={d}/home TEST_SSHD_DIR={d}\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            addr = self.addr,
            port = self.port,
        )
    }

    /// (Re)spawn `sshd -D -e` with the existing config/keys and wait until it accepts.
    fn spawn(&mut self) -> io::Result<()> {
        let d = self.dir.path();
        // fresh log per spawn (restart() must not see the previous "Server listening" line)
        let log = fs::File::create(d.join("sshd.log"))?;
        let _ = fs::remove_file(d.join("sshd.pid"));
        // sshd runs under a tiny sh watchdog whose stdin is a pipe from this process: if the
        // test process dies without running Drop (SIGKILL, abort), the pipe closes, `read`
        // returns and the watchdog kills sshd's whole tree. No leaked listeners on 127.0.x.y.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("test-sshd-watchdog")
            .arg(SSHD)
            .arg(d.join("sshd_config"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let sa: SocketAddr = format!("{}:{}", self.addr, self.port)
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
        let listening = format!("Server listening on {} port {}.", self.addr, self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait()? {
                let log = fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
                let kind = if log.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(kind, format!("sshd exited ({st}):\n{log}")));
            }
            // Ready = sshd says it listens AND the port accepts. Do not rely on connect() alone:
            // another listener on the same addr:port (a leftover sshd) would answer it while
            // ours is about to die with "Address already in use".
            let log = fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            if log.contains(&listening)
                && d.join("sshd.pid").exists()
                && TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sshd did not accept in 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// `$HOME` of ssh sessions on this "host" (sshd's cwd is still /root: use `cd` or abs paths).
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    /// PID of the listening sshd (None after `stop`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?;
        fs::read_to_string(self.dir.path().join("sshd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    /// PID of the watchdog sh (parent of sshd; root of the process walk).
    fn watchdog_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    /// `root@ADDR`
    pub fn host(&self) -> String {
        format!("root@{}", self.addr)
    }
    /// Client private key (flocks.toml `identity_file`).
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }
    pub fn public_key(&self) -> String {
        fs::read_to_string(self.dir.path().join("client_ed25519.pub"))
            .unwrap()
            .trim()
            .to_string()
    }
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
    pub fn authorized_keys_path(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }
    /// The line ssh looks up: `ADDR key` for port 22, `[ADDR]:PORT key` otherwise.
    pub fn known_hosts_line(&self) -> String {
        let pubkey = fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        let mut f = pubkey.split_whitespace();
        let (t, k) = (f.next().unwrap(), f.next().unwrap());
        if self.port == 22 {
            format!("{} {t} {k}", self.addr)
        } else {
            format!("[{}]:{} {t} {k}", self.addr, self.port)
        }
    }
    /// Let another key in (e.g. a shared client key); sshd re-reads the file on every login.
    pub fn authorize_key(&self, pubkey_line: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.authorized_keys_path())
            .unwrap();
        writeln!(f, "{}", pubkey_line.trim()).unwrap();
    }
    /// Replace authorized_keys so that our client key may only run `cmd` (forced command; the
    /// requested command is in `$SSH_ORIGINAL_COMMAND`).
    pub fn set_forced_command(&self, cmd: &str) {
        let line = format!(
            "command=\"{}\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {}\n",
            cmd.replace('\\', "\\\\").replace('"', "\\\""),
            self.public_key()
        );
        fs::write(self.authorized_keys_path(), line).unwrap();
    }

    /// Options for `ssh` (and flocks.toml `ssh_options`): identity, strict known_hosts, batch.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut v = vec!["-i".to_string(), self.key_path().display().to_string()];
        v.extend(self.ssh_options_without_identity());
        v
    }
    /// Same as `ssh_options` minus `-i` (when the key goes into `identity_file`).
    pub fn ssh_options_without_identity(&self) -> Vec<String> {
        let mut v = Vec::new();
        for o in [
            "IdentitiesOnly=yes".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts_path().display()),
            "StrictHostKeyChecking=yes".to_string(),
            "BatchMode=yes".to_string(),
            "ConnectTimeout=5".to_string(),
        ] {
            v.push("-o".to_string());
            v.push(o);
        }
        if self.port != 22 {
            v.push("-o".to_string());
            v.push(format!("Port={}", self.port));
        }
        v
    }
    /// `ssh -T <options> root@ADDR <remote>`; stdin/stdout/stderr are the caller's to set.
    pub fn ssh(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-T")
            .args(self.ssh_options())
            .arg(self.host())
            .arg(remote);
        c
    }
    /// Run a remote command, panic unless it succeeds, return its stdout.
    pub fn run(&self, remote: &str) -> String {
        let o = self
            .ssh(remote)
            .stdin(Stdio::null())
            .output()
            .expect("spawn ssh");
        assert!(
            o.status.success(),
            "ssh {} {remote:?}: {}\nstderr: {}",
            self.host(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// All processes of this "host": the listener, its connection/session descendants, and
    /// whatever a session left behind (tagged `TEST_SSHD_DIR=<dir>` via `SetEnv`, so it is found
    /// even after reparenting). sshd's own processes can't be found by env: setproctitle
    /// overwrites their environ, hence the ppid walk.
    pub fn processes(&self) -> Vec<u32> {
        let tag = format!("TEST_SSHD_DIR={}", self.dir.path().display());
        let mut procs: Vec<(u32, u32)> = Vec::new(); // (pid, ppid)
        let mut out = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(e.path().join("stat")) {
                // "pid (comm) state ppid ..." ; comm may contain spaces/parens
                if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                    let mut f = rest.split(' ');
                    let state = f.next().unwrap_or("");
                    let ppid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                    if state == "Z" {
                        continue;
                    }
                    procs.push((pid, ppid));
                }
            }
            if fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|x| x == tag.as_bytes()))
            {
                out.push(pid);
            }
        }
        if let Some(root) = self.watchdog_pid() {
            let mut frontier = vec![root];
            while let Some(p) = frontier.pop() {
                if !procs.iter().any(|(q, _)| *q == p) {
                    continue; // gone or zombie
                }
                out.push(p);
                frontier.extend(procs.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn signal_all(&self, sig: &str) {
        let pids = self.processes();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .args(pids.iter().map(|p| p.to_string()))
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Simulate the host going down hard: SIGKILL the listener, every connection and every
    /// process started through it. Clients see the TCP connection close at once (exit 255).
    pub fn stop(&mut self) {
        for _ in 0..20 {
            if self.processes().is_empty() {
                break;
            }
            self.signal_all("KILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Bring a stopped host back (same address, keys and home).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() after stop() only");
        self.spawn().expect("restart test sshd");
    }

    /// Simulate a hung host / black-holed network: SIGSTOP all its processes. TCP stays open, so
    /// clients only notice through ServerAliveInterval (or never).
    pub fn pause(&self) {
        self.signal_all("STOP");
    }
    pub fn resume(&self) {
        self.signal_all("CONT");
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.resume(); // a stopped process still dies from SIGKILL, but be tidy
        self.stop();
    }
}

fn keygen(path: &Path, comment: &str) -> io::Result<()> {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()?;
    if !st.success() {
        return Err(io::Error::other(format!("ssh-keygen failed: {st}")));
    }
    Ok(())
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
