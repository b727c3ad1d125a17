//! What both generation endpoints do with a checked request: hand its prompts to the
//! engine, then either gather the choices (a JSON response) or relay them as OpenAI's
//! server-sent events, ending with `data: [DONE]`.
use super::engine::{Control, Job, SubmitError};
use super::openai::{fit_context, ApiError, Common};
use super::row::{Event, Finish, TokenLogprob};
use super::AppState;
use axum::http::StatusCode;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub struct Submitted {
    pub rx: UnboundedReceiver<Event>,
    pub choices: usize,
    pub prompt_tokens: usize,
}

/// Check the model name and the context, and queue one job per prompt.
pub fn submit(s: &AppState, c: &Common, prompts: Vec<Vec<u32>>) -> Result<Submitted, ApiError> {
    if s.shutting_down() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down"));
    }
    let adapter = if c.model == s.base_name {
        None
    } else if s.engine.has_model(&c.model) {
        Some(c.model.clone())
    } else {
        let names: Vec<String> = s.engine.models.read().expect("models").iter().map(|m| m.id.clone()).collect();
        let mut e = ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("The model {:?} does not exist. This server has: {}", c.model, names.join(", "))).code("model_not_found");
        e.param = Some("model".into());
        return Err(e);
    };
    let (tx, rx) = unbounded_channel();
    let n = c.params.n.max(1);
    let mut prompt_tokens = 0;
    let mut jobs = vec![];
    for (i, prompt) in prompts.into_iter().enumerate() {
        if prompt.is_empty() {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        let mut params = c.params.clone();
        params.max_tokens = fit_context(prompt.len(), c.max_tokens, s.context, s.limits.max_tokens)?;
        prompt_tokens += prompt.len();
        let now = Instant::now();
        jobs.push(Job { adapter: adapter.clone(), prompt, params, first_choice: i * n, events: tx.clone(), deadline: now + s.limits.timeout, received: now });
    }
    let choices = jobs.len() * n;
    for job in jobs {
        match s.engine.submit(Control::Job(job)) {
            Ok(()) => {}
            Err(SubmitError::Full) => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "the server's queue is full; retry shortly").code("queue_full");
                e.retry_after = Some(1);
                return Err(e);
            }
            Err(SubmitError::Closed) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down")),
        }
    }
    Ok(Submitted { rx, choices, prompt_tokens })
}

#[derive(Debug, Default)]
pub struct Choice {
    pub text: String,
    pub finish: Option<Finish>,
    pub logprobs: Vec<TokenLogprob>,
    pub tokens: usize,
}

fn failure(message: String, timeout: bool) -> ApiError {
    if timeout {
        return ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message).code("timeout");
    }
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

/// Wait for every choice to finish.
pub async fn collect(mut sub: Submitted) -> Result<(Vec<Choice>, Value), ApiError> {
    let mut out: Vec<Choice> = (0..sub.choices).map(|_| Choice::default()).collect();
    let mut done = 0;
    while done < sub.choices {
        match sub.rx.recv().await {
            Some(Event::Token { choice, text, logprob }) => {
                out[choice].text.push_str(&text);
                out[choice].logprobs.extend(logprob);
            }
            Some(Event::Done { choice, finish, completion_tokens, .. }) => {
                out[choice].finish = Some(finish);
                out[choice].tokens = completion_tokens;
                done += 1;
            }
            Some(Event::Failed { message, timeout }) => return Err(failure(message, timeout)),
            None => return Err(failure("the engine stopped".into(), false)),
        }
    }
    let completion: usize = out.iter().map(|c| c.tokens).sum();
    Ok((out, usage(sub.prompt_tokens, completion)))
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Turns engine events into an endpoint's stream chunks.
pub trait Chunker: Send + 'static {
    fn event(&mut self, ev: Event) -> Vec<Value>;
    /// The last chunk with `usage` (for `stream_options.include_usage`).
    fn usage_chunk(&self, usage: Value) -> Value;
}

struct Relay<C> {
    sub: Submitted,
    chunker: C,
    include_usage: bool,
    queue: VecDeque<String>,
    done: usize,
    completion: usize,
    ended: bool,
}

/// Stream the choices as server-sent events, exactly as OpenAI frames them.
pub fn sse<C: Chunker>(sub: Submitted, chunker: C, include_usage: bool) -> Response {
    let relay = Relay { sub, chunker, include_usage, queue: VecDeque::new(), done: 0, completion: 0, ended: false };
    let stream = futures_util::stream::unfold(relay, |mut r| async move {
        loop {
            if let Some(data) = r.queue.pop_front() {
                return Some((Ok::<_, Infallible>(Sse::default().data(data)), r));
            }
            if r.ended {
                return None;
            }
            r.pump().await;
        }
    });
    axum::response::Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

impl<C: Chunker> Relay<C> {
    async fn pump(&mut self) {
        if self.done == self.sub.choices {
            if self.include_usage {
                let u = self.chunker.usage_chunk(usage(self.sub.prompt_tokens, self.completion));
                self.queue.push_back(u.to_string());
            }
            self.queue.push_back("[DONE]".into());
            self.ended = true;
            return;
        }
        let ev = self.sub.rx.recv().await;
        let ev = match ev {
            Some(Event::Failed { message, timeout }) => Err(failure(message, timeout)),
            None => Err(failure("the engine stopped".into(), false)),
            Some(ev) => Ok(ev),
        };
        match ev {
            Ok(ev) => {
                if let Event::Done { completion_tokens, .. } = &ev {
                    self.done += 1;
                    self.completion += completion_tokens;
                }
                let chunks = self.chunker.event(ev);
                self.queue.extend(chunks.into_iter().map(|c| c.to_string()));
            }
            Err(e) => {
                self.queue.push_back(e.body().to_string());
                self.queue.push_back("[DONE]".into());
                self.ended = true;
            }
        }
    }
}

pub fn finish_name(f: Option<Finish>) -> &'static str {
    match f {
        Some(Finish::Length) => "length",
        _ => "stop",
    }
}
