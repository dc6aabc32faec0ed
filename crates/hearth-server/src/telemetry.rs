//! `POST /v1/telemetry`: batches of device telemetry into the durable
//! ingest log, and the server's own requests recorded as events.
//!
//! A batch is JSON (`{"events": [...]}`) or, with `Content-Type:
//! application/x-hearth-telemetry`, the compact binary form of
//! [`hearth_core::telemetry::encode_batch`]. Each event is validated on its
//! own: good events are stored even when others in the batch are rejected,
//! and the response lists which were accepted, already known (duplicate
//! ids), or rejected with the reason. The answer comes only after the
//! accepted events are on disk (`fdatasync`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use hearth_core::telemetry::{self, Dimensions, EventKind, SCHEMA_VERSION, TelemetryEvent};
use hearth_engine::{Completion, FinishReason};
use hearth_watch::ingest::IngestLog;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// Content type of the binary batch form.
pub const BINARY_CONTENT_TYPE: &str = "application/x-hearth-telemetry";

/// Stores a batch of events.
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(log) = state.telemetry().cloned() else {
        return Err(ApiError::NotEnabled(
            "telemetry ingest is off: start the server with --telemetry-dir DIR".into(),
        ));
    };
    let binary = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(BINARY_CONTENT_TYPE));
    let items = if binary {
        telemetry::decode_batch(&body)
    } else {
        telemetry::parse_json_batch(&body)
    }
    .map_err(|e| ApiError::invalid_body(format!("unreadable telemetry batch: {e}")))?;
    let report = tokio::task::spawn_blocking(move || log.append_decoded(&items))
        .await
        .map_err(|e| ApiError::Internal(format!("ingest task: {e}")))?
        .map_err(|e| ApiError::Internal(format!("ingest log: {e}")))?;
    let rejected: Vec<Value> = report
        .rejected
        .iter()
        .map(|(index, reason)| json!({"index": index, "reason": reason}))
        .collect();
    Ok(Json(json!({
        "accepted": report.accepted.len(),
        "duplicates": report.duplicates.len(),
        "rejected": rejected,
    })))
}

/// How a served request ended, for its telemetry event.
pub enum Outcome<'a> {
    Done(&'a Completion),
    Failed(&'static str),
}

/// Records one of the server's own requests (when ingest is on). Runs in
/// the background: the client never waits for it.
pub fn record_request(state: &AppState, kind: EventKind, latency_ms: f64, outcome: Outcome<'_>) {
    let Some(log) = state.telemetry().cloned() else {
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let sequence = state.next_event_number();
    let (ttft_ms, tokens_per_s, failure) = match outcome {
        Outcome::Done(c) => {
            let decode_s = (c.total_ms - c.ttft_ms) / 1e3;
            let rate = (c.usage.completion_tokens > 1 && decode_s > 0.0)
                .then(|| (c.usage.completion_tokens - 1) as f64 / decode_s);
            let failure = (c.finish_reason == FinishReason::Cancelled).then(|| "cancelled".into());
            (Some(c.ttft_ms.min(latency_ms)), rate, failure)
        }
        Outcome::Failed(code) => (None, None, Some(code.to_string())),
    };
    let event = TelemetryEvent {
        schema_version: SCHEMA_VERSION,
        event_id: format!("{}-{sequence}", state.instance_id()),
        request_id: format!("req-{sequence}"),
        timestamp_ms: now_ms,
        kind,
        latency_ms,
        ttft_ms,
        tokens_per_s,
        audio_rtf: None,
        failure,
        peak_memory_mb: None,
        dims: Dimensions {
            device_model: "server".into(),
            os_version: std::env::consts::OS.into(),
            app_version: env!("CARGO_PKG_VERSION").into(),
            model_version: state.model_id().to_string(),
            locale: "unknown".into(),
            network: "local".into(),
        },
    };
    tokio::task::spawn_blocking(move || {
        if let Err(e) = log.append_batch(&[event]) {
            eprintln!("hearth: telemetry of a request not stored: {e}");
        }
    });
}

/// Opens the ingest log for `--telemetry-dir`.
pub fn open_log(dir: &std::path::Path) -> Result<Arc<IngestLog>, String> {
    IngestLog::open(dir)
        .map(Arc::new)
        .map_err(|e| format!("cannot open the telemetry log in {}: {e}", dir.display()))
}
