//! Time LoRA training steps on a synthetic batch (profiling aid):
//! cargo run --release --example train_step -- [steps] [dequantize]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use instill::data::pack::rows_from;
use instill::peft::{lora::{Lora, LoraConfig}, Adapter};
use instill::train::optim::{AdamW, AdamWConfig};
use instill::train::step::loss_and_grads;
use rand::{Rng, SeedableRng};

fn main() {
    let steps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dq = std::env::args().nth(2).is_some();
    let s = instill::hub::resolve("smollm2-135m-instruct", false).unwrap();
    let mut m = instill::CausalLm::load(&s, &instill::LoadOptions { dequantize: dq, ..Default::default() }).unwrap();
    let cfg = LoraConfig { r: 8, alpha: 16.0, target_modules: vec!["all-linear".into()], ..Default::default() };
    let lora = Lora::attach(&mut m, &cfg, 0).unwrap();
    let params: Vec<_> = lora.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..4).map(|_| ((0..256).map(|_| rng.gen_range(0..49152)).collect(), vec![true; 256])).collect();
    let rows = rows_from((0..4).map(|i| vec![i]).collect(), 0, |i| (&seqs[i].0, &seqs[i].1));
    for i in 0..steps {
        let t = std::time::Instant::now();
        let g = loss_and_grads(&m, std::slice::from_ref(&rows), &params).unwrap();
        let tg = t.elapsed().as_secs_f64();
        opt.step(&g.grads, 2e-4).unwrap();
        let dt = t.elapsed().as_secs_f64();
        println!("step {i}: loss {:.4} fwd+bwd {tg:.2}s total {dt:.2}s -> {:.0} tok/s", g.loss, 1024.0 / dt);
    }
}
