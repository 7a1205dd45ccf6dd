//! Gemma 3 270M Q4_K_M against llama.cpp (tests/data/reference/gemma3-270m.json, made by
//! tools/ref_gemma.py through llama-cpp-python): teacher-forced greedy agreement, tie-aware.

mod model_common;

use model_common::*;
use rocmforge::backend::cpu::CpuBackend;
use rocmforge::model::Model;

/// Per-position agreement of our logits with llama.cpp's along llama.cpp's greedy sequence.
struct Step {
    /// llama.cpp's greedy token and its top-1 minus top-2 logit margin.
    tok: u32,
    margin: f32,
    /// our argmax, and our logit of `tok` minus llama.cpp's.
    ours: u32,
    dlogit: f32,
}

/// Teacher forcing: the prompt as one batch, then llama.cpp's greedy tokens one at a time
/// (as generation runs); one `Step` per generated position.
fn teacher_forced(model: &Model<CpuBackend>, case: &serde_json::Value) -> Vec<Step> {
    let prompt = json_u32s(&case["prompt_ids"]);
    let ids = json_u32s(&case["ids"]);
    let top2: Vec<Vec<f32>> = case["top2_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_f32s)
        .collect();
    let mut s = Session::new(model, prompt.len() + ids.len() + 1);
    let mut logits = s.feed(model, &prompt, false);
    let mut steps = Vec::new();
    for (k, &tok) in ids.iter().enumerate() {
        steps.push(Step {
            tok,
            margin: top2[k][0] - top2[k][1],
            ours: argmax(&logits),
            dlogit: logits[tok as usize] - top2[k][0],
        });
        if k + 1 < ids.len() {
            logits = s.feed(model, &[tok], false);
        }
    }
    steps
}

/// Bounds derived from llama.cpp's own spread (the reference's `noise` entry: the same sequences
/// evaluated by llama.cpp in two other orders, prompt one token at a time and everything as one
/// batch, against the reference order).
struct Bounds {
    /// A position is a near-tie when llama.cpp's top-1 minus top-2 margin is below the largest
    /// change of that margin llama.cpp showed between its own evaluation orders.
    tie: f32,
    /// Our logit of llama.cpp's token may differ from llama.cpp's by at most this.
    logit: f32,
    /// The root mean square of those differences over all positions: at most this.
    rms: f64,
}

/// How much larger than llama.cpp's own spread ours may be: ours is one more sample of the same
/// float noise (docs/PERFORMANCE.md, Gemma notes). The rms over 384 positions is stable
/// (llama.cpp's two other orders 0.243 / 0.274, ours 0.275-0.306 with different CPU kernels);
/// the maximum is not (0.70 / 1.01 for llama.cpp, 0.96-1.44 for ours), hence the wider factor.
const RMS_FACTOR: f64 = 1.5;
const MAX_FACTOR: f32 = 2.0;

fn bounds(reference: &serde_json::Value) -> Bounds {
    let (mut tie, mut logit, mut rms) = (0f32, 0f32, 0f64);
    for p in reference["noise"].as_object().unwrap().values() {
        tie = tie.max(p["max_abs_margin_diff"].as_f64().unwrap() as f32);
        logit = logit.max(p["max_abs_logit_diff"].as_f64().unwrap() as f32);
        rms = rms.max(p["rms_logit_diff"].as_f64().unwrap());
    }
    println!(
        "llama.cpp's own spread: margins move by up to {tie:.3}, its token's logit by up to \
         {logit:.3} (rms {rms:.3})"
    );
    Bounds {
        tie,
        logit: logit * MAX_FACTOR,
        rms: rms * RMS_FACTOR,
    }
}

/// Teacher-forced along llama.cpp's greedy sequences (8 prompts x 48 steps): at every step our
/// argmax is llama.cpp's token unless llama.cpp's own margin is a near-tie, and our logit of its
/// token is within the bound of llama.cpp's (each step, and as rms over all steps).
#[test]
fn gemma3_teacher_forced_greedy_matches_llama_cpp() {
    let path = match gemma_path() {
        Ok(p) => p,
        Err(e) => return skip(&e),
    };
    let reference = gemma_reference();
    let b = bounds(&reference);
    let model = Model::open(&path, CpuBackend::new()).unwrap();
    let (mut exact, mut excused, mut n) = (0, 0, 0);
    let (mut worst, mut sq) = (0f32, 0f64);
    let mut failures = Vec::new();
    for case in reference["greedy"].as_array().unwrap() {
        let steps = teacher_forced(&model, case);
        // one character per step: '.' same argmax, 't' excused near-tie, 'X' a failure
        let mut line = String::new();
        for (k, st) in steps.iter().enumerate() {
            n += 1;
            worst = worst.max(st.dlogit.abs());
            sq += (st.dlogit as f64).powi(2);
            if st.ours == st.tok {
                exact += 1;
                line.push('.');
            } else if st.margin < b.tie {
                excused += 1;
                line.push('t');
            } else {
                line.push('X');
                failures.push(format!(
                    "{:?} step {k}: ours {} vs llama.cpp {} (its margin {})",
                    case["prompt"], st.ours, st.tok, st.margin
                ));
            }
            if st.dlogit.abs() > b.logit {
                failures.push(format!(
                    "{:?} step {k}: logit of {} differs by {}",
                    case["prompt"], st.tok, st.dlogit
                ));
            }
        }
        let w = steps.iter().map(|s| s.dlogit.abs()).fold(0f32, f32::max);
        println!(
            "{line} first |d logit| {:.1e}, max {w:.3}  {:?}",
            steps[0].dlogit.abs(),
            case["prompt"]
        );
    }
    let rms = (sq / n as f64).sqrt();
    println!(
        "{exact} of {n} positions agree exactly, {excused} near-ties excused (margin < {:.3}); \
         |d logit| max {worst:.4} (bound {:.3}), rms {rms:.4} (bound {:.3})",
        b.tie, b.logit, b.rms
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(rms <= b.rms, "rms logit difference {rms} > {}", b.rms);
}

/// Free-running greedy generation (our own argmax fed back) gives llama.cpp's ids until the
/// first position where llama.cpp's margin is a near-tie, and where the two first differ, llama.cpp's
/// margin is a near-tie.
#[test]
fn gemma3_free_running_greedy_matches_llama_cpp_until_a_near_tie() {
    let path = match gemma_path() {
        Ok(p) => p,
        Err(e) => return skip(&e),
    };
    let reference = gemma_reference();
    let b = bounds(&reference);
    let model = Model::open(&path, CpuBackend::new()).unwrap();
    let mut agreed = 0;
    for case in reference["greedy"].as_array().unwrap() {
        let prompt = json_u32s(&case["prompt_ids"]);
        let want = json_u32s(&case["ids"]);
        let margins: Vec<f32> = case["top2_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let l = json_f32s(l);
                l[0] - l[1]
            })
            .collect();
        let (got, _) = greedy(&model, &prompt, want.len());
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        println!(
            "{:?}: {same} of {} ids agree{}",
            case["prompt"],
            want.len(),
            if same < want.len() {
                format!(
                    "; at step {same} llama.cpp's margin is {:.3}: ours {}, llama.cpp {}",
                    margins[same], got[same], want[same]
                )
            } else {
                String::new()
            }
        );
        assert!(
            same == want.len() || margins[same] < b.tie,
            "prompt {:?}: free-running ids differ at step {same}, where llama.cpp's margin {} \
             is no near-tie (< {})",
            case["prompt"],
            margins[same],
            b.tie
        );
        agreed += same;
    }
    println!("{agreed} ids agree before the first difference");
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
