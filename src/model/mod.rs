//! The causal language model: `forward(batch, cache) -> logits`, for every family.
pub mod arch;
pub mod batch;
pub mod block;
pub mod cache;
pub mod config;
pub mod gguf;
pub mod hsm;
pub mod kernels;
pub mod linear;
pub mod ops;
pub mod prefix;
pub mod recompute;
pub mod reward;
pub mod rope;
mod trainable;
pub mod weights;

pub use batch::Batch;
pub use cache::KvCache;
pub use config::ModelConfig;

use crate::hub::ModelSource;
use crate::{Error, Result};
use arch::Architecture;
use block::{new_attention, Attention, Block, Mlp, RmsNorm};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, Var};
use linear::Linear;
use rope::RopeTable;
use std::sync::Arc;
use weights::{Weight, WeightStore};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dequantize every GGUF tensor to f32 (exact reference numerics, more memory).
    pub dequantize: bool,
    /// How dense projection weights are held: f32, or bf16 for half the memory (each is
    /// widened to f32 when it multiplies, so activations and gradients stay f32).
    pub weight_dtype: DType,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { dequantize: false, weight_dtype: DType::F32, device: Device::Cpu }
    }
}

#[derive(Debug, Clone)]
enum Embedding {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    All,
    /// Only each row's final position: `(B, V)`.
    Last,
}

pub struct CausalLm {
    pub config: ModelConfig,
    pub arch: &'static dyn Architecture,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    pub device: Device,
    /// Recompute each block in the backward pass instead of keeping its activations.
    pub checkpointing: bool,
    /// Soft-prompt vectors `(n, hidden)` placed before every sequence (prompt tuning).
    pub prefix: Option<Tensor>,
    /// Per-layer key/value prefixes (prefix tuning).
    pub kv_prefix: Option<prefix::KvPrefix>,
    /// PAT's sparsification module after the embeddings (the blocks hold theirs).
    hsm_embed: Option<hsm::Hsm>,
}

impl CausalLm {
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Self> {
        match source {
            ModelSource::Gguf(p) => {
                let md = gguf::Metadata::read(p)?;
                Self::from_gguf(&md, opts)
            }
            ModelSource::HfDir(d) => {
                let path = d.join("config.json");
                let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e.to_string()))?;
                let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
                let mt = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
                let arch = arch::by_hf_model_type(mt)?;
                let config = arch.config_from_hf(&cfg)?;
                let store = WeightStore::from_hf_dir(d, arch, &config, &opts.device)?;
                Self::build(arch, config, &store, opts)
            }
        }
    }

    pub fn from_gguf(md: &gguf::Metadata, opts: &LoadOptions) -> Result<Self> {
        let arch = arch::by_name(md.arch()?).map_err(|e| Error::file(&md.path, e.to_string()))?;
        let config = arch.config_from_gguf(md)?;
        let store = WeightStore::from_gguf(md, &opts.device)?;
        Self::build(arch, config, &store, opts)
    }

    fn build(arch: &'static dyn Architecture, config: ModelConfig, w: &WeightStore, opts: &LoadOptions) -> Result<Self> {
        let c = &config;
        let linear = |name: &str| -> Result<Linear> {
            let bias = match w.opt(&format!("{name}.bias")) {
                Some(b) => Some(b.dense()?),
                None => None,
            };
            make_linear(w.get(&format!("{name}.weight"))?, bias, opts)
        };
        let norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm { weight: w.get(name)?.dense()?, eps: c.rms_eps }) };
        let opt_norm = |name: &str, on: bool| -> Result<Option<RmsNorm>> {
            if on {
                norm(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("blk.{i}");
            let attn: Attention = new_attention(
                c,
                linear(&format!("{p}.attn_q"))?,
                linear(&format!("{p}.attn_k"))?,
                linear(&format!("{p}.attn_v"))?,
                linear(&format!("{p}.attn_output"))?,
                opt_norm(&format!("{p}.attn_q_norm.weight"), c.qk_norm)?,
                opt_norm(&format!("{p}.attn_k_norm.weight"), c.qk_norm)?,
            );
            blocks.push(Block {
                attn_norm: norm(&format!("{p}.attn_norm.weight"))?,
                attn,
                post_attn_norm: opt_norm(&format!("{p}.post_attention_norm.weight"), c.sandwich_norm)?,
                mlp_norm: norm(&format!("{p}.ffn_norm.weight"))?,
                mlp: Mlp { gate: linear(&format!("{p}.ffn_gate"))?, up: linear(&format!("{p}.ffn_up"))?, down: linear(&format!("{p}.ffn_down"))?, act: c.activation },
                post_mlp_norm: opt_norm(&format!("{p}.post_ffw_norm.weight"), c.sandwich_norm)?,
                sliding: c.is_sliding(i),
                hsm: None,
            });
        }
        let emb_w = w.get("token_embd.weight")?;
        let embed = match emb_w {
            Weight::Quant(q) if emb_w.is_block_quantized() && !opts.dequantize => Embedding::Quant(q.clone()),
            _ => Embedding::Dense(emb_w.dense()?),
        };
        let head_w = w.opt("output.weight").unwrap_or(emb_w);
        let lm_head = make_linear(head_w, None, opts)?;
        check_shapes(c, &embed, &w.path)?;
        Ok(CausalLm { norm: norm("output_norm.weight")?, config, arch, embed, blocks, lm_head, device: opts.device.clone(), checkpointing: false, prefix: None, kv_prefix: None, hsm_embed: None })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.blocks.len())
    }

    /// Run the model over `batch`, extending `cache` when given.
    /// Returns logits `(B, T, V)` or `(B, V)` with [`LogitsFor::Last`].
    pub fn forward(&self, batch: &Batch, cache: Option<&mut KvCache>, which: LogitsFor) -> Result<Tensor> {
        on_workers(|| self.forward_here(batch, cache, which))
    }

    /// [`Self::forward`] with the soft prompt `prefix` instead of the model's own (the
    /// server runs rows of different prompt-tuning adapters through one base). Positions
    /// in `batch` are the sequence's own; a prefix of `n` vectors shifts them by `n`.
    pub fn forward_prefixed(&self, batch: &Batch, cache: Option<&mut KvCache>, which: LogitsFor, prefix: Option<&Tensor>) -> Result<Tensor> {
        on_workers(|| self.logits_from(self.hidden_with(batch, cache, prefix)?, which))
    }

    fn forward_here(&self, batch: &Batch, cache: Option<&mut KvCache>, which: LogitsFor) -> Result<Tensor> {
        self.logits_from(self.hidden_states(batch, cache)?, which)
    }

    fn logits_from(&self, h: Tensor, which: LogitsFor) -> Result<Tensor> {
        let (b, t, d) = h.dims3()?;
        let h = match which {
            LogitsFor::All => h,
            LogitsFor::Last => h.narrow(1, t - 1, 1)?.reshape((b, 1, d))?,
        };
        let logits = self.lm_head.forward(&self.norm.forward(&h)?)?;
        Ok(match which {
            LogitsFor::All => logits,
            LogitsFor::Last => logits.squeeze(1)?,
        })
    }

    /// The last block's output, before the final norm: `(B, T, hidden)`.
    pub fn hidden_states(&self, batch: &Batch, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.hidden_with(batch, cache, self.prefix.as_ref())
    }

    fn hidden_with(&self, batch: &Batch, cache: Option<&mut KvCache>, prefix: Option<&Tensor>) -> Result<Tensor> {
        let kv = self.kv_prefix.as_ref().filter(|k| k.enabled() && !k.is_empty() && prefix.is_none());
        let n = match (prefix, kv) {
            (Some(p), _) => p.dim(0)?,
            (None, Some(k)) => k.len()?,
            (None, None) => 0,
        };
        if n == 0 {
            return self.run_blocks(batch, cache, None);
        }
        // A soft prompt (or prefix tuning's placeholders, whose keys and values each layer
        // replaces) comes first, at positions 0..n; the sequence's own positions move up
        // by n. It is embedded only when the sequence starts (not in later decode steps).
        let starts = cache.as_ref().is_none_or(|c| c.is_empty());
        let mut b = batch.clone();
        b.positions.iter_mut().flatten().for_each(|p| *p += n as u32);
        if !starts {
            return self.run_blocks(&b, cache, None);
        }
        for r in 0..b.tokens.len() {
            let seg = b.segments[r].first().copied().unwrap_or(0);
            b.tokens[r].splice(0..0, std::iter::repeat_n(0, n));
            b.positions[r].splice(0..0, 0..n as u32);
            b.segments[r].splice(0..0, std::iter::repeat_n(seg, n));
            b.valid[r].splice(0..0, std::iter::repeat_n(true, n));
        }
        let x = match kv {
            Some(k) => self.run_blocks(&b, cache, Some(Prefix::Kv(k)))?,
            None => self.run_blocks(&b, cache, prefix.map(|p| Prefix::Soft(n, p)))?,
        };
        Ok(x.narrow(1, n, batch.dims().1)?)
    }

    /// Token embeddings `(B, T, hidden)`, scaled as the family wants.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let c = &self.config;
        let mut x = match &self.embed {
            Embedding::Dense(e) => e.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?,
            Embedding::Quant(q) => q.embedding(ids)?,
        };
        if let Some(s) = c.embed_scale {
            // Gemma rounds the scale to the activation dtype first.
            x = (x * (s as f32) as f64)?;
        }
        Ok(x)
    }

    /// Embed `batch` (its first tokens replaced by the soft prompt, or their keys and
    /// values by prefix tuning's) and run the blocks.
    fn run_blocks(&self, batch: &Batch, cache: Option<&mut KvCache>, prefix: Option<Prefix>) -> Result<Tensor> {
        batch.check()?;
        let (b, t) = batch.dims();
        let c = &self.config;
        let max_pos = batch.positions.iter().flatten().copied().max().unwrap_or(0) as usize;
        if max_pos >= c.max_position {
            return Err(Error::Input(format!("sequence reaches position {max_pos}, beyond this model's context of {} tokens", c.max_position)));
        }
        if let Some(&bad) = batch.tokens.iter().flatten().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::Input(format!("token id {bad} is outside the vocabulary ({})", c.vocab_size)));
        }
        let mut x = match prefix {
            Some(Prefix::Soft(n, p)) => {
                let own: Vec<u32> = batch.tokens.iter().flat_map(|r| r[n..].iter().copied()).collect();
                let ids = Tensor::from_vec(own, (b, t - n), &self.device)?;
                let soft = p.unsqueeze(0)?.broadcast_as((b, n, c.hidden_size))?;
                Tensor::cat(&[&soft, &self.embed(&ids)?], 1)?
            }
            _ => self.embed(&Tensor::from_vec(batch.tokens.concat(), (b, t), &self.device)?)?,
        };
        if let Some(h) = &self.hsm_embed {
            x = h.forward(&x)?;
        }
        let kv_prefix = match prefix {
            Some(Prefix::Kv(k)) => Some(k),
            _ => None,
        };
        // Without a cache (scoring, training) K and V are not stored: the cache's in-place
        // append would also cut the autograd graph.
        let keep_kv = cache.is_some();
        let mut local_cache;
        let cache = match cache {
            Some(c) => c,
            None => {
                local_cache = self.new_cache();
                &mut local_cache
            }
        };
        cache.push_keys(batch);
        // Batch-invariant decoding: each row attends over its own real keys (a suffix).
        let starts: Option<Vec<usize>> = (cache.per_row && t == 1).then(|| cache.keys.iter().map(|r| r.iter().take_while(|k| !k.valid).count()).collect());
        let global_rope = RopeTable::new(&batch.positions, c.head_dim, c.rope_theta, &self.device)?;
        let local_rope = match c.rope_local_theta {
            Some(th) if c.sliding_window.is_some() => Some(RopeTable::new(&batch.positions, c.head_dim, th, &self.device)?),
            _ => None,
        };
        let global_mask = cache::build_mask(&cache.keys, t, None, &self.device)?;
        let local_mask = match c.sliding_window {
            Some(w) => cache::build_mask(&cache.keys, t, Some(w), &self.device)?,
            None => None,
        };
        if kv_prefix.is_some() && self.checkpointing && !keep_kv {
            return Err(Error::Input("prefix tuning does not run with gradient checkpointing (the recomputed blocks would not see the prefix)".into()));
        }
        for (i, (blk, kv)) in self.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            let (rope, mask) = if blk.sliding { (local_rope.as_ref().unwrap_or(&global_rope), local_mask.as_ref()) } else { (&global_rope, global_mask.as_ref()) };
            let pkv = kv_prefix.map(|k| k.layer(self, i, b)).transpose()?;
            x = if self.checkpointing && !keep_kv {
                // The first block's input must be tracked for the recomputing op to be
                // part of the graph at all (embeddings are frozen).
                if !x.track_op() {
                    x = Var::from_tensor(&x)?.as_tensor().clone();
                }
                recompute::block_forward(blk, &x, rope, mask)?
            } else {
                blk.forward(&x, rope, mask, if keep_kv { Some(kv) } else { None }, starts.as_deref(), pkv.as_ref().map(|(k, v)| (k, v)))?
            };
        }
        Ok(x)
    }

    /// The final-normed hidden states `(B, T, hidden)`: logits are these times
    /// [`Self::output_weight`] transposed.
    pub fn final_hidden(&self, batch: &Batch) -> Result<Tensor> {
        on_workers(|| self.norm.forward(&self.hidden_states(batch, None)?))
    }

    /// The output projection `(vocab, hidden)` as a dense tensor.
    pub fn output_weight(&self) -> Result<Tensor> {
        self.lm_head.dense_weight()
    }

    /// The token embeddings `(vocab, hidden)` as a dense f32 tensor.
    pub fn embedding_weight(&self) -> Result<Tensor> {
        Ok(match &self.embed {
            Embedding::Dense(t) => t.to_dtype(DType::F32)?,
            Embedding::Quant(q) => q.dequantize(&self.device)?,
        })
    }

    /// Replace the token embeddings (and, untied, the output head's rows) with dense
    /// `(vocab, hidden)` matrices: a vocabulary extended or propagated. A tied model's
    /// head follows its embeddings; `head` must then be None.
    pub fn set_embeddings(&mut self, embed: Tensor, head: Option<Tensor>) -> Result<()> {
        let (v, h) = embed.dims2()?;
        if h != self.config.hidden_size || head.as_ref().is_some_and(|t| t.dims() != [v, h]) || self.config.tie_embeddings == head.is_some() {
            return Err(Error::Input(format!(
                "embeddings {:?} / head {:?} do not fit this model (hidden {}, tied {})",
                embed.dims(),
                head.as_ref().map(|t| t.dims().to_vec()),
                self.config.hidden_size,
                self.config.tie_embeddings
            )));
        }
        self.lm_head = Linear::dense(head.unwrap_or_else(|| embed.clone()), None);
        self.embed = Embedding::Dense(embed);
        self.config.vocab_size = v;
        Ok(())
    }

    /// The output projection as it is stored (quantized, bf16 or f32).
    pub fn output_linear(&self) -> &Linear {
        &self.lm_head
    }

    /// Every block projection under its Hugging Face module name
    /// (`model.layers.3.self_attn.q_proj`) and its GGUF weight name (`blk.3.attn_q.weight`),
    /// for adapters to attach to.
    pub fn projections_mut(&mut self) -> Vec<Projection<'_>> {
        let arch = self.arch;
        let mut out = vec![];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (stem, linear) in block::PROJECTIONS.iter().zip(b.projections_mut()) {
                let gguf = format!("blk.{i}.{stem}.weight");
                let hf = arch::gguf_to_hf(arch, &gguf).expect("every family names its projections");
                out.push(Projection { module: hf.trim_end_matches(".weight").to_string(), gguf, linear });
            }
        }
        out
    }

    /// A projection's `(out, ...)` tensor between this model's row order and Hugging
    /// Face's (llama's GGUF q/k rows are permuted for RoPE on adjacent pairs).
    pub fn rows_to_hf(&self, gguf: &str, t: Tensor, to_hf: bool) -> Result<Tensor> {
        self.arch.convert(gguf, t, &self.config, to_hf)
    }

    /// Every weight as a dense f32 tensor under its GGUF name (for export).
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        let emb = match &self.embed {
            Embedding::Dense(t) => t.clone(),
            Embedding::Quant(q) => q.dequantize(&self.device)?,
        };
        out.push(("token_embd.weight".to_string(), emb));
        out.push(("output_norm.weight".to_string(), self.norm.weight.clone()));
        if !self.config.tie_embeddings {
            out.push(("output.weight".to_string(), self.lm_head.dense_weight()?));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("blk.{i}.{s}");
            for (n, l) in block::PROJECTIONS.iter().zip(b.projections()) {
                out.push((p(&format!("{n}.weight")), l.dense_weight()?));
                if let Some(bias) = &l.bias {
                    out.push((p(&format!("{n}.bias")), bias.clone()));
                }
            }
            for (n, norm) in block::NORMS.iter().zip(b.norms()) {
                if let Some(norm) = norm {
                    out.push((p(&format!("{n}.weight")), norm.weight.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Bytes of weights one decode step reads: every projection plus the output head.
    pub fn weight_bytes_per_token(&self) -> usize {
        let mut n = self.lm_head.storage_bytes();
        for b in &self.blocks {
            for l in b.projections() {
                n += l.storage_bytes();
            }
        }
        n
    }

    /// A one-line description of how each projection is stored.
    pub fn weight_summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for b in &self.blocks {
            for l in b.projections() {
                let k = l.quant_type().map_or("f32".to_string(), |q| format!("{q:?}"));
                *counts.entry(k).or_default() += 1;
            }
        }
        counts.iter().map(|(k, v)| format!("{v}x{k}")).collect::<Vec<_>>().join(", ")
    }
}

/// One block projection with its names (see [`CausalLm::projections_mut`]).
pub struct Projection<'a> {
    pub module: String,
    pub gguf: String,
    pub linear: &'a mut Linear,
}

/// Run `f` on a rayon worker thread. Parallel kernels called from a worker join by
/// work-stealing; called from an outside thread, every call parks and wakes the caller
/// through a futex (measured: a quarter of decode time on 2 cores).
/// What comes before a sequence: a soft prompt of `n` vectors, or per-layer keys and values.
enum Prefix<'a> {
    Soft(usize, &'a Tensor),
    Kv(&'a prefix::KvPrefix),
}

pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("scope ran the closure")
}

fn make_linear(w: &Weight, bias: Option<Tensor>, opts: &LoadOptions) -> Result<Linear> {
    match w {
        Weight::Quant(q) if w.is_block_quantized() && !opts.dequantize => Linear::quantized(q.clone(), bias),
        _ => Ok(Linear::dense(w.dense()?.to_dtype(opts.weight_dtype)?, bias)),
    }
}

fn check_shapes(c: &ModelConfig, embed: &Embedding, path: &std::path::Path) -> Result<()> {
    let dims = match embed {
        Embedding::Dense(t) => t.dims().to_vec(),
        Embedding::Quant(q) => q.shape().dims().to_vec(),
    };
    if dims != [c.vocab_size, c.hidden_size] {
        return Err(Error::file(path, format!("token embedding has shape {dims:?}, config says [{}, {}]", c.vocab_size, c.hidden_size)));
    }
    Ok(())
}
