//! Shared helpers: the test model, a router over it, requests and replies.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use hearth_engine::{BatchConfig, BatchEngine, Engine};
use hearth_models::LoadOptions;
use hearth_server::{AppState, router};
use serde_json::Value;
use tower::ServiceExt;

/// The id the test servers serve their model under.
pub const MODEL_ID: &str = "smollm2-135m-instruct";

/// Path of an installed test model; panics with the fix when it is missing.
pub fn model_path(name: &str) -> PathBuf {
    let path = hearth_core::hearth_home()
        .join("models")
        .join(name)
        .join("model.gguf");
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

/// SmolLM2-135M-Instruct, loaded once per test binary.
pub fn smollm2() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let engine = Engine::load(&model_path(MODEL_ID), &LoadOptions { n_threads: 2 })
                .unwrap_or_else(|e| panic!("loading {MODEL_ID}: {e}"));
            Arc::new(engine)
        })
        .clone()
}

/// A small scheduler over the test model.
pub fn batch_config() -> BatchConfig {
    BatchConfig {
        max_queue: 8,
        max_running: 4,
        context: 512,
        kv_blocks: 128,
        ..BatchConfig::default()
    }
}

/// A state over a fresh scheduler with `config`.
pub fn state_with(config: BatchConfig) -> hearth_server::AppStateBuilder {
    let batch = Arc::new(BatchEngine::start(smollm2(), config).expect("start the scheduler"));
    AppState::builder(MODEL_ID, batch)
}

/// The router with default test settings.
pub fn app() -> Router {
    router(state_with(batch_config()).build())
}

/// A JSON POST.
pub fn post(path: &str, body: &Value) -> Request<Body> {
    post_raw(path, serde_json::to_vec(body).unwrap())
}

/// A POST of raw bytes declared as JSON.
pub fn post_raw(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    /// The `data:` payloads of an SSE body, `[DONE]` included.
    pub fn sse_data(&self) -> Vec<String> {
        let text = self.text();
        assert!(
            text.ends_with("\n\n"),
            "unterminated event stream: {text:?}"
        );
        text.split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                    .to_owned()
            })
            .collect()
    }

    /// Asserts an OpenAI-shaped error with `status` and `param`.
    pub fn assert_error(&self, status: StatusCode, param: Option<&str>) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "error bodies are JSON"
        );
        let body = self.json();
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {body}"
        );
        assert!(error["type"].is_string(), "no type: {body}");
        assert!(error.get("code").is_some(), "no code: {body}");
        assert_eq!(error["param"].as_str(), param, "param of {body}");
        body
    }
}

/// Sends one request through the router.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// A greedy chat request for one user message.
pub fn chat_request(content: &str, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// Replaces the fields that change between runs (ids, times) with markers.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match key.as_str() {
                    "id" if field.is_string() => *field = "[id]".into(),
                    "created" => *field = "[created]".into(),
                    "queue_ms" | "ttft_ms" | "total_ms" => *field = "[ms]".into(),
                    _ => redact(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}
