//! The error type of model loading and tokenization.

use std::path::PathBuf;

use hearth_kernels::KernelError;

/// Everything that can go wrong reading a model file or running a model.
/// Each variant names the file (or the tensor, or the key) it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")", path.display())]
    BadMagic { path: PathBuf, found: Vec<u8> },

    #[error("{}: GGUF version {version} is not supported (supported: 2, 3)", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },

    #[error("{}: file is truncated or corrupt: {what} at byte offset {offset} runs past the end of the file ({file_len} bytes)", path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        file_len: u64,
    },

    #[error("{}: corrupt GGUF: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("{}: tensor '{tensor}' has unknown tensor type id {type_id}", path.display())]
    UnknownTensorType {
        path: PathBuf,
        tensor: String,
        type_id: u32,
    },

    #[error("{}: metadata key '{key}' is missing", path.display())]
    MissingKey { path: PathBuf, key: String },

    #[error("{}: metadata key '{key}' has type {found}, expected {expected}", path.display())]
    WrongKeyType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("{}: tensor '{name}' is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },

    #[error("{}: tensor '{name}' has shape {found:?}, expected {expected:?}", path.display())]
    BadShape {
        path: PathBuf,
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },

    #[error("{}: architecture '{arch}' is not supported (supported: {supported})", path.display())]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: String,
    },

    #[error("tensor '{tensor}': {reason}")]
    BadTensor { tensor: String, reason: String },

    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    BadSafetensors { path: PathBuf, reason: String },

    #[error("{}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },

    #[error("sequence {index} has {len} tokens; the model takes 1 to {max}")]
    BadSequenceLength {
        index: usize,
        len: usize,
        max: usize,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(String),

    #[error("context is full: {needed} tokens needed, the cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },

    #[error("key/value pool does not fit: {reason}")]
    KvLayout { reason: String },

    #[error("token id {id} is out of range for a vocabulary of {vocab_size}")]
    BadToken { id: u32, vocab_size: usize },

    #[error("tensor '{tensor}': {source}")]
    Kernel {
        tensor: String,
        #[source]
        source: KernelError,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
