//! Special tokens llama.cpp recognises by their text (end of turn, FIM, end of generation) and the
//! per-model token attributes it sets by model name.

use std::collections::HashSet;

use super::fxhash::FxHashMap;
use super::{ATTR_CONTROL, ATTR_NORMAL, ATTR_RSTRIP, ATTR_USER_DEFINED};

pub(super) const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
pub(super) const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
pub(super) const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
pub(super) const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
pub(super) const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
pub(super) const FIM_PAD_TEXTS: &[&str] =
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
pub(super) const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
pub(super) const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
pub(super) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Ids from the metadata that text detection fills in where missing.
pub(super) struct TextIds {
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Fills missing EOT/EOM/FIM ids from token texts (lowest id wins where llama.cpp's pick is
/// unordered), makes all such tokens control tokens, applies llama.cpp's gpt-oss and Gemma 4
/// adjustments, and returns the end-of-generation set.
pub(super) fn classify_by_text(
    token_to_id: &FxHashMap<String, u32>,
    attrs: &mut [u32],
    ids: &mut TextIds,
) -> HashSet<u32> {
    let find = |texts: &[&str]| {
        texts
            .iter()
            .filter_map(|t| token_to_id.get(*t).copied())
            .min()
    };
    ids.eot = ids.eot.or_else(|| find(EOT_TEXTS));
    ids.eom = ids.eom.or_else(|| find(EOM_TEXTS));
    ids.fim_pad = ids.fim_pad.or_else(|| find(FIM_PAD_TEXTS));
    ids.fim_rep = ids.fim_rep.or_else(|| find(FIM_REP_TEXTS));
    ids.fim_sep = ids.fim_sep.or_else(|| find(FIM_SEP_TEXTS));
    for list in [
        EOT_TEXTS,
        EOM_TEXTS,
        FIM_PRE_TEXTS,
        FIM_SUF_TEXTS,
        FIM_MID_TEXTS,
        FIM_PAD_TEXTS,
        FIM_REP_TEXTS,
        FIM_SEP_TEXTS,
        EOG_TEXTS,
    ] {
        for t in list {
            if let Some(&id) = token_to_id.get(*t) {
                attrs[id as usize] |= ATTR_CONTROL;
            }
        }
    }
    let mut eog: HashSet<u32> = [
        ids.fim_pad,
        ids.fim_rep,
        ids.fim_sep,
        ids.eos,
        ids.eot,
        ids.eom,
    ]
    .into_iter()
    .flatten()
    .collect();
    eog.extend(
        EOG_TEXTS
            .iter()
            .filter_map(|t| token_to_id.get(*t).copied()),
    );
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = token_to_id.get(t) {
            attrs[id as usize] = ATTR_USER_DEFINED;
        }
    }
    let has = |eog: &HashSet<u32>, t: &str| token_to_id.get(t).is_some_and(|id| eog.contains(id));
    if (has(&eog, "<|return|>") && has(&eog, "<|call|>"))
        || (has(&eog, "<|calls|>") && has(&eog, "<|flush|>"))
    {
        if let Some(&id) = token_to_id.get("<|end|>") {
            eog.remove(&id);
            attrs[id as usize] = ATTR_USER_DEFINED;
        }
    }
    if has(&eog, "<|tool_response>") {
        if let Some(&id) = token_to_id.get("</s>") {
            eog.remove(&id);
            attrs[id as usize] = ATTR_NORMAL;
        }
    }
    eog
}

/// Attributes llama.cpp sets by `general.name`: Phi-3 strips whitespace after its special tokens.
pub(super) fn per_model_attrs(
    name: Option<&str>,
    specials: &[u32],
    attrs: &mut [u32],
    token_to_id: &FxHashMap<String, u32>,
) {
    let name = name.unwrap_or("").to_lowercase();
    if !(name.contains("phi-3") || name.contains("phi3")) {
        return;
    }
    for &id in specials {
        attrs[id as usize] |= ATTR_RSTRIP;
    }
    let mut set = |t: &str, on: bool| {
        if let Some(&id) = token_to_id.get(t) {
            if on {
                attrs[id as usize] |= ATTR_RSTRIP;
            } else {
                attrs[id as usize] &= !ATTR_RSTRIP;
            }
        }
    };
    set("</s>", true);
    for t in ["<unk>", "<s>", "<|endoftext|>"] {
        set(t, false);
    }
}
