//! `instill bench train`: LoRA (and QLoRA) training steps of SmolLM2-135M at batch 4 x 256
//! tokens, tokens/s and peak RSS, next to PyTorch + PEFT (../shared/bench/peers/
//! sft_lora_torch.py) on the same CPU in the same run, plus model-FLOPs utilisation
//! against this machine's measured f32 matmul rate. Each configuration runs in its own
//! process so peak RSS is its own.
use anyhow::{bail, Context, Result};
use clap::Args;
use instill::data::pack::rows_from;
use instill::model::kernels::gemm;
use instill::peft::{
    bottleneck::{Bottleneck, BottleneckConfig, NonLinearity, Placement},
    full::{Full, FullConfig},
    lora::{Lora, LoraConfig},
    loramoe::{Loramoe, LoramoeConfig},
    mam::Mam,
    prefix::{PrefixConfig, PrefixTuning},
    Adapter,
};
use instill::train::optim::{AdamW, AdamWConfig};
use instill::train::step::loss_and_grads;
use rand::{Rng, SeedableRng};
use std::process::Command;
use std::time::Instant;

#[derive(Args)]
pub struct TrainBench {
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Timed steps (after 2 untimed).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Python with torch, transformers, peft, gguf for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/ref-venv/bin/python")]
    peer_python: String,
    /// Configurations to run (default: these; also `loramoe`, `adapter`, `prefix` and `mam`,
    /// the recipes' settings on an f32 base: compared with PyTorch + PEFT LoRA, and
    /// `prefix` with PEFT prefix tuning).
    #[arg(long, value_delimiter = ',', default_value = "lora,lora-bf16,qlora,lora-gc,lora-bf16-gc,qlora-gc,full,full-gc")]
    modes: Vec<String>,
    /// The peer script (from ../shared/bench/peers).
    #[arg(long, default_value = "../shared/bench/peers/sft_lora_torch.py")]
    peer_script: std::path::PathBuf,
    /// The model (a registry id); the PyTorch peers run SmolLM2-135M only.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Scaling curves instead of one configuration: sequence lengths 256-2048 at batch 1
    /// and batch sizes 1-16 at 256 tokens, each mode and its peer, as a table and PNG plots
    /// written to this directory.
    #[arg(long)]
    sweep: Option<std::path::PathBuf>,
    /// Internal: run one configuration and print JSON.
    #[arg(long, hide = true)]
    worker: Option<String>,
}

/// This process's resident memory now, MiB.
fn rss_now_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Forward FLOPs per token of SmolLM2-135M: 2 x matmul parameters + attention (QK^T, PV).
fn forward_flops_per_token(m: &instill::CausalLm, seq: usize) -> f64 {
    let c = &m.config;
    let per_layer = c.hidden_size * c.num_heads * c.head_dim * 2 + c.hidden_size * c.num_kv_heads * c.head_dim * 2 + 3 * c.hidden_size * c.intermediate_size;
    let matmul = (per_layer * c.num_layers + c.vocab_size * c.hidden_size) as f64;
    2.0 * matmul + 4.0 * (c.num_layers * seq * c.num_heads * c.head_dim) as f64
}

pub fn peak_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// The tuning method of a mode, attached to `model`.
fn method(model: &mut instill::CausalLm, source: &instill::hub::ModelSource, mode: &str) -> Result<Box<dyn Adapter>> {
    // The recipes' bottleneck adapter: parallel on down_proj, 64 wide, scale 4, ReLU.
    let bottleneck = BottleneckConfig { bottleneck: 64, placement: Placement::Parallel, target_modules: vec!["down_proj".into()], scale: 4.0, non_linearity: NonLinearity::Relu, dropout: 0.0 };
    Ok(match mode {
        m if m.starts_with("full") => {
            let tok = instill::Tokenizer::load(source)?;
            Box::new(Full::attach(model, &tok, &FullConfig::default())?)
        }
        "loramoe" => Box::new(Loramoe::attach(model, &LoramoeConfig { dropout: 0.0, ..Default::default() }, 0)?),
        "adapter" => Box::new(Bottleneck::attach(model, &bottleneck, 0)?),
        "prefix" => Box::new(PrefixTuning::attach(model, &PrefixConfig { num_virtual_tokens: 20 }, 0)?),
        "mam" => Box::new(Mam::attach(model, &PrefixConfig { num_virtual_tokens: 30 }, &bottleneck, 0)?),
        _ => {
            // The peer's LoRA: r 8, alpha 16, every projection, no dropout; loss on every token.
            let cfg = LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, target_modules: vec!["all-linear".into()], rslora: false };
            Box::new(Lora::attach(model, &cfg, 0)?)
        }
    })
}

/// One configuration: `lora` (f32 base) or `qlora` (Q4_1 base kept quantized).
fn worker(a: &TrainBench, mode: &str) -> Result<serde_json::Value> {
    let source = instill::hub::resolve(&a.model, true)?;
    let (dequantize, checkpointing) = match mode {
        "lora" | "full" | "lora-bf16" | "loramoe" | "adapter" | "prefix" | "mam" => (true, false),
        "qlora" => (false, false),
        "lora-gc" | "full-gc" | "lora-bf16-gc" => (true, true),
        "qlora-gc" => (false, true),
        m => bail!("unknown mode {m}"),
    };
    let weight_dtype = if mode.contains("bf16") { candle_core::DType::BF16 } else { candle_core::DType::F32 };
    let mut model = instill::CausalLm::load(&source, &instill::LoadOptions { dequantize, weight_dtype, ..Default::default() })?;
    model.checkpointing = checkpointing;
    let full = mode.starts_with("full");
    let adapter = method(&mut model, &source, mode)?;
    adapter.set_training(true);
    let params: Vec<_> = adapter.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default());
    // Memory by buffer class: the loaded model (weights and runtime) is what is resident
    // before the first step; gradients and AdamW's two moments are f32 per trainable value;
    // activations (and transient buffers) are the rest of the peak.
    let (weights_mib, trainable) = (rss_now_mib(), params.iter().map(|p| p.elem_count()).sum::<usize>() as f64);
    let (grads_mib, optimizer_mib) = (trainable * 4.0 / 1048576.0, trainable * 8.0 / 1048576.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let vocab = model.config.vocab_size as u32;
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..a.batch).map(|_| ((0..a.seq).map(|_| rng.gen_range(0..vocab)).collect(), vec![true; a.seq])).collect();
    let rows = rows_from((0..a.batch).map(|i| vec![i]).collect(), 0, |i| (&seqs[i].0, &seqs[i].1));
    let mut times = vec![];
    let mut losses = vec![];
    for i in 0..a.steps + 2 {
        let t = Instant::now();
        // As the trainer does before each micro-batch (LoRAMoE records its router weights).
        adapter.clear_aux();
        let g = loss_and_grads(&model, std::slice::from_ref(&rows), &params)?;
        opt.step(&g.grads, 2e-4)?;
        losses.push(g.loss);
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let per_step = times.iter().sum::<f64>() / times.len() as f64;
    let tokens = (a.batch * a.seq) as f64;
    // LoRA's backward computes input gradients only: about one more forward's worth.
    // Model FLOPs: forward + input gradients (+ weight gradients for full tuning);
    // recomputation under checkpointing is not counted, as MFU usually is not.
    let flops_per_token = if full { 3.0 } else { 2.0 } * forward_flops_per_token(&model, a.seq);
    Ok(serde_json::json!({
        "mode": mode, "tokens_per_s": tokens / per_step, "s_per_step": per_step,
        "s_per_step_min": times.iter().copied().fold(f64::INFINITY, f64::min),
        "peak_rss_mib": peak_rss_mib(), "flops_per_token": flops_per_token,
        "memory_mib": {"weights_and_runtime": weights_mib, "gradients": grads_mib, "optimizer": optimizer_mib, "activations_and_transients": peak_rss_mib() - weights_mib - grads_mib - optimizer_mib},
        "loss_first": losses[0], "loss_last": losses[losses.len() - 1],
    }))
}

/// Our GEMM's rate here at a training-sized shape, `x W^T` (best of 5 rounds of 5).
fn gemm_rate(p: gemm::Precision) -> f64 {
    use gemm::MatRef;
    let (m, k, n) = (1024, 576, 1536);
    let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
    let w: Vec<half::bf16> = (0..n * k).map(|i| half::bf16::from_f32((i % 7) as f32 * 0.01)).collect();
    let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let mut c = vec![0f32; m * n];
    let mut best = 0f64;
    instill::model::on_workers(|| {
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..5 {
                match p {
                    gemm::Precision::F32 => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&wf[..], 1, k), &mut c, n, false, gemm::isa(), p),
                    _ => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&w[..], 1, k), &mut c, n, false, gemm::isa(), p),
                }
            }
            best = best.max(5.0 * 2.0 * (m * k * n) as f64 / t.elapsed().as_secs_f64());
        }
    });
    best
}

/// One of our configurations in its own process.
fn ours(a: &TrainBench, mode: &str, batch: usize, seq: usize) -> Result<serde_json::Value> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--threads", &rayon::current_num_threads().to_string(), "bench", "train", "--worker", mode])
        .args(["--batch", &batch.to_string(), "--seq", &seq.to_string(), "--steps", &a.steps.to_string(), "--model", &a.model])
        .output()?;
    if !out.status.success() {
        bail!("instill {mode} worker failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A PyTorch peer (`lora`, `autocast` or `full`) in its own process; None without one.
fn peer(a: &TrainBench, kind: &str, batch: usize, seq: usize) -> Result<Option<serde_json::Value>> {
    if a.peer_python == "none" || a.model != "smollm2-135m-instruct" {
        return Ok(None);
    }
    let gguf = instill::hub::resolve("smollm2-135m-instruct", true)?;
    let dir = gguf.path().parent().context("model directory")?.to_path_buf();
    let mut c = Command::new(&a.peer_python);
    if kind == "autocast" {
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers/sft_lora_autocast.py"));
    }
    if kind == "prefix" {
        let shared = a.peer_script.parent().context("peer script directory")?;
        c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers/sft_prefix_peft.py")).arg("--shared-dir").arg(shared);
    } else {
        c.arg(&a.peer_script);
    }
    c.args(["--batch", &batch.to_string(), "--seq", &seq.to_string(), "--steps", &a.steps.to_string(), "--threads", &rayon::current_num_threads().to_string()]);
    if kind == "full" {
        c.arg("--full");
    }
    let out = c.env("PEERS_MODEL_DIR", dir).output().with_context(|| format!("running {}", a.peer_script.display()))?;
    if !out.status.success() {
        bail!("PyTorch peer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    Ok(Some(serde_json::from_str(&line)?))
}

/// The peer a mode is compared with.
fn peer_kind(mode: &str) -> &'static str {
    if mode.contains("bf16") {
        "autocast"
    } else if mode == "prefix" {
        "prefix"
    } else if mode.starts_with("full") {
        "full"
    } else {
        "lora"
    }
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// Owned series as `plot::lines` takes them.
pub fn named(v: &[(String, Vec<(f64, f64)>)]) -> Vec<(&str, Vec<(f64, f64)>)> {
    v.iter().map(|(n, p)| (n.as_str(), p.clone())).collect()
}

/// Scaling curves: every mode and its peer over sequence length (batch 1) and batch size
/// (256 tokens), printed as a table and plotted (tokens/s and peak RSS on each axis).
fn sweep(a: &TrainBench, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let axes: [(&str, Vec<(usize, usize)>); 2] = [("seq", [256, 512, 1024, 2048].map(|s| (1, s)).to_vec()), ("batch", [1, 2, 4, 8, 16].map(|b| (b, 256)).to_vec())];
    let mut kinds: Vec<&str> = a.modes.iter().map(|m| peer_kind(m)).collect();
    kinds.sort();
    kinds.dedup();
    println!("model {}; {} timed steps after 2 untimed; each run in its own process", a.model, a.steps);
    println!("| axis | batch | seq | run | tokens/s | peak RSS MiB | tokens/s vs peer | peak RSS vs peer |");
    println!("|---|---|---|---|---|---|---|---|");
    for (axis, points) in axes {
        let mut tps: Vec<(String, Vec<(f64, f64)>)> = vec![];
        let mut rss: Vec<(String, Vec<(f64, f64)>)> = vec![];
        let mut push = |name: String, x: f64, t: f64, r: f64| match tps.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                tps[i].1.push((x, t));
                rss[i].1.push((x, r));
            }
            None => {
                tps.push((name.clone(), vec![(x, t)]));
                rss.push((name, vec![(x, r)]));
            }
        };
        for &(batch, seq) in &points {
            let x = if axis == "seq" { seq } else { batch } as f64;
            let mut peer_at = vec![];
            for &k in &kinds {
                if let Some(p) = peer(a, k, batch, seq)? {
                    let (t, r) = (num(&p, "tokens_per_s"), num(&p, "peak_rss_mib"));
                    println!("| {axis} | {batch} | {seq} | PyTorch {k} | {t:.0} | {r:.0} | 1.00x | 1.00x |");
                    push(format!("PyTorch {k}"), x, t, r);
                    peer_at.push((k, t, r));
                }
            }
            for mode in &a.modes {
                let r = ours(a, mode, batch, seq)?;
                let (t, m) = (num(&r, "tokens_per_s"), num(&r, "peak_rss_mib"));
                let (pt, pr) = peer_at.iter().find(|p| p.0 == peer_kind(mode)).map_or((f64::NAN, f64::NAN), |p| (p.1, p.2));
                println!("| {axis} | {batch} | {seq} | instill {mode} | {t:.0} | {m:.0} | {:.2}x | {:.2}x |", t / pt, m / pr);
                push(format!("instill {mode}"), x, t, m);
            }
        }
        let label = if axis == "seq" { "sequence length (batch 1)" } else { "batch size (256 tokens each)" };
        instill::plot::lines(&dir.join(format!("train-{axis}-tokens.png")), &format!("bench train: tokens/s by {axis}"), label, "tokens/s", &named(&tps))?;
        instill::plot::lines(&dir.join(format!("train-{axis}-rss.png")), &format!("bench train: peak RSS by {axis}"), label, "MiB", &named(&rss))?;
    }
    println!("plots: {}/train-{{seq,batch}}-{{tokens,rss}}.png", dir.display());
    Ok(())
}

pub fn run(a: TrainBench) -> Result<()> {
    if let Some(mode) = &a.worker {
        let r = instill::model::on_workers(|| worker(&a, mode))?;
        println!("{r}");
        return Ok(());
    }
    if let Some(dir) = &a.sweep {
        return sweep(&a, dir);
    }
    let threads = rayon::current_num_threads();
    let (rate, rate_bf16) = (gemm_rate(gemm::Precision::F32), gemm_rate(gemm::bf16_precision_split()));
    println!("threads {threads}; batch {} x {} tokens; our GEMM at 1024x576x1536: f32 {:.0} GFLOP/s, bf16 weights {:.0} GFLOP/s (the MFU denominators)", a.batch, a.seq, rate / 1e9, rate_bf16 / 1e9);
    println!("model {}", a.model);
    println!("| run | tokens/s | peak RSS MiB | MFU | tokens/s vs its PyTorch peer | peak RSS vs its peer | MiB: weights + runtime / gradients / AdamW / activations |");
    println!("|---|---|---|---|---|---|---|");
    let mut peers: Vec<(&str, Option<serde_json::Value>)> = vec![];
    for (kind, label, wanted) in [
        ("lora", "PyTorch + PEFT LoRA (fp32)", true),
        ("autocast", "PyTorch + PEFT LoRA (autocast bf16)", a.modes.iter().any(|m| m.contains("bf16"))),
        ("full", "PyTorch full fine-tuning (fp32)", a.modes.iter().any(|m| m.starts_with("full"))),
        ("prefix", "PyTorch + PEFT prefix tuning (fp32, 20 tokens)", a.modes.iter().any(|m| m == "prefix")),
    ] {
        if !wanted {
            continue;
        }
        let p = peer(&a, kind, a.batch, a.seq)?;
        if let Some(p) = &p {
            println!("| {label} | {:.0} | {:.0} | - | 1.00x | 1.00x | - |", p["tokens_per_s"].as_f64().unwrap_or(f64::NAN), p["peak_rss_mib"].as_f64().unwrap_or(f64::NAN));
        }
        peers.push((kind, p));
    }
    let peer_of = |kind: &str| {
        peers
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, p)| p.as_ref())
            .map_or((f64::NAN, f64::NAN), |p| (p["tokens_per_s"].as_f64().unwrap_or(f64::NAN), p["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)))
    };
    for mode in a.modes.iter().map(String::as_str) {
        let r = ours(&a, mode, a.batch, a.seq)?;
        let tps = r["tokens_per_s"].as_f64().unwrap_or(0.0);
        let rss = r["peak_rss_mib"].as_f64().unwrap_or(0.0);
        let bf16 = mode.contains("bf16");
        let mfu = tps * r["flops_per_token"].as_f64().unwrap_or(0.0) / if bf16 { rate_bf16 } else { rate };
        let label = match mode {
            "lora" => "instill LoRA (f32 base)",
            "lora-bf16" => "instill LoRA (bf16 base)",
            "lora-bf16-gc" => "instill LoRA (bf16 base), gradient checkpointing",
            "qlora" => "instill QLoRA (quantized base)",
            "lora-gc" => "instill LoRA, gradient checkpointing",
            "qlora-gc" => "instill QLoRA, gradient checkpointing",
            "full" => "instill full fine-tuning",
            "full-gc" => "instill full fine-tuning, gradient checkpointing",
            "loramoe" => "instill LoRAMoE (6 x r4 on the MLP; vs PyTorch LoRA)",
            "adapter" => "instill parallel adapter (64 on down_proj; vs PyTorch LoRA)",
            "prefix" => "instill prefix tuning (20 tokens)",
            "mam" => "instill MAM (prefix 30 + adapter 64; vs PyTorch LoRA)",
            m => bail!("unknown mode {m}: use lora, lora-bf16, qlora, lora-gc, lora-bf16-gc, qlora-gc, full, full-gc, loramoe, adapter, prefix or mam"),
        };
        let (t_rate, t_rss) = peer_of(peer_kind(mode));
        let m = &r["memory_mib"];
        let mb = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        let memory = format!("{:.0} / {:.0} / {:.0} / {:.0}", mb("weights_and_runtime"), mb("gradients"), mb("optimizer"), mb("activations_and_transients"));
        println!("| {label} | {tps:.0} | {rss:.0} | {:.0}% | {:.2}x | {:.2}x | {memory} |", mfu * 100.0, tps / t_rate, rss / t_rss);
    }
    Ok(())
}
