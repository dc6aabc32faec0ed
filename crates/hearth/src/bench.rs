//! `hearth bench`: prompt processing and decode throughput, time to first
//! token and peak memory, for comparison with llama.cpp's `llama-bench`
//! (same work: a prompt of N tokens evaluated at once, then M tokens decoded
//! one at a time).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use hearth_engine::sampling::argmax;
use serde_json::json;

use crate::cli::BenchArgs;

const FILLER: &str = "The old lighthouse keeper climbed the spiral stairs every evening, \
counting the steps as the sea wind rattled the windows. Ships passed far out on the \
horizon while gulls circled the rocks below, and the lamp turned its slow bright circle \
over the water until morning came again. ";

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if args.prompt_tokens == 0 || args.repetitions == 0 {
        bail!("--prompt-tokens and --repetitions must be at least 1");
    }
    let engine = crate::load_engine(&args.model)?;
    let model = engine.model();
    let threads = args.model.n_threads();
    let mut prompt = Vec::with_capacity(args.prompt_tokens);
    let filler = engine.tokenizer().encode(FILLER, false, false);
    if filler.is_empty() {
        bail!("the tokenizer produced no tokens for the benchmark text");
    }
    while prompt.len() < args.prompt_tokens {
        prompt.extend_from_slice(&filler);
    }
    prompt.truncate(args.prompt_tokens);
    let context = args.prompt_tokens + args.gen_tokens + 1;
    if context > model.config().context_length {
        bail!(
            "prompt plus generated tokens ({context}) exceed the model's context ({})",
            model.config().context_length
        );
    }

    let (mut prefill, mut decode, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    let mut logits = Vec::new();
    // One warm-up run so that page faults of the mapping are not measured.
    for rep in 0..=args.repetitions {
        let mut cache = model.new_cache(context);
        let start = Instant::now();
        model.forward(&prompt, &mut cache, false, &mut logits)?;
        let mut token = argmax(&logits);
        let prefill_s = start.elapsed().as_secs_f64();
        let decode_start = Instant::now();
        for _ in 0..args.gen_tokens {
            model.forward(&[token], &mut cache, false, &mut logits)?;
            token = argmax(&logits);
        }
        let decode_s = decode_start.elapsed().as_secs_f64();
        if rep == 0 {
            continue;
        }
        prefill.push(args.prompt_tokens as f64 / prefill_s);
        ttft.push(prefill_s * 1e3);
        if args.gen_tokens > 0 {
            decode.push(args.gen_tokens as f64 / decode_s);
        }
        if !args.json {
            eprintln!(
                "run {rep}/{}: prefill {:.1} tok/s, decode {:.1} tok/s",
                args.repetitions,
                prefill.last().copied().unwrap_or(0.0),
                decode.last().copied().unwrap_or(0.0)
            );
        }
    }
    let peak_rss_mb = peak_rss_mb();
    let out = json!({
        "model": args.model.model,
        "threads": threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "repetitions": args.repetitions,
        "prefill_tok_s": median(&mut prefill),
        "decode_tok_s": median(&mut decode),
        "ttft_ms": median(&mut ttft),
        "peak_rss_mb": peak_rss_mb,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "prefill {:.1} tok/s | decode {:.1} tok/s | ttft {:.1} ms | peak RSS {:.1} MB ({} threads, pp{} tg{})",
            median(&mut prefill),
            median(&mut decode),
            median(&mut ttft),
            peak_rss_mb,
            threads,
            args.prompt_tokens,
            args.gen_tokens
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Peak resident set size of this process in MB (VmHWM), 0 where unknown.
fn peak_rss_mb() -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0.0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
