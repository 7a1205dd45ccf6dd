//! The HTTP layer over the engine's deterministic doubles (toy model, vocabulary, sampler),
//! in-process on a random port, driven with raw HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::engine::tests::{piece, ToyModel, ToySampler, ToyVocab, EOG, V};
use crate::engine::{self, EngineConfig};
use crate::model::BLOCK_SIZE;

impl ServeTokenizer for ToyVocab {
    /// Each character is one token: its code modulo the vocabulary (EOG excluded).
    fn encode(
        &self,
        text: &str,
        _add_special: bool,
        _parse_special: bool,
    ) -> crate::Result<Vec<u32>> {
        Ok(text.chars().map(|c| c as u32 % (V as u32 - 1)).collect())
    }
    fn bos_text(&self) -> String {
        String::new()
    }
    fn eos_text(&self) -> String {
        String::new()
    }
}

struct TestServer {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

fn start(max_seqs: usize, queue: usize) -> TestServer {
    start_with(max_seqs, queue, true)
}

fn start_with(max_seqs: usize, queue: usize, ready: bool) -> TestServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n_blocks = 64;
    let metrics = Arc::new(Metrics::default());
    let cfg = EngineConfig {
        max_seqs,
        token_budget: 64,
        queue_size: queue,
        n_ctx: 256,
    };
    let load = move || -> crate::Result<engine::core::ModelParts> {
        Ok((
            Box::new(ToyModel {
                slots: vec![u32::MAX; n_blocks * BLOCK_SIZE],
                n_blocks,
                device: false,
            }),
            Box::new(ToySampler),
        ))
    };
    let handle = engine::spawn(cfg, Arc::new(ToyVocab), metrics.clone(), load, |_| {}).unwrap();
    let state = Arc::new(AppState {
        engine: handle,
        tok: Arc::new(ToyVocab),
        template: ChatTemplate::new(None, "", "").unwrap(),
        metrics,
        model_name: "toy".into(),
        n_ctx: 256,
        ready: AtomicBool::new(ready),
        draining: AtomicBool::new(false),
        created: 0,
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        let _ = serve(listener, state, std::future::pending()).await;
    });
    TestServer { port, _rt: rt }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// De-chunks an HTTP/1.1 chunked body.
fn dechunk(b: &str) -> String {
    let mut out = String::new();
    let mut rest = b;
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

fn reference(prompt: &str, n: usize) -> String {
    let mut h: Vec<u32> = ToyVocab.encode(prompt, true, true).unwrap();
    let mut text = String::new();
    for _ in 0..n {
        let t = crate::engine::tests::next_of(&h);
        h.push(t);
        if t == EOG {
            break;
        }
        text.push_str(&piece(t));
    }
    text
}

#[test]
fn completion_stream_and_errors_over_http() {
    let s = start(4, 8);
    let (st, body) = http(
        s.port,
        "POST",
        "/v1/completions",
        r#"{"prompt": "hello", "max_tokens": 7, "temperature": 0}"#,
    );
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["choices"][0]["text"], reference("hello", 7));
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let (st, body) = http(
        s.port,
        "POST",
        "/v1/completions",
        r#"{"prompt": "hello", "max_tokens": 7, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}"#,
    );
    assert_eq!(st, 200);
    let sse = dechunk(&body);
    let events: Vec<&str> = sse
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let c = json(e);
        if let Some(ch) = c["choices"].as_array().and_then(|a| a.first()) {
            text.push_str(ch["text"].as_str().unwrap());
        } else {
            assert_eq!(c["usage"]["completion_tokens"], 7);
        }
    }
    assert_eq!(text, reference("hello", 7));

    let (st, body) = http(
        s.port,
        "POST",
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "temperature": 0}"#,
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["choices"][0]["message"]["role"], "assistant");

    for bad in [
        "{",
        "[]",
        r#"{"prompt": "a", "max_tokens": 0}"#,
        r#"{"prompt": "a", "max_tokens": 1000}"#,
        r#"{"prompt": [1, 64]}"#,
        r#"{"prompt": "a", "model": "other"}"#,
        r#"{"prompt": "a", "temperature": -2}"#,
    ] {
        let (st, body) = http(s.port, "POST", "/v1/completions", bad);
        assert_eq!(st, 400, "{bad}: {body}");
        assert!(json(&body)["error"]["message"].is_string());
    }
    let (st, _) = http(s.port, "GET", "/nope", "");
    assert_eq!(st, 404);
    let (st, body) = http(s.port, "GET", "/metrics", "");
    assert_eq!(st, 200);
    assert!(
        body.contains("rocmforge_requests_total{status=\"400\"} 7"),
        "{body}"
    );
    assert!(body.contains("rocmforge_kv_blocks_used 0"), "{body}");
    let (st, body) = http(s.port, "GET", "/health", "");
    assert_eq!((st, json(&body)["status"].as_str()), (200, Some("ok")));
}

#[test]
fn disconnected_stream_is_cancelled() {
    let s = start(2, 8);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let body = r#"{"prompt": "hello", "max_tokens": 240, "temperature": 0, "stream": true}"#;
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert!(n > 0);
    drop(c);
    let t0 = std::time::Instant::now();
    loop {
        let (_, m) = http(s.port, "GET", "/metrics", "");
        if m.contains("rocmforge_cancelled_total 1") && m.contains("rocmforge_kv_blocks_used 0") {
            break;
        }
        // The toy finishes 240 tokens fast; either way no block may stay used.
        if m.contains("rocmforge_running_sequences 0")
            && m.contains("rocmforge_kv_blocks_used 0")
            && t0.elapsed() > Duration::from_millis(500)
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn loading_server_answers_503_with_retry_after() {
    let s = start_with(2, 8, false);
    let (st, body) = http(s.port, "GET", "/health", "");
    assert_eq!((st, json(&body)["status"].as_str()), (503, Some("loading")));
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let body = r#"{"prompt": "hello"}"#;
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after: 1"), "{out}");
    // /tokenize needs only the tokenizer.
    let (st, body) = http(s.port, "POST", "/tokenize", r#"{"content": "ab"}"#);
    assert_eq!(st, 200);
    assert_eq!(json(&body)["tokens"].as_array().map(Vec::len), Some(2));
}
