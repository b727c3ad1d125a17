//! Chat templates render byte for byte like transformers' apply_chat_template.
//! Fixtures: tests/fixtures/chat/*.json, made by tests/fixtures/gen/make_chat.py.
mod common;

use common::{read_json, source};
use instill::Tokenizer;

fn check(family: &str, id: &str) {
    let fx = read_json(&format!("chat/{family}.json"));
    let tok = Tokenizer::load(&source(id)).unwrap();
    assert_eq!(tok.chat_template.as_deref(), fx["template"].as_str(), "{family}: template read from GGUF metadata");
    let tmpl = tok.template(None).unwrap();
    for (i, case) in fx["cases"].as_array().unwrap().iter().enumerate() {
        let msgs = case["messages"].as_array().unwrap();
        let tools = case.get("tools");
        let got = tmpl.render(msgs, case["add_generation_prompt"].as_bool().unwrap(), tools).unwrap();
        assert_eq!(got, case["rendered"].as_str().unwrap(), "{family} case {i}");
    }
}

#[test]
fn smollm2_template_matches_transformers() {
    check("smollm2", "smollm2-135m-instruct");
}

#[test]
fn qwen2_template_matches_transformers() {
    check("qwen2", "qwen2.5-coder-0.5b-instruct");
}

#[test]
fn base_model_without_template_needs_one_named() {
    let tok = Tokenizer::load(&source("gemma3-270m")).unwrap();
    let err = tok.template(None).err().expect("gemma3 base has no template").to_string();
    assert!(err.contains("--template"), "{err}");
    let msgs = [serde_json::json!({"role": "user", "content": "Hi"})];
    let text = tok.template(Some("gemma")).unwrap().render(&msgs, true, None).unwrap();
    assert_eq!(text, "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
}
