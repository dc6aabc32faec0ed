//! Weight formats, tokenizers, chat templates and model families.
//!
//! A model file is opened once ([`gguf::GgufFile`], memory-mapped), and
//! everything else is read from it: the tokenizer, the chat template and the
//! weights, which stay in the mapping in their stored block format. Model
//! families implement [`CausalLm`]; [`registry`] maps a GGUF architecture
//! name to the family that runs it.

pub mod bert;
pub mod chat_template;
pub mod error;
pub mod gguf;
pub mod llama;
pub mod registry;
pub mod safetensors;
pub mod store;
pub mod tokenizer;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use error::ModelError;
pub use gguf::GgufFile;
pub use registry::{
    BatchSeq, CausalLm, ForwardScratch, KvCache, KvPool, LoadOptions, LogitsWanted, ModelConfig,
    load_model,
};
pub use tokenizer::Tokenizer;
