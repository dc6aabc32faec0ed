//! The watch dashboard: `GET /watch`, one self-contained page, and the JSON
//! it draws from under `/watch/api`.
//!
//! The page is static HTML with inline CSS and script and no external
//! assets; it draws its charts as SVG from the API's JSON, so it works on a
//! machine without internet access. Alerts come from `alerts.json` in the
//! telemetry directory, as `hearth watch detect` leaves it; series are
//! computed from the ingest log through the same per-bucket aggregates the
//! detectors see, so a chart shows what was tested. Building the aggregates
//! reads the whole log, so they are cached and rebuilt only when the log's
//! segments have grown, on the blocking pool.
//!
//! The page itself is open (it holds no data); the API is behind the API
//! key when one is set, and the page asks for the key when the API answers
//! 401. Without a telemetry directory every route answers 404 with a hint.
//!
//! Routes:
//! - `GET /watch`: the page; `#alert=ID` opens it drilled into an alert.
//! - `GET /watch/api/alerts`: the alert records, newest first, without
//!   their evidence series.
//! - `GET /watch/api/alerts/{id}` (an id or a unique prefix of one): one
//!   alert with its root cause and the series of the fleet total and of
//!   the root-cause slice from a day before the onset to the end of the
//!   data.
//! - `GET /watch/api/series?metric=M&slice=DIM=VALUE`: one point per
//!   bucket of `M` (`ttft_p95`, the default, `latency_p95` or
//!   `failure_rate`) for the fleet total, or for the slice whose
//!   conditions the `slice` parameters give (repeat it for a conjunction),
//!   and the dimension values present in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hearth_watch::aggregate::{Aggregates, DIMENSIONS};
use hearth_watch::alerts::{AlertBook, AlertRecord};
use hearth_watch::ingest::IngestLog;
use hearth_watch::pipeline::{Alert, Metric, SeriesPoint, Slice, slice_label};
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorDetail};

/// Bucket length of the series: five minutes, as `hearth watch detect`
/// aggregates.
pub const BUCKET_MS: i64 = 300_000;
/// Evidence shown before an alert's onset: one day.
pub const EVIDENCE_BEFORE_MS: i64 = 86_400_000;

const PAGE: &str = include_str!("dashboard.html");

const OFF_HINT: &str = "the watch dashboard is off: start the server with --telemetry-dir DIR \
     (the directory that `hearth watch ingest` and `hearth watch detect` use)";

/// What the dashboard's handlers share.
#[derive(Clone)]
struct Dashboard {
    log: Option<Arc<IngestLog>>,
    cache: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

/// The log's aggregates as of `size`.
struct Snapshot {
    size: LogSize,
    /// Events aggregated.
    events: usize,
    /// Records that could not be read back (skipped).
    unreadable: usize,
    aggregates: Aggregates,
    /// Per dimension, the values present, sorted.
    dimensions: BTreeMap<&'static str, Vec<String>>,
}

/// How far the log has grown: it only ever appends, so equal sizes mean the
/// same events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogSize {
    segments: usize,
    bytes: u64,
}

/// One bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Point {
    time_ms: i64,
    value: f64,
    /// Requests in the bucket and slice (absent for stored evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<f64>,
}

/// The dashboard's routes, to merge into the main router.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let dashboard = Dashboard {
        log: state.telemetry().cloned(),
        cache: Arc::new(Mutex::new(None)),
    };
    let api = Router::new()
        .route("/watch/api/alerts", get(list_alerts))
        .route("/watch/api/alerts/{id}", get(alert_detail))
        .route("/watch/api/series", get(series))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ));
    Router::new()
        .route("/watch", get(page))
        .merge(api)
        .with_state(dashboard)
}

type Reply = Result<Json<Value>, Response>;

fn fail(error: ApiError) -> Response {
    error.into_response()
}

impl Dashboard {
    fn log(&self) -> Result<Arc<IngestLog>, ApiError> {
        self.log
            .clone()
            .ok_or_else(|| ApiError::NotEnabled(OFF_HINT.to_owned()))
    }

    /// The aggregates of the log as it is now, rebuilt on the blocking pool
    /// when it has grown since the last build.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, Response> {
        let log = self.log().map_err(fail)?;
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || current_snapshot(&log, &cache))
            .await
            .map_err(|e| fail(ApiError::Internal(format!("dashboard task: {e}"))))?
            .map_err(fail)
    }

    async fn alert_book(&self) -> Result<AlertBook, Response> {
        let dir = self.log().map_err(fail)?.dir().to_path_buf();
        tokio::task::spawn_blocking(move || AlertBook::load(&dir))
            .await
            .map_err(|e| fail(ApiError::Internal(format!("dashboard task: {e}"))))?
            .map_err(|e| fail(ApiError::Internal(format!("alerts: {e}"))))
    }
}

fn log_size(log: &IngestLog) -> Result<LogSize, ApiError> {
    let segments = log
        .segments()
        .map_err(|e| ApiError::Internal(format!("listing the ingest log: {e}")))?;
    Ok(LogSize {
        segments: segments.len(),
        bytes: segments.iter().map(|segment| segment.bytes).sum(),
    })
}

/// The cached snapshot, or a new one when the log has grown. The lock is
/// held while building so that concurrent requests wait for one build
/// rather than each reading the log.
fn current_snapshot(
    log: &IngestLog,
    cache: &Mutex<Option<Arc<Snapshot>>>,
) -> Result<Arc<Snapshot>, ApiError> {
    let mut cached = cache
        .lock()
        .map_err(|_| ApiError::Internal("the dashboard cache lock is poisoned".to_owned()))?;
    // Measured before reading: events appended meanwhile make the next
    // request rebuild, never hide behind a stale size.
    let size = log_size(log)?;
    if let Some(snapshot) = cached.as_ref()
        && snapshot.size == size
    {
        return Ok(snapshot.clone());
    }
    let mut events = Vec::new();
    let mut unreadable = 0;
    let reader = log
        .reader()
        .map_err(|e| ApiError::Internal(format!("reading the ingest log: {e}")))?;
    for stored in reader {
        match stored {
            Ok(stored) => events.push(stored.event),
            Err(_) => unreadable += 1,
        }
    }
    let aggregates = Aggregates::build(&events, BUCKET_MS)
        .map_err(|e| ApiError::Internal(format!("aggregating the ingest log: {e}")))?;
    let mut values: BTreeMap<&'static str, BTreeSet<&str>> = BTreeMap::new();
    for event in &events {
        for (dim, value) in event.dims.pairs() {
            values.entry(dim).or_default().insert(value);
        }
    }
    let dimensions = values
        .into_iter()
        .map(|(dim, set)| (dim, set.into_iter().map(str::to_owned).collect()))
        .collect();
    let snapshot = Arc::new(Snapshot {
        size,
        events: events.len(),
        unreadable,
        aggregates,
        dimensions,
    });
    *cached = Some(snapshot.clone());
    Ok(snapshot)
}

/// `GET /watch`.
async fn page(State(dashboard): State<Dashboard>) -> Response {
    if dashboard.log.is_none() {
        return fail(ApiError::NotEnabled(OFF_HINT.to_owned()));
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; \
                 script-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

/// `GET /watch/api/alerts`.
async fn list_alerts(State(dashboard): State<Dashboard>) -> Reply {
    let book = dashboard.alert_book().await?;
    let mut records: Vec<&AlertRecord> = book.records.iter().collect();
    records.sort_by(|a, b| {
        b.opened_ms
            .cmp(&a.opened_ms)
            .then(b.last_seen_ms.cmp(&a.last_seen_ms))
            .then(a.id.cmp(&b.id))
    });
    let alerts: Vec<Value> = records.into_iter().map(summary).collect();
    Ok(Json(json!({ "alerts": alerts })))
}

/// `GET /watch/api/alerts/{id}`.
async fn alert_detail(State(dashboard): State<Dashboard>, Path(id): Path<String>) -> Reply {
    let book = dashboard.alert_book().await?;
    let record = match book.find_prefix(&id).as_slice() {
        [record] => (*record).clone(),
        [] => return Err(alert_not_found(&id)),
        _ => {
            return Err(fail(ApiError::invalid(
                "id",
                format!("{id:?} matches several alerts; give more of the id"),
            )));
        }
    };
    let snapshot = dashboard.snapshot().await?;
    let alert = &record.alert;
    let cause_slice = alert.root_cause.first().map(|cause| cause.slice.clone());
    let from_ms = alert.onset_ms.saturating_sub(EVIDENCE_BEFORE_MS);
    let (source, total, cause) = if snapshot.aggregates.is_empty() {
        // Alerts without their log (e.g. a copied alerts.json): the series
        // stored with the alert.
        (
            "alert",
            stored(&alert.total_series),
            cause_slice.as_ref().map(|_| stored(&alert.cause_series)),
        )
    } else {
        let total = points(&snapshot.aggregates, alert.metric, &[], from_ms).map_err(fail)?;
        let cause = match &cause_slice {
            Some(slice) => {
                Some(points(&snapshot.aggregates, alert.metric, slice, from_ms).map_err(fail)?)
            }
            None => None,
        };
        ("log", total, cause)
    };
    let bucket_ms = if snapshot.aggregates.is_empty() {
        alert.bucket_ms
    } else {
        snapshot.aggregates.bucket_ms
    };
    let mut body = summary(&record);
    body["evidence"] = json!({
        "source": source,
        "from_ms": from_ms,
        "bucket_ms": bucket_ms,
        "total": total,
        "cause": cause,
        "cause_slice": cause_slice,
        "cause_label": cause_slice.as_deref().map(slice_label),
    });
    Ok(Json(body))
}

/// `GET /watch/api/series`.
async fn series(State(dashboard): State<Dashboard>, RawQuery(query): RawQuery) -> Reply {
    let query = SeriesQuery::parse(query.as_deref().unwrap_or("")).map_err(fail)?;
    let snapshot = dashboard.snapshot().await?;
    let values =
        points(&snapshot.aggregates, query.metric, &query.slice, i64::MIN).map_err(fail)?;
    Ok(Json(json!({
        "metric": query.metric,
        "unit": query.metric.unit(),
        "slice": query.slice,
        "label": slice_label(&query.slice),
        "bucket_ms": snapshot.aggregates.bucket_ms,
        "events": snapshot.events,
        "unreadable": snapshot.unreadable,
        "points": values,
        "dimensions": snapshot.dimensions,
    })))
}

/// A 404 in the API's error shape.
fn alert_not_found(id: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            message: format!("no alert with id {id:?}"),
            kind: "invalid_request_error",
            param: Some("id".to_owned()),
            code: Some("alert_not_found"),
        },
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// An alert record for the API, without the evidence series.
fn summary(record: &AlertRecord) -> Value {
    let alert: &Alert = &record.alert;
    let causes: Vec<Value> = alert
        .root_cause
        .iter()
        .map(|cause| {
            json!({
                "slice": cause.slice,
                "label": slice_label(&cause.slice),
                "share": cause.share,
                "confidence": cause.confidence,
                "baseline": cause.baseline,
                "current": cause.current,
            })
        })
        .collect();
    json!({
        "id": record.id,
        "state": record.state,
        "metric": alert.metric,
        "unit": alert.metric.unit(),
        "baseline": alert.baseline,
        "current": alert.current,
        "relative_change": alert.relative_change,
        "onset_ms": alert.onset_ms,
        "detected_ms": alert.detected_ms,
        "last_ms": alert.last_ms,
        "confidence": alert.confidence,
        "explained": alert.explained,
        "root_cause": causes,
        "root_cause_label": alert.root_cause_label(),
        "fired": alert.fired,
        "opened_ms": record.opened_ms,
        "last_seen_ms": record.last_seen_ms,
        "acknowledged_ms": record.acknowledged_ms,
        "resolved_ms": record.resolved_ms,
        "occurrences": record.occurrences,
        "reopened": record.reopened,
        "episode": record.episode,
    })
}

fn stored(series: &[SeriesPoint]) -> Vec<Point> {
    series
        .iter()
        .map(|point| Point {
            time_ms: point.time_ms,
            value: point.value,
            requests: None,
        })
        .collect()
}

/// The metric of `slice` per bucket from `from_ms` on; buckets where the
/// slice has no value (no requests, or no successful ones for time to
/// first token) are left out.
fn points(
    aggregates: &Aggregates,
    metric: Metric,
    slice: &[(String, String)],
    from_ms: i64,
) -> Result<Vec<Point>, ApiError> {
    let internal = |e: hearth_watch::rca::RcaError| ApiError::Internal(format!("series: {e}"));
    let mut out = Vec::new();
    for bucket in 0..aggregates.len() {
        let time_ms = aggregates.bucket_start(bucket);
        if time_ms.saturating_add(aggregates.bucket_ms) <= from_ms {
            continue;
        }
        let cell = aggregates
            .rollup(bucket..bucket + 1, slice)
            .map_err(internal)?;
        let value = metric.value(&cell).map_err(internal)?;
        if value.is_finite() {
            out.push(Point {
                time_ms,
                value,
                requests: Some(cell.count),
            });
        }
    }
    Ok(out)
}

/// The parameters of `GET /watch/api/series`.
#[derive(Debug, Clone, PartialEq)]
struct SeriesQuery {
    metric: Metric,
    /// Conditions in [`DIMENSIONS`] order; empty for the fleet total.
    slice: Slice,
}

impl SeriesQuery {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut metric = None;
        let mut slice: Slice = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)
                .ok_or_else(|| ApiError::invalid_body("the query string is not valid UTF-8"))?;
            let value = percent_decode(value)
                .ok_or_else(|| ApiError::invalid(key.clone(), "not valid percent-encoded UTF-8"))?;
            match key.as_str() {
                "metric" => {
                    if metric.is_some() {
                        return Err(ApiError::invalid("metric", "metric is given twice"));
                    }
                    let found = Metric::ALL
                        .into_iter()
                        .find(|known| known.as_str() == value)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "metric",
                                format!(
                                    "unknown metric {value:?}: expected ttft_p95, latency_p95 \
                                     or failure_rate"
                                ),
                            )
                        })?;
                    metric = Some(found);
                }
                "slice" => {
                    if value.is_empty() || value == "total" {
                        continue;
                    }
                    let Some((dim, dim_value)) = value.split_once('=') else {
                        return Err(ApiError::invalid(
                            "slice",
                            format!("slice {value:?} is not DIMENSION=VALUE"),
                        ));
                    };
                    if !DIMENSIONS.contains(&dim) {
                        return Err(ApiError::invalid(
                            "slice",
                            format!(
                                "unknown dimension {dim:?}: expected one of {}",
                                DIMENSIONS.join(", ")
                            ),
                        ));
                    }
                    if dim_value.is_empty() {
                        return Err(ApiError::invalid(
                            "slice",
                            format!("slice {value:?} has no value"),
                        ));
                    }
                    if slice.iter().any(|(known, _)| known == dim) {
                        return Err(ApiError::invalid(
                            "slice",
                            format!("dimension {dim:?} is given twice"),
                        ));
                    }
                    slice.push((dim.to_owned(), dim_value.to_owned()));
                }
                other => {
                    return Err(ApiError::invalid(
                        other,
                        format!("unknown query parameter {other:?}: expected metric or slice"),
                    ));
                }
            }
        }
        slice.sort_by_key(|(dim, _)| DIMENSIONS.iter().position(|name| name == dim));
        Ok(SeriesQuery {
            metric: metric.unwrap_or(Metric::TtftP95),
            slice,
        })
    }
}

/// Decodes `%XX` escapes and `+` (a space) of a query component; `None`
/// for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'%' => {
                let high = bytes
                    .get(index + 1)
                    .and_then(|b| (*b as char).to_digit(16))?;
                let low = bytes
                    .get(index + 2)
                    .and_then(|b| (*b as char).to_digit(16))?;
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            other => {
                out.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_and_rejects_broken_ones() {
        assert_eq!(
            percent_decode("device_model%3Dolder-phone").as_deref(),
            Some("device_model=older-phone")
        );
        assert_eq!(percent_decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%E2%88%A7").as_deref(), Some("∧"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn series_queries_parse_into_ordered_slices() {
        let query = SeriesQuery::parse(
            "slice=model_version%3D1.4&metric=failure_rate&slice=device_model=older-phone",
        )
        .unwrap();
        assert_eq!(query.metric, Metric::FailureRate);
        assert_eq!(
            query.slice,
            vec![
                ("device_model".to_owned(), "older-phone".to_owned()),
                ("model_version".to_owned(), "1.4".to_owned()),
            ]
        );
        let total = SeriesQuery::parse("").unwrap();
        assert_eq!(total.metric, Metric::TtftP95);
        assert!(total.slice.is_empty());
        assert!(SeriesQuery::parse("slice=total").unwrap().slice.is_empty());
    }

    #[test]
    fn bad_series_queries_name_their_parameter() {
        for (query, param) in [
            ("metric=p99", "metric"),
            ("metric=ttft_p95&metric=ttft_p95", "metric"),
            ("slice=older-phone", "slice"),
            ("slice=device=older-phone", "slice"),
            ("slice=device_model=", "slice"),
            ("slice=locale=en-US&slice=locale=de-DE", "slice"),
            ("bucket=5", "bucket"),
        ] {
            match SeriesQuery::parse(query) {
                Err(ApiError::InvalidRequest { param: Some(p), .. }) => {
                    assert_eq!(p, param, "{query}");
                }
                other => panic!("{query}: {other:?}"),
            }
        }
    }
}
