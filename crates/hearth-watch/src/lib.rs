//! Telemetry watch: from device events to an explained alert.
//!
//! Events arrive in the durable [`ingest`] log. [`aggregate`] buckets them
//! in time per leaf (every combination of dimension values) with counts,
//! failures and latency sketches, so any slice rolls up by merging.
//! [`pipeline`] runs the streaming [`detect`]ors over the fleet total and
//! every single-dimension slice of each metric, controls the false-discovery
//! rate across those series, groups detections into incidents, and asks
//! [`rca`] which slice explains each one; [`alerts`] keeps the lifecycle
//! (open, acknowledged, resolved, flap-damped) and [`webhook`] delivers it.
//! [`simulate`] generates a fleet with injected regressions, and [`nab`]
//! scores the detectors on the Numenta Anomaly Benchmark.
//!
//! Detectors, aggregation, the pipeline, root-cause search and the alert
//! policy are pure code: no files, clocks or network, so they can be
//! tested exhaustively. Only [`ingest`], [`webhook`], the [`nab`] corpus
//! loader and [`alerts`]' load/save touch the outside world.

pub mod aggregate;
pub mod alerts;
pub mod detect;
mod error;
pub mod ingest;
pub mod nab;
pub mod pipeline;
pub mod rca;
pub mod simulate;
pub mod webhook;

pub use error::WatchError;
pub use nab::{NabScores, run_nab};
