//! Shared test helpers: locating the real models.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hearth_engine::Engine;
use hearth_models::LoadOptions;

/// Path of an installed test model; panics with the fix when it is missing.
pub fn model_path(name: &str) -> PathBuf {
    let path = hearth_core::hearth_home()
        .join("models")
        .join(name)
        .join("model.gguf");
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

fn load(name: &str) -> Arc<Engine> {
    let engine = Engine::load(&model_path(name), &LoadOptions { n_threads: 2 })
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    Arc::new(engine)
}

/// SmolLM2-135M-Instruct Q4_1, loaded once per test binary.
pub fn smollm2() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| load("smollm2-135m-instruct")).clone()
}

/// Gemma 3 270M Q4_K_M, loaded once per test binary.
pub fn gemma3() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| load("gemma3-270m")).clone()
}

/// A fixture file produced by `scripts/reference/gen_fixtures.py`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hearth-models/tests/fixtures/llama_cpp")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
