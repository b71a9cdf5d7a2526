//! FxHash (rustc's hasher): a fast hash for keys flocks makes itself, where
//! no one can choose inputs to collide them (a cache's key, an index whose
//! hits are checked). Not for maps an agent or a request fills.

use std::hash::Hasher;

/// The hasher: eight bytes a step.
#[derive(Default)]
pub(crate) struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The Fx hash of a string.
pub(crate) fn of(s: &str) -> u64 {
    use std::hash::Hash;
    let mut h = Fx::default();
    s.hash(&mut h);
    h.finish()
}
