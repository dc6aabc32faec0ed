//! Integration tests of the engine on real models.

mod generation;
mod reference;
mod support;
