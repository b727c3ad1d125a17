//! Fused vs unfused attention, forward and forward + backward, at the shapes training
//! and prefill see: `cargo run --release --example attnbench [fused]` (`fused`: that side
//! only, for profiling).
use candle_core::{Device, Tensor, Var};
use instill::model::block::attend_unfused;
use instill::model::cache::{build_mask, KeyInfo};
use instill::model::kernels::attention::attention;
use std::time::Instant;

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    if reps == 0 {
        return f64::NAN;
    }
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64 * 1e3
}

fn main() {
    let dev = Device::Cpu;
    let only_fused = std::env::args().any(|a| a == "fused");
    // (name, B, KV, R, T, D): SmolLM2-135M (9 heads over 3, D 64), gemma3-270m (4 over 1, D 256).
    for (name, b, kv, r, t, d) in [("smollm2 train", 4, 3, 3, 256, 64), ("smollm2 prefill", 1, 3, 3, 512, 64), ("gemma3 train", 4, 1, 4, 256, 256)] {
        let keys: Vec<Vec<KeyInfo>> = (0..b).map(|_| (0..t).map(|j| KeyInfo { pos: j as u32, seg: 0, valid: true }).collect()).collect();
        let mask = build_mask(&keys, t, None, &dev).unwrap();
        let q = Var::randn(0f32, 0.3, (b, kv, r * t, d), &dev).unwrap();
        let k = Var::randn(0f32, 0.3, (b, kv, t, d), &dev).unwrap();
        let v = Var::randn(0f32, 1.0, (b, kv, t, d), &dev).unwrap();
        let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let fused = |x: &Tensor, y: &Tensor, z: &Tensor| attention(x, y, z, mask.as_ref(), t).unwrap();
        let unfused = |x: &Tensor, y: &Tensor, z: &Tensor| attend_unfused(x, y, z, mask.as_ref()).unwrap();
        let (qd, kd, vd) = (qt.detach(), kt.detach(), vt.detach());
        let f_fwd = time(if only_fused { 20 } else { 5 }, || drop(fused(&qd, &kd, &vd)));
        let reps = if only_fused { 0 } else { 5 };
        let u_fwd = time(reps, || drop(unfused(&qd, &kd, &vd)));
        let f_all = time(if only_fused { 10 } else { 3 }, || drop(fused(qt, kt, vt).sum_all().unwrap().backward().unwrap()));
        let u_all = time(reps, || drop(unfused(qt, kt, vt).sum_all().unwrap().backward().unwrap()));
        println!("{name:16} forward {f_fwd:7.2} ms fused, {u_fwd:7.2} ms unfused | forward + backward {f_all:7.2} ms fused, {u_all:7.2} ms unfused");
    }
}
