//! Detection and explanation over aggregated telemetry: from per-bucket
//! leaves to alerts that name the slice that broke.
//!
//! For each watched metric ([`Metric`]) the fleet total and every
//! single-dimension slice (`dim = value`) with enough traffic becomes a time
//! series, one point per bucket. Each series runs its own streaming
//! [`Detector`]; the tail probabilities of the detector's calibrated tests
//! (Bonferroni-combined) are the point's p-value. Novelty surprisals are left
//! out: they are fixed amounts, not probabilities, and would not keep the
//! false discovery rate. Because every bucket tests all series at once, the
//! Benjamini–Hochberg procedure at level `q` decides which points are
//! detections, and only increases count (a regression, not an improvement).
//!
//! Failure rates get a second test beside the detector's: the failures of
//! the last few buckets against the rate of the baseline before them, a
//! quasi-Poisson tail with the dispersion measured on the baseline. At a
//! few failures per bucket the detector sees mostly noise in the per-bucket
//! rate; the count test uses every failure.
//!
//! Detections of one metric close together in time form an incident; one
//! needing detections in at least `min_buckets` buckets, so that a lone
//! noisy bucket raises nothing. An incident that starts while an earlier
//! alert of the metric is still elevated joins that alert. The reported
//! onset is a change point of the root-cause slice's series near the first
//! detection, and the alert lasts as long as that slice stays elevated. For each incident the root cause is
//! localised by comparing the leaves of a window after the onset with a
//! baseline window before it: the ratio search for the failure rate, the
//! sketch search for the 95th percentiles. The alert's id is a hash of the
//! metric and the root-cause slice, so the same regression detected again
//! gets the same id.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregates, Cell, DIMENSIONS, dimension_names, leaf_in_slice};
use crate::detect::{Detector, DetectorConfig, Point};
use crate::rca::{
    DdSketch, Leaf, QuantileConfig, RcaConfig, RcaError, ScanConfig, SketchLeaf, localize_quantile,
    localize_ratio,
};

/// The quantile watched for latencies.
pub const QUANTILE: f64 = 0.95;
/// Failure rates enter the detectors per mille: the detectors' robust
/// scales have a floor of one unit, which must be small against the rate.
const FAILURE_RATE_SCALE: f64 = 1_000.0;

/// What can stop the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error("root-cause localisation failed: {0}")]
    Rca(#[from] RcaError),
    #[error("invalid pipeline setting {name}: {value}")]
    InvalidConfig { name: &'static str, value: f64 },
}

/// A watched metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Failed over all requests (a fraction).
    FailureRate,
    /// 95th percentile of time to first token, ms.
    TtftP95,
    /// 95th percentile of latency, ms.
    LatencyP95,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::FailureRate, Metric::TtftP95, Metric::LatencyP95];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::FailureRate => "failure_rate",
            Metric::TtftP95 => "ttft_p95",
            Metric::LatencyP95 => "latency_p95",
        }
    }

    /// The unit values are given in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::FailureRate => "",
            Metric::TtftP95 | Metric::LatencyP95 => "ms",
        }
    }

    /// The metric of a cell (`NaN` for an empty one).
    pub fn value(self, cell: &Cell) -> Result<f64, RcaError> {
        Ok(match self {
            Metric::FailureRate if cell.count > 0.0 => cell.failure_rate(),
            Metric::FailureRate => f64::NAN,
            Metric::TtftP95 => cell.ttft.quantile(QUANTILE)?.unwrap_or(f64::NAN),
            Metric::LatencyP95 => cell.latency.quantile(QUANTILE)?.unwrap_or(f64::NAN),
        })
    }

    fn detector_scale(self) -> f64 {
        match self {
            Metric::FailureRate => FAILURE_RATE_SCALE,
            Metric::TtftP95 | Metric::LatencyP95 => 1.0,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of [`run`].
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub detector: DetectorConfig,
    /// False discovery rate controlled across all series at each bucket.
    pub fdr: f64,
    /// Buckets with detections an incident needs.
    pub min_buckets: usize,
    /// Detections of one metric at most this many buckets apart join one
    /// incident.
    pub merge_gap_buckets: usize,
    /// Buckets after the onset that the root cause is localised over.
    pub window_buckets: usize,
    /// Buckets of the baseline the window is compared with. A day covers
    /// the daily cycle and gives sparse leaves enough history.
    pub baseline_buckets: usize,
    /// Buckets left out between the baseline and the onset, since a
    /// detection follows its change by a few buckets.
    pub guard_buckets: usize,
    /// A slice is watched only if its median requests per bucket reach this.
    pub min_bucket_requests: f64,
    /// Buckets of evidence kept before the onset in an alert.
    pub evidence_buckets: usize,
    /// Drop an incident whose root cause is empty: the windows around it
    /// show no change the localiser can resolve (a noise burst in one
    /// slice).
    pub drop_unexplained: bool,
    pub rca: RcaConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            detector: DetectorConfig::default(),
            fdr: 0.01,
            min_buckets: 3,
            merge_gap_buckets: 12,
            window_buckets: 24,
            baseline_buckets: 288,
            guard_buckets: 6,
            min_bucket_requests: 20.0,
            evidence_buckets: 288,
            drop_unexplained: true,
            // Leaves are sparse (a few requests each per window): a weak
            // prior keeps a slow device class's own baseline rate from being
            // pulled towards the fleet's and looking changed.
            rca: RcaConfig {
                scan: ScanConfig {
                    prior_strength: 3.0,
                    ..ScanConfig::default()
                },
                ..RcaConfig::default()
            },
        }
    }
}

/// A slice as `(dimension, value)` conditions; empty for the fleet total.
pub type Slice = Vec<(String, String)>;

/// Formats a slice as `dim=value ∧ dim=value` (`total` when empty).
pub fn slice_label(slice: &[(String, String)]) -> String {
    if slice.is_empty() {
        return "total".to_owned();
    }
    slice
        .iter()
        .map(|(dim, value)| format!("{dim}={value}"))
        .collect::<Vec<_>>()
        .join(" ∧ ")
}

/// One point of a metric's series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub time_ms: i64,
    pub value: f64,
}

/// One (metric, slice, bucket) point the FDR procedure kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub metric: Metric,
    pub slice: Slice,
    pub bucket: usize,
    pub time_ms: i64,
    pub value: f64,
    pub p_value: f64,
    /// Benjamini–Hochberg adjusted p-value.
    pub q_value: f64,
}

/// One element of an alert's root cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub slice: Slice,
    /// Share of the change this slice explains.
    pub share: f64,
    pub confidence: f64,
    /// The metric inside the slice in the baseline and the current window.
    pub baseline: f64,
    pub current: f64,
}

/// A detected and explained regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable: a hash of the metric and the root-cause slices.
    pub id: String,
    pub metric: Metric,
    /// The fleet-wide metric over the baseline and the current window.
    pub baseline: f64,
    pub current: f64,
    /// `(current - baseline) / baseline`.
    pub relative_change: f64,
    /// Estimated start of the change, Unix milliseconds: the change point
    /// of the root-cause slice's series near the first detection.
    pub onset_ms: i64,
    /// Start of the bucket of the first detection, Unix milliseconds.
    pub detected_ms: i64,
    /// Last time the regression was seen, Unix milliseconds: the last
    /// detection, or later while the root-cause slice stays elevated.
    pub last_ms: i64,
    /// One minus the smallest adjusted p-value of the incident.
    pub confidence: f64,
    /// Strongest first; empty when nothing explains the change.
    pub root_cause: Vec<Cause>,
    /// Share of the change the root cause explains together.
    pub explained: f64,
    /// The slices whose series fired, with their number of detections.
    pub fired: Vec<(String, usize)>,
    /// Bucket length, ms.
    pub bucket_ms: i64,
    /// The fleet-wide metric per bucket from before the onset to the end of
    /// the data (buckets without data left out).
    pub total_series: Vec<SeriesPoint>,
    /// The metric inside the first root-cause slice over the same buckets.
    pub cause_series: Vec<SeriesPoint>,
}

impl Alert {
    /// The root cause as one line, e.g. `device_model=older-phone ∧
    /// model_version=1.4 (92 %)`.
    pub fn root_cause_label(&self) -> String {
        if self.root_cause.is_empty() {
            return "unexplained".to_owned();
        }
        self.root_cause
            .iter()
            .map(|cause| {
                format!(
                    "{} ({:.0} %)",
                    slice_label(&cause.slice),
                    cause.share * 100.0
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The outcome of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub alerts: Vec<Alert>,
    pub detections: Vec<Detection>,
    /// Series watched (metric × slice).
    pub series: usize,
    pub buckets: usize,
}

/// A stable id: FNV-1a (64 bit) of the metric and the root cause.
pub fn alert_id(metric: Metric, root_cause: &[Cause]) -> String {
    let mut text = metric.as_str().to_owned();
    for cause in root_cause {
        text.push('|');
        text.push_str(&slice_label(&cause.slice));
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Per bucket, the values of [`Metric::ALL`], the requests and the
/// failures.
type SliceSeries = (Vec<[f64; 3]>, Vec<f64>, Vec<f64>);

struct Series {
    metric: Metric,
    slice: Slice,
    values: Vec<f64>,
    /// Failure rate only: requests and failures per bucket.
    counts: Option<(Vec<f64>, Vec<f64>)>,
}

/// Per slice (total and single dimensions), the metric values per bucket,
/// and the requests per bucket.
fn slice_series(aggregates: &Aggregates) -> Result<BTreeMap<Slice, SliceSeries>, RcaError> {
    let buckets = aggregates.len();
    let mut out: BTreeMap<Slice, SliceSeries> = BTreeMap::new();
    for (index, bucket) in aggregates.buckets.iter().enumerate() {
        let mut cells: BTreeMap<Slice, Cell> = BTreeMap::new();
        for (leaf, cell) in bucket {
            let mut slices = vec![Vec::new()];
            for (dim, value) in DIMENSIONS.iter().zip(leaf) {
                slices.push(vec![((*dim).to_owned(), value.clone())]);
            }
            for slice in slices {
                match cells.get_mut(&slice) {
                    Some(total) => total.merge(cell)?,
                    None => {
                        cells.insert(slice, cell.clone());
                    }
                }
            }
        }
        for (slice, cell) in cells {
            let entry = out.entry(slice).or_insert_with(|| {
                (
                    vec![[f64::NAN; 3]; buckets],
                    vec![0.0; buckets],
                    vec![0.0; buckets],
                )
            });
            for (position, metric) in Metric::ALL.iter().enumerate() {
                entry.0[index][position] = metric.value(&cell)?;
            }
            entry.1[index] = cell.count;
            entry.2[index] = cell.failures;
        }
    }
    Ok(out)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => 0.5 * (values[n / 2 - 1] + values[n / 2]),
    }
}

/// The p-value of the detector's last point from its calibrated tests.
fn p_value(detector: &Detector) -> f64 {
    let tests = &detector.explanation().tests;
    let smallest = tests
        .iter()
        .map(|outcome| outcome.probability)
        .fold(1.0, f64::min);
    (smallest * tests.len() as f64).clamp(0.0, 1.0)
}

/// The p-value of the failures in the `recent` buckets ending at `bucket`
/// under the failure rate of the `baseline` buckets before them: a
/// quasi-Poisson upper tail whose dispersion (at least 1) is estimated from
/// the baseline buckets, so bursty failures do not look significant.
/// A count test uses every failure, where the detector's robust tests see
/// a rate per bucket that is mostly noise at a few failures per bucket.
fn count_p_value(
    counts: &[f64],
    failures: &[f64],
    bucket: usize,
    recent: usize,
    baseline: usize,
) -> f64 {
    let recent_start = (bucket + 1).saturating_sub(recent.max(1));
    let baseline_start = recent_start.saturating_sub(baseline);
    let base = baseline_start..recent_start;
    let now = recent_start..bucket + 1;
    let sum = |values: &[f64], range: std::ops::Range<usize>| -> f64 {
        values.get(range).map_or(0.0, |slice| slice.iter().sum())
    };
    let base_requests = sum(counts, base.clone());
    if base.len() < baseline / 2 || base_requests <= 0.0 {
        return 1.0;
    }
    let rate = (sum(failures, base.clone()) + 1.0) / (base_requests + 1.0);
    let mut chi_square = 0.0;
    let mut terms = 0.0;
    for index in base {
        let expected = counts[index] * rate;
        if expected > 0.0 {
            chi_square += (failures[index] - expected).powi(2) / expected;
            terms += 1.0;
        }
    }
    let dispersion = if terms > 1.0 {
        (chi_square / (terms - 1.0)).max(1.0)
    } else {
        1.0
    };
    let expected = sum(counts, now.clone()) * rate / dispersion;
    let observed = (sum(failures, now) / dispersion).floor();
    poisson_upper_tail(observed, expected)
}

/// `P(X >= k)` for `X ~ Poisson(lambda)`, summed from `k` upwards.
fn poisson_upper_tail(k: f64, lambda: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let log_first = k * lambda.ln() - lambda - ln_factorial(k);
    let mut term = log_first.exp();
    let mut total = 0.0;
    let mut i = k;
    while term > total * 1e-15 && i < k + 10_000.0 {
        total += term;
        i += 1.0;
        term *= lambda / i;
    }
    total.min(1.0)
}

/// `ln(k!)` (Stirling's series above 20).
fn ln_factorial(k: f64) -> f64 {
    if k < 20.0 {
        return (2..=(k as u64)).map(|i| (i as f64).ln()).sum();
    }
    let k1 = k + 1.0;
    (k1 - 0.5) * k1.ln() - k1 + 0.5 * std::f64::consts::TAU.ln() + 1.0 / (12.0 * k1)
        - 1.0 / (360.0 * k1.powi(3))
}

/// Benjamini–Hochberg: the adjusted p-values of `p_values`, in their order.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![1.0; m];
    let mut running: f64 = 1.0;
    for (rank, &index) in order.iter().enumerate().rev() {
        let value = p_values[index] * m as f64 / (rank + 1) as f64;
        running = running.min(value);
        adjusted[index] = running.min(1.0);
    }
    adjusted
}

fn validate(cfg: &PipelineConfig) -> Result<(), PipelineError> {
    if !(cfg.fdr > 0.0 && cfg.fdr < 1.0) {
        return Err(PipelineError::InvalidConfig {
            name: "fdr",
            value: cfg.fdr,
        });
    }
    if cfg.window_buckets == 0 || cfg.baseline_buckets == 0 {
        return Err(PipelineError::InvalidConfig {
            name: "window_buckets/baseline_buckets",
            value: 0.0,
        });
    }
    Ok(())
}

/// Runs detection, FDR control, incident grouping and root-cause
/// localisation over `aggregates`.
pub fn run(aggregates: &Aggregates, cfg: &PipelineConfig) -> Result<Report, PipelineError> {
    validate(cfg)?;
    let buckets = aggregates.len();
    let mut series = Vec::new();
    for (slice, (values, counts, failures)) in slice_series(aggregates)? {
        let mut sorted_counts = counts.clone();
        if median(&mut sorted_counts) < cfg.min_bucket_requests {
            continue;
        }
        for (position, metric) in Metric::ALL.iter().enumerate() {
            series.push(Series {
                metric: *metric,
                slice: slice.clone(),
                values: values.iter().map(|row| row[position]).collect(),
                counts: (*metric == Metric::FailureRate)
                    .then(|| (counts.clone(), failures.clone())),
            });
        }
    }

    let mut detectors: Vec<Detector> = series
        .iter()
        .map(|_| Detector::new(cfg.detector.clone()))
        .collect();
    let mut detections = Vec::new();
    let mut p_values = vec![1.0; series.len()];
    for bucket in 0..buckets {
        let time_ms = aggregates.bucket_start(bucket);
        for (index, (one, detector)) in series.iter().zip(&mut detectors).enumerate() {
            let value = one.values[bucket];
            detector.update(Point {
                time: time_ms.div_euclid(1_000),
                value: value * one.metric.detector_scale(),
            });
            let warm = bucket >= cfg.detector.warmup;
            p_values[index] = if warm && value.is_finite() {
                let detected = p_value(detector);
                match &one.counts {
                    // Two tests: Bonferroni over both.
                    Some((counts, failures)) => (2.0
                        * detected.min(count_p_value(
                            counts,
                            failures,
                            bucket,
                            cfg.detector.shift_points,
                            cfg.detector.baseline_points,
                        )))
                    .min(1.0),
                    None => detected,
                }
            } else {
                1.0
            };
        }
        let adjusted = benjamini_hochberg(&p_values);
        for (index, one) in series.iter().enumerate() {
            if adjusted[index] > cfg.fdr {
                continue;
            }
            // Only increases are regressions.
            let start = bucket.saturating_sub(cfg.detector.baseline_points);
            let mut before: Vec<f64> = one.values[start..bucket]
                .iter()
                .copied()
                .filter(|value| value.is_finite())
                .collect();
            let value = one.values[bucket];
            if value.partial_cmp(&median(&mut before)) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            detections.push(Detection {
                metric: one.metric,
                slice: one.slice.clone(),
                bucket,
                time_ms,
                value,
                p_value: p_values[index],
                q_value: adjusted[index],
            });
        }
    }

    let mut alerts: Vec<Alert> = Vec::new();
    for metric in Metric::ALL {
        let mut own: Vec<&Detection> = detections
            .iter()
            .filter(|detection| detection.metric == metric)
            .collect();
        own.sort_by_key(|detection| detection.bucket);
        let mut groups: Vec<Vec<&Detection>> = Vec::new();
        for detection in own {
            match groups.last_mut() {
                Some(group)
                    if group.last().is_some_and(|last| {
                        detection.bucket <= last.bucket + cfg.merge_gap_buckets
                    }) =>
                {
                    group.push(detection);
                }
                _ => groups.push(vec![detection]),
            }
        }
        for group in groups {
            let mut distinct: Vec<usize> = group.iter().map(|detection| detection.bucket).collect();
            distinct.dedup();
            if distinct.len() < cfg.min_buckets {
                continue;
            }
            // An incident during a regression already alerted on (still
            // elevated) belongs to that alert: its detector re-fired.
            let first_ms = aggregates.bucket_start(distinct[0]);
            let gap_ms = cfg.merge_gap_buckets as i64 * aggregates.bucket_ms;
            let last_ms = aggregates.bucket_start(distinct[distinct.len() - 1]);
            if let Some(ongoing) = alerts.iter_mut().find(|alert| {
                alert.metric == metric && alert.last_ms.saturating_add(gap_ms) >= first_ms
            }) {
                ongoing.last_ms = ongoing.last_ms.max(last_ms);
                continue;
            }
            let alert = explain(aggregates, cfg, metric, &group)?;
            if cfg.drop_unexplained && alert.root_cause.is_empty() {
                continue;
            }
            match alerts.iter_mut().find(|other| other.id == alert.id) {
                Some(existing) => existing.last_ms = existing.last_ms.max(alert.last_ms),
                None => alerts.push(alert),
            }
        }
    }
    Ok(Report {
        alerts,
        detections,
        series: series.len(),
        buckets,
    })
}

fn onset_ms(aggregates: &Aggregates, onset: usize) -> i64 {
    aggregates.bucket_start(onset)
}

/// Points in the rolling median that decides whether a regression persists.
const PERSISTENCE_POINTS: usize = 6;

/// The last time after `onset_ms` at which the root-cause slice's metric
/// (a rolling median) was still at least halfway from its baseline to its
/// level after the onset. A detector stops firing once its baseline has
/// learnt the new level, but the regression lasts as long as this holds.
fn still_elevated(root_cause: &[Cause], series: &[SeriesPoint], onset_ms: i64) -> Option<i64> {
    let cause = root_cause.first()?;
    if cause.current.partial_cmp(&cause.baseline) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let threshold = 0.5 * (cause.baseline + cause.current);
    let after: Vec<&SeriesPoint> = series
        .iter()
        .filter(|point| point.time_ms >= onset_ms)
        .collect();
    let mut last = None;
    for window in after.windows(PERSISTENCE_POINTS) {
        let mut values: Vec<f64> = window.iter().map(|point| point.value).collect();
        if median(&mut values) >= threshold {
            last = window.last().map(|point| point.time_ms);
        }
    }
    last
}

/// Points each side of a change the onset estimate needs.
const ONSET_MIN_SIDE: usize = 3;

/// The onset as a change point: within `span_ms` of the first detection,
/// the split of `series` that maximises the rise of the mean weighted by
/// `sqrt(n_before * n_after / n)` (a two-sample statistic). A stray
/// detection shortly before the change, merged into the incident, then
/// does not pull the onset earlier. Returns `first_ms` when no split rises.
fn refine_onset(series: &[SeriesPoint], first_ms: i64, span_ms: i64) -> i64 {
    let window: Vec<&SeriesPoint> = series
        .iter()
        .filter(|point| (point.time_ms - first_ms).abs() <= span_ms)
        .collect();
    let n = window.len();
    if n < 2 * ONSET_MIN_SIDE {
        return first_ms;
    }
    let total: f64 = window.iter().map(|point| point.value).sum();
    let mut before = 0.0;
    let mut best = (0.0, first_ms);
    for split in 1..n {
        before += window[split - 1].value;
        if split < ONSET_MIN_SIDE || n - split < ONSET_MIN_SIDE {
            continue;
        }
        let (left, right) = (split as f64, (n - split) as f64);
        let rise = (total - before) / right - before / left;
        let statistic = rise * (left * right / n as f64).sqrt();
        if statistic > best.0 {
            best = (statistic, window[split].time_ms);
        }
    }
    best.1
}

fn empty_sketch(like: Option<&DdSketch>) -> Result<DdSketch, RcaError> {
    DdSketch::new(like.map_or(
        crate::aggregate::SKETCH_ACCURACY,
        DdSketch::relative_accuracy,
    ))
}

/// Localises one incident and builds its alert.
fn explain(
    aggregates: &Aggregates,
    cfg: &PipelineConfig,
    metric: Metric,
    group: &[&Detection],
) -> Result<Alert, PipelineError> {
    let onset = group.first().map_or(0, |detection| detection.bucket);
    let last = group.last().map_or(onset, |detection| detection.bucket);
    let current_range = onset..(onset + cfg.window_buckets).min(aggregates.len());
    let baseline_end = onset.saturating_sub(cfg.guard_buckets);
    let baseline_range = baseline_end.saturating_sub(cfg.baseline_buckets)..baseline_end;
    let current_leaves = aggregates.leaves(current_range.clone())?;
    let baseline_leaves = aggregates.leaves(baseline_range.clone())?;
    let baseline_total = metric.value(&aggregates.rollup(baseline_range.clone(), &[])?)?;
    let current_total = metric.value(&aggregates.rollup(current_range.clone(), &[])?)?;

    let names = dimension_names();
    let mut keys: Vec<&Vec<String>> = current_leaves
        .keys()
        .chain(baseline_leaves.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let empty = Cell::new()?;
    let mut root_cause = Vec::new();
    let explained;
    match metric {
        Metric::FailureRate => {
            let mut numerator = Vec::new();
            let mut denominator = Vec::new();
            for key in &keys {
                let now = current_leaves.get(*key).unwrap_or(&empty);
                let before = baseline_leaves.get(*key).unwrap_or(&empty);
                numerator.push(Leaf {
                    dims: (*key).clone(),
                    real: now.failures,
                    forecast: before.failures,
                });
                denominator.push(Leaf {
                    dims: (*key).clone(),
                    real: now.count,
                    forecast: before.count,
                });
            }
            let found = localize_ratio(&names, &numerator, &denominator, &cfg.rca)?;
            explained = found.explained;
            for element in found.elements {
                root_cause.push(Cause {
                    slice: element.dims,
                    share: element.share,
                    confidence: element.confidence,
                    baseline: element.expected,
                    current: element.real,
                });
            }
        }
        Metric::TtftP95 | Metric::LatencyP95 => {
            let pick = |cell: &Cell| match metric {
                Metric::TtftP95 => cell.ttft.clone(),
                _ => cell.latency.clone(),
            };
            let mut leaves = Vec::new();
            for key in &keys {
                let current = current_leaves.get(*key).map(pick);
                let baseline = baseline_leaves.get(*key).map(pick);
                let current = match current {
                    Some(sketch) => sketch,
                    None => empty_sketch(baseline.as_ref())?,
                };
                let baseline = match baseline {
                    Some(sketch) => sketch,
                    None => empty_sketch(Some(&current))?,
                };
                leaves.push(SketchLeaf {
                    dims: (*key).clone(),
                    current,
                    baseline,
                });
            }
            let quantile_cfg = QuantileConfig {
                quantile: QUANTILE,
                search: cfg.rca.clone(),
            };
            let found = localize_quantile(&names, &leaves, &quantile_cfg)?;
            explained = found.explained;
            for element in found.elements {
                root_cause.push(Cause {
                    slice: element.dims,
                    share: element.share,
                    confidence: element.confidence,
                    baseline: element.baseline,
                    current: element.current,
                });
            }
        }
    }

    let smallest_q = group
        .iter()
        .map(|detection| detection.q_value)
        .fold(1.0, f64::min);
    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    for detection in group {
        *fired.entry(slice_label(&detection.slice)).or_default() += 1;
    }
    let mut fired: Vec<(String, usize)> = fired.into_iter().collect();
    fired.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let evidence = onset.saturating_sub(cfg.evidence_buckets)..aggregates.len();
    let mut total_series = Vec::new();
    let mut cause_series = Vec::new();
    let cause_slice = root_cause.first().map(|cause| cause.slice.clone());
    for bucket in evidence {
        let time_ms = aggregates.bucket_start(bucket);
        let total = aggregates.rollup(bucket..bucket + 1, &[])?;
        let value = metric.value(&total)?;
        if value.is_finite() {
            total_series.push(SeriesPoint { time_ms, value });
        }
        if let Some(slice) = &cause_slice {
            let mut cell = Cell::new()?;
            if let Some(leaves) = aggregates.buckets.get(bucket) {
                for (leaf, leaf_cell) in leaves {
                    if leaf_in_slice(leaf, slice) {
                        cell.merge(leaf_cell)?;
                    }
                }
            }
            let value = metric.value(&cell)?;
            if value.is_finite() {
                cause_series.push(SeriesPoint { time_ms, value });
            }
        }
    }

    let last_ms = still_elevated(&root_cause, &cause_series, onset_ms(aggregates, onset))
        .map_or(aggregates.bucket_start(last), |elevated| {
            elevated.max(aggregates.bucket_start(last))
        });

    Ok(Alert {
        id: alert_id(metric, &root_cause),
        metric,
        baseline: baseline_total,
        current: current_total,
        relative_change: if baseline_total > 0.0 {
            (current_total - baseline_total) / baseline_total
        } else {
            0.0
        },
        onset_ms: refine_onset(
            if cause_series.is_empty() {
                &total_series
            } else {
                &cause_series
            },
            aggregates.bucket_start(onset),
            cfg.merge_gap_buckets as i64 * aggregates.bucket_ms,
        ),
        detected_ms: aggregates.bucket_start(onset),
        last_ms,
        confidence: 1.0 - smallest_q,
        root_cause,
        explained,
        fired,
        bucket_ms: aggregates.bucket_ms,
        total_series,
        cause_series,
    })
}
