//! Errors of root-cause localisation and of its benchmark loader.

use std::path::PathBuf;

/// Why a localisation or an evaluation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RcaError {
    #[error("no dimensions given")]
    NoDimensions,

    #[error("dimension {0:?} is named twice")]
    DuplicateDimension(String),

    #[error("leaf {leaf} has {found} dimension values, expected {expected}")]
    DimensionCount {
        leaf: usize,
        expected: usize,
        found: usize,
    },

    #[error("leaf {leaf}: {field} is not finite")]
    NonFinite { leaf: usize, field: &'static str },

    #[error("leaf {leaf}: {field} is negative ({value})")]
    Negative {
        leaf: usize,
        field: &'static str,
        value: f64,
    },

    #[error("numerator leaf {leaf} {dims:?} has no denominator leaf")]
    UnmatchedNumerator { leaf: usize, dims: Vec<String> },

    #[error("configuration {name} = {value} is out of range")]
    InvalidConfig { name: &'static str, value: f64 },

    #[error("quantile {0} is outside [0, 1]")]
    InvalidQuantile(f64),

    #[error("sketch relative accuracy {0} is outside (0, 1)")]
    InvalidAccuracy(f64),

    #[error("cannot merge sketches of relative accuracy {left} and {right}")]
    AccuracyMismatch { left: f64, right: f64 },

    #[error("sketch value {0} is negative or not finite")]
    InvalidValue(f64),

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}
