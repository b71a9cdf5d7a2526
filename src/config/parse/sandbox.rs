//! `[sandbox]`: what sandboxed agents may read, and their network.

use super::raw::RawSandbox;
use super::*;

/// `[sandbox]`: `read` paths absolute (or `~/...`), never inside the
/// repository or flocks' own files (the sandbox shows neither); `network`.
pub(super) fn parse_sandbox(
    cx: &Ctx,
    s: RawSandbox,
    repo: &Path,
    dir: &Path,
) -> Result<SandboxConfig> {
    let mut read = Vec::new();
    for p in s.read.map(|r| r.into_inner()).unwrap_or_default() {
        let span = p.span();
        let given = p.into_inner();
        let path = normalize(&expand_tilde(Path::new(&given)));
        let why = if !path.is_absolute() {
            Some(format!(
                "`{given}` is not an absolute path: give the full path (or ~/...) of what sandboxed agents may read"
            ))
        } else if path == Path::new("/") {
            Some("`/` is visible read-only already; list the hidden places agents need (e.g. ~/.cargo)".to_string())
        } else if path.starts_with(repo) || path.starts_with(dir.join(".flocks")) {
            Some(format!(
                "`{given}` is inside the repository or flocks' own files, which sandboxed agents never see (each works in a repository of its own)"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(cx.err(span, "sandbox.read", why));
        }
        if !read.contains(&path) {
            read.push(path);
        }
    }
    let network = match s.network {
        None => SandboxNetwork::Proxy,
        Some(v) => SandboxNetwork::parse(v.get_ref()).ok_or_else(|| {
            cx.err(
                v.span(),
                "sandbox.network",
                format!(
                    "unknown network `{}`: use \"proxy\" (none but flocks' proxy, the default), \"none\" (no network at all) or \"host\" (the host's)",
                    v.get_ref()
                ),
            )
        })?,
    };
    Ok(SandboxConfig { read, network })
}
