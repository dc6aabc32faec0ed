//! Root-cause localisation: which combination of dimension values explains a
//! change in a metric.
//!
//! The input is one row per leaf (a full combination of dimension values,
//! such as `device, os, app_version, model_version, locale, network`) with the
//! metric's real and forecast (expected) value. The output is the smallest
//! set of elements (conjunctions like `model_version=1.4 ∧
//! device=older-phone`) that explains the change, each with its share of the
//! change and a confidence.
//!
//! Two searches over the same lattice are offered ([`Search`]):
//!
//! - [`Search::Scan`] (the default) treats leaf values as counts. An
//!   element's evidence is the Poisson log-likelihood ratio of its observed
//!   total against its expected total (a scan statistic: it rewards both the
//!   size and the purity of a change), scaled by a dispersion estimated from
//!   the leaves. The strongest element, or a disjoint pair when two together
//!   explain clearly more, is then generalised: a condition is dropped while
//!   the slices it excluded changed too. Explained leaves are removed and the
//!   search repeats, RiskLoc-style, until what is left is too small a share of
//!   the change or not significant.
//! - [`Search::RiskLoc`] follows the RiskLoc paper: relative deviation scores,
//!   a cut-off mirrored from the normal side of their distribution, weighted
//!   normal/abnormal partition, a risk score per element, layer-wise search
//!   with early stopping and an explanatory-power threshold.
//!
//! Ratio metrics (failure rate = failures / requests) are localised on the
//! numerator with expectations rescaled to the current denominator: a leaf's
//! expected failures are its current requests times its forecast rate, shrunk
//! towards the global forecast rate so that leaves with little history do not
//! look infinitely surprising. Changes in traffic mix therefore do not count
//! as causes.
//!
//! Latency quantiles are localised from per-slice sketches in [`quantile`].

mod error;
mod lattice;
pub mod quantile;
mod riskloc;
pub mod riskloc_data;
mod scan;
pub mod sketch;
mod stats;

pub use error::RcaError;
pub use quantile::{
    QuantileConfig, QuantileElement, QuantileRootCause, SketchLeaf, localize_quantile,
};
pub use riskloc_data::{
    CaseOutcome, RcaScores, RiskLocCase, evaluate_riskloc, evaluate_riskloc_with,
    load_riskloc_cases,
};
pub use sketch::DdSketch;

use std::collections::HashMap;

use serde::Serialize;

use lattice::Lattice;

/// One leaf of an additive metric: its dimension values (aligned with the
/// dimension names) and the metric's real and forecast value.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub dims: Vec<String>,
    pub real: f64,
    pub forecast: f64,
}

/// The root cause found for one change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RootCause {
    /// Elements, strongest first. Empty when nothing explains the change.
    pub elements: Vec<Element>,
    /// Share of the total change the elements explain together (the sum of
    /// their shares).
    pub explained: f64,
}

/// One element of a root cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Element {
    /// The conditions `(dimension, value)`, in the order of the dimension
    /// names.
    pub dims: Vec<(String, String)>,
    /// Share of the total change (real minus forecast over all leaves) that
    /// falls inside the element. For ratio metrics, the share of the excess
    /// numerator (e.g. failures beyond each leaf's expected rate). Shares can
    /// exceed 1 when other slices moved the opposite way.
    pub share: f64,
    /// In `[0, 1]`. [`Search::Scan`]: one minus the Bonferroni-adjusted
    /// p-value of the element's likelihood ratio. [`Search::RiskLoc`]: the
    /// element's risk score.
    pub confidence: f64,
    /// The metric inside the element now: a sum for additive metrics, the
    /// ratio for ratio metrics.
    pub real: f64,
    /// The metric inside the element as expected (same units as `real`).
    pub expected: f64,
}

/// Which search localises the root cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Likelihood scan with generalisation (see the module documentation).
    Scan,
    /// The RiskLoc algorithm.
    RiskLoc,
}

/// Settings of the likelihood scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanConfig {
    /// Family-wise false-alarm rate: an element is reported only when its
    /// Bonferroni-adjusted p-value is below this.
    pub alpha: f64,
    /// An element after the first must have at least this fraction of the
    /// first element's likelihood ratio.
    pub relative_strength: f64,
    /// A disjoint pair of elements replaces the best single element when
    /// their likelihood ratios sum to at least `1 + pair_gain` times its own.
    pub pair_gain: f64,
    /// How many of the strongest elements are paired.
    pub pair_candidates: usize,
    /// A condition is dropped when the excluded sibling slices together have
    /// at least this likelihood ratio (after dispersion)...
    pub generalize_evidence: f64,
    /// ...and at least this fraction of their expected mass sits in sibling
    /// slices that changed themselves...
    pub sibling_fraction: f64,
    /// ...where a sibling changed when its own likelihood ratio reaches this...
    pub sibling_evidence: f64,
    /// ...and its log rate ratio is at least this fraction of the element's.
    pub relative_log_ratio: f64,
    /// Ratio metrics: pseudo-count of denominator with which a leaf's
    /// forecast rate is shrunk towards the global forecast rate.
    pub prior_strength: f64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            alpha: 0.01,
            relative_strength: 0.2,
            pair_gain: 0.15,
            pair_candidates: 20,
            generalize_evidence: 10.0,
            sibling_fraction: 0.3,
            sibling_evidence: 2.0,
            relative_log_ratio: 0.2,
            prior_strength: 30.0,
        }
    }
}

/// Settings of the RiskLoc search (names as in the paper).
#[derive(Debug, Clone, PartialEq)]
pub struct RiskLocConfig {
    /// Minimum risk score of an element.
    pub risk_threshold: f64,
    /// Proportional explanatory power threshold: the search stops when the
    /// abnormal leaves left explain less than this fraction of the change.
    pub pep_threshold: f64,
    /// Number of most extreme distinct deviations ignored when placing the
    /// cut-off.
    pub n_remove: usize,
}

impl Default for RiskLocConfig {
    fn default() -> Self {
        RiskLocConfig {
            risk_threshold: 0.5,
            pep_threshold: 0.02,
            n_remove: 5,
        }
    }
}

/// Settings shared by both searches.
#[derive(Debug, Clone, PartialEq)]
pub struct RcaConfig {
    pub search: Search,
    /// Most elements reported.
    pub max_elements: usize,
    /// Deepest layer searched (number of conditions in an element).
    pub max_layer: usize,
    /// Smallest share of the change an element must explain
    /// ([`Search::Scan`]; RiskLoc has its own `pep_threshold`).
    pub min_share: f64,
    pub scan: ScanConfig,
    pub riskloc: RiskLocConfig,
}

impl Default for RcaConfig {
    fn default() -> Self {
        RcaConfig {
            search: Search::Scan,
            max_elements: 3,
            max_layer: 4,
            min_share: 0.1,
            scan: ScanConfig::default(),
            riskloc: RiskLocConfig::default(),
        }
    }
}

impl RcaConfig {
    fn validate(&self) -> Result<(), RcaError> {
        let unit = |name: &'static str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(RcaError::InvalidConfig { name, value })
            }
        };
        let non_negative = |name: &'static str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(RcaError::InvalidConfig { name, value })
            }
        };
        unit("min_share", self.min_share)?;
        unit("scan.alpha", self.scan.alpha)?;
        unit("scan.relative_strength", self.scan.relative_strength)?;
        unit("scan.sibling_fraction", self.scan.sibling_fraction)?;
        unit("scan.relative_log_ratio", self.scan.relative_log_ratio)?;
        unit("riskloc.pep_threshold", self.riskloc.pep_threshold)?;
        non_negative("scan.pair_gain", self.scan.pair_gain)?;
        non_negative("scan.generalize_evidence", self.scan.generalize_evidence)?;
        non_negative("scan.sibling_evidence", self.scan.sibling_evidence)?;
        non_negative("scan.prior_strength", self.scan.prior_strength)?;
        if !self.riskloc.risk_threshold.is_finite() {
            return Err(RcaError::InvalidConfig {
                name: "riskloc.risk_threshold",
                value: self.riskloc.risk_threshold,
            });
        }
        if self.max_layer == 0 {
            return Err(RcaError::InvalidConfig {
                name: "max_layer",
                value: 0.0,
            });
        }
        Ok(())
    }
}

/// The measurements of a problem, per unique leaf.
#[derive(Debug, Clone)]
pub(crate) enum Measures {
    Additive {
        real: Vec<f64>,
        forecast: Vec<f64>,
    },
    Ratio {
        numerator_real: Vec<f64>,
        numerator_forecast: Vec<f64>,
        denominator_real: Vec<f64>,
        denominator_forecast: Vec<f64>,
    },
}

/// A localisation problem: unique leaves on a lattice with their measures.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) lattice: Lattice,
    pub(crate) measures: Measures,
}

impl Problem {
    /// Observed and expected counts per leaf as the scan sees them: the
    /// metric itself for additive metrics; for ratio metrics the numerator
    /// and the current denominator times the (shrunk) forecast rate.
    pub(crate) fn counts(&self, prior_strength: f64) -> (Vec<f64>, Vec<f64>) {
        match &self.measures {
            Measures::Additive { real, forecast } => (real.clone(), forecast.clone()),
            Measures::Ratio {
                numerator_real,
                numerator_forecast,
                denominator_real,
                denominator_forecast,
            } => {
                let total_numerator: f64 = numerator_forecast.iter().sum();
                let total_denominator: f64 = denominator_forecast.iter().sum();
                let global_rate = if total_denominator > 0.0 {
                    total_numerator / total_denominator
                } else {
                    0.0
                };
                let expected = (0..numerator_real.len())
                    .map(|leaf| {
                        let pseudo = prior_strength;
                        let weight = denominator_forecast[leaf] + pseudo;
                        let rate = if weight > 0.0 {
                            (numerator_forecast[leaf] + pseudo * global_rate) / weight
                        } else {
                            global_rate
                        };
                        denominator_real[leaf] * rate
                    })
                    .collect();
                (numerator_real.clone(), expected)
            }
        }
    }

    /// The metric's real and expected value over a set of leaves, in the
    /// metric's own units (sums, or ratios for ratio metrics). `expected`
    /// holds the scan's expected counts.
    pub(crate) fn element_values(&self, mask: &[bool], expected: &[f64]) -> (f64, f64) {
        match &self.measures {
            Measures::Additive { real, .. } => {
                let [r, e] = lattice::masked_sums(mask, [real, expected]);
                (r, e)
            }
            Measures::Ratio {
                numerator_real,
                denominator_real,
                ..
            } => {
                let [n, e, d] =
                    lattice::masked_sums(mask, [numerator_real, expected, denominator_real]);
                if d > 0.0 { (n / d, e / d) } else { (0.0, 0.0) }
            }
        }
    }
}

fn check_finite(leaf: usize, field: &'static str, value: f64) -> Result<f64, RcaError> {
    if !value.is_finite() {
        return Err(RcaError::NonFinite { leaf, field });
    }
    if value < 0.0 {
        return Err(RcaError::Negative { leaf, field, value });
    }
    Ok(value)
}

fn additive_problem(dim_names: &[String], leaves: &[Leaf]) -> Result<Problem, RcaError> {
    let lattice = Lattice::new(dim_names, leaves.iter().map(|l| l.dims.as_slice()))?;
    let (index, unique) = lattice.dedup_index();
    let mut real = vec![0.0; unique];
    let mut forecast = vec![0.0; unique];
    let mut first = vec![usize::MAX; unique];
    for (leaf, row) in leaves.iter().enumerate() {
        let slot = index[leaf];
        real[slot] += check_finite(leaf, "real", row.real)?;
        forecast[slot] += check_finite(leaf, "forecast", row.forecast)?;
        if first[slot] == usize::MAX {
            first[slot] = leaf;
        }
    }
    let lattice = Lattice::new(
        dim_names,
        first.iter().map(|&leaf| leaves[leaf].dims.as_slice()),
    )?;
    Ok(Problem {
        lattice,
        measures: Measures::Additive { real, forecast },
    })
}

fn ratio_problem(
    dim_names: &[String],
    numerator: &[Leaf],
    denominator: &[Leaf],
) -> Result<Problem, RcaError> {
    // Leaves are the union of both sides, keyed by their values; the
    // denominator defines the population, so a numerator leaf without
    // denominator is an error, and a denominator leaf without numerator has
    // a zero numerator.
    let dimensions = dim_names.len();
    let mut slots: HashMap<&[String], usize> = HashMap::new();
    let mut rows: Vec<&[String]> = Vec::new();
    let mut denominator_real = Vec::new();
    let mut denominator_forecast = Vec::new();
    for (leaf, row) in denominator.iter().enumerate() {
        if row.dims.len() != dimensions {
            return Err(RcaError::DimensionCount {
                leaf,
                expected: dimensions,
                found: row.dims.len(),
            });
        }
        let slot = *slots.entry(row.dims.as_slice()).or_insert_with(|| {
            rows.push(row.dims.as_slice());
            denominator_real.push(0.0);
            denominator_forecast.push(0.0);
            rows.len() - 1
        });
        denominator_real[slot] += check_finite(leaf, "denominator real", row.real)?;
        denominator_forecast[slot] += check_finite(leaf, "denominator forecast", row.forecast)?;
    }
    let mut numerator_real = vec![0.0; rows.len()];
    let mut numerator_forecast = vec![0.0; rows.len()];
    for (leaf, row) in numerator.iter().enumerate() {
        let Some(&slot) = slots.get(row.dims.as_slice()) else {
            return Err(RcaError::UnmatchedNumerator {
                leaf,
                dims: row.dims.clone(),
            });
        };
        numerator_real[slot] += check_finite(leaf, "numerator real", row.real)?;
        numerator_forecast[slot] += check_finite(leaf, "numerator forecast", row.forecast)?;
    }
    let lattice = Lattice::new(dim_names, rows.iter().copied())?;
    Ok(Problem {
        lattice,
        measures: Measures::Ratio {
            numerator_real,
            numerator_forecast,
            denominator_real,
            denominator_forecast,
        },
    })
}

fn solve(problem: &Problem, cfg: &RcaConfig) -> RootCause {
    let elements = match cfg.search {
        Search::Scan => scan::search(problem, cfg),
        Search::RiskLoc => riskloc::search(problem, cfg),
    };
    let explained = elements.iter().map(|e| e.share).sum();
    RootCause {
        elements,
        explained,
    }
}

/// Localises the root cause of a change in an additive metric (a count or a
/// sum). `dim_names` names the dimensions; every leaf's `dims` lists its
/// values in the same order. Leaves with identical values are summed.
/// Values must be finite and non-negative.
pub fn localize(
    dim_names: &[String],
    leaves: &[Leaf],
    cfg: &RcaConfig,
) -> Result<RootCause, RcaError> {
    cfg.validate()?;
    if leaves.is_empty() {
        return Ok(RootCause {
            elements: Vec::new(),
            explained: 0.0,
        });
    }
    let problem = additive_problem(dim_names, leaves)?;
    Ok(solve(&problem, cfg))
}

/// Localises the root cause of a change in a ratio metric (e.g. failure rate
/// = failures / requests). `numerator` and `denominator` hold the real and
/// forecast numerator and denominator per leaf, matched by their values; a
/// leaf present only in `denominator` has a zero numerator.
pub fn localize_ratio(
    dim_names: &[String],
    numerator: &[Leaf],
    denominator: &[Leaf],
    cfg: &RcaConfig,
) -> Result<RootCause, RcaError> {
    cfg.validate()?;
    if dim_names.is_empty() {
        return Err(RcaError::NoDimensions);
    }
    if denominator.is_empty() {
        return Ok(RootCause {
            elements: Vec::new(),
            explained: 0.0,
        });
    }
    let problem = ratio_problem(dim_names, numerator, denominator)?;
    Ok(solve(&problem, cfg))
}
