//! `flocks man`: the manual page, generated from the command-line definition
//! (clap_mangen): `flocks.1` on stdout, or `--dir DIR` for `flocks.1` and one
//! `flocks-<command>.1` per command, ready for a `man1` directory. Each page
//! ends with EXAMPLES and EXIT STATUS.

use std::path::{Path, PathBuf};

use crate::cli::ManArgs;
use crate::error::{Error, Exit, Result};

pub(super) fn run(args: &ManArgs) -> Result<Exit> {
    let cmd = crate::help::command();
    match &args.dir {
        None => {
            crate::out!("{}", render(&cmd)?);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            let mut written = vec![write_page(dir, "flocks", &cmd)?];
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("flocks-{}", sub.get_name());
                let sub = sub
                    .clone()
                    .name(name.clone())
                    .bin_name(name.replacen('-', " ", 1));
                written.push(write_page(dir, &name, &sub)?);
            }
            for p in written {
                crate::outln!("wrote {}", p.display());
            }
        }
    }
    Ok(Exit::Ok)
}

/// The page clap_mangen renders, with the command's examples in an EXAMPLES
/// section (before VERSION) instead of its plain-text `--help` tail.
fn render(cmd: &clap::Command) -> Result<String> {
    let mut page = Vec::new();
    // No `help` subcommand: it has no page of its own (`--help` is on each).
    let cmd = cmd
        .clone()
        .after_help(None::<&str>)
        .disable_help_subcommand(true);
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Error::Other(format!("cannot render the man page: {e}")))?;
    let mut page = String::from_utf8(page)
        .map_err(|e| Error::Other(format!("the man page is not UTF-8: {e}")))?;
    let key = cmd
        .get_name()
        .strip_prefix("flocks-")
        .unwrap_or(cmd.get_name());
    let mut roff = roff::Roff::new();
    if let Some(list) = crate::help::example_list(key) {
        roff.control("SH", ["EXAMPLES"]);
        for (line, what) in list {
            roff.control("TP", []);
            roff.text([roff::bold(*line)]);
            roff.text([roff::roman(*what)]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in EXIT_STATUS {
        roff.control("TP", []);
        roff.text([roff::bold(*code)]);
        roff.text([roff::roman(*what)]);
    }
    let section = roff.to_roff();
    match page.find("\n.SH VERSION") {
        Some(i) => page.insert_str(i + 1, &section),
        None => page.push_str(&section),
    }
    Ok(page)
}

/// The exit codes (the manual's docs/src/reference/exit-codes.md; `crate::error::Exit`).
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "all good (also a run that `flocks stop` ended with no task failed)",
    ),
    ("1", "unexpected error"),
    (
        "2",
        "bad usage, config or input (the message names the file, line and field)",
    ),
    (
        "3",
        "some tasks failed, timed out or stayed blocked, or the budget stopped the run",
    ),
    (
        "4",
        "land stopped on conflicts or failed validation, or refused (a dirty checkout of the target, an undo that would lose work)",
    ),
    (
        "5",
        "could not start: another flocks holds the project's lock, no pool or credential is usable, or files agents could write changed (`flocks trust`)",
    ),
    ("130", "interrupted (Ctrl-C)"),
];

fn write_page(dir: &Path, name: &str, cmd: &clap::Command) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, render(cmd)?).map_err(|e| io_error(&path, e))?;
    Ok(path)
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        context: format!("write {}", path.display()),
        source,
    }
}
