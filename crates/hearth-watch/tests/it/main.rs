//! Integration tests of hearth-watch.

mod ingest;
mod nab;
mod pipeline;
mod rca;
