//! A fast hasher for the maps whose keys we (or libzmq) generate: request and
//! connection ids, libzmq routing ids, worker ids.
//!
//! The standard library's SipHash resists keys chosen to collide, which costs about
//! 100 instructions a lookup; none of these keys comes from a client, so a
//! multiply-and-rotate hash that spreads sequential ids over the table is enough, and
//! takes a handful of instructions for a `u64`. Keys a client can choose (header names,
//! query parameters) must not use it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by ids we generate, with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `HashSet` of ids we generate, with [`FastHasher`].
pub type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;

/// An odd constant with bits spread evenly (from the golden ratio): multiplying by it
/// carries every input bit into the high bits, which pick the hashbrown control byte,
/// and keeps sequential inputs distinct in the low bits, which pick the bucket.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// Mixes 64-bit words into its state: not for keys an adversary picks.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    state: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(26) ^ word).wrapping_mul(SPREAD);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(value: T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(value)
    }

    #[test]
    fn sequential_ids_spread_over_buckets_and_control_bytes() {
        let low: HashSet<u64> = (0..1024u64).map(|n| hash(n) & 1023).collect();
        assert!(low.len() > 600, "{} distinct low bit patterns", low.len());
        let high: HashSet<u64> = (0..1024u64).map(|n| hash(n) >> 57).collect();
        assert_eq!(high.len(), 128);
    }

    #[test]
    fn byte_keys_differ_in_every_position_and_length() {
        assert_ne!(hash(&b"worker-0"[..]), hash(&b"worker-1"[..]));
        assert_ne!(hash(&b"ab"[..]), hash(&b"ab\0"[..]));
        assert_ne!(
            hash(&b"parse-0123456789abcdef-0"[..]),
            hash(&b"parse-0123456789abcdef-1"[..])
        );
        let map: FastMap<Vec<u8>, u32> =
            (0..100u32).map(|i| (i.to_le_bytes().to_vec(), i)).collect();
        assert_eq!(map.get(&7u32.to_le_bytes()[..]), Some(&7));
    }
}
