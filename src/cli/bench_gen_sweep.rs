//! `instill bench generate --sweep DIR`: scaling curves against llama.cpp. Prompt
//! processing over prompt lengths 256-2048 (one sequence), and batched decoding over 1-16
//! sequences of 128 prompt tokens, each configuration in its own process (ours and the
//! peer's), so each peak RSS is its own; a table and PNG plots.
use super::bench::{prompt_ids, run_peer, GenBench};
use super::bench_train::named;
use anyhow::{bail, Context, Result};
use instill::{hub, CausalLm, LoadOptions, Tokenizer};
use std::path::Path;
use std::process::Command;

const LENGTHS: [usize; 4] = [256, 512, 1024, 2048];
const BATCHES: [usize; 5] = [1, 2, 4, 8, 16];
const BATCH_PROMPT: usize = 128;

/// The chat prompt's ids repeated to `n` tokens, starting `offset` tokens in (so rows differ).
fn cycled(base: &[u32], n: usize, offset: usize) -> Vec<u32> {
    (0..n).map(|i| base[(i + offset) % base.len()]).collect()
}

/// The token ids of one configuration (`len:N` or `batch:B`): the same for both engines.
fn prompts_for(tok: &Tokenizer, point: &str) -> Result<Vec<Vec<u32>>> {
    let base = prompt_ids(tok)?;
    let (axis, n) = point.split_once(':').context("worker point axis:N")?;
    let n: usize = n.parse().context("worker point axis:N")?;
    Ok(match axis {
        "len" => vec![cycled(&base, n, 0)],
        "batch" => (0..n).map(|r| cycled(&base, BATCH_PROMPT, 7 * r)).collect(),
        a => bail!("unknown sweep axis {a}"),
    })
}

/// Run one configuration here and print its JSON (the hidden `--worker` mode).
pub fn worker(a: &GenBench, point: &str) -> Result<()> {
    let source = hub::resolve(&a.model[0], true)?;
    let model = CausalLm::load(&source, &LoadOptions::default())?;
    let prompts = prompts_for(&Tokenizer::load(&source)?, point)?;
    let s = if prompts.len() == 1 { instill::bench::generation_speed(&model, &prompts[0], a.n_gen, a.reps)? } else { instill::bench::batched_generation_speed(&model, &prompts, a.n_gen, a.reps)? };
    let mut v = serde_json::to_value(&s)?;
    v["peak_rss_mib"] = serde_json::json!(super::bench_train::peak_rss_mib());
    println!("{v}");
    Ok(())
}

fn ours(a: &GenBench, model: &str, point: &str) -> Result<serde_json::Value> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--threads", &rayon::current_num_threads().to_string(), "bench", "generate", "-m", model, "--worker", point])
        .args(["--n-gen", &a.n_gen.to_string(), "--reps", &a.reps.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("instill generate worker {point} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn peer(a: &GenBench, gguf: &Path, prompts: &[Vec<u32>]) -> Result<Option<serde_json::Value>> {
    if a.peer_python == "none" {
        return Ok(None);
    }
    let threads = rayon::current_num_threads();
    let v = if prompts.len() == 1 {
        let req = serde_json::json!({"gguf": gguf, "ids": prompts[0], "n_gen": a.n_gen, "reps": a.reps, "threads": threads});
        run_peer(&a.peer_python, "llamacpp_gen.py", &req, "llama.cpp peer (install llama-cpp-python)")?
    } else {
        let req = serde_json::json!({"gguf": gguf, "prompts": prompts, "n_gen": a.n_gen, "reps": a.reps, "threads": threads});
        run_peer(&a.peer_python, "llamacpp_batch.py", &req, "llama.cpp batched peer (install llama-cpp-python)")?
    };
    Ok(Some(v))
}

type Series = Vec<(String, Vec<(f64, f64)>)>;

fn push(series: &mut Series, name: &str, x: f64, y: f64) {
    match series.iter_mut().find(|(n, _)| n == name) {
        Some((_, pts)) => pts.push((x, y)),
        None => series.push((name.to_string(), vec![(x, y)])),
    }
}

/// One axis of one model: rows of the table, and the points of its plots.
fn axis(a: &GenBench, m: &str, axis: &str, tok: &Tokenizer, gguf: &Path, plots: &mut [Series; 3]) -> Result<()> {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let xs: Vec<usize> = if axis == "len" { LENGTHS.to_vec() } else { BATCHES.to_vec() };
    for x in xs {
        let point = format!("{axis}:{x}");
        let prompts = prompts_for(tok, &point)?;
        let us = ours(a, m, &point)?;
        let them = peer(a, gguf, &prompts)?;
        let same = them.as_ref().and_then(|p| p["ids"].as_array().cloned()).map(|ids| {
            let mine = us["ids"].as_array().cloned().unwrap_or_default();
            format!("{}/{}", ids.iter().zip(&mine).take_while(|(a, b)| a == b).count(), mine.len())
        });
        let t = them.clone().unwrap_or(serde_json::json!({}));
        let (rows, plen) = (prompts.len(), prompts[0].len());
        println!(
            "| {m} | {rows} | {plen} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.0} | {:.0} | {} |",
            f(&us, "pp_tok_s"),
            f(&t, "pp_tok_s"),
            f(&us, "pp_tok_s") / f(&t, "pp_tok_s"),
            f(&us, "tg_tok_s"),
            f(&t, "tg_tok_s"),
            f(&us, "tg_tok_s") / f(&t, "tg_tok_s"),
            f(&us, "peak_rss_mib"),
            f(&t, "peak_rss_mib"),
            same.unwrap_or("-".into())
        );
        let (key, name) = (if axis == "len" { "pp_tok_s" } else { "tg_tok_s" }, m.split('-').take(2).collect::<Vec<_>>().join("-"));
        push(&mut plots[0], &format!("instill {name}"), x as f64, f(&us, key));
        push(&mut plots[1], &format!("instill {name}"), x as f64, f(&us, "peak_rss_mib"));
        if them.is_some() {
            push(&mut plots[0], &format!("llama.cpp {name}"), x as f64, f(&t, key));
            push(&mut plots[1], &format!("llama.cpp {name}"), x as f64, f(&t, "peak_rss_mib"));
            push(&mut plots[2], &name, x as f64, f(&us, key) / f(&t, key));
        }
    }
    Ok(())
}

pub fn sweep(a: &GenBench, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let int8 = if instill::model::kernels::qgemm::enabled() { "on" } else { "off" };
    println!("threads {}; {} decoded tokens per sequence; median of {} after a warm-up; int8 prefill {int8}; each configuration in its own process", rayon::current_num_threads(), a.n_gen, a.reps);
    println!("| model | sequences | prompt tokens each | instill pp tok/s | llama.cpp pp tok/s | pp ratio | instill tg tok/s (all sequences) | llama.cpp tg tok/s | tg ratio | instill peak RSS MiB | llama.cpp peak RSS MiB | same greedy tokens (sequence 0) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (ax, label, what) in [("len", "prompt tokens (one sequence)", "prompt processing tokens/s"), ("batch", "sequences decoded together (128 prompt tokens each)", "decode tokens/s, all sequences")]
    {
        let mut plots: [Series; 3] = Default::default();
        for m in &a.model {
            let source = hub::resolve(m, true)?;
            let hub::ModelSource::Gguf(path) = &source else { bail!("{m}: bench generate needs a GGUF file") };
            axis(a, m, ax, &Tokenizer::load(&source)?, path, &mut plots)?;
        }
        instill::plot::lines(&dir.join(format!("generate-{ax}-tokens.png")), &format!("bench generate: {what}"), label, "tokens/s", &named(&plots[0]))?;
        instill::plot::lines(&dir.join(format!("generate-{ax}-rss.png")), "bench generate: peak RSS", label, "MiB", &named(&plots[1]))?;
        if !plots[2].is_empty() {
            instill::plot::lines(&dir.join(format!("generate-{ax}-ratio.png")), &format!("bench generate: instill / llama.cpp, {what}"), label, "ratio", &named(&plots[2]))?;
        }
    }
    println!("plots: {}/generate-{{len,batch}}-{{tokens,rss,ratio}}.png", dir.display());
    Ok(())
}
