//! A big snapshot mapped into memory instead of read into a buffer: the
//! page cache's pages are shared, not copied (a 10,000-task state.json is
//! 9 MB, two thousand pages to fault in and fill). Snapshots are only ever
//! replaced by a rename, never written in place, so the mapped file does
//! not change under a reader (a one-shot one: see `StateReader`).

use std::fs::File;
use std::os::fd::AsRawFd;

/// Below this, reading is as cheap as mapping.
const MAP_FROM: u64 = 1 << 20;

/// A file's bytes: read, or mapped.
pub(super) enum Bytes {
    Read(Vec<u8>),
    Mapped(Mapped),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Read(v) => v,
            Bytes::Mapped(m) => m.bytes(),
        }
    }
}

/// How to take a whole file.
#[derive(Clone, Copy)]
pub(super) enum Whole {
    /// Map it when it is big (and the map works), else read it.
    MapBig,
    Read,
}

/// The whole of `f`.
pub(super) fn whole(f: &mut File, how: Whole) -> std::io::Result<Bytes> {
    let size = f.metadata()?.len();
    if matches!(how, Whole::MapBig)
        && size >= MAP_FROM
        && let Ok(len) = usize::try_from(size)
        && let Some(m) = Mapped::of(f, len)
    {
        return Ok(Bytes::Mapped(m));
    }
    // Sized up front: growing a big buffer by doubling copies it.
    let mut bytes = Vec::with_capacity(size as usize + 1);
    std::io::Read::read_to_end(f, &mut bytes)?;
    Ok(Bytes::Read(bytes))
}

/// A private, read-only map of a whole file.
pub(super) struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn of(f: &File, len: usize) -> Option<Mapped> {
        // SAFETY: a new read-only private mapping of an open file; nothing
        // else refers to the address range it returns. Its pages are
        // filled now (MAP_POPULATE), not one fault at a time.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                f.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `of` mapped, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_file_is_mapped_and_a_small_one_read_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [("small", 1000usize), ("big", MAP_FROM as usize + 7)] {
            let path = dir.path().join(name);
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            std::fs::write(&path, &text).unwrap();
            let read = whole(&mut File::open(&path).unwrap(), Whole::Read).unwrap();
            assert!(matches!(read, Bytes::Read(_)));
            assert_eq!(&*read, &text[..]);
            let bytes = whole(&mut File::open(&path).unwrap(), Whole::MapBig).unwrap();
            assert_eq!(&*bytes, &text[..]);
            assert_eq!(matches!(bytes, Bytes::Mapped(_)), name == "big");
            // Replaced by a rename (as a snapshot is): the map still reads
            // the file it mapped.
            std::fs::write(dir.path().join("new"), b"new").unwrap();
            std::fs::rename(dir.path().join("new"), &path).unwrap();
            assert_eq!(&*bytes, &text[..]);
        }
    }
}
