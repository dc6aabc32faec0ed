//! Hearth: run a small language model inside your app, on the CPU.
//!
//! Load a [`Model`] once, open a [`Session`] per conversation, and ask it
//! for text, for a typed value, or for an answer that calls your Rust
//! functions. Sessions on one model share its scheduler: used from several
//! threads, their answers are generated together in batches.
//!
//! # Chat
//!
//! ```no_run
//! use hearth::{GenerationOptions, Model};
//!
//! # fn main() -> Result<(), hearth::Error> {
//! // A catalogue name is pulled on first use; a path to a .gguf file works too.
//! let model = Model::load("smollm2-135m-instruct")?;
//! let mut session = model
//!     .session()
//!     .system("You are terse.")
//!     .options(GenerationOptions { max_tokens: 128, ..GenerationOptions::default() });
//! let reply = session.respond("Hi")?;
//! println!("{reply}");
//! for delta in session.stream("Tell me more")? {
//!     print!("{}", delta?);
//! }
//! assert_eq!(session.transcript().len(), 5); // system, 2 x (user, assistant)
//! # Ok(())
//! # }
//! ```
//!
//! # Typed answers
//!
//! A type that derives [`JsonSchema`] and `Deserialize` can be the answer:
//! constrained decoding holds the model to the type's schema, so the JSON
//! always parses. `JsonSchema` and its crate are re-exported; the derive
//! expands to paths under `schemars`, so bring [`schemars`] into scope
//! (`use hearth::schemars;`) unless the app depends on it directly.
//!
//! ```no_run
//! use hearth::{JsonSchema, Model, schemars};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize, JsonSchema)]
//! struct Person {
//!     name: String,
//!     age: u8,
//! }
//!
//! # fn main() -> Result<(), hearth::Error> {
//! let model = Model::load("smollm2-135m-instruct")?;
//! let mut session = model.session();
//! let person: Person = session.respond_as("Invent a person")?;
//! println!("{person:?}");
//! // Or watch it being written: every snapshot is valid JSON.
//! for snapshot in session.stream_as::<Person>("Another one")? {
//!     println!("{}", snapshot?);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Tools
//!
//! ```no_run
//! use hearth::{JsonSchema, Model, ToolChoice, schemars};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct WeatherArgs {
//!     city: String,
//! }
//!
//! # fn main() -> Result<(), hearth::Error> {
//! let weather = hearth::tool("get_weather", "Current weather in a city", |args: WeatherArgs| {
//!     Ok(json!({"city": args.city, "sky": "clear", "temperature_c": 4}))
//! });
//! let model = Model::load("smollm2-135m-instruct")?;
//! let mut agent = model.session().tool(weather).tool_choice(ToolChoice::Required);
//! // Generates a call, runs it, feeds the result back, and answers.
//! let answer = agent.respond("What's the weather in Oslo?")?;
//! println!("{answer}");
//! # Ok(())
//! # }
//! ```
//!
//! Errors of every kind are one [`Error`]; a failed answer leaves the
//! transcript as it was.

mod sdk;

pub use hearth_engine::tools::{ToolCall, ToolChoice};
pub use hearth_engine::{
    BatchConfig, BatchStats, Completion, Engine, FinishReason, SamplingParams, Usage,
};
pub use hearth_models::store::{NoProgress, Progress};
pub use hearth_models::{ChatMessage, LoadOptions};
pub use schemars::{self, JsonSchema};
pub use sdk::error::Error;
pub use sdk::model::{Model, ModelOptions};
pub use sdk::partial_json::close as close_partial_json;
pub use sdk::session::{
    DEFAULT_MAX_ROUNDS, GenerationOptions, JsonStream, Session, TOOL_ROLE, TextStream,
};
pub use sdk::tool::{Tool, ToolError, TypedTool, tool};

/// The default model: small enough to load in a second on any machine.
pub const DEFAULT_MODEL: &str = hearth_models::store::DEFAULT_MODEL;
