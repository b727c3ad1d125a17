//! `POST /v1/chat/completions`.
use super::jobs::{self, finish_name, Choice, Chunker};
use super::openai::{common, new_id, parse_body, type_name, unix_now, ApiError, Fields};
use super::row::{Event, TokenLogprob};
use super::tools::{self, ToolSpec};
use super::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub async fn post(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = std::time::Instant::now();
    let r = handle(&s, body).await;
    s.finish_request("/v1/chat/completions", r, started)
}

async fn handle(s: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(super::body_error)?;
    let map = parse_body(&body)?;
    let f = Fields(&map);
    let messages = messages(f.get("messages"))?;
    let spec = tools::read(f.get("tools"), f.get("tool_choice"))?;
    let top = match (f.bool("logprobs")?.unwrap_or(false), f.int("top_logprobs", 0, 20)?) {
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true")),
        (false, None) => None,
    };
    let mut c = common(&f, top, &s.tok)?;
    c.params.keep_special = spec.parse;
    let template = s
        .template
        .as_ref()
        .ok_or_else(|| ApiError::invalid("messages", "this model has no chat template: restart the server with --template chatml|llama3|gemma|alpaca|FILE, or use /v1/completions"))?;
    let knows = template.source.contains("tools");
    let messages = tools::prepare(messages, &spec, knows);
    let tools_arg = (knows && !spec.tools.is_empty()).then(|| Value::Array(spec.tools.clone()));
    let mut text = template.render(&messages, true, tools_arg.as_ref()).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    text.push_str(&spec.forced);
    let prompt = s.tok.encode_rendered(&text).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    let sub = jobs::submit(s, &c, vec![prompt])?;
    let head = Head { id: new_id("chatcmpl"), created: unix_now(), model: c.model.clone() };
    if c.stream {
        let chunker = ChatChunker { head, spec, include_usage: c.include_usage, state: (0..sub.choices).map(|_| Streamed::default()).collect() };
        return Ok(jobs::sse(sub, chunker, c.include_usage));
    }
    let (choices, usage) = jobs::collect(sub).await?;
    let asked = c.params.logprobs.is_some();
    let choices: Vec<Value> = choices.into_iter().enumerate().map(|(i, ch)| choice_json(i, ch, &spec, asked)).collect();
    Ok(axum::Json(json!({"id": head.id, "object": "chat.completion", "created": head.created, "model": head.model, "system_fingerprint": super::FINGERPRINT, "choices": choices, "usage": usage}))
        .into_response())
}

/// The messages as template input: roles checked, text parts joined.
fn messages(v: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let arr = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "'messages' is empty: send at least one message")),
        Some(v) => return Err(ApiError::invalid("messages", format!("'messages' must be an array, not {}", type_name(v)))),
        None => return Err(ApiError::invalid("messages", "'messages' is required")),
    };
    let mut out = vec![];
    for (i, m) in arr.iter().enumerate() {
        let p = format!("messages[{i}]");
        let obj = m.as_object().ok_or_else(|| ApiError::invalid(&p, format!("{p} must be an object, not {}", type_name(m))))?;
        let role = match obj.get("role").and_then(Value::as_str) {
            Some("developer") => "system",
            Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
            Some(r) => return Err(ApiError::invalid(&format!("{p}.role"), format!("{p}.role {r:?}: expected system, developer, user, assistant or tool"))),
            None => return Err(ApiError::invalid(&format!("{p}.role"), format!("{p}.role is required (a string)"))),
        };
        let content = content_text(obj.get("content"), &p)?;
        if content.is_none() && !(role == "assistant" && obj.contains_key("tool_calls")) {
            return Err(ApiError::invalid(&format!("{p}.content"), format!("{p}.content is required")));
        }
        let mut msg = m.clone();
        msg["role"] = json!(role);
        msg["content"] = json!(content.unwrap_or_default());
        out.push(msg);
    }
    Ok(out)
}

fn content_text(v: Option<&Value>, p: &str) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(t), _) => return Err(ApiError::invalid(&format!("{p}.content[{j}]"), format!("{p}.content[{j}] has type {t:?}; this server takes text parts only"))),
                    _ => return Err(ApiError::invalid(&format!("{p}.content[{j}]"), format!("{p}.content[{j}] must be {{\"type\": \"text\", \"text\": ...}}"))),
                }
            }
            Ok(Some(text))
        }
        Some(v) => Err(ApiError::invalid(&format!("{p}.content"), format!("{p}.content must be a string or an array of parts, not {}", type_name(v)))),
    }
}

fn logprob_json(t: &TokenLogprob) -> Value {
    let top: Vec<Value> = t.top.iter().map(|(s, b, lp)| json!({"token": s, "logprob": lp, "bytes": b})).collect();
    json!({"token": t.text, "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top})
}

fn logprobs_field(lps: &[TokenLogprob], asked: bool) -> Value {
    if !asked {
        return Value::Null;
    }
    json!({"content": lps.iter().map(logprob_json).collect::<Vec<_>>()})
}

fn choice_json(i: usize, ch: Choice, spec: &ToolSpec, asked: bool) -> Value {
    let lp = logprobs_field(&ch.logprobs, asked);
    if spec.parse {
        let (content, calls) = tools::parse(&format!("{}{}", spec.forced, ch.text), &spec.tools);
        if !calls.is_empty() {
            let calls: Vec<Value> = calls.iter().map(|c| c.json(None)).collect();
            return json!({"index": i, "message": {"role": "assistant", "content": content, "tool_calls": calls}, "logprobs": lp, "finish_reason": "tool_calls"});
        }
    }
    json!({"index": i, "message": {"role": "assistant", "content": ch.text}, "logprobs": lp, "finish_reason": finish_name(ch.finish)})
}

struct Head {
    id: String,
    created: u64,
    model: String,
}

#[derive(Default)]
struct Streamed {
    started: bool,
    /// All text so far (tool calls need the whole of it) and how much was sent.
    text: String,
    sent: usize,
}

struct ChatChunker {
    head: Head,
    spec: ToolSpec,
    include_usage: bool,
    state: Vec<Streamed>,
}

impl ChatChunker {
    fn chunk(&self, choice: usize, delta: Value, logprobs: Value, finish: Option<&str>) -> Value {
        let mut c = json!({"id": self.head.id, "object": "chat.completion.chunk", "created": self.head.created, "model": self.head.model, "system_fingerprint": super::FINGERPRINT,
            "choices": [{"index": choice, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn done(&mut self, choice: usize, finish: &'static str) -> Vec<Value> {
        let mut out = vec![];
        let st = &mut self.state[choice];
        let full = format!("{}{}", self.spec.forced, st.text);
        let (_, calls) = if self.spec.parse { tools::parse(&full, &self.spec.tools) } else { (None, vec![]) };
        let rest = st.text[st.sent..].to_string();
        st.sent = st.text.len();
        if calls.is_empty() {
            if !rest.is_empty() {
                out.push(self.chunk(choice, json!({"content": rest}), Value::Null, None));
            }
            out.push(self.chunk(choice, json!({}), Value::Null, Some(finish)));
            return out;
        }
        let calls: Vec<Value> = calls.iter().enumerate().map(|(i, c)| c.json(Some(i))).collect();
        out.push(self.chunk(choice, json!({"tool_calls": calls}), Value::Null, None));
        out.push(self.chunk(choice, json!({}), Value::Null, Some("tool_calls")));
        out
    }
}

impl Chunker for ChatChunker {
    fn event(&mut self, ev: Event) -> Vec<Value> {
        match ev {
            Event::Token { choice, text, logprob } => {
                let mut out = vec![];
                if !self.state[choice].started {
                    self.state[choice].started = true;
                    out.push(self.chunk(choice, json!({"role": "assistant", "content": ""}), Value::Null, None));
                }
                let st = &mut self.state[choice];
                st.text.push_str(&text);
                // While tool calls are possible, text that may begin one is held back.
                let upto = match (self.spec.parse, self.spec.forced.is_empty()) {
                    (false, _) => st.text.len(),
                    (true, true) => tools::streamable(&st.text).max(st.sent),
                    (true, false) => st.sent,
                };
                let delta = st.text[st.sent..upto].to_string();
                st.sent = upto;
                let lp = logprob.as_ref().map_or(Value::Null, |l| json!({"content": [logprob_json(l)]}));
                if !delta.is_empty() || !lp.is_null() {
                    out.push(self.chunk(choice, json!({"content": delta}), lp, None));
                }
                out
            }
            Event::Done { choice, finish, .. } => {
                let mut out = vec![];
                if !self.state[choice].started {
                    self.state[choice].started = true;
                    out.push(self.chunk(choice, json!({"role": "assistant", "content": ""}), Value::Null, None));
                }
                out.extend(self.done(choice, finish_name(Some(finish))));
                out
            }
            Event::Failed { .. } => vec![],
        }
    }

    fn usage_chunk(&self, usage: Value) -> Value {
        json!({"id": self.head.id, "object": "chat.completion.chunk", "created": self.head.created, "model": self.head.model, "system_fingerprint": super::FINGERPRINT, "choices": [], "usage": usage})
    }
}
