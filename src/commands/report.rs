//! `flocks report`: a piece of work (or one run, or everything since a
//! date) as one self-contained HTML file (see [`crate::web::report`]).

use std::io::Write;
use std::path::PathBuf;

use crate::agent::redact::Redactor;
use crate::cli::ReportArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &ReportArgs) -> Result<Exit> {
    project.repo()?;
    let secrets = crate::runner::credentials::Credentials::from_env(&project.config).secrets();
    let redactor = Redactor::new(secrets);
    use crate::web::report::Pick;
    let pick = match (&args.run, &args.since) {
        (Some(id), _) => Pick::Run(id),
        (None, Some(date)) => Pick::Since(
            crate::web::parse_since(date, chrono::Utc::now())
                .map_err(|e| Error::Usage(format!("--since: {e}")))?,
        ),
        (None, None) => Pick::Piece,
    };
    let written = crate::web::report::render(project, pick, &redactor)?;
    let (id, html) = (written.id, written.html);
    let path = match &args.output {
        Some(p) if p.as_os_str() == "-" => {
            let mut out = crate::output::stdout();
            let _ = out.write_all(html.as_bytes());
            let _ = out.flush();
            return Ok(Exit::Ok);
        }
        Some(p) => p.clone(),
        None => PathBuf::from(format!("flocks-report-{id}.html")),
    };
    // Whole or not at all: write beside it, then rename.
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, &html)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io {
                context: format!("write {}", path.display()),
                source: e,
            }
        })?;
    crate::outln!("wrote {} ({})", path.display(), written.what);
    Ok(Exit::Ok)
}
