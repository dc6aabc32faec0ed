//! The HTTP API in-process: requests go through the real router
//! (`tower::ServiceExt::oneshot`) to a real model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chat;
mod completions;
mod dashboard;
mod embeddings;
mod errors;
mod limits;
mod observability;
mod support;
mod telemetry;
