//! Pre-tokenizers for byte-level BPE: split a text into words before the merges run.
//!
//! The behaviour follows llama.cpp (`src/llama-vocab.cpp`, `src/unicode.cpp`): a pre-tokenizer is a
//! list of splitters applied in sequence, each one cutting every piece produced so far into the
//! regex matches *and* the unmatched gaps between them. The two most common patterns (GPT-2's and
//! Llama 3's, which Qwen 2 shares up to its digit grouping) are hand-written scanners; the others
//! run through `regex` (or `fancy-regex` where a pattern needs look-around).
//! `\p{L}` is the Unicode general category L (a table built once from the `regex` crate's Unicode
//! data), `\p{N}` is category N (`char::is_numeric`), `\s` is White_Space (`char::is_whitespace`).

use std::sync::OnceLock;

use crate::{Error, Result};

/// Sorted, disjoint inclusive ranges of the non-ASCII code points of general category L.
fn letter_ranges() -> &'static [(u32, u32)] {
    static TABLE: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Planes 4-16 hold no letters (unassigned, tags, variation selectors, private use).
        let all: String = (0x80u32..0x40000).filter_map(char::from_u32).collect();
        // A constant pattern: it always compiles.
        let Ok(re) = regex::Regex::new(r"\p{L}+") else {
            return Vec::new();
        };
        re.find_iter(&all)
            .filter_map(|m| {
                let s = m.as_str();
                let first = s.chars().next()? as u32;
                let last = s.chars().next_back()? as u32;
                Some((first, last))
            })
            .collect()
    })
}

/// Whether `c` is in Unicode general category L (letters).
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    let cp = c as u32;
    let table = letter_ranges();
    let i = table.partition_point(|&(lo, _)| lo <= cp);
    i > 0 && cp <= table[i - 1].1
}

/// The character classes the hand-written scanners look at. `defined` is false past the end of
/// the piece (llama.cpp's all-zero flags), which ends every run.
#[derive(Clone, Copy, Default)]
struct Flags {
    defined: bool,
    letter: bool,
    number: bool,
    space: bool,
}

fn flags_of(c: char) -> Flags {
    Flags {
        defined: true,
        letter: is_letter(c),
        number: c.is_numeric(),
        space: c.is_whitespace(),
    }
}

/// One piece's characters with their byte offsets, and the scanner's output.
struct Scan<'a> {
    chars: &'a [(usize, char, Flags)],
    end_byte: usize,
    prev: usize,
    out: &'a mut Vec<(usize, usize)>,
}

impl Scan<'_> {
    fn n(&self) -> usize {
        self.chars.len()
    }
    fn ch(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|x| x.1)
    }
    fn fl(&self, i: usize) -> Flags {
        self.chars.get(i).map(|x| x.2).unwrap_or_default()
    }
    fn byte(&self, i: usize) -> usize {
        self.chars.get(i).map(|x| x.0).unwrap_or(self.end_byte)
    }
    /// Ends the current word at character index `end`.
    fn emit(&mut self, end: usize) {
        if end > self.prev {
            let (a, b) = (self.byte(self.prev), self.byte(end));
            self.out.push((a, b));
        }
        self.prev = end;
    }
    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (ASCII case-insensitive when `fold`): its length.
    fn contraction(&self, pos: usize, fold: bool) -> usize {
        if self.ch(pos) != Some('\'') || pos + 1 >= self.n() {
            return 0;
        }
        let low = |c: Option<char>| c.map(|c| if fold { c.to_ascii_lowercase() } else { c });
        let a = low(self.ch(pos + 1));
        if matches!(a, Some('s' | 't' | 'm' | 'd')) {
            return 2;
        }
        if pos + 2 < self.n() {
            let b = low(self.ch(pos + 2));
            if matches!(
                (a, b),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            ) {
                return 3;
            }
        }
        0
    }
    /// Trailing whitespace rules shared by both scanners (`\s+(?!\S)|\s+`), with the
    /// `\s*[\r\n]+` rule first when `newline_rule`.
    fn whitespace(&mut self, pos: usize, newline_rule: bool) -> usize {
        let mut n_ws = 0;
        let mut last_rn = 0;
        while self.fl(pos + n_ws).space {
            if matches!(self.ch(pos + n_ws), Some('\r' | '\n')) {
                last_rn = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        let end = if newline_rule && last_rn > 0 {
            last_rn
        } else if n_ws > 1 && pos + n_ws < self.n() {
            pos + n_ws - 1
        } else if n_ws > 0 {
            pos + n_ws
        } else {
            pos + 1
        };
        self.emit(end);
        end
    }
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn scan_gpt2(s: &mut Scan) {
    let mut pos = 0;
    while pos < s.n() {
        let k = s.contraction(pos, false);
        if k > 0 {
            pos += k;
            s.emit(pos);
            continue;
        }
        let c = s.ch(pos);
        let lead = usize::from(c == Some(' '));
        let f2 = s.fl(pos + lead);
        if f2.letter || f2.number {
            let want_letter = f2.letter;
            pos += lead;
            while if want_letter {
                s.fl(pos).letter
            } else {
                s.fl(pos).number
            } {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        if !(f2.space || f2.letter || f2.number) && f2.defined {
            pos += lead;
            loop {
                let g = s.fl(pos);
                if !(!(g.space || g.letter || g.number) && g.defined) {
                    break;
                }
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        pos = s.whitespace(pos, false);
    }
}

/// Llama 3 (`max_digits` 3) and Qwen 2 (`max_digits` 1):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
fn scan_llama3(s: &mut Scan, max_digits: usize) {
    let mut pos = 0;
    while pos < s.n() {
        let k = s.contraction(pos, true);
        if k > 0 {
            pos += k;
            s.emit(pos);
            continue;
        }
        let c = s.ch(pos);
        let f = s.fl(pos);
        if !(matches!(c, Some('\r' | '\n')) || f.number) && (f.letter || s.fl(pos + 1).letter) {
            pos += 1;
            while s.fl(pos).letter {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        if f.number {
            let mut ini = pos;
            while s.fl(pos).number {
                pos += 1;
                if pos - ini >= max_digits {
                    s.emit(pos);
                    ini = pos;
                }
            }
            s.emit(pos);
            continue;
        }
        let lead = usize::from(c == Some(' '));
        let f2 = s.fl(pos + lead);
        if !(f2.space || f2.letter || f2.number) && f.defined {
            pos += lead;
            loop {
                let g = s.fl(pos);
                if !(!(g.space || g.letter || g.number) && g.defined) {
                    break;
                }
                pos += 1;
            }
            while matches!(s.ch(pos), Some('\r' | '\n')) {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        pos = s.whitespace(pos, true);
    }
}

/// A compiled regex: the `regex` crate where it can, `fancy-regex` for look-around.
enum Re {
    Plain(regex::Regex),
    Fancy(fancy_regex::Regex),
}

/// One splitting step.
enum Splitter {
    Gpt2,
    Llama3 { max_digits: usize },
    Regex(Box<Re>),
}

/// A pre-tokenizer: splitters applied in sequence.
pub(crate) struct PreTokenizer {
    steps: Vec<Splitter>,
}

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// What `tokenizer.ggml.pre` implies besides the splitters.
pub(crate) struct PreInfo {
    pub pre: PreTokenizer,
    /// The whole word is looked up before merging (llama3, tekken).
    pub ignore_merges: bool,
    /// The default of add_bos_token for this pre-tokenizer.
    pub add_bos: bool,
    /// The pre-tokenizer clears the default BOS id (chatglm).
    pub no_default_bos: bool,
}

impl PreTokenizer {
    fn compile(patterns: &[&str]) -> Result<PreTokenizer> {
        let mut steps = Vec::new();
        for p in patterns {
            let step = if *p == GPT2_RE {
                Splitter::Gpt2
            } else if let Ok(r) = regex::Regex::new(p) {
                Splitter::Regex(Box::new(Re::Plain(r)))
            } else {
                let r = fancy_regex::Regex::new(p).map_err(|e| {
                    Error::Tokenizer(format!("pre-tokenizer regex '{p}' does not compile: {e}"))
                })?;
                Splitter::Regex(Box::new(Re::Fancy(r)))
            };
            steps.push(step);
        }
        Ok(PreTokenizer { steps })
    }

    /// The pre-tokenizer named by `tokenizer.ggml.pre` (None or "default": llama.cpp's default).
    pub(crate) fn from_name(name: Option<&str>) -> Result<PreInfo> {
        let llama3 = || PreTokenizer {
            steps: vec![Splitter::Llama3 { max_digits: 3 }],
        };
        let qwen2 = || PreTokenizer {
            steps: vec![Splitter::Llama3 { max_digits: 1 }],
        };
        let mut info = PreInfo {
            pre: PreTokenizer { steps: Vec::new() },
            ignore_merges: false,
            add_bos: false,
            no_default_bos: false,
        };
        let n = name.unwrap_or("default");
        info.pre = match n {
            "default" => Self::compile(&[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_RE,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ])?,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
            | "lfm2" => {
                info.ignore_merges = true;
                info.add_bos = true;
                llama3()
            }
            "dbrx" | "smaug-bpe" => llama3(),
            "glm4" | "chatglm-bpe" => {
                info.no_default_bos = true;
                llama3()
            }
            // Cased letters; the \u{..} escapes are characters that NFC would fold.
            "deepseek-llm" => Self::compile(&[
                "[\r\n]",
                "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1F7D}ᾀ-ᾴᾶ-ᾼ\u{1FBE}ῂ-ῄῆ-ῌῐ-\u{1FD3}ῖ-\u{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
                "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
                "\\s+$",
                "[一-龥ࠀ-一가-퟿]+",
                "\\p{N}+",
            ])?,
            "deepseek-coder" => Self::compile(&[
                "[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                "[一-龥ࠀ-一가-퟿]+",
                r"\p{N}",
            ])?,
            "deepseek-v3" => Self::compile(&[
                r"\p{N}{1,3}",
                "[一-龥぀-ゟ゠-ヿ]+",
                r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
            ])?,
            "falcon" => Self::compile(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, "[0-9][0-9][0-9]"])?,
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => Self::compile(&[r"\p{N}", GPT2_RE])?,
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
            | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling"
            | "exaone4" | "roberta-bpe" | "jina-v1-en" | "jina-v2-code" => {
                Self::compile(&[GPT2_RE])?
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" | "megrez" | "kormo" => qwen2(),
            "poro-chat" | "bloom" | "gpt3-finnish" => Self::compile(&[" ?[^(\\s|.,!?…。，、।۔،)]+"])?,
            "viking" => Self::compile(&[" ?[^(\\s|.,!?…。，、।۔،)]+", r"\p{N}"])?,
            "tekken" => {
                info.ignore_merges = true;
                info.add_bos = true;
                Self::compile(&[
                    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                ])?
            }
            "gpt-4o" | "llama4" => Self::compile(&[
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ])?,
            "qwen35" => Self::compile(&[
                r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ])?,
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.pre '{other}' is not a supported pre-tokenizer"
                )))
            }
        };
        Ok(info)
    }

    /// Splits `text` into words, returned as byte ranges in order.
    pub(crate) fn split(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let mut pieces = vec![(0, text.len())];
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let mut chars = Vec::new();
        for step in &self.steps {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(a, b) in &pieces {
                match step {
                    Splitter::Gpt2 | Splitter::Llama3 { .. } => {
                        chars.clear();
                        chars.extend(
                            text[a..b]
                                .char_indices()
                                .map(|(i, c)| (a + i, c, flags_of(c))),
                        );
                        let mut scan = Scan {
                            chars: &chars,
                            end_byte: b,
                            prev: 0,
                            out: &mut next,
                        };
                        match step {
                            Splitter::Llama3 { max_digits } => scan_llama3(&mut scan, *max_digits),
                            _ => scan_gpt2(&mut scan),
                        }
                    }
                    Splitter::Regex(re) => split_regex(re, text, a, b, &mut next)?,
                }
            }
            pieces = next;
        }
        Ok(pieces)
    }
}

/// Cuts `text[a..b]` into matches and the gaps between them.
fn split_regex(
    re: &Re,
    text: &str,
    a: usize,
    b: usize,
    out: &mut Vec<(usize, usize)>,
) -> Result<()> {
    let hay = &text[a..b];
    let mut last = 0;
    let mut push = |s: usize, e: usize, out: &mut Vec<(usize, usize)>| {
        if s > last {
            out.push((a + last, a + s));
        }
        if e > s {
            out.push((a + s, a + e));
        }
        last = e;
    };
    match re {
        Re::Plain(r) => {
            for m in r.find_iter(hay) {
                push(m.start(), m.end(), out);
            }
        }
        Re::Fancy(r) => {
            for m in r.find_iter(hay) {
                let m =
                    m.map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex failed: {e}")))?;
                push(m.start(), m.end(), out);
            }
        }
    }
    if last < hay.len() {
        out.push((a + last, b));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::from_name(Some(pre)).unwrap().pre;
        p.split(text)
            .unwrap()
            .into_iter()
            .map(|(a, b)| text[a..b].to_string())
            .collect()
    }

    #[test]
    fn letter_table() {
        assert!(is_letter('a') && is_letter('é') && is_letter('中') && is_letter('ß'));
        assert!(!is_letter('1') && !is_letter(' ') && !is_letter('!') && !is_letter('\u{0301}'));
        assert!(!is_letter('😀') && is_letter('Ж'));
    }

    #[test]
    fn gpt2_splits_like_its_regex() {
        let fancy = fancy_regex::Regex::new(&format!("{GPT2_RE}|\\s+")).unwrap();
        for text in [
            "Hello world",
            " Hello  World!\n\n  x",
            "it's 12345 don't",
            "   ",
            "a\t\tb",
            "😀 x's",
            "'S",
        ] {
            let want: Vec<String> = fancy
                .find_iter(text)
                .map(|m| m.unwrap().as_str().to_string())
                .collect();
            assert_eq!(words("gpt-2", text), want, "text {text:?}");
        }
    }

    #[test]
    fn llama3_and_qwen2_split_like_their_regex() {
        let body = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        for (name, d) in [("llama-bpe", "3"), ("qwen2", "1")] {
            let re = fancy_regex::Regex::new(&body.replace('D', d)).unwrap();
            for text in [
                "Hello world",
                " Hello  World!\n\n  x",
                "IT'S 1234567 don't",
                "   \n \n  ",
                "a\t\tb",
                "😀 x's",
                "(x) = [1, 2]\r\n\tfoo",
                "中文 текст",
            ] {
                let want: Vec<String> = re
                    .find_iter(text)
                    .map(|m| m.unwrap().as_str().to_string())
                    .collect();
                assert_eq!(words(name, text), want, "{name} text {text:?}");
            }
        }
    }

    #[test]
    fn every_named_pre_tokenizer_compiles_and_splits() {
        let text = "Hello, World! it's 12345 中文 😀\n\n  x";
        for name in [
            "default",
            "llama3",
            "llama-bpe",
            "dbrx",
            "glm4",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "starcoder",
            "refact",
            "gpt-2",
            "mpt",
            "qwen2",
            "stablelm2",
            "poro-chat",
            "viking",
            "tekken",
            "gpt-4o",
            "qwen35",
        ] {
            let w = words(name, text);
            assert_eq!(w.concat(), text, "{name} loses text: {w:?}");
            assert!(w.len() > 5, "{name}: {w:?}");
        }
    }

    #[test]
    fn unknown_pre_is_an_error() {
        let e = PreTokenizer::from_name(Some("nonesuch")).err().unwrap();
        assert!(e.to_string().contains("nonesuch"));
    }
}
