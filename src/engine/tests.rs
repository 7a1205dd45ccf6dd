//! Engine tests with deterministic doubles: a toy model whose next token is a hash of the whole
//! token history *as read back through the block tables* (so a wrong block, a wrong prefix-cache
//! hit or a missed write changes the output), a toy vocabulary and a toy sampler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::model::BLOCK_SIZE;

pub(crate) const V: usize = 64;
pub(crate) const EOG: u32 = 63;

/// KV storage: one token id per slot; `u32::MAX` = never written. With `device`, it draws the
/// tokens itself ([`StepModel::forward_sample`], like the GPU sampler) with [`ToySampler`].
pub(crate) struct ToyModel {
    pub(crate) slots: Vec<u32>,
    pub(crate) n_blocks: usize,
    pub(crate) device: bool,
}

pub(crate) fn next_of(history: &[u32]) -> u32 {
    let mut h: u64 = 1469598103934665603;
    for &t in history {
        h = (h ^ t as u64).wrapping_mul(1099511628211);
    }
    // EOG rarely (1 in 256 histories), so sequences run long.
    if h.is_multiple_of(256) {
        EOG
    } else {
        (h % (V as u64 - 1)) as u32
    }
}

impl StepModel for ToyModel {
    fn forward(&mut self, b: &crate::model::Batch) -> Result<Vec<f32>> {
        for i in 0..b.n_tokens() {
            let s = &b.seqs[b.seq_of_token[i] as usize];
            let p = b.positions[i] as usize;
            let slot = s.block_table[p / BLOCK_SIZE] as usize * BLOCK_SIZE + p % BLOCK_SIZE;
            self.slots[slot] = b.tokens[i];
        }
        let mut out = Vec::new();
        for &i in b.logits_for {
            let s = &b.seqs[b.seq_of_token[i as usize] as usize];
            let p = b.positions[i as usize] as usize;
            let mut hist = Vec::new();
            for q in 0..=p {
                let slot = s.block_table[q / BLOCK_SIZE] as usize * BLOCK_SIZE + q % BLOCK_SIZE;
                let t = self.slots[slot];
                if t == u32::MAX {
                    return Err(crate::Error::Model(format!("read unwritten slot {slot}")));
                }
                hist.push(t);
            }
            let best = next_of(&hist) as usize;
            out.extend((0..V).map(|j| if j == best { 5.0 } else { (j % 7) as f32 * 0.1 }));
        }
        Ok(out)
    }
    fn samples_on_device(&self) -> bool {
        self.device
    }
    fn forward_sample(
        &mut self,
        b: &crate::model::Batch,
        draws: &[Draw],
        host_logits: bool,
    ) -> Result<(Vec<u32>, Option<Vec<f32>>)> {
        let logits = self.forward(b)?;
        let tokens = draws
            .iter()
            .enumerate()
            .map(|(i, d)| {
                ToySampler.sample(&SampleArgs {
                    spec: d.spec,
                    seed: d.seed,
                    logits: &logits[i * V..(i + 1) * V],
                    recent: d.recent,
                    seq_id: d.seq_id,
                    step: d.step,
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok((tokens, host_logits.then_some(logits)))
    }
    fn n_vocab(&self) -> usize {
        V
    }
    fn n_ctx(&self) -> usize {
        4096
    }
    fn n_kv_blocks(&self) -> usize {
        self.n_blocks
    }
}

/// Token i is the two-byte text "<letter><digit>" except EOG.
pub(crate) struct ToyVocab;
struct ToyDecoder;
pub(crate) fn piece(id: u32) -> String {
    format!("{}{}", (b'a' + (id % 26) as u8) as char, id / 26)
}
impl TextDecoder for ToyDecoder {
    fn push(&mut self, id: u32) -> String {
        piece(id)
    }
    fn finish(&mut self) -> String {
        String::new()
    }
}
impl Vocab for ToyVocab {
    fn n_vocab(&self) -> usize {
        V
    }
    fn is_eog(&self, id: u32) -> bool {
        id == EOG
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        piece(id).into_bytes()
    }
    fn decoder(&self) -> Box<dyn TextDecoder> {
        Box::new(ToyDecoder)
    }
}

/// Greedy at temperature 0; otherwise a hash of (seed, seq_id, step).
pub(crate) struct ToySampler;
impl TokenSampler for ToySampler {
    fn sample(&mut self, a: &SampleArgs) -> Result<u32> {
        if a.spec.temperature == 0.0 {
            let mut best = 0;
            for (i, &l) in a.logits.iter().enumerate() {
                if l > a.logits[best] {
                    best = i;
                }
            }
            return Ok(best as u32);
        }
        let h = a
            .seed
            .wrapping_mul(0x9e3779b97f4a7c15)
            .wrapping_add(a.seq_id.wrapping_mul(31))
            .wrapping_add(a.step.wrapping_mul(0xff51afd7ed558ccd));
        Ok(((h >> 17) % (V as u64 - 1)) as u32)
    }
}

fn start(max_seqs: usize, budget: usize, n_blocks: usize, queue: usize) -> EngineHandle {
    start_on(max_seqs, budget, n_blocks, queue, false)
}

fn start_on(
    max_seqs: usize,
    budget: usize,
    n_blocks: usize,
    queue: usize,
    device: bool,
) -> EngineHandle {
    let cfg = EngineConfig {
        max_seqs,
        token_budget: budget,
        queue_size: queue,
        n_ctx: 4096,
    };
    let load = move || -> Result<core::ModelParts> {
        Ok((
            Box::new(ToyModel {
                slots: vec![u32::MAX; n_blocks * BLOCK_SIZE],
                n_blocks,
                device,
            }),
            Box::new(ToySampler),
        ))
    };
    spawn(
        cfg,
        Arc::new(ToyVocab),
        Arc::new(Metrics::default()),
        load,
        |_| {},
    )
    .unwrap()
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> GenRequest {
    GenRequest {
        prompt,
        max_tokens,
        sampling: SamplingSpec {
            temperature: 0.0,
            ..Default::default()
        },
        stop: vec![],
        logprobs: None,
        ignore_eos: false,
    }
}

/// The reference: the toy model's greedy continuation computed directly.
fn reference(prompt: &[u32], max_tokens: usize) -> (String, FinishReason, usize) {
    let mut h = prompt.to_vec();
    let mut text = String::new();
    for n in 1..=max_tokens {
        let t = next_of(&h);
        h.push(t);
        if t == EOG {
            return (text, FinishReason::Stop, n);
        }
        text.push_str(&piece(t));
    }
    (text, FinishReason::Length, max_tokens)
}

fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> (String, FinishReason, Usage) {
    let mut text = String::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Delta { text: t, .. }) => text.push_str(&t),
            Some(Event::Done { finish, usage }) => return (text, finish, usage),
            Some(Event::Error(e)) => panic!("engine error: {e}"),
            None => panic!("channel closed without Done"),
        }
    }
}

fn prompt_of(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7 + seed * 13) % (V as u32 - 1))
        .collect()
}

fn wait_idle(h: &EngineHandle) {
    let t0 = Instant::now();
    let m = h.metrics();
    while t0.elapsed() < Duration::from_secs(5) {
        if m.running.load(std::sync::atomic::Ordering::Relaxed) == 0
            && m.kv_used.load(std::sync::atomic::Ordering::Relaxed) == 0
            && m.queued.load(std::sync::atomic::Ordering::Relaxed) == 0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("engine did not go idle:\n{}", m.render());
}

#[test]
fn greedy_alone_equals_reference() {
    let h = start(4, 64, 64, 16);
    let p = prompt_of(1, 37);
    let (mut _id, mut rx) = h.submit(greedy(p.clone(), 40)).unwrap();
    let (text, finish, usage) = collect(&mut rx);
    let (rt, rf, rn) = reference(&p, 40);
    assert_eq!(text, rt);
    assert_eq!(finish, rf);
    assert_eq!(usage.completion_tokens, rn);
    assert_eq!(usage.prompt_tokens, 37);
    _id = 0;
    wait_idle(&h);
    h.shutdown();
}

/// Many concurrent requests with shared prefixes, a small budget (chunked prefill) and too few
/// blocks (preemption): every output equals the reference, whether the engine samples host
/// logits or the model draws the tokens on its device.
#[test]
fn concurrent_requests_with_preemption_and_prefix_sharing_match_reference() {
    concurrent_match_reference(false);
}

#[test]
fn device_sampling_concurrent_requests_match_reference() {
    concurrent_match_reference(true);
}

/// The toy model's EOG comes up rarely; with ignore_eos a request runs to max_tokens anyway,
/// and the text equals the reference continued through EOG tokens.
#[test]
fn ignore_eos_runs_to_max_tokens() {
    let h = start(4, 64, 200, 16);
    // a prompt whose greedy continuation hits EOG within 100 tokens
    let (p, hit) = (0..5000u32)
        .map(|s| prompt_of(s, 5))
        .find_map(|p| {
            let mut h = p.clone();
            let hit = (0..100).find(|_| {
                let t = next_of(&h);
                h.push(t);
                t == EOG
            });
            hit.map(|i| (p, i))
        })
        .expect("some prompt reaches EOG");
    let mut req = greedy(p, hit + 20);
    let (_, mut rx) = h.submit(req.clone()).unwrap();
    let (_, finish, usage) = collect(&mut rx);
    assert_eq!(finish, FinishReason::Stop);
    assert_eq!(usage.completion_tokens, hit + 1);
    req.ignore_eos = true;
    let (_, mut rx) = h.submit(req).unwrap();
    let (_, finish, usage) = collect(&mut rx);
    assert_eq!(finish, FinishReason::Length);
    assert_eq!(usage.completion_tokens, hit + 20);
    wait_idle(&h);
    h.shutdown();
}

fn concurrent_match_reference(device: bool) {
    let h = start_on(16, 48, 40, 100, device);
    let mut rxs = Vec::new();
    for i in 0..40u32 {
        // Half share a 40-token prefix.
        let mut p = prompt_of(if i % 2 == 0 { 99 } else { i }, 40);
        p.extend(prompt_of(i, (i % 9) as usize + 1));
        let (_, rx) = h.submit(greedy(p.clone(), 30 + (i % 5) as usize)).unwrap();
        rxs.push((p, 30 + (i % 5) as usize, rx));
    }
    for (p, n, mut rx) in rxs {
        let (text, finish, usage) = collect(&mut rx);
        let (rt, rf, rn) = reference(&p, n);
        assert_eq!(text, rt, "prompt {p:?}");
        assert_eq!(finish, rf);
        assert_eq!(usage.completion_tokens, rn);
    }
    wait_idle(&h);
    let m = h.metrics();
    assert!(
        m.preemptions.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "test meant to preempt"
    );
    assert!(
        m.prefix_hits.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "test meant to share"
    );
    h.shutdown();
}

#[test]
fn user_seed_reproduces_across_requests() {
    let h = start(4, 64, 64, 16);
    let mut req = greedy(prompt_of(3, 10), 20);
    req.sampling.temperature = 0.9;
    req.sampling.seed = Some(1234);
    let (_, mut a) = h.submit(req.clone()).unwrap();
    let (_, mut b) = h.submit(req.clone()).unwrap();
    let ta = collect(&mut a).0;
    assert_eq!(ta, collect(&mut b).0);
    req.sampling.seed = Some(1235);
    let (_, mut c) = h.submit(req).unwrap();
    assert_ne!(ta, collect(&mut c).0);
    h.shutdown();
}

#[test]
fn stop_string_ends_generation_without_leaking() {
    let h = start(4, 64, 64, 16);
    let p = prompt_of(5, 12);
    let (full, _, _) = reference(&p, 30);
    // A stop string spanning a token boundary: the end of token 3 and the start of token 4.
    let stop = full[5..8].to_string();
    let expect = &full[..full.find(&stop).unwrap()];
    let mut req = greedy(p, 30);
    req.stop = vec![stop.clone()];
    let (_, mut rx) = h.submit(req).unwrap();
    let (text, finish, usage) = collect(&mut rx);
    assert_eq!(text, expect);
    assert_eq!(finish, FinishReason::Stop);
    assert!(usage.completion_tokens < 30);
    wait_idle(&h);
    h.shutdown();
}

#[test]
fn dropped_receivers_free_their_blocks() {
    let h = start(8, 32, 200, 100);
    let mut keep = Vec::new();
    for i in 0..20u32 {
        let mut req = greedy(prompt_of(i, 50), 3000);
        req.ignore_eos = true; // still running when its client goes
        let (_, rx) = h.submit(req).unwrap();
        if i % 3 == 0 {
            keep.push(rx);
        } // others dropped at once: queued, or in prefill
    }
    // Mid-stream: each kept request has produced text, then its client goes away.
    for mut rx in keep {
        assert!(matches!(rx.blocking_recv(), Some(Event::Delta { .. })));
    }
    wait_idle(&h);
    let m = h.metrics();
    assert_eq!(m.cancelled.load(std::sync::atomic::Ordering::Relaxed), 20);
    h.shutdown();
}

#[test]
fn full_queue_is_refused() {
    // Budget 1 token per step and a long prompt keep requests waiting.
    let h = start(1, 1, 64, 2);
    let mut rxs = Vec::new();
    let mut refused = 0;
    for i in 0..6 {
        match h.submit(greedy(prompt_of(i, 200), 5)) {
            Ok((_, rx)) => rxs.push(rx),
            Err(SubmitError::QueueFull) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused >= 3, "refused {refused}");
    drop(rxs);
    wait_idle(&h);
    h.shutdown();
}

#[test]
fn logprobs_are_normalized_and_include_the_chosen_token() {
    let h = start(4, 64, 64, 16);
    let mut req = greedy(prompt_of(2, 5), 3);
    req.logprobs = Some(3);
    let (_, mut rx) = h.submit(req).unwrap();
    let mut seen = 0;
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Delta { logprobs, .. } => {
                for lp in logprobs {
                    seen += 1;
                    assert_eq!(lp.top.len(), 3);
                    assert_eq!(lp.top[0].0, lp.token, "greedy picks the top token");
                    assert!((lp.top[0].3 - lp.logprob).abs() < 1e-6);
                    assert!(lp.top[0].3 >= lp.top[1].3 && lp.top[1].3 >= lp.top[2].3);
                    assert!(lp.logprob < 0.0 && lp.logprob > -1.0);
                }
            }
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(seen, 3);
    h.shutdown();
}
