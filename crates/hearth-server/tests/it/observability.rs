//! `/health`, `/metrics` and `/v1/models`.

use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::support::{MODEL_ID, app, chat_request, get, post, send};

#[tokio::test]
async fn health_names_the_model_and_the_queue() {
    let app = app();
    let reply = send(&app, get("/health")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["model"], MODEL_ID);
    assert_eq!(body["queue"]["max_queue"], 8);
    assert_eq!(body["queue"]["queued"], 0);
}

#[tokio::test]
async fn models_lists_the_served_model() {
    let app = app();
    let body = send(&app, get("/v1/models")).await.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], MODEL_ID);
    assert_eq!(body["data"][0]["object"], "model");
    let one = send(&app, get(&format!("/v1/models/{MODEL_ID}"))).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["id"], MODEL_ID);
}

/// The value of an unlabelled sample, or of one with exactly `labels`.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {name_and_labels} in:\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_latencies() {
    let app = app();
    let reply = send(
        &app,
        post("/v1/chat/completions", &chat_request("Hi there", 6)),
    )
    .await;
    let completion_tokens = reply.json()["usage"]["completion_tokens"].as_u64().unwrap();
    send(&app, post("/v1/chat/completions", &chat_request("Hi", 0))).await;
    send(&app, get("/nowhere")).await;

    // The scheduler's gauges trail its events by a step: wait for them to settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let reply = send(&app, get("/metrics")).await;
        assert_eq!(reply.status, StatusCode::OK);
        if sample(&reply.text(), "hearth_running_sequences") == 0.0 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = reply.text();
    let requests = |labels: &str| sample(&text, &format!("hearth_http_requests_total{{{labels}}}"));
    assert_eq!(
        requests("endpoint=\"/v1/chat/completions\",status=\"200\""),
        1.0
    );
    assert_eq!(
        requests("endpoint=\"/v1/chat/completions\",status=\"400\""),
        1.0
    );
    assert_eq!(requests("endpoint=\"unmatched\",status=\"404\""), 1.0);
    assert_eq!(sample(&text, "hearth_queue_depth"), 0.0);
    assert_eq!(sample(&text, "hearth_running_sequences"), 0.0);
    assert_eq!(
        sample(&text, "hearth_generated_tokens_total"),
        completion_tokens as f64
    );
    assert_eq!(
        sample(&text, "hearth_time_to_first_token_seconds_count"),
        1.0
    );
    assert_eq!(
        sample(&text, "hearth_inter_token_latency_seconds_count"),
        (completion_tokens - 1) as f64
    );
    for name in [
        "hearth_kv_blocks_used",
        "hearth_kv_blocks_total",
        "hearth_prefix_cache_hit_tokens_total",
        "hearth_generation_tokens_per_second",
    ] {
        assert!(sample(&text, name) >= 0.0, "{name}");
    }
    // Every sample line belongs to a declared metric.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {name} "))
                || text.contains(&format!("# TYPE {base} histogram")),
            "undeclared sample {line}"
        );
    }
}
