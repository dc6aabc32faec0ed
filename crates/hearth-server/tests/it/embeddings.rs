//! `POST /v1/embeddings` over a stand-in encoder: the wire format (floats,
//! base64), model checks and input validation.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hearth_server::{BertEmbedder, EmbedError, Embedder, router};
use serde_json::json;

use crate::support::{app, batch_config, post, send, state_with};

const EMBEDDER_ID: &str = "test-encoder";

/// Embeds a text as `[characters, words, -0.5]`; one token per word.
struct CountingEmbedder;

impl Embedder for CountingEmbedder {
    fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        if texts.iter().any(|t| t.len() > 1000) {
            return Err(EmbedError::Input("a text is longer than 1000 bytes".into()));
        }
        let vectors = texts
            .iter()
            .map(|t| {
                vec![
                    t.chars().count() as f32,
                    t.split_whitespace().count() as f32,
                    -0.5,
                ]
            })
            .collect();
        let tokens = texts.iter().map(|t| t.split_whitespace().count()).sum();
        Ok((vectors, tokens))
    }

    fn model_id(&self) -> &str {
        EMBEDDER_ID
    }
}

fn app_with_embedder() -> axum::Router {
    let embedder: Arc<dyn Embedder> = Arc::new(CountingEmbedder);
    router(state_with(batch_config()).embedder(Some(embedder)).build())
}

#[tokio::test]
async fn floats_and_base64_carry_the_same_vectors() {
    let app = app_with_embedder();
    let body = json!({"model": EMBEDDER_ID, "input": ["hello world", "one"]});
    let reply = send(&app, post("/v1/embeddings", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let floats = reply.json();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], EMBEDDER_ID);
    assert_eq!(floats["data"][0]["object"], "embedding");
    assert_eq!(floats["data"][1]["index"], 1);
    assert_eq!(floats["data"][0]["embedding"], json!([11.0, 2.0, -0.5]));
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );

    let mut body = body;
    body["encoding_format"] = json!("base64");
    let encoded = send(&app, post("/v1/embeddings", &body)).await.json();
    let bytes = STANDARD
        .decode(encoded["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, [3.0, 1.0, -0.5]);
}

#[tokio::test]
async fn bad_embedding_requests_name_the_field() {
    let app = app_with_embedder();
    let cases = [
        (
            json!({"model": EMBEDDER_ID, "input": []}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": EMBEDDER_ID, "input": ["ok", ""]}),
            StatusCode::BAD_REQUEST,
            "input[1]",
        ),
        (
            json!({"model": EMBEDDER_ID, "input": [1, 2, 3]}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": EMBEDDER_ID, "input": "x".repeat(2000)}),
            StatusCode::BAD_REQUEST,
            "input",
        ),
        (
            json!({"model": EMBEDDER_ID, "input": "hi", "encoding_format": "int8"}),
            StatusCode::BAD_REQUEST,
            "encoding_format",
        ),
        (
            json!({"model": EMBEDDER_ID, "input": "hi", "dimensions": 2}),
            StatusCode::BAD_REQUEST,
            "dimensions",
        ),
        (
            json!({"model": "text-embedding-3-small", "input": "hi"}),
            StatusCode::NOT_FOUND,
            "model",
        ),
    ];
    for (body, status, param) in cases {
        let reply = send(&app, post("/v1/embeddings", &body)).await;
        reply.assert_error(status, Some(param));
    }
}

#[tokio::test]
async fn without_an_encoder_embeddings_say_how_to_get_one() {
    let app = app();
    let reply = send(
        &app,
        post(
            "/v1/embeddings",
            &json!({"model": "all-minilm-l6-v2", "input": "hi"}),
        ),
    )
    .await;
    let body = reply.assert_error(StatusCode::NOT_FOUND, Some("model"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--embeddings"), "{message}");
}

/// The installed sentence encoder, served under its store name.
fn minilm_app() -> axum::Router {
    let dir = hearth_core::hearth_home().join("models/all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        dir.display()
    );
    let embedder = BertEmbedder::load(&dir, "all-minilm-l6-v2", 2).expect("load the encoder");
    assert_eq!(embedder.dimension(), 384);
    let embedder: Arc<dyn Embedder> = Arc::new(embedder);
    router(state_with(batch_config()).embedder(Some(embedder)).build())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn bert_vectors_are_unit_length_and_rank_similar_texts_closer() {
    let app = minilm_app();
    let texts = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar.",
        "The stock market fell sharply today.",
    ];
    let reply = send(
        &app,
        post(
            "/v1/embeddings",
            &json!({"model": "all-minilm-l6-v2", "input": texts}),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    let vectors: Vec<Vec<f32>> = (0..3)
        .map(|i| serde_json::from_value(body["data"][i]["embedding"].clone()).unwrap())
        .collect();
    for vector in &vectors {
        assert_eq!(vector.len(), 384);
        let norm = cosine(vector, vector).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.2);
    // [CLS] and [SEP] count as tokens read.
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 6 + 3 * 2);

    let long = "word ".repeat(1000);
    let reply = send(
        &app,
        post(
            "/v1/embeddings",
            &json!({"model": "all-minilm-l6-v2", "input": ["ok", long]}),
        ),
    )
    .await;
    let body = reply.assert_error(StatusCode::BAD_REQUEST, Some("input"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("input[1]") && message.contains("at most"),
        "{message}"
    );
}
