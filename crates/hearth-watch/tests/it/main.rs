//! Integration tests of hearth-watch.

mod ingest;
mod rca;
