//! The merge loop shared by both BPE flavours: repeatedly merge the adjacent pair
//! with the best priority (smallest key), leftmost first among equal keys.
//!
//! A binary heap over a linked list of symbols makes this O(n log n) while giving
//! exactly the result of the quadratic "scan all pairs, merge the best, repeat" loop
//! (llama2.c `encode`, HF `BPE::merge_word`): the heap always holds every current
//! adjacent pair that can merge, ordered by (key, position of the left symbol), and
//! positions keep their left-to-right order because a merged symbol keeps the index
//! of its left half.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

/// A candidate merge: (key, left index, right index, left id, right id, merged id).
type Candidate = (u32, u32, u32, u32, u32, u32);

/// Reusable buffers for merging one word; allocate once per `encode` call.
#[derive(Default)]
pub(crate) struct Merger {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<Candidate>>,
}

impl Merger {
    /// Starts a new word.
    pub(crate) fn clear(&mut self) {
        self.symbols.clear();
        self.heap.clear();
    }

    /// Appends a symbol (an initial token) to the word.
    pub(crate) fn push(&mut self, id: u32) {
        let n = self.symbols.len() as u32;
        if let Some(last) = self.symbols.last_mut() {
            last.next = n;
        }
        let prev = if n == 0 { NONE } else { n - 1 };
        self.symbols.push(Symbol {
            id,
            prev,
            next: NONE,
            alive: true,
        });
    }

    /// Runs the merge loop. `pair(left_id, right_id)` returns `(key, merged_id)` when
    /// the pair may merge; smaller keys merge first. Then appends the final ids to `out`.
    pub(crate) fn run(
        &mut self,
        mut pair: impl FnMut(u32, u32) -> Option<(u32, u32)>,
        out: &mut Vec<u32>,
    ) {
        for left in 0..self.symbols.len().saturating_sub(1) {
            self.offer(left as u32, &mut pair);
        }
        while let Some(Reverse((_, left, right, left_id, right_id, merged))) = self.heap.pop() {
            let l = self.symbols[left as usize];
            let r = self.symbols[right as usize];
            // Stale candidates: one side merged away or changed since it was offered.
            if !l.alive || !r.alive || l.next != right || l.id != left_id || r.id != right_id {
                continue;
            }
            self.symbols[left as usize].id = merged;
            self.symbols[left as usize].next = r.next;
            self.symbols[right as usize].alive = false;
            if r.next != NONE {
                self.symbols[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.offer(l.prev, &mut pair);
            }
            self.offer(left, &mut pair);
        }
        let mut i = if self.symbols.is_empty() { NONE } else { 0 };
        while i != NONE {
            let s = self.symbols[i as usize];
            out.push(s.id);
            i = s.next;
        }
    }

    /// Queues the pair starting at symbol `left`, if it has a right neighbour and may merge.
    fn offer(&mut self, left: u32, pair: &mut impl FnMut(u32, u32) -> Option<(u32, u32)>) {
        let l = self.symbols[left as usize];
        if l.next == NONE {
            return;
        }
        let r = self.symbols[l.next as usize];
        if let Some((key, merged)) = pair(l.id, r.id) {
            self.heap
                .push(Reverse((key, left, l.next, l.id, r.id, merged)));
        }
    }
}

/// Maps a SentencePiece score to a merge key (higher score -> smaller key), or `None`
/// when the token may never be produced by a merge.
///
/// llama2.c starts its search at `best_score = -1e10` and takes a pair only when
/// `score > best_score`, so scores at or below [`super::MIN_MERGE_SCORE`] and NaN never
/// merge, and `-0.0` ties with `0.0`.
pub(crate) fn score_key(score: f32) -> Option<u32> {
    if score.is_nan() || score <= super::MIN_MERGE_SCORE {
        return None;
    }
    let bits = (score + 0.0).to_bits(); // + 0.0 turns -0.0 into +0.0
                                        // Monotone map of finite floats onto u32, then inverted so higher scores sort first.
    let ordered = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    Some(!ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_key_orders_like_scores() {
        let scores = [1e30, 5.0, 1.0, 0.5, 0.0, -0.0, -0.5, -1.0, -1e9];
        for w in scores.windows(2) {
            let (a, b) = (score_key(w[0]).unwrap(), score_key(w[1]).unwrap());
            if w[0] == w[1] {
                assert_eq!(a, b);
            } else {
                assert!(a < b, "{} should sort before {}", w[0], w[1]);
            }
        }
        assert_eq!(score_key(-1e10), None);
        assert_eq!(score_key(f32::NAN), None);
        assert_eq!(score_key(f32::NEG_INFINITY), None);
    }

    /// The quadratic reference loop the heap version must reproduce.
    fn reference(ids: &[u32], pair: impl Fn(u32, u32) -> Option<(u32, u32)>) -> Vec<u32> {
        let mut v = ids.to_vec();
        loop {
            let best = (0..v.len().saturating_sub(1))
                .filter_map(|i| pair(v[i], v[i + 1]).map(|(k, m)| (k, i, m)))
                .min_by_key(|&(k, i, _)| (k, i));
            let Some((_, i, m)) = best else { return v };
            v[i] = m;
            v.remove(i + 1);
        }
    }

    #[test]
    fn heap_matches_reference_on_random_words() {
        // Toy vocabulary: merging a and b gives (a * 7 + b) % 13 + 20 with key
        // depending on both, only for some pairs, ids < 40.
        let pair = |a: u32, b: u32| {
            let h = a.wrapping_mul(31) ^ b.wrapping_mul(17);
            (!h.is_multiple_of(3)).then_some((h % 5, (a * 7 + b) % 13 + 20))
        };
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut merger = Merger::default();
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let ids: Vec<u32> = (0..len).map(|i| ((state >> (i * 5)) % 6) as u32).collect();
            merger.clear();
            ids.iter().for_each(|&id| merger.push(id));
            let mut out = Vec::new();
            merger.run(pair, &mut out);
            assert_eq!(out, reference(&ids, pair), "word {ids:?}");
        }
    }
}
