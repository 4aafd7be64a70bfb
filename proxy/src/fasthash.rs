//! A small, fast, non-cryptographic hasher (the `FxHash` algorithm used inside rustc) for maps on
//! the request path whose keys no caller can choose: the record cache (keys come from records the
//! plugin writes; a lookup with any other key cannot lengthen a chain) and the metrics counters
//! (keys come from the policy file). Std's SipHash was a visible share of the per-request cost.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxBuildHasher = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn maps_work_and_hashes_differ() {
        let mut m: FxHashMap<IpAddr, u32> = FxHashMap::default();
        for i in 0..1000u32 {
            m.insert(IpAddr::from(i.to_be_bytes()), i);
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(&IpAddr::from(i.to_be_bytes())), Some(&i));
        }
        let mut m2: FxHashMap<Box<str>, u32> = FxHashMap::default();
        m2.insert("a".into(), 1);
        assert_eq!(m2.get("a"), Some(&1));
        let h = |s: &str| {
            let mut x = FxHasher::default();
            x.write(s.as_bytes());
            x.finish()
        };
        assert_ne!(h("allow"), h("deny"));
        assert_ne!(h("12345678a"), h("12345678b"));
    }
}
