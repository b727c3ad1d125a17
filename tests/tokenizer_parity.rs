//! Tokenizers built from GGUF metadata reproduce llama.cpp's ids and decodes exactly.
//! Where the fixture marks a case `prefer_transformers` (one: llama.cpp keeps Qwen2's plain
//! "</s>" whole, treating it as a control token) the original tokenizer's ids, as
//! transformers gives them, are expected instead. Other disagreements are transformers'
//! (its GGUF converter splits SmolLM2's digits after the byte-level regex, so spaces before
//! a digit differ): there llama.cpp and the original tokenizer.json agree, and so must we.
//! Fixtures: tests/fixtures/tokenizer/*.json, made by tests/fixtures/gen/make_tokenizer.py
//! and crosscheck_tokenizer_hf.py.
mod common;

use common::{read_json, source};
use instill::Tokenizer;

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check(family: &str, id: &str) {
    let fx = read_json(&format!("tokenizer/{family}.json"));
    let tok = Tokenizer::load(&source(id)).unwrap();
    let mut wrong = vec![];
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let prefer_hf = case.get("prefer_transformers").and_then(|v| v.as_bool()).unwrap_or(false);
        let want = ids_of(if prefer_hf { &case["transformers_ids"] } else { &case["ids"] });
        let got = tok.encode(text, false).unwrap();
        if got != want {
            wrong.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
            continue;
        }
        let dec = tok.decode(&ids_of(&case["ids"]), false).unwrap();
        if dec != case["decoded"].as_str().unwrap() {
            wrong.push(format!("decode {want:?}: got {dec:?}, llama.cpp {:?}", case["decoded"]));
        }
    }
    assert!(wrong.is_empty(), "{family}: {} of {} cases differ:\n{}", wrong.len(), fx["cases"].as_array().unwrap().len(), wrong.join("\n"));
    let first = fx["cases"][0]["text"].as_str().unwrap();
    assert_eq!(tok.encode(first, true).unwrap(), ids_of(&fx["ids_with_bos"]), "{family}: BOS handling");
    assert_eq!(tok.bos_id, Some(fx["bos_id"].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_id, Some(fx["eos_id"].as_u64().unwrap() as u32));
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    check("smollm2", "smollm2-135m-instruct");
}

#[test]
fn qwen2_tokenizer_matches_llama_cpp() {
    check("qwen2", "qwen2.5-coder-0.5b-instruct");
}

#[test]
fn gemma3_tokenizer_matches_llama_cpp() {
    check("gemma3", "gemma3-270m");
}
