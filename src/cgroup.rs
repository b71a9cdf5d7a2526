//! cgroup v2 containment of one attempt: a child cgroup of the supervisor's
//! own, which the agent enters before it execs and cannot leave by setsid,
//! double forks or a changed environment; stopping it is `cgroup.kill`.
//!
//! Available where the supervisor's cgroup is writable: as root, or where
//! systemd delegates a subtree to the user (`user@.service`, a
//! `systemd-run --user --scope`). Elsewhere `create` says why and the
//! supervisor falls back to its subreaper and the attempt tag.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// Why an attempt gets no cgroup of its own (said in its log; the supervisor
/// falls back to its subreaper and the attempt tag).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted")]
    NoHierarchy,
    #[error("this process is in no cgroup v2 cgroup")]
    NotInCgroup,
    #[error("cannot create cgroup {}: {source}", .dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a cgroup", .0.display())]
    NotACgroup(PathBuf),
    #[error("bad cgroup path {}", .0.display())]
    BadPath(PathBuf),
}

/// An attempt's cgroup directory.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// Make `<our cgroup>/<name>`. Err(why not), for the log.
    pub(crate) fn create(name: &str) -> Result<Cgroup, CgroupError> {
        mount_point().ok_or(CgroupError::NoHierarchy)?;
        let parent = own_dir().ok_or(CgroupError::NotInCgroup)?;
        let dir = parent.join(name);
        if let Err(source) = std::fs::create_dir(&dir) {
            return Err(CgroupError::Create { dir, source });
        }
        let cg = Cgroup { dir };
        if !cg.dir.join("cgroup.procs").exists() {
            cg.remove();
            return Err(CgroupError::NotACgroup(parent));
        }
        Ok(cg)
    }

    /// An existing cgroup directory (the watchdog's view).
    pub(crate) fn at(dir: PathBuf) -> Cgroup {
        Cgroup { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `cgroup.procs`, for a child to write `0` to before it
    /// execs (see [`enter`]).
    pub(crate) fn procs_path(&self) -> Result<CString, CgroupError> {
        CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| CgroupError::BadPath(self.dir.clone()))
    }

    /// Every process in the cgroup and the cgroups below it (an agent may
    /// make its own).
    pub(crate) fn members(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out
    }

    /// SIGKILL to every member at once (`cgroup.kill`, Linux 5.14), or one
    /// by one where the kernel has no `cgroup.kill`.
    pub(crate) fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            crate::proc::signal_all(&self.members(), Signal::SIGKILL);
        }
    }

    /// Kill what is left, wait (bounded) until it is empty, and remove it.
    pub(crate) fn kill_and_remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.members().is_empty() {
                break;
            }
            self.kill();
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.remove();
    }

    /// Remove the cgroup and those below it (they must be empty).
    fn remove(&self) {
        let mut dirs = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Kill and remove the cgroups whose names start with `prefix` beside ours
/// (those an earlier supervisor made, if its watchdog died too). Returns how
/// many there were.
pub(crate) fn sweep(prefix: &str) -> usize {
    let Some(parent) = own_dir() else {
        return 0;
    };
    let mut n = 0;
    for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir())
            && e.file_name().to_string_lossy().starts_with(prefix)
        {
            Cgroup::at(e.path()).kill_and_remove();
            n += 1;
        }
    }
    n
}

/// The directory of this process's own cgroup v2 cgroup.
fn own_dir() -> Option<PathBuf> {
    let mount = mount_point()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim().trim_start_matches('/')))
}

/// The name of an attempt's cgroup: `flocks-<tag>-<supervisor pid>`, with
/// the tag's `:` (and anything else a name should not hold) as `_`.
pub(crate) fn name_for(tag: &str, pid: u32) -> String {
    format!("{}-{pid}", prefix_for(tag))
}

/// The start of the names of the cgroups of tags that start with `tag`.
pub(crate) fn prefix_for(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("flocks-{tag}")
}

/// Move the calling process into the cgroup whose `cgroup.procs` is `procs`.
/// Only async-signal-safe calls: it runs between fork and exec.
pub(crate) fn enter(procs: &CString) -> std::io::Result<()> {
    // SAFETY: a valid NUL-terminated path; open/write/close are
    // async-signal-safe.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid system).
fn mount_point() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}
