//! Unit tests on small hand-made vocabularies. The conformance vectors against llama.cpp are in
//! tests/tokenizer_vectors.rs.

use super::*;

const NO_SPECIAL: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};

/// A SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, a few pieces, a control and a
/// user-defined token.
fn spm_vocab() -> Vocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for (t, ty) in [
        ("▁", 1),
        ("a", 1),
        ("b", 1),
        ("▁a", 1),
        ("ab", 1),
        ("▁ab", 1),
        ("<ctrl>", 3),
        ("<ud>", 4),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    let n = tokens.len();
    let mut scores = vec![0.0f32; n];
    for (i, s) in scores.iter_mut().enumerate().skip(259) {
        *s = -(i as f32); // earlier pieces merge first
    }
    Vocab {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        special_ids: vec![
            ("tokenizer.ggml.bos_token_id".into(), 1),
            ("tokenizer.ggml.eos_token_id".into(), 2),
        ],
        ..Vocab::default()
    }
}

fn spm() -> Tokenizer {
    Tokenizer::from_vocab(spm_vocab()).unwrap()
}

#[test]
fn spm_merges_space_prefix_and_bos() {
    let t = spm();
    let id = |s: &str| t.token_id(s).unwrap();
    // add_space_prefix defaults to true for SentencePiece: "ab" -> "▁ab".
    assert_eq!(t.encode("ab", NO_SPECIAL).unwrap(), vec![id("▁ab")]);
    let with_bos = EncodeOptions {
        add_special: true,
        parse_special: false,
    };
    assert_eq!(t.encode("ab", with_bos).unwrap(), vec![1, id("▁ab")]);
    assert_eq!(t.encode("", with_bos).unwrap(), vec![1]);
    assert_eq!(t.encode("", NO_SPECIAL).unwrap(), Vec::<u32>::new());
    // 'c' is not a piece: byte fallback.
    assert_eq!(
        t.encode("c", NO_SPECIAL).unwrap(),
        vec![id("▁"), id("<0x63>")]
    );
    let mut v = spm_vocab();
    v.add_space_prefix = Some(false);
    let t2 = Tokenizer::from_vocab(v).unwrap();
    assert_eq!(t2.encode("ab", NO_SPECIAL).unwrap(), vec![id("ab")]);
}

#[test]
fn special_tokens_parse_only_when_asked_user_defined_always() {
    let t = spm();
    let id = |s: &str| t.token_id(s).unwrap();
    let plain = t.encode("a<ctrl>b", NO_SPECIAL).unwrap();
    assert!(!plain.contains(&id("<ctrl>")));
    let parsed = t
        .encode(
            "a<ctrl>b",
            EncodeOptions {
                add_special: false,
                parse_special: true,
            },
        )
        .unwrap();
    // After a special token SentencePiece adds the space prefix again: "▁b" is not a piece.
    assert_eq!(parsed, vec![id("▁a"), id("<ctrl>"), id("▁"), id("b")]);
    let ud = t.encode("a<ud>b", NO_SPECIAL).unwrap();
    assert_eq!(ud, vec![id("▁a"), id("<ud>"), id("▁"), id("b")]);
}

#[test]
fn rendering_of_pieces() {
    let t = spm();
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(t.token_bytes(id("▁ab")), b" ab");
    assert_eq!(t.token_bytes(id("<0x41>")), b"A");
    assert_eq!(t.token_bytes(id("<ctrl>")), b"<ctrl>");
    assert_eq!(t.token_bytes(1_000_000), b"");
    assert_eq!(t.decode(&[id("▁a"), id("<0xC3>"), id("<0xA9>")]), " aé");
    assert!(t.is_eog(2) && !t.is_eog(1));
    assert_eq!((t.bos(), t.eos()), (Some(1), Some(2)));
}

#[test]
fn special_id_outside_vocabulary_is_an_error() {
    let mut v = spm_vocab();
    let n = v.tokens.len();
    v.special_ids
        .push(("tokenizer.ggml.eos_token_id".into(), n as i64 + 5));
    let e = Tokenizer::from_vocab(v).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.ggml.eos_token_id") && e.contains(&(n + 5).to_string()),
        "{e}"
    );
    // -1, also as u32 (stories260K's padding id), means "not set".
    let mut v = spm_vocab();
    v.special_ids
        .push(("tokenizer.ggml.padding_token_id".into(), u32::MAX as i64));
    v.special_ids
        .push(("tokenizer.ggml.seperator_token_id".into(), -1));
    assert!(Tokenizer::from_vocab(v).is_ok());
}

#[test]
fn unsupported_model_is_an_error() {
    let mut v = spm_vocab();
    v.model = "bert".into();
    let e = Tokenizer::from_vocab(v).err().unwrap().to_string();
    assert!(e.contains("bert"), "{e}");
}

#[test]
fn incremental_decoder_holds_back_split_characters() {
    let t = spm();
    // "é😀x": é is two bytes, 😀 four, each its own byte token.
    let text = "é😀x";
    let ids: Vec<u32> = text
        .bytes()
        .map(|b| t.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let mut dec = IncrementalDecoder::new();
    let outs: Vec<String> = ids.iter().map(|&id| dec.push(&t, id)).collect();
    assert_eq!(outs, vec!["", "é", "", "", "", "😀", "x"]);
    assert_eq!(dec.finish(), "");
    // A dangling lead byte comes out lossily at the end, and a stray continuation byte at once.
    let mut dec = IncrementalDecoder::new();
    assert_eq!(dec.push(&t, t.token_id("<0xF0>").unwrap()), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert_eq!(dec.push(&t, t.token_id("<0x80>").unwrap()), "\u{FFFD}");
}

/// A byte-level BPE vocabulary over the 256 byte characters plus a few merges.
fn bpe_vocab() -> Vocab {
    let chars = bpe::byte_to_char_table();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    for t in ["Ġa", "ab", "Ġab", "<|endoftext|>"] {
        tokens.push(t.into());
    }
    let mut types = vec![1; tokens.len()];
    *types.last_mut().unwrap() = 3;
    Vocab {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens,
        token_types: Some(types),
        merges: vec!["Ġ a".into(), "a b".into(), "Ġa b".into()],
        special_ids: vec![("tokenizer.ggml.eos_token_id".into(), 259)],
        ..Vocab::default()
    }
}

#[test]
fn bpe_byte_level() {
    let t = Tokenizer::from_vocab(bpe_vocab()).unwrap();
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(
        t.encode("ab ab", NO_SPECIAL).unwrap(),
        vec![id("ab"), id("Ġab")]
    );
    assert_eq!(
        t.decode(&t.encode("ab ab é", NO_SPECIAL).unwrap()),
        "ab ab é"
    );
    let eot = "<|endoftext|>";
    assert_eq!(t.encode(eot, NO_SPECIAL).unwrap().len(), eot.len());
    let opts = EncodeOptions {
        add_special: true,
        parse_special: true,
    };
    // gpt2 tokenizers add no BOS by default.
    assert_eq!(t.encode(eot, opts).unwrap(), vec![id(eot)]);
    assert!(t.is_eog(id(eot)));
}
