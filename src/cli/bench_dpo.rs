//! `instill bench dpo`: one epoch of DPO (sigmoid, beta 0.1; LoRA r 8, alpha 16, every
//! projection) over the same hh-rlhf pairs (our token ids, shared with the peers through
//! a JSON file) by instill, TRL's DPOTrainer and a plain PyTorch + PEFT loop
//! (bench/peers/dpo_torch.py), each in its own process: tokens/s over the epoch with the
//! reference log-probs included (our pre-pass, TRL's per-step reference forward or its
//! pre-pass, the loop's `disable_adapter()` forward), and peak RSS.
use anyhow::{bail, Context, Result};
use clap::Args;
use instill::data::cache::{Side, Tokenized};
use instill::train::data::{pack_rows, Set, Unit};
use instill::train::objective::{dpo, Ctx, Layout};
use instill::train::optim::{AdamW, AdamWConfig};
use instill::train::reference::{Pass, Reference};
use instill::train::step::objective_step;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Args)]
pub struct DpoBench {
    /// Pairs in the epoch (the first of data/preference/hh_train.jsonl that fit --max-len).
    #[arg(long, default_value_t = 24)]
    pairs: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    #[arg(long, default_value = "data/preference/hh_train.jsonl")]
    data: PathBuf,
    /// Python with torch, transformers, peft, trl for the peers; `none` skips them.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/ref-venv/bin/python")]
    peer_python: String,
    #[arg(long, default_value = "bench/peers/dpo_torch.py")]
    peer_script: PathBuf,
    /// Runs (default: all): instill (f32 base, packed), instill-padded, instill-qlora (Q4_1
    /// base), instill-qlora-gc (and gradient checkpointing), trl, trl-precompute, loop.
    #[arg(long, value_delimiter = ',', default_value = "trl,trl-precompute,loop,instill,instill-padded,instill-qlora,instill-qlora-gc")]
    modes: Vec<String>,
    /// Internal: run one instill configuration on this pairs file and print JSON.
    #[arg(long, hide = true)]
    worker: Option<String>,
    #[arg(long, hide = true)]
    pairs_file: Option<PathBuf>,
}

fn peak_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// The bench pairs as token ids: prompt, chosen completion, rejected completion.
fn make_pairs(a: &DpoBench, out: &Path) -> Result<usize> {
    let source = instill::hub::resolve("smollm2-135m-instruct", true)?;
    let tok = instill::Tokenizer::load(&source)?;
    let tmpl = tok.template(None)?;
    let opts = instill::data::read::ReadOptions::default();
    let (seqs, _) = instill::data::cache::tokenized(&a.data, &tok, &tmpl, Default::default(), &opts, &instill::data::cache::default_dir())?;
    let split = |t: &Tokenized| {
        let at = t.mask.iter().position(|&m| m).unwrap_or(t.ids.len());
        (t.ids[..at].to_vec(), t.ids[at..].to_vec())
    };
    let mut pairs = vec![];
    for p in seqs.chunks(2).filter(|p| p.len() == 2 && p.iter().all(|t| t.ids.len() <= a.max_len)) {
        let ((prompt, chosen), (prompt_r, rejected)) = (split(&p[0]), split(&p[1]));
        if prompt != prompt_r {
            continue;
        }
        pairs.push(serde_json::json!({"prompt": prompt, "chosen": chosen, "rejected": rejected}));
        if pairs.len() == a.pairs {
            break;
        }
    }
    let tokens: usize = pairs.iter().map(|p| 2 * p["prompt"].as_array().unwrap().len() + p["chosen"].as_array().unwrap().len() + p["rejected"].as_array().unwrap().len()).sum();
    std::fs::write(out, serde_json::to_vec(&serde_json::json!({"pad": tok.eos_id.unwrap_or(0), "pairs": pairs}))?)?;
    Ok(tokens)
}

/// The pairs file as a training set (chosen and rejected completions as targets).
fn read_set(path: &Path) -> Result<(Set, u32)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let mut seqs = vec![];
    let ids = |x: &serde_json::Value| -> Vec<u32> { x.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect() };
    for p in v["pairs"].as_array().context("pairs")? {
        let prompt = ids(&p["prompt"]);
        for (side, key) in [(Side::Chosen, "chosen"), (Side::Rejected, "rejected")] {
            let c = ids(&p[key]);
            let mask = std::iter::repeat_n(false, prompt.len()).chain(std::iter::repeat_n(true, c.len())).collect();
            seqs.push(Tokenized { side, record: 0, scores: vec![], ids: prompt.iter().chain(&c).copied().collect(), mask });
        }
    }
    let n = seqs.len() / 2;
    let units: Vec<Unit> = (0..n).map(|i| Unit { seqs: vec![2 * i, 2 * i + 1], kl: None }).collect();
    let unit_of = (0..2 * n).map(|i| i / 2).collect();
    Ok((Set { seqs, units, unit_of, file_of: vec![0; n], files: vec![path.to_path_buf()], world: vec![None; n] }, v["pad"].as_u64().unwrap_or(0) as u32))
}

/// One instill configuration: the reference pre-pass, then the epoch of steps.
fn worker(a: &DpoBench, mode: &str) -> Result<serde_json::Value> {
    use instill::peft::{lora::Lora, lora::LoraConfig, Adapter};
    let (set, pad) = read_set(a.pairs_file.as_ref().context("--pairs-file")?)?;
    let source = instill::hub::resolve("smollm2-135m-instruct", true)?;
    let dequantize = !mode.starts_with("instill-qlora");
    let mut model = instill::CausalLm::load(&source, &instill::LoadOptions { dequantize, ..Default::default() })?;
    model.checkpointing = mode.ends_with("-gc");
    let cfg = LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, target_modules: vec!["all-linear".into()], rslora: false };
    let lora = Lora::attach(&mut model, &cfg, 0)?;
    let params: Vec<_> = lora.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default());
    let layout = Layout { pad, max_len: a.max_len * 2, packing: mode != "instill-padded" };
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("instill-bench-dpo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // As the trainer does for a fresh LoRA (B = 0): the same numbers with the adapter off.
    let pass = Pass { model: &model, adapter: &lora, which: Reference::Base, layout, batch: 2 * a.batch, allowed: true };
    let refs = pass.run(&set, &dir.join("ref.bin"), "bench", &mut |_, _| {})?;
    let t_ref = t0.elapsed().as_secs_f64();
    let obj = dpo::Dpo { beta: 0.1, label_smoothing: 0.0, discopop_tau: 0.05, losses: vec![(dpo::LossType::Sigmoid, 1.0)] };
    lora.set_training(true);
    let mut losses = vec![];
    for chunk in (0..set.units.len()).collect::<Vec<_>>().chunks(a.batch) {
        let ids: Vec<usize> = chunk.iter().flat_map(|&u| set.units[u].seqs.clone()).collect();
        let rows = instill::data::pack::rows_from(pack_rows(&ids, |i| set.seqs[i].ids.len(), layout.max_len, layout.packing), pad, |i| (&set.seqs[i].ids, &set.seqs[i].mask));
        let ctx = Ctx { model: &model, set: &set, reference: Some(&refs), head: None, layout, adapter: Some(&lora) };
        let g = objective_step(&obj, &ctx, std::slice::from_ref(&rows), &params)?;
        opt.step(&g.grads, 5e-5)?;
        losses.push(g.loss);
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let tokens: usize = set.seqs.iter().map(|s| s.ids.len()).sum();
    Ok(serde_json::json!({"mode": mode, "tokens": tokens, "seconds": secs, "reference_seconds": t_ref, "tokens_per_s": tokens as f64 / secs,
        "peak_rss_mib": peak_rss_mib(), "mean_loss": losses.iter().sum::<f64>() / losses.len() as f64}))
}

pub fn run(a: DpoBench) -> Result<()> {
    if let Some(mode) = &a.worker {
        let r = instill::model::on_workers(|| worker(&a, mode))?;
        println!("{r}");
        return Ok(());
    }
    let pairs_file = std::env::temp_dir().join(format!("instill-bench-dpo-pairs-{}.json", std::process::id()));
    let tokens = make_pairs(&a, &pairs_file)?;
    let threads = rayon::current_num_threads();
    let exe = std::env::current_exe()?;
    let gguf = instill::hub::resolve("smollm2-135m-instruct", true)?;
    let one = |mode: &str| -> Result<serde_json::Value> {
        let mut c = if mode.starts_with("instill") {
            let mut c = Command::new(&exe);
            c.args(["--threads", &threads.to_string(), "bench", "dpo", "--worker", mode, "--batch", &a.batch.to_string(), "--max-len", &a.max_len.to_string()]);
            c.arg("--pairs-file").arg(&pairs_file);
            c
        } else {
            if a.peer_python == "none" {
                bail!("skipped");
            }
            let mut c = Command::new(&a.peer_python);
            let m = if mode == "loop" { "loop" } else { "trl" };
            c.arg(&a.peer_script).args(["--mode", m, "--batch", &a.batch.to_string(), "--threads", &threads.to_string()]);
            c.arg("--pairs").arg(&pairs_file).arg("--gguf").arg(gguf.path());
            if mode == "trl-precompute" {
                c.arg("--precompute");
            }
            c.env("TOKENIZERS_PARALLELISM", "false").env("HF_HUB_OFFLINE", "1").env("TRANSFORMERS_VERBOSITY", "error").env("PYTHONWARNINGS", "ignore");
            c
        };
        let out = c.output().with_context(|| format!("running {mode}"))?;
        if !out.status.success() {
            bail!("{mode} failed: {}", String::from_utf8_lossy(&out.stderr).lines().rev().take(5).collect::<Vec<_>>().join(" | "));
        }
        let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
        Ok(serde_json::from_str(&line)?)
    };
    println!("threads {threads}; {} pairs x 2 sequences, {tokens} tokens per epoch, {} pairs per step, LoRA r 8 every projection, fp32", a.pairs, a.batch);
    println!("| run | tokens/s | s (epoch, reference included) | peak RSS MiB | vs TRL tokens/s | vs TRL peak RSS |");
    println!("|---|---|---|---|---|---|");
    let mut trl: Option<(f64, f64)> = None;
    for mode in &a.modes {
        match one(mode) {
            Ok(r) => {
                let (tps, rss) = (r["tokens_per_s"].as_f64().unwrap_or(f64::NAN), r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN));
                if mode == "trl" {
                    trl = Some((tps, rss));
                }
                let (bt, br) = trl.unwrap_or((f64::NAN, f64::NAN));
                println!("| {mode} | {tps:.0} | {:.1} | {rss:.0} | {:.2}x | {:.2}x |", r["seconds"].as_f64().unwrap_or(f64::NAN), tps / bt, rss / br);
            }
            Err(e) => println!("| {mode} | - | - | - | {e} | |"),
        }
    }
    if std::env::var_os("INSTILL_KEEP_BENCH_PAIRS").is_none() {
        let _ = std::fs::remove_file(&pairs_file);
    }
    Ok(())
}
