//! Bundles: the header of one that came back (one ref, its prerequisites), and writing one for the way in.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use git2::{Oid, Repository};

use super::*;

/// A bundle's header.
pub(super) struct BundleHeader {
    pub(super) prerequisites: Vec<Oid>,
    pub(super) refs: Vec<(Oid, String)>,
    pub(super) pack_offset: u64,
}

/// Read a v2 or v3 (sha1, no filter) bundle header, strictly.
pub(super) fn read_header(file: &mut File) -> Result<BundleHeader, String> {
    let mut r = BufReader::new(&mut *file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    let mut next = |r: &mut BufReader<&mut File>, offset: &mut u64| -> Result<String, String> {
        line.clear();
        let n = r
            .by_ref()
            .take(MAX_HEADER_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        *offset += n as u64;
        if *offset > MAX_HEADER as u64 {
            return Err("its header is too long".into());
        }
        if line.last() != Some(&b'\n') {
            return Err("its header ends early or has a line that is too long".into());
        }
        line.pop();
        String::from_utf8(line.clone()).map_err(|_| "its header is not text".to_string())
    };
    let magic = next(&mut r, &mut offset)?;
    let v3 = match magic.as_str() {
        "# v2 git bundle" => false,
        "# v3 git bundle" => true,
        _ => return Err(format!("not a git bundle (first line {magic:?})")),
    };
    let mut h = BundleHeader {
        prerequisites: Vec::new(),
        refs: Vec::new(),
        pack_offset: 0,
    };
    let oid = |s: &str| -> Result<Oid, String> {
        if s.len() == 40
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Oid::from_str(s).map_err(|e| e.message().to_string())
        } else {
            Err(format!("{s:?} is not an object id"))
        }
    };
    loop {
        let l = next(&mut r, &mut offset)?;
        if l.is_empty() {
            break;
        }
        if let Some(cap) = l.strip_prefix('@') {
            if !v3 || cap != "object-format=sha1" {
                return Err(format!("unsupported bundle capability @{cap}"));
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix('-') {
            let id = rest.split(' ').next().unwrap_or_default();
            h.prerequisites.push(oid(id)?);
            continue;
        }
        let (id, name) = l
            .split_once(' ')
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        if !git2::Reference::is_valid_name(name) {
            return Err(format!("bad ref name {name:?}"));
        }
        h.refs.push((oid(id)?, name.to_string()));
    }
    h.pack_offset = offset;
    Ok(h)
}

/// Write a bundle of `tip` (under `refname`) for a repository that has
/// `haves` (commits this repository has too; others are left out): the way
/// in, host to agent. The pack is libgit2's, streamed into `out`.
pub(crate) fn write_bundle(
    repo: &Repository,
    tip: Oid,
    refname: &str,
    haves: &[Oid],
    out: &mut impl Write,
) -> Result<u64, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    let mut prerequisites = Vec::new();
    for h in haves {
        if repo.find_commit(*h).is_ok() {
            walk.hide(*h)?;
            prerequisites.push(*h);
        }
    }
    let mut header = String::from("# v2 git bundle\n");
    for p in &prerequisites {
        header.push_str(&format!("-{p}\n"));
    }
    header.push_str(&format!("{tip} {refname}\n\n"));
    let mut written = header.len() as u64;
    out.write_all(header.as_bytes())
        .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    let mut pb = repo.packbuilder()?;
    pb.insert_walk(&mut walk)?;
    let mut failed = None;
    pb.foreach(|chunk| match out.write_all(chunk) {
        Ok(()) => {
            written += chunk.len() as u64;
            true
        }
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(git2::Error::from_str(&e.to_string()));
    }
    Ok(written)
}
