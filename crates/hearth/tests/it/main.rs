//! The `hearth` binary, run as a user would run it.

mod cli;
