//! Resident memory after each phase of one training step (forward, backward), for
//! finding where a training run's peak comes from: `mem_probe MODEL BATCH SEQ [lora|qlora] [gc]`.
use instill::peft::{
    lora::{Lora, LoraConfig},
    Adapter,
};
use rand::{Rng, SeedableRng};

/// The system allocator, counting live bytes (RSS alone cannot tell retained memory
/// from the allocator's fragmentation).
struct Counting;
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes allocated and not yet freed, MB.
pub fn live_mb() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) >> 20
}

fn rss() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let get = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_string();
    format!("rss {} peak {} live {} MB", get("VmRSS:"), get("VmHWM:"), live_mb())
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (batch, seq): (usize, usize) = (a[2].parse()?, a[3].parse()?);
    let source = instill::hub::resolve(&a[1], true)?;
    let dequantize = a.get(4).map(|s| s.as_str()) == Some("lora");
    let mut model = instill::CausalLm::load(&source, &instill::LoadOptions { dequantize, ..Default::default() })?;
    let cfg = LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, target_modules: vec!["all-linear".into()], rslora: false };
    model.checkpointing = a.get(5).map(|s| s.as_str()) == Some("gc");
    let lora = Lora::attach(&mut model, &cfg, 0)?;
    lora.set_training(true);
    eprintln!("loaded: {}", rss());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let vocab = model.config.vocab_size as u32;
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..batch).map(|_| ((0..seq).map(|_| rng.gen_range(0..vocab)).collect(), vec![true; seq])).collect();
    let rows = instill::data::pack::rows_from((0..batch).map(|i| vec![i]).collect(), 0, |i| (&seqs[i].0, &seqs[i].1));
    instill::model::on_workers(|| -> anyhow::Result<()> {
        let h = model.final_hidden(&rows.batch)?;
        eprintln!("blocks forward: {}", rss());
        drop(h);
        let (loss, _) = instill::train::loss::loss_sum(&model, &rows)?;
        eprintln!("forward + loss: {}", rss());
        let g = loss.backward()?;
        eprintln!("backward: {}", rss());
        eprintln!("grads held: {}", g.get_ids().count());
        drop(g);
        Ok(())
    })
}
