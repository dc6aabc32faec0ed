//! Command-line arguments.

use clap::{Args, Parser, Subcommand};

/// Hearth: a local, private assistant runtime. Runs small quantized language
/// models (GGUF) on the CPU.
///
/// Models are kept in $HEARTH_HOME (default ~/.cache/hearth); the default
/// model is fetched automatically the first time it is used.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat interactively (streams the answer; /reset starts over, /exit quits).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// A system prompt (otherwise the model's template default).
        #[arg(long)]
        system: Option<String>,
    },
    /// Generate one answer to PROMPT and exit.
    Generate {
        /// The user message (or, with --raw, the literal text to continue).
        prompt: String,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Do not apply the chat template: continue PROMPT as plain text.
        #[arg(long)]
        raw: bool,
        /// Print `{"text", "tokens", "prompt_tokens", "finish_reason", "timings"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of TEXT (no BOS unless the model adds one).
    Tokenize {
        text: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Print `{"tokens": [ids]}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure prompt processing and decode speed, time to first token and peak memory.
    Bench(BenchArgs),
    /// Serve the OpenAI-compatible HTTP API (chat, completions, embeddings).
    ///
    /// Prints `hearth: listening on http://HOST:PORT` once ready; stops on
    /// Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Install and list models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Fleet telemetry: simulate, ingest, detect and explain regressions.
    Watch {
        #[command(subcommand)]
        command: crate::watch::WatchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Install a model: a catalogue name (e.g. smollm2-135m-instruct,
    /// gemma3-270m), hf:OWNER/REPO/FILE.gguf, or a path to a .gguf file.
    Pull { name: String },
    /// List installed models with their sizes.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model: a catalogue or installed name, or a path to a .gguf file.
    #[arg(long, short = 'm', default_value = hearth_models::store::DEFAULT_MODEL)]
    pub model: String,
    /// Threads for the forward pass (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Context length in tokens (prompt plus answer).
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
}

impl ModelArgs {
    /// `--threads`, or every core.
    pub fn n_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| hearth_models::LoadOptions::default().n_threads)
    }
}

#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Most new tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens less likely than MIN_P times the top one (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty for recently generated tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens to process.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Print `{"prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mb", ...}` as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model: a catalogue or installed name, or a path to a .gguf file. Its
    /// name is the id clients send as `model`.
    #[arg(long, short = 'm', default_value = hearth_models::store::DEFAULT_MODEL)]
    pub model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = hearth_server::DEFAULT_PORT)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 route.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Threads for the forward pass (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Requests that may wait for a slot; more are refused with 429.
    #[arg(long, default_value_t = hearth_engine::BatchConfig::default().max_queue)]
    pub max_queue: usize,
    /// Sequences generated together.
    #[arg(long, default_value_t = hearth_engine::BatchConfig::default().max_running)]
    pub max_running: usize,
    /// Tokens per sequence, prompt plus answer (capped at the model's).
    #[arg(long, default_value_t = hearth_engine::BatchConfig::default().context)]
    pub context: usize,
    /// KV cache blocks shared by all sequences.
    #[arg(long, default_value_t = hearth_engine::BatchConfig::default().kv_blocks)]
    pub kv_blocks: usize,
    /// Embedding model for /v1/embeddings: an installed name or a model
    /// directory; `none` turns embeddings off. Not installed means no
    /// embeddings (the server still starts).
    #[arg(long, default_value = "all-minilm-l6-v2")]
    pub embeddings: String,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = hearth_server::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Directory of the telemetry ingest log: accepts `POST /v1/telemetry`
    /// batches and records the server's own requests as events.
    #[arg(long)]
    pub telemetry_dir: Option<std::path::PathBuf>,
}
