//! Fused attention on the CPU, `softmax(q k^T + mask) v` with its backward pass, that never
//! holds a head's `(R*T) x S` scores or probabilities whole (FlashAttention-2).
//!
//! Layout (see `Attention::forward`): `q (B, KV, R*T, D)`, already scaled, with each KV
//! head's `R` query heads folded into rows (`r * T + t` is query position `t`);
//! `k, v (B, KV, S, D)`; an additive mask `(B, 1, T, S)` shared by all heads.
//!
//! The forward pass walks key tiles with an online softmax (running max and sum, the
//! accumulator rescaled when the max grows) and keeps, per query row, only that max and
//! the log of the sum. The backward pass recomputes each tile's probabilities from them.
//! Key tiles the mask hides from a whole query tile (above the causal diagonal, outside a
//! sliding window, other packed segments, left padding) are skipped. Tiles multiply on a
//! register-blocked kernel written for LLVM to vectorize, compiled for AVX-512, AVX2 + FMA
//! and the baseline target (SSE2, NEON), chosen at run time.
use super::super::cache::MASKED;
use super::super::ops::{cpu_data, slice};
use crate::Result;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Mutex;

/// Query rows per tile.
const BQ: usize = 32;
/// Keys per tile: a multiple of every kernel width.
const BK: usize = 64;
/// Padded copies round rows up to a multiple of this: whole kernel steps.
const PAD: usize = LANES;
/// The backward pass splits a head's key tiles into chunks until there are this many
/// tasks; a chunk keeps its own `dq` for the head, summed in a fixed order, so results
/// do not depend on scheduling (training runs must repeat bit for bit).
const MIN_TASKS: usize = 16;
const ZEROS: [f32; BK] = [0.0; BK];

#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    kv: usize,
    /// Query heads per KV head.
    r: usize,
    t: usize,
    s: usize,
    d: usize,
}

impl Dims {
    fn heads(&self) -> usize {
        self.b * self.kv
    }
    fn rt(&self) -> usize {
        self.r * self.t
    }
    fn dp(&self) -> usize {
        self.d.next_multiple_of(PAD)
    }
    fn sp(&self) -> usize {
        self.s.next_multiple_of(PAD)
    }
    fn q_tiles(&self) -> usize {
        self.t.div_ceil(BQ)
    }
    fn k_tiles(&self) -> usize {
        self.s.div_ceil(BK)
    }
}

/// `fn $name(args)` running `$body::<S>(args)` for the best [`Simd`] this CPU has,
/// compiled with its instruction set enabled.
macro_rules! simd_variants {
    (fn $name:ident => $body:ident($($a:ident: $t:ty),*)) => {
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($a: $t),*) {
                    $body::<x86::Avx512>($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow($($a: $t),*) {
                    $body::<Auto<true>>($($a),*)
                }
                match isa() {
                    // SAFETY: `isa` found these features on this CPU.
                    Isa::Avx512 => return unsafe { wide($($a),*) },
                    Isa::Avx2 => return unsafe { narrow($($a),*) },
                    Isa::Baseline => {}
                }
            }
            // aarch64 always has fused multiply-adds; baseline x86-64 has not.
            $body::<Auto<{ cfg!(target_arch = "aarch64") }>>($($a),*)
        }
    };
}

// ---------- the op ----------

/// Whether [`attention`] takes these inputs (CPU, f32, a `(B, 1, T, S)` f32 mask or none).
pub fn applies(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, t: usize) -> bool {
    let cpu_f32 = |x: &Tensor| x.device().is_cpu() && x.dtype() == DType::F32;
    let (Ok((b, kv, rt, d)), Ok(kd), Ok(vd)) = (q.dims4(), k.dims4(), v.dims4()) else { return false };
    let shapes = t > 0 && rt % t == 0 && kd.0 == b && kd.1 == kv && kd.3 == d && kd == vd;
    let mask_ok = mask.is_none_or(|m| cpu_f32(m) && m.dims() == [b, 1, t, kd.2]);
    shapes && mask_ok && cpu_f32(q) && cpu_f32(k) && cpu_f32(v)
}

/// `softmax(q k^T + mask) v` for `q (B, KV, R*T, D)` (see the module docs), differentiable
/// in `q`, `k` and `v`. Check [`applies`] first.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, t: usize) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let mask = match mask {
        Some(m) => Some(m.contiguous()?),
        None => None,
    };
    let op = FlashAttention { mask, t, stats: Mutex::new(None) };
    if q.track_op() || k.track_op() || v.track_op() {
        Ok(q.apply_op3(&k, &v, op)?)
    } else {
        Ok(q.apply_op3_no_bwd(&k, &v, &op)?)
    }
}

struct FlashAttention {
    mask: Option<Tensor>,
    t: usize,
    /// Per query row of the forward pass: its max score and the log of its sum of exps.
    stats: Mutex<Option<Vec<f32>>>,
}

impl FlashAttention {
    fn dims(&self, q: &[usize], k: &[usize]) -> candle_core::Result<Dims> {
        match (q, k) {
            (&[b, kv, rt, d], &[_, _, s, _]) if rt % self.t == 0 => Ok(Dims { b, kv, r: rt / self.t, t: self.t, s, d }),
            _ => candle_core::bail!("fused attention: q {q:?} and k {k:?} do not fold {} queries", self.t),
        }
    }

    fn with_mask<R>(&self, f: impl FnOnce(Option<&[f32]>) -> R) -> candle_core::Result<R> {
        match &self.mask {
            Some(m) => {
                let (st, l) = m.storage_and_layout();
                Ok(f(Some(cpu_data(&st, l)?)))
            }
            None => Ok(f(None)),
        }
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "instill-flash-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims(l1.dims(), l2.dims())?;
        let (q, k, v) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (out, stats) = self.with_mask(|m| forward(q, k, v, m, dims))?;
        *self.stats.lock().expect("attention stats") = Some(stats);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(q.dims(), k.dims())?;
        let stats = self.stats.lock().expect("attention stats");
        let stats = stats.as_deref().ok_or_else(|| candle_core::Error::Msg("fused attention: backward before forward".into()))?;
        let ts = [q, k, v, out, g].into_iter().map(Tensor::contiguous).collect::<candle_core::Result<Vec<_>>>()?;
        let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
        let data = guards.iter().map(|(s, l)| cpu_data(s, l)).collect::<candle_core::Result<Vec<_>>>()?;
        let io = Io { q: data[0], k: data[1], v: data[2], o: data[3], g: data[4] };
        let (dq, dk, dv) = self.with_mask(|m| backward(&io, stats, m, dims))?;
        let dev = q.device();
        let grad = |x: &Tensor, d: Vec<f32>| x.track_op().then(|| Tensor::from_vec(d, x.shape(), dev)).transpose();
        Ok((grad(q, dq)?, grad(k, dk)?, grad(v, dv)?))
    }
}

// ---------- decode steps ----------

/// Whether [`decode`] serves this step: one query per sequence, CPU f32, nothing to
/// differentiate, and keys and values with unit stride along the head dimension.
pub fn decode_applies(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, t: usize) -> bool {
    let cpu_f32 = |x: &Tensor| x.device().is_cpu() && x.dtype() == DType::F32 && !x.track_op();
    let (Ok((b, kv, _, d)), Ok(kd), Ok(vd)) = (q.dims4(), k.dims4(), v.dims4()) else { return false };
    let unit = |x: &Tensor| x.layout().stride()[3] == 1;
    let mask_ok = mask.is_none_or(|m| cpu_f32(m) && m.dims() == [b, 1, 1, kd.2]);
    t == 1 && kd.0 == b && kd.1 == kv && kd.3 == d && kd == vd && unit(k) && unit(v) && mask_ok && cpu_f32(q) && cpu_f32(k) && cpu_f32(v)
}

/// One query row per sequence and head, `q (B, KV, R, D)`, over keys and values as they
/// lie in memory: candle's KV cache hands out strided views, which the matmul path copied
/// whole at every step (for SmolLM2 at 1,024 positions, 47 MB per token). `(B, KV, R, D)`.
/// Check [`decode_applies`] first.
pub fn decode(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, kv, r, d) = q.dims4()?;
    let s = k.dim(2)?;
    let (q, mask) = (q.contiguous()?, mask.map(Tensor::contiguous).transpose()?);
    let (qs, ql) = q.storage_and_layout();
    let qd = cpu_data(&qs, ql)?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (kd, vd) = (whole(&ks)?, whole(&vs)?);
    let guard = mask.as_ref().map(|m| m.storage_and_layout());
    let md = guard.as_ref().map(|(st, l)| cpu_data(st, l)).transpose()?;
    let mut out = vec![0f32; b * kv * r * d];
    out.par_chunks_mut(r * d).enumerate().for_each(|(bh, o)| {
        let (bi, h) = (bh / kv, bh % kv);
        let m = md.map(|m| &m[bi * s..(bi + 1) * s]);
        decode_head(o, &qd[bh * r * d..(bh + 1) * r * d], head_view(kd, kl, bi, h), head_view(vd, vl, bi, h), m, (r, d, s));
    });
    Ok(Tensor::from_vec(out, (b, kv, r, d), q.device())?)
}

/// A whole CPU storage as f32 values (a strided view indexes into it).
fn whole(st: &Storage) -> candle_core::Result<&[f32]> {
    match st {
        Storage::Cpu(c) => c.as_slice::<f32>(),
        _ => candle_core::bail!("decode attention: expected CPU storage"),
    }
}

/// Rows of head `h` of sequence `bi` in a `(B, H, S, D)` view with unit stride along D.
fn head_view<'a>(data: &'a [f32], l: &Layout, bi: usize, h: usize) -> Mat<'a> {
    let st = l.stride();
    Mat { data: &data[l.start_offset() + bi * st[0] + h * st[1]..], rs: st[2], cs: 1 }
}

simd_variants!(fn decode_head => decode_head_with(o: &mut [f32], q: &[f32], k: Mat, v: Mat, mask: Option<&[f32]>, rds: (usize, usize, usize)));

/// One (sequence, KV head): `R` query rows against `S` keys, the scores kept per row.
#[inline(always)]
fn decode_head_with<S: Simd>(o: &mut [f32], q: &[f32], k: Mat, v: Mat, mask: Option<&[f32]>, (r, d, s): (usize, usize, usize)) {
    let mut scores = vec![0f32; r * s];
    for j in 0..s {
        let kj = &k.data[j * k.rs..j * k.rs + d];
        let bias = mask.map_or(0.0, |m| m[j]);
        for (rr, q) in q.chunks_exact(d).enumerate() {
            scores[rr * s + j] = dot::<S>(q, kj) + bias;
        }
    }
    for row in scores.chunks_exact_mut(s) {
        let m = row_max(row);
        let inv = 1.0 / exp_sum::<S>(row, m);
        row.iter_mut().for_each(|p| *p *= inv);
    }
    o.fill(0.0);
    for j in 0..s {
        let vj = &v.data[j * v.rs..j * v.rs + d];
        for (rr, o) in o.chunks_exact_mut(d).enumerate() {
            let p = scores[rr * s + j];
            for (x, &y) in o.iter_mut().zip(vj) {
                *x = S::fmadd(p, y, *x);
            }
        }
    }
}

/// A dot product in 16 lanes, so it vectorizes.
#[inline(always)]
fn dot<S: Simd>(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (mut ai, mut bi) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut ai).zip(&mut bi) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l = S::fmadd(x, y, *l);
        }
    }
    let tail: f32 = ai.remainder().iter().zip(bi.remainder()).map(|(x, y)| x * y).sum();
    tail + lanes.iter().sum::<f32>()
}

// ---------- forward ----------

/// What every tile reads.
struct Shared<'a> {
    dims: Dims,
    /// `(B, T, S)`.
    mask: Option<&'a [f32]>,
    /// Per (batch row, query tile): the keys `[lo, hi)` outside of which every query of the
    /// tile sees only masked keys.
    spans: Vec<(usize, usize)>,
    /// Keys transposed per head, `(D, Sp)`, zero past `S`.
    kt: Vec<f32>,
}

impl<'a> Shared<'a> {
    fn new(k: &[f32], mask: Option<&'a [f32]>, dims: Dims) -> Self {
        Shared { dims, mask, spans: spans(mask, dims), kt: transpose_heads(k, dims) }
    }

    fn mask_row(&self, bi: usize, t: usize, j0: usize, nj: usize) -> &'a [f32] {
        match self.mask {
            Some(m) => &m[(bi * self.dims.t + t) * self.dims.s + j0..][..nj],
            None => &ZEROS[..nj],
        }
    }

    /// The key tiles a query tile visits: those meeting its span.
    fn key_tiles(&self, bi: usize, tt: usize) -> impl Iterator<Item = usize> {
        let (lo, hi) = self.spans[bi * self.dims.q_tiles() + tt];
        (lo / BK..hi.div_ceil(BK)).map(|jt| jt * BK)
    }
}

/// Keys at or below `MASKED` (what `build_mask` writes) count as masked: their weight is
/// exactly 0 next to any other key. A query that sees none spans every key: it then
/// averages them all, as the softmax of equal scores does on the unfused path.
fn spans(mask: Option<&[f32]>, d: Dims) -> Vec<(usize, usize)> {
    let tiles = d.q_tiles();
    let Some(mask) = mask else { return vec![(0, d.s); d.b * tiles] };
    let span = |bt: usize| {
        let (bi, tt) = (bt / tiles, bt % tiles);
        let (mut lo, mut hi) = (d.s, 0);
        for t in tt * BQ..(tt * BQ + BQ).min(d.t) {
            let row = &mask[(bi * d.t + t) * d.s..][..d.s];
            match (row.iter().position(|&v| v > MASKED), row.iter().rposition(|&v| v > MASKED)) {
                (Some(a), Some(b)) => (lo, hi) = (lo.min(a), hi.max(b + 1)),
                _ => return (0, d.s),
            }
        }
        (lo, hi)
    };
    (0..d.b * tiles).map(span).collect()
}

/// `(heads, S, D)` -> `(heads, D, Sp)`, zero past `S`.
fn transpose_heads(x: &[f32], d: Dims) -> Vec<f32> {
    let sp = d.sp();
    let mut out = vec![0f32; d.heads() * d.d * sp];
    out.par_chunks_mut(d.d * sp).zip(x.par_chunks(d.s * d.d)).for_each(|(o, x)| {
        for (j, row) in x.chunks_exact(d.d).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                o[c * sp + j] = v;
            }
        }
    });
    out
}

/// Rows of `d` values as rows of `dp` (zero-padded), borrowed when `d == dp`.
fn pad_rows(x: &[f32], d: usize, dp: usize) -> Cow<'_, [f32]> {
    if d == dp {
        return Cow::Borrowed(x);
    }
    let mut out = vec![0f32; x.len() / d * dp];
    out.par_chunks_mut(dp).zip(x.par_chunks(d)).for_each(|(o, r)| o[..d].copy_from_slice(r));
    Cow::Owned(out)
}

/// `out (B, KV, R*T, D)` and per row `(max score, ln sum of exps)`.
fn forward(q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, d: Dims) -> (Vec<f32>, Vec<f32>) {
    let sh = Shared::new(k, mask, d);
    let vp = pad_rows(v, d.d, d.dp());
    let mut out = vec![0f32; d.heads() * d.rt() * d.d];
    let mut stats = vec![0f32; 2 * d.heads() * d.rt()];
    // One task per (head, query head, query tile): chunks of T rows, then of BQ.
    let tasks: Vec<_> = out
        .chunks_mut(d.t * d.d)
        .zip(stats.chunks_mut(2 * d.t))
        .enumerate()
        .flat_map(|(hr, (o, st))| o.chunks_mut(BQ * d.d).zip(st.chunks_mut(2 * BQ)).enumerate().map(move |(tt, (o, st))| FwdTask { hr, tt, out: o, stats: st }))
        .collect();
    let vp = &*vp;
    tasks.into_par_iter().for_each(|mut task| fwd_tile(&sh, q, vp, &mut task));
    (out, stats)
}

struct FwdTask<'a> {
    /// `head * R + query head`.
    hr: usize,
    /// Query tile.
    tt: usize,
    out: &'a mut [f32],
    stats: &'a mut [f32],
}

simd_variants!(fn fwd_tile => fwd_body(sh: &Shared, q: &[f32], vp: &[f32], task: &mut FwdTask));

#[inline(always)]
fn fwd_body<S: Simd>(sh: &Shared, q: &[f32], vp: &[f32], task: &mut FwdTask) {
    let d = sh.dims;
    let (dd, dp, sp) = (d.d, d.dp(), d.sp());
    let (h, t0, nq) = (task.hr / d.r, task.tt * BQ, task.out.len() / dd);
    let bi = h / d.kv;
    let row0 = task.hr * d.t + t0;
    let q = Mat { data: &q[row0 * dd..(row0 + nq) * dd], rs: dd, cs: 1 };
    let kt = &sh.kt[h * dd * sp..(h + 1) * dd * sp];
    let vp = &vp[h * d.s * dp..(h + 1) * d.s * dp];
    let mut s = [0f32; BQ * BK];
    let mut acc = vec![0f32; nq * dp];
    let (mut mx, mut sum) = ([f32::NEG_INFINITY; BQ], [0f32; BQ]);
    for j0 in sh.key_tiles(bi, task.tt) {
        let nj = BK.min(d.s - j0);
        S::gemm(&mut s, BK, q, (&kt[j0..], sp), (nq, dd, nj.next_multiple_of(LANES)), false);
        for i in 0..nq {
            let row = &mut s[i * BK..i * BK + nj];
            for (x, &m) in row.iter_mut().zip(sh.mask_row(bi, t0 + i, j0, nj)) {
                *x += m;
            }
            let m_new = mx[i].max(row_max(row));
            let corr = exp::<S>(mx[i] - m_new);
            sum[i] = sum[i] * corr + exp_sum::<S>(row, m_new);
            mx[i] = m_new;
            if corr != 1.0 {
                acc[i * dp..(i + 1) * dp].iter_mut().for_each(|a| *a *= corr);
            }
        }
        let p = Mat { data: &s, rs: BK, cs: 1 };
        S::gemm(&mut acc, dp, p, (&vp[j0 * dp..], dp), (nq, nj, dp), true);
    }
    for i in 0..nq {
        let inv = 1.0 / sum[i];
        for (o, a) in task.out[i * dd..(i + 1) * dd].iter_mut().zip(&acc[i * dp..]) {
            *o = a * inv;
        }
        task.stats[2 * i] = mx[i];
        task.stats[2 * i + 1] = sum[i].ln();
    }
}

// ---------- backward ----------

/// The backward pass's inputs: the forward's and its output `o` with gradient `g`.
struct Io<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    g: &'a [f32],
}

/// What the backward tiles read besides [`Shared`]; row-padded copies to `Dp`.
struct Bwd<'a> {
    qp: Cow<'a, [f32]>,
    kp: Cow<'a, [f32]>,
    gp: Cow<'a, [f32]>,
    /// Values transposed per head, `(D, Sp)`.
    vt: Vec<f32>,
    stats: &'a [f32],
    /// Per query row: `sum(g * o)`.
    delta: Vec<f32>,
}

/// One backward task: a chunk of one head's key tiles, with its `dk`, `dv` rows and its
/// own `dq` for the head's rows.
struct BwdTask<'a> {
    h: usize,
    tiles: Vec<(usize, &'a mut [f32], &'a mut [f32])>,
    dq: &'a mut [f32],
}

/// `(dq, dk, dv)`.
fn backward(io: &Io, stats: &[f32], mask: Option<&[f32]>, d: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let sh = Shared::new(io.k, mask, d);
    let dp = d.dp();
    let delta = io.o.par_chunks(d.d).zip(io.g.par_chunks(d.d)).map(|(o, g)| o.iter().zip(g).map(|(a, b)| a * b).sum::<f32>()).collect();
    let bw = Bwd { qp: pad_rows(io.q, d.d, dp), kp: pad_rows(io.k, d.d, dp), gp: pad_rows(io.g, d.d, dp), vt: transpose_heads(io.v, d), stats, delta };
    let chunks = MIN_TASKS.div_ceil(d.heads()).clamp(1, d.k_tiles());
    let head_rows = d.rt() * dp;
    let (mut dk, mut dv) = (vec![0f32; d.heads() * d.s * d.d], vec![0f32; d.heads() * d.s * d.d]);
    let mut parts = vec![0f32; d.heads() * chunks * head_rows];
    let mut tasks = vec![];
    let heads = dk.chunks_mut(d.s * d.d).zip(dv.chunks_mut(d.s * d.d)).zip(parts.chunks_mut(chunks * head_rows));
    for (h, ((dk, dv), part)) in heads.enumerate() {
        let mut mine: Vec<BwdTask> = part.chunks_mut(head_rows).map(|dq| BwdTask { h, tiles: vec![], dq }).collect();
        // Interleaved, so causal masks give every chunk a like share of the work.
        for (jt, (k, v)) in dk.chunks_mut(BK * d.d).zip(dv.chunks_mut(BK * d.d)).enumerate() {
            mine[jt % chunks].tiles.push((jt * BK, k, v));
        }
        tasks.extend(mine);
    }
    tasks.into_par_iter().for_each(|mut task| {
        for i in 0..task.tiles.len() {
            bwd_tile(&sh, &bw, &mut task, i);
        }
    });
    let mut dq = vec![0f32; d.heads() * d.rt() * d.d];
    dq.par_chunks_mut(d.rt() * d.d).zip(parts.par_chunks(chunks * head_rows)).for_each(|(dq, part)| {
        for p in part.chunks(head_rows) {
            for (o, r) in dq.chunks_exact_mut(d.d).zip(p.chunks_exact(dp)) {
                o.iter_mut().zip(r).for_each(|(o, r)| *o += r);
            }
        }
    });
    (dq, dk, dv)
}

simd_variants!(fn bwd_tile => bwd_body(sh: &Shared, bw: &Bwd, task: &mut BwdTask, i: usize));

/// Key tile `task.tiles[i]` against every query tile that sees it.
#[inline(always)]
fn bwd_body<S: Simd>(sh: &Shared, bw: &Bwd, task: &mut BwdTask, i: usize) {
    let d = sh.dims;
    let (dd, dp, sp, h) = (d.d, d.dp(), d.sp(), task.h);
    let (j0, ref mut dk, ref mut dv) = task.tiles[i];
    let nj = dk.len() / dd;
    let bi = h / d.kv;
    let kt = (&sh.kt[h * dd * sp + j0..(h + 1) * dd * sp], sp);
    let vt = (&bw.vt[h * dd * sp + j0..(h + 1) * dd * sp], sp);
    let kp = (&bw.kp[(h * d.s + j0) * dp..(h + 1) * d.s * dp], dp);
    let (mut s, mut ds) = ([0f32; BQ * BK], [0f32; BQ * BK]);
    let (mut dk_acc, mut dv_acc) = (vec![0f32; nj * dp], vec![0f32; nj * dp]);
    for tt in 0..d.q_tiles() {
        if !sh.key_tiles(bi, tt).any(|k0| k0 == j0) {
            continue;
        }
        let (t0, nq) = (tt * BQ, BQ.min(d.t - tt * BQ));
        for r in 0..d.r {
            let local = r * d.t + t0;
            let row0 = h * d.rt() + local;
            let qp = Mat { data: &bw.qp[row0 * dp..(row0 + nq) * dp], rs: dp, cs: 1 };
            let gp = Mat { data: &bw.gp[row0 * dp..(row0 + nq) * dp], rs: dp, cs: 1 };
            S::gemm(&mut s, BK, qp, kt, (nq, dd, nj.next_multiple_of(LANES)), false);
            S::gemm(&mut ds, BK, gp, vt, (nq, dd, nj.next_multiple_of(LANES)), false);
            for q in 0..nq {
                let (m, ln_sum, delta) = (bw.stats[2 * (row0 + q)], bw.stats[2 * (row0 + q) + 1], bw.delta[row0 + q]);
                let (sr, dr) = (&mut s[q * BK..q * BK + nj], &mut ds[q * BK..q * BK + nj]);
                for ((x, dx), &mk) in sr.iter_mut().zip(dr.iter_mut()).zip(sh.mask_row(bi, t0 + q, j0, nj)) {
                    let p = exp::<S>(*x + mk - m - ln_sum);
                    (*x, *dx) = (p, p * (*dx - delta));
                }
            }
            // dV += P^T dO, dK += dS^T Q, dQ += dS K.
            let (pt, dst) = (Mat { data: &s, rs: 1, cs: BK }, Mat { data: &ds, rs: 1, cs: BK });
            S::gemm(&mut dv_acc, dp, pt, (gp.data, dp), (nj, nq, dp), true);
            S::gemm(&mut dk_acc, dp, dst, (qp.data, dp), (nj, nq, dp), true);
            S::gemm(&mut task.dq[local * dp..], dp, Mat { data: &ds, rs: BK, cs: 1 }, kp, (nq, nj, dp), true);
        }
    }
    for (out, acc) in [(&mut **dk, &dk_acc), (&mut **dv, &dv_acc)] {
        for (o, a) in out.chunks_exact_mut(dd).zip(acc.chunks_exact(dp)) {
            o.copy_from_slice(&a[..dd]);
        }
    }
}

// ---------- kernels ----------

/// Which compiled variant of the tile code this CPU runs (elsewhere than x86-64, the
/// baseline one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg(target_arch = "x86_64")]
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// Tests force each variant in turn (0: none forced).
#[cfg(test)]
static FORCE_ISA: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
fn isa() -> Isa {
    #[cfg(test)]
    match FORCE_ISA.load(std::sync::atomic::Ordering::Relaxed) {
        1 => return Isa::Avx512,
        2 => return Isa::Avx2,
        3 => return Isa::Baseline,
        _ => {}
    }
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx2") && has!("fma") {
        Isa::Avx512
    } else if has!("avx2") && has!("fma") {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

/// A matrix operand: element `(i, p)` at `data[i * rs + p * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// Column counts given to [`Simd::gemm`] are multiples of this.
const LANES: usize = 16;

/// The tile code's arithmetic for one instruction set.
trait Simd {
    /// Whether `mul_add` is one instruction (otherwise a slow exact libm call).
    const FMA: bool;

    /// `c (m x n) = [c +] a (m x k) b (k x n)` for `b` given as `(data, row stride)` and `n`
    /// a multiple of [`LANES`]; rows of `c` are `ldc` apart.
    fn gemm(c: &mut [f32], ldc: usize, a: Mat, b: (&[f32], usize), mkn: (usize, usize, usize), add: bool);

    #[inline(always)]
    fn fmadd(a: f32, b: f32, c: f32) -> f32 {
        if Self::FMA {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }
}

/// Plain Rust that LLVM vectorizes for whatever the caller enables (AVX2, SSE2, NEON).
struct Auto<const FMA: bool>;

impl<const F: bool> Simd for Auto<F> {
    const FMA: bool = F;

    #[inline(always)]
    fn gemm(c: &mut [f32], ldc: usize, a: Mat, b: (&[f32], usize), (m, k, n): (usize, usize, usize), add: bool) {
        debug_assert!(n.is_multiple_of(LANES));
        for i in (0..m).step_by(4) {
            let a = Mat { data: &a.data[i * a.rs..], ..a };
            let c = &mut c[i * ldc..];
            for j in (0..n).step_by(LANES) {
                let (b, c) = ((&b.0[j..], b.1), &mut c[j..]);
                match m - i {
                    1 => micro::<1, F>(c, ldc, a, b, k, add),
                    2 => micro::<2, F>(c, ldc, a, b, k, add),
                    3 => micro::<3, F>(c, ldc, a, b, k, add),
                    _ => micro::<4, F>(c, ldc, a, b, k, add),
                }
            }
        }
    }
}

/// `MR x LANES` of `c`, held in registers over the whole `k` sum.
#[inline(always)]
fn micro<const MR: usize, const F: bool>(c: &mut [f32], ldc: usize, a: Mat, (b, ldb): (&[f32], usize), k: usize, add: bool) {
    let mut acc = [[0f32; LANES]; MR];
    for p in 0..k {
        let bv: &[f32; LANES] = b[p * ldb..p * ldb + LANES].try_into().expect("LANES columns");
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = a.data[r * a.rs + p * a.cs];
            for (x, &y) in acc.iter_mut().zip(bv) {
                *x = Auto::<F>::fmadd(av, y, *x);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (x, &y) in c[r * ldc..r * ldc + LANES].iter_mut().zip(acc) {
            *x = if add { *x + y } else { y };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX-512 tiles in intrinsics: LLVM keeps auto-vectorized loops to 256 bits.
    use super::{Mat, Simd, LANES};
    use std::arch::x86_64::*;

    pub struct Avx512;

    impl Simd for Avx512 {
        const FMA: bool = true;

        #[inline(always)]
        fn gemm(c: &mut [f32], ldc: usize, a: Mat, b: (&[f32], usize), mkn: (usize, usize, usize), add: bool) {
            // SAFETY: only the `wide` variants, run once AVX-512F was detected, use `Avx512`.
            unsafe { gemm(c, ldc, a, b, mkn, add) }
        }
    }

    /// Up to 6 rows x 4 registers (64 columns) per step: 24 of the 32 registers accumulate.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn gemm(c: &mut [f32], ldc: usize, a: Mat, b: (&[f32], usize), (m, k, n): (usize, usize, usize), add: bool) {
        debug_assert!(n.is_multiple_of(LANES));
        for i in (0..m).step_by(6) {
            let a = Mat { data: &a.data[i * a.rs..], ..a };
            let c = &mut c[i * ldc..];
            let mut j = 0;
            while j < n {
                let nv = ((n - j) / LANES).min(4);
                let (b, c) = ((&b.0[j..], b.1), &mut c[j..]);
                macro_rules! rows {
                    ($nv:literal) => {
                        match m - i {
                            1 => micro::<1, $nv>(c, ldc, a, b, k, add),
                            2 => micro::<2, $nv>(c, ldc, a, b, k, add),
                            3 => micro::<3, $nv>(c, ldc, a, b, k, add),
                            4 => micro::<4, $nv>(c, ldc, a, b, k, add),
                            5 => micro::<5, $nv>(c, ldc, a, b, k, add),
                            _ => micro::<6, $nv>(c, ldc, a, b, k, add),
                        }
                    };
                }
                match nv {
                    4 => rows!(4),
                    2 | 3 => rows!(2),
                    _ => rows!(1),
                }
                j += if nv == 3 { 2 } else { nv } * LANES;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn micro<const MR: usize, const NV: usize>(c: &mut [f32], ldc: usize, a: Mat, (b, ldb): (&[f32], usize), k: usize, add: bool) {
        if k > 0 {
            // The bounds of every access below, checked once.
            assert!((MR - 1) * a.rs + (k - 1) * a.cs < a.data.len() && (k - 1) * ldb + NV * LANES <= b.len());
        }
        assert!((MR - 1) * ldc + NV * LANES <= c.len());
        let (ap, bp, cp) = (a.data.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for p in 0..k {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(bp.add(p * ldb + v * LANES));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r * a.rs + p * a.cs));
                for (x, &y) in acc.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, y, *x);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &x) in acc.iter().enumerate() {
                let at = cp.add(r * ldc + v * LANES);
                _mm512_storeu_ps(at, if add { _mm512_add_ps(_mm512_loadu_ps(at), x) } else { x });
            }
        }
    }
}

/// `e^x` without branches or calls, so loops over it vectorize (libm's `expf` does not):
/// Cephes' polynomial, within 2 ulp of `expf`; 0 below -87 (where `expf` gives a
/// denormal, under 1e-37, next to the row max's 1).
#[inline(always)]
fn exp<S: Simd>(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer, which lands in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = S::fmadd(xc, std::f32::consts::LOG2_E, SHIFT);
    let n = t - SHIFT;
    let r = S::fmadd(n, 2.121_944_4e-4, S::fmadd(n, -0.693_359_4, xc));
    let mut p = 1.987_569_1e-4;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = S::fmadd(p, r, c);
    }
    let y = S::fmadd(p, r * r, r + 1.0);
    let scale = f32::from_bits(((t.to_bits() as i32 - SHIFT.to_bits() as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

/// Max over a row, in lanes so it vectorizes.
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let max = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = max(*l, v);
        }
    }
    lanes.into_iter().chain(it.remainder().iter().copied()).fold(f32::NEG_INFINITY, max)
}

/// `x = e^(x - m)`, returning the sum.
#[inline(always)]
fn exp_sum<S: Simd>(x: &mut [f32], m: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut it = x.chunks_exact_mut(8);
    for c in &mut it {
        for (l, v) in lanes.iter_mut().zip(c) {
            *v = exp::<S>(*v - m);
            *l += *v;
        }
    }
    let mut sum = 0f32;
    for v in it.into_remainder() {
        *v = exp::<S>(*v - m);
        sum += *v;
    }
    sum + lanes.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_over_strided_cache_matches_unfused() {
        let dev = candle_core::Device::Cpu;
        let (b, kv, r, d, s, cap) = (2, 3, 3, 64, 37, 50);
        let q = Tensor::randn(0f32, 1.0, (b, kv, r, d), &dev).unwrap();
        // A cache of capacity 50 narrowed to its first 37 positions, as candle's KvCache does.
        let kc = Tensor::randn(0f32, 1.0, (b, kv, cap, d), &dev).unwrap();
        let vc = Tensor::randn(0f32, 1.0, (b, kv, cap, d), &dev).unwrap();
        let (k, v) = (kc.narrow(2, 0, s).unwrap(), vc.narrow(2, 0, s).unwrap());
        let mut m = vec![0f32; b * s];
        (0..5).for_each(|j| m[s + j] = MASKED); // row 1 left-padded by 5
        let mask = Tensor::from_vec(m, (b, 1, 1, s), &dev).unwrap();
        for mask in [None, Some(&mask)] {
            assert!(decode_applies(&q, &k, &v, mask, 1));
            let got = decode(&q, &k, &v, mask).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = crate::model::block::attend_unfused(&q, &k.contiguous().unwrap(), &v.contiguous().unwrap(), mask).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5, "{i}: {a} vs {b}");
            }
        }
    }
    use crate::model::block::attend_unfused;
    use crate::model::cache::{build_mask, KeyInfo};
    use candle_core::{Device, Var};

    /// The masks `build_mask` makes, over `S` keys of which the last `T` are the queries.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        None,
        Causal,
        /// Causal, rows left-padded by 5 and 9 keys (some queries are padding).
        LeftPad,
        /// Causal within two packed segments per row.
        Packed,
        /// Causal within a sliding window of this many keys.
        Window(usize),
        /// Causal, one query seeing no key at all (padding in a segment of its own).
        NoKeys,
    }

    fn keys(kind: Kind, b: usize, s: usize) -> Vec<Vec<KeyInfo>> {
        let key = |pos: usize, seg: u32, valid: bool| KeyInfo { pos: pos as u32, seg, valid };
        (0..b)
            .map(|bi| match kind {
                Kind::LeftPad => {
                    let pad = [5, 9][bi % 2];
                    (0..s).map(|j| if j < pad { key(0, 0, false) } else { key(j - pad, 0, true) }).collect()
                }
                Kind::Packed => {
                    let cut = s / 3 + bi;
                    (0..s).map(|j| if j < cut { key(j, 0, true) } else { key(j - cut, 1, true) }).collect()
                }
                Kind::NoKeys => (0..s).map(|j| if bi == 0 && j == s - 2 { key(j, 99, false) } else { key(j, 0, true) }).collect(),
                _ => (0..s).map(|j| key(j, 0, true)).collect(),
            })
            .collect()
    }

    fn mask(kind: Kind, b: usize, t: usize, s: usize) -> Option<Tensor> {
        let window = match kind {
            Kind::None => return None,
            Kind::Window(w) => Some(w),
            _ => None,
        };
        build_mask(&keys(kind, b, s), t, window, &Device::Cpu).unwrap()
    }

    /// Naive attention in f64 over the whole score matrix, and the gradients of
    /// `sum(out * probe)`: `(out, dq, dk, dv)`.
    fn reference(q: &[f32], k: &[f32], v: &[f32], mask: Option<&[f32]>, d: Dims, probe: &[f32]) -> [Vec<f32>; 4] {
        let (dd, rt) = (d.d, d.rt());
        let (mut out, mut dq) = (vec![0f64; q.len()], vec![0f64; q.len()]);
        let (mut dk, mut dv) = (vec![0f64; k.len()], vec![0f64; k.len()]);
        let at = |x: &[f32], i: usize| x[i * dd..(i + 1) * dd].iter().map(|&v| v as f64).collect::<Vec<_>>();
        for h in 0..d.heads() {
            for i in 0..rt {
                let (row, t, bi) = (h * rt + i, i % d.t, h / d.kv);
                let qi = at(q, row);
                let mut p: Vec<f64> = (0..d.s).map(|j| at(k, h * d.s + j).iter().zip(&qi).map(|(a, b)| a * b).sum::<f64>()).collect();
                if let Some(m) = mask {
                    p.iter_mut().enumerate().for_each(|(j, x)| *x += m[(bi * d.t + t) * d.s + j] as f64);
                }
                let mx = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                p.iter_mut().for_each(|x| *x = (*x - mx).exp());
                let sum: f64 = p.iter().sum();
                p.iter_mut().for_each(|x| *x /= sum);
                let g = at(probe, row);
                let dp: Vec<f64> = (0..d.s).map(|j| at(v, h * d.s + j).iter().zip(&g).map(|(a, b)| a * b).sum()).collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..d.s {
                    let (kj, vj, ds) = (at(k, h * d.s + j), at(v, h * d.s + j), p[j] * (dp[j] - delta));
                    for c in 0..dd {
                        out[row * dd + c] += p[j] * vj[c];
                        dq[row * dd + c] += ds * kj[c];
                        dk[(h * d.s + j) * dd + c] += ds * qi[c];
                        dv[(h * d.s + j) * dd + c] += p[j] * g[c];
                    }
                }
            }
        }
        [out, dq, dk, dv].map(|x| x.into_iter().map(|v| v as f32).collect())
    }

    fn vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Largest difference relative to the largest reference value.
    fn rel(a: &[f32], b: &[f32]) -> f32 {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        diff / b.iter().map(|x| x.abs()).fold(1e-6, f32::max)
    }

    /// Output and `q, k, v` gradients of `sum(attend(q, k, v) * probe)`.
    fn run(f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor, q: &Var, k: &Var, v: &Var, probe: &Tensor) -> [Vec<f32>; 4] {
        let out = f(q.as_tensor(), k.as_tensor(), v.as_tensor());
        let g = (&out * probe).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = |x: &Var| vec(g.get(x.as_tensor()).expect("a gradient"));
        [vec(&out), grad(q), grad(k), grad(v)]
    }

    /// Fused vs the f64 reference and vs the unfused candle path, output and gradients.
    fn check(b: usize, kv: usize, r: usize, t: usize, s: usize, d: usize, kind: Kind) {
        let dev = Device::Cpu;
        let dims = Dims { b, kv, r, t, s, d };
        let q = Var::randn(0f32, 0.5, (b, kv, r * t, d), &dev).unwrap();
        let k = Var::randn(0f32, 0.5, (b, kv, s, d), &dev).unwrap();
        let v = Var::randn(0f32, 1.0, (b, kv, s, d), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (b, kv, r * t, d), &dev).unwrap();
        let m = mask(kind, b, t, s);
        assert!(applies(q.as_tensor(), k.as_tensor(), v.as_tensor(), m.as_ref(), t));
        let fused = run(|q, k, v| attention(q, k, v, m.as_ref(), t).unwrap(), &q, &k, &v, &probe);
        let unfused = run(|q, k, v| attend_unfused(q, k, v, m.as_ref()).unwrap(), &q, &k, &v, &probe);
        let mv = m.as_ref().map(vec);
        let want = reference(&vec(&q), &vec(&k), &vec(&v), mv.as_deref(), dims, &vec(&probe));
        for (i, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
            let (e_ref, e_unf) = (rel(&fused[i], &want[i]), rel(&fused[i], &unfused[i]));
            assert!(e_ref < 1e-4 && e_unf < 1e-4, "{kind:?} b{b} kv{kv} r{r} t{t} s{s} d{d}: {name} off by {e_ref:e} (reference), {e_unf:e} (unfused)");
        }
    }

    #[test]
    fn fused_attention_matches_reference_and_unfused_path() {
        // T not a multiple of the tiles, S > T (a cache before the queries), R = 1 and 3,
        // D = 64 and 40 (padded rows), several key tiles so masked ones are skipped.
        check(2, 2, 3, 37, 37, 40, Kind::Causal);
        check(2, 1, 1, 70, 70, 64, Kind::Causal);
        check(2, 2, 3, 37, 66, 64, Kind::Causal);
        check(2, 1, 3, 45, 45, 40, Kind::LeftPad);
        check(2, 2, 1, 70, 100, 64, Kind::LeftPad);
        check(2, 1, 3, 50, 50, 64, Kind::Packed);
        check(2, 1, 1, 130, 130, 40, Kind::Packed);
        check(1, 1, 2, 150, 150, 64, Kind::Window(20));
        check(1, 2, 3, 40, 100, 40, Kind::Window(9));
        check(2, 2, 1, 33, 40, 40, Kind::None);
        check(2, 1, 3, 37, 37, 64, Kind::NoKeys);
        check(1, 1, 1, 3, 5, 64, Kind::Causal);
    }

    #[test]
    fn every_compiled_variant_matches() {
        #[cfg(target_arch = "x86_64")]
        let variants: Vec<u8> = {
            use std::arch::is_x86_feature_detected as has;
            let (avx2, avx512) = (has!("avx2") && has!("fma"), has!("avx512f") && has!("avx2") && has!("fma"));
            [(1, avx512), (2, avx2), (3, true)].into_iter().filter(|v| v.1).map(|v| v.0).collect()
        };
        #[cfg(not(target_arch = "x86_64"))]
        let variants: Vec<u8> = vec![3];
        for v in variants {
            FORCE_ISA.store(v, std::sync::atomic::Ordering::Relaxed);
            check(2, 1, 3, 45, 80, 40, Kind::LeftPad);
            check(1, 1, 2, 70, 70, 64, Kind::Window(20));
        }
        FORCE_ISA.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn a_query_that_sees_no_key_averages_all_of_them() {
        // What the unfused softmax gives a row of equal (masked) scores; it must stay finite.
        let (b, t, s, d) = (2, 37, 37, 64);
        let m = mask(Kind::NoKeys, b, t, s).unwrap();
        let q = Tensor::randn(0f32, 1.0, (b, 1, t, d), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, 1, s, d), &Device::Cpu).unwrap();
        let out = attention(&q, &q, &v, Some(&m), t).unwrap();
        let row = vec(&out.narrow(0, 0, 1).unwrap().narrow(2, t - 2, 1).unwrap());
        let mean = vec(&v.narrow(0, 0, 1).unwrap().mean(2).unwrap());
        assert!(rel(&row, &mean) < 1e-5, "{row:?} vs {mean:?}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (b, kv, r, t, s, d) = (1, 2, 2, 5, 7, 6);
        let m = mask(Kind::Causal, b, t, s);
        let q = Tensor::randn(0f32, 1.0, (b, kv, r * t, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, kv, s, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, kv, s, d), &dev).unwrap();
        use crate::model::ops::tests::check_grad;
        check_grad(|x| attention(x, &k, &v, m.as_ref(), t).unwrap(), &[b, kv, r * t, d]);
        check_grad(|x| attention(&q, x, &v, m.as_ref(), t).unwrap(), &[b, kv, s, d]);
        check_grad(|x| attention(&q, &k, x, m.as_ref(), t).unwrap(), &[b, kv, s, d]);
    }

    #[test]
    fn exp_is_close_to_libm() {
        // Its arguments are scores minus their row's max: at most 0, up to rounding.
        for i in 0..=110_000 {
            let x = -100.0 + i as f32 * 1e-3;
            let want = x.exp();
            let tol = if x < -87.0 { 1e-37 } else { 3e-7 * want };
            for got in [exp::<Auto<true>>(x), exp::<Auto<false>>(x)] {
                assert!((got - want).abs() <= tol, "exp({x}) = {got}, libm {want}");
            }
        }
    }
}
