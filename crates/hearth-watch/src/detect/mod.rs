//! Streaming anomaly detection for one metric.
//!
//! [`Detector`] scores each point of a stream in `[0, 1]` from what it has
//! seen before, one point at a time, in bounded memory per metric. Four
//! robust tests look at the point in different ways — a spike against the
//! recent median ([`spike`]), a sustained level shift between two
//! adjacent windows ([`shift`]), a departure from the same time on previous
//! days ([`seasonal`]), a change of variability ([`spread`]) — and each
//! raw statistic is turned into a tail probability by a calibrator that
//! learns that statistic's own distribution on this stream ([`calibrate`]).
//! The smallest probability, Bonferroni-corrected for the number of tests,
//! becomes the point's surprisal `s = -log10 p`. Two blunt novelty checks
//! ([`novelty`]) — beyond the whole range seen, or at a level never
//! visited — add to or lift the surprisal by fixed amounts that mean the
//! same on every metric.
//!
//! A point is reported only when it is more surprising than every point of
//! the suppression span before it, so a sustained anomaly raises one alarm
//! at its onset rather than one per point, and the score is
//! `s / (s + 10)` (a tail probability of 1e-10 scores 0.5). Scores are
//! comparable across metrics, so one threshold serves a fleet of them.

pub mod calibrate;
pub mod novelty;
pub mod seasonal;
pub mod shift;
pub mod spike;
pub mod spread;
pub mod window;

pub use calibrate::TailCalibrator;
pub use window::SortedWindow;

use std::collections::VecDeque;

use novelty::{GridNovelty, RangeNovelty};
use seasonal::SeasonalTest;
use shift::ShiftTest;
use spike::SpikeTest;
use spread::SpreadTest;

/// One observation of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the epoch; increasing along a stream.
    pub time: i64,
    pub value: f64,
}

/// Surprisal added for a value beyond the range of all earlier values.
pub const BEYOND_RANGE_SURPRISAL: f64 = 10.0;
/// Surprisal given to the first value at a level never visited.
pub const NEW_LEVEL_SURPRISAL: f64 = 6.0;
/// Surprisal at which the score is 0.5.
const HALF_SCORE_SURPRISAL: f64 = 10.0;

/// Settings of [`Detector`]. Windows count points, so they should suit the
/// metric's sampling period; the defaults suit one point every few minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Points learnt before any score is reported (scores are 0 meanwhile).
    pub warmup: usize,
    /// Points in the spike, shift, seasonal-residual and spread baselines.
    pub baseline_points: usize,
    /// Points in the recent window of the level-shift test.
    pub shift_points: usize,
    /// Points in the recent window of the spread test.
    pub spread_points: usize,
    /// Days the seasonal prediction takes its median over (0: no seasonal
    /// test).
    pub seasonal_days: usize,
    /// Points after a report during which only a stronger one is reported.
    pub suppression_points: usize,
    /// Largest values a calibrator fits its tail to.
    pub tail_points: usize,
    /// Points after which a calibrator's memory of a value has halved.
    pub calibration_half_life: f64,
    /// Values a test's calibrator must have learnt before the test counts.
    pub min_calibration: usize,
    /// A value beyond the range seen by more than this fraction of it is
    /// novel.
    pub range_margin: f64,
    /// Width of the novelty grid's bins, in robust standard deviations of
    /// the first `grid_points` values.
    pub grid_width: f64,
    /// Points the novelty grid is set from.
    pub grid_points: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            warmup: 150,
            baseline_points: 288,
            shift_points: 6,
            spread_points: 24,
            seasonal_days: 3,
            suppression_points: 75,
            tail_points: 50,
            calibration_half_life: 20_000.0,
            min_calibration: 100,
            range_margin: 0.02,
            grid_width: 1.0,
            grid_points: 150,
        }
    }
}

/// The robust tests a detector combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Spike,
    Shift,
    Seasonal,
    Spread,
}

#[derive(Debug, Clone)]
enum Test {
    Spike(SpikeTest),
    Shift(ShiftTest),
    Seasonal(SeasonalTest),
    Spread(SpreadTest),
}

impl Test {
    fn component(&self) -> Component {
        match self {
            Test::Spike(_) => Component::Spike,
            Test::Shift(_) => Component::Shift,
            Test::Seasonal(_) => Component::Seasonal,
            Test::Spread(_) => Component::Spread,
        }
    }

    fn observe(&mut self, point: Point) -> Option<f64> {
        match self {
            Test::Spike(test) => test.observe(point.value),
            Test::Shift(test) => test.observe(point.value),
            Test::Seasonal(test) => test.observe(point.time, point.value),
            Test::Spread(test) => test.observe(point.value),
        }
    }
}

/// What one test made of the last point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestOutcome {
    pub component: Component,
    /// The raw statistic, `None` while the test has no baseline.
    pub statistic: Option<f64>,
    /// Its tail probability under the stream's history (1 while the test
    /// is still calibrating).
    pub probability: f64,
}

/// Why the last point scored what it did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    /// `-log10` of the corrected tail probability, or a novelty's fixed
    /// surprisal when higher.
    pub surprisal: f64,
    /// One outcome per test, in a fixed order.
    pub tests: Vec<TestOutcome>,
    /// The value lay beyond the range of all earlier values.
    pub beyond_range: bool,
    /// The value was the first at its level.
    pub new_level: bool,
    /// The point was reported (a score above 0).
    pub reported: bool,
}

impl Explanation {
    /// The test with the smallest tail probability, if any has one below 1.
    pub fn strongest(&self) -> Option<&TestOutcome> {
        self.tests
            .iter()
            .filter(|outcome| outcome.probability < 1.0)
            .min_by(|a, b| a.probability.total_cmp(&b.probability))
    }
}

/// Streaming anomaly detector for one metric; see the module documentation.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    seen: usize,
    tests: Vec<(Test, TailCalibrator)>,
    range: RangeNovelty,
    grid: GridNovelty,
    /// Surprisals of the suppression span, oldest first.
    recent: VecDeque<f64>,
    last: Explanation,
}

impl Detector {
    pub fn new(config: DetectorConfig) -> Self {
        let window = config.baseline_points;
        let mut tests = vec![
            Test::Spike(SpikeTest::new(window)),
            Test::Shift(ShiftTest::new(config.shift_points, window)),
        ];
        if config.seasonal_days > 0 {
            tests.push(Test::Seasonal(SeasonalTest::new(
                config.seasonal_days,
                window,
            )));
        }
        tests.push(Test::Spread(SpreadTest::new(config.spread_points, window)));
        let calibrator = TailCalibrator::new(config.calibration_half_life, config.tail_points);
        Detector {
            seen: 0,
            tests: tests
                .into_iter()
                .map(|test| (test, calibrator.clone()))
                .collect(),
            range: RangeNovelty::new(config.range_margin),
            grid: GridNovelty::new(config.grid_width, config.grid_points),
            recent: VecDeque::with_capacity(config.suppression_points + 1),
            last: Explanation::default(),
            config,
        }
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Why the last point scored what it did.
    pub fn explanation(&self) -> &Explanation {
        &self.last
    }

    /// Scores one point in `[0, 1]` (higher is more anomalous) and learns
    /// it. A non-finite value scores 0 and is not learnt.
    pub fn update(&mut self, point: Point) -> f64 {
        self.last.tests.clear();
        self.last.reported = false;
        if !point.value.is_finite() {
            self.last.surprisal = 0.0;
            self.last.beyond_range = false;
            self.last.new_level = false;
            return 0.0;
        }

        let mut smallest: f64 = 1.0;
        for (test, calibrator) in &mut self.tests {
            let statistic = test.observe(point);
            let mut probability = 1.0;
            if let Some(statistic) = statistic {
                if calibrator.count() >= self.config.min_calibration as f64 {
                    probability = calibrator.tail_probability(statistic);
                }
                calibrator.learn(statistic);
            }
            smallest = smallest.min(probability);
            self.last.tests.push(TestOutcome {
                component: test.component(),
                statistic,
                probability,
            });
        }
        let corrected = (smallest * self.tests.len() as f64).clamp(f64::MIN_POSITIVE, 1.0);
        let mut surprisal = -corrected.log10();

        self.last.beyond_range = self.range.observe(point.value);
        self.last.new_level = self.grid.observe(point.value);
        if self.last.beyond_range {
            // Added to the tests' evidence rather than a floor, so that
            // values beyond the range still rank among themselves by it.
            surprisal += BEYOND_RANGE_SURPRISAL;
        } else if self.last.new_level {
            surprisal = surprisal.max(NEW_LEVEL_SURPRISAL);
        }
        self.last.surprisal = surprisal;
        self.seen += 1;

        let recent_max = self.recent.iter().copied().fold(0.0, f64::max);
        self.recent.push_back(surprisal);
        if self.recent.len() > self.config.suppression_points {
            self.recent.pop_front();
        }
        if self.seen <= self.config.warmup || surprisal <= recent_max {
            return 0.0;
        }
        self.last.reported = true;
        surprisal / (surprisal + HALF_SCORE_SURPRISAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for test streams (xorshift64*).
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Approximately standard normal (sum of 12 uniforms).
        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
        }
    }

    fn run(detector: &mut Detector, values: impl IntoIterator<Item = f64>, start: i64) -> Vec<f64> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                detector.update(Point {
                    time: start + 300 * i as i64,
                    value,
                })
            })
            .collect()
    }

    #[test]
    fn a_constant_stream_never_scores() {
        let mut detector = Detector::new(DetectorConfig::default());
        let scores = run(&mut detector, std::iter::repeat_n(45.0, 5_000), 0);
        assert!(scores.iter().all(|&score| score == 0.0));
    }

    #[test]
    fn a_level_shift_is_reported_once_at_its_onset() {
        let mut noise = Noise(7);
        let mut detector = Detector::new(DetectorConfig::default());
        let calm: Vec<f64> = (0..3_000).map(|_| 100.0 + noise.normal()).collect();
        let before = run(&mut detector, calm, 0);
        let shifted: Vec<f64> = (0..60).map(|_| 110.0 + noise.normal()).collect();
        let after = run(&mut detector, shifted, 3_000 * 300);

        let onset = after[..6].iter().copied().fold(0.0, f64::max);
        let noise_max = before[1_000..].iter().copied().fold(0.0, f64::max);
        assert!(onset > 0.5, "onset scored {onset}");
        assert!(
            onset > noise_max + 0.1,
            "onset {onset} against noise {noise_max}"
        );
        // Suppression: the rest of the episode adds at most a few reports.
        let reports = after.iter().filter(|&&score| score > 0.0).count();
        assert!(reports <= 3, "{reports} reports: {after:?}");
    }

    #[test]
    fn the_explanation_names_the_seasonal_test_for_a_missing_peak() {
        let mut noise = Noise(11);
        let mut detector = Detector::new(DetectorConfig::default());
        // Hourly samples with a business-hours peak, for three weeks.
        let hour = 3_600;
        let level = |h: i64| {
            if (9..17).contains(&(h % 24)) {
                80.0
            } else {
                20.0
            }
        };
        for h in 0..24 * 21 {
            detector.update(Point {
                time: h * hour,
                value: level(h) + noise.normal(),
            });
        }
        // The next day, at 11:00, the peak does not come.
        let h = 24 * 21 + 11;
        let score = detector.update(Point {
            time: h * hour,
            value: 20.0 + noise.normal(),
        });
        let explanation = detector.explanation();
        assert!(score > 0.0);
        assert_eq!(
            explanation.strongest().map(|test| test.component),
            Some(Component::Seasonal)
        );
        assert!(!explanation.beyond_range);
    }

    #[test]
    fn scores_stay_in_the_unit_interval_for_any_input() {
        let mut noise = Noise(3);
        let specials = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            0.0,
            -0.0,
            1e300,
            -1e-300,
        ];
        for seed in 0..20 {
            let mut detector = Detector::new(DetectorConfig {
                warmup: seed * 10,
                ..DetectorConfig::default()
            });
            let mut time = 0_i64;
            for i in 0..3_000 {
                // Irregular and occasionally repeated or backward timestamps.
                time += (noise.uniform() * 600.0) as i64 - 20;
                let value = match i % 97 {
                    0 => {
                        specials
                            [(noise.uniform() * specials.len() as f64) as usize % specials.len()]
                    }
                    1..=10 => (noise.uniform() * 1e6).powi(3),
                    _ => noise.normal() * (1.0 + seed as f64),
                };
                let score = detector.update(Point { time, value });
                assert!((0.0..=1.0).contains(&score), "seed {seed} row {i}: {score}");
                assert!(detector.explanation().surprisal.is_finite());
            }
        }
    }
}
