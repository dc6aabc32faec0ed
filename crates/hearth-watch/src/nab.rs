//! The Numenta Anomaly Benchmark (NAB) scorer.
//!
//! A detector emits one anomaly score in `[0, 1]` per row; a threshold turns
//! scores into detections. Each labelled window counts once: its first
//! detection earns the profile's true-positive weight times a scaled sigmoid
//! of how early in the window it came (1 at the left edge, falling to 0 at the
//! right edge), and a window without a detection costs the false-negative
//! weight. Every detection outside a window costs the false-positive weight,
//! scaled by the same sigmoid of its distance past the preceding window (so a
//! late detection just after a window costs little) or fully when no window
//! precedes it. The first 15 % of each file (at most 750 rows) is probation
//! and is not scored. One threshold per profile is chosen by sweeping every
//! distinct score of the whole corpus, and the raw total is normalised so
//! that the null detector (never detects) scores 0 and the perfect detector
//! (one detection at each window's left edge) scores 100.
//!
//! The arithmetic follows NAB's published scorer row for row, so scores agree
//! with its published results (see the crate's tests).

mod corpus;

pub use corpus::{
    Corpus, CostMatrix, LabeledSeries, Profile, Window, load_detector_results, load_profiles,
    parse_series, parse_timestamp,
};

use std::path::Path;

use serde::Serialize;

use crate::WatchError;
use crate::detect::{Detector, DetectorConfig, Point};

/// Fraction of each file (from its start) that is not scored.
pub const PROBATION_FRACTION: f64 = 0.15;

/// Probation never exceeds this fraction of 5,000 rows (750 rows).
const PROBATION_CAP_ROWS: f64 = 5_000.0;

/// The sweep starts above every valid score, so its first row is the score of
/// detecting nothing.
const SWEEP_START: f64 = 1.1;

/// NAB's names of the three profiles.
pub const STANDARD: &str = "standard";
pub const REWARD_LOW_FP: &str = "reward_low_FP_rate";
pub const REWARD_LOW_FN: &str = "reward_low_FN_rate";

/// Number of leading rows of an `rows`-row file that are not scored.
pub fn probation_rows(rows: usize) -> usize {
    let fraction = (PROBATION_FRACTION * rows as f64).floor();
    fraction.min(PROBATION_FRACTION * PROBATION_CAP_ROWS) as usize
}

/// NAB's scaled sigmoid of a relative position: `2 / (1 + e^(5x)) - 1`, and
/// exactly -1 beyond 3. It is 0.98661 at -1 (a window's left edge), 0 at 0
/// (its right edge) and -0.98661 at 1.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// How a row counts when the detector flags it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Inside probation: never scored.
    Probation,
    /// Inside the window with this corpus-wide index.
    Window(usize),
    /// Outside every window: a false positive.
    Outside,
}

/// One row as the sweep sees it.
#[derive(Debug, Clone, Copy)]
struct SweepRow {
    anomaly_score: f64,
    /// Weighted score this row earns (window) or costs (outside) when flagged.
    weight: f64,
    role: Role,
}

/// NAB's per-row weighted score `S(t)` of a series under `costs`: what each
/// row would earn (inside a window, as the window's first detection) or cost
/// (outside, negative) if flagged. Probation rows carry the value they would
/// have outside probation.
pub fn row_scores(series: &LabeledSeries, costs: &CostMatrix) -> Vec<f64> {
    sweep_rows(series, None, costs, 0)
        .into_iter()
        .map(|row| row.weight)
        .collect()
}

/// Builds the sweep rows of one series; `window_base` numbers its windows
/// corpus-wide.
fn sweep_rows(
    series: &LabeledSeries,
    scores: Option<&[f64]>,
    costs: &CostMatrix,
    window_base: usize,
) -> Vec<SweepRow> {
    let rows = series.timestamps.len();
    let probation = probation_rows(rows);
    let max_true_positive = scaled_sigmoid(-1.0);
    let mut windows = series.windows.iter().enumerate().peekable();
    let mut current: Option<(usize, Window)> = None;
    let mut previous: Option<Window> = None;
    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        if let Some(&(index, window)) = windows.peek()
            && window.first == row
        {
            current = Some((index, *window));
            windows.next();
        }
        let (weight, window_index) = match current {
            Some((index, window)) => {
                let position = -((window.last - row + 1) as f64) / window.width() as f64;
                let weight = scaled_sigmoid(position) * costs.true_positive / max_true_positive;
                (weight, Some(index))
            }
            None => {
                let unweighted = match previous {
                    None => -1.0,
                    Some(window) => {
                        // A one-row window has no width to scale by: treat the
                        // row as far past it.
                        let span = window.width().saturating_sub(1);
                        if span == 0 {
                            -1.0
                        } else {
                            scaled_sigmoid((row - window.last) as f64 / span as f64)
                        }
                    }
                };
                (unweighted * costs.false_positive, None)
            }
        };
        let role = match window_index {
            _ if row < probation => Role::Probation,
            Some(index) => Role::Window(window_base + index),
            None => Role::Outside,
        };
        let anomaly_score = scores.map_or(0.0, |scores| scores[row]);
        out.push(SweepRow {
            anomaly_score,
            weight,
            role,
        });
        if let Some((_, window)) = current
            && window.last == row
        {
            previous = Some(window);
            current = None;
        }
    }
    out
}

/// The score of one threshold of a sweep: rows with an anomaly score at or
/// above `threshold` are detections.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdScore {
    pub threshold: f64,
    /// Raw (unnormalised) NAB score.
    pub score: f64,
    /// Flagged rows inside windows.
    pub true_positives: usize,
    /// Unflagged rows outside windows.
    pub true_negatives: usize,
    /// Flagged rows outside windows.
    pub false_positives: usize,
    /// Unflagged rows inside windows.
    pub false_negatives: usize,
}

/// Scores every distinct threshold of `rows`, from detecting nothing down
/// to flagging every row, and returns the best; on ties the highest
/// threshold wins. `window_count` bounds the corpus-wide window indices.
fn best_threshold(
    mut rows: Vec<SweepRow>,
    costs: &CostMatrix,
    window_count: usize,
) -> ThresholdScore {
    rows.retain(|row| row.role != Role::Probation);
    rows.sort_by(|a, b| b.anomaly_score.total_cmp(&a.anomaly_score));

    // Above every score nothing is flagged: each scored window is a miss
    // and keeps the best detection found as the threshold falls.
    let mut window_parts: Vec<Option<f64>> = vec![None; window_count];
    let mut current = ThresholdScore {
        threshold: SWEEP_START,
        score: 0.0,
        true_positives: 0,
        true_negatives: 0,
        false_positives: 0,
        false_negatives: 0,
    };
    for row in &rows {
        match row.role {
            Role::Window(index) => {
                current.false_negatives += 1;
                if window_parts[index].is_none() {
                    window_parts[index] = Some(-costs.false_negative);
                    current.score -= costs.false_negative;
                }
            }
            Role::Outside => current.true_negatives += 1,
            Role::Probation => {}
        }
    }

    let mut best = current;
    for row in &rows {
        // All rows at one score are flagged together: a threshold's score
        // is complete when the next lower score is reached.
        if row.anomaly_score != current.threshold {
            if current.score > best.score {
                best = current;
            }
            current.threshold = row.anomaly_score;
        }
        match row.role {
            Role::Window(index) => {
                current.true_positives += 1;
                current.false_negatives -= 1;
                if let Some(part) = window_parts[index].as_mut()
                    && row.weight > *part
                {
                    current.score += row.weight - *part;
                    *part = row.weight;
                }
            }
            Role::Outside => {
                current.false_positives += 1;
                current.true_negatives -= 1;
                current.score += row.weight;
            }
            Role::Probation => {}
        }
    }
    if current.score > best.score {
        best = current;
    }
    best
}

/// Sweeps the whole corpus under one profile and returns the threshold with
/// the highest raw score. `scores[i]` belongs to `corpus.series[i]`.
pub fn optimize_threshold(
    corpus: &Corpus,
    scores: &[Vec<f64>],
    costs: &CostMatrix,
) -> Result<ThresholdScore, WatchError> {
    check_scores(corpus, scores)?;
    let mut rows = Vec::new();
    let mut window_base = 0;
    for (series, scores) in corpus.series.iter().zip(scores) {
        rows.extend(sweep_rows(series, Some(scores), costs, window_base));
        window_base += series.windows.len();
    }
    Ok(best_threshold(rows, costs, window_base))
}

/// One file's share of a profile's score at the corpus threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileScore {
    pub name: String,
    /// Raw score of the file at the corpus threshold.
    pub raw: f64,
    /// Windows of the file (outside probation) with at least one detection.
    pub windows_detected: usize,
    /// Scored windows of the file.
    pub windows: usize,
    /// Flagged rows outside windows.
    pub false_positives: usize,
}

/// Scores one series at a fixed threshold, as NAB's scoring step does.
pub fn score_series(
    series: &LabeledSeries,
    scores: &[f64],
    costs: &CostMatrix,
    threshold: f64,
) -> Result<FileScore, WatchError> {
    check_series_scores(series, scores)?;
    let rows = sweep_rows(series, Some(scores), costs, 0);
    let mut best: Vec<Option<f64>> = vec![None; series.windows.len()];
    let mut raw = 0.0;
    let mut false_positives = 0;
    for row in &rows {
        match row.role {
            Role::Probation => {}
            Role::Window(index) => {
                let flagged = row.anomaly_score >= threshold;
                let part = best[index].get_or_insert(-costs.false_negative);
                if flagged && row.weight > *part {
                    *part = row.weight;
                }
            }
            Role::Outside => {
                if row.anomaly_score >= threshold {
                    raw += row.weight;
                    false_positives += 1;
                }
            }
        }
    }
    let windows = best.iter().flatten().count();
    let windows_detected = best
        .iter()
        .flatten()
        .filter(|&&part| part > -costs.false_negative)
        .count();
    raw += best.iter().flatten().sum::<f64>();
    Ok(FileScore {
        name: series.name.clone(),
        raw,
        windows_detected,
        windows,
        false_positives,
    })
}

/// The corpus' raw score at a fixed threshold: the sum of every file's, as
/// NAB's scoring step computes it for a threshold its optimiser recorded.
pub fn score_at_threshold(
    corpus: &Corpus,
    scores: &[Vec<f64>],
    costs: &CostMatrix,
    threshold: f64,
) -> Result<f64, WatchError> {
    check_scores(corpus, scores)?;
    corpus
        .series
        .iter()
        .zip(scores)
        .map(|(series, scores)| score_series(series, scores, costs, threshold).map(|file| file.raw))
        .sum()
}

/// A detector's result under one profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileScore {
    /// NAB's profile name.
    pub profile: String,
    /// The corpus-wide optimum and its counts of rows.
    pub best: ThresholdScore,
    /// Raw score of the null detector (the 0 of the scale).
    pub null: f64,
    /// Raw score of the perfect detector (the 100 of the scale).
    pub perfect: f64,
    /// `100 * (raw - null) / (perfect - null)`.
    pub normalized: f64,
    /// Each file's raw score at the corpus threshold.
    pub files: Vec<FileScore>,
}

/// Normalised NAB scores of one detector over the corpus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NabScores {
    /// Standard profile (false positives weigh 0.11).
    pub standard: f64,
    /// Reward-low-false-positive profile (false positives weigh 0.22).
    pub low_fp: f64,
    /// Reward-low-false-negative profile (misses weigh 2).
    pub low_fn: f64,
    /// Every profile in detail.
    pub profiles: Vec<ProfileScore>,
}

/// Scores a detector's output over the corpus under every profile.
/// `scores[i]` holds one anomaly score in `[0, 1]` per row of
/// `corpus.series[i]`.
pub fn score_corpus(corpus: &Corpus, scores: &[Vec<f64>]) -> Result<NabScores, WatchError> {
    check_scores(corpus, scores)?;
    let null_scores = null_detector(corpus);
    let mut profiles = Vec::with_capacity(corpus.profiles.len());
    for profile in &corpus.profiles {
        let costs = &profile.costs;
        let best = optimize_threshold(corpus, scores, costs)?;
        let null = optimize_threshold(corpus, &null_scores, costs)?.score;
        let perfect = corpus.window_count() as f64 * costs.true_positive;
        let files = corpus
            .series
            .iter()
            .zip(scores)
            .map(|(series, scores)| score_series(series, scores, costs, best.threshold))
            .collect::<Result<Vec<_>, _>>()?;
        profiles.push(ProfileScore {
            profile: profile.name.clone(),
            normalized: normalize(best.score, null, perfect),
            best,
            null,
            perfect,
            files,
        });
    }
    let normalized = |name: &str| {
        profiles
            .iter()
            .find(|profile| profile.profile == name)
            .map(|profile| profile.normalized)
            .ok_or_else(|| WatchError::MissingProfile(name.to_owned()))
    };
    Ok(NabScores {
        standard: normalized(STANDARD)?,
        low_fp: normalized(REWARD_LOW_FP)?,
        low_fn: normalized(REWARD_LOW_FN)?,
        profiles,
    })
}

/// `100 * (raw - null) / (perfect - null)`.
pub fn normalize(raw: f64, null: f64, perfect: f64) -> f64 {
    100.0 * (raw - null) / (perfect - null)
}

/// Runs the detector over every series of the corpus, one row at a time.
/// Each series' warm-up is NAB's probation (the detector is told it, as NAB
/// tells every detector), whatever `config.warmup` says.
pub fn detect_corpus(corpus: &Corpus, config: &DetectorConfig) -> Vec<Vec<f64>> {
    corpus
        .series
        .iter()
        .map(|series| {
            let config = DetectorConfig {
                warmup: probation_rows(series.values.len()),
                ..config.clone()
            };
            let mut detector = Detector::new(config);
            series
                .timestamps
                .iter()
                .zip(&series.values)
                .map(|(&time, &value)| detector.update(Point { time, value }))
                .collect()
        })
        .collect()
}

/// NAB's null detector: the constant 0.5 everywhere. At its best threshold
/// it detects nothing, and defines the 0 of the normalised scale.
pub fn null_detector(corpus: &Corpus) -> Vec<Vec<f64>> {
    corpus
        .series
        .iter()
        .map(|series| vec![0.5; series.values.len()])
        .collect()
}

/// The perfect detector: 1 at the first row of every window and 0
/// elsewhere. It earns the full true-positive weight for every window and
/// defines the 100 of the normalised scale.
pub fn perfect_detector(corpus: &Corpus) -> Vec<Vec<f64>> {
    corpus
        .series
        .iter()
        .map(|series| {
            let mut scores = vec![0.0; series.values.len()];
            for window in &series.windows {
                scores[window.first] = 1.0;
            }
            scores
        })
        .collect()
}

/// Loads NAB from `data_dir` (its `data/`, `labels/` and `config/`), runs
/// the default [`Detector`] over every file and scores the result under the
/// three profiles.
pub fn run_nab(data_dir: &Path) -> Result<NabScores, WatchError> {
    let corpus = Corpus::load(data_dir)?;
    let scores = detect_corpus(&corpus, &DetectorConfig::default());
    score_corpus(&corpus, &scores)
}

fn check_scores(corpus: &Corpus, scores: &[Vec<f64>]) -> Result<(), WatchError> {
    if scores.len() != corpus.series.len() {
        return Err(WatchError::ScoreCount {
            series: "corpus".to_owned(),
            scores: scores.len(),
            points: corpus.series.len(),
        });
    }
    corpus
        .series
        .iter()
        .zip(scores)
        .try_for_each(|(series, scores)| check_series_scores(series, scores))
}

fn check_series_scores(series: &LabeledSeries, scores: &[f64]) -> Result<(), WatchError> {
    if scores.len() != series.timestamps.len() {
        return Err(WatchError::ScoreCount {
            series: series.name.clone(),
            scores: scores.len(),
            points: series.timestamps.len(),
        });
    }
    match scores.iter().position(|score| !(0.0..=1.0).contains(score)) {
        Some(row) => Err(WatchError::ScoreOutOfRange {
            series: series.name.clone(),
            row,
            score: scores[row],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values computed by hand from NAB's formulas (see each).
    const TOLERANCE: f64 = 1e-12;

    fn standard() -> CostMatrix {
        CostMatrix {
            true_positive: 1.0,
            false_positive: 0.11,
            false_negative: 1.0,
            true_negative: 1.0,
        }
    }

    fn low_fn() -> CostMatrix {
        CostMatrix {
            false_negative: 2.0,
            ..standard()
        }
    }

    /// 100 rows (probation: the first 15) with one window over rows 40..=49.
    fn series() -> LabeledSeries {
        LabeledSeries {
            name: "test.csv".to_owned(),
            timestamps: (0..100).map(|i| i * 60).collect(),
            values: vec![0.0; 100],
            windows: vec![Window {
                first: 40,
                last: 49,
            }],
        }
    }

    fn flag(rows: &[(usize, f64)]) -> Vec<f64> {
        let mut scores = vec![0.0; 100];
        for &(row, score) in rows {
            scores[row] = score;
        }
        scores
    }

    fn corpus(series: Vec<LabeledSeries>, costs: CostMatrix) -> Corpus {
        Corpus {
            series,
            profiles: vec![
                Profile {
                    name: STANDARD.to_owned(),
                    costs,
                },
                Profile {
                    name: REWARD_LOW_FP.to_owned(),
                    costs: CostMatrix {
                        false_positive: 0.22,
                        ..costs
                    },
                },
                Profile {
                    name: REWARD_LOW_FN.to_owned(),
                    costs: low_fn(),
                },
            ],
        }
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750_rows() {
        assert_eq!(probation_rows(100), 15);
        assert_eq!(probation_rows(4032), 604);
        assert_eq!(probation_rows(5000), 750);
        assert_eq!(probation_rows(22695), 750);
    }

    #[test]
    fn scaled_sigmoid_matches_its_definition() {
        // 2 / (1 + e^-5) - 1 = tanh(2.5)
        assert!((scaled_sigmoid(-1.0) - 2.5_f64.tanh()).abs() < TOLERANCE);
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_5).abs() < TOLERANCE);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 2.5_f64.tanh()).abs() < TOLERANCE);
        assert_eq!(scaled_sigmoid(3.000_1), -1.0);
    }

    #[test]
    fn hand_computed_detections_score_as_nab_does() {
        let series = series();
        // Row 5 is in probation (ignored); row 20 precedes every window
        // (a full false positive, -0.11); rows 45 and 47 are in the window,
        // and only the earlier, better one counts: position
        // -(49 - 45 + 1) / 10 = -0.5, weight tanh(1.25) / tanh(2.5)
        // = 0.859792566909784; row 60 is 11 rows past a window of width
        // 10, position 11 / 9, weight 0.11 * -tanh(55 / 18)
        // = -0.109513101303698.
        let scores = flag(&[(5, 1.0), (20, 1.0), (45, 1.0), (47, 1.0), (60, 1.0)]);
        let file = score_series(&series, &scores, &standard(), 0.5).unwrap();
        let expected = -0.11 + 0.859_792_566_909_783_7 - 0.109_513_101_303_697_75;
        assert!((file.raw - expected).abs() < TOLERANCE, "{}", file.raw);
        assert_eq!(file.windows_detected, 1);
        assert_eq!(file.windows, 1);
        assert_eq!(file.false_positives, 2);

        // A detection at the last row of the window earns little:
        // tanh(0.25) / tanh(2.5) = 0.248241549775430.
        let late = score_series(&series, &flag(&[(49, 1.0)]), &standard(), 0.5).unwrap();
        assert!((late.raw - 0.248_241_549_775_429_92).abs() < TOLERANCE);
        // At the left edge it earns the full true-positive weight.
        let early = score_series(&series, &flag(&[(40, 1.0)]), &standard(), 0.5).unwrap();
        assert!((early.raw - 1.0).abs() < TOLERANCE);
        // A miss costs the false-negative weight of the profile.
        let missed = score_series(&series, &flag(&[]), &low_fn(), 0.5).unwrap();
        assert_eq!(missed.raw, -2.0);
        assert_eq!(missed.windows_detected, 0);
    }

    #[test]
    fn the_sweep_finds_the_best_threshold() {
        // Window detection at 0.9, a false positive before the window at
        // 0.8, one after it at 0.7, everything else at 0.
        let corpus = corpus(vec![series()], standard());
        let scores = vec![flag(&[(45, 0.9), (20, 0.8), (60, 0.7)])];
        let best = optimize_threshold(&corpus, &scores, &standard()).unwrap();
        assert_eq!(best.threshold, 0.9);
        assert!((best.score - 0.859_792_566_909_783_7).abs() < TOLERANCE);
        assert_eq!((best.true_positives, best.false_positives), (1, 0));
        // 85 scored rows: 10 in the window, 75 outside.
        assert_eq!((best.false_negatives, best.true_negatives), (9, 75));

        // Flagging everything: 25 rows before the window at -0.11, the best
        // window row (its left edge) at 1, and 50 rows after it weighted by
        // their distance. Summed by hand: -7.027960862065994.
        let everything = vec![vec![1.0; 100]];
        let best = optimize_threshold(&corpus, &everything, &standard()).unwrap();
        assert_eq!(best.threshold, SWEEP_START);
        assert_eq!(best.score, -1.0);
        let all = score_series(&corpus.series[0], &everything[0], &standard(), 1.0).unwrap();
        assert!(
            (all.raw + 7.027_960_862_065_994).abs() < 1e-9,
            "{}",
            all.raw
        );
    }

    #[test]
    fn null_and_perfect_detectors_bound_the_scale() {
        let mut other = series();
        other.name = "other.csv".to_owned();
        other.windows = vec![
            Window {
                first: 20,
                last: 29,
            },
            Window {
                first: 70,
                last: 79,
            },
        ];
        let corpus = corpus(vec![series(), other], standard());
        let null = score_corpus(&corpus, &null_detector(&corpus)).unwrap();
        let perfect = score_corpus(&corpus, &perfect_detector(&corpus)).unwrap();
        for (null, perfect) in null.profiles.iter().zip(&perfect.profiles) {
            assert_eq!(null.normalized, 0.0, "{}", null.profile);
            assert!(
                (perfect.normalized - 100.0).abs() < TOLERANCE,
                "{}",
                perfect.profile
            );
            assert_eq!(perfect.perfect, 3.0);
        }
        assert_eq!(null.profiles[2].null, -6.0);
    }

    #[test]
    fn scores_outside_the_unit_interval_are_rejected() {
        let corpus = corpus(vec![series()], standard());
        let error = score_corpus(&corpus, &[flag(&[(50, 1.5)])]).unwrap_err();
        assert!(matches!(error, WatchError::ScoreOutOfRange { row: 50, .. }));
        let error = score_corpus(&corpus, &[vec![0.0; 3]]).unwrap_err();
        assert!(matches!(error, WatchError::ScoreCount { scores: 3, .. }));
    }
}
