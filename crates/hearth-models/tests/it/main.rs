//! The integration tests of hearth-models (one binary, one module per area).

mod bert;
mod chat_template;
mod families;
mod gguf;
mod reference_tokens;
mod store;
mod support;
mod tokenizer;
