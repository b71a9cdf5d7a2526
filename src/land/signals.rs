//! Ctrl-C (or SIGTERM) while land runs commands (validation, after_push):
//! the signal becomes a stop for the commands, which the caller holds as a
//! `watch::Receiver<StopLevel>`, instead of ending flocks; the previous
//! handlers come back when the catch is dropped.
//!
//! A signal handler is given no state: it writes one byte to a pipe whose
//! write end is the one thing it can reach ([`PIPE`]); a thread of the
//! catch reads the pipe and says "stop" on the caller's channel.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use tokio::sync::watch;

use crate::watch::StopLevel;

/// The write end of the catch's pipe (-1: no catch). Only the handler reads
/// it: a signal handler cannot be handed anything else.
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: std::ffi::c_int) {
    let fd = PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already says stop.
        let _ = unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// SIGINT and SIGTERM caught while it lives (one at a time per process).
pub(super) struct Caught {
    old: Vec<(Signal, SigAction)>,
    write: Option<OwnedFd>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Catch SIGINT and SIGTERM until the returned value is dropped; each one
/// says [`StopLevel::Graceful`] on the returned channel.
pub(super) fn catch() -> (Caught, watch::Receiver<StopLevel>) {
    let (tx, rx) = watch::channel(StopLevel::Run);
    let Ok((read, write)) = nix::unistd::pipe() else {
        // No pipe, no catch: a Ctrl-C ends flocks, and the supervisor the
        // command.
        return (
            Caught {
                old: Vec::new(),
                write: None,
                reader: None,
            },
            rx,
        );
    };
    let reader = std::thread::spawn(move || {
        let mut read = File::from(read);
        let mut byte = [0u8; 1];
        // Ends when the catch closes the write end.
        while matches!(read.read(&mut byte), Ok(1)) {
            tx.send_replace(StopLevel::Graceful);
        }
    });
    PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let mut old = Vec::new();
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only writes to a pipe, which is
        // async-signal-safe.
        if let Ok(prev) = unsafe { sigaction(sig, &action) } {
            old.push((sig, prev));
        }
    }
    (
        Caught {
            old,
            write: Some(write),
            reader: Some(reader),
        },
        rx,
    )
}

impl Drop for Caught {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores the action that was in place before.
            let _ = unsafe { sigaction(*sig, prev) };
        }
        PIPE.store(-1, Ordering::SeqCst);
        drop(self.write.take());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
