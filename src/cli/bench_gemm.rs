//! `instill bench gemm`: our GEMM (f32 on each instruction set this CPU has, and bf16)
//! against candle's (the `gemm` crate) and `torch.matmul` at the models' training shapes,
//! in the same run. Every product is a linear layer's `x W^T` (W stored `(out, in)`), or
//! its input gradient `g W`.
use anyhow::{Context, Result};
use clap::Args;
use instill::model::kernels::gemm::{self, Isa, MatRef, Precision};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Args)]
pub struct GemmBench {
    /// Timed rounds per kernel and shape (best is kept).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Python with torch for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/ref-venv/bin/python")]
    peer_python: String,
}

/// `(name, m, n, k, b_transposed)` with 1,024 tokens (batch 4 x 256).
const SHAPES: &[(&str, usize, usize, usize, bool)] = &[
    ("smollm2 q/o proj", 1024, 576, 576, true),
    ("smollm2 k/v proj", 1024, 192, 576, true),
    ("smollm2 gate/up", 1024, 1536, 576, true),
    ("smollm2 down", 1024, 576, 1536, true),
    ("smollm2 down dx (g W)", 1024, 1536, 576, false),
    ("smollm2 lm_head chunk", 128, 49152, 576, true),
    ("qwen0.5b gate/up", 1024, 4864, 896, true),
    ("qwen0.5b down", 1024, 896, 4864, true),
];

fn random(n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Best GFLOP/s of `f` over `reps` rounds of 3 calls.
fn rate(flops: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = 0f64;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..3 {
            f();
        }
        best = best.max(3.0 * flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Our kernels (each ISA this CPU has, and bf16 when it has `vdpbf16ps`) and candle's.
fn ours(m: usize, n: usize, k: usize, bt: bool, reps: usize) -> Result<Vec<(String, f64)>> {
    let (x, w) = (random(m * k), random(n * k));
    let b = if bt { MatRef::new(&w[..], 1, k) } else { MatRef::new(&w[..], n, 1) };
    let a = MatRef::new(&x[..], k, 1);
    let mut c = vec![0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let mut isas = vec![gemm::isa()];
    if gemm::isa() == Isa::Avx512 {
        isas.push(Isa::Avx2);
    }
    let mut out: Vec<(String, f64)> = isas.iter().map(|&i| (format!("{i:?}"), rate(flops, reps, || gemm::run(m, n, k, a, b, &mut c, n, false, i, Precision::F32)))).collect();
    if gemm::has_bf16_dot() {
        let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let bb = MatRef { data: &wb[..], rs: b.rs, cs: b.cs };
        out.push(("bf16dot".into(), rate(flops, reps, || gemm::run(m, n, k, a, bb, &mut c, n, false, gemm::isa(), Precision::Bf16))));
    }
    if gemm::has_amx() {
        let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let bb = MatRef { data: &wb[..], rs: b.rs, cs: b.cs };
        out.push(("amx".into(), rate(flops, reps, || gemm::run(m, n, k, a, bb, &mut c, n, false, gemm::isa(), Precision::Amx))));
    }
    use candle_core::{Device, Tensor};
    let xt = Tensor::from_vec(x, (m, k), &Device::Cpu)?;
    let wt = if bt { Tensor::from_vec(w, (n, k), &Device::Cpu)?.t()? } else { Tensor::from_vec(w, (k, n), &Device::Cpu)? };
    out.push(("candle".into(), rate(flops, reps, || drop(xt.matmul(&wt)))));
    Ok(out)
}

/// The peer's f32 and bf16 GFLOP/s per shape (`a @ w.t()`).
fn torch(a: &GemmBench, threads: usize) -> Result<Vec<serde_json::Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers/gemm_torch.py");
    let mut child = Command::new(&a.peer_python)
        .args([script, "--threads", &threads.to_string(), "--reps", &a.reps.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the peer {}", a.peer_python))?;
    let mut stdin = child.stdin.take().context("peer stdin")?;
    for (name, m, n, k, _) in SHAPES {
        writeln!(stdin, "{}", serde_json::json!({"name": name, "m": m, "n": n, "k": k}))?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the torch peer failed");
    Ok(String::from_utf8(out.stdout)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

pub fn run(a: GemmBench) -> Result<()> {
    let threads = rayon::current_num_threads();
    let peer = if a.peer_python == "none" { vec![] } else { torch(&a, threads)? };
    println!("threads {threads}; kernels: f32 {:?}, bf16 dot products {}, AMX {}", gemm::isa(), gemm::has_bf16_dot(), gemm::has_amx());
    if let Some(v) = peer.first() {
        println!("peer: torch {}", v["torch"].as_str().unwrap_or("?"));
    }
    println!(
        "| shape (m x n x k) | ours f32 GFLOP/s | ours AVX2 | candle (gemm crate) | torch f32 | **ours / torch f32** | ours bf16 AMX | ours bf16 vdpbf16ps | torch bf16 | **ours bf16 / torch bf16** |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut peak = 0f64;
    for (i, &(name, m, n, k, bt)) in SHAPES.iter().enumerate() {
        let r = instill::model::on_workers(|| ours(m, n, k, bt, a.reps))?;
        let get = |key: &str| r.iter().find(|(n, _)| n == key).map(|x| x.1);
        let best = r[0].1;
        peak = peak.max(best);
        let p = peer.get(i);
        let (tf, tb) = (p.and_then(|v| v["f32"].as_f64()), p.and_then(|v| v["bf16"].as_f64()));
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0}"));
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => format!("**{:.2}x**", x / y),
            _ => "-".into(),
        };
        let b16 = get("amx").or(get("bf16dot"));
        println!(
            "| {name} ({m} x {n} x {k}) | {best:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f(get("Avx2")),
            f(get("candle")),
            f(tf),
            ratio(Some(best), tf),
            f(get("amx")),
            f(get("bf16dot")),
            f(tb),
            ratio(b16, tb)
        );
    }
    println!("peak of our f32 GEMM here: {peak:.0} GFLOP/s");
    Ok(())
}
