//! Shared vocabulary of the Hearth platform.
//!
//! This crate is deliberately small: identifiers and paths that every other
//! crate agrees on. It has no knowledge of models, HTTP or telemetry storage.

pub mod paths;

pub use paths::hearth_home;
