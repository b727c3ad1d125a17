//! Bad input gives one line naming the thing and what to do: no panic, no backtrace.
mod common;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{source, tmpdir};
use std::process::Command;

/// Run the CLI; return (exit code, stderr).
fn instill(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_instill")).args(args).env("RUST_BACKTRACE", "1").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_line_error(args: &[&str], needles: &[&str]) {
    let (code, err) = instill(args);
    assert_eq!(code, 1, "{args:?}: exit code; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err:?}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} should mention {n:?}");
    }
}

fn tiny_path() -> std::path::PathBuf {
    source("tiny-random-llama").path().to_path_buf()
}

#[test]
fn missing_file() {
    assert_one_line_error(&["generate", "-m", "/nope/model.gguf", "--prompt", "hi"], &["/nope/model.gguf", "no such file"]);
}

#[test]
fn unknown_registry_id() {
    assert_one_line_error(&["generate", "-m", "llama-9000", "--prompt", "hi"], &["llama-9000", "smollm2-135m-instruct"]);
}

#[test]
fn not_a_gguf_file() {
    let d = tmpdir("notgguf");
    let p = d.join("model.gguf");
    std::fs::write(&p, b"this is not a model").unwrap();
    assert_one_line_error(&["generate", "-m", p.to_str().unwrap(), "--prompt", "hi"], &[p.to_str().unwrap(), "not a readable GGUF"]);
}

#[test]
fn truncated_gguf() {
    let d = tmpdir("truncated");
    let p = d.join("tiny.gguf");
    let bytes = std::fs::read(tiny_path()).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_one_line_error(&["generate", "-m", p.to_str().unwrap(), "--prompt", "hi"], &[p.to_str().unwrap(), "truncated"]);
}

fn write_gguf(path: &std::path::Path, arch: &str, dtype: GgmlDType) {
    let t = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let arch = gguf_file::Value::String(arch.into());
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("token_embd.weight", &q)]).unwrap();
}

#[test]
fn unknown_architecture() {
    let d = tmpdir("arch");
    let p = d.join("bert.gguf");
    write_gguf(&p, "bert", GgmlDType::F32);
    assert_one_line_error(&["inspect", "-m", p.to_str().unwrap()], &["unknown architecture \"bert\"", "llama, qwen2, gemma3"]);
}

#[test]
fn unsupported_quant_type() {
    let d = tmpdir("quant");
    let p = d.join("odd.gguf");
    write_gguf(&p, "llama", GgmlDType::F32);
    // Patch the tensor's type id (u32 after name, n_dims and dims) to one no reader knows.
    let mut bytes = std::fs::read(&p).unwrap();
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = at + 4 + 2 * 8;
    bytes[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    assert_one_line_error(&["inspect", "-m", p.to_str().unwrap()], &[p.to_str().unwrap(), "77"]);
}

#[test]
fn prompt_longer_than_context() {
    let long = "word ".repeat(2100); // tiny-random-llama has a 2048-token context
    let tiny = tiny_path();
    assert_one_line_error(&["generate", "-m", tiny.to_str().unwrap(), "--prompt", &long, "--max-new-tokens", "2"], &["context of 2048 tokens", "shorten"]);
}

#[test]
fn base_model_chat_needs_a_template() {
    let tiny = tiny_path();
    assert_one_line_error(&["generate", "-m", tiny.to_str().unwrap(), "--chat", "hi"], &["no chat template", "--template"]);
    let (code, err) = instill(&["generate", "-m", tiny.to_str().unwrap(), "--chat", "hi", "--template", "chatml", "--max-new-tokens", "2"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn wrong_sha256_keeps_nothing() {
    let d = tmpdir("sha");
    let tmp = d.join("model.gguf.partial");
    let dest = d.join("model.gguf");
    std::fs::write(&tmp, b"corrupt download").unwrap();
    let err = instill::hub::install_verified(&tmp, &dest, &"0".repeat(64), "some-model").unwrap_err().to_string();
    assert!(err.contains("sha256 mismatch") && err.contains("instill fetch some-model"), "{err}");
    assert!(!tmp.exists() && !dest.exists(), "nothing that looks valid is left behind");
}
