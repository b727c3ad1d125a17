//! Preference and reward training end to end on the real SmolLM2-135M (the Q4_1 base
//! kept quantized: QLoRA): every objective's recipe in recipes/ trains on a few real
//! pairs and logs its statistics; a DPO run resumes to exactly the losses of an
//! uninterrupted one; a corrupted checkpoint is reported and passed over; a NaN loss
//! stops the run naming the step and records; bad pairs are reported per record; a
//! reward model scores, picks best-of-n, builds pairs that train, and selects data.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_instill");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first `n` lines of a data file of the repository, written into `dir`.
fn head(dir: &Path, rel: &str, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    let out = dir.join(Path::new(rel).file_name().unwrap());
    std::fs::write(&out, text.lines().take(n).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    out
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN).current_dir(dir).env("INSTILL_PROGRESS_SECS", "0.01").args(["--threads", "2"]).args(args).output().unwrap();
    out
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "failed: {err}\n{}", String::from_utf8_lossy(&o.stdout));
    err
}

/// `instill train RECIPE` on small data, `steps` steps, into `dir/out`.
fn train(dir: &Path, recipe: &str, data: &Path, val: Option<&Path>, out: &str, extra: &[&str]) -> Output {
    let r = root().join("recipes").join(recipe);
    let d = format!("data.0.path={}", data.display());
    let v = match val {
        Some(v) => format!("val_data.0.path={}", v.display()),
        None => "val_data=[]".into(),
    };
    let o = format!("output_dir={}", dir.join(out).display());
    let mut args = vec!["train", r.to_str().unwrap(), "--set", &d, "--set", &v, "--set", &o, "--set", "max_len=160", "--set", "batch_size=2", "--set", "save_every=1", "--set", "eval_every=2"];
    for e in extra {
        args.extend(["--set", e]);
    }
    run(dir, &args)
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_objective_recipe_trains_on_smollm2() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("pref-recipes");
    let pairs = head(&dir, "data/preference/hh_train.jsonl", 4);
    let val = head(&dir, "data/preference/hh_heldout.jsonl", 2);
    // Two desirable and two undesirable responses, alternating.
    let text = std::fs::read_to_string(root().join("data/preference/kto_demo.jsonl")).unwrap();
    let (yes, no): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.contains("\"label\": true"));
    let kto = dir.join("kto.jsonl");
    std::fs::write(&kto, [yes[0], no[0], yes[1], no[1]].map(|l| format!("{l}\n")).concat()).unwrap();
    let scored = head(&dir, "data/preference/scored_demo.jsonl", 4);
    let cases: &[(&str, &Path, Option<&Path>, &[&str])] = &[
        ("dpo-smollm2.yaml", &pairs, Some(&val), &["rewards/accuracies", "rewards/margins", "val/rewards/accuracies"]),
        ("ipo-smollm2.yaml", &pairs, Some(&val), &["rewards/chosen", "rewards/rejected"]),
        ("robust-smollm2.yaml", &pairs, None, &["rewards/margins"]),
        ("hinge-smollm2.yaml", &pairs, None, &["rewards/margins"]),
        ("simpo-smollm2.yaml", &pairs, None, &["rewards/accuracies", "logps/chosen"]),
        ("cpo-smollm2.yaml", &pairs, None, &["rewards/accuracies"]),
        ("orpo-smollm2.yaml", &pairs, None, &["log_odds_ratio", "nll_loss"]),
        ("kto-smollm2.yaml", &kto, None, &["kl", "rewards/margins"]),
        ("reward-smollm2.yaml", &pairs, Some(&val), &["rewards/accuracies", "val/rewards/margins"]),
        ("reward-regression-smollm2.yaml", &scored, None, &["mse"]),
    ];
    for (recipe, data, val, keys) in cases {
        let name = recipe.trim_end_matches(".yaml");
        let err = ok(&train(&dir, recipe, data, *val, name, &["max_steps=2", "val_fraction=0"]));
        assert!(err.contains("train: step 2/2"), "{recipe}: plain progress lines without a terminal:\n{err}");
        let m = metrics(&dir.join(name));
        assert_eq!(m.len(), 2, "{recipe}");
        for k in *keys {
            assert!(m.iter().any(|r| r.get(*k).is_some_and(|v| v.as_f64().is_some_and(f64::is_finite))), "{recipe}: no {k} in {m:?}");
        }
        let result = if name.starts_with("reward") { "model" } else { "adapter" };
        assert!(dir.join(name).join(result).is_dir(), "{recipe}: no {result}/");
    }
    // The regression head has one output per attribute, named.
    let rm = instill::model::reward::RewardModel::load(&dir.join("reward-regression-smollm2/model")).unwrap();
    assert_eq!(rm.attributes, ["helpfulness", "verbosity"]);
}

#[test]
fn dpo_resumes_exactly_and_passes_over_a_corrupted_checkpoint() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("pref-resume");
    let pairs = head(&dir, "data/preference/hh_train.jsonl", 6);
    ok(&train(&dir, "dpo-smollm2.yaml", &pairs, None, "full", &["max_steps=3", "warmup_steps=0", "lr=1e-4"]));
    let full = metrics(&dir.join("full"));
    // The same run stopped after step 2, resumed for step 3.
    ok(&train(&dir, "dpo-smollm2.yaml", &pairs, None, "part", &["max_steps=3", "warmup_steps=0", "lr=1e-4"]));
    let part = dir.join("part");
    std::fs::remove_dir_all(part.join("checkpoints/step-000003")).unwrap();
    let run_dir = part.to_str().unwrap().to_string();
    ok(&run(&dir, &["train", "--resume", &run_dir]));
    let resumed = metrics(&part);
    assert_eq!(resumed.len(), 3);
    for k in ["loss", "rewards/margins", "rewards/chosen"] {
        let (a, b) = (full[2][k].as_f64().unwrap(), resumed[2][k].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "step 3 {k}: resumed {b} vs uninterrupted {a}");
    }
    // Corrupt the newest checkpoint: reported, and the run goes on from the one before.
    let newest = part.join("checkpoints/step-000003/adapter_model.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let err = ok(&run(&dir, &["train", "--resume", &run_dir, "--set", "max_steps=4"]));
    assert!(err.contains("checkpoint step 3 is unusable") && err.contains("sha256"), "{err}");
    let after = metrics(&part);
    assert_eq!(after.iter().map(|m| m["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[test]
fn a_nan_loss_stops_the_run_naming_step_and_records() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("pref-nan");
    let pairs = head(&dir, "data/preference/hh_train.jsonl", 4);
    let o = train(&dir, "dpo-smollm2.yaml", &pairs, None, "nan", &["max_steps=3", "warmup_steps=0", "lr=1e30", "max_grad_norm=0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("step 2: the loss is NaN") || err.contains("step 2: the loss is inf"), "{err}");
    assert!(err.contains("hh_train.jsonl:"), "names the records: {err}");
    assert!(dir.join("nan/checkpoints/step-000001/state.json").exists(), "the last good checkpoint stays");
    assert!(!dir.join("nan/checkpoints/step-000002").exists());
}

#[test]
fn bad_pairs_are_reported_per_record() {
    let dir = common::tmpdir("pref-bad");
    let lines = [
        r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"}"#,
        r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": ""}"#,
        r#"{"chosen_messages": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "a"}], "rejected_messages": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "b"}]}"#,
        r#"{"prompt": "Fine", "chosen": "Good", "rejected": "Bad"}"#,
    ];
    std::fs::write(dir.join("pairs.jsonl"), lines.join("\n") + "\n").unwrap();
    let o = run(&dir, &["data", "check", "pairs.jsonl", "--format", "trl-preference"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("pairs.jsonl:1") && text.contains("identical to chosen"), "{text}");
    assert!(text.contains("pairs.jsonl:2") && text.contains("empty response"), "{text}");
    let o = run(&dir, &["data", "check", "pairs.jsonl", "--format", "messages-preference"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("pairs.jsonl:3") && text.contains("prompts of chosen and rejected differ"), "{text}");
    // Training refuses the file, naming it and pointing at `data check`.
    let o = train(&dir, "dpo-smollm2.yaml", &dir.join("pairs.jsonl"), None, "bad", &["max_steps=1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("pairs.jsonl:1"), "{err}");
    // An SFT file given to DPO is refused with what the objective wants.
    std::fs::write(dir.join("sft.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n").unwrap();
    let o = train(&dir, "dpo-smollm2.yaml", &dir.join("sft.jsonl"), None, "bad2", &["max_steps=1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("objective `dpo` trains on preference pairs") && err.contains("conversations"), "{err}");
    // Keys users of TRL type: aliases, or "did you mean".
    let o = train(&dir, "dpo-smollm2.yaml", &dir.join("pairs.jsonl"), None, "bad3", &["bta=0.2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("did you mean `beta`"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn reward_model_scores_picks_best_of_n_builds_pairs_and_selects() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("pref-rm");
    let pairs = head(&dir, "data/preference/hh_train.jsonl", 4);
    let val = head(&dir, "data/preference/hh_heldout.jsonl", 4);
    // max_len long enough that no held-out pair is cut (scoring below sees them whole).
    ok(&train(&dir, "reward-smollm2.yaml", &pairs, Some(&val), "rm", &["max_steps=2", "max_len=1024"]));
    let rm = dir.join("rm/model");
    let rm_s = rm.to_str().unwrap();
    // Scoring the held-out pairs gives the validation numbers of the last step.
    let o = run(&dir, &["reward", "score", "-m", rm_s, "--data", val.to_str().unwrap(), "--out", "score"]);
    ok(&o);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("score/summary.json")).unwrap()).unwrap();
    let last = metrics(&dir.join("rm")).pop().unwrap();
    let (a, b) = (summary["mean_margin"].as_f64().unwrap(), last["val/rewards/margins"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4, "reward score margin {a} vs validation {b}");
    assert!(dir.join("score/margins.png").exists());
    // Best of 3 at temperature 1: the best sample's reward is the highest of the three.
    let o = run(&dir, &["generate", "--chat", "Give me one tip for sleeping well.", "--best-of", "3", "--reward-model", rm_s, "--temperature", "1.0", "--max-new-tokens", "12", "--seed", "3"]);
    let err = ok(&o);
    assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty() && err.contains("best of 3"), "{err}");
    // Pairs: sampled, scored, written in a layout training reads.
    std::fs::write(dir.join("prompts.jsonl"), "{\"prompt\": \"Name a fruit.\"}\n{\"prompt\": \"Say hello politely.\"}\n").unwrap();
    ok(&run(&dir, &["pairs", "--reward-model", rm_s, "--prompts", "prompts.jsonl", "--n", "3", "--out", "built.jsonl", "--max-new-tokens", "12", "--seed", "1"]));
    let built = std::fs::read_to_string(dir.join("built.jsonl")).unwrap();
    let kept: Vec<serde_json::Value> = built.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v.get("chosen").is_some()).collect();
    assert!(!kept.is_empty(), "{built}");
    for v in &kept {
        assert!(v["chosen_reward"].as_f64().unwrap() >= v["rejected_reward"].as_f64().unwrap());
    }
    std::fs::write(dir.join("kept.jsonl"), kept.iter().map(|v| format!("{v}\n")).collect::<String>()).unwrap();
    ok(&train(&dir, "dpo-smollm2.yaml", &dir.join("kept.jsonl"), None, "round2", &["max_steps=1", "batch_size=1"]));
    // Data selection by reward keeps the top half.
    let sft = head(&dir, "data/quickstart/train.jsonl", 6);
    ok(&run(&dir, &["data", "select", sft.to_str().unwrap(), "--by", "reward", "--reward-model", rm_s, "--keep", "0.5", "--out", "top.jsonl"]));
    assert_eq!(std::fs::read_to_string(dir.join("top.jsonl")).unwrap().lines().count(), 3);
}
