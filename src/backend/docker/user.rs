//! The exec user of a docker pool's agents and commands: the pool's `user`,
//! or the repo's owner (`uid:gid`). Root there can kill flocks' reaper (and
//! so outlive its attempt), so a user that is root is refused unless the
//! pool says `allow_root = true`: `root`/`0` in flocks.toml is a config error
//! (`crate::config::names_root`), the repo's owner being root and a name
//! that the container maps to uid 0 are found here, once per container.

use bollard::Docker;

use super::Target;
use super::engine::{self, EngineError};
use crate::config::DockerConfig;

/// The exec user: the pool's `user`, or the repo owner's `uid:gid`.
pub(super) fn exec_user(d: &DockerConfig, owner: (u32, u32)) -> String {
    d.user
        .clone()
        .unwrap_or_else(|| format!("{}:{}", owner.0, owner.1))
}

/// Refuse `t`'s exec user when it is root and `d` does not allow it.
pub(super) async fn refuse_root(
    docker: &Docker,
    t: &Target,
    d: &DockerConfig,
) -> Result<(), EngineError> {
    if d.allow_root {
        return Ok(());
    }
    let why = if d.user.is_none() && crate::config::names_root(&t.user) {
        "the repo belongs to root, and the default exec user is the repo's owner".to_string()
    } else if crate::config::names_root(&t.user) {
        format!("`user = \"{}\"`", t.user)
    } else if is_numeric(&t.user) {
        return Ok(());
    } else {
        // A name: what the container makes of it.
        match engine::run(
            docker,
            &t.id,
            vec!["id".into(), "-u".into()],
            vec![],
            &t.user,
        )
        .await
        {
            Ok(out) if out.stdout.trim() == "0" => {
                format!("`{}` is uid 0 in the container", t.user)
            }
            _ => return Ok(()),
        }
    };
    Err(EngineError::Root {
        container: t.name.clone(),
        why,
    })
}

fn is_numeric(user: &str) -> bool {
    let uid = user.split(':').next().unwrap_or(user);
    !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit())
}
