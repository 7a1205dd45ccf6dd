//! SentencePiece-style BPE by score (`tokenizer.ggml.model` "llama"), as llama.cpp runs it: start
//! from single characters, repeatedly merge the adjacent pair whose concatenation is the token with
//! the highest score (ties: leftmost), then emit each symbol's token, or its bytes as `<0xNN>`
//! byte tokens when the symbol is not in the vocabulary.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::fxhash::FxHashMap;

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Higher score first; on equal scores the smaller left index first.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .partial_cmp(&o.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| o.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Tokenizes `text` (spaces already escaped as U+2581) and appends the ids to `out`.
/// `byte_tokens[b]` is the token of byte `b` (`<0xNN>`, else the one-byte string, else unk).
pub(crate) fn encode(
    text: &str,
    token_to_id: &FxHashMap<String, u32>,
    scores: &[f32],
    byte_tokens: &[Option<u32>; 256],
    out: &mut Vec<u32>,
) {
    if text.is_empty() {
        return;
    }
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let n = syms.len();
        let len = c.len_utf8();
        syms.push(Sym {
            start: i,
            len,
            prev: n.checked_sub(1),
            next: if i + len < text.len() {
                Some(n + 1)
            } else {
                None
            },
        });
    }
    let mut heap = BinaryHeap::new();
    let try_add =
        |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: Option<usize>, r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let (a, b) = (syms[l], syms[r]);
            let piece = &text[a.start..b.start + b.len];
            if let Some(&id) = token_to_id.get(piece) {
                let score = scores.get(id as usize).copied().unwrap_or(0.0);
                heap.push(Bigram {
                    score,
                    left: l,
                    right: r,
                    size: piece.len(),
                });
            }
        };
    for i in 1..syms.len() {
        try_add(&mut heap, &syms, Some(i - 1), Some(i));
    }
    while let Some(bg) = heap.pop() {
        let (l, r) = (syms[bg.left], syms[bg.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
            continue;
        }
        syms[bg.left].len += r.len;
        syms[bg.right].len = 0;
        syms[bg.left].next = r.next;
        if let Some(n) = r.next {
            syms[n].prev = Some(bg.left);
        }
        try_add(&mut heap, &syms, syms[bg.left].prev, Some(bg.left));
        try_add(&mut heap, &syms, Some(bg.left), syms[bg.left].next);
    }
    let mut i = Some(0);
    while let Some(k) = i {
        let s = syms[k];
        i = s.next;
        let piece = &text[s.start..s.start + s.len];
        match token_to_id.get(piece) {
            Some(&id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| byte_tokens[b as usize])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_by_score_with_byte_fallback() {
        let toks = ["a", "b", "c", "ab", "bc", "<0xC3>", "<0xA9>"];
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, 0.0, 0.0];
        let map: FxHashMap<String, u32> = toks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let mut bytes = [None; 256];
        bytes[0xC3] = Some(5);
        bytes[0xA9] = Some(6);
        let mut out = Vec::new();
        // "bc" scores higher than "ab".
        encode("abc", &map, &scores, &bytes, &mut out);
        assert_eq!(out, vec![0, 4]);
        out.clear();
        // é is not a token: its two UTF-8 bytes.
        encode("aé", &map, &scores, &bytes, &mut out);
        assert_eq!(out, vec![0, 5, 6]);
    }
}
