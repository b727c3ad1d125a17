//! The training loop, for every objective: micro-batches -> the objective's loss and
//! gradients -> clipping -> AdamW under a schedule; metrics, validation, checkpoints,
//! and a clean stop on Ctrl-C. Preference objectives get their reference log-probs from
//! a pre-pass before the first step (`reference`); reward models a score head.
use super::checkpoint;
use super::data::{all_batches, load, Set, Stream};
use super::metrics::{Metrics, StepMetrics};
use super::objective::{self, Ctx, Data, Layout, Objective};
use super::optim::AdamW;
use super::recipe::{Method, Recipe};
use super::reference::{self, Reference};
use super::step::{clip_grad_norm, evaluate, objective_step};
use crate::peft::{bottleneck::Bottleneck, full::Full, head::ScoreHead, lora::Lora, loramoe::Loramoe, mam::Mam, pat::Pat, prefix::PrefixTuning, prompt::PromptTuning, sparse::Sparse, Adapter};
use crate::tokenizer::Tokenizer;
use crate::{CausalLm, Error, LoadOptions, Result};
use candle_core::Var;
use std::path::{Path, PathBuf};
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
    /// Where the result is (`adapter/` or `model/`).
    pub result: PathBuf,
    pub counts: super::data::Counts,
}

/// What a run tells its caller as it goes.
pub enum Event<'a> {
    /// A line worth printing (a checkpoint passed over, data counts).
    Note(String),
    /// The reference pre-pass: sequences done of total.
    Reference {
        done: usize,
        total: usize,
    },
    Step {
        step: usize,
        total: usize,
        metrics: &'a StepMetrics,
    },
}

pub type OnEvent<'a> = &'a mut dyn FnMut(Event);

/// Where a finished run's result goes: `adapter/` (PEFT layout) or `model/` (a whole HF
/// model; reward models are always a whole sequence-classification model).
pub fn final_dir(m: Method, objective: &str) -> &'static str {
    match m {
        _ if objective.starts_with("reward") => "model",
        Method::Lora | Method::Prompt | Method::Loramoe | Method::Sparse | Method::Adapter | Method::Prefix | Method::Mam | Method::Pat => "adapter",
        Method::Full => "model",
    }
}

/// Everything a run holds while it trains.
struct Run {
    model: CausalLm,
    tok: Tokenizer,
    adapter: Box<dyn Adapter>,
    head: Option<Var>,
    objective: Box<dyn Objective>,
    train: Set,
    val: Set,
    start: usize,
    opt: AdamW,
    params: Vec<Var>,
    template: crate::tokenizer::ChatTemplate,
}

/// Train as the recipe says. With `resume`, continue from the newest checkpoint that
/// verifies in the run directory (the recipe saved there is used, so the run continues
/// unchanged).
pub fn train(recipe: &Recipe, resume: bool, on: OnEvent) -> Result<Report> {
    let out = recipe.output_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, e.to_string()))?;
    let latest = if resume {
        let (latest, skipped) = checkpoint::newest_good(&out);
        skipped.into_iter().for_each(|s| on(Event::Note(s)));
        Some(latest.ok_or_else(|| Error::file(&out, "no complete, readable checkpoint to resume from"))?)
    } else {
        None
    };
    let (mut run, counts) = prepare(recipe, latest.as_ref().map(|l| l.1.as_path()))?;
    if counts.dropped + counts.truncated + counts.no_target > 0 {
        on(Event::Note(format!(
            "data: {} examples; {} longer than max_len {} dropped, {} truncated ({:?}); {} without trained tokens",
            counts.examples, counts.dropped, recipe.max_len, counts.truncated, recipe.truncation, counts.no_target
        )));
    }
    crate::peft::write_atomic(&out.join("recipe.yaml"), serde_yaml::to_string(recipe).expect("yaml").as_bytes())?;
    let refs = references(recipe, &run, &out, latest.is_none(), on)?;
    let (steps, last_loss, last_val, interrupted) = run_steps(recipe, &mut run, &refs, &out, on)?;
    let result = out.join(final_dir(recipe.method, &recipe.objective));
    if !interrupted {
        save_result(recipe, &run, &result)?;
    }
    Ok(Report { out, steps, final_loss: last_loss, val_loss: last_val, interrupted, result, counts })
}

/// Load the model, data, method and optimiser (from checkpoint `latest` when resuming).
fn prepare(recipe: &Recipe, latest: Option<&Path>) -> Result<(Run, super::data::Counts)> {
    let objective = objective::build(recipe)?;
    let source = crate::hub::resolve(&recipe.model, true)?;
    let tok = Tokenizer::load(&source)?;
    // Full tuning (and sparse tuning before its mask is picked) resumes from the model
    // saved in the checkpoint; a sparse checkpoint after it holds the delta alone.
    let model_source = match (latest, recipe.method) {
        (Some(dir), Method::Full) => crate::hub::ModelSource::HfDir(dir.to_path_buf()),
        (Some(dir), Method::Sparse) if dir.join("config.json").exists() => crate::hub::ModelSource::HfDir(dir.to_path_buf()),
        _ => source.clone(),
    };
    let opts = LoadOptions { dequantize: recipe.dequantize, weight_dtype: recipe.precision.dtype(), ..Default::default() };
    let mut model = CausalLm::load(&model_source, &opts)?;
    let template = tok.template(recipe.template.as_deref())?;
    model.checkpointing = recipe.gradient_checkpointing;
    let (train, val, counts) = load(recipe, &tok, &template, objective.data())?;
    let mut adapter = attach(recipe, &mut model, &tok, latest, (source, opts))?;
    let mut head = None;
    let outputs = objective.head_outputs(&train);
    if outputs > 0 {
        let h = ScoreHead::new(adapter, &model, outputs, recipe.seed, latest)?;
        head = Some(h.weight.clone());
        adapter = Box::new(h);
    }
    let params: Vec<_> = adapter.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(params.clone(), recipe.adamw);
    if let Some(s) = adapter.as_sparse() {
        s.restore_optimizer(&mut opt);
    }
    let start = match latest {
        Some(dir) => checkpoint::load_optimizer(dir, adapter.as_ref(), &mut opt)?.step,
        None => 0,
    };
    Ok((Run { model, tok, adapter, head, objective, train, val, start, opt, params, template }, counts))
}

/// The method, fresh, from `init_adapter`, or from a checkpoint; `base` is where the
/// model came from (sparse tuning compares with it).
fn attach(recipe: &Recipe, model: &mut CausalLm, tok: &Tokenizer, latest: Option<&Path>, base: (crate::hub::ModelSource, LoadOptions)) -> Result<Box<dyn Adapter>> {
    let from = latest.or(recipe.init_adapter.as_deref());
    Ok(match recipe.method {
        Method::Lora => Box::new(match from {
            Some(dir) => Lora::load(model, dir)?,
            None => Lora::attach(model, &recipe.lora, recipe.seed)?,
        }),
        Method::Full => Box::new(Full::attach(model, tok, &recipe.full)?),
        Method::Prefix => Box::new(match from {
            Some(dir) => PrefixTuning::load(model, dir)?,
            None => PrefixTuning::attach(model, &recipe.prefix, recipe.seed)?,
        }),
        Method::Mam => Box::new(match from {
            Some(dir) => Mam::load(model, dir)?,
            None => Mam::attach(model, &recipe.prefix, &recipe.adapter, recipe.seed)?,
        }),
        Method::Adapter => Box::new(match from {
            Some(dir) => Bottleneck::load(model, dir)?,
            None => Bottleneck::attach(model, &recipe.adapter, recipe.seed)?,
        }),
        Method::Pat => Box::new(match latest {
            Some(dir) => Pat::load(model, dir)?,
            None => Pat::attach(model, &recipe.pat, &recipe.lora, recipe.lr, recipe.seed)?,
        }),
        Method::Sparse => Box::new(Sparse::attach(model, tok, &recipe.sparse, base, latest)?),
        Method::Loramoe => Box::new(match from {
            Some(dir) => Loramoe::load(model, dir)?,
            None => Loramoe::attach(model, &recipe.loramoe, recipe.seed)?,
        }),
        Method::Prompt => Box::new(match from {
            Some(dir) => PromptTuning::load(model, dir)?,
            None => PromptTuning::attach(model, tok, &recipe.prompt, recipe.seed)?,
        }),
    })
}

fn layout(recipe: &Recipe, tok: &Tokenizer) -> Layout {
    Layout { pad: tok.eos_id.unwrap_or(0), max_len: recipe.max_len, packing: recipe.packing }
}

/// Reference log-probs of the training and validation sets.
type Refs = (Option<Vec<f32>>, Option<Vec<f32>>);

/// Reference log-probs of the training and validation sequences, when the objective
/// needs them (cached in the run directory; computed only before the first step).
fn references(recipe: &Recipe, run: &Run, out: &Path, fresh: bool, on: OnEvent) -> Result<Refs> {
    if !run.objective.needs_reference() {
        return Ok((None, None));
    }
    let l = layout(recipe, &run.tok);
    let what = format!("{}|{}|{:?}|{:?}|{:?}|{:?}", recipe.model, recipe.dequantize, recipe.precision, recipe.reference, recipe.init_adapter, recipe.method);
    let allowed = fresh || recipe.reference == Reference::Base;
    // A fresh LoRA adds exactly zero (B = 0): the starting policy is the base bit for bit,
    // so the pass runs with the adapter switched off and skips its products.
    let fresh_lora = recipe.method == Method::Lora && recipe.init_adapter.is_none() && run.start == 0;
    let which = if fresh_lora { Reference::Base } else { recipe.reference };
    let pass = |set: &Set, name: &str, on: &mut dyn FnMut(Event)| -> Result<Vec<f32>> {
        let path = out.join(format!("reference-{name}.bin"));
        let key = reference::key(set, &what);
        let pass = reference::Pass { model: &run.model, adapter: run.adapter.as_ref(), which, layout: l, batch: 2 * recipe.batch_size, allowed };
        pass.run(set, &path, &key, &mut |done, total| on(Event::Reference { done, total }))
    };
    let t = pass(&run.train, "train", on)?;
    let v = if run.val.seqs.is_empty() { None } else { Some(pass(&run.val, "val", on)?) };
    Ok((Some(t), v))
}

/// The optimiser steps: returns (steps done, last loss, last validation loss, interrupted).
fn run_steps(recipe: &Recipe, run: &mut Run, refs: &Refs, out: &Path, on: OnEvent) -> Result<(usize, f64, Option<f64>, bool)> {
    let l = layout(recipe, &run.tok);
    let by_units = run.objective.data() != Data::Conversations;
    let mut stream = Stream::new(&run.train, recipe, l.pad, by_units, run.objective.sequential());
    let total = recipe.max_steps.unwrap_or_else(|| (stream.per_epoch() * recipe.epochs).div_ceil(recipe.grad_accum));
    stream.skip(run.start * recipe.grad_accum);
    run.adapter.set_total_steps(total);
    let val_batches = all_batches(&run.val, recipe.batch_size, l.pad, by_units, (l.max_len, l.packing));
    let mut metrics = Metrics::open(out, run.start)?;
    catch_ctrl_c();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    let (mut last_loss, mut last_val, mut interrupted) = (f64::NAN, None, false);
    let mut step = run.start;
    let head = run.head.as_ref().map(|h| h.as_tensor().clone());
    let localize_at = run.adapter.as_sparse().map(|s| s.config().localize_at(total));
    if localize_at.is_some_and(|at| at > total) {
        return Err(Error::Input(format!("sparse.localize_steps: {} is past the run's {total} steps", localize_at.unwrap_or(0))));
    }
    while step < total {
        if localize_at == Some(step) {
            localize(run.adapter.as_ref(), &mut run.model, &mut run.opt, out, true, on)?;
        }
        let ts = Instant::now();
        let micro: Vec<_> = (0..recipe.grad_accum).map(|_| stream.next_batch()).collect();
        let lr = recipe.lr * recipe.schedule.factor(step, total, recipe.warmup_steps);
        run.adapter.set_training(true);
        run.adapter.begin_step(recipe.seed, step as u64);
        if let Some(full) = run.adapter.as_full() {
            full.hft_stage(&mut run.model, recipe.seed, step)?;
        }
        let ctx = Ctx { model: &run.model, set: &run.train, reference: refs.0.as_deref(), head: head.as_ref(), layout: l, adapter: Some(run.adapter.as_ref()) };
        let mut g = objective_step(run.objective.as_ref(), &ctx, &micro, &run.params)?;
        if !g.loss.is_finite() {
            let units: Vec<usize> = micro.iter().flat_map(|r| run.train.units_in(r)).collect();
            return Err(Error::Input(format!("step {}: the loss is {} (records {}); nothing was updated, and the last checkpoint is kept", step + 1, g.loss, run.train.origins(&units).join(", "))));
        }
        let grad_norm = clip_grad_norm(&mut g.grads, recipe.max_grad_norm)?;
        let active = run.adapter.as_full().and_then(|f| f.active()).or_else(|| run.adapter.as_sparse().and_then(|s| s.active()));
        run.opt.step_some(&g.grads, lr, active.as_deref())?;
        step += 1;
        run.adapter.set_training(false);
        let eval_now = !val_batches.is_empty() && ((recipe.eval_every > 0 && step.is_multiple_of(recipe.eval_every)) || step == total);
        let mut extra = g.stats.means();
        let val_loss = if eval_now {
            let vctx = Ctx { set: &run.val, reference: refs.1.as_deref(), ..ctx };
            let (v, stats) = evaluate(run.objective.as_ref(), &vctx, &val_batches)?;
            extra.extend(stats.means().into_iter().map(|(k, x)| (format!("val/{k}"), x)));
            Some(v)
        } else {
            None
        };
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
            extra,
        };
        metrics.push(m.clone())?;
        on(Event::Step { step, total, metrics: &m });
        interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let save = (recipe.save_every > 0 && step.is_multiple_of(recipe.save_every)) || step == total || interrupted;
        if save {
            checkpoint::save(out, step, &run.model, run.adapter.as_ref(), &run.opt, recipe.keep_checkpoints)?;
            metrics.plot(out, &recipe.name)?;
        }
        if interrupted {
            break;
        }
    }
    if !interrupted && localize_at == Some(total) {
        localize(run.adapter.as_ref(), &mut run.model, &mut run.opt, out, false, on)?;
    }
    Ok((step, last_loss, last_val, interrupted))
}

/// Sparse tuning: pick the mask (once; a resumed run may already have it), report it
/// and write `localization.json`.
fn localize(adapter: &dyn Adapter, model: &mut CausalLm, opt: &mut AdamW, out: &Path, retrain: bool, on: OnEvent) -> Result<()> {
    let Some(s) = adapter.as_sparse().filter(|s| !s.localized()) else { return Ok(()) };
    let r = s.localize(model, opt, retrain)?;
    let what = if retrain { "retraining only these from the base" } else { "grafting these onto the base" };
    on(Event::Note(format!(
        "sparse: mask of {} of {} elements ({:.4}%; |change| >= {:.3e}; {:.1}% of the change's squared norm; {:?}), {what}",
        r.nnz,
        r.total,
        100.0 * r.nnz as f64 / r.total as f64,
        r.threshold,
        100.0 * r.captured,
        r.by_kind
    )));
    crate::peft::write_atomic(&out.join("localization.json"), serde_json::to_string_pretty(&r).expect("json").as_bytes())
}

/// Write the result: the adapter (PEFT layout), the model, or a reward model.
fn save_result(recipe: &Recipe, run: &Run, dir: &Path) -> Result<()> {
    let Some(head) = &run.head else {
        return run.adapter.save(&run.model, dir);
    };
    let attributes: Vec<String> = match run.objective.data() {
        Data::Scored => crate::data::formats::scored::attribute_names(&recipe.data[0].path)?,
        _ => vec!["reward".into()],
    };
    let head = head.as_tensor().detach();
    match recipe.method {
        Method::Lora => {
            // Merge a copy of the adapter into a freshly loaded base.
            let adir = recipe.output_dir().join("adapter");
            run.adapter.save(&run.model, &adir)?;
            let source = crate::hub::resolve(&recipe.model, true)?;
            let mut base = CausalLm::load(&source, &LoadOptions { dequantize: true, ..Default::default() })?;
            Lora::load(&mut base, &adir)?.merge_into(&mut base)?;
            crate::model::reward::RewardModel::save(&base, &head, &attributes, &run.tok, &run.template, dir)
        }
        Method::Full => crate::model::reward::RewardModel::save(&run.model, &head, &attributes, &run.tok, &run.template, dir),
        Method::Prompt | Method::Loramoe | Method::Sparse | Method::Adapter | Method::Prefix | Method::Mam | Method::Pat => {
            Err(Error::Input(format!("a reward model with {} cannot be saved as a sequence-classification model; use method lora or full", run.adapter.method())))
        }
    }
}
