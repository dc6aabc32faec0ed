//! The JSON body extractor.
//!
//! axum's own `Json` rejects with plain-text bodies; this one reads the body
//! (under the router's body limit) and deserializes it with the path of the
//! failing field kept, so every rejection is an [`ApiError`] with `param`
//! naming the field: `413` past the limit, `400` for malformed JSON, invalid
//! UTF-8, missing fields and wrong types. The `Content-Type` is not checked,
//! as OpenAI does not check it.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: state.body_limit(),
                    }
                } else {
                    ApiError::invalid_body(format!("cannot read the request body: {rejection}"))
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes`, naming the failing field in the error's `param`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if !inner.is_data() {
            return ApiError::invalid_body(format!("the request body is not valid JSON: {inner}"));
        }
        let message = inner.to_string();
        let mut param = (path != ".").then_some(path);
        // A missing field is reported at its parent; name the field itself.
        if let Some(field) = missing_field(&message) {
            param = Some(match param {
                Some(parent) => format!("{parent}.{field}"),
                None => field.to_owned(),
            });
        }
        let message = strip_position(&message);
        match param {
            Some(param) => ApiError::invalid(param.clone(), format!("{param}: {message}")),
            None => ApiError::invalid_body(format!("invalid request body: {message}")),
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::invalid_body(format!("the request body is not valid JSON: {error}"))
    })?;
    Ok(value)
}

/// `missing field `model`` → `model`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split('`')
        .next()
        .filter(|field| !field.is_empty())
}

/// Drops serde_json's " at line 1 column 42" suffix: the param says where.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        model: String,
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        size: u32,
    }

    fn param_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::InvalidRequest { param, .. } => param,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let error = parse::<Outer>(br#"{"model":"m","items":[{"size":"big"}]}"#).unwrap_err();
        assert_eq!(param_of(error).as_deref(), Some("items[0].size"));
    }

    #[test]
    fn missing_fields_name_the_field() {
        let error = parse::<Outer>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(param_of(error).as_deref(), Some("model"));
        let error = parse::<Outer>(br#"{"model":"m","items":[{}]}"#).unwrap_err();
        assert_eq!(param_of(error).as_deref(), Some("items[0].size"));
    }

    #[test]
    fn malformed_json_and_bad_utf8_are_400_without_param() {
        for body in [
            &b"{\"model\": "[..],
            b"{\"model\":\"\xff\",\"items\":[]}",
            b"{\"model\":\"m\",\"items\":[]} {}",
        ] {
            let error = parse::<Outer>(body).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert_eq!(param_of(error), None);
        }
    }
}
