//! Route handlers: completions, chat completions (JSON and SSE), models, health, metrics,
//! tokenize, detokenize.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::StreamMap;

use super::error::ApiError;
use super::params::{parse_chat, parse_completion, parse_object, CommonParams, PromptInput};
use super::AppState;
use crate::engine::{Event, FinishReason, GenRequest, SubmitError, TokenLogprob, Usage};

/// Default max_tokens of `/v1/completions` when the request gives none (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    logprobs: bool,
    include_usage: bool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_ready(st: &AppState) -> Result<(), ApiError> {
    if !st.ready.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the model is still loading"));
    }
    if st.draining.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    Ok(())
}

fn check_model(st: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != &st.model_name => Err(ApiError::bad(
            "model",
            format!(
                "model {m:?} is not served here; this server serves {:?}",
                st.model_name
            ),
        )),
        _ => Ok(()),
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let o = parse_object(&body)?;
    let p = parse_completion(&o, st.tok.n_vocab())?;
    check_model(&st, &p.common.model)?;
    check_ready(&st)?;
    let prompts = match p.prompt {
        PromptInput::Texts(ts) => ts
            .iter()
            .map(|t| st.tok.encode(t, true, true))
            .collect::<crate::Result<Vec<_>>>()?,
        PromptInput::Tokens(v) => v,
    };
    generate(st, prompts, p.common, Kind::Completion).await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let o = parse_object(&body)?;
    let p = parse_chat(&o)?;
    check_model(&st, &p.common.model)?;
    check_ready(&st)?;
    let text = st.template.render(&p.messages, p.add_generation_prompt)?;
    let bos = st.tok.bos_text();
    let add_special = bos.is_empty() || !text.starts_with(&bos);
    let ids = st.tok.encode(&text, add_special, true)?;
    generate(st, vec![ids], p.common, Kind::Chat).await
}

async fn generate(
    st: Arc<AppState>,
    prompts: Vec<Vec<u32>>,
    c: CommonParams,
    kind: Kind,
) -> Result<Response, ApiError> {
    let n_ctx = st.n_ctx;
    let mut reqs = Vec::with_capacity(prompts.len());
    for p in prompts {
        if p.is_empty() {
            return Err(ApiError::bad("prompt", "the prompt has no tokens"));
        }
        if p.len() >= n_ctx {
            return Err(ApiError::bad(
                "prompt",
                format!(
                    "the prompt has {} tokens; the context size is {n_ctx}",
                    p.len()
                ),
            ));
        }
        let room = n_ctx - p.len();
        let max_tokens = match c.max_tokens {
            Some(m) if m > room => {
                return Err(ApiError::bad(
                    "max_tokens",
                    format!(
                        "prompt ({} tokens) + max_tokens ({m}) exceeds the context size {n_ctx}",
                        p.len()
                    ),
                ))
            }
            Some(m) => m,
            None if kind == Kind::Completion => DEFAULT_COMPLETION_TOKENS.min(room),
            None => room,
        };
        reqs.push(GenRequest {
            prompt: p,
            max_tokens,
            sampling: c.sampling,
            stop: c.stop.clone(),
            logprobs: c.logprobs,
            ignore_eos: c.ignore_eos,
        });
    }
    let mut rxs = Vec::with_capacity(reqs.len());
    for r in reqs {
        match st.engine.submit(r) {
            Ok((_, rx)) => rxs.push(rx),
            Err(SubmitError::QueueFull) => {
                return Err(ApiError::unavailable(
                    "the request queue is full; retry later",
                ))
            }
            Err(SubmitError::Stopped) => {
                return Err(ApiError::unavailable("the server is shutting down"))
            }
        }
    }
    let meta = Meta {
        id: format!(
            "{}-{:x}{:08x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            now_secs(),
            rand_u32()
        ),
        created: now_secs(),
        model: st.model_name.clone(),
        kind,
        logprobs: c.logprobs.is_some(),
        include_usage: c.include_usage,
    };
    if c.stream {
        Ok(stream_response(rxs, meta))
    } else {
        collect_response(rxs, meta).await
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u32
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

fn add_usage(a: &mut Usage, b: Usage) {
    a.prompt_tokens += b.prompt_tokens;
    a.completion_tokens += b.completion_tokens;
}

/// Completions-style logprobs; `offset` is the text length before these tokens.
fn completion_logprobs(lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut text_offset = Vec::with_capacity(lps.len());
    for l in lps {
        text_offset.push(*offset);
        *offset += l.text.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.text.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| {
            let mut m = serde_json::Map::new();
            for (_, t, _, lp) in &l.top {
                m.insert(t.clone(), json!(lp));
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// Chat-style logprobs.
fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    json!({
        "content": lps.iter().map(|l| json!({
            "token": l.text,
            "logprob": l.logprob,
            "bytes": l.bytes,
            "top_logprobs": l.top.iter().map(|(_, t, b, lp)| json!({
                "token": t, "logprob": lp, "bytes": b,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

async fn collect_response(
    rxs: Vec<mpsc::UnboundedReceiver<Event>>,
    meta: Meta,
) -> Result<Response, ApiError> {
    let mut choices = Vec::with_capacity(rxs.len());
    let mut usage = Usage::default();
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let mut text = String::new();
        let mut lps = Vec::new();
        let mut finish = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Delta { text: t, logprobs } => {
                    text.push_str(&t);
                    lps.extend(logprobs);
                }
                Event::Done {
                    finish: f,
                    usage: u,
                } => {
                    finish = Some(f);
                    add_usage(&mut usage, u);
                    break;
                }
                Event::Error(e) => return Err(ApiError::internal(e)),
            }
        }
        let Some(finish) = finish else {
            return Err(ApiError::internal(
                "the engine stopped before the request finished",
            ));
        };
        choices.push(match meta.kind {
            Kind::Completion => json!({
                "index": i,
                "text": text,
                "logprobs": if meta.logprobs { completion_logprobs(&lps, &mut 0) } else { Value::Null },
                "finish_reason": finish.as_str(),
            }),
            Kind::Chat => json!({
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": if meta.logprobs { chat_logprobs(&lps) } else { Value::Null },
                "finish_reason": finish.as_str(),
            }),
        });
    }
    let body = json!({
        "id": meta.id,
        "object": if meta.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": usage_json(usage),
    });
    Ok(Json(body).into_response())
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn chunk(meta: &Meta, choices: Vec<Value>, usage: Option<Usage>) -> Bytes {
    let mut v = json!({
        "id": meta.id,
        "object": if meta.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
    });
    if meta.include_usage {
        v["usage"] = usage.map_or(Value::Null, usage_json);
    }
    sse(&v)
}

fn delta_choice(
    meta: &Meta,
    i: usize,
    text: &str,
    lps: &[TokenLogprob],
    offset: &mut usize,
    finish: Option<FinishReason>,
) -> Value {
    let finish = finish.map(FinishReason::as_str);
    match meta.kind {
        Kind::Completion => json!({
            "index": i,
            "text": text,
            "logprobs": if meta.logprobs && !lps.is_empty() { completion_logprobs(lps, offset) } else { Value::Null },
            "finish_reason": finish,
        }),
        Kind::Chat => {
            let delta = if finish.is_some() && text.is_empty() {
                json!({})
            } else {
                json!({"content": text})
            };
            json!({
                "index": i,
                "delta": delta,
                "logprobs": if meta.logprobs && !lps.is_empty() { chat_logprobs(lps) } else { Value::Null },
                "finish_reason": finish,
            })
        }
    }
}

/// Streams the events of `rxs` as SSE. A task forwards them; when the client goes away the
/// body is dropped, the task sees its channel closed and drops the engine receivers, which
/// cancels the requests.
fn stream_response(rxs: Vec<mpsc::UnboundedReceiver<Event>>, meta: Meta) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let n = rxs.len();
    tokio::spawn(async move {
        let mut map = StreamMap::new();
        for (i, r) in rxs.into_iter().enumerate() {
            map.insert(i, UnboundedReceiverStream::new(r));
        }
        let mut offsets = vec![0usize; n];
        let mut usage = Usage::default();
        if meta.kind == Kind::Chat {
            for i in 0..n {
                let c = json!({"index": i, "delta": {"role": "assistant", "content": ""},
                               "logprobs": null, "finish_reason": null});
                if tx.send(chunk(&meta, vec![c], None)).await.is_err() {
                    return;
                }
            }
        }
        let mut ping = tokio::time::interval(Duration::from_secs(2));
        ping.tick().await;
        loop {
            let ev = tokio::select! {
                biased;
                ev = map.next() => ev,
                _ = tx.closed() => return,
                _ = ping.tick() => {
                    // An SSE comment: lets the connection notice a client that went away.
                    if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let frame = match ev {
                None => break,
                Some((i, Event::Delta { text, logprobs })) => {
                    let c = delta_choice(&meta, i, &text, &logprobs, &mut offsets[i], None);
                    chunk(&meta, vec![c], None)
                }
                Some((i, Event::Done { finish, usage: u })) => {
                    add_usage(&mut usage, u);
                    let c = delta_choice(&meta, i, "", &[], &mut offsets[i], Some(finish));
                    chunk(&meta, vec![c], None)
                }
                Some((_, Event::Error(e))) => sse(&ApiError::internal(e).body()),
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        if meta.include_usage {
            let _ = tx.send(chunk(&meta, vec![], Some(usage))).await;
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| ApiError::internal("cannot build the response").into_response())
}

/// `GET /v1/models`.
pub async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.model_name,
            "object": "model",
            "created": st.created,
            "owned_by": "rocmforge",
            "max_model_len": st.n_ctx,
        }],
    }))
}

/// `GET /health`: 200 when ready, 503 while loading or shutting down.
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    if !st.engine.is_alive() && st.ready.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "engine stopped"})),
        )
            .into_response()
    } else if st.accepting() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else if !st.ready.load(Ordering::Acquire) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

/// `POST /tokenize`: `{"content": text, "add_special": bool}` (or `prompt`) ->
/// `{"tokens": [...], "count": n, "max_model_len": n_ctx}`.
pub async fn tokenize(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let o = parse_object(&body)?;
    let text = match (
        super::params::opt_str(&o, "content")?,
        super::params::opt_str(&o, "prompt")?,
    ) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Err(ApiError::bad("content", "content (a string) is required")),
    };
    let add_special = super::params::opt_bool(&o, "add_special")?.unwrap_or(true);
    let parse_special = super::params::opt_bool(&o, "parse_special")?.unwrap_or(true);
    let ids = st.tok.encode(&text, add_special, parse_special)?;
    Ok(Json(json!({"tokens": ids, "count": ids.len(), "max_model_len": st.n_ctx})).into_response())
}

/// `POST /detokenize`: `{"tokens": [...]}` -> `{"content": text}`.
pub async fn detokenize(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let o = parse_object(&body)?;
    let n_vocab = st.tok.n_vocab();
    let ids: Vec<u32> = match o.get("tokens") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v.as_u64() {
                Some(t) if (t as usize) < n_vocab => Ok(t as u32),
                _ => Err(ApiError::bad(
                    "tokens",
                    format!("tokens: {v} is not a token id below the vocabulary size {n_vocab}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad(
                "tokens",
                "tokens (an array of token ids) is required",
            ))
        }
    };
    let text = st.tok.decode(&ids);
    Ok(Json(json!({"content": text, "prompt": text})).into_response())
}

/// Any other path.
pub async fn not_found(req: axum::extract::Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}
