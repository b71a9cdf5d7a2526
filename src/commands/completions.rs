//! `flocks completions <shell>`: a completion script generated from the
//! command-line definition, so it never falls behind it.

use crate::cli::CompletionsArgs;
use crate::error::{Error, Exit, Result};

pub(super) fn run(args: &CompletionsArgs) -> Result<Exit> {
    let mut cmd = crate::help::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "flocks", &mut script);
    let text = String::from_utf8(script)
        .map_err(|e| Error::Other(format!("the completion script is not UTF-8: {e}")))?;
    crate::out!("{text}");
    Ok(Exit::Ok)
}
