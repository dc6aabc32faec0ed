//! The model-family registry and the interface the engine drives.
//!
//! A family is one entry in [`ARCHITECTURES`]: the GGUF architecture name and
//! a function that reads that family's hyper-parameters into a
//! [`DecoderSpec`]. Every supported family today is a llama-style decoder;
//! their differences (RoPE layout, biases, extra norms, activation, sliding
//! window) are data in the spec, not copies of the forward pass.

use std::path::Path;
use std::sync::Arc;

use half::f16;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::{self, DecoderSpec, LlamaModel};

/// A GGUF architecture name and the function that reads its spec.
pub type ArchEntry = (&'static str, fn(&GgufFile) -> Result<DecoderSpec>);

/// Every architecture Hearth runs, by GGUF `general.architecture` name.
pub const ARCHITECTURES: &[ArchEntry] = &[
    ("llama", llama::spec_llama),
    ("qwen2", llama::spec_qwen2),
    ("gemma3", llama::spec_gemma3),
];

/// Hyper-parameters shared by every causal LM, as the engine needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// GGUF `general.architecture`.
    pub architecture: String,
    /// Rows of the output projection (logits per position).
    pub vocab_size: usize,
    /// Context length the model was trained with.
    pub context_length: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads for the forward pass (the calling thread included).
    pub n_threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        let n_threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self { n_threads }
    }
}

/// A causal language model: token ids in, next-token logits out.
pub trait CausalLm: Send + Sync + std::fmt::Debug {
    fn config(&self) -> &ModelConfig;

    /// A cache for one sequence of at most `capacity` tokens. Memory is
    /// committed as the sequence grows, not up front.
    fn new_cache(&self, capacity: usize) -> KvCache;

    /// Appends `tokens` to the sequence held in `cache` (at positions
    /// `cache.len()..`) and writes logits to `logits`: for the last token only
    /// (`vocab_size` values) or, with `all_logits`, for every token
    /// (`tokens.len() * vocab_size`, row-major).
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        logits: &mut Vec<f32>,
    ) -> Result<()>;
}

/// Per-sequence key/value cache (f16) and scratch memory of the forward pass.
///
/// Layout per layer: `k[pos * kv_dim + i]`, same for `v`.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) len: usize,
    pub(crate) capacity: usize,
    pub(crate) scratch: llama::Scratch,
}

#[derive(Debug)]
pub(crate) struct LayerKv {
    pub(crate) k: Vec<f16>,
    pub(crate) v: Vec<f16>,
}

impl KvCache {
    pub(crate) fn new(n_layer: usize, kv_dim: usize, capacity: usize) -> Self {
        let layers = (0..n_layer)
            .map(|_| LayerKv {
                k: Vec::with_capacity(capacity * kv_dim),
                v: Vec::with_capacity(capacity * kv_dim),
            })
            .collect();
        Self {
            layers,
            len: 0,
            capacity,
            scratch: llama::Scratch::default(),
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most tokens this cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position from `len` on (no-op if `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for layer in &mut self.layers {
            let kv_dim = layer.k.len().checked_div(self.len).unwrap_or(0);
            layer.k.truncate(len * kv_dim);
            layer.v.truncate(len * kv_dim);
        }
        self.len = len;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.truncate(0);
    }
}

/// Opens `path` and loads the model family named by its architecture.
pub fn load_model(path: &Path, options: &LoadOptions) -> Result<Arc<dyn CausalLm>> {
    let gguf = GgufFile::open(path)?;
    load_from_gguf(gguf, options)
}

/// Loads the model in an already opened file.
pub fn load_from_gguf(gguf: GgufFile, options: &LoadOptions) -> Result<Arc<dyn CausalLm>> {
    let arch = gguf.architecture()?.to_string();
    let Some((_, read_spec)) = ARCHITECTURES.iter().find(|(name, _)| *name == arch) else {
        let supported = ARCHITECTURES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ModelError::UnsupportedArchitecture {
            path: gguf.path().to_path_buf(),
            arch,
            supported,
        });
    };
    let spec = read_spec(&gguf)?;
    Ok(Arc::new(LlamaModel::new(gguf, spec, options)?))
}
