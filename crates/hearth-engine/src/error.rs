//! Errors of generation.

use hearth_models::ModelError;

/// What can stop a generation from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("the prompt has {prompt_tokens} tokens but the context holds {context} ({} too many)", prompt_tokens - context)]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },

    #[error("the prompt is empty")]
    EmptyPrompt,

    #[error("invalid sampling parameter: {0}")]
    InvalidParameter(String),
}
