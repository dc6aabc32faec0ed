//! `POST /v1/embeddings`.
//!
//! The endpoint talks to an [`Embedder`] so that the HTTP layer does not
//! depend on one encoder family; [`BertEmbedder`] serves the BERT-style
//! sentence encoders of `hearth_models::bert`. A text longer than the
//! encoder reads is refused (400) rather than silently truncated. Vectors go out as JSON floats or, for
//! `encoding_format: "base64"` (what OpenAI's Python client asks for by
//! default), as base64 of their little-endian `f32` bytes.

use std::path::Path;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hearth_models::bert::BertModel;
use hearth_models::{LoadOptions, ModelError};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::openai::{
    EmbeddingInput, EmbeddingList, EmbeddingObject, EmbeddingRequest, EmbeddingUsage,
    EncodingFormat,
};

/// Most texts in one request.
pub const MAX_INPUTS: usize = 2048;

/// Why texts could not be embedded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// Something about the input (too long, empty): a 400.
    #[error("{0}")]
    Input(String),
    /// The encoder failed: a 500, detail logged.
    #[error("{0}")]
    Internal(String),
}

/// A text encoder that turns texts into fixed-size vectors.
pub trait Embedder: Send + Sync {
    /// One vector per text, and the number of tokens read in all.
    fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), EmbedError>;
    /// The id clients name in `model`.
    fn model_id(&self) -> &str;
}

/// A BERT-style sentence encoder (mean or `[CLS]` pooling, L2-normalised).
pub struct BertEmbedder {
    model: BertModel,
    id: String,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("id", &self.id)
            .field("dimension", &self.model.dimension())
            .finish()
    }
}

impl BertEmbedder {
    /// Loads the model directory `dir`, served under `id`.
    pub fn load(dir: &Path, id: impl Into<String>, threads: usize) -> Result<Self, ModelError> {
        let options = LoadOptions {
            n_threads: threads.max(1),
        };
        Ok(Self {
            model: BertModel::load_with_options(dir, &options)?,
            id: id.into(),
        })
    }

    /// Length of the vectors.
    pub fn dimension(&self) -> usize {
        self.model.dimension()
    }
}

impl Embedder for BertEmbedder {
    fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let limit = self.model.max_seq_length();
        let encodings: Vec<_> = texts
            .iter()
            .map(|text| self.model.tokenizer().encode(text, limit))
            .collect();
        if let Some((i, encoding)) = encodings
            .iter()
            .enumerate()
            .find(|(_, encoding)| encoding.truncated > 0)
        {
            return Err(EmbedError::Input(format!(
                "input[{i}] has {} tokens but {} reads at most {limit}",
                encoding.ids.len() + encoding.truncated,
                self.id
            )));
        }
        let sequences: Vec<&[u32]> = encodings.iter().map(|e| e.ids.as_slice()).collect();
        let vectors = self
            .model
            .embed_ids(&sequences)
            .map_err(|e| EmbedError::Internal(e.to_string()))?;
        let tokens = encodings.iter().map(|e| e.ids.len()).sum();
        Ok((vectors, tokens))
    }

    fn model_id(&self) -> &str {
        &self.id
    }
}

/// `POST /v1/embeddings`.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let Some(embedder) = state.embedder() else {
        return Err(ApiError::ModelNotFound {
            message: format!(
                "no embedding model is loaded, so '{}' cannot be used: {}",
                request.model,
                state.embeddings_hint()
            ),
            param: "model",
        });
    };
    if request.model != embedder.model_id() {
        return Err(ApiError::model_not_found(
            &request.model,
            embedder.model_id(),
        ));
    }
    let texts = match request.input {
        EmbeddingInput::Text(text) => vec![text],
        EmbeddingInput::Texts(texts) => texts,
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
            return Err(ApiError::invalid(
                "input",
                "token arrays are not supported: send the text",
            ));
        }
    };
    if texts.is_empty() {
        return Err(ApiError::invalid("input", "input must not be empty"));
    }
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!(
                "at most {MAX_INPUTS} inputs per request, got {}",
                texts.len()
            ),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            format!("input[{i}]"),
            "input strings must not be empty",
        ));
    }
    let format = request.encoding_format.unwrap_or(EncodingFormat::Float);
    let encoder = embedder.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || encoder.embed(&texts))
        .await
        .map_err(|e| ApiError::Internal(format!("embedding task: {e}")))?
        .map_err(|error| match error {
            EmbedError::Input(message) => ApiError::invalid("input", message),
            EmbedError::Internal(detail) => ApiError::Internal(format!("embedding: {detail}")),
        })?;
    if let Some(dimensions) = request.dimensions {
        let actual = vectors.first().map_or(0, Vec::len);
        if usize::try_from(dimensions).ok() != Some(actual) {
            return Err(ApiError::invalid(
                "dimensions",
                format!("this model produces {actual} dimensions; got dimensions={dimensions}"),
            ));
        }
    }
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: encode(&vector, format),
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: embedder.model_id().to_owned(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response())
}

/// A vector as OpenAI sends it.
fn encode(vector: &[f32], format: EncodingFormat) -> Value {
    match format {
        EncodingFormat::Float => {
            Value::from(vector.iter().map(|&x| f64::from(x)).collect::<Vec<_>>())
        }
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::from(STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let value = encode(&[1.0, -2.5], EncodingFormat::Base64);
        let bytes = STANDARD.decode(value.as_str().unwrap()).unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 32, 192]);
    }

    #[test]
    fn floats_are_exact() {
        let value = encode(&[0.1, 3.0], EncodingFormat::Float);
        let back: Vec<f32> = serde_json::from_value(value).unwrap();
        assert_eq!(back, [0.1, 3.0]);
    }
}
