//! BERT sentence encoders in the sentence-transformers layout.
//!
//! A model directory holds `config.json` (the encoder's hyper-parameters),
//! `model.safetensors` (the weights, memory-mapped and never copied except
//! for the small bias and norm vectors), `tokenizer.json` (WordPiece) and,
//! optionally, `sentence_bert_config.json` (the maximum sequence length) and
//! `1_Pooling/config.json` (mean or `[CLS]` pooling; mean when absent).
//!
//! The texts of one call are packed one after another without padding: the
//! linear layers run over all of their tokens at once through the kernels'
//! matmul, and attention runs per text and head, so no token attends across
//! texts and no mask is needed. The sentence vector is the pooled last
//! hidden state, L2-normalised, as sentence-transformers' `Normalize` module
//! computes it.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hearth_kernels::{MatmulScratch, Matrix, ThreadPool, WeightType, matmul};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ModelError, Result};
use crate::registry::LoadOptions;
use crate::safetensors::SafeTensors;
use crate::tokenizer::wordpiece::WordPieceTokenizer;

/// The encoder's hyper-parameters, in the model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The weights, in the model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer, in the model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// sentence-transformers' settings (`max_seq_length`), optional.
pub const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";
/// sentence-transformers' pooling settings, optional.
pub const POOLING_CONFIG_FILE: &str = "1_Pooling/config.json";

/// Most tokens packed into one forward pass; longer calls run in several.
/// Bounds the activation memory (about 30 MiB for a 384-wide model).
const MAX_BATCH_TOKENS: usize = 2048;
/// Elements per task of the element-wise parallel loops.
const ELEMENTWISE_CHUNK: usize = 16 * 1024;
/// Smallest norm divided by in L2 normalisation (the reference's epsilon).
const NORMALIZE_EPSILON: f64 = 1e-12;

/// `config.json`: the hyper-parameters of a BERT encoder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".into()
}

fn default_position_embedding_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// What this implementation runs: the exact GELU, absolute positions,
    /// heads that divide the width.
    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| {
            Err(ModelError::BadConfig {
                path: path.into(),
                reason,
            })
        };
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act '{}' is not supported (only the exact 'gelu')",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type '{}' is not supported (only 'absolute')",
                self.position_embedding_type
            ));
        }
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        if sizes.contains(&0) || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "sizes do not describe an encoder (hidden {}, heads {}, intermediate {}, vocabulary {}, positions {}, token types {})",
                self.hidden_size,
                self.num_attention_heads,
                self.intermediate_size,
                self.vocab_size,
                self.max_position_embeddings,
                self.type_vocab_size
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return bad(format!(
                "layer_norm_eps {} is not valid",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over every token, `[CLS]` and `[SEP]` included.
    Mean,
    /// The state of the first token (`[CLS]`).
    Cls,
}

/// `1_Pooling/config.json`.
#[derive(Deserialize)]
struct PoolingJson {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl PoolingJson {
    fn pooling(&self, path: &Path) -> Result<Pooling> {
        let modes = [
            self.pooling_mode_cls_token,
            self.pooling_mode_mean_tokens,
            self.pooling_mode_max_tokens,
            self.pooling_mode_mean_sqrt_len_tokens,
            self.pooling_mode_weightedmean_tokens,
            self.pooling_mode_lasttoken,
        ];
        match modes {
            [true, false, false, false, false, false] => Ok(Pooling::Cls),
            [false, true, false, false, false, false] => Ok(Pooling::Mean),
            _ => Err(ModelError::BadConfig {
                path: path.into(),
                reason: "only one pooling mode, mean or CLS token, is supported".into(),
            }),
        }
    }
}

/// `sentence_bert_config.json`.
#[derive(Deserialize)]
struct SentenceConfigJson {
    #[serde(default)]
    max_seq_length: Option<usize>,
}

/// One text's sentence embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The sentence vector, `hidden_size` values of unit L2 norm (all zero
    /// only if the pooled state was).
    pub vector: Vec<f32>,
    /// Tokens the model read, `[CLS]` and `[SEP]` included.
    pub n_tokens: usize,
    /// Tokens cut from the end of the text to fit the maximum sequence
    /// length (0 when it fit).
    pub truncated: usize,
}

/// A linear layer: `y = W x + b` with `W` stored `rows x cols` in the file.
struct Linear {
    name: String,
    /// The weight's bytes in the file's data section.
    weight: Range<usize>,
    ty: WeightType,
    rows: usize,
    cols: usize,
    bias: Vec<f32>,
}

/// LayerNorm's scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// Reads tensors by their names in the Hugging Face layout, with or
/// without the `bert.` prefix some checkpoints carry.
struct Loader<'a> {
    file: &'a SafeTensors,
    prefix: &'static str,
}

impl Loader<'_> {
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let tensor = self.file.tensor(&self.name(name))?;
        tensor.expect_shape(&[len])?;
        tensor.to_f32()
    }

    /// The byte range and type of a `rows x cols` float matrix.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<(Range<usize>, WeightType)> {
        let tensor = self.file.tensor(&self.name(name))?;
        tensor.expect_shape(&[rows, cols])?;
        let ty = tensor
            .dtype()
            .weight_type()
            .ok_or_else(|| ModelError::BadTensor {
                tensor: tensor.name.to_owned(),
                reason: format!("dtype {} is not F32, F16 or BF16", tensor.dtype()),
            })?;
        Ok((tensor.info.data_offsets.clone(), ty))
    }

    fn linear(&self, prefix: &str, rows: usize, cols: usize) -> Result<Linear> {
        let name = format!("{prefix}.weight");
        let (weight, ty) = self.matrix(&name, rows, cols)?;
        Ok(Linear {
            name: self.name(&name),
            weight,
            ty,
            rows,
            cols,
            bias: self.vector(&format!("{prefix}.bias"), rows)?,
        })
    }

    fn norm(&self, prefix: &str, len: usize) -> Result<Norm> {
        Ok(Norm {
            weight: self.vector(&format!("{prefix}.weight"), len)?,
            bias: self.vector(&format!("{prefix}.bias"), len)?,
        })
    }
}

/// Reads and parses a JSON file.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|error| ModelError::BadConfig {
        path: path.into(),
        reason: format!("cannot be parsed: {error}"),
    })
}

/// Like [`read_json`], `None` when the file does not exist.
fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    read_json(path).map(Some)
}

/// A BERT encoder with its tokenizer and sentence-transformers head.
pub struct BertModel {
    dir: PathBuf,
    config: BertConfig,
    tokenizer: WordPieceTokenizer,
    pooling: Pooling,
    max_seq_length: usize,
    weights: SafeTensors,
    word_embeddings: (Range<usize>, WeightType),
    /// `max_position_embeddings x hidden_size`.
    position_embeddings: Vec<f32>,
    /// The embedding of token type 0 (every token of a single text).
    token_type_embedding: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    pool: ThreadPool,
}

impl std::fmt::Debug for BertModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertModel")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("pooling", &self.pooling)
            .field("max_seq_length", &self.max_seq_length)
            .field("n_threads", &self.pool.n_threads())
            .finish()
    }
}

impl BertModel {
    /// Loads the model in `dir` (see the module documentation for its
    /// files), with one thread per available core.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_options(dir, &LoadOptions::default())
    }

    /// Loads the model in `dir` with `options.n_threads` threads. Every
    /// tensor's shape and type is checked against `config.json`, and the
    /// tokenizer's ids against the vocabulary size.
    pub fn load_with_options(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let config: BertConfig = read_json(&config_path)?;
        config.validate(&config_path)?;
        let hidden = config.hidden_size;

        let pooling_path = dir.join(POOLING_CONFIG_FILE);
        let pooling = read_json_opt::<PoolingJson>(&pooling_path)?
            .map(|json| json.pooling(&pooling_path))
            .transpose()?
            .unwrap_or(Pooling::Mean);
        let max_seq_length = read_json_opt::<SentenceConfigJson>(&dir.join(SENTENCE_CONFIG_FILE))?
            .and_then(|json| json.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .clamp(2, config.max_position_embeddings.max(2));

        let tokenizer = WordPieceTokenizer::from_file(&dir.join(TOKENIZER_FILE))?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ModelError::BadConfig {
                path: dir.join(TOKENIZER_FILE),
                reason: format!(
                    "token ids reach {} but the model's vocabulary has {} entries",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }

        let weights = SafeTensors::open(&dir.join(WEIGHTS_FILE))?;
        let prefix = if weights
            .tensors()
            .contains_key("embeddings.word_embeddings.weight")
            || !weights
                .tensors()
                .contains_key("bert.embeddings.word_embeddings.weight")
        {
            ""
        } else {
            "bert."
        };
        let loader = Loader {
            file: &weights,
            prefix,
        };
        let word_embeddings = loader.matrix(
            "embeddings.word_embeddings.weight",
            config.vocab_size,
            hidden,
        )?;
        let positions = loader
            .file
            .tensor(&loader.name("embeddings.position_embeddings.weight"))?;
        positions.expect_shape(&[config.max_position_embeddings, hidden])?;
        let position_embeddings = positions.to_f32()?;
        let types = loader
            .file
            .tensor(&loader.name("embeddings.token_type_embeddings.weight"))?;
        types.expect_shape(&[config.type_vocab_size, hidden])?;
        let mut token_type_embedding = types.to_f32()?;
        token_type_embedding.truncate(hidden);
        let embedding_norm = loader.norm("embeddings.LayerNorm", hidden)?;

        let inner = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let p = format!("encoder.layer.{index}");
                Ok(Layer {
                    query: loader.linear(&format!("{p}.attention.self.query"), hidden, hidden)?,
                    key: loader.linear(&format!("{p}.attention.self.key"), hidden, hidden)?,
                    value: loader.linear(&format!("{p}.attention.self.value"), hidden, hidden)?,
                    attention_output: loader.linear(
                        &format!("{p}.attention.output.dense"),
                        hidden,
                        hidden,
                    )?,
                    attention_norm: loader
                        .norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                    intermediate: loader.linear(
                        &format!("{p}.intermediate.dense"),
                        inner,
                        hidden,
                    )?,
                    output: loader.linear(&format!("{p}.output.dense"), hidden, inner)?,
                    output_norm: loader.norm(&format!("{p}.output.LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;

        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            pooling,
            max_seq_length,
            word_embeddings,
            position_embeddings,
            token_type_embedding,
            embedding_norm,
            layers,
            weights,
            pool: ThreadPool::new(options.n_threads),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Length of the sentence vectors.
    pub fn dimension(&self) -> usize {
        self.config.hidden_size
    }

    /// Most tokens read per text, `[CLS]` and `[SEP]` included; longer texts
    /// are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn tokenizer(&self) -> &WordPieceTokenizer {
        &self.tokenizer
    }

    /// The sentence embedding of each text, in order. Each text is
    /// tokenized as `[CLS] … [SEP]` and cut to [`Self::max_seq_length`]
    /// tokens; [`Embedding::truncated`] says how many were cut.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let encodings: Vec<_> = texts
            .iter()
            .map(|text| self.tokenizer.encode(text, self.max_seq_length))
            .collect();
        let sequences: Vec<&[u32]> = encodings.iter().map(|e| e.ids.as_slice()).collect();
        let vectors = self.embed_ids(&sequences)?;
        Ok(vectors
            .into_iter()
            .zip(&encodings)
            .map(|(vector, encoding)| Embedding {
                vector,
                n_tokens: encoding.ids.len(),
                truncated: encoding.truncated,
            })
            .collect())
    }

    /// The normalised sentence vector of each token sequence, taken as is
    /// (no `[CLS]`/`[SEP]` added). Each must hold 1 to
    /// `max_position_embeddings` ids below the vocabulary size.
    pub fn embed_ids(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        for (index, sequence) in sequences.iter().enumerate() {
            if sequence.is_empty() || sequence.len() > self.config.max_position_embeddings {
                return Err(ModelError::BadSequenceLength {
                    index,
                    len: sequence.len(),
                    max: self.config.max_position_embeddings,
                });
            }
            if let Some(&id) = sequence
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(ModelError::BadToken {
                    id,
                    vocab_size: self.config.vocab_size,
                });
            }
        }
        let mut vectors = Vec::with_capacity(sequences.len());
        let mut start = 0;
        while start < sequences.len() {
            let mut end = start + 1;
            let mut tokens = sequences[start].len();
            while let Some(next) = sequences.get(end) {
                if tokens + next.len() > MAX_BATCH_TOKENS {
                    break;
                }
                tokens += next.len();
                end += 1;
            }
            vectors.extend(self.forward(&sequences[start..end])?);
            start = end;
        }
        Ok(vectors)
    }

    /// The pooled, normalised vectors of validated sequences, in one pass.
    fn forward(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let hidden = self.config.hidden_size;
        let inner = self.config.intermediate_size;
        let eps = self.config.layer_norm_eps;
        let spans: Vec<Range<usize>> = sequences
            .iter()
            .scan(0, |next, sequence| {
                let span = *next..*next + sequence.len();
                *next = span.end;
                Some(span)
            })
            .collect();
        let n = spans.last().map_or(0, |span| span.end);

        let mut states = self.embed_tokens(sequences, n)?;
        let mut q = vec![0.0; n * hidden];
        let mut k = vec![0.0; n * hidden];
        let mut v = vec![0.0; n * hidden];
        let mut context = vec![0.0; n * hidden];
        let mut projected = vec![0.0; n * hidden];
        let mut intermediate = vec![0.0; n * inner];
        let mut scratch = MatmulScratch::new();
        for layer in &self.layers {
            self.linear(&layer.query, &states, n, &mut q, &mut scratch)?;
            self.linear(&layer.key, &states, n, &mut k, &mut scratch)?;
            self.linear(&layer.value, &states, n, &mut v, &mut scratch)?;
            self.attention(&spans, &q, &k, &v, &mut context);
            self.linear(
                &layer.attention_output,
                &context,
                n,
                &mut projected,
                &mut scratch,
            )?;
            add_and_norm(&mut states, &projected, &layer.attention_norm, eps);
            self.linear(
                &layer.intermediate,
                &states,
                n,
                &mut intermediate,
                &mut scratch,
            )?;
            self.pool
                .for_each_chunk_mut(&mut intermediate, ELEMENTWISE_CHUNK, &|_, chunk| {
                    chunk.iter_mut().for_each(|x| *x = gelu(*x));
                });
            self.linear(
                &layer.output,
                &intermediate,
                n,
                &mut projected,
                &mut scratch,
            )?;
            add_and_norm(&mut states, &projected, &layer.output_norm, eps);
        }

        Ok(spans
            .iter()
            .map(|span| {
                let rows = states
                    .get(span.start * hidden..span.end * hidden)
                    .unwrap_or(&[]);
                normalize(&pool_rows(rows, hidden, self.pooling))
            })
            .collect())
    }

    /// Word + position + token-type embeddings, layer-normalised: `n x hidden`.
    fn embed_tokens(&self, sequences: &[&[u32]], n: usize) -> Result<Vec<f32>> {
        let hidden = self.config.hidden_size;
        let (range, ty) = &self.word_embeddings;
        let table = self.weight_bytes("embeddings.word_embeddings.weight", range)?;
        let row_bytes = hidden * ty.type_size() / ty.block_size();
        let mut states = vec![0.0; n * hidden];
        let mut rows = states.chunks_exact_mut(hidden);
        for sequence in sequences {
            for (position, &id) in sequence.iter().enumerate() {
                let (Some(row), Some(word), Some(place)) = (
                    rows.next(),
                    table.get(id as usize * row_bytes..(id as usize + 1) * row_bytes),
                    self.position_embeddings
                        .get(position * hidden..(position + 1) * hidden),
                ) else {
                    return Err(ModelError::BadToken {
                        id,
                        vocab_size: self.config.vocab_size,
                    });
                };
                hearth_kernels::dequantize_row(*ty, word, row).map_err(|source| {
                    ModelError::Kernel {
                        tensor: "embeddings.word_embeddings.weight".into(),
                        source,
                    }
                })?;
                for ((x, p), t) in row.iter_mut().zip(place).zip(&self.token_type_embedding) {
                    *x += p + t;
                }
                layer_norm(row, &self.embedding_norm, self.config.layer_norm_eps);
            }
        }
        Ok(states)
    }

    fn weight_bytes(&self, name: &str, range: &Range<usize>) -> Result<&[u8]> {
        self.weights
            .data()
            .get(range.clone())
            .ok_or_else(|| ModelError::BadTensor {
                tensor: name.to_owned(),
                reason: "data range outside the file".into(),
            })
    }

    /// `out = x W^T + b` for `n` rows of `x`.
    fn linear(
        &self,
        linear: &Linear,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<()> {
        let kernel_error = |source| ModelError::Kernel {
            tensor: linear.name.clone(),
            source,
        };
        let bytes = self.weight_bytes(&linear.name, &linear.weight)?;
        let matrix =
            Matrix::new(linear.ty, linear.rows, linear.cols, bytes).map_err(kernel_error)?;
        matmul(&self.pool, &matrix, x, n, out, scratch).map_err(kernel_error)?;
        for row in out.chunks_exact_mut(linear.rows) {
            for (value, bias) in row.iter_mut().zip(&linear.bias) {
                *value += bias;
            }
        }
        Ok(())
    }

    /// Multi-head self-attention of each span's tokens among themselves:
    /// `context` gets, per token, the heads' outputs side by side.
    fn attention(
        &self,
        spans: &[Range<usize>],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        context: &mut [f32],
    ) {
        let hidden = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_dim = self.config.head_dim();
        // Head-major per span: span s, head h owns `span.len() x head_dim`
        // values, so each task writes one contiguous block of its own.
        let mut by_head = vec![0.0; context.len()];
        let mut blocks = Vec::with_capacity(spans.len() * heads);
        let mut rest = by_head.as_mut_slice();
        for span in spans {
            for head in 0..heads {
                let (block, tail) = std::mem::take(&mut rest).split_at_mut(span.len() * head_dim);
                blocks.push((span.clone(), head, Mutex::new(block)));
                rest = tail;
            }
        }
        let scale = 1.0 / (head_dim as f32).sqrt();
        self.pool.run(blocks.len(), &|index| {
            if let Some((span, head, block)) = blocks.get(index)
                && let Ok(mut out) = block.lock()
            {
                let columns = head * head_dim..(head + 1) * head_dim;
                attend_head(q, k, v, span, columns, hidden, scale, &mut out);
            }
        });
        drop(blocks);
        let mut blocks = by_head.chunks_exact(head_dim);
        for span in spans {
            for head in 0..heads {
                for token in span.clone() {
                    if let (Some(block), Some(out)) = (
                        blocks.next(),
                        context
                            .get_mut(token * hidden + head * head_dim..)
                            .and_then(|row| row.get_mut(..head_dim)),
                    ) {
                        out.copy_from_slice(block);
                    }
                }
            }
        }
    }
}

/// One head's attention over the tokens of `span`: for each query token,
/// softmax(q·k / sqrt(d)) over the span's keys, applied to its values.
/// `out` is `span.len() x columns.len()`.
#[allow(clippy::too_many_arguments)]
fn attend_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    span: &Range<usize>,
    columns: Range<usize>,
    hidden: usize,
    scale: f32,
    out: &mut [f32],
) {
    let head_dim = columns.len();
    let gather = |source: &[f32]| -> Vec<f32> {
        span.clone()
            .flat_map(|token| {
                source
                    .get(token * hidden + columns.start..token * hidden + columns.end)
                    .unwrap_or(&[])
            })
            .copied()
            .collect()
    };
    let keys = gather(k);
    let values = gather(v);
    let mut scores = vec![0.0_f32; span.len()];
    for (token, out) in span.clone().zip(out.chunks_exact_mut(head_dim)) {
        let Some(query) = q.get(token * hidden + columns.start..token * hidden + columns.end)
        else {
            continue;
        };
        let mut max = f32::NEG_INFINITY;
        for (score, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
            *score = dot(query, key) * scale;
            max = max.max(*score);
        }
        let mut sum = 0.0;
        for score in &mut scores {
            *score = (*score - max).exp();
            sum += *score;
        }
        let inverse = 1.0 / sum;
        out.fill(0.0);
        for (&score, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
            let weight = score * inverse;
            for (o, &x) in out.iter_mut().zip(value) {
                *o += weight * x;
            }
        }
    }
}

/// A dot product in eight independent lanes (which the compiler vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let mut a_chunks = a.chunks_exact(8);
    let mut b_chunks = b.chunks_exact(8);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// LayerNorm of one row in place, statistics in f64.
fn layer_norm(row: &mut [f32], norm: &Norm, eps: f64) {
    let len = row.len().max(1) as f64;
    let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / len;
    let variance = row
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / len;
    let inverse = 1.0 / (variance + eps).sqrt();
    for ((x, &weight), &bias) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *x = ((f64::from(*x) - mean) * inverse) as f32 * weight + bias;
    }
}

/// `states = LayerNorm(states + residual)`, row by row.
fn add_and_norm(states: &mut [f32], update: &[f32], norm: &Norm, eps: f64) {
    let width = norm.weight.len().max(1);
    for (row, add) in states
        .chunks_exact_mut(width)
        .zip(update.chunks_exact(width))
    {
        for (x, a) in row.iter_mut().zip(add) {
            *x += a;
        }
        layer_norm(row, norm, eps);
    }
}

/// The pooled vector of one text's `rows` (row-major, `width` wide).
fn pool_rows(rows: &[f32], width: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => rows.get(..width).unwrap_or(&[]).to_vec(),
        Pooling::Mean => {
            let mut sums = vec![0.0_f64; width];
            let mut count = 0_usize;
            for row in rows.chunks_exact(width) {
                for (sum, &x) in sums.iter_mut().zip(row) {
                    *sum += f64::from(x);
                }
                count += 1;
            }
            let count = count.max(1) as f64;
            sums.iter().map(|&sum| (sum / count) as f32).collect()
        }
    }
}

/// `vector / max(‖vector‖₂, ε)`.
fn normalize(vector: &[f32]) -> Vec<f32> {
    let norm = vector
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(NORMALIZE_EPSILON);
    vector
        .iter()
        .map(|&x| (f64::from(x) / norm) as f32)
        .collect()
}

/// The exact GELU, `x Φ(x) = x/2 · erfc(-x/√2)`.
fn gelu(x: f32) -> f32 {
    0.5 * x * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// The complementary error function by a Chebyshev fit with a relative
/// error below 1.2e-7 everywhere; evaluated in f32, the rounding of the
/// exponent brings it to at most 1e-6 (an absolute error below 1e-9 where
/// erfc is that small).
fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let tail = t * poly.exp();
    if x >= 0.0 { tail } else { 2.0 - tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        // erfc(x) from a float64 library.
        let known = [
            (-3.0, 1.999_977_909_503_001_4),
            (-0.5, 1.520_499_877_813_046_5),
            (0.0, 1.0),
            (0.3, 0.671_373_240_540_872_7),
            (1.0, 0.157_299_207_050_285_13),
            (2.5, 0.000_406_952_017_444_958_9),
            (4.0, 1.541_725_790_028_002e-8),
        ];
        for (x, want) in known {
            let got = f64::from(erfc(x as f32));
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "erfc({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_is_the_erf_form() {
        // x Φ(x) at a few points (float64 reference).
        let known = [
            (-4.0, -0.000_126_684_967_332_479_86),
            (-1.0, -0.158_655_253_931_457_07),
            (0.0, 0.0),
            (0.5, 0.345_731_230_637_006_56),
            (2.0, 1.954_499_736_103_641_6),
            (10.0, 10.0),
        ];
        for (x, want) in known {
            let got = f64::from(gelu(x as f32));
            assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn pooling_and_normalisation() {
        let rows = [1.0, 2.0, 3.0, 6.0];
        assert_eq!(pool_rows(&rows, 2, Pooling::Mean), [2.0, 4.0]);
        assert_eq!(pool_rows(&rows, 2, Pooling::Cls), [1.0, 2.0]);
        assert_eq!(normalize(&[3.0, 4.0]), [0.6, 0.8]);
        assert_eq!(normalize(&[0.0, 0.0]), [0.0, 0.0]);
    }

    #[test]
    fn dot_matches_naive_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.125).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
        assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-4);
    }
}
