//! The OpenAI-compatible server: one file per endpoint over a continuous-batching
//! engine (`engine.rs`) that decodes requests for the base and for many adapters in one
//! batch. Handlers only parse, check and format; generation is the engine's.
pub use crate::peft::multi as adapters;
mod body;
mod chat;
mod completions;
pub mod engine;
mod health;
mod jobs;
mod load_adapter;
pub mod metrics;
mod models;
pub mod openai;
mod playground;
pub mod row;
pub mod tools;

use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{CausalLm, Result};
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::{EngineConfig, EngineHandle};
use metrics::Metrics;
use openai::ApiError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FINGERPRINT: &str = concat!("instill-", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes (413 above).
    pub max_body: usize,
    /// Most tokens one choice may generate.
    pub max_tokens: usize,
    /// A request running longer is stopped (504).
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// The name of the base model in requests' `model`.
    pub base_name: String,
    /// `(name, PEFT adapter directory)`.
    pub adapters: Vec<(String, PathBuf)>,
    pub engine: EngineConfig,
    /// Requests waiting beyond the running batch (429 above).
    pub queue: usize,
    pub limits: Limits,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    pub tok: Arc<Tokenizer>,
    pub template: Option<Arc<ChatTemplate>>,
    pub base_name: String,
    pub context: usize,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
}

impl AppState {
    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Count and time a finished request; errors become OpenAI's error JSON.
    fn finish_request(&self, endpoint: &str, r: std::result::Result<Response, ApiError>, started: Instant) -> Response {
        let resp = r.unwrap_or_else(IntoResponse::into_response);
        self.metrics.count(endpoint, resp.status().as_u16());
        self.metrics.request_total.observe(started.elapsed().as_secs_f64());
        resp
    }
}

/// A body that could not be read: too large (413) or cut off.
fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    let mut err = ApiError::new(status, "invalid_request_error", e.body_text());
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        err = err.code("request_too_large");
    }
    err
}

/// The routes, over a started engine.
pub fn router(state: AppState) -> Router {
    let max_body = state.limits.max_body;
    Router::new()
        .route("/", get(playground::get))
        .route("/health", get(health::get))
        .route("/metrics", get(metrics::get))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route("/v1/chat/completions", post(chat::post))
        .route("/v1/completions", post(completions::post))
        .route("/v1/adapters", post(load_adapter::post))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint: this server has /v1/chat/completions, /v1/completions, /v1/models, /v1/adapters, /health, /metrics and / (the playground)",
            )
            .into_response()
        })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this endpoint").into_response() })
        .layer(axum::middleware::from_fn_with_state(max_body, body::limit))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Load adapters, start the engine, and serve until SIGTERM or Ctrl-C; in-flight
/// requests finish, new ones are refused. `ready` gets the bound address.
pub fn serve(cfg: ServeConfig, model: CausalLm, tok: Tokenizer, template: Option<ChatTemplate>, ready: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let tok = Arc::new(tok);
    let context = model.config.max_position;
    let engine = engine::spawn(model, tok.clone(), &cfg.base_name, &cfg.adapters, cfg.engine.clone(), cfg.queue, metrics.clone())?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let state = AppState { engine, tok, template: template.map(Arc::new), base_name: cfg.base_name.clone(), context, limits: cfg.limits.clone(), metrics, shutdown: shutdown.clone() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port)).await.map_err(|e| crate::Error::Input(format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port)))?;
        ready(listener.local_addr()?);
        axum::serve(listener, router(state)).with_graceful_shutdown(stop_signal(shutdown)).await?;
        Ok(())
    })
}

async fn stop_signal(flag: Arc<AtomicBool>) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    flag.store(true, Ordering::Relaxed);
    eprintln!("instill serve: shutting down; finishing in-flight requests");
}
