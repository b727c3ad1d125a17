//! The bounded load test: 64 concurrent streaming requests over 4 adapters (3 LoRA, 1
//! prompt tuning) and the base on the real SmolLM2, decoded together by continuous
//! batching with per-row adapters. All complete without errors, and every greedy output
//! equals the same request run alone.
mod serve_util;
use serde_json::{json, Value};
use serve_util::*;

const QUESTIONS: [&str; 16] = [
    "What is the capital of France?",
    "Name three colors.",
    "Write a haiku about rain.",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "Explain what a noun is.",
    "How many legs does a spider have?",
    "Translate 'thank you' into Spanish.",
    "What is the boiling point of water?",
    "Suggest a name for a cat.",
    "Why is the sky blue?",
    "List two planets.",
    "What do bees make?",
    "Say hello in one word.",
    "What is the opposite of cold?",
    "Describe the sun in five words.",
];

fn body(i: usize, models: &[String]) -> Value {
    // Lengths differ so that rows leave the batch at different steps.
    json!({"model": models[i % models.len()], "messages": [{"role": "user", "content": QUESTIONS[i % 16]}],
           "max_tokens": 8 + (i * 5) % 17, "temperature": 0, "stream": true})
}

#[test]
fn sixty_four_concurrent_streams_over_four_adapters_match_sequential() {
    let dir = std::env::temp_dir().join(format!("instill-test-serve-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let loras = lora_variants(&dir, &[8, 64, 160]);
    let prompt = prompt_adapter("smollm2-135m-instruct", &dir, "Answer like a pirate.");
    let mut args: Vec<String> = vec![];
    for (i, d) in loras.iter().enumerate() {
        args.extend(["--adapter".into(), format!("lora{i}={}", d.display())]);
    }
    args.extend(["--adapter".into(), format!("pirate={}", prompt.display())]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&argv);
    let models: Vec<String> = ["smollm2-135m-instruct", "lora0", "lora1", "lora2", "pirate"].iter().map(|s| s.to_string()).collect();

    let t0 = std::time::Instant::now();
    let outs: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (server, models) = (&server, &models);
                s.spawn(move || {
                    let chunks = server.stream("/v1/chat/completions", &body(i, models));
                    let finish = chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str()).unwrap_or("").to_string();
                    (streamed_text(&chunks), finish)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a request thread panicked")).collect()
    });
    let concurrent = t0.elapsed();
    let t1 = std::time::Instant::now();
    let mut differ = 0;
    for (i, (text, finish)) in outs.iter().enumerate() {
        assert!(finish == "stop" || finish == "length", "request {i}: finish {finish:?}");
        let alone = server.stream("/v1/chat/completions", &body(i, &models));
        assert_eq!(text, &streamed_text(&alone), "request {i} ({}) differs when run alone", models[i % 5]);
        if i % 5 != 0 {
            // The same question through the base.
            let mut b = body(i, &models);
            b["model"] = json!(models[0]);
            let base = streamed_text(&server.stream("/v1/chat/completions", &b));
            differ += usize::from(base != *text);
        }
    }
    eprintln!("64 concurrent streams: {:.1} s; one at a time: {:.1} s; adapter outputs differing from the base: {differ}/51", concurrent.as_secs_f64(), t1.elapsed().as_secs_f64());
    assert!(differ >= 10, "the adapters hardly change the outputs ({differ} of 51 differ): routing is not applied");
    let (_, metrics) = server.get("/metrics");
    let line = metrics.lines().find(|l| l.starts_with("instill_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}")).expect("request counter");
    assert!(line.ends_with(" 179"), "{line}");
    assert!(metrics.contains("instill_running_requests 0"), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}
