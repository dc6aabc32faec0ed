//! `POST /v1/completions` on the real model.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{MODEL_ID, app, post, redact, send};

const PROMPT: &str = "The capital of France is";

fn request(extra: Value) -> Value {
    let mut body = json!({"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 8, "temperature": 0});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

#[tokio::test]
async fn a_completion_continues_the_prompt() {
    let app = app();
    let reply = send(&app, post("/v1/completions", &request(json!({})))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut body = reply.json();
    assert!(
        body["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{body}"
    );
    assert_eq!(body["usage"]["completion_tokens"], 8);
    redact(&mut body);
    body["usage"]["prompt_tokens_details"]["cached_tokens"] = "[cached]".into();
    insta::assert_json_snapshot!(body);
}

#[tokio::test]
async fn token_prompts_echo_and_one_element_arrays_agree() {
    let app = app();
    let plain = send(&app, post("/v1/completions", &request(json!({}))))
        .await
        .json();
    let text = plain["choices"][0]["text"].as_str().unwrap();

    let array = send(
        &app,
        post("/v1/completions", &request(json!({"prompt": [PROMPT]}))),
    )
    .await
    .json();
    assert_eq!(array["choices"][0]["text"], text);

    let tokens = crate::support::smollm2()
        .tokenizer()
        .encode(PROMPT, true, false);
    let by_tokens = send(
        &app,
        post("/v1/completions", &request(json!({"prompt": tokens}))),
    )
    .await
    .json();
    assert_eq!(by_tokens["choices"][0]["text"], text);

    let echoed = send(
        &app,
        post("/v1/completions", &request(json!({"echo": true}))),
    )
    .await
    .json();
    assert_eq!(echoed["choices"][0]["text"], format!("{PROMPT}{text}"));
}

#[tokio::test]
async fn default_max_tokens_is_sixteen() {
    let app = app();
    let mut body = request(json!({}));
    body.as_object_mut().unwrap().remove("max_tokens");
    body["prompt"] = json!("One, two, three, four, five, six, seven,");
    let reply = send(&app, post("/v1/completions", &body)).await.json();
    assert_eq!(reply["usage"]["completion_tokens"], 16);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn greedy_stream_concatenates_to_the_whole_completion() {
    let app = app();
    let whole = send(&app, post("/v1/completions", &request(json!({}))))
        .await
        .json();
    let reply = send(
        &app,
        post(
            "/v1/completions",
            &request(json!({"stream": true, "stream_options": {"include_usage": true}})),
        ),
    )
    .await;
    let mut data = reply.sse_data();
    assert_eq!(data.pop().as_deref(), Some("[DONE]"));
    let chunks: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, whole["choices"][0]["text"].as_str().unwrap());
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
}
