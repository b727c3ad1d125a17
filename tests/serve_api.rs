//! The server against bad input and failures: malformed JSON, wrong types, unknown
//! models, empty messages, huge max_tokens, invalid UTF-8, oversized bodies, a client
//! that disconnects mid-stream, a full queue, timeouts and SIGTERM; after each, the
//! server still answers correctly. Also: logprobs, stop strings, n, completions, adapters
//! loaded at run time, /health and /metrics.
mod serve_util;
use serde_json::{json, Value};
use serve_util::*;

const BASE: &str = "smollm2-135m-instruct";

fn hi(max_tokens: usize) -> Value {
    json!({"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, "temperature": 0})
}

/// OpenAI's error shape, with the status and (when given) param.
fn assert_error(status: u16, body: &Value, want: u16, param: Option<&str>) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"), "{body}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body}");
    }
}

fn answer(s: &Server) -> String {
    let (st, v) = s.post("/v1/chat/completions", &hi(12));
    assert_eq!(st, 200, "{v}");
    v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

#[test]
fn bad_input_never_breaks_the_server() {
    let s = Server::start(&["--max-body-mb", "1"]);
    let good = answer(&s);
    assert!(!good.is_empty());
    let chat = "/v1/chat/completions";
    let cases: Vec<(&[u8], u16, Option<&str>)> = vec![
        (b"{not json", 400, Some("body")),
        (b"[1, 2]", 400, Some("body")),
        (br#"{"model": "smollm2-135m-instruct", "messages": "hi"}"#, 400, Some("messages")),
        (br#"{"model": "smollm2-135m-instruct", "messages": []}"#, 400, Some("messages")),
        (br#"{"model": "smollm2-135m-instruct"}"#, 400, Some("messages")),
        (br#"{"messages": [{"role": "user", "content": "x"}]}"#, 400, Some("model")),
        (br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}"#, 404, Some("model")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}"#, 400, Some("max_tokens")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, 400, Some("temperature")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000000}"#, 400, Some("max_tokens")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "n": 1000}"#, 400, Some("n")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "wizard", "content": "x"}]}"#, 400, Some("messages[0].role")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, 400, Some("messages[0].content[0]")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "stop": [1]}"#, 400, Some("stop")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "tools": "all"}"#, 400, Some("tools")),
        (br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"x": 1}}"#, 400, Some("logit_bias")),
        (b"{\"model\": \"smollm2-135m-instruct\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", 400, Some("body")),
    ];
    for (body, want, param) in cases {
        let (st, v) = s.post_bytes(chat, body);
        assert_error(st, &v, want, param);
    }
    let (st, v) = s.post("/v1/completions", &json!({"model": BASE, "prompt": [99999999]}));
    assert_error(st, &v, 400, Some("prompt"));
    // Oversized body: 413 in the same JSON shape.
    let big = format!("{{\"model\": \"{BASE}\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "a".repeat(1_500_000));
    let (st, v) = s.post_bytes(chat, big.as_bytes());
    assert_error(st, &v, 413, None);
    // Unknown endpoint and wrong method.
    let (st, text) = s.get("/v1/nothing");
    assert_error(st, &serde_json::from_str(&text).unwrap(), 404, None);
    let (st, text) = s.get(chat);
    assert_error(st, &serde_json::from_str(&text).unwrap(), 405, None);
    // Raw garbage on the socket.
    let _ = s.raw(b"GARBAGE / HTTP/9.9\r\n\r\n", 4096);
    let _ = s.raw(&request("POST", chat, b"{\"model\": 1, \"messages\": 2"), 4096);
    // A client that disconnects mid-stream: its generation is cancelled.
    let long = json!({"model": BASE, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 400, "ignore_eos": true, "stream": true});
    let partial = s.raw(&request("POST", chat, long.to_string().as_bytes()), 600);
    assert!(partial.contains("200 OK") && partial.contains("data: "), "{partial}");
    let mut cancelled = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (_, m) = s.get("/metrics");
        if m.contains("instill_running_requests 0") {
            cancelled = true;
            break;
        }
    }
    assert!(cancelled, "the disconnected stream kept generating");
    assert_eq!(answer(&s), good, "the server answers differently after bad input");
    let (st, h) = s.get("/health");
    assert_eq!(st, 200, "{h}");
}

#[test]
fn logprobs_stop_n_and_completions() {
    let s = Server::start(&[]);
    let full = answer(&s);
    // logprobs: the greedy token is the most likely one.
    let mut b = hi(6);
    b["logprobs"] = json!(true);
    b["top_logprobs"] = json!(3);
    let (st, v) = s.post("/v1/chat/completions", &b);
    assert_eq!(st, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6);
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(t["token"], top[0]["token"], "{t}");
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
    }
    // A stop string cuts the text (and is not sent), streaming or not.
    let word = full.split_whitespace().nth(2).expect("three words").to_string();
    let cut = full[..full.find(&format!(" {word}")).unwrap()].to_string();
    let mut b = hi(12);
    b["stop"] = json!([format!(" {word}")]);
    let (_, v) = s.post("/v1/chat/completions", &b);
    assert_eq!(v["choices"][0]["message"]["content"], cut.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    b["stream"] = json!(true);
    let chunks = s.stream("/v1/chat/completions", &b);
    assert_eq!(streamed_text(&chunks), cut);
    // n choices with sampling; usage counts them all.
    let b = json!({"model": BASE, "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 8, "temperature": 1.0, "seed": 3, "n": 3});
    let (_, v) = s.post("/v1/chat/completions", &b);
    assert_eq!(v["choices"].as_array().unwrap().len(), 3);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 3, "{v}");
    let (_, again) = s.post("/v1/chat/completions", &b);
    assert_eq!(v["choices"], again["choices"], "the same seed gives the same samples");
    // Completions: a string prompt, echo, logprobs, several prompts.
    let (st, v) = s.post("/v1/completions", &json!({"model": BASE, "prompt": ["The capital of France is", "One, two,"], "max_tokens": 5, "temperature": 0, "echo": true, "logprobs": 2}));
    assert_eq!(st, 200, "{v}");
    let ch = v["choices"].as_array().unwrap();
    assert_eq!(ch.len(), 2);
    assert!(ch[0]["text"].as_str().unwrap().starts_with("The capital of France is"));
    assert_eq!(ch[1]["logprobs"]["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(v["object"], "text_completion");
    let chunks = s.stream("/v1/completions", &json!({"model": BASE, "prompt": "One, two,", "max_tokens": 5, "temperature": 0, "stream": true}));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(format!("One, two,{text}"), ch[1]["text"].as_str().unwrap());
}

#[test]
fn adapters_load_at_run_time() {
    let dir = std::env::temp_dir().join(format!("instill-test-serve-adapters-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let loras = lora_variants(&dir, &[160]);
    let s = Server::start(&[]);
    let (st, v) = s.post("/v1/adapters", &json!({"name": "strong", "path": loras[0]}));
    assert_eq!(st, 201, "{v}");
    let (_, models) = s.get("/v1/models");
    assert!(models.contains("\"strong\""), "{models}");
    let mut b = hi(12);
    b["model"] = json!("strong");
    let (st, v) = s.post("/v1/chat/completions", &b);
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["choices"][0]["message"]["content"].as_str().unwrap(), answer(&s), "the adapter changes nothing");
    let (st, v) = s.post("/v1/adapters", &json!({"name": "strong", "path": loras[0]}));
    assert_error(st, &v, 400, Some("name"));
    let (st, v) = s.post("/v1/adapters", &json!({"name": "missing", "path": dir.join("nope")}));
    assert_error(st, &v, 400, Some("path"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn full_queue_timeouts_and_graceful_shutdown() {
    let s = Server::start(&["--max-batch", "1", "--queue", "1", "--timeout", "3"]);
    let slow = json!({"model": BASE, "messages": [{"role": "user", "content": "Count to a thousand."}], "max_tokens": 2000, "ignore_eos": true});
    let post = || match ureq::post(&s.url("/v1/chat/completions")).send_string(&slow.to_string()) {
        Err(ureq::Error::Status(code, r)) => (code, r.header("Retry-After").map(str::to_string), serde_json::from_str::<Value>(&r.into_string().unwrap()).unwrap()),
        other => panic!("expected an error status, got {other:?}"),
    };
    let statuses: Vec<(u16, Option<String>, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6).map(|_| sc.spawn(post)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|(st, ra, _)| *st == 429 && ra.as_deref() == Some("1")), "no request was refused with 429 and Retry-After: {statuses:?}");
    assert!(statuses.iter().any(|(st, _, _)| *st == 504), "no request timed out: {statuses:?}");
    for (st, _, v) in &statuses {
        assert_error(*st, v, *st, None);
    }
    let answer_after = answer(&s);
    assert!(!answer_after.is_empty());
    // SIGTERM: the in-flight stream finishes; the process exits; new connections fail.
    let mut body = hi(40);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| s.stream("/v1/chat/completions", &body));
        std::thread::sleep(std::time::Duration::from_millis(400));
        s.sigterm();
        let chunks = h.join().unwrap();
        assert_eq!(chunks.iter().filter_map(|c| c["usage"]["completion_tokens"].as_u64()).count(), 0);
        assert!(streamed_text(&chunks).len() > 10, "the in-flight stream was cut off");
    });
    let mut s = s;
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(std::net::TcpStream::connect(&s.addr).is_err(), "still accepting connections after shutdown");
}
