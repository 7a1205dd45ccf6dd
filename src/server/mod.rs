//! The OpenAI-compatible HTTP server (axum + tokio) in front of the engine thread.
//!
//! Routes: `POST /v1/completions`, `POST /v1/chat/completions` (JSON or Server-Sent Events),
//! `GET /v1/models`, `GET /health`, `GET /metrics`, `POST /tokenize`, `POST /detokenize`.
//! Handlers parse and validate the request, tokenize it, submit it to the engine through its
//! channel and turn the engine's events into responses. A client that goes away drops its
//! receiver, which cancels its request in the engine.

pub mod adapters;
pub mod error;
pub mod params;
pub mod routes;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::engine::{EngineHandle, Metrics, Vocab};
pub use crate::tokenizer::chat_template::ChatTemplate;
use crate::Result;

/// The tokenizer operations the server needs beyond the engine's [`Vocab`].
pub trait ServeTokenizer: Vocab {
    /// Token ids of `text`; `add_special` adds BOS (as the model wants), `parse_special` turns
    /// special-token texts into their ids.
    fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>>;
    /// Text of `ids`.
    fn decode(&self, ids: &[u32]) -> String {
        let mut d = self.decoder();
        let mut s: String = ids.iter().map(|&t| d.push(t)).collect();
        s.push_str(&d.finish());
        s
    }
    /// Text of the BOS token ("" if none).
    fn bos_text(&self) -> String;
    /// Text of the EOS token ("" if none).
    fn eos_text(&self) -> String;
}

/// Everything the handlers share.
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// The tokenizer.
    pub tok: Arc<dyn ServeTokenizer>,
    /// The chat template.
    pub template: ChatTemplate,
    /// Metrics (shared with the engine).
    pub metrics: Arc<Metrics>,
    /// The name `/v1/models` reports and requests may give as `model`.
    pub model_name: String,
    /// Context size: prompt plus generated tokens per request.
    pub n_ctx: usize,
    /// Set once the model has loaded.
    pub ready: AtomicBool,
    /// Set when shutdown has begun: new generation requests get 503.
    pub draining: AtomicBool,
    /// Unix time of start.
    pub created: u64,
}

impl AppState {
    /// Whether generation requests are accepted now.
    pub fn accepting(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(routes::completions))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_status,
        ))
        .with_state(state)
}

/// Counts API responses by status for `/metrics`.
async fn count_status(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if path != "/metrics" && path != "/health" {
        st.metrics.count_status(resp.status().as_u16());
    }
    resp
}

/// Serves on `listener` until `shutdown` resolves, then drains: open requests finish, new ones
/// are refused; returns when every connection has closed.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        st.draining.store(true, Ordering::Release);
        tracing::info!("shutting down: draining running requests");
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .await
}
