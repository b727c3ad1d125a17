//! `POST /v1/completions`: plain-text continuation (no chat template).
use super::jobs::{self, finish_name, Choice, Chunker};
use super::openai::{common, new_id, parse_body, type_name, unix_now, ApiError, Fields};
use super::row::{Event, TokenLogprob};
use super::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

pub async fn post(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = std::time::Instant::now();
    let r = handle(&s, body).await;
    s.finish_request("/v1/completions", r, started)
}

async fn handle(s: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(super::body_error)?;
    let map = parse_body(&body)?;
    let f = Fields(&map);
    let (texts, prompts) = prompts(s, f.get("prompt"))?;
    let logprobs = f.int("logprobs", 0, 20)?.map(|k| k as usize);
    let c = common(&f, logprobs, &s.tok)?;
    let echo = f.bool("echo")?.unwrap_or(false);
    let n = c.params.n.max(1);
    let sub = jobs::submit(s, &c, prompts)?;
    let head = (new_id("cmpl"), unix_now(), c.model.clone());
    // With `echo`, each choice starts with its prompt's text.
    let echoes: Vec<String> = (0..sub.choices).map(|i| if echo { texts[i / n].clone() } else { String::new() }).collect();
    if c.stream {
        let chunker = TextChunker { id: head.0, created: head.1, model: head.2, include_usage: c.include_usage, echoes, offsets: vec![0; sub.choices] };
        return Ok(jobs::sse(sub, chunker, c.include_usage));
    }
    let (choices, usage) = jobs::collect(sub).await?;
    let asked = c.params.logprobs.is_some();
    let choices: Vec<Value> = choices.into_iter().enumerate().map(|(i, ch)| choice_json(i, ch, &echoes[i], asked)).collect();
    Ok(axum::Json(json!({"id": head.0, "object": "text_completion", "created": head.1, "model": head.2, "system_fingerprint": super::FINGERPRINT, "choices": choices, "usage": usage})).into_response())
}

/// `prompt`: a string, an array of strings, an array of token ids, or an array of those.
fn prompts(s: &AppState, v: Option<&Value>) -> Result<(Vec<String>, Vec<Vec<u32>>), ApiError> {
    let encode = |t: &str| s.tok.encode(t, true).map_err(|e| ApiError::invalid("prompt", e.to_string()));
    let ids = |a: &[Value]| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|x| {
                x.as_u64().filter(|&i| (i as usize) < s.tok.vocab_size()).map(|i| i as u32).ok_or_else(|| ApiError::invalid("prompt", format!("prompt token {x} is not a token id of this model")))
            })
            .collect()
    };
    let decode = |p: &[u32]| s.tok.decode(p, false).unwrap_or_default();
    match v {
        None => Err(ApiError::invalid("prompt", "'prompt' is required")),
        Some(Value::String(t)) => Ok((vec![t.clone()], vec![encode(t)?])),
        Some(Value::Array(a)) if a.is_empty() => Err(ApiError::invalid("prompt", "'prompt' is an empty array")),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => {
            let p = ids(a)?;
            Ok((vec![decode(&p)], vec![p]))
        }
        Some(Value::Array(a)) => {
            let (mut texts, mut out) = (vec![], vec![]);
            for x in a {
                match x {
                    Value::String(t) => {
                        texts.push(t.clone());
                        out.push(encode(t)?);
                    }
                    Value::Array(inner) => {
                        let p = ids(inner)?;
                        texts.push(decode(&p));
                        out.push(p);
                    }
                    other => return Err(ApiError::invalid("prompt", format!("'prompt' items must be strings or arrays of token ids, not {}", type_name(other)))),
                }
            }
            Ok((texts, out))
        }
        Some(other) => Err(ApiError::invalid("prompt", format!("'prompt' must be a string or an array, not {}", type_name(other)))),
    }
}

/// The legacy logprobs object: tokens, token_logprobs, top_logprobs, text_offset.
fn logprobs_json(lps: &[TokenLogprob], start: usize) -> Value {
    let mut offset = start;
    let mut offsets = vec![];
    for t in lps {
        offsets.push(offset);
        offset += t.text.len();
    }
    let top: Vec<Value> = lps.iter().map(|t| Value::Object(t.top.iter().map(|(s, _, lp)| (s.clone(), json!(lp))).collect::<Map<_, _>>())).collect();
    json!({"tokens": lps.iter().map(|t| &t.text).collect::<Vec<_>>(), "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(), "top_logprobs": top, "text_offset": offsets})
}

fn choice_json(i: usize, ch: Choice, echo: &str, asked: bool) -> Value {
    let lp = if asked { logprobs_json(&ch.logprobs, echo.len()) } else { Value::Null };
    json!({"index": i, "text": format!("{echo}{}", ch.text), "logprobs": lp, "finish_reason": finish_name(ch.finish)})
}

struct TextChunker {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    echoes: Vec<String>,
    /// Text bytes sent per choice (for text_offset).
    offsets: Vec<usize>,
}

impl TextChunker {
    fn chunk(&self, choice: usize, text: String, logprobs: Value, finish: Option<&str>) -> Value {
        let mut c = json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "system_fingerprint": super::FINGERPRINT,
            "choices": [{"index": choice, "text": text, "logprobs": logprobs, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
}

impl Chunker for TextChunker {
    fn event(&mut self, ev: Event) -> Vec<Value> {
        match ev {
            Event::Token { choice, text, logprob } => {
                let mut text = text;
                if !self.echoes[choice].is_empty() {
                    text = format!("{}{text}", std::mem::take(&mut self.echoes[choice]));
                }
                let lp = logprob.map_or(Value::Null, |l| logprobs_json(&[l], self.offsets[choice]));
                self.offsets[choice] += text.len();
                if text.is_empty() && lp.is_null() {
                    return vec![];
                }
                vec![self.chunk(choice, text, lp, None)]
            }
            Event::Done { choice, finish, .. } => {
                let echo = std::mem::take(&mut self.echoes[choice]);
                vec![self.chunk(choice, echo, Value::Null, Some(finish_name(Some(finish))))]
            }
            Event::Failed { .. } => vec![],
        }
    }

    fn usage_chunk(&self, usage: Value) -> Value {
        json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "system_fingerprint": super::FINGERPRINT, "choices": [], "usage": usage})
    }
}
