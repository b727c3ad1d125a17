//! Synthesis end to end on SmolLM2 (small counts): Magpie, Self-Instruct and
//! non-instructional halves write records that `data check` reads, with provenance and a
//! curation report; a rerun resumes from the stage files without regenerating; other
//! settings in the same place are refused. The judge counts every verdict, judges both
//! orders and resumes.
mod common;

use instill::synth::{self, Context, Example};
use std::path::Path;

fn shared(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

fn read(path: &Path) -> Vec<Example> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every record parses as instruction data (the reader `data check` and recipes use).
fn checks(path: &Path) {
    let loaded = instill::data::read::load(path, &Default::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!((loaded.format, loaded.records.len()), ("alpaca", read(path).len()));
}

#[test]
fn magpie_self_instruct_and_halves_on_smollm2() {
    let (model, tok) = common::load("smollm2-135m-instruct", false);
    let dir = common::tmpdir("synth");
    let cx = |n: usize, input: Option<std::path::PathBuf>, max: usize| Context {
        model: &model,
        tok: &tok,
        model_name: "smollm2-135m-instruct".into(),
        n,
        seed: 7,
        batch_size: 8,
        template: None,
        max_new_tokens: max,
        input,
        rounds: 1,
        curation: Default::default(),
        ensemble: vec![],
        progress: false,
    };
    // Magpie: the pre-query template is the user turn's opening.
    let (prefix, end) = synth::magpie::pre_query(&tok, None).unwrap();
    assert!(prefix.ends_with("<|im_start|>user\n"), "{prefix:?}");
    assert_eq!(end, "<|im_end|>");
    let out = dir.join("magpie.jsonl");
    let r = synth::synthesize(synth::method("magpie").unwrap(), &cx(8, None, 256), &out).unwrap();
    let got = read(&out);
    assert_eq!(got.len(), r.kept);
    assert_eq!(r.kept + r.dropped.values().sum::<usize>(), 8, "every candidate is kept or counted: {r:?}");
    // What is kept depends on what was sampled (a 135M model's greedy answers often run
    // to the token limit); the mechanics do not.
    let mut kept = got.len();
    for e in &got {
        assert_eq!(e.provenance.method, "magpie");
        assert!(!e.instruction.contains("<|im_end|>") && !e.instruction.is_empty() && !e.output.is_empty());
    }
    if !got.is_empty() {
        checks(&out);
    }
    // A rerun regenerates nothing (the stage files hold every generation) and writes the same.
    let stage = std::fs::read_to_string(dir.join("magpie.jsonl.work/instructions.jsonl")).unwrap();
    let t = std::time::Instant::now();
    synth::synthesize(synth::method("magpie").unwrap(), &cx(8, None, 256), &out).unwrap();
    assert!(t.elapsed().as_secs_f64() < 2.0);
    assert_eq!(read(&out), got);
    assert_eq!(std::fs::read_to_string(dir.join("magpie.jsonl.work/instructions.jsonl")).unwrap(), stage);
    // Other settings into the same place are refused.
    let err = synth::synthesize(synth::method("magpie").unwrap(), &Context { seed: 8, ..cx(8, None, 256) }, &out).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");

    // Self-Instruct from the paper's seed tasks.
    let out = dir.join("si.jsonl");
    let r = synth::synthesize(synth::method("self-instruct").unwrap(), &cx(6, Some(shared("eval/seed_tasks.jsonl")), 160), &out).unwrap();
    let got = read(&out);
    assert_eq!(got.len(), r.kept);
    kept += got.len();
    let seeds = synth::self_instruct::read_seed_tasks(&shared("eval/seed_tasks.jsonl")).unwrap();
    let mut pool = synth::rouge_filter::Pool::default();
    seeds.iter().for_each(|s| pool.add(&s.instruction));
    let mut novel = std::collections::BTreeSet::new();
    for e in &got {
        assert!(e.provenance.prompt_id.starts_with("request-"), "{:?}", e.provenance);
        novel.insert(e.instruction.clone());
    }
    assert!(novel.len() <= 6);
    for inst in &novel {
        assert!(pool.admit(inst, 0.7), "{inst:?} is too close to a seed task or another instruction");
    }
    if !got.is_empty() {
        checks(&out);
    }

    // Halves: the first half of each text is the instruction.
    let text = dir.join("docs.txt");
    let doc = "The river rose all night and by morning the low fields were under water, so the farmers moved their animals to the church on the hill and waited for the rain to stop.";
    std::fs::write(&text, format!("{doc}\n\nToo short.\n")).unwrap();
    let out = dir.join("halves.jsonl");
    let r = synth::synthesize(synth::method("halves").unwrap(), &cx(5, Some(text), 200), &out).unwrap();
    assert_eq!(r.dropped.get("document under 16 words"), Some(&1), "{r:?}");
    for e in read(&out) {
        assert!(doc.starts_with(&e.instruction) && e.instruction.len() < doc.len());
        kept += 1;
    }
    // A method needs its input.
    let err = synth::synthesize(synth::method("halves").unwrap(), &cx(5, None, 200), &dir.join("none.jsonl")).unwrap_err().to_string();
    assert!(err.contains("--input"), "{err}");
    let err = synth::method("nope").err().expect("an unknown method is an error").to_string();
    assert!(err.contains("magpie, self-instruct, evol, halves, refusal"), "{err}");

    // R-Tuning: every question is kept, split by whether the model knows the answer.
    let qa = dir.join("qa.jsonl");
    std::fs::write(
        &qa,
        "{\"question\": \"What is the capital of France?\", \"answer\": [\"Paris\"]}\n{\"question\": \"What was the name of the dog of the third mayor of Tbilisi?\", \"answer\": \"Qwerty Zxcv\"}\n",
    )
    .unwrap();
    let out = dir.join("rtuning.jsonl");
    let r = synth::synthesize(synth::method("refusal").unwrap(), &cx(2, Some(qa), 48), &out).unwrap();
    assert_eq!((r.kept, r.counts.values().sum::<usize>()), (2, 2), "{r:?}");
    let got = read(&out);
    assert!(got[1].output.starts_with("Qwerty Zxcv\n\nAre you sure") && got[1].output.ends_with("I am unsure."), "{:?}", got[1]);
    assert!(got[0].output.starts_with("Paris"));
    kept += got.len();

    // Evol-Instruct: two rounds over two Alpaca instructions.
    let data = dir.join("alpaca.jsonl");
    std::fs::write(&data, "{\"instruction\": \"Name three fruits.\", \"input\": \"\", \"output\": \"Apple, pear, plum.\"}\n{\"instruction\": \"Explain what rain is.\", \"input\": \"\", \"output\": \"Water falling from clouds.\"}\n").unwrap();
    let out = dir.join("evol.jsonl");
    let r = synth::synthesize(synth::method("evol").unwrap(), &Context { rounds: 2, ..cx(2, Some(data.clone()), 160) }, &out).unwrap();
    assert_eq!(r.kept + r.dropped.values().sum::<usize>(), 4, "two instructions, two rounds: {r:?}");
    for e in read(&out) {
        assert!(e.provenance.prompt_id.starts_with("round"), "{:?}", e.provenance);
        kept += 1;
    }
    let err = synth::synthesize(synth::method("magpie").unwrap(), &Context { rounds: 2, ..cx(2, None, 160) }, &dir.join("m2.jsonl")).unwrap_err().to_string();
    assert!(err.contains("rounds are for evol"), "{err}");
    assert!(kept > 0, "no method kept anything");
}

#[test]
fn judge_counts_every_verdict_swaps_orders_and_resumes_on_smollm2() {
    use instill::eval::judge::{self, JudgeOptions};
    use std::collections::HashMap;
    let (model, tok) = common::load("smollm2-135m-instruct", false);
    let dir = common::tmpdir("judge");
    let qs = judge::read_questions(&shared("eval/user_oriented_instructions.jsonl")).unwrap()[..2].to_vec();
    let answers: HashMap<String, String> = qs.iter().map(|q| (q.id.clone(), "I do not know.".to_string())).collect();
    let reference: HashMap<String, String> = qs.iter().map(|q| (q.id.clone(), q.reference.clone().unwrap())).collect();
    let opts = JudgeOptions { settings: serde_json::json!({"judge": "smollm2", "test": 1}), template: None, batch_size: 4, max_new_tokens: 48, progress: false };
    let out = dir.join("pair");
    let js = judge::pairwise(&model, &tok, &qs, &answers, &reference, &out, &opts).unwrap();
    let s = judge::summarize(&js);
    assert_eq!((s.judged, s.outcomes.values().sum::<usize>()), (2, 2), "{s:?}");
    assert_eq!(s.unparsed, s.outcomes.get("unparsed").copied().unwrap_or(0));
    judge::write_report(&out, &js, &s).unwrap();
    let lines = std::fs::read_to_string(out.join("judgments.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4, "each question is judged in both orders");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("Win rate") || s.win_rate.is_none());
    // A rerun regenerates nothing and gives the same outcomes.
    let t = std::time::Instant::now();
    let again = judge::pairwise(&model, &tok, &qs, &answers, &reference, &out, &opts).unwrap();
    assert!(t.elapsed().as_secs_f64() < 2.0);
    assert_eq!(again.iter().map(|j| j.outcome).collect::<Vec<_>>(), js.iter().map(|j| j.outcome).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(out.join("judgments.jsonl")).unwrap(), lines);
    // Another judge's settings into the same report are refused.
    let other = JudgeOptions { settings: serde_json::json!({"judge": "other"}), ..opts };
    let err = judge::pairwise(&model, &tok, &qs, &answers, &reference, &out, &other).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
    let opts = JudgeOptions { settings: serde_json::json!({"judge": "smollm2", "test": 1}), ..other };
    // Single grading: a rating or an unparsed judgment for each.
    let js = judge::single(&model, &tok, &qs, &reference, true, &dir.join("single"), &opts).unwrap();
    assert!(js.iter().all(|j| j.rating.is_some() != j.unparsed.is_some()));
    // A question without an answer is an error naming it.
    let err = judge::single(&model, &tok, &qs, &HashMap::new(), false, &dir.join("none"), &opts).unwrap_err().to_string();
    assert!(err.contains(&qs[0].id), "{err}");
}

#[test]
fn ensemble_keeps_an_agreed_output_on_smollm2_and_qwen() {
    // SmolLM2 writes Magpie examples; Qwen2.5-Coder-0.5B answers each too, and every kept
    // example carries the output one of the two models wrote, chosen by the consensus rule.
    use instill::synth::ensemble::{consensus, Choice, Member, MIN_AGREEMENT};
    let (model, tok) = common::load("smollm2-135m-instruct", false);
    let (qm, qt) = common::load("qwen2.5-coder-0.5b-instruct", false);
    let dir = common::tmpdir("synth-ensemble");
    let base = Context {
        model: &model,
        tok: &tok,
        model_name: "smollm2-135m-instruct".into(),
        n: 8,
        seed: 3,
        batch_size: 8,
        template: None,
        max_new_tokens: 256,
        input: None,
        rounds: 1,
        curation: Default::default(),
        ensemble: vec![],
        progress: false,
    };
    let alone = synth::synthesize(synth::method("magpie").unwrap(), &base, &dir.join("alone.jsonl")).unwrap();
    let cx = Context { ensemble: vec![Member { name: "qwen2.5-coder-0.5b-instruct".into(), model: &qm, tok: &qt }], ..base };
    let out = dir.join("ensemble.jsonl");
    let r = synth::synthesize(synth::method("magpie").unwrap(), &cx, &out).unwrap();
    assert!(alone.kept > 0, "{alone:?}");
    if r.kept > 0 {
        checks(&out);
    }
    let mine: std::collections::HashMap<String, Example> = read(&dir.join("alone.jsonl")).into_iter().map(|e| (e.provenance.prompt_id.clone(), e)).collect();
    let theirs: Vec<synth::Generated> = instill::decode::jobs::read_records(&dir.join("ensemble.jsonl.work/ensemble-0.jsonl")).unwrap();
    assert_eq!(theirs.len(), alone.kept, "the member answers every example the method kept");
    let voted: usize = r.counts.iter().filter(|(k, _)| k.starts_with("ensemble: output from")).map(|(_, n)| n).sum();
    let dropped: usize = r.dropped.iter().filter(|(k, _)| k.starts_with("ensemble:")).map(|(_, n)| n).sum();
    assert_eq!((voted, voted + dropped), (r.kept, alone.kept), "{r:?}");
    for e in read(&out) {
        let own = &mine[&e.provenance.prompt_id].output;
        let other = theirs.iter().find(|g| g.id == e.provenance.prompt_id).unwrap();
        let other_text = if other.finished { other.text.trim() } else { "" };
        let want = match consensus(&[own, other_text], MIN_AGREEMENT) {
            Choice::Exact(i) | Choice::Agreement(i) => i,
            c => panic!("{c:?} was kept"),
        };
        assert_eq!(e.output, [own.as_str(), other_text][want]);
        assert_eq!(e.provenance.output_model.as_deref(), Some(["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"][want]));
    }
    // Another ensemble into the same place is refused.
    let err = synth::synthesize(synth::method("magpie").unwrap(), &Context { ensemble: vec![], ..cx }, &out).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn judge_rates_conversations_as_an_indicator_on_smollm2() {
    use instill::data::{Conversation, Message};
    use instill::eval::judge::{self, JudgeOptions};
    let (model, tok) = common::load("smollm2-135m-instruct", false);
    let dir = common::tmpdir("judge-rate");
    let conv = |q: &str, a: &str| Conversation { messages: vec![Message::new("system", "Be brief."), Message::new("user", q), Message::new("assistant", a)], tools: None };
    let (c1, c2, c3) = (conv("What is 2 + 2?", "4"), conv("Name a colour.", "Blue."), Conversation { messages: vec![Message::new("user", "no answer")], tools: None });
    let convs = vec![("a".to_string(), &c1), ("b".to_string(), &c2), ("c".to_string(), &c3)];
    let opts = JudgeOptions { settings: serde_json::json!({"judge": "smollm2"}), template: None, batch_size: 4, max_new_tokens: 48, progress: false };
    let got = judge::rate_conversations(&model, &tok, &convs, &dir, &opts).unwrap();
    assert_eq!(got.len(), 2, "the conversation without a response is left out: {got:?}");
    assert!(got.values().all(|r| r.is_none_or(|r| (1.0..=10.0).contains(&r))), "{got:?}");
    let lines = std::fs::read_to_string(dir.join("judgments.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "one judgment per rated conversation");
    // Resumed: the same ratings, nothing regenerated.
    assert_eq!(judge::rate_conversations(&model, &tok, &convs, &dir, &opts).unwrap(), got);
    assert_eq!(std::fs::read_to_string(dir.join("judgments.jsonl")).unwrap(), lines);
}
