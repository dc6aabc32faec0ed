//! The one error type of the SDK.

use std::path::PathBuf;

use hearth_engine::{ConstraintError, EngineError, SubmitError};
use hearth_models::store::StoreError;

/// Everything that can go wrong in the SDK. A failed call leaves its
/// session's transcript as it was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model name could not be resolved or pulled.
    #[error("cannot find model '{name}': {source}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },

    /// The model file could not be opened or is not a supported model.
    #[error("cannot load {}: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: EngineError,
    },

    /// The prompt or the generation options were refused (a prompt longer
    /// than the context, a bad sampling parameter, a failed chat template).
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// The model's scheduler refused the request (queue full, stopped).
    #[error(transparent)]
    Submit(#[from] SubmitError),

    /// Generation failed after it started.
    #[error("generation failed: {0}")]
    Generation(String),

    /// The model's scheduler went away before the answer was complete.
    #[error("the model stopped before the answer was complete")]
    Stopped,

    /// Constrained decoding is not available for this model's vocabulary.
    #[error("structured output is not available for this model: {0}")]
    Constraints(ConstraintError),

    /// A schema (of an output type or a tool's parameters) cannot be
    /// enforced by constrained decoding.
    #[error("the schema of {what} cannot be enforced: {reason}")]
    Schema { what: String, reason: String },

    /// The session's tools are unusable (bad or duplicate names, a choice
    /// naming an unknown tool).
    #[error(transparent)]
    Tools(#[from] hearth_engine::tools::ToolError),

    /// The answer did not fit `max_tokens`: the JSON is incomplete.
    #[error(
        "the answer ended after {max_tokens} tokens, before its JSON was complete; raise max_tokens"
    )]
    Incomplete { max_tokens: usize, text: String },

    /// The answer is valid JSON for the schema but not for the Rust type
    /// (a constraint the schema could not express).
    #[error("the answer is not a valid {type_name}: {source}")]
    Deserialize {
        type_name: &'static str,
        text: String,
        #[source]
        source: serde_json::Error,
    },
}
