//! Training runs are deterministic and resumable: a run killed with SIGKILL mid-run, or
//! stopped with Ctrl-C, resumes from its last checkpoint to exactly the losses of an
//! uninterrupted run; checkpoints are complete or absent; bad recipes fail up front.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_instill");

fn setup(name: &str) -> PathBuf {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir(name);
    let mut data = String::new();
    for i in 0..40 {
        let q = format!("Question number {i}: what is {i} plus {}?", i * 3);
        let a = format!("ANSWER: {} | WHY: adding {i} and {} gives {}.", i * 4, i * 3, i * 4);
        data.push_str(&serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).to_string());
        data.push('\n');
    }
    std::fs::write(dir.join("train.jsonl"), data).unwrap();
    // The real model (a step takes a noticeable time, so a kill lands mid-step).
    let recipe = "name: run\nmodel: smollm2-135m-instruct\ndata: [{path: train.jsonl}]\nval_fraction: 0.1\n\
                  max_len: 128\npacking: false\nmethod: lora\nlora: {r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj]}\n\
                  lr: 1.0e-3\nwarmup_steps: 2\nmax_steps: 8\nbatch_size: 2\ngrad_accum: 2\nsave_every: 2\nkeep_checkpoints: 2\neval_every: 4\n";
    std::fs::write(dir.join("recipe.yaml"), recipe).unwrap();
    dir
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir).args(["--threads", "2", "sft"]).args(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// A fresh run writing to `out`.
fn sft(dir: &Path, out: &str, extra: &[&str]) -> Command {
    let set = format!("output_dir={out}");
    let mut args = vec!["recipe.yaml", "--set", &set];
    args.extend_from_slice(extra);
    command(dir, &args)
}

/// Continue the run in `run`.
fn resume(dir: &Path, run: &str) -> Command {
    command(dir, &["--resume", run])
}

fn losses(run: &Path) -> Vec<(usize, f64, Option<f64>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap() as usize, v["loss"].as_f64().unwrap(), v["val_loss"].as_f64())
        })
        .collect()
}

fn wait_for(path: &Path, child: &mut std::process::Child) {
    let t = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {}", path.display());
        assert!(t.elapsed() < Duration::from_secs(120), "timed out waiting for {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_and_interrupted_runs_resume_to_the_same_losses() {
    let dir = setup("resume");
    let out = sft(&dir, "full", &[]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = losses(&dir.join("full"));
    assert_eq!(reference.len(), 8);
    assert!(reference[7].1 < reference[0].1, "loss falls: {reference:?}");
    assert!(dir.join("full/adapter/adapter_model.safetensors").exists() && dir.join("full/loss.png").exists());
    // Only the newest `keep_checkpoints` remain.
    let kept: Vec<_> = std::fs::read_dir(dir.join("full/checkpoints")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(kept.len(), 2, "{kept:?}");

    // SIGKILL right after the step-4 checkpoint appears: mid-way through step 5.
    let mut child = sft(&dir, "killed", &[]).spawn().unwrap();
    wait_for(&dir.join("killed/checkpoints/step-000004/state.json"), &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = resume(&dir, "killed").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(losses(&dir.join("killed")), reference, "killed + resumed run differs from the uninterrupted one");

    // Ctrl-C: finishes the step, checkpoints, says how to resume.
    let mut child = sft(&dir, "interrupted", &[]).spawn().unwrap();
    wait_for(&dir.join("interrupted/checkpoints/step-000002/state.json"), &mut child);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("--resume"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let out = resume(&dir, "interrupted").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(losses(&dir.join("interrupted")), reference, "interrupted + resumed run differs");
}

#[test]
fn bad_recipes_fail_before_any_work_naming_the_key() {
    let dir = setup("badrecipe");
    for (set, key) in [("lora.rank=8", "rank"), ("learning_rate=1", "learning_rate"), ("batch_size=0", "batch_size"), ("method=magic", "magic")] {
        let out = sft(&dir, "bad", &["--set", set]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(key), "--set {set}: {err}");
    }
    assert!(!dir.join("bad").exists(), "nothing is written for a bad recipe");
}
