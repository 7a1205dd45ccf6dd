//! The engine loop and the handle the server submits requests through.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::metrics::Metrics;
use super::request::{Event, FinishReason, GenRequest, SamplingSpec, TokenLogprob, Usage};
use super::runner::{run_step, StepResult};
use super::scheduler::{Scheduler, SchedulerConfig};
use super::stop::StopMatcher;
use super::{Draw, SampleArgs, StepModel, TextDecoder, TokenSampler, Vocab};
use crate::{Error, Result};

/// Engine limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Most sequences decoded together (`--parallel`).
    pub max_seqs: usize,
    /// Most tokens in one forward pass (prefill chunks are cut to fit).
    pub token_budget: usize,
    /// Most requests waiting for admission before new ones get 503.
    pub queue_size: usize,
    /// Longest sequence, prompt plus generated tokens.
    pub n_ctx: usize,
}

/// Why a request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The waiting queue is full (answer 503 with Retry-After).
    QueueFull,
    /// The engine is gone (shutting down or failed).
    Stopped,
}

struct Submission {
    id: u64,
    req: GenRequest,
    tx: UnboundedSender<Event>,
    arrived: Instant,
}

/// The server's side of the engine. Dropping it (after every request finished) ends the thread.
pub struct EngineHandle {
    tx: Mutex<Option<Sender<Submission>>>,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
    cfg: EngineConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EngineHandle {
    /// Queues a request. Events arrive on the returned receiver, ending with `Done` or `Error`;
    /// dropping the receiver cancels the request.
    pub fn submit(
        &self,
        req: GenRequest,
    ) -> std::result::Result<(u64, UnboundedReceiver<Event>), SubmitError> {
        let prev = self.metrics.queued.fetch_add(1, Relaxed);
        if prev >= self.cfg.queue_size as u64 {
            self.metrics.queued.fetch_sub(1, Relaxed);
            return Err(SubmitError::QueueFull);
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = unbounded_channel();
        let sub = Submission {
            id,
            req,
            tx,
            arrived: Instant::now(),
        };
        let sent = match self.tx.lock() {
            Ok(g) => g.as_ref().map(|s| s.send(sub).is_ok()).unwrap_or(false),
            Err(_) => false,
        };
        if !sent {
            self.metrics.queued.fetch_sub(1, Relaxed);
            return Err(SubmitError::Stopped);
        }
        Ok((id, rx))
    }

    /// Whether the engine thread is still running (false after a panic or shutdown).
    pub fn is_alive(&self) -> bool {
        self.thread
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|t| !t.is_finished()))
            .unwrap_or(false)
    }

    /// Shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The limits the engine runs with.
    pub fn config(&self) -> EngineConfig {
        self.cfg
    }

    /// Stops taking requests, lets the running ones finish and joins the thread.
    pub fn shutdown(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let t = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// What building the model on the engine thread returns.
pub type ModelParts = (Box<dyn StepModel>, Box<dyn TokenSampler>);

/// Starts the engine thread. `load` builds the model and sampler on that thread (so a GPU
/// context never crosses threads); `on_ready` is called with the result once loading ends.
pub fn spawn<L, R>(
    cfg: EngineConfig,
    vocab: Arc<dyn Vocab>,
    metrics: Arc<Metrics>,
    load: L,
    on_ready: R,
) -> Result<EngineHandle>
where
    L: FnOnce() -> Result<ModelParts> + Send + 'static,
    R: FnOnce(Result<()>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Submission>();
    let m = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("rocmforge-engine".into())
        .spawn(move || match load() {
            Ok((model, sampler)) => {
                let n_blocks = model.n_kv_blocks();
                on_ready(Ok(()));
                let mut e = EngineLoop::new(cfg, n_blocks, model, sampler, vocab, m);
                e.run(rx);
            }
            Err(err) => on_ready(Err(err)),
        })
        .map_err(|e| Error::InvalidInput(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle {
        tx: Mutex::new(Some(tx)),
        metrics,
        next_id: AtomicU64::new(1),
        cfg,
        thread: Mutex::new(Some(thread)),
    })
}

struct ReqState {
    tx: UnboundedSender<Event>,
    req: GenRequest,
    seed: u64,
    seq_id: u64,
    decoder: Box<dyn TextDecoder>,
    stop: StopMatcher,
    n_generated: usize,
    arrived: Instant,
    last_token: Option<Instant>,
    admitted: bool,
}

struct EngineLoop {
    cfg: EngineConfig,
    sched: Scheduler,
    model: Box<dyn StepModel>,
    sampler: Box<dyn TokenSampler>,
    vocab: Arc<dyn Vocab>,
    metrics: Arc<Metrics>,
    reqs: HashMap<u64, ReqState>,
    seeds: RandomState,
    /// Per-phase step times, when the environment sets `ROCMFORGE_ENGINE_PROFILE=1`.
    profile: Option<StepProfile>,
    /// This step's events for the requests' channels, delivered after the step.
    outbox: Outbox,
}

/// A batch of events for the requests' channels.
type EventBatch = Vec<(UnboundedSender<Event>, Event)>;

/// Events for the requests' channels, handed once per step to a sender thread. Sending wakes
/// the receiving task, a futex call when its runtime thread is parked: about 4 µs per token,
/// 0.54 ms of a 128-sequence step on the H100 host (docs/PERFORMANCE.md), which then runs beside
/// the next forward pass instead of before it. One thread keeps every request's events in order.
struct Outbox {
    pending: EventBatch,
    to_thread: Option<Sender<EventBatch>>,
    thread: Option<JoinHandle<()>>,
}

impl Outbox {
    /// An outbox with its sender thread (without one, if the thread cannot be started: events
    /// are then sent from the engine thread).
    fn new() -> Self {
        let (tx, rx) = mpsc::channel::<EventBatch>();
        let thread = std::thread::Builder::new()
            .name("rocmforge-events".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    deliver(batch);
                }
            })
            .ok();
        Outbox {
            pending: Vec::new(),
            to_thread: thread.is_some().then_some(tx),
            thread,
        }
    }

    fn push(&mut self, tx: &UnboundedSender<Event>, ev: Event) {
        self.pending.push((tx.clone(), ev));
    }

    /// Hands the pending events to the sender thread.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        match &self.to_thread {
            Some(t) => {
                if let Err(mpsc::SendError(batch)) = t.send(batch) {
                    deliver(batch);
                }
            }
            None => deliver(batch),
        }
    }

    /// Delivers everything and stops the sender thread.
    fn close(&mut self) {
        self.flush();
        self.to_thread = None;
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

/// Sends each event (a request whose client has gone just drops it).
fn deliver(batch: EventBatch) {
    for (tx, ev) in batch {
        let _ = tx.send(ev);
    }
}

/// Seconds spent in each phase of the engine's steps (printed when the engine ends).
#[derive(Debug, Default)]
struct StepProfile {
    steps: u64,
    schedule: f64,
    run: f64,
    tokens: f64,
    other: f64,
}

impl StepProfile {
    fn report(&self) {
        let n = self.steps.max(1) as f64 / 1e3;
        eprintln!(
            "engine profile: {} steps, per step: schedule {:.3} ms, forward+sample {:.3} ms, \
             token handling {:.3} ms, loop rest {:.3} ms",
            self.steps,
            self.schedule / n,
            self.run / n,
            self.tokens / n,
            self.other / n
        );
    }
}

impl EngineLoop {
    fn new(
        cfg: EngineConfig,
        n_blocks: usize,
        model: Box<dyn StepModel>,
        sampler: Box<dyn TokenSampler>,
        vocab: Arc<dyn Vocab>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sched = Scheduler::new(SchedulerConfig {
            max_seqs: cfg.max_seqs.max(1),
            token_budget: cfg.token_budget.max(1),
            n_blocks,
        });
        let e = EngineLoop {
            cfg,
            sched,
            model,
            sampler,
            vocab,
            metrics,
            reqs: HashMap::new(),
            seeds: RandomState::new(),
            profile: (std::env::var("ROCMFORGE_ENGINE_PROFILE").as_deref() == Ok("1"))
                .then(StepProfile::default),
            outbox: Outbox::new(),
        };
        e.update_gauges();
        e
    }

    fn run(&mut self, rx: Receiver<Submission>) {
        let mut open = true;
        loop {
            if !self.sched.has_work() {
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(s) => self.accept(s),
                    Err(_) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(s) => self.accept(s),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let t0 = Instant::now();
            self.cancel_disconnected();
            let (ran, inner) = self.step();
            self.update_gauges();
            if let Some(p) = self.profile.as_mut() {
                p.other += t0.elapsed().as_secs_f64() - inner;
            }
            if !ran && self.sched.has_work() {
                // Nothing could run (e.g. everything waits for blocks): wait for news instead
                // of spinning.
                match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                    Ok(s) => self.accept(s),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
            }
        }
        self.outbox.close();
        self.update_gauges();
        if let Some(p) = &self.profile {
            p.report();
        }
    }

    fn accept(&mut self, s: Submission) {
        let seed = s
            .req
            .sampling
            .seed
            .unwrap_or_else(|| self.seeds.hash_one(s.id));
        let seq_id = if s.req.sampling.seed.is_some() {
            0
        } else {
            s.id
        };
        self.sched.add(s.id, s.req.prompt.clone());
        self.reqs.insert(
            s.id,
            ReqState {
                tx: s.tx,
                stop: StopMatcher::new(&s.req.stop),
                req: s.req,
                seed,
                seq_id,
                decoder: self.vocab.decoder(),
                n_generated: 0,
                arrived: s.arrived,
                last_token: None,
                admitted: false,
            },
        );
    }

    /// Removes a request everywhere; `queued` is decremented if it never left the queue.
    fn drop_request(&mut self, id: u64) -> Option<ReqState> {
        self.sched.remove(id);
        let st = self.reqs.remove(&id)?;
        if !st.admitted {
            self.metrics.queued.fetch_sub(1, Relaxed);
        }
        Some(st)
    }

    fn cancel_disconnected(&mut self) {
        let gone: Vec<u64> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.drop_request(id);
            self.metrics.cancelled.fetch_add(1, Relaxed);
        }
    }

    /// Plans and runs one step; returns whether a forward pass ran.
    /// One step; returns whether anything ran and the seconds it took.
    fn step(&mut self) -> (bool, f64) {
        let t0 = Instant::now();
        let ran = self.step_inner(t0);
        self.outbox.flush();
        (ran, t0.elapsed().as_secs_f64())
    }

    fn step_inner(&mut self, t0: Instant) -> bool {
        let out = self.sched.schedule();
        let t_sched = t0.elapsed().as_secs_f64();
        for &id in &out.rejected {
            if let Some(st) = self.drop_request(id) {
                self.outbox.push(
                    &st.tx,
                    Event::Error(format!(
                        "request {id} needs more KV blocks than the cache has"
                    )),
                );
            }
        }
        for &id in &out.admitted {
            if let Some(st) = self.reqs.get_mut(&id) {
                st.admitted = true;
                self.metrics.queued.fetch_sub(1, Relaxed);
                self.metrics
                    .prompt_tokens
                    .fetch_add(st.req.prompt.len() as u64, Relaxed);
            }
        }
        self.metrics
            .preemptions
            .fetch_add(out.preempted.len() as u64, Relaxed);
        if out.seqs.is_empty() {
            return false;
        }
        let on_device = self.model.samples_on_device();
        let result = {
            let mut draws = Vec::new();
            let mut host_logits = false;
            if on_device {
                for x in out.seqs.iter().filter(|x| x.wants_logits) {
                    let (Some(st), Some(seq)) =
                        (self.reqs.get(&x.id), self.sched.running_seq(x.id))
                    else {
                        continue;
                    };
                    host_logits |= st.req.logprobs.is_some();
                    draws.push(Draw {
                        spec: &st.req.sampling,
                        seed: st.seed,
                        recent: penalty_window(&seq.tokens, &st.req.sampling),
                        seq_id: st.seq_id,
                        step: st.n_generated as u64,
                    });
                }
            }
            let d = on_device.then_some((draws.as_slice(), host_logits));
            run_step(self.model.as_mut(), &self.sched, &out, d)
        };
        let t_run = t0.elapsed().as_secs_f64();
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("forward failed: {e}");
                for x in &out.seqs {
                    if let Some(st) = self.drop_request(x.id) {
                        self.outbox
                            .push(&st.tx, Event::Error(format!("forward pass failed: {e}")));
                    }
                }
                return true;
            }
        };
        self.sched.commit(&out);
        let n_vocab = self.model.n_vocab();
        let (tokens, logits) = match result {
            StepResult::Logits(l) => (None, Some(l)),
            StepResult::Tokens(t, l) => (Some(t), l),
        };
        let mut row = 0;
        for x in &out.seqs {
            if !x.wants_logits {
                continue;
            }
            let l = logits
                .as_ref()
                .map(|l| &l[row * n_vocab..(row + 1) * n_vocab]);
            let token = tokens.as_ref().map(|t| t[row]);
            row += 1;
            if let Err(e) = self.next_token(x.id, l, token) {
                if let Some(st) = self.drop_request(x.id) {
                    self.outbox.push(&st.tx, Event::Error(e.to_string()));
                }
            }
        }
        if let Some(p) = self.profile.as_mut() {
            p.steps += 1;
            p.schedule += t_sched;
            p.run += t_run - t_sched;
            p.tokens += t0.elapsed().as_secs_f64() - t_run;
        }
        true
    }

    /// Records and streams the next token of `id` (`token` when the device drew it, else sampled
    /// here from `logits`); finishes the request when it is done.
    fn next_token(&mut self, id: u64, logits: Option<&[f32]>, token: Option<u32>) -> Result<()> {
        let Some(st) = self.reqs.get_mut(&id) else {
            return Ok(());
        };
        let Some(seq) = self.sched.running_seq(id) else {
            return Ok(());
        };
        let n_tokens = seq.tokens.len();
        let recent = penalty_window(&seq.tokens, &st.req.sampling);
        let token = match (token, logits) {
            (Some(t), _) => t,
            (None, Some(logits)) => self.sampler.sample(&SampleArgs {
                spec: &st.req.sampling,
                seed: st.seed,
                logits,
                recent,
                seq_id: st.seq_id,
                step: st.n_generated as u64,
            })?,
            (None, None) => {
                return Err(Error::Model(format!(
                    "request {id}: neither a token nor logits"
                )))
            }
        };
        let logprobs = match (st.req.logprobs, logits) {
            (Some(k), Some(logits)) => vec![token_logprob(self.vocab.as_ref(), logits, token, k)],
            _ => Vec::new(),
        };
        let now = Instant::now();
        match st.last_token {
            None => self.metrics.ttft.observe((now - st.arrived).as_secs_f64()),
            Some(t) => self.metrics.itl.observe((now - t).as_secs_f64()),
        }
        st.last_token = Some(now);
        st.n_generated += 1;
        self.metrics.generated_tokens.fetch_add(1, Relaxed);
        self.sched.append_token(id, token);

        let mut finish = None;
        let mut text;
        if self.vocab.is_eog(token) && !st.req.ignore_eos {
            text = flush(st.decoder.as_mut(), &mut st.stop, &mut finish);
            finish.get_or_insert(FinishReason::Stop);
        } else {
            let piece = st.decoder.push(token);
            let s = st.stop.push(&piece);
            text = s.text;
            if s.stopped {
                finish = Some(FinishReason::Stop);
            } else if st.n_generated >= st.req.max_tokens || n_tokens + 1 >= self.cfg.n_ctx {
                text.push_str(&flush(st.decoder.as_mut(), &mut st.stop, &mut finish));
                finish.get_or_insert(FinishReason::Length);
            }
        }
        if !text.is_empty() || !logprobs.is_empty() {
            self.outbox.push(&st.tx, Event::Delta { text, logprobs });
        }
        if let Some(finish) = finish {
            let usage = Usage {
                prompt_tokens: st.req.prompt.len(),
                completion_tokens: st.n_generated,
            };
            self.outbox.push(&st.tx, Event::Done { finish, usage });
            self.drop_request(id);
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let c = self.sched.block_counts();
        self.metrics
            .running
            .store(self.sched.n_running() as u64, Relaxed);
        self.metrics.kv_used.store(c.used as u64, Relaxed);
        self.metrics.kv_free.store(c.free as u64, Relaxed);
        self.metrics
            .prefix_hits
            .store(self.sched.prefix_hits(), Relaxed);
    }
}

/// The tokens the penalties look at: the last `penalty_last_n` of the sequence.
fn penalty_window<'a>(tokens: &'a [u32], spec: &SamplingSpec) -> &'a [u32] {
    &tokens[tokens.len() - spec.penalty_last_n.min(tokens.len())..]
}

/// Drains the decoder and the stop matcher at the end of generation; a stop string completed
/// by the tail still stops (and sets `finish`).
fn flush(
    dec: &mut dyn TextDecoder,
    stop: &mut StopMatcher,
    finish: &mut Option<FinishReason>,
) -> String {
    let tail = dec.finish();
    let s = stop.push(&tail);
    if s.stopped {
        *finish = Some(FinishReason::Stop);
        return s.text;
    }
    let mut t = s.text;
    t.push_str(&stop.finish());
    t
}

/// Log-probability of `token` and the `k` most likely tokens under `logits`.
pub fn token_logprob(vocab: &dyn Vocab, logits: &[f32], token: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(logits.len());
    if k > 0 {
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
        });
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    } else {
        idx.clear();
    }
    let entry = |i: usize| {
        let b = vocab.token_bytes(i as u32);
        (i as u32, String::from_utf8_lossy(&b).into_owned(), b, lp(i))
    };
    let bytes = vocab.token_bytes(token);
    TokenLogprob {
        token,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
        logprob: lp(token as usize),
        top: idx.into_iter().map(entry).collect(),
    }
}
