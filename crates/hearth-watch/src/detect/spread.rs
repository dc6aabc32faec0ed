//! Spread test: a change of variability rather than of level.

use super::window::SortedWindow;

/// `|ln(scale(recent) / scale(baseline))|` with robust (quantile) scales:
/// a metric that starts to flap, or goes flat, changes its spread before
/// (or without) changing its level. The log makes halving and doubling
/// weigh alike.
#[derive(Debug, Clone)]
pub struct SpreadTest {
    recent: SortedWindow,
    baseline: SortedWindow,
}

impl SpreadTest {
    pub fn new(recent_points: usize, window: usize) -> Self {
        SpreadTest {
            recent: SortedWindow::new(recent_points),
            baseline: SortedWindow::new(window),
        }
    }

    /// The statistic with `value` as the newest recent point (`None` until
    /// both windows have a spread), then learns it.
    pub fn observe(&mut self, value: f64) -> Option<f64> {
        self.recent.push(value);
        let statistic = match (self.recent.robust_scale(), self.baseline.robust_scale()) {
            (Some(recent), Some(baseline)) if self.recent.is_full() => {
                Some((recent / baseline).ln().abs())
            }
            _ => None,
        };
        self.baseline.push(value);
        statistic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_raises_the_statistic() {
        let mut test = SpreadTest::new(10, 200);
        let mut calm = 0.0;
        for i in 0..300 {
            calm = test.observe(10.0 + (i % 3) as f64 * 0.1).unwrap_or(0.0);
        }
        let mut flapping = 0.0;
        for i in 0..10 {
            flapping = test
                .observe(if i % 2 == 0 { 5.0 } else { 15.0 })
                .unwrap_or(0.0);
        }
        assert!(calm < 0.5, "{calm}");
        assert!(flapping > 3.0, "{flapping}");
    }
}
