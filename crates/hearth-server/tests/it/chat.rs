//! `POST /v1/chat/completions` on the real model.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures_util::StreamExt;
use hearth_engine::BatchConfig;
use hearth_server::{CLAMPED_HEADER, router};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{MODEL_ID, app, batch_config, chat_request, post, redact, send, state_with};

const QUESTION: &str = "What is the capital of France? Answer in one sentence.";

#[tokio::test]
async fn a_chat_answers_with_text_and_usage() {
    let app = app();
    let mut request = chat_request(QUESTION, 24);
    // Fields this server does not know are ignored, as OpenAI does.
    request["user"] = json!("someone");
    request["parallel_tool_calls"] = json!(false);
    request["metadata"] = json!({"anything": [1, 2]});
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut body = reply.json();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content}");
    let usage = &body["usage"];
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 10, "{usage}");
    assert!((1..=24).contains(&completion_tokens), "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        prompt_tokens + completion_tokens
    );
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            <= prompt_tokens
    );
    assert!(reply.headers.get(CLAMPED_HEADER).is_none());
    redact(&mut body);
    body["usage"]["prompt_tokens_details"]["cached_tokens"] = "[cached]".into();
    insta::assert_json_snapshot!(body);
}

#[tokio::test]
async fn text_parts_are_the_same_as_a_string() {
    let app = app();
    let plain = send(
        &app,
        post("/v1/chat/completions", &chat_request(QUESTION, 8)),
    )
    .await
    .json();
    let mut parts = chat_request("", 8);
    parts["messages"][0]["content"] = json!([{"type": "text", "text": QUESTION}]);
    let parted = send(&app, post("/v1/chat/completions", &parts))
        .await
        .json();
    assert_eq!(
        plain["choices"][0]["message"]["content"],
        parted["choices"][0]["message"]["content"]
    );
    assert_eq!(
        plain["usage"]["prompt_tokens"],
        parted["usage"]["prompt_tokens"]
    );
}

/// The `data:` chunks of a streamed chat, parsed; `[DONE]` is checked and dropped.
async fn stream_chunks(app: &axum::Router, request: &Value) -> (axum::http::HeaderMap, Vec<Value>) {
    let reply = send(app, post("/v1/chat/completions", request)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let mut data = reply.sse_data();
    assert_eq!(data.pop().as_deref(), Some("[DONE]"));
    let chunks = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (reply.headers, chunks)
}

#[tokio::test]
async fn greedy_stream_concatenates_to_the_whole_answer() {
    let app = app();
    let whole = send(
        &app,
        post("/v1/chat/completions", &chat_request(QUESTION, 32)),
    )
    .await
    .json();
    let mut request = chat_request(QUESTION, 32);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let (_, chunks) = stream_chunks(&app, &request).await;

    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let id = first["id"].as_str().unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["model"] == MODEL_ID)
    );

    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // The finish reason comes in the last chunk with choices, then usage alone.
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens"],
        whole["usage"]["prompt_tokens"]
    );
    let last = rest.last().unwrap();
    assert_eq!(
        last["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    assert!(
        rest.iter().all(|c| c["usage"].is_null()),
        "usage is null before the end"
    );
    assert!(
        rest[..rest.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
}

#[tokio::test]
async fn a_stream_without_include_usage_has_no_usage_field() {
    let app = app();
    let mut request = chat_request(QUESTION, 4);
    request["stream"] = json!(true);
    let (_, chunks) = stream_chunks(&app, &request).await;
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test]
async fn stop_strings_end_the_answer_before_them() {
    let app = app();
    let whole = send(
        &app,
        post("/v1/chat/completions", &chat_request(QUESTION, 24)),
    )
    .await
    .json();
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    let cut = text.find("Paris").expect("the greedy answer names Paris");
    let mut request = chat_request(QUESTION, 24);
    request["stop"] = json!("Paris");
    let stopped = send(&app, post("/v1/chat/completions", &request))
        .await
        .json();
    assert_eq!(stopped["choices"][0]["message"]["content"], &text[..cut]);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_clamped_max_tokens_is_reported_not_silent() {
    let state = state_with(BatchConfig {
        context: 64,
        ..batch_config()
    });
    let app = router(state.build());
    let reply = send(
        &app,
        post(
            "/v1/chat/completions",
            &chat_request("Count from one to one hundred.", 1000),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    let clamped = body["hearth"]["max_tokens_clamped_to"].as_u64().unwrap();
    assert_eq!(clamped, 64 - prompt_tokens);
    assert_eq!(reply.headers[CLAMPED_HEADER], clamped.to_string().as_str());
    assert!(
        body["hearth"]["warning"]
            .as_str()
            .unwrap()
            .contains("lowered")
    );
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() <= clamped);

    // Streaming knows it before the first token: the header says it too.
    let mut request = chat_request("Count from one to one hundred.", 1000);
    request["stream"] = json!(true);
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    assert_eq!(reply.headers[CLAMPED_HEADER], clamped.to_string().as_str());
    let data = reply.sse_data();
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["hearth"]["max_tokens_clamped_to"], clamped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_cancels_its_sequence() {
    let state = state_with(batch_config()).build();
    let batch = state.batch().clone();
    let app = router(state);
    let mut request = chat_request("Write a very long story about a dragon.", 400);
    request["stream"] = json!(true);
    request["min_p"] = json!(0.0);
    let response = app
        .clone()
        .oneshot(post("/v1/chat/completions", &request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    // Wait until tokens flow, then hang up.
    let mut received = 0;
    while received < 3 {
        let chunk = body.next().await.unwrap().unwrap();
        received += String::from_utf8_lossy(&chunk)
            .matches("\"content\"")
            .count();
    }
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while batch.stats().running > 0 {
        assert!(Instant::now() < deadline, "the sequence kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let generated = batch.stats().generated_tokens;
    assert!(
        generated < 400,
        "generation ran to the end: {generated} tokens"
    );
    // The scheduler is free for the next request.
    let reply = send(
        &app,
        post("/v1/chat/completions", &chat_request(QUESTION, 4)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn json_object_response_format_gives_json() {
    let app = app();
    let mut request = chat_request(
        "Give me a JSON object describing a cat with a name and an age.",
        60,
    );
    request["response_format"] = json!({"type": "json_object"});
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    if body["choices"][0]["finish_reason"] == "stop" {
        let value: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("not JSON ({e}): {content}"));
        assert!(value.is_object(), "{content}");
    } else {
        assert!(content.starts_with('{'), "{content}");
    }
}

#[tokio::test]
async fn json_schema_response_format_follows_the_schema() {
    let app = app();
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"],
        "additionalProperties": false,
    });
    let mut request = chat_request(QUESTION, 60);
    request["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}});
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let value: Value =
        serde_json::from_str(content).unwrap_or_else(|e| panic!("not JSON ({e}): {content}"));
    assert!(
        value["city"].is_string() && value["country"].is_string(),
        "{content}"
    );
    assert_eq!(value.as_object().unwrap().len(), 2, "{content}");

    // A schema the constraint engine cannot enforce is refused up front.
    request["response_format"]["json_schema"]["schema"] = json!({"type": "no-such-type"});
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    reply.assert_error(StatusCode::BAD_REQUEST, Some("response_format"));
}

#[tokio::test]
async fn logit_bias_bans_the_greedy_first_token() {
    let app = app();
    let whole = send(&app, post("/v1/completions", &json!({
        "model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0,
    })))
    .await
    .json();
    let first = whole["choices"][0]["text"].as_str().unwrap().to_owned();
    let engine = crate::support::smollm2();
    let banned = engine.tokenizer().encode(&first, false, false);
    assert_eq!(banned.len(), 1, "{first:?} is one token");
    let biased = send(&app, post("/v1/completions", &json!({
        "model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 1, "temperature": 0,
        "logit_bias": {banned[0].to_string(): -100},
    })))
    .await
    .json();
    assert_ne!(biased["choices"][0]["text"].as_str().unwrap(), first);
}

#[tokio::test]
async fn event_stream_shape() {
    let app = app();
    let mut request = chat_request(QUESTION, 3);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    let events: Vec<String> = reply
        .sse_data()
        .into_iter()
        .map(|data| match serde_json::from_str::<Value>(&data) {
            Ok(mut chunk) => {
                redact(&mut chunk);
                if let Some(cached) =
                    chunk.pointer_mut("/usage/prompt_tokens_details/cached_tokens")
                {
                    *cached = "[cached]".into();
                }
                format!("data: {chunk}")
            }
            Err(_) => format!("data: {data}"),
        })
        .collect();
    insta::assert_snapshot!(events.join("\n"));
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
                "additionalProperties": false,
            },
        },
    }])
}

#[tokio::test]
async fn a_required_tool_call_comes_back_as_tool_calls() {
    let app = app();
    let mut request = chat_request("What is the weather like in Paris?", 60);
    request["tools"] = weather_tools();
    request["tool_choice"] = json!("required");
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
        .expect("arguments are JSON text");
    assert!(arguments["city"].is_string(), "{arguments}");
    // A small model may start a second (parallel) call and run out of
    // tokens in it; an unfinished call is neither a call nor content.
    let content = &choice["message"]["content"];
    assert!(content.is_null(), "{body}");

    // Streamed: the call arrives whole in one chunk, then finish_reason.
    request["stream"] = json!(true);
    let (_, chunks) = stream_chunks(&app, &request).await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(!calls.is_empty(), "{chunks:?}");
    assert_eq!(calls[0][0]["index"], 0);
    assert_eq!(calls[0][0]["function"], call["function"]);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    let streamed_text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed_text, "", "no content besides the call");
}

#[tokio::test]
async fn tool_results_go_back_to_the_model() {
    let app = app();
    let request = json!({
        "model": MODEL_ID,
        "temperature": 0,
        "max_tokens": 30,
        "tools": weather_tools(),
        "tool_choice": "none",
        "messages": [
            {"role": "user", "content": "What is the weather like in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temperature_c\": 31, \"sky\": \"sunny\"}"},
        ],
    });
    let reply = send(&app, post("/v1/chat/completions", &request)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("31") || content.to_lowercase().contains("sunny"),
        "{content}"
    );
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}
