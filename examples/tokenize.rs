//! Tokenize JSONL `{"text": ...}` lines from stdin with a model's tokenizer, print `{"ids": [...]}` lines:
//! `cargo run --release --example tokenize -- MODEL < texts.jsonl` (for cross-checks against other tokenizers).
use std::io::BufRead;

fn main() {
    let model = std::env::args().nth(1).unwrap_or_else(|| instill::hub::DEFAULT_MODEL.to_string());
    let tok = instill::Tokenizer::load(&instill::hub::resolve(&model, true).unwrap()).unwrap();
    for line in std::io::stdin().lock().lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let ids = tok.encode(v["text"].as_str().unwrap(), false).unwrap();
        println!("{}", serde_json::json!({ "ids": ids }));
    }
}
