//! Seasonal test: a value against the same time of day on previous days.

use std::collections::VecDeque;

use super::window::SortedWindow;

const SECONDS_PER_DAY: i64 = 86_400;

/// Residual from a daily seasonal prediction, scaled by the robust spread
/// of recent residuals.
///
/// The prediction is the median of the values exactly one, two, ... `days`
/// days earlier. A point is predicted only when such timestamps exist, so a
/// metric without a regular sampling period simply gets no seasonal
/// evidence instead of a wrong one. Comparing like with like (Monday 9:00
/// with the previous days' 9:00) removes the daily cycle that otherwise
/// dominates a metric's variation, so a missing or misplaced peak stands
/// out.
#[derive(Debug, Clone)]
pub struct SeasonalTest {
    days: usize,
    history: VecDeque<(i64, f64)>,
    residuals: SortedWindow,
    scratch: Vec<f64>,
}

impl SeasonalTest {
    pub fn new(days: usize, window: usize) -> Self {
        SeasonalTest {
            days: days.max(1),
            history: VecDeque::new(),
            residuals: SortedWindow::new(window).with_std_floor(1.0),
            scratch: Vec::new(),
        }
    }

    fn prediction(&mut self, time: i64) -> Option<f64> {
        self.scratch.clear();
        for day in 1..=self.days as i64 {
            let target = time - day * SECONDS_PER_DAY;
            let index = self.history.partition_point(|&(t, _)| t < target);
            if let Some(&(t, value)) = self.history.get(index)
                && t == target
            {
                self.scratch.push(value);
            }
        }
        if self.scratch.is_empty() {
            return None;
        }
        self.scratch.sort_by(f64::total_cmp);
        let mid = self.scratch.len() / 2;
        Some(if self.scratch.len().is_multiple_of(2) {
            0.5 * (self.scratch[mid - 1] + self.scratch[mid])
        } else {
            self.scratch[mid]
        })
    }

    /// The statistic of the point at `time` (seconds), `None` without a
    /// seasonal prediction or residual spread yet; then learns the point.
    pub fn observe(&mut self, time: i64, value: f64) -> Option<f64> {
        let mut statistic = None;
        if let Some(prediction) = self.prediction(time) {
            let residual = value - prediction;
            if let (Some(median), Some(scale)) =
                (self.residuals.median(), self.residuals.robust_scale())
            {
                statistic = Some((residual - median).abs() / scale);
            }
            self.residuals.push(residual);
        }
        // Timestamps are expected to increase; an out-of-order point is
        // scored but not remembered, so the history stays sorted.
        if self.history.back().is_none_or(|&(last, _)| time > last) {
            self.history.push_back((time, value));
        }
        let horizon = time - self.days as i64 * SECONDS_PER_DAY;
        while self.history.front().is_some_and(|&(t, _)| t < horizon) {
            self.history.pop_front();
        }
        statistic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_daily_peak_is_seen_against_previous_days() {
        let hour = 3_600;
        let mut test = SeasonalTest::new(3, 100);
        let daily = |h: i64| {
            if (9..17).contains(&(h % 24)) {
                80.0
            } else {
                20.0
            }
        };
        // Jitter that does not repeat with the day, so residuals vary.
        let jitter = |h: i64| [0.5, -0.3, 0.1, -0.6, 0.2, 0.4, -0.1][(h % 7) as usize];
        let mut ordinary: f64 = 0.0;
        for h in 0..24 * 6 {
            if let Some(statistic) = test.observe(h * hour, daily(h) + jitter(h)) {
                ordinary = ordinary.max(statistic);
            }
        }
        // Day 7, 10:00: the peak does not come.
        let missing = test.observe((24 * 6 + 10) * hour, 20.0).unwrap();
        assert!(ordinary < 5.0, "{ordinary}");
        assert!(missing > 20.0, "{missing}");
    }

    #[test]
    fn irregular_timestamps_get_no_seasonal_evidence() {
        let mut test = SeasonalTest::new(3, 100);
        let statistics: Vec<Option<f64>> = (0..2_000).map(|i| test.observe(i * 997, 1.0)).collect();
        assert!(statistics.iter().all(Option::is_none));
    }
}
