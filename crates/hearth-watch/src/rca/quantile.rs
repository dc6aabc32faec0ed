//! Root cause of a latency-quantile change, from per-slice sketches.
//!
//! Quantiles do not add up over slices, so the question is asked as a
//! counterfactual: which slices, had they kept their baseline latency
//! distribution (their baseline sketch rescaled to their current traffic, so
//! that a traffic shift is not mistaken for a slowdown), would bring the
//! overall quantile back to its baseline?
//!
//! Searching that directly is brittle: the overall quantile moves in bucket
//! steps, and replacing an unchanged slice moves nothing, so `device =
//! older-phone` repairs exactly as much as the `model_version = 1.4 ∧ device
//! = older-phone` inside it that actually slowed down. The search therefore
//! runs on an equivalent additive quantity: the p-quantile is back at its
//! baseline value `b` exactly when the share of requests slower than `b` is
//! back at `1 - p`. Requests slower than `b` per slice are counts, their
//! baseline share per slice is a rate, and the ratio search of the parent
//! module (which weighs evidence by traffic and prefers the purest element)
//! localises the excess. The counterfactual is then evaluated for the
//! elements found, in order, to report how much of the quantile change each
//! one repairs.

use serde::Serialize;

use super::lattice::Lattice;
use super::sketch::DdSketch;
use super::{Measures, Problem, RcaConfig, RcaError};

/// One slice's latency sketches, now and at baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchLeaf {
    pub dims: Vec<String>,
    pub current: DdSketch,
    pub baseline: DdSketch,
}

/// Settings of the quantile search.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileConfig {
    /// The quantile watched, e.g. 0.95.
    pub quantile: f64,
    /// The search over slow-request counts.
    pub search: RcaConfig,
}

impl Default for QuantileConfig {
    fn default() -> Self {
        QuantileConfig {
            quantile: 0.95,
            search: RcaConfig::default(),
        }
    }
}

/// The root cause of a quantile change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantileRootCause {
    pub quantile: f64,
    /// The overall quantile now and at baseline.
    pub current: f64,
    pub baseline: f64,
    /// The overall quantile with every element's slices at their baseline.
    pub repaired: f64,
    /// `(current - repaired) / (current - baseline)`.
    pub explained: f64,
    pub elements: Vec<QuantileElement>,
}

/// One element of a quantile root cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantileElement {
    pub dims: Vec<(String, String)>,
    /// Fraction of the overall quantile change repaired by putting this
    /// element's slices back to baseline (after the elements before it).
    pub share: f64,
    /// Confidence of the element in the search over slow-request counts.
    pub confidence: f64,
    /// The element's own quantile now and at baseline.
    pub current: f64,
    pub baseline: f64,
    /// The element's share of the current traffic.
    pub traffic: f64,
}

/// Histogram over the common bucket range of all sketches.
#[derive(Debug, Clone)]
struct Dense {
    offset: i32,
    zero: f64,
    bins: Vec<f64>,
}

impl Dense {
    fn new(offset: i32, length: usize) -> Dense {
        Dense {
            offset,
            zero: 0.0,
            bins: vec![0.0; length],
        }
    }

    fn add(&mut self, sketch: &DdSketch, factor: f64) {
        self.zero += factor * sketch.zero_count();
        let (offset, buckets) = sketch.buckets();
        for (position, &count) in buckets.iter().enumerate() {
            let slot = (offset + position as i32 - self.offset) as usize;
            self.bins[slot] += factor * count;
        }
    }

    /// The quantile, with negative rounding residue treated as empty.
    fn quantile(&self, q: f64, geometry: &DdSketch) -> Option<f64> {
        let zero = self.zero.max(0.0);
        let count = zero + self.bins.iter().map(|b| b.max(0.0)).sum::<f64>();
        if count <= 0.0 {
            return None;
        }
        let rank = q * (count - 1.0).max(0.0);
        if zero > rank {
            return Some(0.0);
        }
        let mut seen = zero;
        let mut last = None;
        for (slot, &bin) in self.bins.iter().enumerate() {
            if bin <= 0.0 {
                continue;
            }
            seen += bin;
            last = Some(slot);
            if seen > rank {
                break;
            }
        }
        last.map(|slot| geometry.bucket_value(self.offset + slot as i32))
    }
}

/// Mass of a sketch strictly above bucket `index` (for a fall of the
/// quantile: at or below it).
fn slow_count(sketch: &DdSketch, index: i32, above: bool) -> f64 {
    let (offset, buckets) = sketch.buckets();
    let tail: f64 = buckets
        .iter()
        .enumerate()
        .filter(|(position, _)| offset + *position as i32 > index)
        .map(|(_, count)| count)
        .sum();
    if above { tail } else { sketch.count() - tail }
}

/// Localises which slices explain a change of the `cfg.quantile` of a
/// latency. All sketches must share one relative accuracy; slices with equal
/// values are merged. Returns no elements when the overall quantile moved by
/// less than the sketches' resolution or nothing explains the move.
pub fn localize_quantile(
    dim_names: &[String],
    leaves: &[SketchLeaf],
    cfg: &QuantileConfig,
) -> Result<QuantileRootCause, RcaError> {
    if !(0.0..=1.0).contains(&cfg.quantile) {
        return Err(RcaError::InvalidQuantile(cfg.quantile));
    }
    cfg.search.validate()?;
    let q = cfg.quantile;
    let empty = |current: f64, baseline: f64| QuantileRootCause {
        quantile: q,
        current,
        baseline,
        repaired: current,
        explained: 0.0,
        elements: Vec::new(),
    };
    let Some(first) = leaves.first() else {
        return Ok(empty(0.0, 0.0));
    };
    let geometry = first.current.clone();
    let alpha = geometry.relative_accuracy();

    // Merge slices with equal values.
    let lattice = Lattice::new(dim_names, leaves.iter().map(|l| l.dims.as_slice()))?;
    let (index, unique) = lattice.dedup_index();
    let mut current: Vec<Option<DdSketch>> = vec![None; unique];
    let mut baseline: Vec<Option<DdSketch>> = vec![None; unique];
    let mut rows: Vec<&[String]> = vec![&[]; unique];
    for (leaf, row) in leaves.iter().enumerate() {
        let slot = index[leaf];
        rows[slot] = row.dims.as_slice();
        for (store, sketch) in [(&mut current, &row.current), (&mut baseline, &row.baseline)] {
            match &mut store[slot] {
                Some(merged) => merged.merge(sketch)?,
                None if sketch.relative_accuracy() != alpha => {
                    return Err(RcaError::AccuracyMismatch {
                        left: alpha,
                        right: sketch.relative_accuracy(),
                    });
                }
                None => store[slot] = Some(sketch.clone()),
            }
        }
    }
    let current: Vec<DdSketch> = current.into_iter().flatten().collect();
    let baseline: Vec<DdSketch> = baseline.into_iter().flatten().collect();
    let lattice = Lattice::new(dim_names, rows.iter().copied())?;

    // Overall quantiles over the common bucket range.
    let (mut low, mut high) = (i32::MAX, i32::MIN);
    for sketch in current.iter().chain(&baseline) {
        let (offset, buckets) = sketch.buckets();
        if !buckets.is_empty() {
            low = low.min(offset);
            high = high.max(offset + buckets.len() as i32 - 1);
        }
    }
    if low > high {
        return Ok(empty(0.0, 0.0));
    }
    let length = (high - low + 1) as usize;
    let mut state = Dense::new(low, length);
    let mut baseline_total = Dense::new(low, length);
    for (c, b) in current.iter().zip(&baseline) {
        state.add(c, 1.0);
        baseline_total.add(b, 1.0);
    }
    let (Some(current_quantile), Some(baseline_quantile)) = (
        state.quantile(q, &geometry),
        baseline_total.quantile(q, &geometry),
    ) else {
        let now = state.quantile(q, &geometry).unwrap_or(0.0);
        return Ok(empty(
            now,
            baseline_total.quantile(q, &geometry).unwrap_or(0.0),
        ));
    };
    let change = current_quantile - baseline_quantile;
    // One bucket step either way is within the sketches' resolution.
    if change.abs() <= 2.0 * 2.0 * alpha * baseline_quantile.abs().max(current_quantile.abs()) {
        return Ok(empty(current_quantile, baseline_quantile));
    }

    // Slow requests per slice: beyond the baseline quantile's bucket in the
    // direction of the change.
    let threshold = geometry.index(baseline_quantile);
    let rising = change > 0.0;
    let problem = Problem {
        lattice,
        measures: Measures::Ratio {
            numerator_real: current
                .iter()
                .map(|s| slow_count(s, threshold, rising))
                .collect(),
            numerator_forecast: baseline
                .iter()
                .map(|s| slow_count(s, threshold, rising))
                .collect(),
            denominator_real: current.iter().map(DdSketch::count).collect(),
            denominator_forecast: baseline.iter().map(DdSketch::count).collect(),
        },
    };
    let root_cause = super::solve(&problem, &cfg.search);

    // The counterfactual, element by element.
    let total_traffic: f64 = current.iter().map(DdSketch::count).sum();
    let mut alive = vec![true; problem.lattice.leaves()];
    let mut state_quantile = current_quantile;
    let mut elements = Vec::with_capacity(root_cause.elements.len());
    for found in root_cause.elements {
        let Some(key) = problem.lattice.key_of(&found.dims) else {
            continue;
        };
        let mut element_current = Dense::new(low, length);
        let mut element_baseline = Dense::new(low, length);
        let members: Vec<usize> = (0..alive.len())
            .filter(|&leaf| alive[leaf] && problem.lattice.matches(leaf, &key))
            .collect();
        for leaf in members {
            element_current.add(&current[leaf], 1.0);
            element_baseline.add(&baseline[leaf], 1.0);
            alive[leaf] = false;
        }
        let traffic = element_current.bins.iter().sum::<f64>() + element_current.zero;
        let baseline_traffic = element_baseline.bins.iter().sum::<f64>() + element_baseline.zero;
        if baseline_traffic > 0.0 {
            let factor = traffic / baseline_traffic;
            for ((s, c), b) in state
                .bins
                .iter_mut()
                .zip(&element_current.bins)
                .zip(&element_baseline.bins)
            {
                *s += factor * b - c;
            }
            state.zero += factor * element_baseline.zero - element_current.zero;
        }
        let after = state.quantile(q, &geometry).unwrap_or(state_quantile);
        elements.push(QuantileElement {
            dims: found.dims,
            share: (state_quantile - after) / change,
            confidence: found.confidence,
            current: element_current.quantile(q, &geometry).unwrap_or(0.0),
            baseline: element_baseline.quantile(q, &geometry).unwrap_or(0.0),
            traffic: if total_traffic > 0.0 {
                traffic / total_traffic
            } else {
                0.0
            },
        });
        state_quantile = after;
    }
    Ok(QuantileRootCause {
        quantile: q,
        current: current_quantile,
        baseline: baseline_quantile,
        repaired: state_quantile,
        explained: (current_quantile - state_quantile) / change,
        elements,
    })
}
