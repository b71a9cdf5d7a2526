//! exe.dev pools: VMs created through exe.dev's SSH lobby by `flocks up`,
//! used as SSH hosts by `flocks run`, removed by `flocks down`. The VMs flocks
//! made are recorded in state.json (`managed`), and only those are removed.
//!
//! Agents in containers can write state.json, so a record there is not
//! proof: `up` also records each VM it makes outside the repo ([`Made`],
//! beside `flocks trust`'s record), and every reader ([`targets`]: `run`,
//! `hosts check`, `shell`, `up`) uses only the records found in both, with a
//! name `up` gives and an ssh destination of plain words. Any other record
//! is refused, by name, and never connected to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::conn::{SshError, Target};
use crate::config::{BackendConfig, Config, ExedevConfig, PoolConfig};
use crate::error::{Error, Result};
use crate::state::{Managed, State};

/// How long `up` waits for a new VM to answer over SSH.
const VM_WAIT: Duration = Duration::from_secs(180);
const LOBBY_LIMIT: Duration = Duration::from_secs(300);

/// What the lobby's `new --json` answers (only the fields flocks uses).
#[derive(Debug, Deserialize)]
struct NewVm {
    vm_name: String,
    ssh_dest: String,
    #[serde(default)]
    ssh_port: Option<u16>,
}

/// The VMs `flocks up` made for a project, as recorded outside the repo
/// (`$XDG_STATE_HOME/flocks/<project key>/vms.json`), where agents cannot
/// add one.
#[derive(Debug, Default)]
pub(crate) struct Made {
    path: Option<PathBuf>,
    vms: Vec<Managed>,
}

impl Made {
    /// The record of the project whose `.flocks/` is `state_dir` (empty when
    /// there is none, or no state home to keep one in).
    pub(crate) fn load(state_dir: &Path) -> Made {
        let path = crate::state::outside_dir(state_dir).map(|d| d.join("vms.json"));
        let vms = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Made { path, vms }
    }

    fn has(&self, vm: &Managed) -> bool {
        self.vms.contains(vm)
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Err(Error::CannotStart(
                "neither XDG_STATE_HOME nor HOME is set: flocks records the VMs it makes there, out of the agents' reach; set one".into(),
            ));
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                context: format!("create {}", dir.display()),
                source: e,
            })?;
        }
        let text = serde_json::to_vec_pretty(&self.vms).unwrap_or_default();
        crate::state::store::write_atomic(path, &text)
    }

    fn add(&mut self, vm: Managed) -> Result<()> {
        if !self.has(&vm) {
            self.vms.push(vm);
        }
        self.save()
    }

    fn forget(&mut self, pool: &str, name: &str) -> Result<()> {
        let before = self.vms.len();
        self.vms.retain(
            |m| !matches!(m, Managed::Vm { pool: p, name: n, .. } if p == pool && n == name),
        );
        if self.vms.len() == before {
            return Ok(());
        }
        self.save()
    }
}

/// A pool's VMs as state.json records them, checked.
#[derive(Debug, Default)]
pub(crate) struct Vms {
    /// The VMs `up` made: (name, where).
    pub ok: Vec<(String, Target)>,
    /// Why each other record is refused, for people.
    pub refused: Vec<String>,
}

impl Vms {
    pub(crate) fn targets(&self) -> Vec<Target> {
        self.ok.iter().map(|(_, t)| t.clone()).collect()
    }
}

/// The pool's VM records in `state`, each checked: a name `up` gives this
/// project, an ssh destination of plain words (`[user@]host`), and the same
/// record in what `up` made (`made`). Only those are ever connected to.
pub(crate) fn targets(
    state: &State,
    pool: &str,
    x: &ExedevConfig,
    project_key: &str,
    made: &Made,
) -> Vms {
    let mut out = Vms::default();
    for m in &state.managed {
        let Managed::Vm {
            pool: p,
            name,
            ssh_dest,
            ssh_port,
        } = m
        else {
            continue;
        };
        if p != pool {
            continue;
        }
        let why = if !safe_name(name) || !named_by_up(name, project_key) {
            Some(format!(
                "its name is not one `flocks up` gives this project's VMs ({}<6 letters>)",
                vm_prefix(project_key)
            ))
        } else if !safe_dest(ssh_dest) || *ssh_port == 0 {
            Some("its ssh destination is not a `[user@]host`".to_string())
        } else if !made.has(m) {
            Some(format!(
                "{} does not record it",
                made.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the state home (unset)".into())
            ))
        } else {
            None
        };
        match why {
            None => out.ok.push((name.clone(), vm_target(x, ssh_dest, *ssh_port))),
            Some(why) => out.refused.push(format!(
                "pool {pool}: the VM record {name:?} (ssh {ssh_dest} port {ssh_port}) in state.json is not one `flocks up` made: {why}. flocks does not connect to it (agents can write state.json; `flocks down` drops the record)"
            )),
        }
    }
    out
}

/// An ssh destination of plain words: `[user@]host`, no option, no space.
fn safe_dest(dest: &str) -> bool {
    let (user, host) = match dest.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, dest),
    };
    let word = |w: &str, extra: &[u8]| {
        !w.is_empty()
            && !w.starts_with('-')
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
    };
    user.is_none_or(|u| word(u, b"")) && word(host, b":[]")
}

pub(crate) fn vm_target(x: &ExedevConfig, ssh_dest: &str, ssh_port: u16) -> Target {
    Target {
        host: ssh_dest.to_string(),
        port: (ssh_port != 22).then_some(ssh_port),
        identity_file: x.identity_file.clone(),
        ssh_options: x.ssh_options.clone(),
        remote_dir: x.remote_dir.clone(),
    }
}

fn lobby_target(x: &ExedevConfig) -> Target {
    Target {
        host: x.lobby.clone(),
        port: None,
        identity_file: x.identity_file.clone(),
        ssh_options: x.ssh_options.clone(),
        remote_dir: x.remote_dir.clone(),
    }
}

/// A VM name from the lobby, checked before it goes back into a lobby command.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The start of every VM name `up` gives for project `project_key`:
/// `flocks-<the key in letters>-` (exe.dev refuses names that end in
/// `-<digits>`, so the hex key's digits become letters too).
fn vm_prefix(project_key: &str) -> String {
    let letters: String = project_key
        .chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from(b'a' + d as u8),
            None => 'x',
        })
        .collect();
    format!("flocks-{letters}-")
}

/// A new VM name for `up`: the project's prefix and six random letters.
fn new_vm_name(project_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!("{}:{}:{project_key}", std::process::id(), now.as_nanos());
    let d = Sha256::digest(seed.as_bytes());
    let tail: String = d
        .iter()
        .take(6)
        .map(|b| char::from(b'a' + b % 26))
        .collect();
    format!("{}{tail}", vm_prefix(project_key))
}

/// Whether `name` is one `up` gives VMs of project `project_key`:
/// state.json is writable from agents, so a record alone is not proof.
fn named_by_up(name: &str, project_key: &str) -> bool {
    name.strip_prefix(&vm_prefix(project_key))
        .is_some_and(|tail| tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_lowercase()))
}

/// The error in a lobby answer, or its text.
fn lobby_error(lobby: &str, what: &str, e: &SshError) -> Error {
    let text = e.message();
    let msg = text
        .find('{')
        .and_then(|i| serde_json::from_str::<serde_json::Value>(&text[i..]).ok())
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.to_string());
    Error::CannotStart(format!("exe.dev lobby {lobby}: `{what}` failed: {msg}"))
}

/// Create the pool's missing VMs (up to `count`), wait until each answers over
/// SSH, run `setup` once per VM. `save` is called after every state change,
/// so that a VM is recorded as soon as it exists. Returns what was done.
pub(crate) async fn up(
    pool: &PoolConfig,
    x: &ExedevConfig,
    project_key: &str,
    made: &mut Made,
    state: &mut State,
    save: &mut dyn FnMut(&State) -> Result<()>,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let lobby = lobby_target(x);
    let checked = targets(state, &pool.name, x, project_key, made);
    notes.extend(checked.refused.iter().cloned());
    let have = checked.ok.len();
    for _ in have..x.count {
        let what = format!("new --name={} --json", new_vm_name(project_key));
        let out = lobby
            .output(&what, b"", LOBBY_LIMIT)
            .await
            .map_err(|e| lobby_error(&x.lobby, &what, &e))?;
        let vm: NewVm = serde_json::from_str(out.trim()).map_err(|e| {
            Error::Other(format!(
                "exe.dev lobby {}: cannot read the answer to `new --json` ({e}): {}",
                x.lobby,
                out.trim()
            ))
        })?;
        if !safe_name(&vm.vm_name) || !named_by_up(&vm.vm_name, project_key) {
            return Err(Error::Other(format!(
                "exe.dev lobby {}: unexpected VM name {:?}",
                x.lobby, vm.vm_name
            )));
        }
        let record = Managed::Vm {
            pool: pool.name.clone(),
            name: vm.vm_name.clone(),
            ssh_dest: vm.ssh_dest.clone(),
            ssh_port: vm.ssh_port.unwrap_or(22),
        };
        if !safe_dest(&vm.ssh_dest) {
            return Err(Error::Other(format!(
                "exe.dev lobby {}: unexpected ssh destination {:?} for VM {}",
                x.lobby, vm.ssh_dest, vm.vm_name
            )));
        }
        // Outside the repo first: a VM in state.json only is never used.
        made.add(record.clone())?;
        state.managed.push(record);
        save(state)?;
        notes.push(format!(
            "pool {}: created VM {} ({})",
            pool.name, vm.vm_name, vm.ssh_dest
        ));
    }
    if have >= x.count {
        notes.push(format!(
            "pool {}: {} already up (count = {})",
            pool.name,
            crate::output::units::count(have, "VM"),
            x.count
        ));
    }
    // Wait for each VM, then install the helper and run setup once.
    let vms = targets(state, &pool.name, x, project_key, made).ok;
    for (name, t) in vms {
        wait_for(&t, &name).await?;
        super::connect(&t, &x.setup).await.map_err(|e| {
            Error::CannotStart(format!("pool {}: VM {name} ({}): {e}", pool.name, t.host))
        })?;
        notes.push(format!("pool {}: VM {name} is ready", pool.name));
    }
    Ok(notes)
}

async fn wait_for(t: &Target, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match t.output("true", b"", Duration::from_secs(30)).await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > VM_WAIT => {
                return Err(Error::CannotStart(format!(
                    "VM {name} ({}) did not answer over SSH within {}s: {e}",
                    t.host,
                    VM_WAIT.as_secs()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Remove exactly the VMs recorded in state (of `only` pool, or all), through
/// their pool's lobby. Each one leaves state as soon as it is gone.
pub(crate) async fn down(
    config: &Config,
    project_key: &str,
    made: &mut Made,
    only: Option<&str>,
    state: &mut State,
    save: &mut dyn FnMut(&State) -> Result<()>,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let vms: Vec<(String, String)> = state
        .managed
        .iter()
        .filter_map(|m| match m {
            Managed::Vm { pool, name, .. } if only.is_none_or(|o| o == pool) => {
                Some((pool.clone(), name.clone()))
            }
            _ => None,
        })
        .collect();
    let mut failed = Vec::new();
    let mut refused = Vec::new();
    for (pool, name) in vms {
        let x = match config.pool(&pool).map(|p| &p.backend) {
            Some(BackendConfig::Exedev(x)) => x,
            _ => {
                failed.push(format!(
                    "VM {name}: its pool {pool} is no longer an exedev pool in flocks.toml; remove it by hand (`ssh exe.dev rm {name}`)"
                ));
                continue;
            }
        };
        if !safe_name(&name) || !named_by_up(&name, project_key) {
            // Not one `up` made: forget the record, leave the VM alone.
            refused.push(format!(
                "pool {pool}: refused to remove VM {name:?}: state.json records it, but `flocks up` names this project's VMs {}<6 letters>; the record is dropped and the VM left as it is (the containers and VMs can write state.json)",
                vm_prefix(project_key)
            ));
            state.managed.retain(
                |m| !matches!(m, Managed::Vm { pool: p, name: n, .. } if *p == pool && *n == name),
            );
            save(state)?;
            made.forget(&pool, &name)?;
            continue;
        }
        let what = format!("rm {name} --json");
        match lobby_target(x).output(&what, b"", LOBBY_LIMIT).await {
            Ok(_) => {}
            Err(e) => {
                let err = lobby_error(&x.lobby, &what, &e).to_string();
                // Already gone on exe.dev's side: forget it too.
                if !err.contains("not found") && !err.contains("no such") {
                    failed.push(err);
                    continue;
                }
            }
        }
        state.managed.retain(
            |m| !matches!(m, Managed::Vm { pool: p, name: n, .. } if *p == pool && *n == name),
        );
        save(state)?;
        made.forget(&pool, &name)?;
        notes.push(format!("pool {pool}: removed VM {name}"));
    }
    if !failed.is_empty() {
        failed.extend(refused);
        return Err(Error::Other(failed.join("\n")));
    }
    if !refused.is_empty() {
        return Err(Error::CannotStart(refused.join("\n")));
    }
    if notes.is_empty() {
        notes.push("no VMs recorded: nothing to remove".into());
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_records_are_refused() {
        let key = "0123ab";
        let good = format!("{}abcdef", vm_prefix(key));
        let vm = |name: &str, dest: &str| Managed::Vm {
            pool: "p".into(),
            name: name.into(),
            ssh_dest: dest.into(),
            ssh_port: 22,
        };
        let made = Made {
            path: None,
            vms: vec![vm(&good, "root@vm.exe.xyz")],
        };
        let state = State {
            managed: vec![
                vm(&good, "root@vm.exe.xyz"),
                vm(&good, "root@attacker.example"),
                vm("evil", "root@vm.exe.xyz"),
                vm(&good, "-oProxyCommand=x"),
            ],
            ..State::default()
        };
        let x = ExedevConfig {
            count: 1,
            lobby: "exe.dev".into(),
            identity_file: None,
            ssh_options: Vec::new(),
            remote_dir: "~/flocks".into(),
            setup: Vec::new(),
        };
        let vms = targets(&state, "p", &x, key, &made);
        assert_eq!(vms.ok.len(), 1, "{vms:?}");
        assert_eq!(vms.ok[0].1.host, "root@vm.exe.xyz");
        assert_eq!(vms.refused.len(), 3, "{vms:?}");
        assert!(vms.refused[0].contains("does not record it"), "{vms:?}");
        assert!(vms.refused[1].contains("\"evil\""), "{vms:?}");
        assert!(vms.refused[2].contains("not a `[user@]host`"), "{vms:?}");
    }

    #[test]
    fn vm_names_are_checked() {
        assert!(safe_name("flock-abc123"));
        assert!(!safe_name("a;rm -rf /"));
        assert!(!safe_name("-x"));
        assert!(!safe_name(""));
    }

    #[test]
    fn vm_names_carry_the_project() {
        let name = new_vm_name("0a1b2c3d4e5f");
        assert!(name.starts_with("flocks-akblcmdneofp-"), "{name}");
        assert!(named_by_up(&name, "0a1b2c3d4e5f"), "{name}");
        assert!(safe_name(&name));
        assert!(!named_by_up(&name, "0a1b2c3d4e50"));
        assert!(!named_by_up("flock-abcdef", "0a1b2c3d4e5f"));
        assert!(!named_by_up("flocks-akblcmdneofp-abc", "0a1b2c3d4e5f"));
        assert!(!named_by_up("flocks-akblcmdneofp-abcde1", "0a1b2c3d4e5f"));
    }

    #[test]
    fn lobby_answers_parse() {
        let vm: NewVm = serde_json::from_str(
            r#"{"vm_name":"flock-a","ssh_dest":"root@127.0.0.2","ssh_port":22,"status":"running"}"#,
        )
        .unwrap();
        assert_eq!(vm.vm_name, "flock-a");
        let vm: NewVm =
            serde_json::from_str(r#"{"vm_name":"b","ssh_dest":"vm+b@exe.dev"}"#).unwrap();
        assert_eq!(vm.ssh_port, None);
    }
}
