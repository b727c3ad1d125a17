//! The supervised fine-tuning loop: micro-batches -> loss and gradients -> clipping ->
//! AdamW under a schedule; metrics, validation, checkpoints, and a clean stop on Ctrl-C.
use super::checkpoint;
use super::data::{all_batches, load, Stream};
use super::loss::loss_sum;
use super::metrics::{Metrics, StepMetrics};
use super::optim::AdamW;
use super::recipe::{Method, Recipe};
use super::step::{clip_grad_norm, loss_and_grads};
use crate::peft::{full::Full, lora::Lora, prompt::PromptTuning, Adapter};
use crate::tokenizer::Tokenizer;
use crate::{CausalLm, Error, LoadOptions, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C finishes the current step, writes a checkpoint and stops.
fn catch_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// What the caller sees of a run.
pub struct Report {
    pub out: PathBuf,
    pub steps: usize,
    pub final_loss: f64,
    pub val_loss: Option<f64>,
    pub interrupted: bool,
}

/// Progress callback: (step done, total steps, metrics of that step).
pub type OnStep<'a> = &'a mut dyn FnMut(usize, usize, &StepMetrics);

/// Train as the recipe says. With `resume`, continue from the newest checkpoint in the
/// run directory (the recipe saved there is used, so the run continues unchanged).
pub fn train(recipe: &Recipe, resume: bool, on_step: OnStep) -> Result<Report> {
    let out = recipe.output_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, e.to_string()))?;
    let latest = if resume { checkpoint::list(&out).pop() } else { None };
    if resume && latest.is_none() {
        return Err(Error::file(&out, "no complete checkpoint to resume from"));
    }
    let source = crate::hub::resolve(&recipe.model, true)?;
    let tok = Tokenizer::load(&source)?;
    // Full tuning resumes from the model saved in the checkpoint.
    let model_source = match (&latest, recipe.method) {
        (Some((_, dir)), Method::Full) => crate::hub::ModelSource::HfDir(dir.clone()),
        _ => source.clone(),
    };
    let mut model = CausalLm::load(&model_source, &LoadOptions { dequantize: recipe.dequantize, weight_dtype: recipe.precision.dtype(), ..Default::default() })?;
    let tmpl = tok.template(recipe.template.as_deref())?;
    model.checkpointing = recipe.gradient_checkpointing;
    let (train_set, val_set, _) = load(recipe, &tok, &tmpl)?;

    let adapter: Box<dyn Adapter> = match recipe.method {
        Method::Lora => Box::new(match &latest {
            Some((_, dir)) => Lora::load(&mut model, dir)?,
            None => Lora::attach(&mut model, &recipe.lora, recipe.seed)?,
        }),
        Method::Full => Box::new(Full::attach(&mut model, &tok, &recipe.full)?),
        Method::Prompt => Box::new(match &latest {
            Some((_, dir)) => PromptTuning::load(&mut model, dir)?,
            None => PromptTuning::attach(&mut model, &tok, &recipe.prompt, recipe.seed)?,
        }),
    };
    let params: Vec<_> = adapter.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(params.clone(), recipe.adamw);
    let start = match &latest {
        Some((_, dir)) => checkpoint::load_optimizer(dir, adapter.as_ref(), &mut opt)?.step,
        None => 0,
    };
    crate::peft::write_atomic(&out.join("recipe.yaml"), serde_yaml::to_string(recipe).expect("yaml").as_bytes())?;

    let pad = tok.eos_id.unwrap_or(0);
    let mut stream = Stream::new(&train_set, recipe, pad);
    let total = recipe.max_steps.unwrap_or_else(|| (stream.per_epoch() * recipe.epochs).div_ceil(recipe.grad_accum));
    stream.skip(start * recipe.grad_accum);
    let val_batches = all_batches(&val_set, recipe.batch_size, pad);
    let mut metrics = Metrics::open(&out, start)?;
    catch_ctrl_c();
    INTERRUPTED.store(false, Ordering::SeqCst);

    let t0 = Instant::now();
    let (mut last_loss, mut last_val, mut interrupted) = (f64::NAN, None, false);
    let mut step = start;
    while step < total {
        let ts = Instant::now();
        let micro: Vec<_> = (0..recipe.grad_accum).map(|_| stream.next_batch()).collect();
        let lr = recipe.lr * recipe.schedule.factor(step, total, recipe.warmup_steps);
        adapter.set_training(true);
        adapter.begin_step(recipe.seed, step as u64);
        if let Some(full) = adapter.as_full() {
            full.hft_stage(&mut model, recipe.seed, step)?;
        }
        let mut g = loss_and_grads(&model, &micro, &params)?;
        let grad_norm = clip_grad_norm(&mut g.grads, recipe.max_grad_norm)?;
        let active = adapter.as_full().and_then(|f| f.active());
        opt.step_some(&g.grads, lr, active.as_deref())?;
        step += 1;
        adapter.set_training(false);
        let eval_now = !val_batches.is_empty() && ((recipe.eval_every > 0 && step % recipe.eval_every == 0) || step == total);
        let val_loss = if eval_now { Some(validation_loss(&model, &val_batches)?) } else { None };
        last_val = val_loss.or(last_val);
        last_loss = g.loss;
        let m = StepMetrics {
            step,
            epoch: stream.epoch(),
            loss: g.loss,
            lr,
            grad_norm,
            tokens: g.tokens,
            tokens_per_s: g.tokens as f64 / ts.elapsed().as_secs_f64(),
            elapsed_s: t0.elapsed().as_secs_f64(),
            val_loss,
        };
        metrics.push(m.clone())?;
        on_step(step, total, &m);
        interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let save = (recipe.save_every > 0 && step % recipe.save_every == 0) || step == total || interrupted;
        if save {
            checkpoint::save(&out, step, &model, adapter.as_ref(), &opt, recipe.keep_checkpoints)?;
            metrics.plot(&out, &recipe.name)?;
        }
        if interrupted {
            break;
        }
    }
    if !interrupted {
        adapter.save(&model, &out.join(final_dir(recipe.method)))?;
    }
    Ok(Report { out, steps: step, final_loss: last_loss, val_loss: last_val, interrupted })
}

/// Where a finished run's result goes: `adapter/` (PEFT layout) or `model/` (a whole HF model).
pub fn final_dir(m: Method) -> &'static str {
    match m {
        Method::Lora | Method::Prompt => "adapter",
        Method::Full => "model",
    }
}

/// Mean loss per target token over the validation batches (no dropout).
pub fn validation_loss(model: &CausalLm, batches: &[crate::data::pack::Rows]) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for b in batches {
        let (s, k) = loss_sum(model, b)?;
        sum += s.to_scalar::<f32>()? as f64;
        n += k;
    }
    Ok(if n == 0 { f64::NAN } else { sum / n as f64 })
}
