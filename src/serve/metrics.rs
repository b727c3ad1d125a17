//! `GET /metrics`: Prometheus text exposition of requests, tokens, queue depth and
//! latency histograms. Written by hand: a handful of counters does not need a crate.
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let mut g = self.inner.lock().expect("histogram");
        if g.0.is_empty() {
            g.0 = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += secs;
        g.2 += 1;
    }

    fn write(&self, name: &str, help: &str, out: &mut String) {
        let g = self.inner.lock().expect("histogram");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", g.0.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", g.2, g.1, g.2);
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (endpoint, status) -> count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    /// Requests accepted but not yet taken by the engine.
    pub queued: AtomicUsize,
    /// Rows prefilling or decoding.
    pub running: AtomicUsize,
    pub ttft: Histogram,
    pub queue_wait: Histogram,
    pub request_decode: Histogram,
    pub request_total: Histogram,
}

impl Metrics {
    pub fn count(&self, endpoint: &str, status: u16) {
        *self.requests.lock().expect("requests").entry((endpoint.to_string(), status)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP instill_requests_total HTTP requests by endpoint and status.\n# TYPE instill_requests_total counter");
        for ((e, s), n) in self.requests.lock().expect("requests").iter() {
            let _ = writeln!(out, "instill_requests_total{{endpoint=\"{e}\",status=\"{s}\"}} {n}");
        }
        let counters = [
            ("instill_prompt_tokens_total", "Prompt tokens prefilled.", self.prompt_tokens.load(Ordering::Relaxed)),
            ("instill_generation_tokens_total", "Tokens generated.", self.generation_tokens.load(Ordering::Relaxed)),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let gauges = [
            ("instill_queue_depth", "Requests waiting for the engine.", self.queued.load(Ordering::Relaxed)),
            ("instill_running_requests", "Sequences prefilling or decoding.", self.running.load(Ordering::Relaxed)),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.ttft.write("instill_time_to_first_token_seconds", "From request received to its first token.", &mut out);
        self.queue_wait.write("instill_queue_wait_seconds", "From request received to the engine taking it.", &mut out);
        self.request_decode.write("instill_sequence_seconds", "From a sequence starting to prefill to its last token.", &mut out);
        self.request_total.write("instill_request_duration_seconds", "Whole requests, as the HTTP handler sees them.", &mut out);
        out
    }
}

pub async fn get(State(s): State<super::AppState>) -> impl IntoResponse {
    s.metrics.count("/metrics", 200);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}
