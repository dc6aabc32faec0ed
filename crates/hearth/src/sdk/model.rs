//! A loaded model shared by sessions.
//!
//! A [`Model`] owns one [`BatchEngine`]: every session on it submits its
//! turns to the same scheduler, so sessions used from several threads run
//! together in batched forward passes and share the prefix cache. The
//! constraint factory (the vocabulary walked once for constrained decoding)
//! is built on the first typed answer or tool use and kept for the model's
//! life.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hearth_engine::{BatchConfig, BatchEngine, BatchStats, ConstraintFactory, Engine};
use hearth_models::LoadOptions;
use hearth_models::store::{ModelStore, NoProgress, Progress};

use super::error::Error;
use super::session::Session;

/// How [`Model::load_with`] finds and runs a model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Threads for the forward pass; `None` uses every core.
    pub n_threads: Option<usize>,
    /// Tokens per conversation (prompt and answer), capped at the model's.
    pub context: usize,
    /// Turns that decode together in one batch.
    pub max_concurrent: usize,
    /// Pull a catalogue model that is not installed yet.
    pub auto_pull: bool,
    /// Where models are installed; `None` is `$HEARTH_HOME`
    /// (default `~/.cache/hearth`).
    pub home: Option<PathBuf>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            n_threads: None,
            context: 4096,
            max_concurrent: 16,
            auto_pull: true,
            home: None,
        }
    }
}

struct Inner {
    batch: BatchEngine,
    constraints: OnceLock<Result<ConstraintFactory, String>>,
}

/// A loaded model. Cheap to clone: clones share the weights and the
/// scheduler, which stops when the last clone and session are dropped.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("engine", self.engine())
            .field("batch", &self.inner.batch)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `name_or_path`: a path to a `.gguf` file, an installed model's
    /// name, or a catalogue name (pulled on first use, silently).
    pub fn load(name_or_path: &str) -> Result<Self, Error> {
        Self::load_with(name_or_path, &ModelOptions::default())
    }

    /// [`load`](Self::load) with options.
    pub fn load_with(name_or_path: &str, options: &ModelOptions) -> Result<Self, Error> {
        Self::load_with_progress(name_or_path, options, &mut NoProgress)
    }

    /// [`load_with`](Self::load_with), reporting a pull's download and
    /// install phases to `progress`.
    pub fn load_with_progress(
        name_or_path: &str,
        options: &ModelOptions,
        progress: &mut dyn Progress,
    ) -> Result<Self, Error> {
        let home = options
            .home
            .clone()
            .unwrap_or_else(hearth_core::hearth_home);
        let store = ModelStore::new(&home);
        let path = store
            .resolve(name_or_path, options.auto_pull, progress)
            .map_err(|source| Error::Store {
                name: name_or_path.to_string(),
                source,
            })?;
        let load_options = match options.n_threads {
            Some(n_threads) => LoadOptions {
                n_threads: n_threads.max(1),
            },
            None => LoadOptions::default(),
        };
        let engine =
            Engine::load(&path, &load_options).map_err(|source| Error::Load { path, source })?;
        let config = BatchConfig {
            context: options.context,
            max_running: options.max_concurrent,
            ..BatchConfig::default()
        };
        Self::from_engine_with(Arc::new(engine), config)
    }

    /// A model over an engine loaded elsewhere, with the default scheduler
    /// limits.
    pub fn from_engine(engine: Arc<Engine>) -> Result<Self, Error> {
        Self::from_engine_with(engine, BatchConfig::default())
    }

    /// A model over an engine loaded elsewhere, with scheduler limits.
    pub fn from_engine_with(engine: Arc<Engine>, config: BatchConfig) -> Result<Self, Error> {
        let batch = BatchEngine::start(engine, config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                batch,
                constraints: OnceLock::new(),
            }),
        })
    }

    /// A new conversation with an empty transcript.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// The engine: tokenizer, chat template and weights.
    pub fn engine(&self) -> &Arc<Engine> {
        self.inner.batch.engine()
    }

    /// The scheduler's counters (queued and running turns, KV blocks,
    /// prefix-cache hits).
    pub fn stats(&self) -> BatchStats {
        self.inner.batch.stats()
    }

    pub(crate) fn batch(&self) -> &BatchEngine {
        &self.inner.batch
    }

    /// The constraint factory, built on first use.
    pub(crate) fn constraints(&self) -> Result<&ConstraintFactory, Error> {
        self.inner
            .constraints
            .get_or_init(|| {
                ConstraintFactory::new(self.engine().tokenizer()).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|message| {
                Error::Constraints(hearth_engine::ConstraintError::Internal(message.clone()))
            })
    }
}
