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
