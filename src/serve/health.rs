//! `GET /health`: 200 while serving, 503 once shutting down.
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::Ordering;

pub async fn get(State(s): State<AppState>) -> Response {
    let (status, word) = if s.shutting_down() { (StatusCode::SERVICE_UNAVAILABLE, "shutting_down") } else { (StatusCode::OK, "ok") };
    s.metrics.count("/health", status.as_u16());
    let body = json!({"status": word, "model": s.base_name, "running": s.metrics.running.load(Ordering::Relaxed), "queued": s.metrics.queued.load(Ordering::Relaxed)});
    (status, axum::Json(body)).into_response()
}
