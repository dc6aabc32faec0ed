//! A mergeable quantile sketch with relative accuracy (DDSketch, Masson,
//! Rim and Lee, VLDB 2019).
//!
//! Positive values fall into logarithmically spaced buckets: bucket `i`
//! holds `(γ^(i-1), γ^i]` with `γ = (1 + α) / (1 - α)`, and reports
//! `2 γ^i / (γ + 1)`, which is within a relative error `α` of every value in
//! it. Two sketches with the same `α` merge by adding bucket counts, so the
//! quantiles of any union of slices are as accurate as those of one slice.
//! Counts are `f64` so that a sketch can be rescaled (a slice's baseline
//! distribution at its current traffic). When more than `max_buckets`
//! buckets are needed the lowest ones are collapsed, which keeps the upper
//! quantiles (the ones latency alerts care about) exact to `α`.

use super::RcaError;

/// Values at or below this are counted as zero.
const MIN_INDEXABLE: f64 = 1e-9;

/// Largest bucket budget accepted (keeps index arithmetic in `i32`).
const MAX_BUCKETS_LIMIT: usize = 1 << 20;

/// Default bucket budget: at α = 1 % this spans about 9 decades.
pub const DEFAULT_MAX_BUCKETS: usize = 1024;

/// A DDSketch over non-negative values.
#[derive(Debug, Clone, PartialEq)]
pub struct DdSketch {
    relative_accuracy: f64,
    gamma: f64,
    log_gamma: f64,
    max_buckets: usize,
    /// Index of `buckets[0]`.
    offset: i32,
    buckets: Vec<f64>,
    zero_count: f64,
    count: f64,
    min: f64,
    max: f64,
}

impl DdSketch {
    /// An empty sketch with relative accuracy `relative_accuracy` in (0, 1),
    /// e.g. 0.01 for 1 %.
    pub fn new(relative_accuracy: f64) -> Result<DdSketch, RcaError> {
        Self::with_max_buckets(relative_accuracy, DEFAULT_MAX_BUCKETS)
    }

    /// As [`DdSketch::new`] with an explicit bucket budget (clamped to
    /// `1..=2^20`).
    pub fn with_max_buckets(
        relative_accuracy: f64,
        max_buckets: usize,
    ) -> Result<DdSketch, RcaError> {
        if !(relative_accuracy > 0.0 && relative_accuracy < 1.0) {
            return Err(RcaError::InvalidAccuracy(relative_accuracy));
        }
        let gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy);
        Ok(DdSketch {
            relative_accuracy,
            gamma,
            log_gamma: gamma.ln(),
            max_buckets: max_buckets.clamp(1, MAX_BUCKETS_LIMIT),
            offset: 0,
            buckets: Vec::new(),
            zero_count: 0.0,
            count: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        })
    }

    pub fn relative_accuracy(&self) -> f64 {
        self.relative_accuracy
    }

    /// Total count (a sum of weights once sketches have been rescaled).
    pub fn count(&self) -> f64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count <= 0.0
    }

    pub(crate) fn index(&self, value: f64) -> i32 {
        // Clamped far beyond any f64 magnitude in buckets at α >= 1e-9.
        (value.ln() / self.log_gamma).ceil().clamp(-1e9, 1e9) as i32
    }

    pub(crate) fn bucket_value(&self, index: i32) -> f64 {
        2.0 * self.gamma.powi(index) / (self.gamma + 1.0)
    }

    /// Adds one value.
    pub fn add(&mut self, value: f64) -> Result<(), RcaError> {
        self.add_count(value, 1.0)
    }

    /// Adds a value `count` times (`count` finite and non-negative).
    pub fn add_count(&mut self, value: f64, count: f64) -> Result<(), RcaError> {
        if !value.is_finite() || value < 0.0 {
            return Err(RcaError::InvalidValue(value));
        }
        if !count.is_finite() || count < 0.0 {
            return Err(RcaError::InvalidValue(count));
        }
        if count == 0.0 {
            return Ok(());
        }
        if value <= MIN_INDEXABLE {
            self.zero_count += count;
        } else {
            let slot = self.slot(self.index(value));
            self.buckets[slot] += count;
        }
        self.count += count;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        Ok(())
    }

    /// The position of bucket `index` in `buckets`, growing the store, and
    /// collapsing the lowest buckets when the budget is exceeded.
    fn slot(&mut self, index: i32) -> usize {
        if self.buckets.is_empty() {
            self.offset = index;
            self.buckets.push(0.0);
            return 0;
        }
        let high = self.offset + self.buckets.len() as i32 - 1;
        let budget = self.max_buckets as i32;
        if index < self.offset {
            // Extend downwards within the budget, else collapse into the
            // lowest bucket kept.
            let new_offset = index.max(high - budget + 1);
            if new_offset < self.offset {
                let grow = (self.offset - new_offset) as usize;
                self.buckets.splice(0..0, std::iter::repeat_n(0.0, grow));
                self.offset = new_offset;
            }
            return (index.max(self.offset) - self.offset) as usize;
        }
        if index > high {
            let new_high = index;
            let new_offset = self.offset.max(new_high - budget + 1);
            if new_offset > self.offset {
                // Collapse every bucket below the new offset into it.
                let drop = ((new_offset - self.offset) as usize).min(self.buckets.len());
                let collapsed: f64 = self.buckets.drain(..drop).sum();
                if self.buckets.is_empty() {
                    self.buckets.push(0.0);
                }
                self.buckets[0] += collapsed;
                self.offset = new_offset;
            }
            let length = (new_high - self.offset + 1) as usize;
            self.buckets.resize(length, 0.0);
        }
        (index - self.offset) as usize
    }

    /// Adds `other`'s counts multiplied by `factor` (finite, non-negative).
    pub fn merge_scaled(&mut self, other: &DdSketch, factor: f64) -> Result<(), RcaError> {
        if other.relative_accuracy != self.relative_accuracy {
            return Err(RcaError::AccuracyMismatch {
                left: self.relative_accuracy,
                right: other.relative_accuracy,
            });
        }
        if !factor.is_finite() || factor < 0.0 {
            return Err(RcaError::InvalidValue(factor));
        }
        if other.is_empty() || factor == 0.0 {
            return Ok(());
        }
        for (position, &count) in other.buckets.iter().enumerate() {
            if count > 0.0 {
                let slot = self.slot(other.offset + position as i32);
                self.buckets[slot] += count * factor;
            }
        }
        self.zero_count += other.zero_count * factor;
        self.count += other.count * factor;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// Adds `other`'s counts (the sketch of the union of both inputs).
    pub fn merge(&mut self, other: &DdSketch) -> Result<(), RcaError> {
        self.merge_scaled(other, 1.0)
    }

    /// The `q`-quantile (`q` in [0, 1]), or `None` for an empty sketch. The
    /// answer is within relative error α of the exact quantile of the values
    /// added (lower rank `q (n - 1)`), unless buckets were collapsed below it.
    pub fn quantile(&self, q: f64) -> Result<Option<f64>, RcaError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(RcaError::InvalidQuantile(q));
        }
        if self.is_empty() {
            return Ok(None);
        }
        let rank = q * (self.count - 1.0).max(0.0);
        let mut seen = self.zero_count;
        if seen > rank {
            return Ok(Some(0.0));
        }
        for (position, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen > rank {
                let value = self.bucket_value(self.offset + position as i32);
                return Ok(Some(value.clamp(self.min, self.max)));
            }
        }
        Ok(Some(self.max))
    }

    pub(crate) fn zero_count(&self) -> f64 {
        self.zero_count
    }

    /// `(index of the first bucket, bucket counts)`.
    pub(crate) fn buckets(&self) -> (i32, &[f64]) {
        (self.offset, &self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative accuracy the tests use.
    const ALPHA: f64 = 0.01;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_are_within_relative_accuracy() {
        let mut sketch = DdSketch::new(ALPHA).unwrap();
        // A deterministic spread over four decades.
        let mut values: Vec<f64> = (0..10_000)
            .map(|i| 10f64.powf(4.0 * ((i * 7919) % 10_000) as f64 / 10_000.0))
            .collect();
        for &v in &values {
            sketch.add(v).unwrap();
        }
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let estimate = sketch.quantile(q).unwrap().unwrap();
            let exact = exact_quantile(&values, q);
            assert!(
                (estimate - exact).abs() <= ALPHA * exact + 1e-12,
                "q {q}: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn merge_equals_sketch_of_union() {
        let mut left = DdSketch::new(ALPHA).unwrap();
        let mut right = DdSketch::new(ALPHA).unwrap();
        let mut union = DdSketch::new(ALPHA).unwrap();
        for i in 1..2_000 {
            let v = i as f64 * 0.37;
            if i % 3 == 0 {
                left.add(v).unwrap()
            } else {
                right.add(v * 5.0).unwrap()
            }
            union.add(if i % 3 == 0 { v } else { v * 5.0 }).unwrap();
        }
        left.merge(&right).unwrap();
        for q in [0.1, 0.5, 0.95] {
            assert_eq!(left.quantile(q).unwrap(), union.quantile(q).unwrap());
        }
        assert_eq!(left.count(), union.count());
    }

    #[test]
    fn collapsing_keeps_upper_quantiles() {
        let mut sketch = DdSketch::with_max_buckets(ALPHA, 64).unwrap();
        for i in 0..1_000 {
            sketch.add(1e-6 * 1.05f64.powi(i)).unwrap();
        }
        assert!(sketch.buckets().1.len() <= 64);
        let p99 = sketch.quantile(0.99).unwrap().unwrap();
        let exact = 1e-6 * 1.05f64.powi(989);
        assert!(
            (p99 - exact).abs() <= ALPHA * exact * 1.0001,
            "{p99} vs {exact}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(DdSketch::new(0.0).is_err());
        let mut sketch = DdSketch::new(ALPHA).unwrap();
        assert!(sketch.add(-1.0).is_err());
        assert!(sketch.add(f64::NAN).is_err());
        assert!(sketch.quantile(1.5).is_err());
        assert_eq!(sketch.quantile(0.5).unwrap(), None);
        let other = DdSketch::new(0.02).unwrap();
        assert!(sketch.merge(&other).is_err());
    }
}
