//! Continuous batching: one thread owns the model and runs a loop of steps. Each step
//! prefills one chunk of one waiting request (alone, with its own KV cache) and then
//! decodes one token for every running request together. A request whose prefill is done
//! joins the running batch (its cache is stacked onto the batch's, left-padded), and a
//! request that finishes, is cancelled (its client went away) or times out leaves it.
//! Rows of different adapters share the batch (see [`super::adapters`]).
use super::adapters::{AdapterSet, Kind};
use super::metrics::Metrics;
use super::row::{Row, Step};
use crate::model::{Batch, CausalLm, KvCache, LogitsFor};
use crate::tokenizer::Tokenizer;
use crate::Result;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

pub use super::row::{Event, Finish, JobParams, TokenLogprob};

/// One request: a prompt to continue `params.n` times.
pub struct Job {
    /// The adapter's served name; None for the base.
    pub adapter: Option<String>,
    pub prompt: Vec<u32>,
    pub params: JobParams,
    /// The index of this job's first choice in the response (a completion request with
    /// several prompts runs one job per prompt).
    pub first_choice: usize,
    pub events: UnboundedSender<Event>,
    pub deadline: Instant,
    pub received: Instant,
}

pub enum Control {
    Job(Job),
    LoadAdapter { name: String, path: PathBuf, reply: oneshot::Sender<std::result::Result<ModelEntry, String>> },
}

/// A name the server answers to (`GET /v1/models`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelEntry {
    pub id: String,
    pub created: u64,
    /// "base", "lora" or "prompt_tuning".
    pub kind: &'static str,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Rows decoded together at most.
    pub max_batch: usize,
    /// Prompt tokens prefilled per step (longer prompts are prefilled in chunks, with
    /// decode steps of the running batch in between).
    pub prefill_chunk: usize,
}

/// The HTTP side's handle on the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Control>,
    pub models: Arc<RwLock<Vec<ModelEntry>>>,
    pub metrics: Arc<Metrics>,
}

pub enum SubmitError {
    Full,
    Closed,
}

impl EngineHandle {
    pub fn submit(&self, c: Control) -> std::result::Result<(), SubmitError> {
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let r = self.tx.try_send(c).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        });
        if r.is_err() {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }

    pub fn has_model(&self, name: &str) -> bool {
        self.models.read().expect("models").iter().any(|m| m.id == name)
    }
}

/// Start the engine thread. `queue` bounds the requests waiting to start.
pub fn spawn(mut model: CausalLm, tok: Arc<Tokenizer>, base_name: &str, adapters: &[(String, PathBuf)], cfg: EngineConfig, queue: usize, metrics: Arc<Metrics>) -> Result<EngineHandle> {
    // A row's numbers must not depend on its batch: one quantized kernel for any row count.
    crate::model::kernels::qgemv::set_uniform_kernels(true);
    let mut set = AdapterSet::install(&mut model);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut models = vec![ModelEntry { id: base_name.to_string(), created: now, kind: "base", path: String::new() }];
    for (name, path) in adapters {
        if name == base_name {
            return Err(crate::Error::Input(format!("adapter name {name:?} is the base model's name: pick another")));
        }
        let s = set.load(&mut model, name, path)?;
        models.push(entry(s));
    }
    let models = Arc::new(RwLock::new(models));
    let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
    let engine = Engine { model, tok, set, cfg, rx, waiting: VecDeque::new(), running: vec![], cache: None, models: models.clone(), metrics: metrics.clone() };
    std::thread::Builder::new().name("instill-engine".into()).spawn(move || crate::model::on_workers(move || engine.run()))?;
    Ok(EngineHandle { tx, models, metrics })
}

fn entry(s: &super::adapters::Served) -> ModelEntry {
    let kind = match s.kind {
        Kind::Lora { .. } => "lora",
        Kind::Prompt { .. } => "prompt_tuning",
    };
    ModelEntry { id: s.name.clone(), created: s.created, kind, path: s.path.display().to_string() }
}

struct Engine {
    model: CausalLm,
    tok: Arc<Tokenizer>,
    set: AdapterSet,
    cfg: EngineConfig,
    rx: Receiver<Control>,
    /// Requests still prefilling, oldest first.
    waiting: VecDeque<Row>,
    /// Decoding together, in the batch cache's row order.
    running: Vec<Row>,
    cache: Option<KvCache>,
    models: Arc<RwLock<Vec<ModelEntry>>>,
    metrics: Arc<Metrics>,
}

impl Engine {
    fn run(mut self) {
        while self.intake() {
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.tick()));
            let err = match step {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "internal error in the decoding loop".to_string(),
            };
            // A failed step fails the requests in it; the server goes on.
            for r in self.running.drain(..).chain(self.waiting.drain(..)) {
                r.fail(&err, false);
            }
            self.cache = None;
        }
    }

    /// Take new work: wait for it when idle. False once the server has shut down and
    /// everything accepted has finished.
    fn intake(&mut self) -> bool {
        if self.running.is_empty() && self.waiting.is_empty() {
            match self.rx.recv() {
                Ok(c) => self.accept(c),
                Err(_) => return false,
            }
        }
        while self.running.len() + self.waiting.len() < self.cfg.max_batch {
            match self.rx.try_recv() {
                Ok(c) => self.accept(c),
                Err(_) => break,
            }
        }
        self.publish();
        true
    }

    fn publish(&self) {
        self.metrics.running.store(self.running.len() + self.waiting.len(), Ordering::Relaxed);
    }

    fn accept(&mut self, c: Control) {
        match c {
            Control::Job(job) => {
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                self.metrics.queue_wait.observe(job.received.elapsed().as_secs_f64());
                let (slot, prefix) = match job.adapter.as_deref().and_then(|a| self.set.get(a)) {
                    Some(s) => match &s.kind {
                        Kind::Lora { slot } => (Some(*slot), None),
                        Kind::Prompt { prefix } => (None, Some(prefix.clone())),
                    },
                    None => (None, None),
                };
                let job = Arc::new(job);
                for choice in 0..job.params.n.max(1) {
                    self.waiting.push_back(Row::new(job.clone(), choice, slot, prefix.clone(), &self.tok));
                }
            }
            Control::LoadAdapter { name, path, reply } => {
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                let r = self.set.load(&mut self.model, &name, &path).map(entry).map_err(|e| e.to_string());
                if let Ok(e) = &r {
                    self.models.write().expect("models").push(e.clone());
                }
                let _ = reply.send(r);
            }
        }
    }

    fn tick(&mut self) -> Result<()> {
        self.drop_gone()?;
        if let Some(mut row) = self.waiting.pop_front() {
            match self.prefill_chunk(&mut row)? {
                Step::More => self.waiting.push_front(row),
                Step::Finished => {}
                Step::Join(cache) => self.join(row, cache)?,
            }
        }
        if !self.running.is_empty() {
            self.decode_step()?;
        }
        Ok(())
    }

    /// Rows whose client went away or whose time ran out leave without finishing.
    fn drop_gone(&mut self) -> Result<()> {
        let now = Instant::now();
        self.waiting.retain(|r| r.alive(now));
        let keep: Vec<usize> = (0..self.running.len()).filter(|&i| self.running[i].alive(now)).collect();
        self.keep_rows(keep)
    }

    fn keep_rows(&mut self, keep: Vec<usize>) -> Result<()> {
        if keep.len() == self.running.len() {
            return Ok(());
        }
        let mut old: Vec<Option<Row>> = self.running.drain(..).map(Some).collect();
        self.running = keep.iter().map(|&i| old[i].take().expect("kept once")).collect();
        match &mut self.cache {
            Some(c) if !keep.is_empty() => {
                c.retain_rows(&keep)?;
                c.trim_front()?;
            }
            _ => self.cache = None,
        }
        self.publish();
        Ok(())
    }

    fn prefill_chunk(&mut self, row: &mut Row) -> Result<Step> {
        let (chunk, start, last) = row.next_chunk(self.cfg.prefill_chunk);
        self.set.set_route(&[row.slot]);
        let cache = row.own.get_or_insert_with(|| {
            let mut c = self.model.new_cache();
            c.per_row = true;
            c
        });
        let logits = self.model.forward_prefixed(&Batch::single(&chunk, start), Some(cache), LogitsFor::Last, row.prefix.as_ref())?;
        self.metrics.prompt_tokens.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if !last {
            return Ok(Step::More);
        }
        let logits = logits.to_vec2::<f32>()?.remove(0);
        let ctx = self.model.config.max_position;
        if row.choose(logits, &self.tok, ctx, &self.metrics)? {
            return Ok(Step::Finished);
        }
        Ok(Step::Join(row.own.take().expect("prefilled")))
    }

    fn join(&mut self, row: Row, own: KvCache) -> Result<()> {
        self.cache = Some(match self.cache.take() {
            Some(c) => KvCache::concat_left_padded(&[&c, &own])?,
            None => own,
        });
        self.running.push(row);
        self.publish();
        Ok(())
    }

    fn decode_step(&mut self) -> Result<()> {
        let tokens: Vec<u32> = self.running.iter().map(|r| r.pending).collect();
        let pos: Vec<u32> = self.running.iter().map(|r| r.pos).collect();
        let route: Vec<Option<usize>> = self.running.iter().map(|r| r.slot).collect();
        self.set.set_route(&route);
        let cache = self.cache.as_mut().expect("running rows have a cache");
        let logits = self.model.forward(&Batch::step(&tokens, &pos), Some(cache), LogitsFor::Last)?.to_vec2::<f32>()?;
        let ctx = self.model.config.max_position;
        let mut keep = vec![];
        for (i, (row, l)) in self.running.iter_mut().zip(logits).enumerate() {
            row.pos += 1;
            if !row.choose(l, &self.tok, ctx, &self.metrics)? {
                keep.push(i);
            }
        }
        self.keep_rows(keep)
    }
}
