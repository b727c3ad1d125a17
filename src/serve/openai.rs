//! The OpenAI wire format shared by the endpoints: the error shape, typed reading of
//! request fields (errors name the field), and the sampling fields both endpoints take.
use super::row::JobParams;
use crate::decode::SamplingParams;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Every failure, as OpenAI sends it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.param = Some(param.to_string());
        e
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body().to_string()).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        r
    }
}

/// The request body as a JSON object (invalid UTF-8 and malformed JSON are 400s).
pub fn parse_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", format!("the request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::invalid("body", format!("the request body must be a JSON object, not {}", type_name(&other)))),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of one request object.
pub struct Fields<'a>(pub &'a serde_json::Map<String, Value>);

impl Fields<'_> {
    /// The field, treating JSON null as absent (as OpenAI does).
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn wrong(k: &str, want: &str, v: &Value) -> ApiError {
        ApiError::invalid(k, format!("'{k}' must be {want}, not {}", type_name(v)))
    }

    pub fn str(&self, k: &str) -> Result<Option<&str>, ApiError> {
        self.get(k).map(|v| v.as_str().ok_or_else(|| Self::wrong(k, "a string", v))).transpose()
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.get(k).map(|v| v.as_bool().ok_or_else(|| Self::wrong(k, "a boolean", v))).transpose()
    }

    pub fn num(&self, k: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
        let Some(v) = self.get(k) else { return Ok(None) };
        let x = v.as_f64().ok_or_else(|| Self::wrong(k, "a number", v))?;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(k, format!("'{k}' is {x}; it must be between {lo} and {hi}")));
        }
        Ok(Some(x))
    }

    pub fn int(&self, k: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(k) else { return Ok(None) };
        let x = v.as_i64().ok_or_else(|| Self::wrong(k, "an integer", v))?;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(k, format!("'{k}' is {x}; it must be between {lo} and {hi}")));
        }
        Ok(Some(x))
    }

    /// A string or an array of strings (`stop`).
    pub fn strings(&self, k: &str) -> Result<Vec<String>, ApiError> {
        match self.get(k) {
            None => Ok(vec![]),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| Self::wrong(k, "a string or an array of strings", x))).collect(),
            Some(v) => Err(Self::wrong(k, "a string or an array of strings", v)),
        }
    }
}

/// The fields both endpoints share, read and checked.
pub struct Common {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// None: as many as the context allows.
    pub max_tokens: Option<usize>,
    pub params: JobParams,
}

/// Read the shared fields. `logprobs` is the number of alternatives per token that the
/// endpoint asked for (the two endpoints spell it differently).
pub fn common(f: &Fields, logprobs: Option<usize>, tok: &crate::Tokenizer) -> Result<Common, ApiError> {
    let model = f.str("model")?.ok_or_else(|| ApiError::invalid("model", "'model' is required: GET /v1/models lists the names this server answers to"))?.to_string();
    let max_tokens = match f.int("max_completion_tokens", 1, i64::MAX)? {
        Some(m) => Some(m),
        None => f.int("max_tokens", 1, i64::MAX)?,
    };
    let stop = f.strings("stop")?;
    if stop.len() > 16 {
        return Err(ApiError::invalid("stop", format!("{} stop sequences; at most 16", stop.len())));
    }
    let temperature = f.num("temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32;
    let seed = match f.get("seed") {
        Some(v) => v.as_i64().map(|s| s as u64).or(v.as_u64()).ok_or_else(|| ApiError::invalid("seed", format!("'seed' must be an integer, not {}", type_name(v))))?,
        None => rand::random(),
    };
    let sampling = SamplingParams {
        temperature,
        top_k: f.int("top_k", -1, 1 << 20)?.unwrap_or(0).max(0) as usize,
        top_p: f.num("top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32,
        min_p: f.num("min_p", 0.0, 1.0)?.unwrap_or(0.0) as f32,
        repetition_penalty: f.num("repetition_penalty", 0.01, 10.0)?.unwrap_or(1.0) as f32,
        seed,
    };
    let stream_options = f.get("stream_options");
    let include_usage = match stream_options {
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?.unwrap_or(false),
        Some(v) => return Err(ApiError::invalid("stream_options", format!("'stream_options' must be an object, not {}", type_name(v)))),
        None => false,
    };
    for k in ["best_of", "suffix"] {
        if f.get(k).is_some_and(|v| v != &json!(1) && v != &json!("")) {
            return Err(ApiError::invalid(k, format!("'{k}' is not supported by this server")));
        }
    }
    let params = JobParams {
        max_tokens: 0,
        min_tokens: f.int("min_tokens", 0, 1 << 20)?.unwrap_or(0) as usize,
        sampling,
        presence_penalty: f.num("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        frequency_penalty: f.num("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        logit_bias: logit_bias(f, tok)?,
        stop,
        logprobs,
        n: f.int("n", 1, 16)?.unwrap_or(1) as usize,
        ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        keep_special: false,
    };
    Ok(Common { model, stream: f.bool("stream")?.unwrap_or(false), include_usage, max_tokens: max_tokens.map(|m| m as usize), params })
}

/// `logit_bias`: `{"token id": bias}`, bias in [-100, 100].
fn logit_bias(f: &Fields, tok: &crate::Tokenizer) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(v) = f.get("logit_bias") else { return Ok(vec![]) };
    let m = v.as_object().ok_or_else(|| ApiError::invalid("logit_bias", format!("'logit_bias' must be an object of token id -> bias, not {}", type_name(v))))?;
    let mut out = vec![];
    for (k, b) in m {
        let id: u32 = k.parse().map_err(|_| ApiError::invalid("logit_bias", format!("logit_bias key {k:?} is not a token id")))?;
        if id as usize >= tok.vocab_size() {
            return Err(ApiError::invalid("logit_bias", format!("logit_bias token id {id} is outside the vocabulary ({})", tok.vocab_size())));
        }
        let b = b.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| ApiError::invalid("logit_bias", format!("logit_bias[{k}] must be a number in [-100, 100]")))?;
        out.push((id, b as f32));
    }
    Ok(out)
}

/// Fit `max_tokens` to the context: OpenAI's 400 when prompt + max_tokens does not fit.
pub fn fit_context(prompt_len: usize, max_tokens: Option<usize>, ctx: usize, limit: usize) -> Result<usize, ApiError> {
    if prompt_len >= ctx {
        return Err(ApiError::invalid("messages", format!("This model's maximum context length is {ctx} tokens. However, your prompt has {prompt_len} tokens.")).code("context_length_exceeded"));
    }
    match max_tokens {
        Some(m) if prompt_len + m > ctx => Err(ApiError::invalid(
            "max_tokens",
            format!("This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({prompt_len} in the messages, {m} in the completion). Please reduce the length of the messages or completion.", prompt_len + m),
        )
        .code("context_length_exceeded")),
        Some(m) => Ok(m.min(limit)),
        None => Ok((ctx - prompt_len).min(limit)),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `chatcmpl-...` style ids.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}
