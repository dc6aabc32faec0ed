//! Novelty: values unlike any seen before, whatever their statistics say.
//!
//! The calibrated tests ask how unusual a deviation is compared with past
//! deviations; a metric whose history is full of bursts learns to shrug at
//! bursts. Two blunter questions catch what that misses: has the metric
//! ever been this high (or low), and has it ever been at this level at
//! all? Both answers are yes/no and mean the same on every metric, which
//! also makes them comparable across metrics.

use std::collections::HashSet;

use super::window::SortedWindow;

/// A value beyond the range of every earlier value by more than `margin`
/// times that range.
#[derive(Debug, Clone)]
pub struct RangeNovelty {
    margin: f64,
    range: Option<(f64, f64)>,
}

impl RangeNovelty {
    pub fn new(margin: f64) -> Self {
        RangeNovelty {
            margin: margin.max(0.0),
            range: None,
        }
    }

    /// Whether `value` is beyond the range; then widens the range.
    pub fn observe(&mut self, value: f64) -> bool {
        let beyond = match self.range {
            Some((low, high)) if high > low => {
                let margin = (high - low) * self.margin;
                value > high + margin || value < low - margin
            }
            _ => false,
        };
        self.range = Some(match self.range {
            None => (value, value),
            Some((low, high)) => (low.min(value), high.max(value)),
        });
        beyond
    }
}

/// The first visit to a bin of a fixed grid: a level the metric has never
/// been at, even inside its range.
///
/// The grid is set once, from the first `learning_points` values: centred
/// on their median, with bins `width` robust standard deviations wide.
#[derive(Debug, Clone)]
pub struct GridNovelty {
    width: f64,
    learning_points: usize,
    learning: SortedWindow,
    grid: Option<(f64, f64)>,
    visited: HashSet<i64>,
}

/// Bins remembered at most; a metric that keeps visiting new levels past
/// this (a counter, say) has no notion of a usual level to depart from, and
/// the test falls silent.
const MAX_BINS: usize = 1 << 16;

impl GridNovelty {
    pub fn new(width: f64, learning_points: usize) -> Self {
        let learning_points = learning_points.max(2);
        GridNovelty {
            width,
            learning_points,
            learning: SortedWindow::new(learning_points).with_std_floor(1.0),
            grid: None,
            visited: HashSet::new(),
        }
    }

    fn bin(origin: f64, width: f64, value: f64) -> i64 {
        // Saturating float-to-int conversion; far-out values share an end bin.
        ((value - origin) / width).floor() as i64
    }

    /// Whether `value` is the first in its bin; then remembers the bin.
    pub fn observe(&mut self, value: f64) -> bool {
        let Some((origin, width)) = self.grid else {
            self.learning.push(value);
            if self.learning.len() >= self.learning_points
                && let (Some(median), Some(scale)) =
                    (self.learning.median(), self.learning.robust_scale())
            {
                let width = scale * self.width;
                if width > 0.0 && width.is_finite() {
                    self.grid = Some((median, width));
                    for &past in self.learning.values() {
                        self.visited.insert(Self::bin(median, width, past));
                    }
                }
            }
            return false;
        };
        if self.visited.len() >= MAX_BINS {
            return false;
        }
        self.visited.insert(Self::bin(origin, width, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_values_past_the_margin_are_beyond_the_range() {
        let mut novelty = RangeNovelty::new(0.1);
        for value in [0.0, 10.0, 5.0] {
            assert!(!novelty.observe(value));
        }
        assert!(!novelty.observe(10.9));
        assert!(novelty.observe(12.0));
        assert!(novelty.observe(-1.5));
    }

    #[test]
    fn a_new_level_is_novel_once() {
        let mut novelty = GridNovelty::new(1.0, 20);
        for i in 0..200 {
            assert!(!novelty.observe(10.0 + (i % 5) as f64 * 0.2), "{i}");
        }
        assert!(novelty.observe(30.0));
        assert!(!novelty.observe(30.0));
    }
}
