//! A pack scanned before git reads it: object count, inflated sizes and delta results within `max_fetch_mb`.

use std::io::{BufRead, Read};

/// What a pack scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackScan {
    pub objects: u32,
    /// Inflated size of the objects (a delta counts as its result).
    pub inflated: u64,
}

#[derive(Debug)]
pub(crate) enum ScanError {
    /// Over the cap: the size found so far.
    TooLarge(u64),
    Bad(String),
    Io(std::io::Error),
}

/// Walk a pack stream's objects: each object's size is read from its header
/// (a delta's result size from the delta's own header) and added up against
/// `max` before the object is inflated, so that a small pack of huge
/// objects is refused without the work of inflating it; each object is then
/// inflated (to find where it ends), and must be exactly the size it said.
pub(crate) fn scan_pack<R: BufRead>(mut r: R, max: u64) -> Result<PackScan, ScanError> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|_| bad("shorter than a pack header"))?;
    if &head[..4] != b"PACK" {
        return Err(bad("no PACK signature"));
    }
    let version = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if version != 2 && version != 3 {
        return Err(bad(format!("pack version {version}")));
    }
    let count = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let mut inflated = 0u64;
    let mut work = 0u64;
    for i in 0..count {
        let byte = |r: &mut R| -> Result<u8, ScanError> {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)
                .map_err(|_| bad(format!("object {i} of {count} is cut short")))?;
            Ok(b[0])
        };
        let mut c = byte(&mut r)?;
        let kind = (c >> 4) & 7;
        let mut size = u64::from(c & 15);
        let mut shift = 4;
        while c & 0x80 != 0 {
            c = byte(&mut r)?;
            if shift > 60 {
                return Err(bad("an object size does not fit 64 bits"));
            }
            size |= u64::from(c & 0x7f) << shift;
            shift += 7;
        }
        let delta = match kind {
            1..=4 => false,
            6 => {
                let mut c = byte(&mut r)?;
                let mut n = 0;
                while c & 0x80 != 0 {
                    c = byte(&mut r)?;
                    n += 1;
                    if n > 9 {
                        return Err(bad("a delta offset does not fit 64 bits"));
                    }
                }
                true
            }
            7 => {
                let mut base = [0u8; 20];
                r.read_exact(&mut base)
                    .map_err(|_| bad(format!("object {i} of {count} is cut short")))?;
                true
            }
            k => return Err(bad(format!("object {i} has type {k}"))),
        };
        if !delta {
            inflated = inflated.saturating_add(size);
            if inflated > max {
                return Err(ScanError::TooLarge(inflated));
            }
        }
        // Inflating costs its declared size (a delta's too): bounded before
        // it is done.
        work = work.saturating_add(size);
        if work > max.saturating_mul(2) {
            return Err(ScanError::TooLarge(work.max(inflated)));
        }
        let first = inflate(&mut r, size, if delta { 20 } else { 0 })?;
        if delta {
            let result =
                delta_result_size(&first).ok_or_else(|| bad("a delta without a header"))?;
            inflated = inflated.saturating_add(result);
            if inflated > max {
                return Err(ScanError::TooLarge(inflated));
            }
        }
    }
    let mut trailer = Vec::new();
    r.take(21)
        .read_to_end(&mut trailer)
        .map_err(ScanError::Io)?;
    if trailer.len() != 20 {
        return Err(bad(format!(
            "{} bytes after the last object, not a 20-byte checksum",
            trailer.len()
        )));
    }
    Ok(PackScan {
        objects: count,
        inflated,
    })
}

pub(super) fn bad(why: impl Into<String>) -> ScanError {
    ScanError::Bad(why.into())
}

/// Inflate one object's zlib stream from `r`, which must give exactly
/// `size` bytes; consumes exactly the stream. Returns the first `keep`
/// bytes of what it inflated (a delta's header).
pub(super) fn inflate<R: BufRead>(r: &mut R, size: u64, keep: usize) -> Result<Vec<u8>, ScanError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    let mut out = vec![0u8; 64 * 1024];
    let mut first: Vec<u8> = Vec::new();
    loop {
        let input = r.fill_buf().map_err(ScanError::Io)?;
        let eof = input.is_empty();
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            .decompress(input, &mut out, FlushDecompress::None)
            .map_err(|e| bad(format!("bad zlib data: {e}")))?;
        let used = (z.total_in() - in0) as usize;
        let made = (z.total_out() - out0) as usize;
        r.consume(used);
        if z.total_out() > size {
            return Err(bad("an object inflates to more than its header says"));
        }
        if first.len() < keep {
            first.extend_from_slice(&out[..made.min(keep - first.len())]);
        }
        match status {
            Status::StreamEnd => break,
            _ if eof && used == 0 && made == 0 => {
                return Err(bad("the pack ends inside an object"));
            }
            _ => {}
        }
    }
    if z.total_out() != size {
        return Err(bad("an object inflates to less than its header says"));
    }
    Ok(first)
}

/// A delta's header: base size, then result size (7-bit little-endian
/// varints). The result size, once both are complete.
pub(super) fn delta_result_size(b: &[u8]) -> Option<u64> {
    let mut i = 0;
    let mut varint = || -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let c = *b.get(i)?;
            i += 1;
            if shift > 63 {
                return Some(u64::MAX);
            }
            v |= u64::from(c & 0x7f) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                return Some(v);
            }
        }
    };
    varint()?;
    varint()
}
