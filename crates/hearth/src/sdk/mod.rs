//! The SDK: [`Model`], [`Session`], typed answers and tools.

pub mod error;
pub mod model;
pub mod partial_json;
mod schema;
pub mod session;
pub mod tool;
