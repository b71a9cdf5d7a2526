//! Standard output for people and pipes: colour that follows `--color`,
//! `NO_COLOR` and `CLICOLOR_FORCE` (through anstream), and a closed pipe
//! that ends printing quietly instead of panicking.
//!
//! Why not restore the default SIGPIPE: `flocks run` and `land` print while
//! they work; a SIGPIPE would kill them mid-way, between two state
//! transitions or two cherry-picks. Rust ignores SIGPIPE, so a write to a
//! closed pipe fails with `BrokenPipe`: the writer here remembers it and
//! drops all later output, the command goes on to a consistent end (a run
//! persists its state and finishes its agents), and nothing is printed about
//! it. Loops that only print (`logs -f`) stop when [`closed`] says so.

pub(crate) mod paint;
pub(crate) mod table;
pub(crate) mod units;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use paint::{paint, paint_text};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// `--color`: apply the user's choice to everything flocks prints.
pub(crate) fn set_color(choice: clap::ColorChoice) {
    let choice = match choice {
        clap::ColorChoice::Auto => anstream::ColorChoice::Auto,
        clap::ColorChoice::Always => anstream::ColorChoice::Always,
        clap::ColorChoice::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
    COLOUR.store(UNKNOWN, Ordering::Relaxed);
}

/// [`colour`]'s answer once worked out (it reads the environment and asks
/// whether standard output is a terminal: `tasks` paints 10,000 cells).
static COLOUR: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PLAIN: u8 = 1;
const COLOURED: u8 = 2;

/// Whether styled text reaches standard output as colour.
pub(crate) fn colour() -> bool {
    match COLOUR.load(Ordering::Relaxed) {
        UNKNOWN => {
            let yes = anstream::AutoStream::choice(&io::stdout()) != anstream::ColorChoice::Never;
            COLOUR.store(if yes { COLOURED } else { PLAIN }, Ordering::Relaxed);
            yes
        }
        known => known == COLOURED,
    }
}

/// Whether the reader of standard output went away.
pub(crate) fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Standard output as a writer: styles are kept or stripped as the colour
/// choice says; a closed pipe turns every write into a quiet no-op.
pub(crate) struct Stdout;

pub(crate) fn stdout() -> Stdout {
    Stdout
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if closed() {
            return Ok(());
        }
        let result = if plain(buf) {
            // Nothing the colour filter would take out: written as it is
            // (the filter reads every byte; `status` at 10,000 tasks is 850 KB).
            let mut out = io::stdout().lock();
            out.write_all(buf).and_then(|()| out.flush())
        } else {
            let mut out = anstream::stdout().lock();
            out.write_all(buf).and_then(|()| out.flush())
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                CLOSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if closed() {
            return Ok(());
        }
        match io::stdout().flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                CLOSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

/// Text with no control character but newline and tab, and no C1 control
/// (U+0080 to U+009F): no escape sequence can start in it.
fn plain(buf: &[u8]) -> bool {
    // Two passes without state, each a loop the compiler runs on wide words.
    buf.iter()
        .all(|&b| b >= 0x20 && b != 0x7f || b == b'\n' || b == b'\t')
        && !buf
            .windows(2)
            .any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
}

/// Print formatted text; other write errors (a full disk) are not the
/// command's failure either, as with `print!` they would be a panic.
pub(crate) fn print_fmt(args: std::fmt::Arguments<'_>) {
    let _ = stdout().write_all(args.to_string().as_bytes());
}

/// Print JSON for programs (`--json`), pretty, as one write: nothing in it
/// to strip (serde_json escapes control characters), and a 10,000-task
/// status is 10 MB that the colour filter would read byte by byte. Quiet on
/// a closed pipe.
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    if closed() {
        return;
    }
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(&text).and_then(|()| out.flush())
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Print a report (status, summary, land), coloured by [`paint`].
pub(crate) fn report(text: &str) {
    let _ = stdout().write_all(paint_text(text).as_bytes());
}

/// `print!` through [`stdout`]: quiet on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print_fmt(format_args!($($arg)*))
    };
}

/// `println!` through [`stdout`]: quiet on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::print_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_text_without_controls_skips_the_colour_filter() {
        use super::plain;
        assert!(plain("done (3):\n  ✔ t1\tflocks/t1 · $0.00\n".as_bytes()));
        assert!(!plain(b"\x1b[31mred\x1b[0m"));
        assert!(!plain(b"bell\x07"));
        assert!(!plain(b"back\rover"));
        assert!(!plain(b"del\x7f"));
        // U+009B, the one-byte CSI, in UTF-8.
        assert!(!plain("csi\u{9b}31m".as_bytes()));
        // U+00A9 (also 0xC2 first) is text.
        assert!(plain("©".as_bytes()));
    }
}
