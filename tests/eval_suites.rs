//! Evaluation end to end on a tiny model: SuperNI, GSM8K and generic suites write
//! predictions, scores and a report; an interrupted run resumes without regenerating;
//! other settings in the same directory are refused; reports compare (flips, chart);
//! robustness runs every wording.
mod common;

use instill::eval::compare::compare;
use instill::eval::robustness;
use instill::eval::runner::{read_scored, run, RunOptions};
use instill::eval::suites::{generic::Generic, gsm8k::Gsm8k, superni::SuperNi, Suite};
use std::path::Path;

fn shared(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

/// The first `per_task` lines of each of the first `tasks` tasks of eval_dev.
fn small_eval(dir: &Path, tasks: usize, per_task: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(shared("superni/eval_dev.jsonl")).unwrap();
    let (mut out, mut seen) = (String::new(), std::collections::HashMap::<String, usize>::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["task"].as_str().unwrap().to_string();
        if seen.len() == tasks && !seen.contains_key(&t) {
            continue;
        }
        let n = seen.entry(t).or_default();
        if *n < per_task {
            *n += 1;
            out.push_str(line);
            out.push('\n');
        }
    }
    let p = dir.join("dev.jsonl");
    std::fs::write(&p, out).unwrap();
    p
}

fn opts(settings: serde_json::Value) -> RunOptions {
    RunOptions { batch_size: 2, max_new_tokens: Some(6), template: None, settings, progress: false, steer: None }
}

#[test]
fn superni_runs_resumes_refuses_other_settings_and_compares() {
    let dir = common::tmpdir("eval-superni");
    let (model, tok) = common::load("tiny-random-llama", false);
    let data = small_eval(&dir, 3, 2);
    let suite = SuperNi::new(&data, 2, None, 0).unwrap();
    let a = dir.join("a");
    let r = run(&model, &tok, &suite, &a, &opts(serde_json::json!({"k": 2}))).unwrap();
    assert_eq!((r.overall.n, r.generated, r.tasks.len()), (6, 6, 3));
    for f in ["predictions.jsonl", "scores.json", "report.md", "settings.json"] {
        assert!(a.join(f).is_file(), "{f}");
    }
    let first = read_scored(&a.join("predictions.jsonl")).unwrap();
    assert!(first.iter().all(|s| s.scores.contains_key("rougeL") && s.scores.contains_key("exact_match")));

    // Killed mid-write: three whole lines and a partial one are left.
    let text = std::fs::read_to_string(a.join("predictions.jsonl")).unwrap();
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(a.join("predictions.jsonl"), format!("{}\n{{\"id\": \"tas", kept.join("\n"))).unwrap();
    let r = run(&model, &tok, &suite, &a, &opts(serde_json::json!({"k": 2}))).unwrap();
    assert_eq!((r.overall.n, r.generated), (6, 3), "only the missing examples are generated");
    let again = read_scored(&a.join("predictions.jsonl")).unwrap();
    let ids = |v: &[instill::eval::Scored]| v.iter().map(|s| s.id.clone()).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(ids(&again), ids(&first));
    let e = run(&model, &tok, &suite, &a, &opts(serde_json::json!({"k": 0}))).unwrap_err().to_string();
    assert!(e.contains("other settings"), "{e}");

    // The same instances without demonstrations, then the comparison.
    let b = dir.join("b");
    run(&model, &tok, &SuperNi::new(&data, 0, None, 0).unwrap(), &b, &opts(serde_json::json!({"k": 0}))).unwrap();
    let c = compare(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(c.flips[0].common, 6);
    assert_eq!(c.tasks.len(), 3);
    c.write(&dir.join("cmp")).unwrap();
    for f in ["compare.md", "compare.json", "categories.png"] {
        assert!(dir.join("cmp").join(f).is_file(), "{f}");
    }
    assert!(std::fs::read_to_string(dir.join("cmp/compare.md")).unwrap().contains("negative flips"));
}

#[test]
fn per_task_subset_is_seeded_and_fixed() {
    let dir = common::tmpdir("eval-subset");
    let data = small_eval(&dir, 4, 5);
    let pick = |seed| SuperNi::new(&data, 2, Some(2), seed).unwrap().items().unwrap().iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(pick(0).len(), 8);
    assert_eq!(pick(0), pick(0));
    assert_ne!(pick(0), pick(1));
}

#[test]
fn robustness_runs_every_wording() {
    let dir = common::tmpdir("eval-robust");
    let (model, tok) = common::load("tiny-random-llama", false);
    let data = small_eval(&dir, 2, 1);
    let task = serde_json::from_str::<serde_json::Value>(std::fs::read_to_string(&data).unwrap().lines().next().unwrap()).unwrap()["task"].as_str().unwrap().to_string();
    std::fs::write(dir.join("alts.json"), serde_json::json!({ &task: ["Do the task.", "Answer the question below."] }).to_string()).unwrap();
    let alts = robustness::read_alternatives(&dir.join("alts.json")).unwrap();
    let r = robustness::run(&model, &tok, &SuperNi::new(&data, 1, None, 0).unwrap(), &alts, &dir.join("r"), &opts(serde_json::json!({}))).unwrap();
    assert_eq!(r.overall.scores.len(), 3);
    assert_eq!(r.tasks.keys().collect::<Vec<_>>(), vec![&task]);
    assert!(dir.join("r/variant-2/predictions.jsonl").is_file() && dir.join("r/robustness.md").is_file());
}

#[test]
fn gsm8k_and_generic_suites() {
    let dir = common::tmpdir("eval-other");
    let (model, tok) = common::load("tiny-random-llama", false);
    let g = Gsm8k { path: shared("sft/gsm8k_train.jsonl"), k_shot: 1, shots: Some(shared("sft/gsm8k_train.jsonl")), limit: Some(2) };
    assert!(g.items().unwrap()[0].prompt.starts_with("Question: "));
    let r = run(&model, &tok, &g, &dir.join("g"), &opts(serde_json::json!({}))).unwrap();
    assert_eq!(r.overall.n, 2);
    assert!(r.overall.scores.contains_key("exact_match_strict"));
    let no_shots = Gsm8k { shots: None, ..g };
    assert!(no_shots.items().unwrap_err().to_string().contains("--shots"));

    std::fs::write(dir.join("p.jsonl"), "{\"prompt\": \"Say hi\", \"reference\": \"hi\"}\n{\"prompt\": \"2+2=\", \"references\": [\"4\", \"four\"]}\n").unwrap();
    let s = Generic { path: dir.join("p.jsonl"), metrics: vec!["cer".into()], limit: None, max_new_tokens: 4, stop: vec![] };
    let r = run(&model, &tok, &s, &dir.join("p"), &opts(serde_json::json!({}))).unwrap();
    assert_eq!((r.overall.n, r.overall.primary.as_str()), (2, "cer"));
    std::fs::write(dir.join("bad.jsonl"), "{\"prompt\": \"x\"}\n").unwrap();
    let bad = Generic { path: dir.join("bad.jsonl"), ..s };
    let e = bad.items().unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("line 1") && e.contains("reference"), "{e}");
}
