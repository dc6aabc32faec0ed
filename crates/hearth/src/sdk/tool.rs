//! Tools: Rust functions the model may call during a session's answer.
//!
//! A [`Tool`] names itself, describes itself to the model and gives the
//! JSON schema of its arguments; constrained decoding holds every call the
//! model writes to that schema. [`tool`] builds one from a closure whose
//! argument type derives [`JsonSchema`](schemars::JsonSchema) and
//! `Deserialize`, so the schema and the parsing come from the type.

use std::fmt;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::schema;

/// Why a tool call failed. The message is shown to the model as the call's
/// result (`{"error": "..."}`), so it can correct itself or explain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments do not fit the tool (wrong shape, out of range).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// A failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// A function the model may call.
///
/// Tools run on the thread that drives the session's answer, one call at a
/// time, in the order the model wrote them.
pub trait Tool: Send + Sync {
    /// 1 to 64 letters, digits, `_` or `-`; unique within a session.
    fn name(&self) -> &str;
    /// What the tool does, for the model.
    fn description(&self) -> &str;
    /// JSON schema of the arguments object (`{"type": "object", ...}`).
    /// Local `$ref`s into its `$defs` are expanded before use.
    fn parameters(&self) -> Value;
    /// Runs the tool on arguments that match [`parameters`](Self::parameters).
    fn call(&self, arguments: Value) -> Result<Value, ToolError>;
}

/// A [`Tool`] from a closure over typed arguments; made by [`tool`].
pub struct TypedTool<A, F> {
    name: String,
    description: String,
    parameters: Value,
    function: F,
    arguments: PhantomData<fn(A)>,
}

impl<A, F> fmt::Debug for TypedTool<A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedTool")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("parameters", &self.parameters)
            .finish_non_exhaustive()
    }
}

/// A tool named `name` that deserialises its arguments into `A` and calls
/// `function`. The parameters schema is `A`'s, from [`JsonSchema`].
///
/// ```
/// use hearth::{JsonSchema, ToolError, schemars};
/// use serde::Deserialize;
/// use serde_json::json;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct WeatherArgs {
///     /// City name, e.g. "Oslo".
///     city: String,
/// }
///
/// let weather = hearth::tool("get_weather", "Current weather in a city", |args: WeatherArgs| {
///     Ok(json!({"city": args.city, "temperature_c": 4}))
/// });
/// # use hearth::Tool;
/// assert_eq!(weather.parameters()["required"], json!(["city"]));
/// assert_eq!(weather.call(json!({"city": "Oslo"})).unwrap()["temperature_c"], 4);
/// assert!(matches!(weather.call(json!({"town": 1})), Err(ToolError::InvalidArguments(_))));
/// ```
pub fn tool<A, F>(
    name: impl Into<String>,
    description: impl Into<String>,
    function: F,
) -> TypedTool<A, F>
where
    A: DeserializeOwned + JsonSchema,
    F: Fn(A) -> Result<Value, ToolError> + Send + Sync,
{
    TypedTool {
        name: name.into(),
        description: description.into(),
        parameters: schema::schema_of::<A>(),
        function,
        arguments: PhantomData,
    }
}

impl<A, F> Tool for TypedTool<A, F>
where
    A: DeserializeOwned,
    F: Fn(A) -> Result<Value, ToolError> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        let arguments: A = serde_json::from_value(arguments)
            .map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        (self.function)(arguments)
    }
}
