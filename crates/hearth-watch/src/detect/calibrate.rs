//! Calibration of a raw anomaly statistic into a tail probability.
//!
//! Every feature a detector computes (a robust z-score, a shift between two
//! windows) has its own, data-dependent distribution: a z-score of 6 is rare
//! in a smooth metric and routine in a bursty one. The calibrator learns the
//! distribution of the statistic on the stream itself and answers
//! `P(X >= x)` from the past: the empirical fraction in the body, and in the
//! tail a peaks-over-threshold fit to the largest values (exponential
//! excesses with an uncertain rate, whose predictive law is a Lomax tail:
//! heavy while few excesses are known, exponential once many are), which
//! keeps probabilities finite and ordered beyond anything observed. The
//! distribution is a histogram over `ln(1 + x)` whose weights decay, so the
//! calibrator follows a metric whose behaviour changes and forgets a noisy
//! start. Probabilities are comparable across metrics, so one threshold
//! serves all.

/// Learns the distribution of a non-negative statistic and returns tail
/// probabilities under it.
#[derive(Debug, Clone)]
pub struct TailCalibrator {
    /// Weight per bin of `ln(1 + x)`, `BINS_PER_UNIT` bins per unit.
    weights: Fenwick,
    /// Weight times the bin's centre, for the mean excess of the tail.
    moments: Fenwick,
    /// Sum of all weights.
    total: f64,
    /// Weight the next value adds; grows so that older values decay.
    increment: f64,
    growth: f64,
    tail_points: f64,
}

const BINS_PER_UNIT: f64 = 32.0;
const BINS: usize = 640;
/// The tail is fitted to this fraction of the (effective) values ...
const TAIL_FRACTION: f64 = 0.02;
/// ... but to no fewer than this many.
const MIN_TAIL_POINTS: f64 = 5.0;
/// Weights are renormalised before they can overflow.
const RENORMALISE_ABOVE: f64 = 1e150;

impl TailCalibrator {
    /// A calibrator whose values lose half their weight after `half_life`
    /// more values (`f64::INFINITY`: never), fitting its tail to at most
    /// `tail_points` values.
    pub fn new(half_life: f64, tail_points: usize) -> Self {
        TailCalibrator {
            weights: Fenwick::new(BINS),
            moments: Fenwick::new(BINS),
            total: 0.0,
            increment: 1.0,
            growth: (std::f64::consts::LN_2 / half_life.max(1.0)).exp(),
            tail_points: (tail_points as f64).max(MIN_TAIL_POINTS),
        }
    }

    /// Effective number of values learnt (decayed).
    pub fn count(&self) -> f64 {
        self.total / self.increment
    }

    fn bin(value: f64) -> usize {
        ((value.max(0.0).ln_1p() * BINS_PER_UNIT) as usize).min(BINS - 1)
    }

    fn lower_edge(bin: usize) -> f64 {
        (bin as f64 / BINS_PER_UNIT).exp_m1()
    }

    fn centre(bin: usize) -> f64 {
        ((bin as f64 + 0.5) / BINS_PER_UNIT).exp_m1()
    }

    /// `P(X >= value)` under the values learnt so far; 1 before any.
    pub fn tail_probability(&self, value: f64) -> f64 {
        let n = self.count();
        if n < 1.0 || value.is_nan() || value <= 0.0 {
            return 1.0;
        }
        // The tail is the highest bins holding at least `wanted` values.
        let wanted = (TAIL_FRACTION * n).clamp(MIN_TAIL_POINTS.min(n), self.tail_points);
        let below = self
            .weights
            .last_at_most(self.total - wanted * self.increment);
        let threshold_bin = below.map_or(0, |bin| bin + 1).min(BINS - 1);
        let below_weight = if threshold_bin == 0 {
            0.0
        } else {
            self.weights.prefix(threshold_bin - 1)
        };
        let tail_weight = self.total - below_weight;
        let threshold = Self::lower_edge(threshold_bin);
        if value > threshold && tail_weight > 0.0 {
            // Exponential excesses with an uncertain rate: after k excesses
            // with mean m the predictive tail is (1 + y / (k m))^-k.
            let k = tail_weight / self.increment;
            let below_moment = if threshold_bin == 0 {
                0.0
            } else {
                self.moments.prefix(threshold_bin - 1)
            };
            let tail_moment = self.moments.prefix(BINS - 1) - below_moment;
            let mean_excess = (tail_moment / tail_weight - threshold).max(1e-9);
            let excess = value - threshold;
            let survival = (-k * (excess / (k * mean_excess)).ln_1p()).exp();
            return (k / (n + 1.0)) * survival;
        }
        // Empirical body: values in higher bins and half of the value's own.
        let bin = Self::bin(value);
        let up_to = self.weights.prefix(bin);
        let own = up_to
            - if bin == 0 {
                0.0
            } else {
                self.weights.prefix(bin - 1)
            };
        let above = self.total - up_to + 0.5 * own;
        ((above / self.increment + 1.0) / (n + 1.0)).min(1.0)
    }

    /// Learns one value.
    pub fn learn(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let bin = Self::bin(value);
        self.weights.add(bin, self.increment);
        self.moments.add(bin, self.increment * Self::centre(bin));
        self.total += self.increment;
        self.increment *= self.growth;
        if self.increment > RENORMALISE_ABOVE {
            let scale = 1.0 / self.increment;
            self.weights.scale(scale);
            self.moments.scale(scale);
            self.total *= scale;
            self.increment = 1.0;
        }
    }
}

/// A Fenwick (binary indexed) tree of bin weights: prefix sums and searches
/// in O(log bins).
#[derive(Debug, Clone)]
struct Fenwick {
    /// 1-based partial sums.
    tree: Vec<f64>,
}

impl Fenwick {
    fn new(bins: usize) -> Self {
        Fenwick {
            tree: vec![0.0; bins + 1],
        }
    }

    fn add(&mut self, bin: usize, weight: f64) {
        let mut index = bin + 1;
        while index < self.tree.len() {
            self.tree[index] += weight;
            index += index & index.wrapping_neg();
        }
    }

    /// Sum of bins `0..=bin`.
    fn prefix(&self, bin: usize) -> f64 {
        let mut index = (bin + 1).min(self.tree.len() - 1);
        let mut sum = 0.0;
        while index > 0 {
            sum += self.tree[index];
            index -= index & index.wrapping_neg();
        }
        sum
    }

    /// The last bin whose prefix sum is at most `limit` (weights are
    /// non-negative, so prefix sums increase); `None` when even the first
    /// bin exceeds it.
    fn last_at_most(&self, limit: f64) -> Option<usize> {
        let bins = self.tree.len() - 1;
        let mut position = 0;
        let mut remaining = limit;
        let mut step = bins.next_power_of_two();
        while step > 0 {
            let next = position + step;
            if next <= bins && self.tree[next] <= remaining {
                position = next;
                remaining -= self.tree[next];
            }
            step /= 2;
        }
        position.checked_sub(1)
    }

    fn scale(&mut self, factor: f64) {
        self.tree.iter_mut().for_each(|value| *value *= factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_fall_with_the_value_and_match_the_body() {
        let mut calibrator = TailCalibrator::new(f64::INFINITY, 50);
        // 1000 values spread evenly over [0, 10).
        for i in 0..1000 {
            calibrator.learn(i as f64 / 100.0);
        }
        let mut previous = 1.0;
        for value in [0.5, 2.0, 5.0, 9.0, 9.9, 10.5, 12.0, 20.0] {
            let p = calibrator.tail_probability(value);
            assert!(p <= previous, "{value}: {p} > {previous}");
            previous = p;
        }
        // The body is within a bin width of the true fraction.
        let p = calibrator.tail_probability(5.0);
        assert!((p - 0.5).abs() < 0.05, "{p}");
        // Beyond the largest value the tail keeps falling, never to zero.
        let far = calibrator.tail_probability(20.0);
        assert!(far > 0.0 && far < 1e-6, "{far}");
    }

    #[test]
    fn old_values_are_forgotten() {
        let mut calibrator = TailCalibrator::new(100.0, 50);
        for _ in 0..100 {
            calibrator.learn(50.0);
        }
        let before = calibrator.tail_probability(40.0);
        for _ in 0..2000 {
            calibrator.learn(1.0);
        }
        let after = calibrator.tail_probability(40.0);
        assert!(before > 0.5, "{before}");
        assert!(after < 1e-3, "{after}");
        assert!((calibrator.count() - 100.0 / std::f64::consts::LN_2).abs() < 2.0);
    }
}

#[cfg(test)]
mod fenwick_tests {
    use super::Fenwick;

    #[test]
    fn prefix_sums_and_searches_match_a_linear_scan() {
        let weights = [0.0, 2.0, 0.0, 0.0, 1.5, 3.0, 0.0, 0.5];
        let mut tree = Fenwick::new(weights.len());
        for (bin, &weight) in weights.iter().enumerate() {
            tree.add(bin, weight);
        }
        let mut running = 0.0;
        for (bin, &weight) in weights.iter().enumerate() {
            running += weight;
            assert_eq!(tree.prefix(bin), running);
        }
        for limit in [-1.0, 0.0, 1.0, 2.0, 3.4, 3.5, 6.4, 6.5, 7.0, 100.0] {
            let expected = (0..weights.len())
                .rev()
                .find(|&bin| weights[..=bin].iter().sum::<f64>() <= limit);
            assert_eq!(tree.last_at_most(limit), expected, "{limit}");
        }
    }
}
