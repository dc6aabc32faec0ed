//! The one error type of the HTTP API.
//!
//! Every failure a handler or extractor can meet becomes an [`ApiError`],
//! which renders as OpenAI's error body
//! `{"error": {"message", "type", "param", "code"}}` with the matching status,
//! so that OpenAI clients raise their usual exceptions. Server-side failures
//! answer with a generic message; their detail goes to the log (stderr).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Seconds a client is asked to wait after a full queue.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// A failed API request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed or a parameter is out of its domain (400).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        /// The offending field, as a path into the request body.
        param: Option<String>,
        /// A machine-readable reason, e.g. `context_length_exceeded`.
        code: Option<&'static str>,
    },
    /// The request names a model this server does not serve (404).
    #[error("{message}")]
    ModelNotFound {
        message: String,
        param: &'static str,
    },
    /// The API key is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The body is larger than the server accepts (413).
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The generation queue is full (429 with `Retry-After`).
    #[error(
        "the server is busy: {waiting} requests are waiting; retry after {RETRY_AFTER_SECONDS} s"
    )]
    QueueFull { waiting: usize },
    /// No such route (404).
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    /// The route exists but not for this method (405).
    #[error("{method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The route exists but its feature is off on this server (404).
    #[error("{0}")]
    NotEnabled(String),
    /// The server cannot take requests now (503), e.g. while shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// A failure inside the server (500). The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 about the field `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 400 about the request as a whole.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 404 for a `model` field that names no served model.
    pub fn model_not_found(requested: &str, served: &str) -> Self {
        Self::ModelNotFound {
            message: format!(
                "the model '{requested}' does not exist on this server; it serves '{served}'"
            ),
            param: "model",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound { .. } | Self::RouteNotFound { .. } | Self::NotEnabled(_) => {
                StatusCode::NOT_FOUND
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "authentication_error",
            Self::QueueFull { .. } => "rate_limit_error",
            Self::Unavailable(_) | Self::Internal(_) => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's machine-readable error `code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { code, .. } => *code,
            Self::ModelNotFound { .. } => Some("model_not_found"),
            Self::Unauthorized(_) => Some("invalid_api_key"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::QueueFull { .. } => Some("rate_limit_exceeded"),
            Self::RouteNotFound { .. } => Some("unknown_url"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::NotEnabled(_) => Some("not_enabled"),
            Self::Unavailable(_) => Some("service_unavailable"),
            Self::Internal(_) => Some("internal_error"),
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            Self::ModelNotFound { param, .. } => Some((*param).to_owned()),
            _ => None,
        }
    }

    /// The message clients see: generic for internal failures.
    fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "the server failed to process the request".to_owned(),
            other => other.to_string(),
        }
    }

    /// The OpenAI-shaped body, also sent as an SSE event when a stream fails.
    pub fn body(&self) -> ErrorBody {
        if let Self::Internal(detail) = self {
            eprintln!("hearth-server: internal error: {detail}");
        }
        ErrorBody {
            error: ErrorDetail {
                message: self.public_message(),
                kind: self.kind(),
                param: self.param(),
                code: self.code(),
            },
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The fields of an OpenAI error.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if let Self::QueueFull { .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if let Self::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_detail() {
        let body = ApiError::Internal("poisoned lock in scheduler".into()).body();
        assert!(!body.error.message.contains("poisoned"));
        assert_eq!(body.error.kind, "server_error");
    }

    #[test]
    fn queue_full_carries_retry_after() {
        let response = ApiError::QueueFull { waiting: 3 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
