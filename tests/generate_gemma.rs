//! Gemma 3 270M Q4_K_M greedy decoding against llama.cpp's (tests/data/reference/gemma3-270m.json,
//! made by tools/ref_gemma.py through llama-cpp-python).

mod model_common;

use model_common::*;
use rocmforge::backend::cpu::CpuBackend;
use rocmforge::model::Model;

#[test]
#[ignore = "known failure, issue 2 open: ids diverge from llama.cpp's after a few tokens (float-noise \
            sensitivity, see docs/PERFORMANCE.md); run with --ignored"]
fn gemma3_greedy_ids_match_llama_cpp() {
    let path = match gemma_path() {
        Ok(p) => p,
        Err(e) => return skip(&e),
    };
    let reference = gemma_reference();
    let model = Model::open(&path, CpuBackend::new()).unwrap();
    for case in reference["greedy"].as_array().unwrap() {
        let prompt = json_u32s(&case["prompt_ids"]);
        let want = json_u32s(&case["ids"]);
        let top_ids = json_u32s(&case["top10_ids"]);
        let top_logits = json_f32s(&case["top10_logits"]);
        let (got, first) = greedy(&model, &prompt, want.len());
        let worst = top_ids
            .iter()
            .zip(&top_logits)
            .map(|(&i, &l)| (first[i as usize] - l).abs())
            .fold(0f32, f32::max);
        println!(
            "{:?}: worst top-10 logit difference {worst}",
            case["prompt"]
        );
        assert!(
            worst < 2e-2,
            "{:?}: top-10 logits differ by {worst}",
            case["prompt"]
        );
        assert_eq!(got, want, "prompt {:?}", case["prompt"]);
    }
}

#[test]
fn gemma3_perplexity_within_one_percent_of_llama_cpp() {
    let path = match gemma_path() {
        Ok(p) => p,
        Err(e) => return skip(&e),
    };
    let reference = gemma_reference();
    let r = &reference["perplexity"];
    // tokens of tests/data/ppl.txt as llama.cpp tokenized them (BOS first)
    let tokens = json_u32s(&r["tokens"]);
    let n_ctx = r["n_ctx"].as_u64().unwrap() as usize;
    let want = r["ppl"].as_f64().unwrap();
    let model = Model::open(&path, CpuBackend::new()).unwrap();
    let got =
        rocmforge::cli::perplexity::perplexity(&model, &tokens, n_ctx, Some(tokens[0]), |_, _| {})
            .unwrap();
    println!(
        "perplexity {} (llama.cpp {want}), running {:?}",
        got.ppl, got.running
    );
    assert_eq!(got.n_chunk as u64, r["n_chunk"].as_u64().unwrap());
    assert!(
        (got.ppl / want - 1.0).abs() < 0.01,
        "perplexity {} vs llama.cpp {want}",
        got.ppl
    );
}
