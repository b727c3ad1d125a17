//! `POST /v1/adapters` `{"name": ..., "path": ...}`: load a PEFT adapter (LoRA or prompt
//! tuning) while serving; requests name it in `model` from then on.
use super::engine::{Control, SubmitError};
use super::openai::{parse_body, ApiError, Fields};
use super::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn post(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = std::time::Instant::now();
    let r = handle(&s, body).await;
    s.finish_request("/v1/adapters", r, started)
}

async fn handle(s: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(super::body_error)?;
    let map = parse_body(&body)?;
    let f = Fields(&map);
    let name = f.str("name")?.ok_or_else(|| ApiError::invalid("name", "'name' is required: the model name requests will use"))?.to_string();
    let path = f.str("path")?.ok_or_else(|| ApiError::invalid("path", "'path' is required: an adapter directory in PEFT's layout"))?;
    if name.is_empty() || name == s.base_name || s.engine.has_model(&name) {
        return Err(ApiError::invalid("name", format!("the name {name:?} is taken or empty")));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    match s.engine.submit(Control::LoadAdapter { name, path: path.into(), reply: tx }) {
        Ok(()) => {}
        Err(SubmitError::Full) => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "the server's queue is full; retry shortly");
            e.retry_after = Some(1);
            return Err(e);
        }
        Err(SubmitError::Closed) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down")),
    }
    match rx.await {
        Ok(Ok(m)) => Ok((StatusCode::CREATED, axum::Json(json!({"id": m.id, "object": "model", "created": m.created, "kind": m.kind, "path": m.path})).into_response()).into_response()),
        Ok(Err(msg)) => Err(ApiError::invalid("path", msg)),
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the engine stopped")),
    }
}
