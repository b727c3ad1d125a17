//! `--int8-prefill` on real quantized models: the answer survives 8-bit activations, and
//! the flag takes the int8 kernel where the CPU has one (the kernel itself is checked
//! against its plain reference and candle's dequantization in `kernels/qgemm.rs`).
mod common;

use common::source;
use std::process::Command;

fn generate(model: &str, int8: bool) -> String {
    let path = source(model).path().to_path_buf();
    let mut c = Command::new(env!("CARGO_BIN_EXE_instill"));
    c.args(["--threads", "2", "generate", "-m", path.to_str().unwrap(), "--chat", "What is the capital of France? Answer in one sentence.", "--max-new-tokens", "16"]);
    if int8 {
        c.arg("--int8-prefill");
    }
    let out = c.env_remove("INSTILL_QGEMM").output().unwrap();
    assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn int8_prefill_keeps_the_answer() {
    for model in ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"] {
        let (f32_path, int8) = (generate(model, false), generate(model, true));
        assert!(f32_path.contains("Paris"), "{model} (f32 prefill): {f32_path}");
        assert!(int8.contains("Paris"), "{model} (int8 prefill): {int8}");
    }
}

#[test]
fn flag_reaches_the_kernel_switch() {
    // The benchmark header reports the switch; with the flag it is on where AVX-512 VNNI is.
    let bench = |flag: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_instill"));
        if flag {
            c.arg("--int8-prefill");
        }
        let path = source("tiny-random-llama").path().to_path_buf();
        let out = c.env_remove("INSTILL_QGEMM").args(["bench", "generate", "-m", path.to_str().unwrap(), "--n-gen", "2", "--reps", "1", "--peer-python", "none"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
    };
    assert!(bench(false).ends_with("int8 prefill off"), "{}", bench(false));
    #[cfg(target_arch = "x86_64")]
    let vnni = std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    let vnni = false;
    assert!(bench(true).ends_with(if vnni { "int8 prefill on" } else { "int8 prefill off" }), "{}", bench(true));
}
