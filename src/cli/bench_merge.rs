//! `instill bench merge`: wall time and peak RSS of TIES and SLERP merges of the same
//! inputs, instill (`instill merge` in a child process, its VmHWM sampled) against
//! mergekit 0.1.5 (`bench/peers/mergekit_bench.py`: `run_merge` with mergekit-yaml's
//! default options), same run. Inputs: the model dequantized to a bf16 HF directory and
//! two variants (base + seeded noise of 1% of each tensor's RMS), made once in `--work`.
use anyhow::{bail, Context, Result};
use clap::Args;
use instill::merge::source::Safetensors;
use instill::merge::write::{HfWriter, OutType};
use instill::{CausalLm, LoadOptions, Tokenizer};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct MergeBench {
    #[arg(short, long, default_value = "qwen2.5-coder-0.5b-instruct")]
    model: String,
    /// Where the input models and outputs go (inputs are kept for later runs).
    #[arg(long, default_value = "/tmp/instill-bench-merge")]
    work: PathBuf,
    /// Python with mergekit 0.1.5 for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_MERGEKIT_PYTHON", default_value = "/tmp/mergekit-venv/bin/python")]
    peer_python: String,
}

const TIES: &str = "models:\n  - model: base\n  - model: a\n    parameters:\n      density: 0.5\n      weight: 0.5\n  - model: b\n    parameters:\n      density: 0.5\n      weight: 0.5\nmerge_method: ties\nbase_model: base\n";
const SLERP: &str = "models:\n  - model: a\n  - model: b\nmerge_method: slerp\nbase_model: a\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n";

/// `dir/base` (bf16) and the variants `dir/a`, `dir/b`.
fn prepare(model: &str, dir: &Path) -> Result<()> {
    let base = dir.join("base");
    if !base.join("config.json").exists() {
        eprintln!("writing {} (dequantized, bf16)", base.display());
        let src = instill::hub::resolve(model, true)?;
        let m = CausalLm::load(&src, &LoadOptions { dequantize: true, ..Default::default() })?;
        let tok = Tokenizer::load(&src)?;
        instill::model::weights::save_hf_dir(&base, m.arch, &m.config, m.named_tensors()?, candle_core::DType::BF16, 5_000_000_000, &tok.hf_files())?;
    }
    for (seed, name) in [(1u64, "a"), (2, "b")] {
        let out = dir.join(name);
        if out.join("config.json").exists() {
            continue;
        }
        eprintln!("writing {}", out.display());
        let st = Safetensors::open(&base)?;
        let shapes: Vec<(String, Vec<usize>)> = st.names().into_iter().map(|n| (n.clone(), st.shape(&n).expect("listed"))).collect();
        let mut w = HfWriter::new(&out, &shapes, OutType::Bf16, 5_000_000_000)?;
        for (i, (n, _)) in shapes.iter().enumerate() {
            let mut x = st.load(n)?.expect("listed");
            let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt() as f32;
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ i as u64);
            x.iter_mut().for_each(|v| *v += 0.01 * rms * (rng.gen::<f32>() * 2.0 - 1.0));
            w.write(i, &x)?;
        }
        let files: Vec<(String, Vec<u8>)> = ["config.json", "tokenizer.json", "tokenizer_config.json"].iter().filter_map(|f| std::fs::read(base.join(f)).ok().map(|b| (f.to_string(), b))).collect();
        w.finish(&files)?;
    }
    Ok(())
}

/// Run `instill merge` as a child: (seconds, peak RSS MiB from its VmHWM).
fn instill_merge(config: &Path, out: &Path) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut child =
        std::process::Command::new(std::env::current_exe()?).arg("merge").arg(config).arg("--out").arg(out).stderr(std::process::Stdio::null()).stdout(std::process::Stdio::null()).spawn()?;
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let st = loop {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()));
        peak_kb = peak_kb.max(hwm.unwrap_or(0));
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if !st.success() {
        bail!("instill merge {} failed ({st})", config.display());
    }
    Ok((t.elapsed().as_secs_f64(), peak_kb as f64 / 1024.0))
}

pub fn run(a: MergeBench) -> Result<()> {
    let dir = a.work.join(&a.model);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    prepare(&a.model, &dir)?;
    let inputs: u64 = ["base", "a", "b"].iter().map(|m| std::fs::metadata(dir.join(m).join("model.safetensors")).map_or(0, |x| x.len())).sum();
    println!("{}: inputs bf16, {:.0} MB in all; threads {}", a.model, inputs as f64 / 1e6, rayon::current_num_threads());
    println!("| merge | instill s | mergekit s (+ import) | speedup | instill peak RSS MiB | mergekit peak RSS MiB | RSS ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (name, yaml) in [("ties", TIES), ("slerp", SLERP)] {
        let cfg = dir.join(format!("{name}.yml"));
        std::fs::write(&cfg, yaml)?;
        let (secs, rss) = instill_merge(&cfg, &dir.join(format!("out-instill-{name}")))?;
        let peer = if a.peer_python == "none" {
            None
        } else {
            let req = serde_json::json!({"config": cfg, "out": dir.join(format!("out-mergekit-{name}"))});
            Some(super::bench::run_peer(&a.peer_python, "mergekit_bench.py", &req, "mergekit peer (pip install mergekit==0.1.5)")?)
        };
        let f = |k: &str| peer.as_ref().and_then(|p| p[k].as_f64());
        let (ps, pi, pr) = (f("seconds"), f("import_seconds"), f("peak_rss_mib"));
        let show = |x: Option<f64>, d: usize| x.map_or("-".into(), |v| format!("{v:.d$}"));
        println!(
            "| {name} | {secs:.1} | {} (+{}) | {} | {rss:.0} | {} | {} |",
            show(ps, 1),
            show(pi, 1),
            ps.map_or("-".into(), |p| format!("{:.2}x", p / secs)),
            show(pr, 0),
            pr.map_or("-".into(), |p| format!("{:.2}x", rss / p))
        );
    }
    Ok(())
}
