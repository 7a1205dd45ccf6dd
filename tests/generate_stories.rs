//! stories260K greedy decoding against llama.cpp's output (../shared/reference/stories260K.md).

mod model_common;

use model_common::*;
use rocmforge::backend::cpu::CpuBackend;
use rocmforge::model::Model;

#[test]
fn stories260k_greedy_ids_and_top_logits_match_llama_cpp() {
    let Some(shared) = shared_dir() else {
        println!("skipped: ../shared not found");
        return;
    };
    let md = std::fs::read_to_string(shared.join("reference/stories260K.md")).unwrap();
    let prompt: Vec<u32> = md_list(&md, "Prompt ids");
    let want: Vec<u32> = md_list(&md, "First 48 greedy ids");
    let top_ids: Vec<usize> = md_list(&md, "Top-10 ids");
    let top_logits: Vec<f32> = md_list(&md, "Their logits");
    let model = Model::open(&shared.join("models/stories260K.gguf"), CpuBackend::new()).unwrap();
    let (got, first) = greedy(&model, &prompt, want.len());
    for (id, want) in top_ids.iter().zip(&top_logits) {
        // the reference prints 4 decimals
        assert!(
            (first[*id] - want).abs() < 1e-3 + 5e-5,
            "logit of {id}: {} vs llama.cpp {want}",
            first[*id]
        );
    }
    let mut order: Vec<usize> = (0..first.len()).collect();
    order.sort_by(|&a, &b| first[b].total_cmp(&first[a]));
    assert_eq!(&order[..10], &top_ids[..]);
    assert_eq!(got, want);
}
