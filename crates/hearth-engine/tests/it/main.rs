//! Integration tests of the engine on real models.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod constraint;
mod generation;
mod reference;
mod support;
mod tools;
