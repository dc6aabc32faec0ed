//! The llama-family decoder: SmolLM2/Llama, Qwen2 and Gemma 3 share one
//! forward pass, parameterised by a [`DecoderSpec`].
//!
//! Numerics deliberately follow llama.cpp's CPU path so that outputs agree
//! token for token: weights stay in their block formats and are multiplied
//! against activations quantized to the weight's 8-bit companion format;
//! keys and values are cached in f16, queries are rounded to f16 before the
//! attention dot products and attention probabilities before the weighted
//! sum of values; RoPE angles are built by repeated multiplication as ggml
//! does.

use half::f16;
use hearth_kernels::attention::{
    SumOrder, scores_rows, scores_transposed, transpose_keys, weighted_sum_f16,
    weighted_sum_scratch_len,
};
use hearth_kernels::{MatmulScratch, Matrix, ThreadPool, WeightType, exact, matmul, ops};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use half::slice::HalfBitsSliceExt;

use crate::registry::{BatchSeq, CausalLm, KvPool, LoadOptions, LogitsWanted, ModelConfig};

/// How RoPE pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs `(2i, 2i+1)` (llama.cpp's "norm" mode; Llama GGUFs).
    Interleaved,
    /// Pairs `(i, i + d/2)` (llama.cpp's "neox" mode; Qwen2, Gemma).
    Halves,
}

/// The gated feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// Everything that distinguishes one llama-style family from another.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub config: ModelConfig,
    pub rms_eps: f32,
    pub rope_layout: RopeLayout,
    /// RoPE base frequency of global-attention layers.
    pub rope_base: f32,
    /// RoPE base frequency of sliding-window layers, when it differs.
    pub rope_base_sliding: Option<f32>,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    pub activation: Activation,
    /// Multiplier of the token embeddings (Gemma: sqrt(n_embd)).
    pub embed_scale: Option<f32>,
    /// Attention score scale.
    pub attn_scale: f32,
    /// Apply `attn_scale` to the query before the dot products (Gemma)
    /// rather than to the scores.
    pub scale_query: bool,
    /// Sliding window (tokens) and the layer pattern: layer `il` slides iff
    /// `(il + 1) % pattern != 0`.
    pub sliding_window: Option<(usize, usize)>,
}

fn key(gguf: &GgufFile, suffix: &str) -> Result<String> {
    Ok(format!("{}.{suffix}", gguf.architecture()?))
}

fn base_config(gguf: &GgufFile) -> Result<(ModelConfig, f32)> {
    let arch = gguf.architecture()?.to_string();
    let n_embd = gguf.get_u32(&key(gguf, "embedding_length")?)? as usize;
    let n_head = gguf.get_u32(&key(gguf, "attention.head_count")?)? as usize;
    let n_head_kv = gguf
        .get_u32_opt(&key(gguf, "attention.head_count_kv")?)?
        .map_or(n_head, |n| n as usize);
    let n_layer = gguf.get_u32(&key(gguf, "block_count")?)? as usize;
    let context_length = gguf
        .get_u32_opt(&key(gguf, "context_length")?)?
        .map_or(2048, |n| n as usize);
    let head_dim = match gguf.get_u32_opt(&key(gguf, "attention.key_length")?)? {
        Some(n) => n as usize,
        None if n_head > 0 => n_embd / n_head,
        None => 0,
    };
    let rms_eps = gguf
        .get_f32_opt(&key(gguf, "attention.layer_norm_rms_epsilon")?)?
        .unwrap_or(1e-5);
    let embd = gguf.tensor("token_embd.weight")?;
    let vocab_size = embd.info.dims.get(1).copied().unwrap_or(0) as usize;
    let corrupt = |reason: String| ModelError::Corrupt {
        path: gguf.path().to_path_buf(),
        reason,
    };
    if n_embd == 0
        || n_head == 0
        || n_head_kv == 0
        || n_layer == 0
        || head_dim == 0
        || vocab_size == 0
    {
        return Err(corrupt("a model dimension is zero".into()));
    }
    if !n_head.is_multiple_of(n_head_kv) {
        return Err(corrupt(format!(
            "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
        )));
    }
    let config = ModelConfig {
        architecture: arch,
        vocab_size,
        context_length,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
    };
    Ok((config, rms_eps))
}

fn rope_dim(gguf: &GgufFile, head_dim: usize) -> Result<usize> {
    Ok(gguf
        .get_u32_opt(&key(gguf, "rope.dimension_count")?)?
        .map_or(head_dim, |n| n as usize))
}

/// Llama / SmolLM2 (and Llama 3 with `rope_freqs.weight`).
pub fn spec_llama(gguf: &GgufFile) -> Result<DecoderSpec> {
    let (config, rms_eps) = base_config(gguf)?;
    Ok(DecoderSpec {
        rope_dim: rope_dim(gguf, config.head_dim)?,
        rope_base: gguf
            .get_f32_opt(&key(gguf, "rope.freq_base")?)?
            .unwrap_or(10_000.0),
        rope_base_sliding: None,
        rope_layout: RopeLayout::Interleaved,
        activation: Activation::Silu,
        embed_scale: None,
        attn_scale: 1.0 / (config.head_dim as f32).sqrt(),
        scale_query: false,
        sliding_window: None,
        rms_eps,
        config,
    })
}

/// Qwen2: llama with q/k/v biases and the "halves" RoPE layout.
pub fn spec_qwen2(gguf: &GgufFile) -> Result<DecoderSpec> {
    let mut spec = spec_llama(gguf)?;
    spec.rope_layout = RopeLayout::Halves;
    spec.rope_base = gguf
        .get_f32_opt(&key(gguf, "rope.freq_base")?)?
        .unwrap_or(1_000_000.0);
    Ok(spec)
}

/// Gemma 3: scaled embeddings, q/k norms, post-norms, GELU, sliding-window
/// layers with their own RoPE base, every sixth layer global.
pub fn spec_gemma3(gguf: &GgufFile) -> Result<DecoderSpec> {
    let (config, rms_eps) = base_config(gguf)?;
    let window = gguf
        .get_u32_opt(&key(gguf, "attention.sliding_window")?)?
        .map(|w| w as usize);
    Ok(DecoderSpec {
        rope_dim: rope_dim(gguf, config.head_dim)?,
        rope_base: gguf
            .get_f32_opt(&key(gguf, "rope.freq_base")?)?
            .unwrap_or(1_000_000.0),
        rope_base_sliding: Some(10_000.0),
        rope_layout: RopeLayout::Halves,
        activation: Activation::GeluTanh,
        embed_scale: Some((config.n_embd as f32).sqrt()),
        attn_scale: 1.0 / (config.head_dim as f32).sqrt(),
        scale_query: true,
        sliding_window: window.map(|w| (w, 6)),
        rms_eps,
        config,
    })
}

/// A weight matrix: its place in the file's tensor-data section.
#[derive(Debug, Clone)]
struct Weight {
    name: String,
    ty: WeightType,
    rows: usize,
    cols: usize,
    start: usize,
    len: usize,
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
    post_ffn_norm: Option<Vec<f32>>,
}

/// Reusable buffers of one sequence's forward pass.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    heads: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    q16: Vec<f16>,
    k16: Vec<f16>,
    /// RoPE cosines and sines of this call's positions: `[0]` for global
    /// layers, `[1]` for sliding-window layers when their base differs.
    rope_cos: [Vec<f32>; 2],
    rope_sin: [Vec<f32>; 2],
    /// Per prefilling sequence and KV head, the cached keys transposed to
    /// f32 (prompt chunks only).
    keys_t: Vec<Vec<f32>>,
    /// Rows of the batch that feed the output head.
    keep: Vec<usize>,
    matmul: MatmulScratch,
}

/// A loaded llama-family model.
pub struct LlamaModel {
    gguf: GgufFile,
    spec: DecoderSpec,
    token_embd: Weight,
    output: Weight,
    output_norm: Vec<f32>,
    rope_freq_factors: Option<Vec<f32>>,
    rope_pairs: Vec<(usize, usize)>,
    layers: Vec<Layer>,
    pool: ThreadPool,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("path", &self.gguf.path())
            .field("spec", &self.spec)
            .finish()
    }
}

impl LlamaModel {
    /// Maps the weights of `gguf` according to `spec`, checking every shape.
    pub fn new(gguf: GgufFile, spec: DecoderSpec, options: &LoadOptions) -> Result<Self> {
        let c = &spec.config;
        let q_dim = c.n_head * c.head_dim;
        let kv_dim = c.n_head_kv * c.head_dim;
        let (n_embd, n_ff) = (c.n_embd, ffn_width(&gguf)?);
        let token_embd = weight(&gguf, "token_embd.weight", c.vocab_size, n_embd)?;
        let output = if gguf.has_tensor("output.weight") {
            weight(&gguf, "output.weight", c.vocab_size, n_embd)?
        } else {
            token_embd.clone()
        };
        let output_norm = vector(&gguf, "output_norm.weight", n_embd)?;
        let rope_freq_factors = optional_vector(&gguf, "rope_freqs.weight", spec.rope_dim / 2)?;
        if spec.rope_dim > c.head_dim || !spec.rope_dim.is_multiple_of(2) {
            return Err(ModelError::Corrupt {
                path: gguf.path().to_path_buf(),
                reason: format!(
                    "rope dimension {} does not fit head dimension {}",
                    spec.rope_dim, c.head_dim
                ),
            });
        }
        let rope_pairs = rope_pairs(spec.rope_layout, spec.rope_dim);
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let name = |suffix: &str| format!("blk.{il}.{suffix}");
            layers.push(Layer {
                attn_norm: vector(&gguf, &name("attn_norm.weight"), n_embd)?,
                wq: weight(&gguf, &name("attn_q.weight"), q_dim, n_embd)?,
                wk: weight(&gguf, &name("attn_k.weight"), kv_dim, n_embd)?,
                wv: weight(&gguf, &name("attn_v.weight"), kv_dim, n_embd)?,
                wo: weight(&gguf, &name("attn_output.weight"), n_embd, q_dim)?,
                bq: optional_vector(&gguf, &name("attn_q.bias"), q_dim)?,
                bk: optional_vector(&gguf, &name("attn_k.bias"), kv_dim)?,
                bv: optional_vector(&gguf, &name("attn_v.bias"), kv_dim)?,
                q_norm: optional_vector(&gguf, &name("attn_q_norm.weight"), c.head_dim)?,
                k_norm: optional_vector(&gguf, &name("attn_k_norm.weight"), c.head_dim)?,
                post_attn_norm: optional_vector(
                    &gguf,
                    &name("post_attention_norm.weight"),
                    n_embd,
                )?,
                ffn_norm: vector(&gguf, &name("ffn_norm.weight"), n_embd)?,
                w_gate: weight(&gguf, &name("ffn_gate.weight"), n_ff, n_embd)?,
                w_up: weight(&gguf, &name("ffn_up.weight"), n_ff, n_embd)?,
                w_down: weight(&gguf, &name("ffn_down.weight"), n_embd, n_ff)?,
                post_ffn_norm: optional_vector(&gguf, &name("post_ffw_norm.weight"), n_embd)?,
            });
        }
        Ok(Self {
            pool: ThreadPool::new(options.n_threads),
            gguf,
            spec,
            token_embd,
            output,
            output_norm,
            rope_freq_factors,
            rope_pairs,
            layers,
        })
    }

    /// The spec this model runs with.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    fn matrix(&self, w: &Weight) -> Result<Matrix<'_>> {
        let data = self.gguf.data_section();
        let bytes = data
            .get(w.start..w.start + w.len)
            .ok_or_else(|| ModelError::Corrupt {
                path: self.gguf.path().to_path_buf(),
                reason: format!("tensor '{}' lies outside the file", w.name),
            })?;
        Matrix::new(w.ty, w.rows, w.cols, bytes).map_err(|source| ModelError::Kernel {
            tensor: w.name.clone(),
            source,
        })
    }

    fn matmul(
        &self,
        w: &Weight,
        x: &[f32],
        n: usize,
        out: &mut Vec<f32>,
        scratch: &mut MatmulScratch,
    ) -> Result<()> {
        out.clear();
        out.resize(n * w.rows, 0.0);
        let m = self.matrix(w)?;
        matmul(&self.pool, &m, x, n, out, scratch).map_err(|source| ModelError::Kernel {
            tensor: w.name.clone(),
            source,
        })
    }

    fn is_sliding(&self, il: usize) -> bool {
        matches!(self.spec.sliding_window, Some((_, pattern)) if pattern > 0 && !(il + 1).is_multiple_of(pattern))
    }

    /// Appends to `cos`/`sin` (`n * rope_dim/2` each) for positions `p0..p0+n`.
    fn rope_tables(&self, base: f32, p0: usize, n: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        let half = self.spec.rope_dim / 2;
        let theta_scale = base.powf(-2.0 / self.spec.rope_dim as f32);
        for t in 0..n {
            let mut theta = (p0 + t) as f32;
            for i in 0..half {
                let factor = self.rope_freq_factors.as_ref().map_or(1.0, |f| f[i]);
                let angle = theta / factor;
                cos.push(angle.cos());
                sin.push(angle.sin());
                theta *= theta_scale;
            }
        }
    }
}

fn ffn_width(gguf: &GgufFile) -> Result<usize> {
    let info = gguf.tensor("blk.0.ffn_gate.weight")?.info;
    Ok(info.dims.get(1).copied().unwrap_or(0) as usize)
}

fn weight(gguf: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Weight> {
    let view = gguf.tensor(name)?;
    let info = view.info;
    let found: Vec<u64> = info.dims.clone();
    if found.len() != 2 || found[0] as usize != cols || found[1] as usize != rows {
        return Err(ModelError::BadShape {
            path: gguf.path().to_path_buf(),
            name: name.to_string(),
            expected: vec![cols as u64, rows as u64],
            found,
        });
    }
    let len = view.data.len();
    // Validate once at load; the forward pass re-slices by range.
    Matrix::new(info.ty, rows, cols, view.data).map_err(|source| ModelError::Kernel {
        tensor: name.to_string(),
        source,
    })?;
    Ok(Weight {
        name: name.to_string(),
        ty: info.ty,
        rows,
        cols,
        start: info.offset as usize,
        len,
    })
}

fn vector(gguf: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let view = gguf.tensor(name)?;
    let values = view.to_f32()?;
    if values.len() != len {
        return Err(ModelError::BadShape {
            path: gguf.path().to_path_buf(),
            name: name.to_string(),
            expected: vec![len as u64],
            found: view.info.dims.clone(),
        });
    }
    Ok(values)
}

fn optional_vector(gguf: &GgufFile, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
    if gguf.has_tensor(name) {
        vector(gguf, name, len).map(Some)
    } else {
        Ok(None)
    }
}

/// RMS-normalises each `width`-row of `x` in place-free fashion into `out`.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, width: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    for (src, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        exact::rms_norm(src, weight, eps, dst);
    }
}

/// RMS-normalises every `head_dim` slice of `x` in place.
fn rms_norm_heads(x: &mut [f32], weight: &[f32], eps: f32, head_dim: usize, tmp: &mut Vec<f32>) {
    tmp.resize(head_dim, 0.0);
    for head in x.chunks_exact_mut(head_dim) {
        tmp.copy_from_slice(head);
        exact::rms_norm(tmp, weight, eps, head);
    }
}

/// The dimension pairs RoPE rotates in each head.
fn rope_pairs(layout: RopeLayout, rope_dim: usize) -> Vec<(usize, usize)> {
    let half = rope_dim / 2;
    match layout {
        RopeLayout::Interleaved => (0..half).map(|i| (2 * i, 2 * i + 1)).collect(),
        RopeLayout::Halves => (0..half).map(|i| (i, i + half)).collect(),
    }
}

/// Rotates every head of `x` (`n` tokens of `n_heads * head_dim`).
fn apply_rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    pairs: &[(usize, usize)],
    cos: &[f32],
    sin: &[f32],
) {
    let half = pairs.len();
    for (t, token) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        let (cos, sin) = (
            &cos[t * half..(t + 1) * half],
            &sin[t * half..(t + 1) * half],
        );
        for head in token.chunks_exact_mut(head_dim) {
            exact::rope(head, pairs, cos, sin);
        }
    }
}

fn add_bias(x: &mut [f32], bias: Option<&Vec<f32>>) {
    if let Some(bias) = bias {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// Prompt chunks of at least this many tokens score keys from a transposed
/// f32 copy of the cache instead of one key at a time.
const TRANSPOSE_KEYS_MIN_TOKENS: usize = 4;

/// Where one sequence's keys and values live in the pool.
struct PagedKv<'a> {
    k: &'a [f16],
    v: &'a [f16],
    blocks: &'a [u32],
    block_size: usize,
    kv_dim: usize,
}

impl<'a> PagedKv<'a> {
    /// Offset of position `p`'s row.
    fn row(&self, p: usize) -> usize {
        (self.blocks[p / self.block_size] as usize * self.block_size + p % self.block_size)
            * self.kv_dim
    }

    fn key(&self, p: usize, offset: usize, width: usize) -> &'a [f16] {
        let start = self.row(p) + offset;
        &self.k[start..start + width]
    }

    fn value(&self, p: usize, offset: usize, width: usize) -> &'a [f16] {
        let start = self.row(p) + offset;
        &self.v[start..start + width]
    }

    /// `out[j] = q · key(first + j)`, block by block (each block's rows are
    /// contiguous; every score is one independent dot product).
    fn scores(&self, order: SumOrder, q: &[f16], offset: usize, first: usize, out: &mut [f32]) {
        let mut p = first;
        let mut done = 0;
        while done < out.len() {
            let in_block = p % self.block_size;
            let run = (self.block_size - in_block).min(out.len() - done);
            let base = self.blocks[p / self.block_size] as usize * self.block_size * self.kv_dim;
            let block = &self.k[base..base + self.block_size * self.kv_dim];
            scores_rows(
                order,
                q,
                block,
                self.kv_dim,
                offset,
                in_block,
                &mut out[done..done + run],
            );
            done += run;
            p += run;
        }
    }
}

/// What the attention tasks of one sequence need to see.
struct AttentionJob<'a> {
    /// This sequence's queries (`n_tokens * n_head * head_dim`).
    q16: &'a [f16],
    /// Transposed keys per KV head and their stride, when many queries share them.
    keys_t: Option<(&'a [Vec<f32>], usize)>,
    kv: PagedKv<'a>,
    n_tokens: usize,
    p0: usize,
    n_head: usize,
    group: usize,
    head_dim: usize,
    scale: f32,
    window: Option<usize>,
}

impl AttentionJob<'_> {
    /// Floats one head's task needs: its outputs, one row of scores, then
    /// the summation scratch.
    fn task_len(&self) -> usize {
        self.n_tokens * self.head_dim
            + self.p0
            + self.n_tokens
            + weighted_sum_scratch_len(self.head_dim)
    }

    /// Computes head `h` for every token into `out` (`n_tokens * head_dim`
    /// outputs, then room for one row of scores, then the summation scratch).
    fn run(&self, h: usize, out: &mut [f32]) {
        let (outputs, rest) = out.split_at_mut(self.n_tokens * self.head_dim);
        let (scores, acc) = rest.split_at_mut(self.p0 + self.n_tokens);
        let kv_head = h / self.group;
        let hd = self.head_dim;
        let order = SumOrder::for_rows(self.n_tokens);
        let value = |p: usize| self.kv.value(p, kv_head * hd, hd);
        for t in 0..self.n_tokens {
            let pos = self.p0 + t;
            let first = match self.window {
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            let q = &self.q16[(t * self.n_head + h) * hd..(t * self.n_head + h + 1) * hd];
            let scores = &mut scores[..pos + 1 - first];
            match self.keys_t {
                Some((keys_t, stride)) => {
                    scores_transposed(order, q, &keys_t[kv_head], stride, first, scores)
                }
                None => self.kv.scores(order, q, kv_head * hd, first, scores),
            }
            scores.iter_mut().for_each(|s| *s *= self.scale);
            exact::softmax(scores, first);
            // llama.cpp multiplies f16 values by probabilities rounded to f16.
            scores
                .iter_mut()
                .for_each(|s| *s = f16::from_f32(*s).to_f32());
            weighted_sum_f16(
                order,
                scores,
                first,
                &value,
                &mut outputs[t * hd..(t + 1) * hd],
                acc,
            );
        }
    }
}

/// Copies the rows listed in `keep` (ascending) of `width`-wide `x` to its front.
fn keep_rows(x: &mut Vec<f32>, keep: &[usize], width: usize) {
    for (dst, &src) in keep.iter().enumerate() {
        if dst != src {
            x.copy_within(src * width..(src + 1) * width, dst * width);
        }
    }
    x.truncate(keep.len() * width);
}

impl LlamaModel {
    /// Checks a batch against the pool and the vocabulary; returns its rows.
    fn check_batch(&self, batch: &[BatchSeq<'_>], pool: &KvPool) -> Result<usize> {
        let c = &self.spec.config;
        let kv_dim = c.n_head_kv * c.head_dim;
        if pool.kv_dim != kv_dim || pool.layers.len() != c.n_layer {
            return Err(ModelError::KvLayout {
                reason: format!(
                    "pool holds {} layers of width {}, the model needs {} of width {kv_dim}",
                    pool.layers.len(),
                    pool.kv_dim,
                    c.n_layer
                ),
            });
        }
        let mut rows = 0;
        for seq in batch {
            let needed = seq.pos + seq.tokens.len();
            let capacity = seq.blocks.len() * pool.block_size;
            if needed > capacity {
                return Err(ModelError::ContextFull { needed, capacity });
            }
            if let Some(&b) = seq.blocks.iter().find(|&&b| b as usize >= pool.n_blocks) {
                return Err(ModelError::KvLayout {
                    reason: format!("block {b} is outside a pool of {}", pool.n_blocks),
                });
            }
            if let Some(&id) = seq.tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(ModelError::BadToken {
                    id,
                    vocab_size: c.vocab_size,
                });
            }
            rows += seq.tokens.len();
        }
        Ok(rows)
    }
}

impl CausalLm for LlamaModel {
    fn config(&self) -> &ModelConfig {
        &self.spec.config
    }

    fn forward_batch(
        &self,
        batch: &[BatchSeq<'_>],
        pool: &mut KvPool,
        scratch: &mut Scratch,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.spec.config;
        let n = self.check_batch(batch, pool)?;
        if n == 0 {
            return Ok(());
        }
        let (d, hd) = (c.n_embd, c.head_dim);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        let eps = self.spec.rms_eps;
        let block_size = pool.block_size;
        let Scratch {
            x,
            xn,
            q,
            k,
            v,
            attn,
            heads,
            proj,
            gate,
            up,
            q16,
            k16,
            rope_cos,
            rope_sin,
            keys_t,
            keep,
            matmul: mm,
        } = scratch;

        // Embeddings, RoPE tables and the rows the output head needs.
        let embd = self.matrix(&self.token_embd)?;
        x.clear();
        x.resize(n * d, 0.0);
        let tokens = batch.iter().flat_map(|s| s.tokens.iter());
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            embd.dequantize_row(id as usize, row)
                .map_err(|source| ModelError::Kernel {
                    tensor: self.token_embd.name.clone(),
                    source,
                })?;
            if let Some(scale) = self.spec.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        rope_cos.iter_mut().for_each(Vec::clear);
        rope_sin.iter_mut().for_each(Vec::clear);
        keep.clear();
        let mut row0 = 0;
        for seq in batch {
            let m = seq.tokens.len();
            let [cos0, cos1] = rope_cos;
            let [sin0, sin1] = rope_sin;
            self.rope_tables(self.spec.rope_base, seq.pos, m, cos0, sin0);
            if let Some(base) = self.spec.rope_base_sliding {
                self.rope_tables(base, seq.pos, m, cos1, sin1);
            }
            match seq.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => keep.push(row0 + m - 1),
                LogitsWanted::All => keep.extend(row0..row0 + m),
            }
            row0 += m;
        }

        let mut tmp = Vec::new();
        // Rows of `x` still carried (all tokens until the last layer).
        let mut n_rows = n;
        for (il, layer) in self.layers.iter().enumerate() {
            let sliding = self.is_sliding(il);
            let table = usize::from(sliding && self.spec.rope_base_sliding.is_some());
            let (cos, sin) = (&rope_cos[table], &rope_sin[table]);

            // Attention block.
            rms_norm_rows(x, &layer.attn_norm, eps, d, xn);
            self.matmul(&layer.wq, xn, n, q, mm)?;
            self.matmul(&layer.wk, xn, n, k, mm)?;
            self.matmul(&layer.wv, xn, n, v, mm)?;
            add_bias(q, layer.bq.as_ref());
            add_bias(k, layer.bk.as_ref());
            add_bias(v, layer.bv.as_ref());
            if let Some(w) = &layer.q_norm {
                rms_norm_heads(q, w, eps, hd, &mut tmp);
            }
            if let Some(w) = &layer.k_norm {
                rms_norm_heads(k, w, eps, hd, &mut tmp);
            }
            apply_rope(q, c.n_head, hd, &self.rope_pairs, cos, sin);
            apply_rope(k, c.n_head_kv, hd, &self.rope_pairs, cos, sin);
            let mut scale = self.spec.attn_scale;
            if self.spec.scale_query {
                q.iter_mut().for_each(|v| *v *= scale);
                scale = 1.0;
            }
            q16.clear();
            q16.resize(q.len(), f16::ZERO);
            ops::f32_to_f16(q, q16);

            // New keys and values into each sequence's blocks.
            let layer_kv = &mut pool.layers[il];
            for (src, dst) in [(&*k, &mut layer_kv.k), (&*v, &mut layer_kv.v)] {
                k16.clear();
                k16.resize(src.len(), f16::ZERO);
                ops::f32_to_f16(src, k16);
                let dst = dst.reinterpret_cast_mut::<f16>();
                let mut row = 0;
                for seq in batch {
                    for t in 0..seq.tokens.len() {
                        let p = seq.pos + t;
                        let slot =
                            seq.blocks[p / block_size] as usize * block_size + p % block_size;
                        dst[slot * kv_dim..(slot + 1) * kv_dim]
                            .copy_from_slice(&k16[row * kv_dim..(row + 1) * kv_dim]);
                        row += 1;
                    }
                }
            }
            let layer_kv = &pool.layers[il];
            let (k_all, v_all) = (
                layer_kv.k.reinterpret_cast::<f16>(),
                layer_kv.v.reinterpret_cast::<f16>(),
            );

            // Sequences with many new tokens score keys from a transposed copy.
            let n_prefill = batch
                .iter()
                .filter(|s| s.tokens.len() >= TRANSPOSE_KEYS_MIN_TOKENS)
                .count();
            keys_t.resize_with(n_prefill * c.n_head_kv, Vec::new);
            let mut key_strides = Vec::with_capacity(n_prefill);
            let prefilling = batch
                .iter()
                .filter(|s| s.tokens.len() >= TRANSPOSE_KEYS_MIN_TOKENS);
            for (seq, out) in prefilling.zip(keys_t.chunks_mut(c.n_head_kv)) {
                let kv = PagedKv {
                    k: k_all,
                    v: v_all,
                    blocks: seq.blocks,
                    block_size,
                    kv_dim,
                };
                let total = seq.pos + seq.tokens.len();
                let mut stride = 0;
                for (h, out) in out.iter_mut().enumerate() {
                    let key = |p: usize| kv.key(p, h * hd, hd);
                    stride = transpose_keys(&key, total, hd, out);
                }
                key_strides.push(stride);
            }
            let window = if sliding {
                self.spec.sliding_window.map(|(w, _)| w)
            } else {
                None
            };
            let mut jobs = Vec::with_capacity(batch.len());
            let (mut row, mut slot) = (0, 0);
            for seq in batch {
                let m = seq.tokens.len();
                let transposed = if m >= TRANSPOSE_KEYS_MIN_TOKENS {
                    let keys = &keys_t[slot * c.n_head_kv..(slot + 1) * c.n_head_kv];
                    slot += 1;
                    Some((keys, key_strides[slot - 1]))
                } else {
                    None
                };
                jobs.push(AttentionJob {
                    q16: &q16[row * q_dim..(row + m) * q_dim],
                    keys_t: transposed,
                    kv: PagedKv {
                        k: k_all,
                        v: v_all,
                        blocks: seq.blocks,
                        block_size,
                        kv_dim,
                    },
                    n_tokens: m,
                    p0: seq.pos,
                    n_head: c.n_head,
                    group: c.n_head / c.n_head_kv,
                    head_dim: hd,
                    scale,
                    window,
                });
                row += m;
            }
            // One task per (sequence, head), each with room for the longest.
            let stride = jobs.iter().map(AttentionJob::task_len).max().unwrap_or(0);
            heads.clear();
            heads.resize(jobs.len() * c.n_head * stride, 0.0);
            self.pool.for_each_chunk_mut(heads, stride, &|task, out| {
                let job = &jobs[task / c.n_head];
                job.run(task % c.n_head, &mut out[..job.task_len()]);
            });
            attn.clear();
            attn.resize(n * q_dim, 0.0);
            let mut row = 0;
            for (i, job) in jobs.iter().enumerate() {
                for h in 0..c.n_head {
                    let base = (i * c.n_head + h) * stride;
                    let src = &heads[base..base + job.n_tokens * hd];
                    for t in 0..job.n_tokens {
                        attn[(row + t) * q_dim + h * hd..(row + t) * q_dim + (h + 1) * hd]
                            .copy_from_slice(&src[t * hd..(t + 1) * hd]);
                    }
                }
                row += job.n_tokens;
            }
            drop(jobs);
            self.matmul(&layer.wo, attn, n, proj, mm)?;
            if il + 1 == self.layers.len() && keep.len() < n_rows {
                // Only some rows feed the output head: as llama.cpp does,
                // finish the last layer for those rows alone (which also
                // gives a single row its one-token kernel choices and sums).
                keep_rows(proj, keep, d);
                keep_rows(x, keep, d);
                n_rows = keep.len();
                if n_rows == 0 {
                    return Ok(());
                }
            }
            if let Some(w) = &layer.post_attn_norm {
                rms_norm_rows(proj, w, eps, d, xn);
                std::mem::swap(proj, xn);
            }
            x.iter_mut().zip(proj.iter()).for_each(|(a, b)| *a += b);

            // Feed-forward block.
            rms_norm_rows(x, &layer.ffn_norm, eps, d, xn);
            self.matmul(&layer.w_gate, xn, n_rows, gate, mm)?;
            self.matmul(&layer.w_up, xn, n_rows, up, mm)?;
            match self.spec.activation {
                Activation::Silu => exact::swiglu(gate, up),
                Activation::GeluTanh => exact::geglu(gate, up),
            }
            self.matmul(&layer.w_down, gate, n_rows, proj, mm)?;
            if let Some(w) = &layer.post_ffn_norm {
                rms_norm_rows(proj, w, eps, d, xn);
                std::mem::swap(proj, xn);
            }
            x.iter_mut().zip(proj.iter()).for_each(|(a, b)| *a += b);
        }

        // Output head over the kept rows, appended after earlier logits.
        rms_norm_rows(x, &self.output_norm, eps, d, xn);
        let mut out = std::mem::take(proj);
        self.matmul(&self.output, xn, n_rows, &mut out, mm)?;
        logits.extend_from_slice(&out);
        *proj = out;
        Ok(())
    }
}
