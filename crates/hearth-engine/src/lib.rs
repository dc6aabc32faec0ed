//! Generation on top of a [`hearth_models::CausalLm`]: sequences with their
//! KV cache, prompt prefill in chunks, sampling, stop conditions and
//! streaming of text as it becomes valid UTF-8.
//!
//! The engine is synchronous and single-sequence per call; callers that serve
//! many users run one [`Sequence`] per conversation.

pub mod batch;
pub mod blocks;
pub mod constraint;
pub mod error;
pub mod generate;
pub mod rng;
pub mod sampling;
pub use sampling::argmax;
pub mod stop;
pub mod tools;

pub use batch::{
    BatchConfig, BatchEngine, BatchRequest, BatchStats, Completion, Event, EventSink, SubmitError,
    TokenFilter, Usage,
};
pub use constraint::{Constraint, ConstraintError, ConstraintFactory, ConstraintSpec};
pub use error::EngineError;
pub use generate::{
    Engine, FinishReason, GenerateRequest, Generation, Sequence, StreamEvent, Timings,
};
pub use sampling::{Sampler, SamplingParams};
