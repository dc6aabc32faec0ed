//! `response_format`: JSON output enforced by constrained decoding.
//!
//! The constraint factory walks the vocabulary once, at startup; each request
//! compiles its schema into a fresh [`Constraint`] and hands it to the engine
//! as its token filter. A schema the constraint engine cannot enforce exactly
//! is refused with a 400 rather than served loosely.

use hearth_engine::{Constraint, ConstraintError, ConstraintFactory, ConstraintSpec, TokenFilter};
use serde_json::json;

use crate::error::ApiError;
use crate::openai::ResponseFormat;

/// A compiled constraint as the engine's token filter.
#[derive(Debug)]
pub struct ConstraintFilter(pub Constraint);

impl TokenFilter for ConstraintFilter {
    fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.0.mask_logits(logits).map_err(|e| e.to_string())
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        self.0.commit(token).map_err(|e| e.to_string())
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// The filter for `format`; `None` for plain text. `factory` is `None` when
/// the model's vocabulary could not be prepared for constraints.
pub fn filter(
    factory: Option<&ConstraintFactory>,
    format: Option<&ResponseFormat>,
) -> Result<Option<ConstraintFilter>, ApiError> {
    let spec = match format {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => ConstraintSpec::JsonObject,
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let name = &json_schema.name;
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_name {
                return Err(ApiError::invalid(
                    "response_format.json_schema.name",
                    "response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'",
                ));
            }
            ConstraintSpec::JsonSchema(json_schema.schema.clone().unwrap_or_else(|| json!({})))
        }
    };
    compile(factory, &spec, "response_format").map(Some)
}

/// Compiles `spec`; a spec that cannot be enforced is a 400 about `param`.
pub fn compile(
    factory: Option<&ConstraintFactory>,
    spec: &ConstraintSpec,
    param: &str,
) -> Result<ConstraintFilter, ApiError> {
    let factory = factory.ok_or_else(|| {
        ApiError::invalid(param, "constrained output is not available for this model")
    })?;
    match factory.compile(spec) {
        Ok(constraint) => Ok(ConstraintFilter(constraint)),
        Err(ConstraintError::InvalidSchema(message)) => Err(ApiError::invalid(
            param,
            format!("{param} cannot be enforced: {message}"),
        )),
        Err(other) => Err(ApiError::Internal(format!("compiling {param}: {other}"))),
    }
}
