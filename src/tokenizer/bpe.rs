//! Byte-level BPE (`tokenizer.ggml.model` "gpt2"): GPT-2's byte-to-unicode mapping and the merge
//! loop, lowest merge rank first with a priority queue (ties: leftmost), as llama.cpp does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::fxhash::FxHashMap;

/// GPT-2's reversible byte -> printable character mapping.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut assigned = [false; 256];
    for b in (0x21..=0x7Eu32).chain(0xA1..=0xAC).chain(0xAE..=0xFF) {
        table[b as usize] = char::from_u32(b).unwrap_or('\0');
        assigned[b as usize] = true;
    }
    let mut n = 0u32;
    for b in 0..256usize {
        if !assigned[b] {
            table[b] = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
        }
    }
    table
}

/// The inverse of [`byte_to_char_table`]: every mapped character is below U+0144.
pub(crate) fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut inv = vec![None; 0x144];
    for (b, c) in byte_to_char_table().iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}

/// Merge ranks. A merge whose two parts are both tokens is keyed by their ids (no allocation per
/// lookup); the rare others by their strings.
pub(crate) struct Merges {
    by_id: FxHashMap<(u32, u32), u32>,
    by_str: FxHashMap<(String, String), u32>,
}

impl Merges {
    /// Parses `tokenizer.ggml.merges` ("left right", split at the first space after the first
    /// byte). The first occurrence of a pair keeps its rank.
    pub(crate) fn new(merges: &[String], token_to_id: &FxHashMap<String, u32>) -> Merges {
        let mut by_id = FxHashMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut by_str = FxHashMap::default();
        for (rank, m) in merges.iter().enumerate() {
            let rank = rank as u32;
            // The separator is an ASCII space, so both cuts are character boundaries.
            let space = m.as_bytes().iter().skip(1).position(|&b| b == b' ');
            let (l, r) = match space {
                Some(p) => (&m[..p + 1], &m[p + 2..]),
                None => ("", ""),
            };
            match (token_to_id.get(l), token_to_id.get(r)) {
                (Some(&a), Some(&b)) => {
                    by_id.entry((a, b)).or_insert(rank);
                }
                _ => {
                    by_str.entry((l.to_string(), r.to_string())).or_insert(rank);
                }
            }
        }
        Merges { by_id, by_str }
    }

    fn rank(&self, l: (&str, Option<u32>), r: (&str, Option<u32>)) -> Option<u32> {
        match (l.1, r.1) {
            (Some(a), Some(b)) => self.by_id.get(&(a, b)).copied(),
            _ if self.by_str.is_empty() => None,
            _ => self
                .by_str
                .get(&(l.0.to_string(), r.0.to_string()))
                .copied(),
        }
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    id: Option<u32>,
}

/// Merges one byte-encoded word and appends its token ids to `out`.
pub(crate) fn encode_word(
    word: &str,
    merges: &Merges,
    token_to_id: &FxHashMap<String, u32>,
    ignore_merges: bool,
    out: &mut Vec<u32>,
) {
    if word.is_empty() {
        return;
    }
    if ignore_merges {
        if let Some(&id) = token_to_id.get(word) {
            out.push(id);
            return;
        }
    }
    let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
    for (i, c) in word.char_indices() {
        let n = syms.len();
        let len = c.len_utf8();
        syms.push(Sym {
            start: i,
            len,
            prev: n.checked_sub(1),
            next: if i + len < word.len() {
                Some(n + 1)
            } else {
                None
            },
            id: token_to_id.get(&word[i..i + len]).copied(),
        });
    }
    // (rank, left, left len, right len)
    let mut heap: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
    let text = |s: &Sym| &word[s.start..s.start + s.len];
    let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: Option<usize>, r: Option<usize>| {
        let (Some(l), Some(r)) = (l, r) else { return };
        let (a, b) = (&syms[l], &syms[r]);
        if let Some(rank) = merges.rank((text(a), a.id), (text(b), b.id)) {
            heap.push(Reverse((rank, l, a.len, b.len)));
        }
    };
    for i in 1..syms.len() {
        push(&mut heap, &syms, Some(i - 1), Some(i));
    }
    while let Some(Reverse((_, l, llen, rlen))) = heap.pop() {
        let Some(r) = syms[l].next else { continue };
        if syms[l].len != llen || syms[r].len != rlen || llen == 0 || rlen == 0 {
            continue; // stale
        }
        let merged_len = llen + rlen;
        let start = syms[l].start;
        syms[l].len = merged_len;
        syms[l].id = token_to_id.get(&word[start..start + merged_len]).copied();
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        if let Some(n) = syms[r].next {
            syms[n].prev = Some(l);
        }
        push(&mut heap, &syms, syms[l].prev, Some(l));
        push(&mut heap, &syms, Some(l), syms[l].next);
    }
    let mut i = Some(0);
    while let Some(k) = i {
        let s = syms[k];
        i = s.next;
        if s.len == 0 {
            continue;
        }
        match s.id {
            Some(id) => out.push(id),
            None => {
                // llama.cpp's fallback: single-byte tokens for the ASCII bytes, others dropped.
                for &b in text(&s).as_bytes() {
                    if b.is_ascii() {
                        let ch = [b];
                        if let Some(&id) = std::str::from_utf8(&ch)
                            .ok()
                            .and_then(|t| token_to_id.get(t))
                        {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_char_table();
        let inv = char_to_byte_table();
        for b in 0..256 {
            assert_eq!(inv[t[b] as usize], Some(b as u8));
        }
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
    }

    #[test]
    fn merges_by_rank_then_leftmost() {
        let toks = ["a", "b", "c", "ab", "bc", "abc"];
        let map: FxHashMap<String, u32> = toks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        // "b c" ranks before "a b": abc -> a + bc, and no "a bc" merge.
        let merges = Merges::new(&["b c".to_string(), "a b".to_string()], &map);
        let mut out = Vec::new();
        encode_word("abc", &merges, &map, false, &mut out);
        assert_eq!(out, vec![0, 4]);
        // Ties on rank go leftmost: "a b" only: abab -> ab ab.
        let merges = Merges::new(&["a b".to_string(), "ab c".to_string()], &map);
        out.clear();
        encode_word("ababc", &merges, &map, false, &mut out);
        assert_eq!(out, vec![3, 5]);
        out.clear();
        encode_word("abc", &merges, &map, true, &mut out);
        assert_eq!(out, vec![5]);
    }
}
