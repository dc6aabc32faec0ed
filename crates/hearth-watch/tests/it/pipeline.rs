//! End to end: a simulated fleet's regression is ingested, aggregated,
//! detected, localised and alerted on; the alert lifecycle rules.

use hearth_watch::aggregate::{Aggregates, leaf_in_slice};
use hearth_watch::alerts::{AlertBook, AlertState, LifecyclePolicy, Transition};
use hearth_watch::ingest::IngestLog;
use hearth_watch::pipeline::{self, Alert, Metric, PipelineConfig, Report, benjamini_hochberg};
use hearth_watch::simulate::{self, FleetConfig, Injection};
use hearth_watch::webhook;

const BUCKET_MS: i64 = 300_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Largest delay from an injection to the alert's onset.
const MAX_ONSET_DELAY_MS: i64 = HOUR_MS;
/// Smallest share of the change the true root cause must explain.
const MIN_SHARE: f64 = 0.8;
/// Failure probability added in the failing slice (about 10 % of traffic,
/// so the fleet's rate goes from 2 % to about 3.6 %).
const INJECTED_FAILURE_RATE: f64 = 0.15;

fn detect(events: &[hearth_core::TelemetryEvent]) -> anyhow::Result<Report> {
    let aggregates = Aggregates::build(events, BUCKET_MS)?;
    Ok(pipeline::run(&aggregates, &PipelineConfig::default())?)
}

fn injected_at(config: &FleetConfig) -> i64 {
    config.start_ms + DAY_MS * 3 / 2
}

fn slice(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut slice: Vec<(String, String)> = pairs
        .iter()
        .map(|(dim, value)| ((*dim).to_owned(), (*value).to_owned()))
        .collect();
    slice.sort();
    slice
}

fn sorted(slice: &[(String, String)]) -> Vec<(String, String)> {
    let mut slice = slice.to_vec();
    slice.sort();
    slice
}

fn summary(report: &Report) -> String {
    report
        .alerts
        .iter()
        .map(|alert| format!("{} {}", alert.metric, alert.root_cause_label()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn simulator_is_deterministic_and_injects_into_its_slice_only() {
    let config = FleetConfig {
        hours: 2,
        ..FleetConfig::default()
    };
    let first = simulate::simulate(&config);
    assert_eq!(first, simulate::simulate(&config));
    assert!(first.len() > 3_000, "{} events in 2 hours", first.len());
    for event in &first {
        assert_eq!(event.validate(event.timestamp_ms), Ok(()));
    }
    let other = simulate::simulate(&FleetConfig {
        seed: 2,
        ..config.clone()
    });
    assert_ne!(first.len(), 0);
    assert_ne!(first[0].latency_ms, other[0].latency_ms);

    // Doubling the first token of one slice leaves every other request as
    // it was: the random streams stay aligned.
    let injection = Injection {
        ttft_factor: 2.0,
        ..Injection::new(config.start_ms, &[("device_model", "tablet")])
    };
    let slowed = simulate::simulate(&FleetConfig {
        injections: vec![injection],
        ..config
    });
    assert_eq!(first.len(), slowed.len());
    for (before, after) in first.iter().zip(&slowed) {
        if before.dims.device_model != "tablet" {
            assert_eq!(before, after);
            continue;
        }
        // A failed request's latency is its time to first token.
        let (was, is) = match (before.ttft_ms, after.ttft_ms) {
            (Some(was), Some(is)) => (was, is),
            _ => (before.latency_ms, after.latency_ms),
        };
        assert!((is / was - 2.0).abs() < 0.01, "{was} -> {is}");
    }
}

#[test]
fn rollups_merge_leaves_exactly() -> anyhow::Result<()> {
    let events = simulate::simulate(&FleetConfig {
        hours: 3,
        ..FleetConfig::default()
    });
    let aggregates = Aggregates::build(&events, BUCKET_MS)?;
    assert_eq!(aggregates.len(), 36);
    let older = slice(&[("device_model", "older-phone")]);
    let cell = aggregates.rollup(0..aggregates.len(), &older)?;
    let members: Vec<_> = events
        .iter()
        .filter(|event| event.dims.device_model == "older-phone")
        .collect();
    assert_eq!(cell.count, members.len() as f64);
    let failures = members
        .iter()
        .filter(|event| event.failure.is_some())
        .count();
    assert_eq!(cell.failures, failures as f64);
    // The sketch's p95 against the exact one, within its relative accuracy.
    let mut ttft: Vec<f64> = members.iter().filter_map(|event| event.ttft_ms).collect();
    ttft.sort_by(f64::total_cmp);
    let exact = ttft[((ttft.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    let sketched = Metric::TtftP95.value(&cell)?;
    assert!(
        (sketched / exact - 1.0).abs() <= 0.02,
        "sketch {sketched} exact {exact}"
    );
    let leaves = aggregates.leaves(0..aggregates.len())?;
    let total: f64 = leaves.values().map(|leaf| leaf.count).sum();
    assert_eq!(total, events.len() as f64);
    assert!(leaves.keys().all(|leaf| leaf.len() == 6));
    assert!(leaves.keys().any(|leaf| leaf_in_slice(leaf, &older)));
    Ok(())
}

#[test]
fn benjamini_hochberg_matches_a_hand_computed_case() {
    // Sorted p: 0.001 0.008 0.039 0.041 0.27, m = 5.
    let adjusted = benjamini_hochberg(&[0.041, 0.001, 0.27, 0.008, 0.039]);
    let expected = [0.05125, 0.005, 0.27, 0.02, 0.05125];
    for (got, want) in adjusted.iter().zip(expected) {
        assert!((got - want).abs() < 1e-12, "{adjusted:?}");
    }
}

/// The demo: model 1.4 slows time to first token by 80 % on older phones
/// from day 1.5 on; the events travel through the durable ingest log.
#[test]
fn older_phone_ttft_regression_is_detected_and_localised_end_to_end() -> anyhow::Result<()> {
    let clean = FleetConfig::default();
    let when = injected_at(&clean);
    let config = FleetConfig {
        injections: vec![simulate::older_phone_ttft(when)],
        ..clean
    };
    let events = simulate::simulate(&config);
    let dir = tempfile::tempdir()?;
    let log = IngestLog::open(dir.path())?;
    for batch in events.chunks(20_000) {
        let report = log.append_batch(batch)?;
        assert_eq!(
            report.accepted.len(),
            batch.len(),
            "{:?}",
            report.rejected.first()
        );
    }
    let stored = log.read_all()?;
    assert_eq!(stored.len(), events.len());

    let report = detect(&stored)?;
    let ttft: Vec<&Alert> = report
        .alerts
        .iter()
        .filter(|alert| alert.metric == Metric::TtftP95)
        .collect();
    assert_eq!(ttft.len(), 1, "alerts: {}", summary(&report));
    assert_eq!(report.alerts.len(), 1, "alerts: {}", summary(&report));
    let alert = ttft[0];
    let cause = &alert.root_cause[0];
    assert_eq!(
        sorted(&cause.slice),
        slice(&[("device_model", "older-phone"), ("model_version", "1.4")]),
        "{}",
        alert.root_cause_label()
    );
    assert!(cause.share >= MIN_SHARE, "share {}", cause.share);
    let delay = alert.onset_ms - when;
    assert!(
        (-(BUCKET_MS)..=MAX_ONSET_DELAY_MS).contains(&delay),
        "onset {} ms after the injection",
        delay
    );
    assert!(alert.relative_change > 0.2, "{}", alert.relative_change);
    assert!(alert.confidence > 0.99, "{}", alert.confidence);
    assert!(cause.current > 1.5 * cause.baseline);
    assert!(!alert.total_series.is_empty() && !alert.cause_series.is_empty());
    // The regression lasts to the end of the data, and so does the alert,
    // although the detectors stop firing once they have learnt the new level.
    let end_ms = config.start_ms + i64::from(config.hours) * HOUR_MS;
    assert!(
        end_ms - alert.last_ms <= HOUR_MS,
        "last seen {} ms before the end",
        end_ms - alert.last_ms
    );
    let detection_delay = alert.detected_ms - when;
    assert!(detection_delay <= MAX_ONSET_DELAY_MS, "{detection_delay}");
    eprintln!(
        "detected after {} min, onset delay {} min, {} → {} ms ({:+.0} %), cause {}, {} detections on {} series",
        detection_delay / 60_000,
        delay / 60_000,
        alert.baseline.round(),
        alert.current.round(),
        alert.relative_change * 100.0,
        alert.root_cause_label(),
        report.detections.len(),
        report.series
    );
    Ok(())
}

#[test]
fn a_clean_fleet_raises_no_alert() -> anyhow::Result<()> {
    for seed in [1, 3] {
        let events = simulate::simulate(&FleetConfig {
            seed,
            ..FleetConfig::default()
        });
        let report = detect(&events)?;
        eprintln!(
            "seed {seed}: {} isolated detections over {} series × {} buckets",
            report.detections.len(),
            report.series,
            report.buckets
        );
        assert!(
            report.alerts.is_empty(),
            "false alarms: {}",
            summary(&report)
        );
        // BH at q = 0.01 keeps isolated false detections rare.
        assert!(report.detections.len() <= 20, "{}", report.detections.len());
    }
    Ok(())
}

#[test]
fn failure_rate_regression_is_localised_by_the_ratio_path() -> anyhow::Result<()> {
    let clean = FleetConfig::default();
    let when = injected_at(&clean);
    let injection = Injection {
        failure_rate_add: INJECTED_FAILURE_RATE,
        ..Injection::new(when, &[("network", "cellular"), ("app_version", "2.7.0")])
    };
    let events = simulate::simulate(&FleetConfig {
        injections: vec![injection],
        ..clean
    });
    let report = detect(&events)?;
    let failures: Vec<&Alert> = report
        .alerts
        .iter()
        .filter(|alert| alert.metric == Metric::FailureRate)
        .collect();
    assert_eq!(failures.len(), 1, "alerts: {}", summary(&report));
    assert_eq!(report.alerts.len(), 1, "alerts: {}", summary(&report));
    let alert = failures[0];
    let cause = &alert.root_cause[0];
    assert_eq!(
        sorted(&cause.slice),
        slice(&[("app_version", "2.7.0"), ("network", "cellular")]),
        "{alert:#?}"
    );
    assert!(cause.share >= MIN_SHARE, "share {}", cause.share);
    assert!((alert.onset_ms - when).abs() <= MAX_ONSET_DELAY_MS);
    // The rate inside the slice rose by about the injected amount.
    let rise = cause.current - cause.baseline;
    assert!((rise - INJECTED_FAILURE_RATE).abs() < 0.05, "{cause:?}");
    eprintln!(
        "failure rate {:.4} → {:.4}, onset delay {} min, cause {}",
        alert.baseline,
        alert.current,
        (alert.onset_ms - when) / 60_000,
        alert.root_cause_label()
    );
    Ok(())
}

fn alert(id: &str, onset_ms: i64) -> Alert {
    Alert {
        id: id.to_owned(),
        metric: Metric::TtftP95,
        baseline: 700.0,
        current: 1_000.0,
        relative_change: 3.0 / 7.0,
        onset_ms,
        detected_ms: onset_ms,
        last_ms: onset_ms,
        confidence: 0.999,
        root_cause: Vec::new(),
        explained: 0.0,
        fired: Vec::new(),
        bucket_ms: BUCKET_MS,
        total_series: Vec::new(),
        cause_series: Vec::new(),
    }
}

#[test]
fn lifecycle_dedups_acknowledges_damps_flaps_and_persists() -> anyhow::Result<()> {
    // Resolve after 3 quiet buckets; reopen within 12 buckets.
    let policy = LifecyclePolicy::in_buckets(BUCKET_MS, 3, 12);
    let mut book = AlertBook::default();
    let t0 = 1_767_571_200_000;
    let at = |buckets: i64| t0 + buckets * BUCKET_MS;

    assert_eq!(
        book.observe(&alert("a", at(0)), at(0), &policy),
        Transition::Opened
    );
    // A re-detection updates the open alert, it adds none.
    assert_eq!(
        book.observe(&alert("a", at(1)), at(1), &policy),
        Transition::Updated
    );
    assert_eq!(book.records.len(), 1);
    assert_eq!(book.records[0].occurrences, 2);
    assert_eq!(book.records[0].alert.onset_ms, at(0));

    // Quiet for two buckets: not resolved yet (damping); three: resolved.
    assert!(book.tick(at(3), &policy).is_empty());
    assert_eq!(book.acknowledge("a", at(3))?, AlertState::Acknowledged);
    assert_eq!(book.tick(at(4), &policy), vec!["a".to_owned()]);
    assert_eq!(book.records[0].state, AlertState::Resolved);

    // Back within the cool-down: the same alert reopens.
    assert_eq!(
        book.observe(&alert("a", at(10)), at(10), &policy),
        Transition::Reopened
    );
    assert_eq!(book.records.len(), 1);
    assert_eq!(book.records[0].state, AlertState::Open);
    assert_eq!((book.records[0].reopened, book.records[0].episode), (1, 1));
    assert_eq!(book.records[0].alert.onset_ms, at(0));

    // Resolved again and back after the cool-down: a new episode.
    book.tick(at(13), &policy);
    assert_eq!(
        book.observe(&alert("a", at(40)), at(40), &policy),
        Transition::Opened
    );
    assert_eq!(book.records[0].episode, 2);
    assert_eq!(book.records[0].alert.onset_ms, at(40));

    // Another id is another alert; unknown ids are an error.
    book.observe(&alert("b", at(41)), at(41), &policy);
    assert_eq!(book.records.len(), 2);
    assert!(book.acknowledge("missing", at(41)).is_err());

    let dir = tempfile::tempdir()?;
    assert_eq!(AlertBook::load(dir.path())?, AlertBook::default());
    book.save(dir.path())?;
    assert_eq!(AlertBook::load(dir.path())?, book);
    std::fs::write(dir.path().join("alerts.json"), "{not json")?;
    assert!(AlertBook::load(dir.path()).is_err());
    Ok(())
}

/// A one-thread HTTP server answering each request with the next status of
/// `statuses`; returns its URL and a handle yielding the bodies it got.
type Bodies = std::thread::JoinHandle<std::io::Result<Vec<String>>>;

fn scripted_server(statuses: Vec<u16>) -> anyhow::Result<(String, Bodies)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for status in statuses {
            let (stream, _) = listener.accept()?;
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                if line.trim().is_empty() {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            bodies.push(String::from_utf8_lossy(&body).into_owned());
            let mut stream = reader.into_inner();
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
        Ok(bodies)
    });
    Ok((url, handle))
}

fn join(server: Bodies) -> anyhow::Result<Vec<String>> {
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the test server panicked"))?
        .map_err(Into::into)
}

#[test]
fn webhook_retries_server_errors_with_backoff_and_not_client_errors() -> anyhow::Result<()> {
    let mut book = AlertBook::default();
    book.observe(&alert("abc", 0), 0, &LifecyclePolicy::default());
    let record = &book.records[0];

    let (url, server) = scripted_server(vec![503, 500, 200])?;
    let config = webhook::WebhookConfig::new(url);
    let mut waits = Vec::new();
    let body = webhook::Notification::new("opened", record);
    let delivery = webhook::post_json_with(&config, &body, |wait| waits.push(wait))?;
    assert_eq!(
        delivery,
        webhook::Delivery {
            status: 200,
            attempts: 3
        }
    );
    assert_eq!(
        waits,
        [config.initial_backoff, config.initial_backoff * 2],
        "exponential backoff"
    );
    let bodies = join(server)?;
    assert_eq!(bodies.len(), 3);
    let posted: serde_json::Value = serde_json::from_str(&bodies[2])?;
    assert_eq!(posted["id"], "abc");
    assert_eq!(posted["event"], "opened");
    assert_eq!(posted["alert"]["metric"], "ttft_p95");

    // A client error is final.
    let (url, server) = scripted_server(vec![400])?;
    let result = webhook::post_json_with(&webhook::WebhookConfig::new(url), &body, |_| {});
    assert!(matches!(
        result,
        Err(webhook::WebhookError::Status {
            status: 400,
            attempts: 1
        })
    ));
    join(server)?;

    // Nobody listening: every try fails, then the error says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", closed.local_addr()?);
    drop(closed);
    let config = webhook::WebhookConfig {
        attempts: 2,
        ..webhook::WebhookConfig::new(url)
    };
    let result = webhook::post_json_with(&config, &body, |_| {});
    assert!(matches!(
        result,
        Err(webhook::WebhookError::Transport { attempts: 2, .. })
    ));
    Ok(())
}
