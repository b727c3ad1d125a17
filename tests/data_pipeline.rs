//! Data: every layout loads, problems name file:line and field, loss masks follow the
//! template's turns at token boundaries, and packing changes no example's loss.
mod common;

use candle_core::D;
use common::{fixture, load, read_json};
use instill::data::pack::{pack, padded, Rows};
use instill::data::read::{load as read, ReadOptions};
use instill::data::render::{render, LossOn};
use instill::data::{Conversation, Example, Message};
use instill::model::LogitsFor;

fn load_fixture(name: &str) -> instill::data::read::Loaded {
    read(&fixture(&format!("data/{name}")), &ReadOptions::default()).unwrap()
}

#[test]
fn every_layout_is_detected_and_loads() {
    let cases = [
        ("alpaca.json", "alpaca", 3),
        ("sharegpt_tools.json", "sharegpt", 3),
        ("messages.jsonl", "messages", 3),
        ("gsm8k.jsonl", "gsm8k", 3),
        ("sharegpt_preference.json", "sharegpt-preference", 3),
        ("messages_preference.jsonl", "messages-preference", 2),
        ("trl_preference.jsonl", "trl-preference", 2),
        ("hh_rlhf.jsonl", "hh-rlhf", 3),
        ("kto.json", "kto", 3),
        ("superni_eval.jsonl", "superni", 3),
        ("superni_task.json", "superni-task", 3),
    ];
    for (file, format, n) in cases {
        let l = load_fixture(file);
        assert_eq!(l.format, format, "{file}");
        assert!(l.problems.is_empty(), "{file}: {:?}", l.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        assert_eq!(l.records.len(), n, "{file}");
    }
    // Tool calls survive: the glaive function_call turn becomes an assistant tool call.
    let l = load_fixture("sharegpt_tools.json");
    let Example::Sft(c) = &l.records[0].example else { panic!() };
    assert!(c.tools.is_some() && c.messages.iter().any(|m| m.tool_calls.is_some() && m.role == "assistant"));
    assert!(c.messages.iter().any(|m| m.role == "tool"));
}

#[test]
fn all_shared_data_files_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !root.exists() {
        eprintln!("skipped: ../shared/data is not here (a fresh clone has no shared/)");
        return;
    }
    let mut files = vec![];
    for dir in ["sft", "preference", "superni", "superni/tasks"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 150);
    for f in files {
        let l = read(&f, &ReadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!l.records.is_empty(), "{}", f.display());
        // The only problems in the shared data are real ones in hh-rlhf (empty or doubled turns).
        if !f.to_string_lossy().contains("hh_rlhf") {
            assert!(l.problems.is_empty(), "{}: {}", f.display(), l.problems[0]);
        }
    }
}

#[test]
fn problems_name_line_field_and_what_was_found() {
    let l = load_fixture("bad.jsonl");
    let msgs: Vec<String> = l.problems.iter().map(|p| p.to_string()).collect();
    let file = fixture("data/bad.jsonl").display().to_string();
    let expect = [
        format!("{file}:2: field \"messages[1].role\": expected one of system|user|assistant|tool, got \"gpt\""),
        format!("{file}:3: field \"messages[1].content\": empty response"),
        format!("{file}:4: field \"messages[0].role\": \"assistant\" cannot follow the start"),
        format!("{file}:5: invalid JSON"),
        format!("{file}:6: field \"messages\": expected a list of messages"),
    ];
    for e in &expect {
        assert!(msgs.iter().any(|m| m.starts_with(e.as_str())), "missing {e:?} in {msgs:#?}");
    }
    assert_eq!(l.records.len(), 1, "the one good line still loads");
    let l = load_fixture("bad_utf8.jsonl");
    assert!(l.problems[0].to_string().contains(":2: not valid UTF-8"), "{}", l.problems[0]);
}

fn conv(turns: &[(&str, &str)]) -> Conversation {
    Conversation { messages: turns.iter().map(|(r, c)| Message::new(r, *c)).collect(), tools: None }
}

/// The trained tokens decode to exactly the assistant turns (with their end marker).
#[test]
fn masks_cover_assistant_turns_exactly() {
    for (family, id, end) in [("smollm2", "smollm2-135m-instruct", "<|im_end|>"), ("qwen2", "qwen2.5-coder-0.5b-instruct", "<|im_end|>")] {
        let fx = read_json(&format!("chat/{family}.json"));
        let s = common::source(id);
        let tok = instill::Tokenizer::load(&s).unwrap();
        let tmpl = tok.template(None).unwrap();
        let c = conv(&[("user", "2+2?"), ("assistant", "4"), ("user", "And 3+3?"), ("assistant", "6")]);
        let r = render(&tok, &tmpl, &c, LossOn::Assistant).unwrap();
        // The text is the reference rendering of the same conversation.
        let same = fx["cases"].as_array().unwrap().iter().find(|k| k["messages"].as_array().unwrap().len() == 4).unwrap();
        assert_eq!(r.text, same["rendered"].as_str().unwrap(), "{family}");
        let pieces: Vec<String> = runs(&r.ids, &r.mask).iter().map(|ids| tok.decode(ids, false).unwrap()).collect();
        assert_eq!(pieces, vec![format!("4{end}"), format!("6{end}")], "{family}");
        let last = render(&tok, &tmpl, &c, LossOn::LastTurn).unwrap();
        let pieces: Vec<String> = runs(&last.ids, &last.mask).iter().map(|ids| tok.decode(ids, false).unwrap()).collect();
        assert_eq!(pieces, vec![format!("6{end}")]);
        let all = render(&tok, &tmpl, &c, LossOn::Everything).unwrap();
        assert!(all.mask.iter().all(|&m| m));
        let resp = render(&tok, &tmpl, &c, LossOn::ResponseOnly).unwrap();
        assert_eq!(resp.text, format!("4{end}6{end}"));
    }
}

/// Contiguous runs of masked tokens.
fn runs(ids: &[u32], mask: &[bool]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = vec![];
    for (i, (&t, &m)) in ids.iter().zip(mask).enumerate() {
        if m {
            if i == 0 || !mask[i - 1] {
                out.push(vec![]);
            }
            out.last_mut().unwrap().push(t);
        }
    }
    out
}

/// Mean target loss of every example in `rows`, from one forward pass.
fn example_losses(m: &instill::CausalLm, rows: &Rows) -> std::collections::BTreeMap<usize, f32> {
    let logits = m.forward(&rows.batch, None, LogitsFor::All).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for (r, exs) in rows.examples.iter().enumerate() {
        let lp = logp.get(r).unwrap();
        let seg = &rows.batch.segments[r];
        for (s, &ex) in exs.iter().enumerate() {
            let (mut sum, mut n) = (0f32, 0);
            #[allow(clippy::needless_range_loop)] // i indexes four parallel arrays
            for i in 1..seg.len() {
                if seg[i] == s as u32 && rows.targets[r][i] {
                    let t = rows.batch.tokens[r][i] as usize;
                    sum -= lp.get(i - 1).unwrap().get(t).unwrap().to_scalar::<f32>().unwrap();
                    n += 1;
                }
            }
            out.insert(ex, sum / n as f32);
        }
    }
    out
}

#[test]
fn packing_changes_no_example_loss() {
    let (m, tok) = load("smollm2-135m-instruct", true);
    let tmpl = tok.template(None).unwrap();
    let convs = [
        conv(&[("user", "Name a fruit."), ("assistant", "Apple.")]),
        conv(&[("system", "Be brief."), ("user", "Capital of Italy?"), ("assistant", "Rome.")]),
        conv(&[("user", "Count to three."), ("assistant", "One, two, three."), ("user", "Backwards?"), ("assistant", "Three, two, one.")]),
    ];
    let rendered: Vec<_> = convs.iter().map(|c| render(&tok, &tmpl, c, LossOn::Assistant).unwrap()).collect();
    let alone = example_losses(&m, &padded(&rendered, tok.eos_id.unwrap()));
    let packed_rows = pack(&rendered, 256, tok.eos_id.unwrap());
    assert_eq!(packed_rows.batch.tokens.len(), 1, "all three fit one row");
    let packed = example_losses(&m, &packed_rows);
    for (ex, l) in &alone {
        let d = (l - packed[ex]).abs();
        assert!(d < 1e-4, "example {ex}: loss {l} alone vs {} packed", packed[ex]);
        assert!(l.is_finite() && *l > 0.0);
    }
}

/// Converting to each layout (messages through Parquet) and reading back gives the same conversations.
#[test]
fn convert_roundtrips() {
    use instill::data::write::{write_jsonl, Layout};
    let dir = common::tmpdir("convert");
    for (file, layouts) in [
        ("sharegpt_tools.json", vec![Layout::Messages, Layout::Sharegpt]),
        ("alpaca.json", vec![Layout::Messages, Layout::Sharegpt, Layout::Alpaca]),
        ("sharegpt_preference.json", vec![Layout::Messages, Layout::Sharegpt]),
        ("kto.json", vec![Layout::Messages]),
    ] {
        let orig = load_fixture(file);
        for layout in layouts {
            let ext = if layout == Layout::Messages { "parquet" } else { "jsonl" };
            let out = dir.join(format!("{file}-{layout:?}.{ext}"));
            write_jsonl(&out, &orig.records, layout).unwrap();
            let back = read(&out, &ReadOptions::default()).unwrap();
            assert!(back.problems.is_empty(), "{file} as {layout:?}: {}", back.problems[0]);
            let a: Vec<_> = orig.records.iter().map(|r| &r.example).collect();
            let b: Vec<_> = back.records.iter().map(|r| &r.example).collect();
            assert_eq!(a, b, "{file} as {layout:?}");
        }
    }
}

#[test]
fn mixtures_are_seeded_and_exclude_held_out_data() {
    use instill::data::mix::{mix, Mixture};
    let dir = common::tmpdir("mix");
    let task: serde_json::Value = read_json("data/superni_task.json");
    let first_id = task["Instances"][0]["id"].as_str().unwrap().to_string();
    std::fs::write(dir.join("eval.jsonl"), format!("{{\"id\": \"{first_id}\"}}\n")).unwrap();
    let data = fixture("data");
    let yaml = |held_out: &str| {
        format!("seed: 7\nsources:\n  - path: {d}/superni_task.json\n    exclude: [eval.jsonl]\n    held_out_tasks: [{held_out}]\n  - path: {d}/alpaca.json\n    max: 2\n", d = data.display())
    };
    std::fs::write(dir.join("m.yaml"), yaml("none")).unwrap();
    let m = Mixture::from_file(&dir.join("m.yaml")).unwrap();
    let a = mix(&m, &dir).unwrap();
    let b = mix(&m, &dir).unwrap();
    let ex = |x: &instill::data::mix::Mixed| x.records.iter().map(|(_, r)| r.example.clone()).collect::<Vec<_>>();
    assert_eq!(ex(&a), ex(&b), "same seed, same mixture");
    assert_eq!(a.records.len(), 2 + 2, "3 task instances minus the held-out one, plus 2 of alpaca");
    let inputs: Vec<String> = a
        .records
        .iter()
        .filter_map(|(_, r)| match &r.example {
            Example::Sft(c) => Some(c.messages[0].content.clone()),
            _ => None,
        })
        .collect();
    let held = task["Instances"][0]["input"].as_str().unwrap();
    assert!(inputs.iter().all(|i| !i.ends_with(&format!("Input: {held}.\nOutput: ")) && !i.contains(&format!("Input: {held}\nOutput"))), "held-out instance leaked");
    std::fs::write(dir.join("m.yaml"), yaml("superni_task")).unwrap();
    let c = mix(&Mixture::from_file(&dir.join("m.yaml")).unwrap(), &dir).unwrap();
    assert_eq!(c.records.len(), 2, "a held-out task contributes nothing");
    std::fs::write(dir.join("bad.yaml"), "seed: 1\nsauces: []\n").unwrap();
    let err = Mixture::from_file(&dir.join("bad.yaml")).err().unwrap().to_string();
    assert!(err.contains("sauces"), "unknown keys are errors: {err}");
}

#[test]
fn perplexity_prefers_natural_responses() {
    use instill::data::select::response_losses;
    let (m, tok) = load("smollm2-135m-instruct", false);
    let tmpl = tok.template(None).unwrap();
    let q = "What is the capital of France?";
    let good = render(&tok, &tmpl, &conv(&[("user", q), ("assistant", "The capital of France is Paris.")]), LossOn::Assistant).unwrap();
    let bad = render(&tok, &tmpl, &conv(&[("user", q), ("assistant", "zxq vlorp blarg qqq mmm fnord.")]), LossOn::Assistant).unwrap();
    let losses = response_losses(&m, &[good.clone(), bad.clone()], tok.eos_id.unwrap(), 2).unwrap();
    assert!(losses[0] + 2.0 < losses[1], "{losses:?}");
    // Batching does not change an example's loss.
    let alone = response_losses(&m, &[good], tok.eos_id.unwrap(), 1).unwrap();
    assert!((alone[0] - losses[0]).abs() < 1e-3, "{} vs {}", alone[0], losses[0]);
}

#[test]
fn tokenized_cache_is_reused_and_keyed_by_options() {
    use instill::data::cache::tokenized;
    let dir = common::tmpdir("tokcache");
    let tok = instill::Tokenizer::load(&common::source("smollm2-135m-instruct")).unwrap();
    let tmpl = tok.template(None).unwrap();
    let file = fixture("data/alpaca.json");
    let opts = ReadOptions::default();
    let (a, hit_a) = tokenized(&file, &tok, &tmpl, LossOn::Assistant, &opts, &dir).unwrap();
    let (b, hit_b) = tokenized(&file, &tok, &tmpl, LossOn::Assistant, &opts, &dir).unwrap();
    assert!(!hit_a && hit_b, "second read comes from the cache");
    assert_eq!(a, b);
    let (c, hit_c) = tokenized(&file, &tok, &tmpl, LossOn::Everything, &opts, &dir).unwrap();
    assert!(!hit_c, "another loss policy is another cache entry");
    assert_ne!(a, c);
    // A corrupt entry is not trusted: it is rebuilt.
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(e.unwrap().path(), b"INSTILLR1garbage").unwrap();
    }
    let (d, hit_d) = tokenized(&file, &tok, &tmpl, LossOn::Assistant, &opts, &dir).unwrap();
    assert!(!hit_d);
    assert_eq!(a, d);
}

#[test]
fn rendered_chats_get_exactly_one_bos_when_the_model_wants_it() {
    // Gemma wants BOS: its own template writes it, the builtin alpaca one does not.
    let tok = common::load_tokenizer("gemma3-270m");
    let bos = tok.bos_id.unwrap();
    let c = conv(&[("user", "Hi"), ("assistant", "Hello")]);
    for name in ["alpaca", "gemma"] {
        let r = render(&tok, &tok.template(Some(name)).unwrap(), &c, LossOn::Assistant).unwrap();
        assert_eq!(r.ids[0], bos, "{name}: starts with BOS");
        assert_ne!(r.ids[1], bos, "{name}: one BOS only");
        assert!(!r.mask[0]);
    }
    // SmolLM2 does not: nothing is prepended.
    let smol = common::load_tokenizer("smollm2-135m-instruct");
    let r = render(&smol, &smol.template(None).unwrap(), &c, LossOn::Assistant).unwrap();
    assert_eq!(r.ids, smol.encode(&r.text, false).unwrap());
}
