//! `GET /v1/models` (the base and every adapter) and `GET /v1/models/{id}`.
use super::openai::ApiError;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

fn model_json(m: &super::engine::ModelEntry, base: &str) -> Value {
    let parent = if m.kind == "base" { Value::Null } else { json!(base) };
    json!({"id": m.id, "object": "model", "created": m.created, "owned_by": "instill", "root": if m.kind == "base" { &m.id } else { base }, "parent": parent, "kind": m.kind})
}

pub async fn list(State(s): State<AppState>) -> Response {
    s.metrics.count("/v1/models", 200);
    let models = s.engine.models.read().expect("models");
    let data: Vec<Value> = models.iter().map(|m| model_json(m, &s.base_name)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let models = s.engine.models.read().expect("models");
    match models.iter().find(|m| m.id == id) {
        Some(m) => {
            s.metrics.count("/v1/models/{id}", 200);
            axum::Json(model_json(m, &s.base_name)).into_response()
        }
        None => {
            s.metrics.count("/v1/models/{id}", 404);
            let mut e = ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("The model {id:?} does not exist")).code("model_not_found");
            e.param = Some("model".into());
            e.into_response()
        }
    }
}
