//! A small deterministic mutator for runs without libFuzzer (stable Rust, CI):
//! bit flips, interesting bytes and integers, truncations, deletions,
//! duplications, insertions, ASCII digit runs and splices with another input.
//! The same seed gives the same sequence of inputs on every machine.

/// xorshift64* generator.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Integers that sit on boundaries (as little-endian u32 / u64 writes).
const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

/// Largest input the mutator grows to.
pub const MAX_LEN: usize = 1 << 20;

/// `input` with 1 to 4 random mutations applied; `other` is spliced from.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut v, other);
    }
    v.truncate(MAX_LEN);
    v
}

fn mutate_once(rng: &mut Rng, v: &mut Vec<u8>, other: &[u8]) {
    if v.is_empty() {
        v.push(rng.next_u64() as u8);
        return;
    }
    let at = rng.below(v.len());
    match rng.below(10) {
        0 => v[at] ^= 1 << rng.below(8),
        1 => v[at] = [0, 0xFF, 0x7F, 0x80, b'"', b'{', b'0', b'-'][rng.below(8)],
        2 => {
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            let bytes = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let end = (at + width).min(v.len());
            v[at..end].copy_from_slice(&bytes[..end - at]);
        }
        3 => v.truncate(at),
        4 => {
            let n = 1 + rng.below((v.len() - at).min(64));
            v.drain(at..at + n);
        }
        5 => {
            let n = 1 + rng.below((v.len() - at).min(64));
            let chunk = v[at..at + n].to_vec();
            v.splice(at..at, chunk);
        }
        6 => {
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            v.splice(at..at, bytes);
        }
        7 => {
            // A long run of digits: big numbers in JSON and templates.
            let n = 1 + rng.below(20);
            v.splice(at..at, std::iter::repeat_n(b'9', n));
        }
        8 => v[at] = v[rng.below(v.len())],
        _ if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(4096));
            v.truncate(at);
            v.extend_from_slice(&other[from..from + n]);
        }
        _ => v.reverse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let run = || {
            let mut rng = Rng::new(7);
            (0..50)
                .map(|i| mutate(&mut rng, b"{\"a\": [1, 2, 3]}", &[i as u8; 9]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
