//! Shared vocabulary of the Hearth platform.
//!
//! This crate is deliberately small: identifiers, paths and the telemetry
//! event type that every other crate agrees on. It has no knowledge of
//! models, HTTP or telemetry storage.

pub mod paths;
pub mod telemetry;

pub use paths::hearth_home;
pub use telemetry::{Dimensions, EventKind, TelemetryEvent};
