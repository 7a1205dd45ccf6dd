//! Tokenizers built from GGUF metadata, matching llama.cpp (`src/llama-vocab.cpp`).
//!
//! - `tokenizer.ggml.model` "llama": SentencePiece BPE by score with `<0xNN>` byte fallback
//!   ([`spm`]); spaces become U+2581 and, with `add_space_prefix`, a space is put before text that
//!   starts the prompt or follows a special token.
//! - "gpt2": byte-level BPE with ranked merges ([`bpe`]) after the pre-tokenizer that
//!   `tokenizer.ggml.pre` names ([`pretok`]).
//!
//! Before either runs, the text is partitioned on special tokens (llama.cpp's
//! `tokenizer_st_partition`): user-defined tokens always, control and unknown tokens only with
//! `parse_special`; longer token texts are cut out first.

mod bpe;
pub mod chat_template;
mod from_gguf;
mod fxhash;
mod incremental;
mod pretok;
mod specials;
mod spm;

use std::collections::HashSet;

use fxhash::FxHashMap;

pub use incremental::IncrementalDecoder;

use crate::{Error, Result};

// Token attributes (llama.cpp's llama_token_attr bits).
pub(crate) const ATTR_UNKNOWN: u32 = 1 << 0;
pub(crate) const ATTR_UNUSED: u32 = 1 << 1;
pub(crate) const ATTR_NORMAL: u32 = 1 << 2;
pub(crate) const ATTR_CONTROL: u32 = 1 << 3;
pub(crate) const ATTR_USER_DEFINED: u32 = 1 << 4;
pub(crate) const ATTR_BYTE: u32 = 1 << 5;
pub(crate) const ATTR_LSTRIP: u32 = 1 << 7;
pub(crate) const ATTR_RSTRIP: u32 = 1 << 8;

/// GGUF token types (`tokenizer.ggml.token_type`) to attributes.
fn attr_from_type(t: i32) -> u32 {
    match t {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0,
    }
}

/// The metadata keys of special token ids that [`Vocab::special_ids`] may hold.
pub const SPECIAL_ID_KEYS: [&str; 14] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
];

/// The tokenizer part of a GGUF file's metadata, as plain data.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: "llama" or "gpt2".
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `general.name` (llama.cpp keys a few per-model token attributes on it, e.g. Phi-3).
    pub name: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece merge priorities).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` ("left right", best first).
    pub merges: Vec<String>,
    /// Special token ids found in the metadata: (key from [`SPECIAL_ID_KEYS`], value). A negative
    /// value or 4294967295 (-1 stored unsigned) means "not set"; any other value outside the
    /// vocabulary is an error.
    pub special_ids: Vec<(String, i64)>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
}

/// How [`Tokenizer::encode`] treats special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add BOS/EOS as the metadata says (`tokenizer.ggml.add_bos_token` / `add_eos_token`, with
    /// llama.cpp's defaults per tokenizer type).
    pub add_special: bool,
    /// Turn the text of control tokens (e.g. `<start_of_turn>`, `<|im_start|>`) into those tokens.
    /// User-defined tokens are always matched, as in llama.cpp.
    pub parse_special: bool,
}

enum Kind {
    Spm {
        byte_tokens: Box<[Option<u32>; 256]>,
    },
    Bpe {
        merges: bpe::Merges,
        pre: pretok::PreTokenizer,
        ignore_merges: bool,
        byte_chars: Box<[char; 256]>,
    },
}

/// A byte-wise trie of special token texts, to find which of them occur in a text at all.
#[derive(Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

/// Children sorted by byte, and the token ending here.
#[derive(Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    token: Option<u32>,
}

impl Trie {
    fn insert(&mut self, text: &[u8], id: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut n = 0usize;
        for &b in text {
            let next = match self.nodes[n].children.binary_search_by_key(&b, |x| x.0) {
                Ok(i) => self.nodes[n].children[i].1 as usize,
                Err(i) => {
                    let k = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[n].children.insert(i, (b, k as u32));
                    k
                }
            };
            n = next;
        }
        self.nodes[n].token = Some(id);
    }

    /// Every token whose text occurs somewhere in `text`.
    fn occurring(&self, text: &[u8]) -> HashSet<u32> {
        let mut found = HashSet::new();
        if self.nodes.is_empty() {
            return found;
        }
        for start in 0..text.len() {
            let mut n = 0usize;
            for &b in &text[start..] {
                match self.nodes[n].children.binary_search_by_key(&b, |x| x.0) {
                    Ok(i) => n = self.nodes[n].children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(id) = self.nodes[n].token {
                    found.insert(id);
                }
            }
        }
        found
    }
}

/// A piece of the text after special-token partitioning.
enum Frag {
    Text(usize, usize),
    Token(u32),
}

/// A tokenizer built from GGUF metadata.
pub struct Tokenizer {
    kind: Kind,
    tokens: Vec<String>,
    token_to_id: FxHashMap<String, u32>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    piece_data: Vec<u8>,
    piece_offsets: Vec<usize>,
    /// Control, user-defined and unknown tokens, longest text first.
    specials: Vec<u32>,
    trie_all: Trie,
    trie_user: Trie,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eog: HashSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// Names empty tokens `[EMPTY_i]` as llama.cpp does and maps texts to ids; duplicates are errors.
fn index_tokens(tokens: &mut [String]) -> Result<FxHashMap<String, u32>> {
    let mut token_to_id = FxHashMap::with_capacity_and_hasher(tokens.len(), Default::default());
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[EMPTY_{i}]");
        }
        if let Some(prev) = token_to_id.insert(t.clone(), i as u32) {
            return Err(Error::Tokenizer(format!(
                "duplicate token in tokenizer.ggml.tokens: '{t}' has ids {prev} and {i}"
            )));
        }
    }
    Ok(token_to_id)
}

/// The token of each byte: `<0xNN>`, else the one-character token.
fn spm_byte_tokens(token_to_id: &FxHashMap<String, u32>) -> Box<[Option<u32>; 256]> {
    let mut byte_tokens = Box::new([None; 256]);
    for (b, slot) in byte_tokens.iter_mut().enumerate() {
        let hex = format!("<0x{b:02X}>");
        *slot = token_to_id.get(&hex).copied().or_else(|| {
            let one = [b as u8];
            std::str::from_utf8(&one)
                .ok()
                .and_then(|s| token_to_id.get(s))
                .copied()
        });
    }
    byte_tokens
}

impl Tokenizer {
    /// Builds a tokenizer from plain vocabulary data.
    pub fn from_vocab(v: Vocab) -> Result<Tokenizer> {
        let n = v.tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.tokens has {n} entries"
            )));
        }
        let is_spm = match v.model.as_str() {
            "llama" => true,
            "gpt2" => false,
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.model '{other}' is not supported (supported: llama, gpt2)"
                )))
            }
        };
        let mut tokens = v.tokens;
        let token_to_id = index_tokens(&mut tokens)?;
        let scores = match v.scores {
            Some(s) if s.len() < n => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.scores has {} entries for {n} tokens",
                    s.len()
                )))
            }
            Some(s) => s,
            None => vec![0.0; n],
        };
        let mut attrs = match &v.token_types {
            Some(t) if t.len() < n => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.token_type has {} entries for {n} tokens",
                    t.len()
                )))
            }
            Some(t) => t[..n].iter().map(|&x| attr_from_type(x)).collect(),
            None => vec![ATTR_NORMAL; n],
        };

        // Type defaults (llama.cpp), then the metadata.
        let (kind, mut bos, mut eos, mut unk, mut add_bos, mut add_space_prefix);
        if is_spm {
            let byte_tokens = spm_byte_tokens(&token_to_id);
            kind = Kind::Spm { byte_tokens };
            (bos, eos, unk) = (Some(1u32), Some(2u32), Some(0u32));
            add_bos = true;
            add_space_prefix = true;
        } else {
            if v.merges.is_empty() {
                return Err(Error::Tokenizer(
                    "tokenizer.ggml.merges is missing for a gpt2 tokenizer".into(),
                ));
            }
            let info = pretok::PreTokenizer::from_name(v.pre.as_deref())?;
            kind = Kind::Bpe {
                merges: bpe::Merges::new(&v.merges, &token_to_id),
                pre: info.pre,
                ignore_merges: info.ignore_merges,
                byte_chars: Box::new(bpe::byte_to_char_table()),
            };
            (bos, eos, unk) = (
                if info.no_default_bos { None } else { Some(11) },
                Some(11),
                None,
            );
            add_bos = info.add_bos;
            add_space_prefix = false;
        }
        if let Some(b) = v.add_space_prefix {
            add_space_prefix = b;
        }
        for id in [&mut bos, &mut eos, &mut unk] {
            if id.is_some_and(|x| x as usize >= n) {
                *id = None; // a default outside the vocabulary is disabled, as in llama.cpp
            }
        }
        let (mut eot, mut eom, mut fim_pad, mut fim_rep, mut fim_sep) =
            (None, None, None, None, None);
        for (key, val) in &v.special_ids {
            if *val < 0 || *val == i64::from(u32::MAX) {
                continue; // -1 (also stored as u32: 4294967295) means "not set"
            }
            if *val as u64 >= n as u64 {
                return Err(Error::Tokenizer(format!(
                    "{key} = {val} is outside the vocabulary of {n} tokens"
                )));
            }
            let id = Some(*val as u32);
            match key.rsplit('.').next().unwrap_or("") {
                "bos_token_id" => bos = id,
                "eos_token_id" => eos = id,
                "eot_token_id" => eot = id,
                "eom_token_id" => eom = id,
                "unknown_token_id" => unk = id,
                "fim_pad_token_id" => fim_pad = id,
                "fim_rep_token_id" => fim_rep = id,
                "fim_sep_token_id" => fim_sep = id,
                _ => {}
            }
        }
        if let Some(b) = v.add_bos {
            add_bos = b;
        }
        // A byte with neither a `<0xNN>` nor a one-character token falls back to <unk>
        // (llama.cpp would throw).
        let mut kind = kind;
        if let Kind::Spm { byte_tokens } = &mut kind {
            for t in byte_tokens.iter_mut().filter(|t| t.is_none()) {
                *t = unk;
            }
        }
        let add_eos = v.add_eos.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(Error::Tokenizer(
                "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set"
                    .into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(Error::Tokenizer(
                "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set"
                    .into(),
            ));
        }

        // Special tokens recognised by their text.
        let mut ids = specials::TextIds {
            eos,
            eot,
            eom,
            fim_pad,
            fim_rep,
            fim_sep,
        };
        let eog = specials::classify_by_text(&token_to_id, &mut attrs, &mut ids);
        let eot = ids.eot;

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| attrs[i as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));

        specials::per_model_attrs(v.name.as_deref(), &specials, &mut attrs, &token_to_id);

        let mut trie_all = Trie::default();
        let mut trie_user = Trie::default();
        for &id in &specials {
            let t = tokens[id as usize].as_bytes();
            trie_all.insert(t, id);
            if attrs[id as usize] & (ATTR_CONTROL | ATTR_UNKNOWN) == 0 {
                trie_user.insert(t, id);
            }
        }

        let mut tok = Tokenizer {
            kind,
            tokens,
            token_to_id,
            scores,
            attrs,
            piece_data: Vec::new(),
            piece_offsets: Vec::with_capacity(n + 1),
            specials,
            trie_all,
            trie_user,
            bos,
            eos,
            eot,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        };
        tok.build_pieces();
        Ok(tok)
    }

    /// Renders every token once, as llama.cpp's token_to_piece with special tokens shown.
    fn build_pieces(&mut self) {
        let inv = bpe::char_to_byte_table();
        let mut data = Vec::new();
        let mut offsets = Vec::with_capacity(self.tokens.len() + 1);
        offsets.push(0);
        for (i, text) in self.tokens.iter().enumerate() {
            let attr = self.attrs[i];
            if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
                data.extend_from_slice(text.as_bytes());
            } else if attr & ATTR_NORMAL != 0 {
                match self.kind {
                    Kind::Spm { .. } => {
                        data.extend_from_slice(text.replace('\u{2581}', " ").as_bytes())
                    }
                    Kind::Bpe { .. } => {
                        for c in text.chars() {
                            match inv.get(c as usize).copied().flatten() {
                                Some(b) => data.push(b),
                                None => {
                                    let mut buf = [0u8; 4];
                                    let hex: String = c
                                        .encode_utf8(&mut buf)
                                        .bytes()
                                        .map(|b| format!("{b:02x}"))
                                        .collect();
                                    data.extend_from_slice(
                                        format!("[UNK_BYTE_0x{hex}{text}]").as_bytes(),
                                    );
                                }
                            }
                        }
                    }
                }
            } else if attr & ATTR_BYTE != 0 {
                if let Some(b) = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    data.push(b);
                }
            }
            offsets.push(data.len());
        }
        self.piece_data = data;
        self.piece_offsets = offsets;
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (`<|eot_id|>`, `<end_of_turn>`, `<|im_end|>`, ...), if any.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Whether `encode` with `add_special` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode` with `add_special` puts EOS last.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generation ends at `id` (llama.cpp's end-of-generation set: EOS, EOT, EOM and the
    /// tokens it recognises by text, e.g. `<end_of_turn>`, `<|im_end|>`, `<|eot_id|>`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The id of the token whose text is exactly `piece` (as stored, e.g. `▁the`, `Ġthe`, `<s>`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.token_to_id.get(piece).copied()
    }

    /// The stored text of token `id`.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether `id` is a control token (BOS, EOS, `<start_of_turn>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & ATTR_CONTROL != 0)
    }

    /// The bytes token `id` decodes to (special tokens rendered as their text); empty for an id
    /// outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.piece_offsets.get(i), self.piece_offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.piece_data[a..b],
            _ => &[],
        }
    }

    /// The concatenated bytes of `ids` as text (invalid UTF-8 replaced by U+FFFD). Pieces are
    /// joined verbatim: no leading-space removal and no clean-up of spaces before punctuation.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Splits `text` on special tokens, as llama.cpp's tokenizer_st_partition does.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Frag> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Frag::Text(0, text.len()));
        let trie = if parse_special {
            &self.trie_all
        } else {
            &self.trie_user
        };
        let present = trie.occurring(text.as_bytes());
        if present.is_empty() {
            return frags;
        }
        let bytes = text.as_bytes();
        for &id in self.specials.iter().filter(|id| present.contains(id)) {
            let tok = self.tokens[id as usize].as_str();
            let attr = self.attrs[id as usize];
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Frag::Text(a, b) = f else {
                    next.push(f);
                    continue;
                };
                let (mut base, end) = (a, b);
                loop {
                    let Some(rel) = text[base..end].find(tok) else {
                        if end > base {
                            next.push(Frag::Text(base, end));
                        }
                        break;
                    };
                    let m = base + rel;
                    let mut left_end = m;
                    if attr & ATTR_LSTRIP != 0 {
                        while left_end > base && bytes[left_end - 1].is_ascii_whitespace_c() {
                            left_end -= 1;
                        }
                    }
                    if left_end > base {
                        next.push(Frag::Text(base, left_end));
                    }
                    next.push(Frag::Token(id));
                    base = m + tok.len();
                    if attr & ATTR_RSTRIP != 0 {
                        while base < end && bytes[base].is_ascii_whitespace_c() {
                            base += 1;
                        }
                    }
                    if base >= end {
                        break;
                    }
                }
            }
            frags = next;
        }
        frags
    }

    /// Tokenizes `text`.
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Result<Vec<u32>> {
        let frags = self.partition(text, opts.parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if opts.add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.kind {
            Kind::Spm { byte_tokens } => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in &frags {
                    match *f {
                        Frag::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Frag::Text(a, b) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in text[a..b].chars() {
                                buf.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm::encode(
                                &buf,
                                &self.token_to_id,
                                &self.scores,
                                byte_tokens,
                                &mut out,
                            );
                            prev_special = false;
                        }
                    }
                }
            }
            Kind::Bpe {
                merges,
                pre,
                ignore_merges,
                byte_chars,
            } => {
                let mut word = String::new();
                for f in &frags {
                    match *f {
                        Frag::Token(id) => out.push(id),
                        Frag::Text(a, b) => {
                            let piece = &text[a..b];
                            for (s, e) in pre.split(piece)? {
                                word.clear();
                                word.extend(
                                    piece.as_bytes()[s..e]
                                        .iter()
                                        .map(|&x| byte_chars[x as usize]),
                                );
                                bpe::encode_word(
                                    &word,
                                    merges,
                                    &self.token_to_id,
                                    *ignore_merges,
                                    &mut out,
                                );
                            }
                        }
                    }
                }
            }
        }
        if opts.add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }
}

/// C's `isspace` in the "C" locale (llama.cpp strips with it).
trait CSpace {
    fn is_ascii_whitespace_c(&self) -> bool;
}

impl CSpace for u8 {
    fn is_ascii_whitespace_c(&self) -> bool {
        matches!(*self, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
    }
}

#[cfg(test)]
mod tests;
