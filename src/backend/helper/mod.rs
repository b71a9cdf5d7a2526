//! The helper protocol, host side, for every transport (ssh today; a docker
//! exec in clone mode; a bwrap sandbox; a Slurm job): the helper script
//! (`ssh/helper.sh`, protocol in its header) reads a header on its stdin and
//! answers `key value` lines on its stdout, and git objects travel both ways
//! as length-prefixed bundles.
//!
//! ```text
//!  host -> helper stdin:  FLOCKS-HELPER 1 / op <op> / key value... / end
//!                         (or "bundle N" then N bytes: the way in;
//!                          "prompt N" then N bytes: run)
//!  helper stdout -> host: key value... [ / bundle N / N bytes ] / EOF
//! ```
//!
//! Everything the helper prints comes from where the agent runs, so it is
//! parsed strictly: each op names the keys it may answer and the grammar of
//! each value; anything else is an error, never passed on. A bundle is
//! admitted by the intake (`git::intake`) before a byte of it is read.

pub(crate) mod pipe;
pub(crate) mod process;
pub(crate) mod session;

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::git::include::{IncludeError, IncludeSet};
use crate::git::intake::{IntakeError, Spooled, Want};

/// The helper script.
pub(crate) const SCRIPT: &str = include_str!("../ssh/helper.sh");

/// The environment variable that gives the helper its root directory, for
/// transports that run the script as `sh -c` text (no file, no `$0` path).
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "transports that pass the script as `sh -c` text (docker clone, bwrap)"
    )
)]
pub(crate) const ROOT_VAR: &str = "FLOCKS_HELPER_ROOT";

/// The first line of every header.
const MAGIC: &str = "FLOCKS-HELPER 1";
/// Longest reply line, and most reply lines, flocks reads.
const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 1000;

/// A value that cannot go into a header line (a newline or NUL byte would
/// forge the next line).
#[derive(Debug, Clone, thiserror::Error)]
#[error("a value for the helper's `{key}` holds a newline or a NUL byte; refusing to send it")]
pub(crate) struct Unsendable {
    pub key: String,
}

/// A header for the helper's stdin, built line by line; every value is
/// checked to be one line.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    text: String,
}

impl Header {
    pub(crate) fn new(op: &'static str) -> Header {
        Header {
            text: format!("{MAGIC}\nop {op}\n"),
        }
    }

    /// `key value`.
    pub(crate) fn line(
        mut self,
        key: &'static str,
        value: impl std::fmt::Display,
    ) -> Result<Self, Unsendable> {
        let value = value.to_string();
        if value.contains(['\n', '\r', '\0']) {
            return Err(Unsendable { key: key.into() });
        }
        self.text.push_str(key);
        self.text.push(' ');
        self.text.push_str(&value);
        self.text.push('\n');
        Ok(self)
    }

    /// `key value` for each value.
    pub(crate) fn lines<I, V>(mut self, key: &'static str, values: I) -> Result<Self, Unsendable>
    where
        I: IntoIterator<Item = V>,
        V: std::fmt::Display,
    {
        for v in values {
            self = self.line(key, v)?;
        }
        Ok(self)
    }

    /// `env NAME=VALUE` lines; values that are not one line are left out
    /// (a git identity with a newline is not worth failing an attempt).
    pub(crate) fn env(mut self, env: &[(String, String)]) -> Self {
        for (k, v) in env {
            if let Ok(h) = self.clone().line("env", format!("{k}={v}")) {
                self = h;
            }
        }
        self
    }

    /// The header ends here: `end`.
    pub(crate) fn end(mut self) -> Vec<u8> {
        self.text.push_str("end\n");
        self.text.into_bytes()
    }

    /// The header ends with `bundle N`; N bytes of bundle follow.
    pub(crate) fn bundle(mut self, len: u64) -> Vec<u8> {
        self.text.push_str(&format!("bundle {len}\n"));
        self.text.into_bytes()
    }

    /// The header ends with `prompt N`; N bytes of prompt follow (run).
    pub(crate) fn prompt(mut self, len: usize) -> Vec<u8> {
        self.text.push_str(&format!("prompt {len}\n"));
        self.text.into_bytes()
    }
}

/// The grammar of a reply value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value {
    /// A full object id (40 lower-case hex digits).
    Oid,
    /// An object id, or `none`.
    OidOrNone,
    /// `yes` or `no`.
    YesNo,
    /// An absolute path (no `..` component).
    Path,
    /// Lower-case hex digits.
    Hex,
    /// A decimal number.
    Count,
    /// One of these words.
    Word(&'static [&'static str]),
    /// Printable text (for people: versions), at most 200 characters.
    Text,
    /// Empty or printable text.
    OptionalText,
}

impl Value {
    fn accepts(self, v: &str) -> bool {
        let hex =
            |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let text = |s: &str| s.len() <= 200 && s.chars().all(|c| !c.is_control());
        match self {
            Value::Oid => v.len() == 40 && hex(v),
            Value::OidOrNone => v == "none" || (v.len() == 40 && hex(v)),
            Value::YesNo => v == "yes" || v == "no",
            Value::Path => {
                v.starts_with('/')
                    && v.len() <= 1024
                    && v.chars().all(|c| !c.is_control())
                    && !Path::new(v)
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
            }
            Value::Hex => hex(v),
            Value::Count => !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()),
            Value::Word(words) => words.contains(&v),
            Value::Text => !v.is_empty() && text(v),
            Value::OptionalText => text(v),
        }
    }
}

/// One key an op may answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub name: &'static str,
    pub value: Value,
    /// It must be there.
    pub required: bool,
    /// It may come more than once.
    pub many: bool,
}

const fn key(name: &'static str, value: Value) -> Key {
    Key {
        name,
        value,
        required: true,
        many: false,
    }
}

const fn optional(name: &'static str, value: Value) -> Key {
    Key {
        name,
        value,
        required: false,
        many: false,
    }
}

/// What an op answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub op: &'static str,
    pub keys: &'static [Key],
    /// It may end with `bundle N` and the bundle (objects out).
    pub bundle: bool,
}

/// The replies of the helper's ops.
pub(crate) mod reply {
    use super::{Key, Spec, Value, key, optional};

    const SETUP: Value = Value::Word(&["done", "needed"]);

    pub(crate) const INIT: Spec = Spec {
        op: "init",
        keys: &[key("root", Value::Path), key("setup", SETUP)],
        bundle: false,
    };
    /// `prepare`: the worktree; or, nothing prepared, what an interrupted
    /// attempt left (with `salvage yes`: `head` and a bundle), or `start no`
    /// and the tips the mirror has (send the start first).
    pub(crate) const PREPARE: Spec = Spec {
        op: "prepare",
        keys: &[
            optional("worktree", Value::Path),
            optional("setup_mark", Value::Hex),
            optional("head", Value::Oid),
            optional("start", Value::Word(&["no"])),
            Key {
                name: "have",
                value: Value::Oid,
                required: false,
                many: true,
            },
        ],
        bundle: true,
    };
    /// Objects out: the branch's head, its leftovers committed.
    pub(crate) const FINISH: Spec = Spec {
        op: "finish",
        keys: &[key("leftovers", Value::YesNo), key("head", Value::Oid)],
        bundle: true,
    };
    pub(crate) const SALVAGE: Spec = Spec {
        op: "salvage",
        keys: &[key("head", Value::OidOrNone)],
        bundle: true,
    };
    /// What the agent side has: the start commit, and the tips it knows.
    pub(crate) const HAVE: Spec = Spec {
        op: "have",
        keys: &[
            key("start", Value::YesNo),
            Key {
                name: "have",
                value: Value::Oid,
                required: false,
                many: true,
            },
        ],
        bundle: false,
    };
    /// What a host has (for `flocks hosts check`).
    pub(crate) const CHECK: Spec = Spec {
        op: "check",
        keys: &[
            key("root", Value::Path),
            key("git", Value::Text),
            key("agent_path", Value::OptionalText),
            optional("agent_version", Value::OptionalText),
            key("free_kb", Value::OptionalText),
            key("tar", Value::Word(&["yes", "missing"])),
            key("setup", SETUP),
        ],
        bundle: false,
    };
    /// `pack`: the mirror's upkeep, what it found and did.
    pub(crate) const PACK: Spec = Spec {
        op: "pack",
        keys: &[
            key("packed_refs", Value::Count),
            key("gc", Value::YesNo),
            key("loose_objects", Value::Count),
            key("packs", Value::Count),
        ],
        bundle: false,
    };
    /// Ops that answer nothing (receive, include, mark, release).
    pub(crate) const NOTHING: Spec = Spec {
        op: "-",
        keys: &[],
        bundle: false,
    };
}

/// Why a helper's reply was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    #[error("the helper's reply to `{op}` has a line flocks does not expect: {line:?}")]
    Unexpected { op: &'static str, line: String },
    #[error("the helper's reply to `{op}` has a bad `{key}`: {value:?}")]
    BadValue {
        op: &'static str,
        key: &'static str,
        value: String,
    },
    #[error("the helper's reply to `{op}` has `{key}` twice")]
    Repeated { op: &'static str, key: &'static str },
    #[error("the helper's reply to `{op}` lacks `{key}`")]
    Missing { op: &'static str, key: &'static str },
    #[error("the helper's reply to `{op}` is too long")]
    TooLong { op: &'static str },
    #[error("the helper's reply to `{op}` ends inside its bundle ({got} of {len} bytes)")]
    Truncated {
        op: &'static str,
        got: u64,
        len: u64,
    },
    #[error("the helper's reply to `{op}` goes on after its bundle")]
    Trailing { op: &'static str },
    /// The intake refused the bundle as it was announced (its size).
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("reading the helper's reply to `{op}`: {why}")]
    Io { op: &'static str, why: String },
}

/// A parsed reply: its fields, and the bundle it carried (admitted and
/// spooled by the intake, not yet checked).
#[derive(Default)]
pub(crate) struct Reply {
    fields: Vec<(&'static str, String)>,
    pub bundle: Option<Spooled>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("fields", &self.fields)
            .field("bundle", &self.bundle.is_some())
            .finish()
    }
}

impl Reply {
    /// The value of `key` (the first, for a repeated one).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as an object id (its grammar checked it).
    pub(crate) fn oid(&self, key: &str) -> Option<git2::Oid> {
        self.get(key)
            .filter(|v| *v != "none")
            .and_then(|v| git2::Oid::from_str(v).ok())
    }
}

/// Parse reply lines (text without a bundle) against `spec`.
pub(crate) fn parse(text: &str, spec: &Spec) -> Result<Reply, ReplyError> {
    let mut reply = Reply::default();
    for (i, line) in text.lines().enumerate() {
        if i >= MAX_LINES || line.len() > MAX_LINE {
            return Err(ReplyError::TooLong { op: spec.op });
        }
        field(&mut reply, line, spec)?;
    }
    complete(&reply, spec)?;
    Ok(reply)
}

fn field(reply: &mut Reply, line: &str, spec: &Spec) -> Result<(), ReplyError> {
    let (k, v) = line.split_once(' ').unwrap_or((line, ""));
    let Some(key) = spec.keys.iter().find(|key| key.name == k) else {
        return Err(ReplyError::Unexpected {
            op: spec.op,
            line: line.chars().take(120).collect(),
        });
    };
    if !key.value.accepts(v) {
        return Err(ReplyError::BadValue {
            op: spec.op,
            key: key.name,
            value: v.chars().take(120).collect(),
        });
    }
    if !key.many && reply.get(key.name).is_some() {
        return Err(ReplyError::Repeated {
            op: spec.op,
            key: key.name,
        });
    }
    reply.fields.push((key.name, v.to_string()));
    Ok(())
}

fn complete(reply: &Reply, spec: &Spec) -> Result<(), ReplyError> {
    match spec
        .keys
        .iter()
        .find(|k| k.required && reply.get(k.name).is_none())
    {
        Some(k) => Err(ReplyError::Missing {
            op: spec.op,
            key: k.name,
        }),
        None => Ok(()),
    }
}

/// Read a reply from the helper's stdout to its end: lines per `spec`,
/// then, if the op may send one and does, `bundle N` and exactly N bytes,
/// admitted by `want`'s intake (refused at once when N is over the cap)
/// and spooled into its quarantine; nothing may follow.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    r: R,
    spec: &Spec,
    want: Option<&Want>,
) -> Result<Reply, ReplyError> {
    let io = |e: std::io::Error| ReplyError::Io {
        op: spec.op,
        why: e.to_string(),
    };
    let mut r = BufReader::new(r);
    let mut reply = Reply::default();
    let mut buf = Vec::new();
    for _ in 0..=MAX_LINES {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(io)?;
        if n == 0 {
            complete(&reply, spec)?;
            return Ok(reply);
        }
        if buf.last() != Some(&b'\n') {
            return Err(ReplyError::TooLong { op: spec.op });
        }
        buf.pop();
        let line = String::from_utf8(buf.clone()).map_err(|_| ReplyError::Unexpected {
            op: spec.op,
            line: String::from_utf8_lossy(&buf).chars().take(120).collect(),
        })?;
        if let Some(len) = line.strip_prefix("bundle ")
            && spec.bundle
        {
            let len: u64 = match len.parse() {
                Ok(n) if Value::Count.accepts(len) => n,
                _ => {
                    return Err(ReplyError::BadValue {
                        op: spec.op,
                        key: "bundle",
                        value: len.chars().take(40).collect(),
                    });
                }
            };
            complete(&reply, spec)?;
            let Some(want) = want else {
                return Err(ReplyError::Unexpected {
                    op: spec.op,
                    line: line.clone(),
                });
            };
            let admitted = want.admit(len)?;
            let file = admitted.file.try_clone().map_err(io)?;
            let mut file = tokio::fs::File::from_std(file);
            let got = tokio::io::copy(&mut (&mut r).take(len), &mut file)
                .await
                .map_err(io)?;
            file.flush().await.map_err(io)?;
            if got != len {
                return Err(ReplyError::Truncated {
                    op: spec.op,
                    got,
                    len,
                });
            }
            let mut one = [0u8; 1];
            if r.read(&mut one).await.map_err(io)? != 0 {
                return Err(ReplyError::Trailing { op: spec.op });
            }
            reply.bundle = Some(admitted.spooled());
            return Ok(reply);
        }
        field(&mut reply, &line, spec)?;
    }
    Err(ReplyError::TooLong { op: spec.op })
}

/// The helper's `include` input: its header, then `.worktreeinclude`'s
/// files as a tar stream (each directory above a file with its mode, then
/// the file with its mode; plain relative paths, extracted in the
/// worktree). Written to an unnamed temporary file, so that large files
/// stream from the disk to the transport instead of through memory.
pub(crate) fn include_archive(task: &str, set: &IncludeSet) -> Result<std::fs::File, IncludeError> {
    use std::io::{Seek, Write};
    let io = |what: &Path, e: std::io::Error| IncludeError::Transfer {
        host: String::new(),
        why: format!("{}: {e}", what.display()),
    };
    let tmp = std::env::temp_dir();
    let mut file = unnamed_file(&tmp).map_err(|e| io(&tmp, e))?;
    let header = Header::new("include")
        .line("task", task)
        .map_err(|e| io(Path::new(task), std::io::Error::other(e.to_string())))?
        .end();
    file.write_all(&header).map_err(|e| io(&tmp, e))?;
    let mut b = tar::Builder::new(file);
    let mut dirs = std::collections::BTreeSet::new();
    for f in &set.files {
        let mut d = PathBuf::new();
        if let Some(parent) = f.rel.parent() {
            for (i, c) in parent.iter().enumerate() {
                d.push(c);
                if dirs.insert(d.clone()) {
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(f.dir_modes.get(i).copied().unwrap_or(0o755));
                    h.set_size(0);
                    h.set_mtime(0);
                    b.append_data(&mut h, &d, std::io::empty())
                        .map_err(|e| io(&d, e))?;
                }
            }
        }
        let src = set.open(f)?;
        let len = src.metadata().map_err(|e| io(&f.rel, e))?.len();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_size(len);
        h.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        // Exactly `len` bytes, as the header says, should the file change meanwhile.
        let body = std::io::Read::take(
            std::io::Read::chain(std::io::Read::take(src, len), std::io::repeat(0)),
            len,
        );
        b.append_data(&mut h, &f.rel, body)
            .map_err(|e| io(&f.rel, e))?;
    }
    let mut file = b.into_inner().map_err(|e| io(&tmp, e))?;
    file.rewind().map_err(|e| io(&tmp, e))?;
    Ok(file)
}

/// A new file in `dir` that no name leads to (removed as soon as made).
pub(crate) fn unnamed_file(dir: &Path) -> std::io::Result<std::fs::File> {
    let (fd, path) = nix::unistd::mkstemp(&dir.join("flocks-helper-XXXXXX"))?;
    let _ = std::fs::remove_file(&path);
    Ok(std::fs::File::from(fd))
}

/// A bundle of `start` for an agent side that has `haves` (commits this
/// repository also has are left out of it), in an unnamed temporary file:
/// `(file, length)`. The bundle's one ref is `refs/flocks/start`.
pub(crate) fn start_bundle(
    repo_dir: &Path,
    start: git2::Oid,
    haves: &[git2::Oid],
) -> Result<(std::fs::File, u64), String> {
    use std::io::Seek;
    let repo = git2::Repository::open(repo_dir).map_err(|e| e.message().to_string())?;
    let dir = repo.commondir().to_path_buf();
    let mut file = unnamed_file(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let len = {
        let mut w = std::io::BufWriter::new(&mut file);
        let n = crate::git::intake::write_bundle(&repo, start, START_REF, haves, &mut w)
            .map_err(|e| e.message().to_string())?;
        std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
        n
    };
    file.rewind().map_err(|e| e.to_string())?;
    Ok((file, len))
}

/// The ref a start bundle carries.
pub(crate) const START_REF: &str = "refs/flocks/start";

/// Write `header`, then `body` (a file, from its start), to a transport's
/// stdin, and close it.
pub(crate) async fn send<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    header: &[u8],
    body: Option<std::fs::File>,
) -> std::io::Result<()> {
    w.write_all(header).await?;
    if let Some(f) = body {
        let mut f = tokio::fs::File::from_std(f);
        tokio::io::copy(&mut f, w).await?;
    }
    w.flush().await?;
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_lines_and_refuse_newlines() {
        let h = Header::new("finish")
            .line("task", "t1")
            .unwrap()
            .lines("have", ["a", "b"])
            .unwrap()
            .env(&[
                ("GIT_AUTHOR_NAME".into(), "A".into()),
                ("EVIL".into(), "x\nop run".into()),
            ])
            .end();
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "FLOCKS-HELPER 1\nop finish\ntask t1\nhave a\nhave b\nenv GIT_AUTHOR_NAME=A\nend\n"
        );
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let e = Header::new("prepare").line("branch", bad).unwrap_err();
            assert_eq!(e.key, "branch");
        }
        assert_eq!(
            String::from_utf8(Header::new("receive").bundle(12)).unwrap(),
            "FLOCKS-HELPER 1\nop receive\nbundle 12\n"
        );
    }

    #[test]
    fn replies_are_parsed_strictly() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let r = parse(&format!("leftovers no\nhead {oid}\n"), &reply::FINISH).unwrap();
        assert_eq!(r.get("leftovers"), Some("no"));
        assert_eq!(r.oid("head").unwrap().to_string(), oid);
        let cases = [
            ("leftovers no\n", "lacks `head`"),
            ("leftovers maybe\nhead x\n", "bad `leftovers`"),
            (&format!("leftovers no\nhead {oid}\nhead {oid}\n"), "twice"),
            (
                &format!("leftovers no\nhead {oid}\nworktree /x\n"),
                "does not expect",
            ),
            ("leftovers no\nhead ../../etc\n", "bad `head`"),
            (
                &format!("leftovers no\nhead {}\n", oid.to_uppercase()),
                "bad `head`",
            ),
        ];
        for (text, said) in cases {
            let e = parse(text, &reply::FINISH).unwrap_err().to_string();
            assert!(e.contains(said), "{text:?}: {e}");
        }
        let e = parse("worktree /a/../etc\n", &reply::PREPARE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad `worktree`"), "{e}");
        let e = parse("worktree relative\n", &reply::PREPARE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad `worktree`"), "{e}");
        let e = parse("worktree /w\nsetup_mark \u{1b}[2J\n", &reply::PREPARE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad `setup_mark`"), "{e}");
        let r = parse(&format!("start no\nhave {oid}\nhave {oid}\n"), &reply::HAVE).unwrap();
        assert_eq!(r.all("have").count(), 2);
    }

    #[tokio::test]
    async fn a_bundle_is_framed_by_its_length() {
        let tmp = tempfile::tempdir().unwrap();
        crate::git::testing::init_repo(tmp.path());
        let repo = git2::Repository::open(tmp.path()).unwrap();
        let head = repo.head().unwrap().target().unwrap();
        let want = Want {
            repo_dir: tmp.path().to_path_buf(),
            task: "t".into(),
            branch: "main".into(),
            origin: head,
            max_bytes: 1000,
            reflog: "x".into(),
            host_worktree: None,
        };
        let ok = format!("leftovers no\nhead {head}\nbundle 5\nhello");
        let r = read_reply(ok.as_bytes(), &reply::FINISH, Some(&want))
            .await
            .unwrap();
        assert!(r.bundle.is_some());
        let cut = format!("leftovers no\nhead {head}\nbundle 9\nhello");
        let e = read_reply(cut.as_bytes(), &reply::FINISH, Some(&want))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ReplyError::Truncated { got: 5, len: 9, .. }),
            "{e}"
        );
        let more = format!("leftovers no\nhead {head}\nbundle 5\nhello, and more");
        let e = read_reply(more.as_bytes(), &reply::FINISH, Some(&want))
            .await
            .unwrap_err();
        assert!(matches!(e, ReplyError::Trailing { .. }), "{e}");
        let big = format!("leftovers no\nhead {head}\nbundle 5000\nhello");
        let e = read_reply(big.as_bytes(), &reply::FINISH, Some(&want))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("max_fetch_mb"), "{e}");
        // No bundle where the op sends none.
        let e = read_reply("bundle 5\nhello".as_bytes(), &reply::INIT, Some(&want))
            .await
            .unwrap_err();
        assert!(matches!(e, ReplyError::Unexpected { .. }), "{e}");
        // A reply without a bundle.
        let r = read_reply(
            format!("leftovers yes\nhead {head}\n").as_bytes(),
            &reply::FINISH,
            Some(&want),
        )
        .await
        .unwrap();
        assert!(r.bundle.is_none() && r.get("leftovers") == Some("yes"));
    }
}
