//! Durable ingest throughput of the telemetry ingest log, and the cost of
//! parsing wire batches.
//!
//! `ingest_bench [--dir DIR] [--events N] [--batch B] [--threads 1,2] [--syncs 1,2]`
//!
//! For each number of concurrent syncs (`IngestOptions::max_concurrent_syncs`)
//! and writer threads, appends N distinct events in batches of B to a fresh
//! log (every append returns only after its fdatasync) and prints events/s,
//! group commits and append latency. Then the same from JSON request bodies
//! that the writer threads parse first, as the HTTP endpoint does, and the
//! single-thread rates of `parse_json_batch`, `decode_batch` and
//! validation on one batch. The log goes under DIR (default: the system
//! temp dir) and is removed afterwards.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hearth_core::telemetry::{
    Dimensions, EventKind, SCHEMA_VERSION, TelemetryBatch, TelemetryEvent, decode_batch,
    encode_batch, parse_json_batch,
};
use hearth_watch::ingest::{IngestLog, IngestOptions};

const DEVICES: [&str; 6] = [
    "Pixel 7",
    "Pixel 8 Pro",
    "Galaxy S21",
    "Galaxy A14",
    "iPhone 13",
    "iPhone 15 Pro",
];
const LOCALES: [&str; 4] = ["en-US", "de-DE", "ja-JP", "pt-BR"];
const NETWORKS: [&str; 3] = ["wifi", "cellular", "offline"];
const KINDS: [EventKind; 3] = [
    EventKind::Chat,
    EventKind::Completion,
    EventKind::Transcription,
];

/// A realistic event: uuid-sized ids, a few optional measures, a failure
/// now and then.
fn event(run: &str, n: u64, now_ms: i64) -> TelemetryEvent {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let kind = KINDS[(h % 3) as usize];
    let latency_ms = 200.0 + (h % 4000) as f64 * 0.37;
    TelemetryEvent {
        schema_version: SCHEMA_VERSION,
        event_id: format!("{run}-{n:08x}-4f1c-9a2e-{h:012x}"),
        request_id: format!("req-{h:016x}-{n:08x}"),
        timestamp_ms: now_ms - (h % 3_600_000) as i64,
        kind,
        latency_ms,
        ttft_ms: Some(latency_ms * 0.2),
        tokens_per_s: (kind != EventKind::Transcription).then_some(20.0 + (h % 300) as f64 * 0.1),
        audio_rtf: (kind == EventKind::Transcription).then_some(0.3),
        failure: h.is_multiple_of(50).then(|| "timeout".to_owned()),
        peak_memory_mb: Some(300.0 + (h % 500) as f64),
        dims: Dimensions {
            device_model: DEVICES[(h % 6) as usize].to_owned(),
            os_version: format!("Android {}", 12 + h % 3),
            app_version: format!("3.{}.0", h % 4),
            model_version: format!("smollm2-360m-q8@1.{}", h % 3),
            locale: LOCALES[(h % 4) as usize].to_owned(),
            network: NETWORKS[(h % 3) as usize].to_owned(),
        },
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// What the writer threads append: events in memory, or JSON request
/// bodies that each append first parses (as the HTTP endpoint does).
#[derive(Clone, Copy, PartialEq)]
enum Input {
    Events,
    Json,
}

enum Batch {
    Events(Vec<TelemetryEvent>),
    Json(Vec<u8>),
}

struct RunResult {
    input: Input,
    syncs: usize,
    threads: usize,
    events: u64,
    seconds: f64,
    commits: u64,
    bytes: u64,
    p50: Duration,
    p99: Duration,
}

fn run_ingest(
    dir: &std::path::Path,
    input: Input,
    syncs: usize,
    threads: usize,
    total_events: usize,
    batch: usize,
) -> anyhow::Result<RunResult> {
    let now = now_ms();
    let batches_per_thread = total_events.div_ceil(batch * threads);
    let mut work: Vec<Vec<Batch>> = Vec::with_capacity(threads);
    for thread in 0..threads {
        let mut batches = Vec::with_capacity(batches_per_thread);
        for b in 0..batches_per_thread {
            let events: Vec<TelemetryEvent> = (0..batch)
                .map(|i| event(&format!("t{thread}"), (b * batch + i) as u64, now))
                .collect();
            batches.push(match input {
                Input::Events => Batch::Events(events),
                Input::Json => Batch::Json(serde_json::to_vec(&TelemetryBatch { events })?),
            });
        }
        work.push(batches);
    }

    let log_dir = dir.join(format!("ingest-bench-{}-{threads}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    let options = IngestOptions {
        max_concurrent_syncs: syncs,
        ..IngestOptions::default()
    };
    let log = Arc::new(IngestLog::open_with(&log_dir, options)?);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = work
        .into_iter()
        .map(|batches| {
            let log = Arc::clone(&log);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                barrier.wait();
                let mut latencies = Vec::with_capacity(batches.len());
                for batch in &batches {
                    let start = Instant::now();
                    let (report, len) = match batch {
                        Batch::Events(events) => (log.append_batch(events)?, events.len()),
                        Batch::Json(body) => {
                            let items = parse_json_batch(body)?;
                            (log.append_decoded(&items)?, items.len())
                        }
                    };
                    latencies.push(start.elapsed());
                    if report.accepted.len() != len {
                        bail!("{} of {len} events accepted", report.accepted.len());
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Vec::new();
    for handle in handles {
        let thread_latencies = handle
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        latencies.extend(thread_latencies);
    }
    let seconds = start.elapsed().as_secs_f64();
    let stats = log.stats()?;
    drop(log);
    std::fs::remove_dir_all(&log_dir).with_context(|| format!("removing {}", log_dir.display()))?;
    latencies.sort();
    Ok(RunResult {
        input,
        syncs,
        threads,
        events: stats.events,
        seconds,
        commits: stats.commits,
        bytes: stats.bytes,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// Times `f` over repetitions for at least half a second; returns seconds
/// per call.
fn time_per_call(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(500) {
        f()?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(calls))
}

fn main() -> anyhow::Result<()> {
    let mut dir = std::env::temp_dir();
    let mut total_events = 600_000usize;
    let mut batch = 1000usize;
    let mut thread_counts = vec![1usize, 2];
    let mut sync_counts = vec![1usize, 2];
    let usage =
        "usage: ingest_bench [--dir DIR] [--events N] [--batch B] [--threads 1,2] [--syncs 1,2]";
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {usage}"))
        };
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(value()?),
            "--events" => total_events = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--threads" => {
                thread_counts = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--syncs" => {
                sync_counts = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown argument {other}; {usage}"),
        }
    }
    if batch == 0 || thread_counts.contains(&0) || sync_counts.contains(&0) {
        bail!("--batch, --threads and --syncs must be positive");
    }

    println!(
        "durable ingest into {} (batches of {batch}; \"JSON\" parses each body in the writer)",
        dir.display()
    );
    let mut runs: Vec<(Input, usize, usize)> = sync_counts
        .iter()
        .flat_map(|&s| thread_counts.iter().map(move |&t| (Input::Events, s, t)))
        .collect();
    let default_syncs = IngestOptions::default().max_concurrent_syncs;
    runs.extend(
        thread_counts
            .iter()
            .map(|&t| (Input::Json, default_syncs, t)),
    );
    for (input, syncs, threads) in runs {
        let r = run_ingest(&dir, input, syncs, threads, total_events, batch)?;
        let what = match r.input {
            Input::Events => "events",
            Input::Json => "JSON  ",
        };
        println!(
            "  {what} {} sync(s) {} writer(s): {:>8.0} events/s  ({} events in {:.2} s, \
             {} fsyncs, {:.0} events and {:.0} KiB per fsync, {:.0} B/event; \
             append p50 {:.1} ms, p99 {:.1} ms)",
            r.syncs,
            r.threads,
            r.events as f64 / r.seconds,
            r.events,
            r.seconds,
            r.commits,
            r.events as f64 / r.commits as f64,
            r.bytes as f64 / r.commits as f64 / 1024.0,
            r.bytes as f64 / r.events as f64,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        );
    }

    let now = now_ms();
    let events: Vec<TelemetryEvent> = (0..batch as u64).map(|n| event("p", n, now)).collect();
    let json = serde_json::to_vec(&TelemetryBatch {
        events: events.clone(),
    })?;
    let binary = encode_batch(&events);
    let json_s = time_per_call(|| {
        let parsed = parse_json_batch(&json)?;
        anyhow::ensure!(parsed.iter().all(Result::is_ok));
        Ok(())
    })?;
    let binary_s = time_per_call(|| {
        let decoded = decode_batch(&binary)?;
        anyhow::ensure!(decoded.iter().all(Result::is_ok));
        Ok(())
    })?;
    let validate_s = time_per_call(|| {
        anyhow::ensure!(events.iter().all(|e| e.validate(now).is_ok()));
        Ok(())
    })?;
    let per_event = |s: f64| batch as f64 / s;
    println!("wire parsing, one thread, batch of {batch}:");
    println!(
        "  JSON   parse_json_batch: {:>9.0} events/s ({:.0} MB/s, {:.0} B/event)",
        per_event(json_s),
        json.len() as f64 / json_s / 1e6,
        json.len() as f64 / batch as f64
    );
    println!(
        "  binary decode_batch:     {:>9.0} events/s ({:.0} MB/s, {:.0} B/event)",
        per_event(binary_s),
        binary.len() as f64 / binary_s / 1e6,
        binary.len() as f64 / batch as f64
    );
    println!(
        "  validate:                {:>9.0} events/s",
        per_event(validate_s)
    );
    Ok(())
}
