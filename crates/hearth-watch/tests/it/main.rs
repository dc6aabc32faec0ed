//! Integration tests of hearth-watch.

mod ingest;
mod nab;
mod rca;
