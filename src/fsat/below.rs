//! Files flocks keeps under `.flocks/` (and `.worktrees/`), which agents in
//! a container that mounts the repo (and local agents) can rewrite.
//!
//! A path is split at its last `.flocks` or `.worktrees` component: the
//! directory that holds it is the user's (opened by its full path, as flocks
//! resolved it); from there every component is opened with `O_NOFOLLOW`.
//! Where flocks keeps a file or a directory and finds something else there
//! (a link, a FIFO, a device, a file with other hard links, a file where a
//! directory goes), it removes that one name and makes its own in its place,
//! and says so in [`Opened::notes`]: nothing is ever written through a link.
//! Readers refuse what is not a regular file reached that way, and never
//! block on a FIFO.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, open, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{DIR, remove_tree};

/// The directories whose contents agents can rewrite.
const ANCHORS: [&str; 2] = [".flocks", ".worktrees"];

/// How many times flocks replaces what it finds before giving up (an agent
/// that keeps planting things as fast as flocks removes them).
const TRIES: usize = 8;

/// A file flocks opened, and what it replaced on the way, for people.
#[derive(Debug)]
pub(crate) struct Opened {
    pub file: File,
    pub notes: Vec<String>,
}

/// Say what flocks replaced, on stderr (quiet if stderr is closed).
pub(crate) fn tell(notes: &[String]) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    for n in notes {
        let _ = writeln!(err, "note: {n}");
    }
}

/// `path` split into the trusted directory and the components below it.
struct Below {
    base: PathBuf,
    /// No `.flocks` or `.worktrees` in the path: `base` is its parent,
    /// the user's, made like any directory when missing.
    plain: bool,
    /// Directories from `base` down, then the last name.
    dirs: Vec<OsString>,
    name: OsString,
}

impl Below {
    fn of(path: &Path) -> std::io::Result<Below> {
        let parts: Vec<Component> = path.components().collect();
        let anchor = parts
            .iter()
            .rposition(|c| matches!(c, Component::Normal(n) if ANCHORS.iter().any(|a| n == a)));
        let at = anchor.unwrap_or(parts.len().saturating_sub(1));
        let base: PathBuf = match &parts[..at] {
            [] => PathBuf::from("."),
            b => b.iter().collect(),
        };
        let mut names = Vec::new();
        for c in &parts[at..] {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                _ => return Err(invalid(path)),
            }
        }
        let name = names.pop().ok_or_else(|| invalid(path))?;
        Ok(Below {
            base,
            plain: anchor.is_none(),
            dirs: names,
            name,
        })
    }

    /// `rel` below the trusted directory `root` (a git dir flocks resolved).
    fn in_root(root: &Path, rel: &Path) -> std::io::Result<Below> {
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                _ => return Err(invalid(rel)),
            }
        }
        let name = names.pop().ok_or_else(|| invalid(rel))?;
        Ok(Below {
            base: root.to_path_buf(),
            plain: false,
            dirs: names,
            name,
        })
    }

    /// How people read the path of the first `n` directories (and the
    /// name, when `n` is all of them and `with_name`).
    fn shown(&self, n: usize, with_name: bool) -> String {
        let mut p: PathBuf = self.dirs[..n].iter().collect();
        if with_name {
            p.push(&self.name);
        }
        p.display().to_string()
    }

    /// The directory that holds the name, made where missing when `create`
    /// (replacing whatever else is there, said in `notes`).
    fn parent(&self, create: bool, notes: &mut Vec<String>) -> std::io::Result<OwnedFd> {
        if self.plain && create {
            std::fs::create_dir_all(&self.base)?;
        }
        let mut fd = open(
            &self.base,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for (i, d) in self.dirs.iter().enumerate() {
            fd = sub_dir(&fd, d, create, || self.shown(i + 1, false), notes)?;
        }
        Ok(fd)
    }
}

fn invalid(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{} is not a path flocks keeps files at", path.display()),
    )
}

/// What is at `name` in `dir`, for people: "a link (to X)", "a FIFO", ...
fn what_is(dir: &OwnedFd, name: &OsStr, st: Option<&FileStat>) -> String {
    let st = match st {
        Some(s) => *s,
        None => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(_) => return "something else".into(),
        },
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFLNK {
        match readlinkat(dir, name) {
            Ok(t) => format!("a link (to {})", Path::new(&t).display()),
            Err(_) => "a link".into(),
        }
    } else if kind == SFlag::S_IFIFO {
        "a FIFO".into()
    } else if kind == SFlag::S_IFSOCK {
        "a socket".into()
    } else if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK {
        "a device".into()
    } else if kind == SFlag::S_IFDIR {
        "a directory".into()
    } else if kind == SFlag::S_IFREG && st.st_nlink > 1 {
        format!("a hard link to another file ({} names)", st.st_nlink)
    } else {
        "not flocks' file".into()
    }
}

/// The note for what flocks replaced.
fn replaced(shown: &str, what: &str, with: &str) -> String {
    format!(
        "{shown} was {what}: flocks removed it and made {with} in its place (nothing was written through it; an agent may have put it there)"
    )
}

/// Open directory `name` in `dir` without following a link; when `create`,
/// make it, replacing what is there instead.
fn sub_dir(
    dir: &OwnedFd,
    name: &OsStr,
    create: bool,
    shown: impl Fn() -> String,
    notes: &mut Vec<String>,
) -> std::io::Result<OwnedFd> {
    for _ in 0..TRIES {
        match openat(dir, name, DIR, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(Errno::ELOOP | Errno::ENOTDIR) if create => {
                let what = what_is(dir, name, None);
                remove_tree(dir, &name.to_os_string()).or_else(missing_ok)?;
                notes.push(replaced(&shown(), &what, "a directory"));
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(std::io::Error::other(format!(
                    "{} is {}, not a directory: flocks does not follow links there (an agent may have put it there; remove it)",
                    shown(),
                    what_is(dir, name, None)
                )));
            }
            Err(e) => return Err(e.into()),
        }
        match mkdirat(dir, name, Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(kept_changing(&shown()))
}

fn kept_changing(shown: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{shown} kept being replaced while flocks made it (an agent may be racing flocks)"
    ))
}

fn missing_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// How [`open_file`] opens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Append,
    Truncate,
    ReadWrite,
}

fn open_file(path: &Path, how: How) -> std::io::Result<Opened> {
    let below = Below::of(path)?;
    let mut notes = Vec::new();
    let dir = below.parent(true, &mut notes)?;
    let shown = below.shown(below.dirs.len(), true);
    let access = match how {
        How::Append => OFlag::O_WRONLY | OFlag::O_APPEND,
        How::Truncate => OFlag::O_WRONLY,
        How::ReadWrite => OFlag::O_RDWR,
    };
    let flags = access | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    for _ in 0..TRIES {
        let what = match openat(
            &dir,
            below.name.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o666),
        ) {
            Ok(fd) => {
                let st = fstat(&fd)?;
                let regular =
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
                if regular && st.st_nlink <= 1 {
                    blocking(&fd)?;
                    let file = File::from(fd);
                    if how == How::Truncate {
                        file.set_len(0)?;
                    }
                    return Ok(Opened { file, notes });
                }
                what_is(&dir, &below.name, Some(&st))
            }
            // A link; a FIFO nobody reads; a directory where the file goes.
            Err(Errno::ELOOP | Errno::ENXIO | Errno::EISDIR | Errno::EWOULDBLOCK) => {
                what_is(&dir, &below.name, None)
            }
            Err(e) => return Err(e.into()),
        };
        remove_tree(&dir, &below.name).or_else(missing_ok)?;
        notes.push(replaced(&shown, &what, "a new file"));
    }
    Err(kept_changing(&shown))
}

/// Clear `O_NONBLOCK` (set so that opening a FIFO never blocks).
fn blocking(fd: &OwnedFd) -> std::io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Open `path` for appending, made if missing.
pub(crate) fn append(path: &Path) -> std::io::Result<Opened> {
    open_file(path, How::Append)
}

/// Open `path` empty, made if missing.
pub(crate) fn create(path: &Path) -> std::io::Result<Opened> {
    open_file(path, How::Truncate)
}

/// Open `path` to read and write as it is, made if missing: a lock file,
/// which is never removed while it is a regular file of its own (another
/// process may hold a lock on it).
pub(crate) fn open_lock(path: &Path) -> std::io::Result<Opened> {
    open_file(path, How::ReadWrite)
}

/// Directory `path` (made if missing when `create`), opened without
/// following links.
pub(crate) fn dir(path: &Path, create: bool) -> std::io::Result<(OwnedFd, Vec<String>)> {
    let below = Below::of(path)?;
    let mut notes = Vec::new();
    let parent = below.parent(create, &mut notes)?;
    let shown = below.shown(below.dirs.len(), true);
    let fd = sub_dir(&parent, &below.name, create, || shown.clone(), &mut notes)?;
    Ok((fd, notes))
}

/// Remove `path` and all it holds, without following a link on the way to
/// it or in it (a link is removed, never what it names). Nothing there is
/// not an error.
pub(crate) fn remove_all(path: &Path) -> std::io::Result<()> {
    remove(Below::of(path)?)
}

/// [`remove_all`] for `rel` below the trusted directory `root`.
pub(crate) fn remove_in(root: &Path, rel: &Path) -> std::io::Result<()> {
    remove(Below::in_root(root, rel)?)
}

fn remove(below: Below) -> std::io::Result<()> {
    let dir = match below.parent(false, &mut Vec::new()) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_tree(&dir, &below.name).or_else(missing_ok)
}

/// Rename `from` to `to` (under the same trusted directory), without
/// following a link on the way to either.
pub(crate) fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    move_to(Below::of(from)?, Below::of(to)?)
}

/// [`rename`] for `from` and `to` below the trusted directory `root`.
pub(crate) fn rename_in(root: &Path, from: &Path, to: &Path) -> std::io::Result<()> {
    move_to(Below::in_root(root, from)?, Below::in_root(root, to)?)
}

fn move_to(from: Below, to: Below) -> std::io::Result<()> {
    let mut notes = Vec::new();
    let a = from.parent(false, &mut notes)?;
    let b = to.parent(true, &mut notes)?;
    tell(&notes);
    renameat(&a, from.name.as_os_str(), &b, to.name.as_os_str())?;
    Ok(())
}

/// Open regular file `path` to read, without following a link or blocking.
/// `NotFound` when there is nothing there.
pub(crate) fn read(path: &Path) -> std::io::Result<File> {
    let below = Below::of(path)?;
    let dir = below.parent(false, &mut Vec::new())?;
    let shown = below.shown(below.dirs.len(), true);
    let fd = match openat(
        &dir,
        below.name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Err(not_regular(&shown, &what_is(&dir, &below.name, None))),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&fd)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(not_regular(&shown, &what_is(&dir, &below.name, Some(&st))));
    }
    blocking(&fd)?;
    Ok(File::from(fd))
}

fn not_regular(shown: &str, what: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{shown} is {what}, not flocks' file: flocks does not read through it (an agent may have put it there; remove it)"
    ))
}

/// [`read`] the whole file as text.
pub(crate) fn read_to_string(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    read(path)?.read_to_string(&mut s)?;
    Ok(s)
}

/// Write `path` atomically: a new temporary file beside it (never an
/// existing one), filled by `fill`, synced, renamed over `path` (which
/// replaces a link there, never follows it), the directory synced. Returns
/// the size written and what was replaced on the way.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<(u64, Vec<String>)> {
    let below = Below::of(path)?;
    let mut notes = Vec::new();
    let dir = below.parent(true, &mut notes)?;
    let shown = below.shown(below.dirs.len(), true);
    let mut tmp_name = OsString::from(".");
    tmp_name.push(&below.name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let mut made = None;
    for _ in 0..TRIES {
        match openat(
            &dir,
            tmp_name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o666),
        ) {
            Ok(fd) => {
                made = Some(fd);
                break;
            }
            Err(Errno::EEXIST) => remove_tree(&dir, &tmp_name).or_else(missing_ok)?,
            Err(e) => return Err(e.into()),
        }
    }
    let Some(fd) = made else {
        return Err(kept_changing(&shown));
    };
    let mut file = File::from(fd);
    let result = (|| -> std::io::Result<u64> {
        fill(&mut file)?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        let what = match fstatat(&dir, below.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st)
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
                    || st.st_nlink > 1 =>
            {
                Some(what_is(&dir, &below.name, Some(&st)))
            }
            _ => None,
        };
        match renameat(&dir, tmp_name.as_os_str(), &dir, below.name.as_os_str()) {
            Ok(()) => {}
            // A directory (or a full one) where the file goes.
            Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => {
                remove_tree(&dir, &below.name).or_else(missing_ok)?;
                renameat(&dir, tmp_name.as_os_str(), &dir, below.name.as_os_str())?;
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(what) = what {
            notes.push(replaced(&shown, &what, "a new file"));
        }
        let _ = nix::unistd::fsync(dir.as_fd());
        Ok(len)
    })();
    if result.is_err() {
        let _ = unlinkat(&dir, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    result.map(|len| (len, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    fn project() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join(".flocks");
        std::fs::create_dir_all(state.join("logs/t")).unwrap();
        (d, state)
    }

    #[test]
    fn a_planted_link_is_replaced_never_written_through() {
        let (d, state) = project();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "mine\n").unwrap();
        symlink(&victim, state.join("logs/t/2.log")).unwrap();
        let mut o = append(&state.join("logs/t/2.log")).unwrap();
        writeln!(o.file, "output").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");
        assert_eq!(
            std::fs::read_to_string(state.join("logs/t/2.log")).unwrap(),
            "output\n"
        );
        assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
        assert!(
            o.notes[0].starts_with(&format!(
                ".flocks/logs/t/2.log was a link (to {})",
                victim.display()
            )),
            "{:?}",
            o.notes
        );
    }

    #[test]
    fn a_linked_directory_is_replaced_and_hard_links_and_fifos_too() {
        let (d, state) = project();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::remove_dir_all(state.join("logs")).unwrap();
        symlink(&outside, state.join("logs")).unwrap();
        let o = create(&state.join("logs/t/1.log")).unwrap();
        assert!(
            o.notes[0].starts_with(".flocks/logs was a link"),
            "{:?}",
            o.notes
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // A hard link to a file of the user's.
        let mine = d.path().join("mine");
        std::fs::write(&mine, "mine").unwrap();
        std::fs::hard_link(&mine, state.join("events.jsonl")).unwrap();
        let mut o = append(&state.join("events.jsonl")).unwrap();
        write!(o.file, "event").unwrap();
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine");
        assert!(
            o.notes[0].contains("a hard link to another file"),
            "{:?}",
            o.notes
        );
        // A FIFO neither blocks a writer nor a reader.
        nix::unistd::mkfifo(&state.join("lock"), Mode::from_bits_truncate(0o644)).unwrap();
        nix::unistd::mkfifo(&state.join("state.json"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = read(&state.join("state.json")).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let o = open_lock(&state.join("lock")).unwrap();
        assert!(o.notes[0].contains("a FIFO"), "{:?}", o.notes);
        assert!(
            std::fs::symlink_metadata(state.join("lock"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn readers_refuse_links_and_writes_are_atomic() {
        let (d, state) = project();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "secret").unwrap();
        symlink(&secret, state.join("state.json")).unwrap();
        let e = read(&state.join("state.json")).unwrap_err();
        assert!(
            e.to_string().starts_with(".flocks/state.json is a link"),
            "{e}"
        );
        // A link planted where the temporary file goes, and at the name.
        symlink(
            &secret,
            state.join(format!(".state.json.tmp.{}", std::process::id())),
        )
        .unwrap();
        let (len, notes) = write_atomic(&state.join("state.json"), |f| f.write_all(b"{}")).unwrap();
        assert_eq!(len, 2);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        assert_eq!(read_to_string(&state.join("state.json")).unwrap(), "{}");
        assert!(
            notes[0].starts_with(".flocks/state.json was a link"),
            "{notes:?}"
        );
        // Outside `.flocks`: only the last component is walked.
        let plain = d.path().join("tasks.jsonl");
        write_atomic(&plain, |f| f.write_all(b"x")).unwrap();
        assert_eq!(read_to_string(&plain).unwrap(), "x");
        assert!(matches!(
            read(&state.join("missing")).map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        ));
    }
}
