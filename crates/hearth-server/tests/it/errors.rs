//! Every malformed or out-of-range request gets its 4xx with an
//! OpenAI-shaped body whose `param` names the field to fix.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{MODEL_ID, app, get, post, post_raw, send};

/// A chat request with `patch`'s fields set (a `null` removes the field).
fn chat_with(patch: Value) -> Value {
    let mut body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    });
    for (key, value) in patch.as_object().unwrap() {
        match value {
            Value::Null => {
                body.as_object_mut().unwrap().remove(key);
            }
            other => body[key] = other.clone(),
        }
    }
    body
}

fn completion_with(patch: Value) -> Value {
    let mut body = json!({"model": MODEL_ID, "prompt": "Once upon", "max_tokens": 4});
    for (key, value) in patch.as_object().unwrap() {
        match value {
            Value::Null => {
                body.as_object_mut().unwrap().remove(key);
            }
            other => body[key] = other.clone(),
        }
    }
    body
}

#[tokio::test]
async fn bad_chat_requests_are_400_naming_the_field() {
    let app = app();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"model": null}), "model"),
        (json!({"messages": null}), "messages"),
        (json!({"messages": "hello"}), "messages"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages[0].content[0].type",
        ),
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"temperature": -1}), "temperature"),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"top_p": 0}), "top_p"),
        (json!({"top_p": 1.01}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (
            json!({"max_completion_tokens": -3}),
            "max_completion_tokens",
        ),
        (json!({"presence_penalty": 2.5}), "presence_penalty"),
        (json!({"frequency_penalty": -2.5}), "frequency_penalty"),
        (json!({"n": 2}), "n"),
        (json!({"seed": "abc"}), "seed"),
        (json!({"stop": 5}), "stop"),
        (json!({"logit_bias": {"not-a-token": 5}}), "logit_bias"),
        (json!({"logit_bias": {"12": 500}}), "logit_bias"),
        (json!({"logprobs": true}), "logprobs"),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "twice"}}, {"type": "function", "function": {"name": "twice"}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
            "messages[0].tool_calls",
        ),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": {"type": "function", "function": {"name": "b"}}}),
            "tool_choice.function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "has space"}}], "tool_choice": "none"}),
            "tools[0].function.name",
        ),
    ];
    for (patch, param) in cases {
        let body = chat_with(patch.clone());
        let reply = send(&app, post("/v1/chat/completions", &body)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{patch}: {}",
            reply.text()
        );
        let error = reply.assert_error(StatusCode::BAD_REQUEST, Some(param));
        assert_eq!(error["error"]["type"], "invalid_request_error", "{patch}");
    }
}

#[tokio::test]
async fn bad_completion_requests_are_400_naming_the_field() {
    let app = app();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"prompt": null}), "prompt"),
        (json!({"prompt": ["one", "two"]}), "prompt"),
        (json!({"prompt": [1, 99999999]}), "prompt"),
        (json!({"prompt": {"text": "x"}}), "prompt"),
        (json!({"best_of": 3}), "best_of"),
        (json!({"n": 0}), "n"),
        (json!({"suffix": "the end"}), "suffix"),
        (json!({"logprobs": 2}), "logprobs"),
        (json!({"max_tokens": -1}), "max_tokens"),
        (json!({"top_p": -0.5}), "top_p"),
    ];
    for (patch, param) in cases {
        let body = completion_with(patch.clone());
        let reply = send(&app, post("/v1/completions", &body)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{patch}: {}",
            reply.text()
        );
        reply.assert_error(StatusCode::BAD_REQUEST, Some(param));
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_json_not_plain_text() {
    let app = app();
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"model\": ".to_vec(),
        b"not json at all".to_vec(),
        b"[1, 2, 3]".to_vec(),
        Vec::new(),
        {
            let mut body = br#"{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "caf"#.to_vec();
            body.extend_from_slice(b"\xe9\"}]}");
            body
        },
    ];
    for body in bodies {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let reply = send(&app, post_raw("/v1/chat/completions", body)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{shown}: {}",
            reply.text()
        );
        let error = reply.json();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{shown}");
    }
}

#[tokio::test]
async fn unknown_models_are_404_model_not_found() {
    let app = app();
    let reply = send(
        &app,
        post(
            "/v1/chat/completions",
            &chat_with(json!({"model": "gpt-4o"})),
        ),
    )
    .await;
    let body = reply.assert_error(StatusCode::NOT_FOUND, Some("model"));
    assert_eq!(body["error"]["code"], "model_not_found");
    // Exact spelling only.
    let upper = MODEL_ID.to_uppercase();
    let reply = send(
        &app,
        post("/v1/completions", &completion_with(json!({"model": upper}))),
    )
    .await;
    reply.assert_error(StatusCode::NOT_FOUND, Some("model"));
    let reply = send(&app, get("/v1/models/gpt-4o")).await;
    reply.assert_error(StatusCode::NOT_FOUND, Some("model"));
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_says_by_how_much() {
    let app = app();
    let long = "word ".repeat(800);
    let reply = send(
        &app,
        post(
            "/v1/chat/completions",
            &chat_with(json!({"messages": [{"role": "user", "content": long}]})),
        ),
    )
    .await;
    let body = reply.assert_error(StatusCode::BAD_REQUEST, Some("messages"));
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("too many"), "{message}");
    assert!(message.contains("512"), "names the context: {message}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = app();
    let reply = send(&app, get("/v2/everything")).await;
    reply.assert_error(StatusCode::NOT_FOUND, None);
    let reply = send(&app, get("/v1/chat/completions")).await;
    reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, None);
    let reply = send(&app, post("/health", &json!({}))).await;
    reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, None);
}

#[tokio::test]
async fn error_body_shape() {
    let app = app();
    let reply = send(
        &app,
        post(
            "/v1/chat/completions",
            &chat_with(json!({"temperature": 9})),
        ),
    )
    .await;
    insta::assert_json_snapshot!(reply.json());
}
