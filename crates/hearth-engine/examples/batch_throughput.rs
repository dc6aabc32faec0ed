//! Aggregate decode throughput of the batching scheduler at several
//! concurrencies (no HTTP): `cargo run --release -p hearth-engine --example
//! batch_throughput -- MODEL.gguf [THREADS] [1,4,16]`.

use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Instant;

use hearth_engine::{BatchConfig, BatchEngine, BatchRequest, Engine, Event, SamplingParams};
use hearth_models::{ChatMessage, LoadOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: batch_throughput MODEL.gguf [THREADS]"))?;
    let n_threads = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let levels: Vec<usize> = match args.next() {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 4, 16],
    };
    let engine = Arc::new(Engine::load(path.as_ref(), &LoadOptions { n_threads })?);
    for &concurrency in &levels {
        let batch = BatchEngine::start(
            engine.clone(),
            BatchConfig {
                max_running: concurrency,
                context: 2048,
                ..BatchConfig::default()
            },
        )?;
        let start = Instant::now();
        let receivers: Vec<_> = (0..concurrency)
            .map(|i| {
                let prompt = engine
                    .encode_chat(&[ChatMessage::new(
                        "user",
                        format!("Write a long story number {i} about a lighthouse."),
                    )])
                    .expect("prompt");
                let (tx, rx) = channel();
                batch
                    .submit(BatchRequest {
                        prompt_tokens: prompt,
                        max_tokens: Some(64),
                        sampling: SamplingParams::default(),
                        stop: Vec::new(),
                        filter: None,
                        sink: Box::new(tx),
                    })
                    .expect("submit");
                rx
            })
            .collect();
        let mut tokens = 0;
        for rx in receivers {
            for ev in rx {
                match ev {
                    Event::Token { .. } => tokens += 1,
                    Event::Done(_) => break,
                    Event::Error(e) => anyhow::bail!(e),
                    Event::Text(_) => {}
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = batch.stats();
        println!(
            "concurrency {concurrency:>2}: {tokens} tokens in {secs:.2} s = {:.1} tok/s ({} steps)",
            tokens as f64 / secs,
            stats.steps
        );
    }
    Ok(())
}
