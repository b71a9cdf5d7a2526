//! The pipes of a program that speaks the helper protocol (an agent's
//! helper over ssh or in a Slurm step): lines in, output forwarded.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;

use crate::backend::Chunk;

/// Write one line of the helper protocol to a running program's stdin;
/// false (and the stdin let go) once it cannot be written.
pub(crate) async fn send_line(stdin: &tokio::sync::Mutex<Option<ChildStdin>>, line: &str) -> bool {
    let mut g = stdin.lock().await;
    let Some(s) = g.as_mut() else { return false };
    let ok = s.write_all(format!("{line}\n").as_bytes()).await.is_ok() && s.flush().await.is_ok();
    if !ok {
        g.take();
    }
    ok
}

/// Forward output; the stderr pump returns the last few KB of stderr (where
/// the helper's exit line is).
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    stdout: bool,
) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = buf[..n].to_vec();
                if !stdout {
                    tail.extend_from_slice(&data);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
                let chunk = if stdout {
                    Chunk::Stdout(data)
                } else {
                    Chunk::Stderr(data)
                };
                let _ = tx.send(chunk).await;
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// A helper `run` under way: its stdin for control lines (`ping`, `term`,
/// `kill`), and its output, which ends with [`Chunk::Exited`].
pub(crate) struct Streaming {
    pub stdin: std::sync::Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    pub output: tokio::sync::mpsc::Receiver<Chunk>,
}

/// Send `input` (a `run` header and the prompt) to `child`, a helper just
/// started through `what` (ssh, srun); forward its output and ping it every
/// `every`. When it ends, its output drained, `end` gets the helper's exit
/// code (its last word on stderr, if said), the program's own status and
/// the tail of stderr, and sends the [`Chunk::Exited`] that says how.
pub(crate) async fn stream<F, Fut>(
    mut child: tokio::process::Child,
    what: &'static str,
    input: &[u8],
    every: std::time::Duration,
    cannot_send: impl FnOnce(std::io::Error) -> crate::backend::SpawnError,
    end: F,
) -> Result<Streaming, crate::backend::SpawnError>
where
    F: FnOnce(
            Option<i32>,
            std::io::Result<std::process::ExitStatus>,
            String,
            tokio::sync::mpsc::Sender<Chunk>,
        ) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use std::time::Duration;
    let mut stdin = child
        .stdin
        .take()
        .ok_or(crate::backend::SpawnError::Process {
            what,
            reason: "no stdin pipe".into(),
        })?;
    stdin.write_all(input).await.map_err(cannot_send)?;
    let _ = stdin.flush().await;
    let stdin = std::sync::Arc::new(tokio::sync::Mutex::new(Some(stdin)));
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let out = tokio::spawn(pump(child.stdout.take(), tx.clone(), true));
    let err = tokio::spawn(pump(child.stderr.take(), tx.clone(), false));
    let pinger = {
        let stdin = stdin.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !send_line(&stdin, "ping").await {
                    return;
                }
            }
        })
    };
    let stdin_end = stdin.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        pinger.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), out).await;
        let tail = tokio::time::timeout(Duration::from_secs(5), err)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        stdin_end.lock().await.take();
        let marker = tail
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("flocks-helper: exit rc="))
            .and_then(|c| c.trim().parse::<i32>().ok());
        end(marker, status, tail, tx).await;
    });
    Ok(Streaming { stdin, output: rx })
}

/// What one helper op over a program's pipes came to: the reply as read,
/// all of stderr, and the program's exit status.
pub(crate) type Exchanged = (
    Result<super::Reply, super::ReplyError>,
    Vec<u8>,
    std::io::Result<std::process::ExitStatus>,
);

/// One helper op with `child` (the helper, started with piped stdio):
/// `header` and `body` in, the reply read by `spec` (and `want`), stderr
/// kept; `None` when it took longer than `limit`.
pub(crate) async fn exchange(
    mut child: tokio::process::Child,
    header: &[u8],
    body: Option<std::fs::File>,
    spec: &super::Spec,
    want: Option<&crate::git::intake::Want>,
    limit: std::time::Duration,
) -> Option<Exchanged> {
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async move {
        if let Some(s) = stdin.as_mut() {
            let _ = super::send(s, header, body).await;
        }
    };
    let read = async move {
        match stdout {
            Some(out) => super::read_reply(out, spec, want).await,
            None => Err(super::ReplyError::Io {
                op: spec.op,
                why: "no stdout".into(),
            }),
        }
    };
    let err = async move {
        let mut v = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut v).await;
        }
        v
    };
    let run = async {
        let (_, reply, err) = tokio::join!(feed, read, err);
        (reply, err, child.wait().await)
    };
    tokio::time::timeout(limit, run).await.ok()
}
