//! `POST /v1/telemetry` into a real ingest log, and the server's own
//! requests recorded as events.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hearth_core::telemetry::{EventKind, encode_batch, parse_json_batch};
use hearth_server::router;
use hearth_watch::ingest::IngestLog;
use serde_json::{Value, json};

use crate::support::{app, batch_config, chat_request, post, send, state_with};

fn event(id: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    json!({
        "schema_version": 1,
        "event_id": id,
        "request_id": format!("r-{id}"),
        "timestamp_ms": now,
        "kind": "chat",
        "latency_ms": 812.5,
        "ttft_ms": 140.0,
        "tokens_per_s": 38.0,
        "audio_rtf": null,
        "failure": null,
        "peak_memory_mb": 310.0,
        "dims": {
            "device_model": "pixel-7", "os_version": "android-15", "app_version": "2.3.0",
            "model_version": "smollm2-1.4", "locale": "en-US", "network": "wifi"
        }
    })
}

#[tokio::test]
async fn batches_are_validated_per_event_deduplicated_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(IngestLog::open(dir.path()).unwrap());
    let app = router(
        state_with(batch_config())
            .telemetry(Some(log.clone()))
            .build(),
    );

    let mut bad = event("e3");
    bad["latency_ms"] = json!(-5.0);
    let batch = json!({"events": [event("e1"), event("e2"), bad]});
    let reply = send(&app, post("/v1/telemetry", &batch)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 2);
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("latency_ms"),
        "{body}"
    );

    // The same events again, in the binary form: duplicates, not stored twice.
    let items = parse_json_batch(serde_json::to_vec(&batch).unwrap().as_slice()).unwrap();
    let good: Vec<_> = items.into_iter().filter_map(Result::ok).take(2).collect();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/telemetry")
        .header(header::CONTENT_TYPE, "application/x-hearth-telemetry")
        .body(Body::from(encode_batch(&good)))
        .unwrap();
    let body = send(&app, request).await.json();
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["duplicates"], 2);
    let ids: Vec<String> = log
        .read_all()
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, ["e1", "e2"]);

    // An unreadable body is a 400 and nothing is stored.
    let reply = send(&app, post("/v1/telemetry", &json!({"events": 5}))).await;
    reply.assert_error(StatusCode::BAD_REQUEST, None);
}

#[tokio::test]
async fn ingest_is_a_404_when_off_and_served_requests_become_events() {
    let reply = send(&app(), post("/v1/telemetry", &json!({"events": []}))).await;
    assert_eq!(reply.json()["error"]["code"], "not_enabled");

    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(IngestLog::open(dir.path()).unwrap());
    let app = router(
        state_with(batch_config())
            .telemetry(Some(log.clone()))
            .build(),
    );
    let reply = send(&app, post("/v1/chat/completions", &chat_request("Hi", 4))).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Recorded in the background after the response.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = log.read_all().unwrap();
        if !stored.is_empty() || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stored.len(), 1);
    let e = &stored[0];
    assert_eq!(e.kind, EventKind::Chat);
    assert_eq!(e.dims.model_version, crate::support::MODEL_ID);
    assert!(e.failure.is_none());
    assert!(e.ttft_ms.unwrap() <= e.latency_ms);
}
