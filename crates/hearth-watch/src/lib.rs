//! Telemetry watch: streaming anomaly detectors and the NAB benchmark.
//!
//! Detectors are pure policy code: they take points and return scores and
//! never touch files, clocks or the network, so they can be tested
//! exhaustively. Only [`nab`] reads files, to load the benchmark corpus.

pub mod detect;
mod error;
pub mod ingest;
pub mod nab;
pub mod rca;

pub use error::WatchError;
pub use nab::{NabScores, run_nab};
