//! `GET /`: the playground, one static page compiled into the binary (no CDN, no build
//! step): chat with streaming, a model/adapter picker, sampling settings, and a
//! side-by-side mode that sends one prompt to two models.
use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("playground.html");

pub async fn get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], PAGE)
}
