//! The `hearth` binary, run as a user would run it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod sdk;
mod serve;
mod watch;
