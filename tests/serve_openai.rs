//! The server with the official `openai` Python client (pinned; `.ci/run` installs it in
//! a venv): chat, completions, streaming, stop, n, logprobs, tools (Qwen2.5's format,
//! on the real Qwen2.5-Coder-0.5B) and typed errors. `tests/clients/openai_client.py`.
mod serve_util;
use serve_util::Server;

/// The Python of the test venv: $INSTILL_PY, else the venv `.ci/run` makes.
pub fn python() -> String {
    let p = std::env::var("INSTILL_PY").unwrap_or_else(|_| format!("{}/bin/python", std::env::var("INSTILL_PY_VENV").unwrap_or_else(|_| "/tmp/instill-serve-venv".into())));
    assert!(std::path::Path::new(&p).exists(), "{p} is missing: run .ci/run (it creates the test venv with the pinned openai, gguf and llama-cpp-python) or set INSTILL_PY");
    p
}

#[test]
fn official_openai_client_works_unchanged() {
    let qwen = instill::hub::resolve("qwen2.5-coder-0.5b-instruct", true).unwrap();
    let qwen = qwen.path().display().to_string();
    // SmolLM2 for the plain endpoints; Qwen2.5, whose template knows tools, for tool calls.
    let smol = Server::start(&[]);
    let tools = Server::start(&["-m", &qwen, "--served-name", "qwen"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/openai_client.py");
    let out = std::process::Command::new(python()).args([script, &smol.url("/v1"), "smollm2-135m-instruct", &tools.url("/v1"), "qwen"]).output().expect("run the openai client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "openai client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
}
