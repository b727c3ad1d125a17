//! The request-body limit. An oversized body is read to its end (up to `DRAIN_CAP`)
//! before the 413 goes out, so a client still writing it gets the JSON error instead of
//! a broken pipe, and its connection stays usable. Bodies past the cap are cut off.
use super::openai::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

/// Most bytes of an oversized body read and thrown away before answering.
const DRAIN_CAP: usize = 64 << 20;

/// Buffer the body (at most `max` bytes) and hand it on; 413 above `max`.
pub async fn limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "the request body was cut off").into_response();
        };
        seen += chunk.len();
        if seen <= max {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP.max(max) || declared.is_some_and(|d| d > DRAIN_CAP.max(max)) {
            break;
        }
    }
    if seen > max {
        let msg = format!("the request body has {} bytes; this server takes at most {max} (--max-body-mb)", declared.unwrap_or(seen).max(seen));
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", msg).code("request_too_large").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(Bytes::from(buf)))).await
}
