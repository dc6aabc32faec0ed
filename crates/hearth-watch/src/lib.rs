//! Telemetry watch: the ingest log, root-cause localisation, streaming
//! anomaly detectors and the NAB benchmark.
//!
//! Detectors ([`detect`]) are pure policy code: they take points and return
//! scores and never touch files, clocks or the network, so they can be
//! tested exhaustively. [`nab`] reads the benchmark corpus from disk and
//! runs them over it.

pub mod detect;
mod error;
pub mod ingest;
pub mod nab;
pub mod rca;

pub use error::WatchError;
pub use nab::{NabScores, run_nab};
