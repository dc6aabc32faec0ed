//! Errors of the watch crate.

use std::path::PathBuf;

/// What can stop a benchmark or a detector from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("invalid timestamp {text:?}: expected YYYY-MM-DD HH:MM:SS")]
    Timestamp { text: String },

    #[error("{series}: label window {start} .. {end} does not match timestamps of the data")]
    WindowNotInData {
        series: String,
        start: String,
        end: String,
    },

    #[error("scoring profile {0:?} is missing from the profiles")]
    MissingProfile(String),

    #[error("{series}: {scores} anomaly scores for {points} points")]
    ScoreCount {
        series: String,
        scores: usize,
        points: usize,
    },

    #[error("{series}: anomaly score {score} at row {row} is outside [0, 1]")]
    ScoreOutOfRange {
        series: String,
        row: usize,
        score: f64,
    },
}
