//! The watch dashboard over a real ingest log: a simulated fleet whose
//! model 1.4 slows time to first token on older phones, alerts saved as
//! `hearth watch detect` saves them, and the page and its JSON API through
//! the router.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hearth_core::TelemetryEvent;
use hearth_server::router;
use hearth_watch::aggregate::Aggregates;
use hearth_watch::alerts::{AlertBook, LifecyclePolicy};
use hearth_watch::ingest::IngestLog;
use hearth_watch::pipeline::{self, Metric, PipelineConfig};
use hearth_watch::simulate::{self, FleetConfig};
use serde_json::Value;

use crate::support::{batch_config, get, send, state_with};

/// The dashboard's (and `hearth watch detect`'s) bucket length.
const BUCKET_MS: i64 = 300_000;
const HOUR_MS: i64 = 3_600_000;
/// Hours simulated, and when the regression starts.
const HOURS: u32 = 48;
const INJECTED_AT_HOURS: i64 = 36;
/// Smallest rise of the mean p95 (six hours after the injection against
/// six hours before) in the fleet total and in the older-phone slice. The
/// simulator multiplies the first token of half the older phones by 1.8.
const MIN_TOTAL_RISE: f64 = 1.25;
const MIN_SLICE_RISE: f64 = 1.45;
/// Relative error of a float through JSON: serde_json's default parser can
/// miss the last bit.
const JSON_FLOAT_TOLERANCE: f64 = 1e-12;

/// A simulated fleet in a log directory, with its alerts detected.
struct Fleet {
    dir: tempfile::TempDir,
    log: Arc<IngestLog>,
    events: Vec<TelemetryEvent>,
    injected_ms: i64,
}

fn fleet() -> Fleet {
    let clean = FleetConfig {
        hours: HOURS,
        ..FleetConfig::default()
    };
    let injected_ms = clean.start_ms + INJECTED_AT_HOURS * HOUR_MS;
    let config = FleetConfig {
        injections: vec![simulate::older_phone_ttft(injected_ms)],
        ..clean
    };
    let events = simulate::simulate(&config);
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(IngestLog::open(dir.path()).unwrap());
    for batch in events.chunks(20_000) {
        let report = log.append_batch(batch).unwrap();
        assert_eq!(report.accepted.len(), batch.len(), "{:?}", report.rejected);
    }
    // What `hearth watch detect --dir` does: detect over the log and keep
    // the alerts' lifecycle in alerts.json beside it.
    let aggregates = Aggregates::build(&log.read_all().unwrap(), BUCKET_MS).unwrap();
    let report = pipeline::run(&aggregates, &PipelineConfig::default()).unwrap();
    let policy = LifecyclePolicy::default();
    let mut book = AlertBook::load(dir.path()).unwrap();
    for alert in &report.alerts {
        book.observe(alert, alert.last_ms, &policy);
    }
    book.tick(aggregates.bucket_start(aggregates.len()), &policy);
    book.save(dir.path()).unwrap();
    Fleet {
        dir,
        log,
        events,
        injected_ms,
    }
}

fn with_key(path: &str, key: &str) -> Request<Body> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap()
}

/// `(time_ms, value, requests)` of a series body.
fn points(body: &Value, key: &str) -> Vec<(i64, f64, Option<f64>)> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .iter()
        .map(|point| {
            (
                point["time_ms"].as_i64().unwrap(),
                point["value"].as_f64().unwrap(),
                point["requests"].as_f64(),
            )
        })
        .collect()
}

/// Mean value of the points in `[from_ms, to_ms)`.
fn mean_between(points: &[(i64, f64, Option<f64>)], from_ms: i64, to_ms: i64) -> f64 {
    let inside: Vec<f64> = points
        .iter()
        .filter(|(time, _, _)| (from_ms..to_ms).contains(time))
        .map(|(_, value, _)| *value)
        .collect();
    assert!(inside.len() >= 12, "{} points in the window", inside.len());
    inside.iter().sum::<f64>() / inside.len() as f64
}

/// The rise of the mean from six hours before the injection (less the
/// hour before it) to six hours after it (less the hour after it).
fn rise(points: &[(i64, f64, Option<f64>)], injected_ms: i64) -> f64 {
    let before = mean_between(points, injected_ms - 7 * HOUR_MS, injected_ms - HOUR_MS);
    let after = mean_between(points, injected_ms + HOUR_MS, injected_ms + 7 * HOUR_MS);
    after / before
}

#[tokio::test]
async fn dashboard_shows_the_older_phone_regression_and_its_root_cause() {
    let fleet = fleet();
    let app = router(
        state_with(batch_config())
            .telemetry(Some(fleet.log.clone()))
            .build(),
    );

    let page = send(&app, get("/watch")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    let html = page.text();
    assert!(html.contains("<div id=\"app\">"), "no app root");
    assert!(html.contains("/watch/api/series"), "the page reads the API");
    // Self-contained: no external scripts, styles or images.
    for external in ["<script src", "<link", "<img", "@import"] {
        assert!(!html.contains(external), "the page loads {external}");
    }

    // One alert: time to first token, explained by older phones on 1.4.
    let body = send(&app, get("/watch/api/alerts")).await.json();
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{body}");
    let alert = &alerts[0];
    assert_eq!(alert["metric"], "ttft_p95");
    assert_eq!(alert["state"], "open");
    let label = alert["root_cause_label"].as_str().unwrap();
    assert!(
        label.contains("device_model=older-phone") && label.contains("model_version=1.4"),
        "{label}"
    );
    let cause = &alert["root_cause"][0];
    assert!(cause["share"].as_f64().unwrap() >= 0.8, "{cause}");
    let onset_ms = alert["onset_ms"].as_i64().unwrap();
    assert!(
        (fleet.injected_ms - BUCKET_MS..=fleet.injected_ms + HOUR_MS).contains(&onset_ms),
        "onset {} min after the injection",
        (onset_ms - fleet.injected_ms) / 60_000
    );
    assert!(
        alert.get("total_series").is_none(),
        "the list leaves out evidence"
    );
    let id = alert["id"].as_str().unwrap().to_owned();

    // The series: every bucket of the total, each equal to the library's
    // roll-up of that bucket, with the requests counted from the events.
    let total = send(&app, get("/watch/api/series?metric=ttft_p95")).await;
    assert_eq!(total.status, StatusCode::OK, "{}", total.text());
    let total = total.json();
    assert_eq!(total["events"], fleet.events.len());
    assert_eq!(total["label"], "total");
    assert!(
        total["dimensions"]["device_model"]
            .as_array()
            .unwrap()
            .iter()
            .any(|value| value == "older-phone"),
        "{}",
        total["dimensions"]
    );
    let total_points = points(&total, "points");
    assert_eq!(total_points.len(), HOURS as usize * 12);
    let aggregates = Aggregates::build(&fleet.events, BUCKET_MS).unwrap();
    let older = [("device_model".to_owned(), "older-phone".to_owned())];
    let slice_body = send(
        &app,
        get("/watch/api/series?metric=ttft_p95&slice=device_model%3Dolder-phone"),
    )
    .await
    .json();
    assert_eq!(slice_body["label"], "device_model=older-phone");
    let slice_points = points(&slice_body, "points");
    // Requests per bucket start, counted from the events: all, older phones.
    let mut counted: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for event in &fleet.events {
        let start = event.timestamp_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let entry = counted.entry(start).or_default();
        entry.0 += 1.0;
        if event.dims.device_model == "older-phone" {
            entry.1 += 1.0;
        }
    }
    for (series, slice, in_slice) in [
        (&total_points, &[][..], false),
        (&slice_points, &older[..], true),
    ] {
        for &(time_ms, value, requests) in series.iter() {
            let bucket = ((time_ms - aggregates.start_ms) / BUCKET_MS) as usize;
            let cell = aggregates.rollup(bucket..bucket + 1, slice).unwrap();
            let expected = Metric::TtftP95.value(&cell).unwrap();
            assert!(
                (value - expected).abs() <= JSON_FLOAT_TOLERANCE * expected,
                "at {time_ms}: {value} against the roll-up's {expected}"
            );
            let (all, older_phones) = counted[&time_ms];
            let expected = if in_slice { older_phones } else { all };
            assert_eq!(requests, Some(expected), "requests at {time_ms}");
        }
    }
    let total_rise = rise(&total_points, fleet.injected_ms);
    let slice_rise = rise(&slice_points, fleet.injected_ms);
    eprintln!("ttft p95 rise: total {total_rise:.3}, older phones {slice_rise:.3}");
    assert!(total_rise >= MIN_TOTAL_RISE, "total rose {total_rise}");
    assert!(
        slice_rise >= MIN_SLICE_RISE,
        "older phones rose {slice_rise}"
    );
    assert!(slice_rise > total_rise);

    // Failure rates are flat: nothing injected there.
    let failures = send(&app, get("/watch/api/series?metric=failure_rate"))
        .await
        .json();
    let failure_points = points(&failures, "points");
    assert!(
        failure_points
            .iter()
            .all(|(_, value, _)| (0.0..=0.1).contains(value)),
        "failure rates outside [0, 0.1]"
    );

    // The drill-down, by a unique prefix of the id.
    let detail = send(&app, get(&format!("/watch/api/alerts/{}", &id[..8]))).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text());
    let detail = detail.json();
    assert_eq!(detail["id"], id.as_str());
    let evidence = &detail["evidence"];
    assert_eq!(evidence["source"], "log");
    assert_eq!(evidence["cause_label"], label.split(" (").next().unwrap());
    let from_ms = evidence["from_ms"].as_i64().unwrap();
    assert_eq!(from_ms, onset_ms - 24 * HOUR_MS);
    let evidence_total = points(evidence, "total");
    let evidence_cause = points(evidence, "cause");
    assert!(
        evidence_total
            .iter()
            .all(|(time, _, _)| *time + BUCKET_MS > from_ms),
        "evidence starts a day before the onset"
    );
    assert_eq!(
        evidence_total.len(),
        total_points
            .iter()
            .filter(|(time, _, _)| *time + BUCKET_MS > from_ms)
            .count()
    );
    let cause_rise = rise(&evidence_cause, fleet.injected_ms);
    assert!(cause_rise > slice_rise, "root cause rose {cause_rise}");

    let missing = send(&app, get("/watch/api/alerts/ffffffffffffffff")).await;
    let error = missing.assert_error(StatusCode::NOT_FOUND, Some("id"));
    assert_eq!(error["error"]["code"], "alert_not_found");

    // Bad parameters are 400s that name the parameter.
    for (query, param) in [
        ("metric=p99", "metric"),
        ("slice=older-phone", "slice"),
        ("slice=device%3Dolder-phone", "slice"),
        ("slice=locale=en-US&slice=locale=de-DE", "slice"),
        ("bucket_ms=60000", "bucket_ms"),
    ] {
        let reply = send(&app, get(&format!("/watch/api/series?{query}"))).await;
        let error = reply.assert_error(StatusCode::BAD_REQUEST, Some(param));
        assert_eq!(error["error"]["type"], "invalid_request_error", "{query}");
    }

    // New events are seen: the cached aggregates are rebuilt once the log
    // has grown.
    let later: Vec<TelemetryEvent> = fleet.events[fleet.events.len() - 10..]
        .iter()
        .enumerate()
        .map(|(index, event)| TelemetryEvent {
            event_id: format!("later-{index}"),
            timestamp_ms: event.timestamp_ms + HOUR_MS,
            ..event.clone()
        })
        .collect();
    fleet.log.append_batch(&later).unwrap();
    let grown = send(&app, get("/watch/api/series")).await.json();
    assert_eq!(grown["events"], fleet.events.len() + later.len());
    assert!(points(&grown, "points").len() > total_points.len());

    // alerts.json without its log: the evidence stored with the alert.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        fleet.dir.path().join("alerts.json"),
        copy.path().join("alerts.json"),
    )
    .unwrap();
    let bare = router(
        state_with(batch_config())
            .telemetry(Some(Arc::new(IngestLog::open(copy.path()).unwrap())))
            .build(),
    );
    let detail = send(&bare, get(&format!("/watch/api/alerts/{id}")))
        .await
        .json();
    let book = AlertBook::load(fleet.dir.path()).unwrap();
    let stored = &book.get(&id).unwrap().alert;
    assert_eq!(detail["evidence"]["source"], "alert");
    assert_eq!(
        points(&detail["evidence"], "total").len(),
        stored.total_series.len()
    );
    assert_eq!(
        points(&detail["evidence"], "cause").len(),
        stored.cause_series.len()
    );
}

#[tokio::test]
async fn dashboard_is_off_without_telemetry_and_its_api_needs_the_key() {
    let off = router(state_with(batch_config()).build());
    for path in ["/watch", "/watch/api/alerts", "/watch/api/series"] {
        let reply = send(&off, get(path)).await;
        let body = reply.assert_error(StatusCode::NOT_FOUND, None);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--telemetry-dir"),
            "{path}: {body}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(IngestLog::open(dir.path()).unwrap());
    let app = router(
        state_with(batch_config())
            .telemetry(Some(log))
            .api_key(Some("watch-key".to_owned()))
            .build(),
    );
    // The page holds no data and stays open; the API needs the key.
    assert_eq!(send(&app, get("/watch")).await.status, StatusCode::OK);
    send(&app, get("/watch/api/alerts"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, None);
    let alerts = send(&app, with_key("/watch/api/alerts", "watch-key")).await;
    assert_eq!(alerts.status, StatusCode::OK, "{}", alerts.text());
    assert_eq!(alerts.json()["alerts"], serde_json::json!([]));
    let series = send(&app, with_key("/watch/api/series", "watch-key"))
        .await
        .json();
    assert_eq!(series["events"], 0);
    assert_eq!(series["points"], serde_json::json!([]));
}
