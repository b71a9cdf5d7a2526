//! `flocks __forward --listen 127.0.0.1:PORT --to /path/proxy.sock`: the
//! agent-side half of the proxy for agents with no network of their own (a
//! bubblewrap sandbox, a container made by `flocks up`). It listens on a TCP
//! address inside the agent's network namespace and carries every connection,
//! byte for byte, to the proxy's unix socket, which the backend binds in.
//!
//! It prints `listening <addr>` on stdout once it listens (port 0 picks a free
//! one), and ends when its stdin reaches end of file or its parent process
//! dies (`--while-stdin`: its stdin alone, for a docker exec whose parent is
//! docker's runtime), so that it never outlives what started it. It reads
//! nothing it carries: the proxy checks the tokens.
//!
//! With `-- COMMAND...` it is a launcher (a bubblewrap sandbox's first
//! program, whose network namespace is fresh, so the port is known before):
//! it listens, forks the forwarder off (stdin and stdout on /dev/null, deaf
//! to TERM so that the agent keeps its proxy through its grace, killed when
//! the command ends), and execs COMMAND in its own place, so that the
//! command keeps the pid, stdin, stdout and signals the supervisor gave it.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__forward";

const USAGE: &str =
    "usage: flocks __forward --listen IP:PORT --to SOCKET [--while-stdin] [-- COMMAND...]";

/// Run the forwarder; the process's exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut listen: Option<SocketAddr> = None;
    let mut to: Option<PathBuf> = None;
    let mut command: Vec<OsString> = Vec::new();
    let mut while_stdin = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--listen") => listen = it.next().and_then(|v| v.to_str()?.parse().ok()),
            Some("--to") => to = it.next().map(PathBuf::from),
            Some("--while-stdin") => while_stdin = true,
            Some("--") => {
                command.extend(it.by_ref());
                if command.is_empty() {
                    eprintln!("{USAGE}");
                    return 2;
                }
            }
            _ => {
                eprintln!("{USAGE}");
                return 2;
            }
        }
    }
    let (Some(listen), Some(to)) = (listen, to) else {
        eprintln!("{USAGE}");
        return 2;
    };
    if !command.is_empty() {
        return launch(listen, to, command);
    }
    // Ends with its parent (checked again below: it may be gone already),
    // unless told to end with its stdin alone (a docker exec, whose parent
    // is docker's runtime, which may exit as soon as it started it).
    if !while_stdin {
        let parent = std::os::unix::process::parent_id();
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; no memory involved.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        }
        if std::os::unix::process::parent_id() != parent {
            return 0;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flocks __forward: {e}");
            return 1;
        }
    };
    runtime.block_on(run(listen, to))
}

/// Listen, fork the forwarder off, exec `command` here. Returns only when
/// something failed (the exit code).
fn launch(listen: SocketAddr, to: PathBuf, command: Vec<OsString>) -> i32 {
    use std::os::unix::process::CommandExt;
    // Bound before the command starts: its first request finds it.
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flocks __forward: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    // SAFETY: this process has one thread (nothing started any), so the
    // child may run anything after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            forward_child(listener, to);
            // SAFETY: _exit ends the child without running the parent's atexit work.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(listener);
            let err = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            eprintln!(
                "flocks __forward: cannot run {}: {err}",
                command[0].to_string_lossy()
            );
            127
        }
        Err(e) => {
            eprintln!("flocks __forward: cannot fork: {e}");
            1
        }
    }
}

/// The launcher's forwarder: it serves until the command (its parent)
/// ends, which kills it.
fn forward_child(listener: std::net::TcpListener, to: PathBuf) {
    use std::os::fd::AsRawFd;
    // SAFETY: prctl and signal take plain numbers; no memory involved.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    if std::os::unix::process::parent_id() == 1 {
        return;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let _ = listener.set_nonblocking(true);
        if let Ok(l) = tokio::net::TcpListener::from_std(listener) {
            serve(l, to, std::future::pending()).await;
        }
    });
}

async fn run(listen: SocketAddr, to: PathBuf) -> i32 {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flocks __forward: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let bound = listener.local_addr().map_or(listen, |a| a);
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "listening {bound}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
    }
    // End of stdin ends the forwarder (read on a thread of its own: a
    // blocking read).
    let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
        let _ = eof_tx.send(());
    });
    serve(listener, to, async {
        let _ = eof.await;
    })
    .await;
    0
}

/// Carry every connection `listener` accepts to the unix socket `to`, until
/// `stop` completes.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    to: PathBuf,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((mut near, _)) = accepted else { continue };
                let _ = near.set_nodelay(true);
                let to = to.clone();
                tokio::spawn(async move {
                    match tokio::net::UnixStream::connect(&to).await {
                        Ok(mut far) => {
                            let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
                        }
                        Err(e) => eprintln!("flocks __forward: cannot reach {}: {e}", to.display()),
                    }
                });
            }
        }
    }
}
