//! Per-bucket, per-leaf aggregates of telemetry, and roll-ups of any slice.
//!
//! Events are grouped by time bucket and leaf (the full tuple of dimension
//! values). A leaf's cell keeps counts and DDSketches of time to first token
//! and latency; sketches merge exactly, so the quantile of any slice (a set
//! of leaves) over any run of buckets is the quantile of the merged cells,
//! within the sketches' relative accuracy.

use std::collections::BTreeMap;
use std::ops::Range;

use hearth_core::telemetry::TelemetryEvent;

use crate::rca::{DdSketch, RcaError};

/// The dimension names, in the order leaves list their values.
pub const DIMENSIONS: [&str; 6] = [
    "device_model",
    "os_version",
    "app_version",
    "model_version",
    "locale",
    "network",
];

/// Relative accuracy of the aggregates' sketches.
pub const SKETCH_ACCURACY: f64 = 0.01;

/// The dimension names as owned strings.
pub fn dimension_names() -> Vec<String> {
    DIMENSIONS.iter().map(|name| (*name).to_owned()).collect()
}

/// Counts and latency sketches of a set of requests. Time to first token is
/// sketched over successful requests only; latency over all requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub count: f64,
    pub failures: f64,
    pub ttft: DdSketch,
    pub latency: DdSketch,
}

impl Cell {
    pub fn new() -> Result<Self, RcaError> {
        Ok(Cell {
            count: 0.0,
            failures: 0.0,
            ttft: DdSketch::new(SKETCH_ACCURACY)?,
            latency: DdSketch::new(SKETCH_ACCURACY)?,
        })
    }

    /// Adds one request. Values a sketch refuses (negative or not finite)
    /// are left out of that sketch; the request still counts.
    pub fn add(&mut self, event: &TelemetryEvent) {
        self.count += 1.0;
        if event.failure.is_some() {
            self.failures += 1.0;
        }
        // A refused value only leaves the sketch without it.
        let _ = self.latency.add(event.latency_ms);
        if let Some(ttft) = event.ttft_ms
            && event.failure.is_none()
        {
            let _ = self.ttft.add(ttft);
        }
    }

    pub fn merge(&mut self, other: &Cell) -> Result<(), RcaError> {
        self.count += other.count;
        self.failures += other.failures;
        self.ttft.merge(&other.ttft)?;
        self.latency.merge(&other.latency)
    }

    /// Failures over requests (0 for an empty cell).
    pub fn failure_rate(&self) -> f64 {
        if self.count > 0.0 {
            self.failures / self.count
        } else {
            0.0
        }
    }
}

/// Whether a leaf (values in [`DIMENSIONS`] order) lies in a slice given as
/// `(dimension, value)` conditions. The empty slice holds every leaf.
pub fn leaf_in_slice(leaf: &[String], slice: &[(String, String)]) -> bool {
    slice.iter().all(|(dim, value)| {
        DIMENSIONS
            .iter()
            .position(|name| name == dim)
            .and_then(|index| leaf.get(index))
            .is_some_and(|actual| actual == value)
    })
}

/// Aggregates over consecutive buckets of `bucket_ms`, the first starting at
/// `start_ms`. Leaves are kept in sorted order so that every roll-up and
/// search over them is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregates {
    pub bucket_ms: i64,
    pub start_ms: i64,
    pub buckets: Vec<BTreeMap<Vec<String>, Cell>>,
}

impl Aggregates {
    /// Aggregates `events` (in any order) into buckets of `bucket_ms`
    /// aligned to multiples of it. No events give no buckets.
    pub fn build(events: &[TelemetryEvent], bucket_ms: i64) -> Result<Self, RcaError> {
        let bucket_ms = bucket_ms.max(1);
        let first = events.iter().map(|event| event.timestamp_ms).min();
        let last = events.iter().map(|event| event.timestamp_ms).max();
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Aggregates {
                bucket_ms,
                start_ms: 0,
                buckets: Vec::new(),
            });
        };
        let start_ms = first.div_euclid(bucket_ms) * bucket_ms;
        let count = ((last - start_ms) / bucket_ms + 1) as usize;
        let mut buckets = vec![BTreeMap::new(); count];
        for event in events {
            let index = ((event.timestamp_ms - start_ms) / bucket_ms) as usize;
            let Some(bucket) = buckets.get_mut(index) else {
                continue;
            };
            let leaf: Vec<String> = event
                .dims
                .pairs()
                .iter()
                .map(|(_, value)| (*value).to_owned())
                .collect();
            let cell = match bucket.entry(leaf) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => entry.insert(Cell::new()?),
            };
            cell.add(event);
        }
        Ok(Aggregates {
            bucket_ms,
            start_ms,
            buckets,
        })
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Start of bucket `index`, Unix milliseconds.
    pub fn bucket_start(&self, index: usize) -> i64 {
        self.start_ms + index as i64 * self.bucket_ms
    }

    /// The leaves over `buckets` (clamped to the data), each merged over
    /// those buckets.
    pub fn leaves(&self, buckets: Range<usize>) -> Result<BTreeMap<Vec<String>, Cell>, RcaError> {
        let mut merged: BTreeMap<Vec<String>, Cell> = BTreeMap::new();
        let end = buckets.end.min(self.buckets.len());
        for bucket in self.buckets.get(buckets.start.min(end)..end).unwrap_or(&[]) {
            for (leaf, cell) in bucket {
                match merged.get_mut(leaf) {
                    Some(total) => total.merge(cell)?,
                    None => {
                        merged.insert(leaf.clone(), cell.clone());
                    }
                }
            }
        }
        Ok(merged)
    }

    /// The roll-up of `slice` over `buckets`: every leaf of the slice
    /// merged.
    pub fn rollup(
        &self,
        buckets: Range<usize>,
        slice: &[(String, String)],
    ) -> Result<Cell, RcaError> {
        let mut total = Cell::new()?;
        let end = buckets.end.min(self.buckets.len());
        for bucket in self.buckets.get(buckets.start.min(end)..end).unwrap_or(&[]) {
            for (leaf, cell) in bucket {
                if leaf_in_slice(leaf, slice) {
                    total.merge(cell)?;
                }
            }
        }
        Ok(total)
    }
}
