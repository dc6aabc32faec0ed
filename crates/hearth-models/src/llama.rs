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
use crate::registry::{CausalLm, KvCache, LoadOptions, ModelConfig};

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
    /// Per KV head, the cached keys transposed to f32 (prefill only).
    keys_t: Vec<Vec<f32>>,
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

    /// Fills `cos`/`sin` (`n * rope_dim/2` each) for positions `p0..p0+n`.
    fn rope_tables(&self, base: f32, p0: usize, n: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        let half = self.spec.rope_dim / 2;
        cos.clear();
        sin.clear();
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

/// What one attention task needs to see.
struct AttentionJob<'a> {
    q16: &'a [f16],
    /// Transposed keys per KV head and their stride, when many queries share them.
    keys_t: Option<(&'a [Vec<f32>], usize)>,
    k_cache: &'a [f16],
    v_cache: &'a [f16],
    n_tokens: usize,
    p0: usize,
    n_head: usize,
    group: usize,
    head_dim: usize,
    kv_dim: usize,
    scale: f32,
    window: Option<usize>,
}

impl AttentionJob<'_> {
    /// Computes head `h` for every token into `out` (`n_tokens * head_dim`
    /// outputs, then room for one row of scores, then the summation scratch).
    fn run(&self, h: usize, out: &mut [f32]) {
        let (outputs, rest) = out.split_at_mut(self.n_tokens * self.head_dim);
        let (scores, acc) = rest.split_at_mut(self.p0 + self.n_tokens);
        let kv_head = h / self.group;
        let hd = self.head_dim;
        let order = SumOrder::for_rows(self.n_tokens);
        let value = |p: usize| {
            &self.v_cache[p * self.kv_dim + kv_head * hd..p * self.kv_dim + (kv_head + 1) * hd]
        };
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
                None => scores_rows(
                    order,
                    q,
                    self.k_cache,
                    self.kv_dim,
                    kv_head * hd,
                    first,
                    scores,
                ),
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

impl CausalLm for LlamaModel {
    fn config(&self) -> &ModelConfig {
        &self.spec.config
    }

    fn new_cache(&self, capacity: usize) -> KvCache {
        let c = &self.spec.config;
        KvCache::new(c.n_layer, c.n_head_kv * c.head_dim, capacity)
    }

    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let c = &self.spec.config;
        let n = tokens.len();
        if n == 0 {
            logits.clear();
            return Ok(());
        }
        let p0 = cache.len;
        if p0 + n > cache.capacity {
            return Err(ModelError::ContextFull {
                needed: p0 + n,
                capacity: cache.capacity,
            });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(ModelError::BadToken {
                id,
                vocab_size: c.vocab_size,
            });
        }
        let (d, hd) = (c.n_embd, c.head_dim);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        let eps = self.spec.rms_eps;
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
            matmul: mm,
        } = &mut cache.scratch;

        // Embeddings.
        let embd = self.matrix(&self.token_embd)?;
        x.clear();
        x.resize(n * d, 0.0);
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

        let mut tmp = Vec::new();
        self.rope_tables(
            self.spec.rope_base,
            p0,
            n,
            &mut rope_cos[0],
            &mut rope_sin[0],
        );
        if let Some(base) = self.spec.rope_base_sliding {
            self.rope_tables(base, p0, n, &mut rope_cos[1], &mut rope_sin[1]);
        }
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
            let kv = &mut cache.layers[il];
            k16.clear();
            k16.resize(k.len(), f16::ZERO);
            ops::f32_to_f16(k, k16);
            kv.k.extend_from_slice(k16);
            k16.resize(v.len(), f16::ZERO);
            ops::f32_to_f16(v, k16);
            kv.v.extend_from_slice(k16);

            let total = p0 + n;
            let stride = n * hd + total + weighted_sum_scratch_len(hd);
            heads.clear();
            heads.resize(c.n_head * stride, 0.0);
            // Many queries share the keys: transpose them once per layer.
            let transposed = if n >= TRANSPOSE_KEYS_MIN_TOKENS {
                keys_t.resize_with(c.n_head_kv, Vec::new);
                let mut key_stride = 0;
                for (h, out) in keys_t.iter_mut().enumerate() {
                    let key = |p: usize| &kv.k[p * kv_dim + h * hd..p * kv_dim + (h + 1) * hd];
                    key_stride = transpose_keys(&key, total, hd, out);
                }
                Some((keys_t.as_slice(), key_stride))
            } else {
                None
            };
            let job = AttentionJob {
                q16,
                keys_t: transposed,
                k_cache: &kv.k,
                v_cache: &kv.v,
                n_tokens: n,
                p0,
                n_head: c.n_head,
                group: c.n_head / c.n_head_kv,
                head_dim: hd,
                kv_dim,
                scale,
                window: if sliding {
                    self.spec.sliding_window.map(|(w, _)| w)
                } else {
                    None
                },
            };
            self.pool
                .for_each_chunk_mut(heads, stride, &|h, out| job.run(h, out));
            attn.clear();
            attn.resize(n * q_dim, 0.0);
            for h in 0..c.n_head {
                let src = &heads[h * stride..h * stride + n * hd];
                for t in 0..n {
                    attn[t * q_dim + h * hd..t * q_dim + (h + 1) * hd]
                        .copy_from_slice(&src[t * hd..(t + 1) * hd]);
                }
            }
            self.matmul(&layer.wo, attn, n, proj, mm)?;
            if !all_logits && n_rows > 1 && il + 1 == self.layers.len() {
                // Only the last token's logits are wanted: as llama.cpp
                // does, finish the last layer for that row alone (which
                // also gives its one-token kernel choices and sums).
                proj.drain(..(n_rows - 1) * d);
                x.drain(..(n_rows - 1) * d);
                n_rows = 1;
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
        cache.len = p0 + n;

        // Output head: every row, or the last one only.
        let (rows, first) = if all_logits { (n, 0) } else { (1, n_rows - 1) };
        rms_norm_rows(&x[first * d..], &self.output_norm, eps, d, xn);
        self.matmul(&self.output, xn, rows, logits, mm)?;
        Ok(())
    }
}
