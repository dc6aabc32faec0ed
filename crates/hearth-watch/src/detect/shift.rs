//! Level-shift test: two adjacent windows compared robustly.

use std::collections::VecDeque;

use super::window::SortedWindow;

/// `|median(recent) - median(before)| / scale(before)`: the median of the
/// last `recent` points against the `window` points before them. The
/// recent median ignores a lone spike, so the test answers to a sustained
/// change of level (a regression that persists) within a few points of its
/// onset.
#[derive(Debug, Clone)]
pub struct ShiftTest {
    recent: VecDeque<f64>,
    recent_points: usize,
    before: SortedWindow,
    scratch: Vec<f64>,
}

impl ShiftTest {
    pub fn new(recent_points: usize, window: usize) -> Self {
        let recent_points = recent_points.max(1);
        ShiftTest {
            recent: VecDeque::with_capacity(recent_points + 1),
            recent_points,
            before: SortedWindow::new(window).with_std_floor(1.0),
            scratch: Vec::with_capacity(recent_points),
        }
    }

    /// The statistic with `value` as the newest recent point (`None` until
    /// both windows have data), then learns it.
    pub fn observe(&mut self, value: f64) -> Option<f64> {
        self.recent.push_back(value);
        if self.recent.len() > self.recent_points
            && let Some(oldest) = self.recent.pop_front()
        {
            self.before.push(oldest);
        }
        if self.recent.len() < self.recent_points {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend(self.recent.iter().copied());
        self.scratch.sort_by(f64::total_cmp);
        let recent_median = self.scratch[self.scratch.len() / 2];
        let median = self.before.median()?;
        let scale = self.before.robust_scale()?;
        Some((recent_median - median).abs() / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_spike_is_ignored() {
        let mut test = ShiftTest::new(5, 100);
        for i in 0..200 {
            test.observe(10.0 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        let spike = test.observe(50.0).unwrap();
        assert!(spike < 1.0, "{spike}");
    }

    #[test]
    fn a_sustained_shift_registers_within_the_recent_window() {
        let mut test = ShiftTest::new(5, 100);
        for i in 0..200 {
            test.observe(10.0 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        let statistics: Vec<f64> = (0..5)
            .map(|i| {
                test.observe(20.0 + if i % 2 == 0 { 1.0 } else { -1.0 })
                    .unwrap()
            })
            .collect();
        // The median moves once three of the five recent points have shifted.
        assert!(statistics[1] < 1.0, "{statistics:?}");
        assert!(statistics[2] > 5.0, "{statistics:?}");
        assert!(statistics[4] > 5.0, "{statistics:?}");
    }
}
