//! A sliding window that keeps its values sorted, for robust statistics.
//!
//! Insertion and eviction are a binary search and a `memmove` of at most the
//! window's length, which for the few hundred points a baseline spans is
//! cheaper than any tree; quantiles are then O(1). The window also keeps
//! running moments (about a reference point near the data, so that values
//! like 1e9 ± 1 keep their precision) for a standard deviation.

use std::collections::VecDeque;

/// The last `capacity` values in arrival order and in sorted order.
#[derive(Debug, Clone)]
pub struct SortedWindow {
    capacity: usize,
    arrival: VecDeque<f64>,
    sorted: Vec<f64>,
    /// Reference the moments are taken about.
    reference: f64,
    /// Sums of `x - reference` and its square, recomputed exactly every
    /// `capacity` pushes so that rounding cannot accumulate.
    sum: f64,
    sum_squares: f64,
    pushes_since_exact: usize,
    /// [`robust_scale`](Self::robust_scale) is at least this multiple of the
    /// standard deviation.
    std_floor: f64,
}

/// Quantile spreads tried in turn by [`SortedWindow::robust_scale`]: the
/// tail probability cut from each side and the width of that central
/// interval in standard deviations of a normal distribution.
const SPREADS: [(f64, f64); 3] = [(0.25, 2.0 * 0.674_49), (0.10, 2.0 * 1.281_55), (0.0, 6.0)];

impl SortedWindow {
    /// A window of at most `capacity` values (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SortedWindow {
            capacity,
            arrival: VecDeque::with_capacity(capacity + 1),
            sorted: Vec::with_capacity(capacity + 1),
            reference: 0.0,
            sum: 0.0,
            sum_squares: 0.0,
            pushes_since_exact: 0,
            std_floor: 0.0,
        }
    }

    /// Makes [`robust_scale`](Self::robust_scale) at least `factor` standard
    /// deviations.
    pub fn with_std_floor(mut self, factor: f64) -> Self {
        self.std_floor = factor.max(0.0);
        self
    }

    /// Adds a finite value, evicting the oldest when full.
    pub fn push(&mut self, value: f64) {
        if self.arrival.is_empty() {
            self.reference = value;
        }
        let mut evicted = None;
        if self.arrival.len() == self.capacity
            && let Some(oldest) = self.arrival.pop_front()
        {
            let index = self.sorted.partition_point(|&v| v < oldest);
            if index < self.sorted.len() {
                self.sorted.remove(index);
            }
            evicted = Some(oldest - self.reference);
        }
        self.arrival.push_back(value);
        let index = self.sorted.partition_point(|&v| v < value);
        self.sorted.insert(index, value);

        self.pushes_since_exact += 1;
        if self.pushes_since_exact >= self.capacity {
            self.pushes_since_exact = 0;
            let n = self.arrival.len() as f64;
            self.reference = self.arrival.iter().sum::<f64>() / n;
            self.sum = self.arrival.iter().map(|v| v - self.reference).sum();
            self.sum_squares = self
                .arrival
                .iter()
                .map(|v| (v - self.reference).powi(2))
                .sum();
        } else {
            let added = value - self.reference;
            let removed = evicted.unwrap_or(0.0);
            self.sum += added - removed;
            self.sum_squares += added * added - removed * removed;
        }
    }

    pub fn len(&self) -> usize {
        self.arrival.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrival.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.arrival.len() == self.capacity
    }

    /// The values, oldest first.
    pub fn values(&self) -> &VecDeque<f64> {
        &self.arrival
    }

    /// The `q`-quantile (`0 <= q <= 1`) with linear interpolation between
    /// order statistics; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let position = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let below = position.floor() as usize;
        let above = (below + 1).min(n - 1);
        let fraction = position - below as f64;
        Some(self.sorted[below] + (self.sorted[above] - self.sorted[below]) * fraction)
    }

    pub fn median(&self) -> Option<f64> {
        self.quantile(0.5)
    }

    /// Standard deviation of the values (population form); 0 when empty.
    pub fn std_dev(&self) -> f64 {
        let n = self.arrival.len() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let mean = self.sum / n;
        (self.sum_squares / n - mean * mean).max(0.0).sqrt()
    }

    /// A robust standard deviation: the interquartile range over 1.349
    /// (exact for a normal distribution), widening to the 10-90 % and then
    /// the full range where the quartiles coincide, as they do for mostly
    /// constant or discrete metrics; never below the standard-deviation
    /// floor. `None` when the window is empty or constant.
    pub fn robust_scale(&self) -> Option<f64> {
        let floor = self.std_floor * self.std_dev();
        let quantile_scale = SPREADS.iter().find_map(|&(tail, normal_width)| {
            let width = self.quantile(1.0 - tail)? - self.quantile(tail)?;
            (width > 0.0).then_some(width / normal_width)
        });
        match quantile_scale {
            Some(scale) => Some(scale.max(floor)),
            None if floor > 0.0 => Some(floor),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics_follow_the_last_values() {
        let mut window = SortedWindow::new(5);
        for value in [5.0, 1.0, 4.0, 2.0, 3.0] {
            window.push(value);
        }
        assert_eq!(window.median(), Some(3.0));
        assert_eq!(window.quantile(0.0), Some(1.0));
        assert_eq!(window.quantile(1.0), Some(5.0));
        assert_eq!(window.quantile(0.125), Some(1.5));
        // Evicts 5.0 and 1.0.
        window.push(10.0);
        window.push(10.0);
        assert_eq!(window.len(), 5);
        assert_eq!(window.quantile(0.0), Some(2.0));
        assert_eq!(window.median(), Some(4.0));
        let values: Vec<f64> = window.values().iter().copied().collect();
        assert_eq!(values, vec![4.0, 2.0, 3.0, 10.0, 10.0]);
    }

    #[test]
    fn robust_scale_widens_for_discrete_data() {
        let mut window = SortedWindow::new(100);
        for _ in 0..95 {
            window.push(1.0);
        }
        assert_eq!(window.robust_scale(), None);
        for _ in 0..5 {
            window.push(2.0);
        }
        let scale = window.robust_scale().unwrap();
        assert!((scale - 1.0 / 6.0).abs() < 1e-12, "{scale}");
    }

    #[test]
    fn standard_deviation_keeps_precision_far_from_zero() {
        let mut window = SortedWindow::new(64).with_std_floor(1.0);
        // Alternating 1e9 ± 1 for many windows' worth of pushes.
        for i in 0..10_000 {
            window.push(1e9 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        assert!(
            (window.std_dev() - 1.0).abs() < 1e-6,
            "{}",
            window.std_dev()
        );
        // The quartiles are 1e9 - 1 and 1e9 + 1.
        let scale = window.robust_scale().unwrap();
        assert!((scale - 2.0 / (2.0 * 0.674_49)).abs() < 1e-6, "{scale}");
    }
}
