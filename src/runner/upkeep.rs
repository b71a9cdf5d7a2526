//! The upkeep between waves, off the loop: the repository here
//! (`git::upkeep`) and the pools' remote mirrors (`Backend::upkeep`), side
//! by side, and what the run says of it.

use crate::git::upkeep;

/// One wave's upkeep: the repository here and the pools' remote ones.
pub(crate) struct Wave {
    /// Err: the upkeep here failed (the message says so), or its thread did.
    local: Result<Result<Option<upkeep::Done>, String>, String>,
    remote: Vec<upkeep::Remote>,
}

/// The upkeep between waves, off the loop: the repository at `repo` (on a
/// blocking thread) and every pool's remote repositories
/// (`Backend::upkeep`), side by side.
pub(crate) async fn wave(
    repo: std::path::PathBuf,
    backends: Vec<std::sync::Arc<dyn crate::backend::Backend>>,
) -> Wave {
    let local = tokio::task::spawn_blocking(move || upkeep::run(&repo));
    let remote = async {
        let mut all = Vec::new();
        for b in &backends {
            all.extend(b.upkeep().await);
        }
        all
    };
    let (local, remote) = tokio::join!(local, remote);
    Wave {
        local: local.map_err(|e| e.to_string()),
        remote,
    }
}

impl Wave {
    /// What the run says of it: an `upkeep` event for each repository
    /// packed, a notice for each failure.
    pub(crate) fn events(self) -> Vec<crate::report::Event> {
        use crate::report::Event;
        let event = |d: upkeep::Done, pool: Option<String>, host: Option<String>| Event::Upkeep {
            packed_refs: d.packed_refs,
            gc: d.gc,
            loose_objects: d.loose_objects,
            packs: d.packs,
            secs: d.secs,
            pool,
            host,
        };
        let mut out = Vec::new();
        match self.local {
            Ok(Ok(Some(d))) => out.push(event(d, None, None)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => out.push(Event::Notice {
                message: format!("repository upkeep failed (the run goes on): {e}"),
            }),
            Err(e) => out.push(Event::Notice {
                message: format!("internal error, please report it: repository upkeep: {e}"),
            }),
        }
        for r in self.remote {
            match r.done {
                Ok(Some(d)) => out.push(event(d, Some(r.pool), Some(r.host))),
                Ok(None) => {}
                Err(e) => out.push(Event::Notice {
                    message: format!(
                        "upkeep of pool {}'s mirror on {} failed (the run goes on): {e}",
                        r.pool, r.host
                    ),
                }),
            }
        }
        out
    }
}
