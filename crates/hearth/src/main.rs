//! The `hearth` command-line tool: chat with a local model, generate,
//! tokenize, benchmark, and manage installed models.

mod bench;
mod cli;
mod progress;
mod watch;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hearth_engine::{Engine, GenerateRequest, SamplingParams};
use hearth_models::store::ModelStore;
use hearth_models::{ChatMessage, LoadOptions};
use serde_json::json;

use crate::cli::{Cli, Command, ModelArgs, ModelsCommand, SamplingArgs, ServeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let mut message = format!("error: {err}");
            for cause in err.chain().skip(1) {
                message.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Chat {
            model,
            sampling,
            system,
        } => chat(&model, &sampling, system),
        Command::Generate {
            prompt,
            model,
            sampling,
            raw,
            json,
        } => generate(&prompt, &model, &sampling, raw, json),
        Command::Tokenize { text, model, json } => tokenize(&text, &model, json),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve(&args),
        Command::Models { command } => models(command),
        Command::Watch { command } => watch::run(command),
    }
}

/// Resolves `--model` (a catalogue name, an installed name or a path),
/// pulling the default model on first use.
pub(crate) fn resolve_model(model: &ModelArgs) -> Result<PathBuf> {
    let store = ModelStore::new(&hearth_core::hearth_home());
    let mut progress = progress::TerminalProgress::new();
    let path = store
        .resolve(&model.model, true, &mut progress)
        .with_context(|| format!("cannot find model '{}'", model.model))?;
    Ok(path)
}

pub(crate) fn load_engine(model: &ModelArgs) -> Result<Engine> {
    let path = resolve_model(model)?;
    let options = LoadOptions {
        n_threads: model.n_threads(),
    };
    Engine::load(&path, &options).with_context(|| format!("cannot load {}", path.display()))
}

fn sampling_params(args: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        penalty_last_n: 64,
        seed: args.seed,
    }
}

fn chat(model: &ModelArgs, sampling: &SamplingArgs, system: Option<String>) -> Result<ExitCode> {
    let engine = load_engine(model)?;
    let mut sequence = engine.new_sequence(model.ctx);
    let mut messages: Vec<ChatMessage> = system
        .iter()
        .map(|s| ChatMessage::new("system", s.clone()))
        .collect();
    let initial = messages.clone();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!(
        "Chatting with {} (type /reset to start over, /exit or Ctrl-D to quit).",
        model.model
    );
    let mut line = String::new();
    loop {
        eprint!("> ");
        std::io::stderr().flush().ok();
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            break;
        }
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = initial.clone();
                sequence.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", input));
        let prompt_tokens = engine.encode_chat(&messages)?;
        let request = GenerateRequest {
            prompt_tokens,
            max_tokens: sampling.max_tokens,
            sampling: sampling_params(sampling),
            stop: sampling.stop.clone(),
        };
        let result = engine.generate(&mut sequence, &request, &mut |event| {
            print!("{}", event.text);
            stdout.flush().is_ok()
        });
        println!();
        match result {
            Ok(generation) => messages.push(ChatMessage::new("assistant", generation.text)),
            Err(hearth_engine::EngineError::PromptTooLong { .. }) => {
                eprintln!("(the conversation no longer fits the context; /reset to start over)");
                messages.pop();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(
    prompt: &str,
    model: &ModelArgs,
    sampling: &SamplingArgs,
    raw: bool,
    json_out: bool,
) -> Result<ExitCode> {
    let engine = load_engine(model)?;
    let prompt_tokens = if raw {
        engine.tokenizer().encode(prompt, true, false)
    } else {
        engine.encode_chat(&[ChatMessage::new("user", prompt)])?
    };
    if prompt_tokens.is_empty() {
        bail!("the prompt is empty");
    }
    let mut sequence = engine.new_sequence(model.ctx);
    let request = GenerateRequest {
        prompt_tokens: prompt_tokens.clone(),
        max_tokens: sampling.max_tokens,
        sampling: sampling_params(sampling),
        stop: sampling.stop.clone(),
    };
    let mut stdout = std::io::stdout();
    let generation = engine.generate(&mut sequence, &request, &mut |event| {
        if !json_out {
            print!("{}", event.text);
            stdout.flush().is_ok()
        } else {
            true
        }
    })?;
    if let Some(n) = generation.max_tokens_clamped_to {
        eprintln!(
            "note: max tokens clamped to {n} to fit the context of {}",
            sequence.capacity()
        );
    }
    if json_out {
        let t = &generation.timings;
        let out = json!({
            "text": generation.text,
            "tokens": generation.tokens,
            "prompt_tokens": prompt_tokens,
            "finish_reason": generation.finish_reason.as_str(),
            "timings": {
                "prefill_ms": t.prefill_ms,
                "ttft_ms": t.ttft_ms,
                "decode_ms": t.decode_ms,
                "prefill_tok_s": t.prefill_tok_s,
                "decode_tok_s": t.decode_tok_s,
                "prompt_eval_tokens": t.prompt_eval_tokens,
                "decode_eval_tokens": t.decode_eval_tokens,
            },
        });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

fn tokenize(text: &str, model: &ModelArgs, json_out: bool) -> Result<ExitCode> {
    let path = resolve_model(model)?;
    let gguf = hearth_models::GgufFile::open(&path)?;
    let tokenizer = hearth_models::Tokenizer::from_gguf(&gguf)?;
    let tokens = tokenizer.encode(text, true, false);
    if json_out {
        println!("{}", json!({ "tokens": tokens }));
    } else {
        for id in &tokens {
            let piece = String::from_utf8_lossy(tokenizer.token_bytes(*id));
            println!("{id:>8} {piece:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs) -> Result<ExitCode> {
    let model = ModelArgs {
        model: args.model.clone(),
        threads: args.threads,
        ctx: args.context,
    };
    let model_path = resolve_model(&model)?;
    let (embeddings_dir, embeddings_hint) = resolve_embeddings(&args.embeddings);
    if let Some(hint) = &embeddings_hint {
        eprintln!("hearth: embeddings are off: {hint}");
    }
    let config = hearth_server::ServerConfig {
        host: args.host.clone(),
        port: args.port,
        model_id: served_model_id(&args.model, &model_path),
        model_path,
        threads: model.n_threads(),
        api_key: args.api_key.clone(),
        batch: hearth_engine::BatchConfig {
            max_queue: args.max_queue,
            max_running: args.max_running,
            context: args.context,
            kv_blocks: args.kv_blocks,
            ..hearth_engine::BatchConfig::default()
        },
        embeddings_dir,
        embeddings_hint,
        body_limit: args.body_limit,
        telemetry_dir: args.telemetry_dir.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(hearth_server::serve(config))?;
    Ok(ExitCode::SUCCESS)
}

/// The id a model is served under: its store name, or for a file outside
/// the store its file stem (its folder's name for a `model.gguf`).
fn served_model_id(spec: &str, path: &std::path::Path) -> String {
    let store_dir = hearth_core::hearth_home().join("models");
    let in_store = path.parent().and_then(|dir| dir.parent()) == Some(store_dir.as_path());
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let folder = path
        .parent()
        .and_then(|dir| dir.file_name())
        .map(|s| s.to_string_lossy().into_owned());
    match (in_store, stem.as_deref()) {
        (true, _) | (false, Some("model")) => folder.unwrap_or_else(|| spec.to_owned()),
        (false, Some(stem)) => stem.to_owned(),
        (false, None) => spec.to_owned(),
    }
}

/// The embedding model directory for `--embeddings`, or why there is none.
/// Never pulls: a missing model turns embeddings off, it does not stop the server.
fn resolve_embeddings(name: &str) -> (Option<PathBuf>, Option<String>) {
    if name == "none" {
        return (
            None,
            Some("the server was started with --embeddings none".into()),
        );
    }
    let path = std::path::Path::new(name);
    if path.is_dir() {
        return (Some(path.to_path_buf()), None);
    }
    let store = ModelStore::new(&hearth_core::hearth_home());
    match store.resolve(name, false, &mut hearth_models::store::NoProgress) {
        Ok(path) if path.is_dir() => (Some(path), None),
        Ok(path) => (
            None,
            Some(format!(
                "'{name}' is not an embedding model directory ({})",
                path.display()
            )),
        ),
        Err(hearth_models::store::StoreError::NotInstalled { hint, .. }) => (
            None,
            Some(format!(
                "the embedding model '{name}' is not installed; run `{hint}` and restart the server"
            )),
        ),
        Err(e) => (
            None,
            Some(format!(
                "the embedding model '{name}' is not available: {e}"
            )),
        ),
    }
}

fn models(command: ModelsCommand) -> Result<ExitCode> {
    let store = ModelStore::new(&hearth_core::hearth_home());
    match command {
        ModelsCommand::Pull { name } => {
            let mut progress = progress::TerminalProgress::new();
            let installed = store.pull(&name, &mut progress)?;
            println!(
                "installed {} ({}) at {}",
                installed.name,
                human_size(installed.size_bytes),
                installed.path.display()
            );
        }
        ModelsCommand::List { json: json_out } => {
            let installed = store.list()?;
            if json_out {
                let rows: Vec<_> = installed
                    .iter()
                    .map(|m| json!({"name": m.name, "path": m.path, "size_bytes": m.size_bytes}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if installed.is_empty() {
                println!(
                    "no models installed; try `hearth models pull {}`",
                    hearth_models::store::DEFAULT_MODEL
                );
            } else {
                println!("{:<28} {:>10}  PATH", "NAME", "SIZE");
                for m in installed {
                    println!(
                        "{:<28} {:>10}  {}",
                        m.name,
                        human_size(m.size_bytes),
                        m.path.display()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
