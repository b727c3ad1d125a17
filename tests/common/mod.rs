//! Shared test helpers: registry models are fetched (and sha256-verified) on first use.
#![allow(dead_code)]
use candle_core::Tensor;
use instill::hub::{self, ModelSource};
use instill::{CausalLm, LoadOptions, Tokenizer};
use std::path::PathBuf;

pub fn source(id: &str) -> ModelSource {
    hub::resolve(id, true).unwrap_or_else(|e| panic!("fetching {id}: {e}"))
}

pub fn load(id: &str, dequantize: bool) -> (CausalLm, Tokenizer) {
    let s = source(id);
    let opts = LoadOptions { dequantize, ..Default::default() };
    (CausalLm::load(&s, &opts).unwrap(), Tokenizer::load(&s).unwrap())
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("instill-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn load_tokenizer(id: &str) -> Tokenizer {
    Tokenizer::load(&source(id)).unwrap()
}

/// Run the instill binary in `dir` on 2 threads, with fast plain progress lines.
pub fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_instill")).current_dir(dir).env("INSTILL_PROGRESS_SECS", "0.01").args(["--threads", "2"]).args(args).output().unwrap()
}

/// `instill train recipes/<recipe>` in `dir` with `--set` overrides; panics with stderr on failure.
pub fn train_recipe(dir: &std::path::Path, recipe: &str, sets: &[&str]) -> std::process::Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes").join(recipe);
    let mut args = vec!["train", path.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = cli(dir, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Remove a finished run's `adapter/`, resume its last checkpoint, and check that the
/// adapter comes back bit for bit (`before`: its tensors).
pub fn assert_resume_reproduces(dir: &std::path::Path, run: &std::path::Path, before: &std::collections::HashMap<String, Tensor>) {
    let adapter = run.join("adapter");
    std::fs::remove_dir_all(&adapter).unwrap();
    let o = cli(dir, &["train", "--resume", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &candle_core::Device::Cpu).unwrap();
    for (name, x) in before {
        assert_eq!(max_abs_diff(x, &again[name]), 0.0, "{name}");
    }
}
