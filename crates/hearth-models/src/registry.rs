//! The model-family registry and the interface the engine drives.
//!
//! A family is one entry in [`ARCHITECTURES`]: the GGUF architecture name and
//! a function that reads that family's hyper-parameters into a
//! [`DecoderSpec`]. Every supported family today is a llama-style decoder;
//! their differences (RoPE layout, biases, extra norms, activation, sliding
//! window) are data in the spec, not copies of the forward pass.

use std::path::Path;
use std::sync::Arc;

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

/// Which logits one sequence of a batch wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (a prompt chunk that is not the last).
    None,
    /// The last token's (`vocab_size` values).
    Last,
    /// Every token's (`tokens.len() * vocab_size` values, row-major).
    All,
}

/// One sequence's part of a batched forward pass.
#[derive(Debug, Clone, Copy)]
pub struct BatchSeq<'a> {
    /// New tokens, at positions `pos..pos + tokens.len()`.
    pub tokens: &'a [u32],
    /// The sequence's block table: position `p` lives in block
    /// `blocks[p / block_size]` of the pool. It must cover every new token.
    pub blocks: &'a [u32],
    /// Tokens of this sequence already in the pool.
    pub pos: usize,
    pub logits: LogitsWanted,
}

/// A causal language model: token ids in, next-token logits out.
pub trait CausalLm: Send + Sync + std::fmt::Debug {
    fn config(&self) -> &ModelConfig;

    /// A pool of `n_blocks` key/value blocks of `block_size` tokens each,
    /// shared by the sequences of [`forward_batch`](Self::forward_batch).
    /// Memory is committed as blocks are first written, not up front.
    fn new_kv_pool(&self, block_size: usize, n_blocks: usize) -> KvPool {
        let c = self.config();
        KvPool::new(c.n_layer, c.n_head_kv * c.head_dim, block_size, n_blocks)
    }

    /// Runs the new tokens of every sequence in `batch` through the model
    /// in one pass (the weights are read once for all of them), writing
    /// their keys and values into `pool` and appending to `logits` the rows
    /// each sequence asked for, in batch order.
    fn forward_batch(
        &self,
        batch: &[BatchSeq<'_>],
        pool: &mut KvPool,
        scratch: &mut ForwardScratch,
        logits: &mut Vec<f32>,
    ) -> Result<()>;

    /// A cache for one sequence of at most `capacity` tokens. Memory is
    /// committed as the sequence grows, not up front.
    fn new_cache(&self, capacity: usize) -> KvCache {
        let n_blocks = capacity.div_ceil(KvCache::BLOCK_SIZE);
        KvCache {
            pool: self.new_kv_pool(KvCache::BLOCK_SIZE, n_blocks),
            blocks: (0..n_blocks as u32).collect(),
            len: 0,
            capacity,
            scratch: ForwardScratch::default(),
        }
    }

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
    ) -> Result<()> {
        logits.clear();
        if tokens.is_empty() {
            return Ok(());
        }
        let needed = cache.len + tokens.len();
        if needed > cache.capacity {
            return Err(ModelError::ContextFull {
                needed,
                capacity: cache.capacity,
            });
        }
        let seq = BatchSeq {
            tokens,
            blocks: &cache.blocks,
            pos: cache.len,
            logits: if all_logits {
                LogitsWanted::All
            } else {
                LogitsWanted::Last
            },
        };
        self.forward_batch(&[seq], &mut cache.pool, &mut cache.scratch, logits)?;
        cache.len = needed;
        Ok(())
    }
}

/// Reusable buffers of a forward pass.
pub type ForwardScratch = llama::Scratch;

/// Key/value storage (f16) in fixed-size blocks, for many sequences.
///
/// Layout per layer: block `b`, slot `s` holds the key of one token at
/// `k[(b * block_size + s) * kv_dim..][..kv_dim]`; same for `v`.
#[derive(Debug)]
pub struct KvPool {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) kv_dim: usize,
    pub(crate) block_size: usize,
    pub(crate) n_blocks: usize,
}

/// One layer's keys and values, as f16 bit patterns (zeroed memory is
/// handed out by the allocator page by page as it is touched).
#[derive(Debug)]
pub(crate) struct LayerKv {
    pub(crate) k: Vec<u16>,
    pub(crate) v: Vec<u16>,
}

impl KvPool {
    pub(crate) fn new(n_layer: usize, kv_dim: usize, block_size: usize, n_blocks: usize) -> Self {
        let block_size = block_size.max(1);
        let len = n_blocks * block_size * kv_dim;
        let layers = (0..n_layer)
            .map(|_| LayerKv {
                k: vec![0; len],
                v: vec![0; len],
            })
            .collect();
        Self {
            layers,
            kv_dim,
            block_size,
            n_blocks,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    /// Memory one block takes across all layers (keys and values).
    pub fn bytes_per_block(&self) -> usize {
        self.layers.len() * 2 * self.block_size * self.kv_dim * std::mem::size_of::<u16>()
    }

    /// Copies the first `len` slots of block `src` into block `dst` in every
    /// layer (copy-on-write of a shared, partly filled block).
    pub fn copy_block(&mut self, src: u32, dst: u32, len: usize) {
        let (src, dst) = (src as usize, dst as usize);
        if src >= self.n_blocks || dst >= self.n_blocks || src == dst {
            return;
        }
        let width = self.block_size * self.kv_dim;
        let n = len.min(self.block_size) * self.kv_dim;
        for layer in &mut self.layers {
            for data in [&mut layer.k, &mut layer.v] {
                data.copy_within(src * width..src * width + n, dst * width);
            }
        }
    }
}

/// One sequence's key/value cache and forward scratch: a private
/// [`KvPool`] whose blocks all belong to this sequence.
#[derive(Debug)]
pub struct KvCache {
    pool: KvPool,
    blocks: Vec<u32>,
    len: usize,
    capacity: usize,
    scratch: ForwardScratch,
}

impl KvCache {
    /// Tokens per block of a single-sequence cache.
    pub const BLOCK_SIZE: usize = 64;

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
        self.len = self.len.min(len);
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
