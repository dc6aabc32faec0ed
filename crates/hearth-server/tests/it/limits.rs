//! Authentication, the body limit and back-pressure from a full queue.

use axum::http::{StatusCode, header};
use hearth_engine::BatchConfig;
use hearth_server::router;
use serde_json::json;

use crate::support::{batch_config, chat_request, get, post, send, state_with};

const KEY: &str = "sk-test-0123456789";

#[tokio::test]
async fn a_configured_key_guards_v1_but_not_health() {
    let app = router(state_with(batch_config()).api_key(Some(KEY.into())).build());
    let with_auth = |value: &str| {
        let mut request = post("/v1/chat/completions", &chat_request("Hi", 2));
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
        request
    };

    let missing = send(&app, post("/v1/chat/completions", &chat_request("Hi", 2))).await;
    let body = missing.assert_error(StatusCode::UNAUTHORIZED, None);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let wrong = send(&app, with_auth("Bearer sk-wrong")).await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, None);
    let not_bearer = send(&app, with_auth(&format!("Basic {KEY}"))).await;
    not_bearer.assert_error(StatusCode::UNAUTHORIZED, None);
    let models = send(&app, get("/v1/models")).await;
    models.assert_error(StatusCode::UNAUTHORIZED, None);

    let right = send(&app, with_auth(&format!("Bearer {KEY}"))).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.text());
    let health = send(&app, get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_past_the_limit_are_413_json() {
    let app = router(state_with(batch_config()).body_limit(1024).build());
    let big = chat_request(&"x".repeat(4096), 2);
    let reply = send(&app, post("/v1/chat/completions", &big)).await;
    let body = reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, None);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1024"),
        "{body}"
    );
    // Just under the limit is served.
    let small = chat_request(&"x ".repeat(300), 2);
    assert!(serde_json::to_vec(&small).unwrap().len() < 1024);
    let reply = send(&app, post("/v1/chat/completions", &small)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let config = BatchConfig {
        max_queue: 1,
        max_running: 1,
        ..batch_config()
    };
    let app = router(state_with(config).build());
    let requests = (0..12).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut body = chat_request(&format!("Tell me a fact about the number {i}."), 16);
            if i % 2 == 0 {
                body["stream"] = json!(true);
            }
            send(&app, post("/v1/chat/completions", &body)).await
        })
    });
    let mut ok = 0;
    let mut refused = 0;
    for request in requests.collect::<Vec<_>>() {
        let reply = request.await.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                let body = reply.assert_error(StatusCode::TOO_MANY_REQUESTS, None);
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
                let retry: u64 = reply.headers[header::RETRY_AFTER]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!(ok >= 1, "nothing was served");
    assert!(refused >= 1, "the queue of 1 never filled ({ok} served)");
    assert_eq!(ok + refused, 12);
    // The server still serves once the burst is over.
    let reply = send(&app, post("/v1/chat/completions", &chat_request("Hi", 2))).await;
    assert_eq!(reply.status, StatusCode::OK);
}
