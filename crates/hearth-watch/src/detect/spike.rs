//! Spike test: how far a value lies from a robust baseline of the points
//! before it, in robust standard deviations.

use super::window::SortedWindow;

/// `|x - median| / scale` over the last `window` points (the point itself
/// excluded), where the scale is the robust spread floored at one standard
/// deviation, so that a bursty metric's routine bursts do not read as
/// infinitely many deviations.
#[derive(Debug, Clone)]
pub struct SpikeTest {
    baseline: SortedWindow,
}

impl SpikeTest {
    pub fn new(window: usize) -> Self {
        SpikeTest {
            baseline: SortedWindow::new(window).with_std_floor(1.0),
        }
    }

    /// The statistic of `value` (`None` until the baseline has a spread),
    /// then learns it.
    pub fn observe(&mut self, value: f64) -> Option<f64> {
        let statistic = match (self.baseline.median(), self.baseline.robust_scale()) {
            (Some(median), Some(scale)) => Some((value - median).abs() / scale),
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
    fn a_spike_stands_out_and_noise_does_not() {
        let mut test = SpikeTest::new(100);
        let mut largest: f64 = 0.0;
        for i in 0..300 {
            let noise = [1.0, -1.0, 0.5, -0.5][i % 4];
            let statistic = test.observe(10.0 + noise);
            if i >= 100 {
                largest = largest.max(statistic.unwrap_or(f64::INFINITY));
            }
        }
        let spike = test.observe(30.0).unwrap();
        // Noise stays within about one robust deviation; the spike is over ten.
        assert!(largest < 1.5, "{largest}");
        assert!(spike > 10.0, "{spike}");
    }
}
