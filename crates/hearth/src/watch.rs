//! `hearth watch`: fleet telemetry — simulate, ingest, detect, list and
//! explain alerts, and score the detector on NAB.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hearth_core::TelemetryEvent;
use hearth_core::telemetry::{BATCH_MAGIC, decode_batch, parse_json_batch};
use hearth_watch::aggregate::Aggregates;
use hearth_watch::alerts::{AlertBook, AlertRecord, LifecyclePolicy, Transition};
use hearth_watch::ingest::IngestLog;
use hearth_watch::pipeline::{self, Alert, PipelineConfig, SeriesPoint, slice_label};
use hearth_watch::simulate::{self, FleetConfig, Injection};
use hearth_watch::webhook::{self, WebhookConfig};
use serde_json::json;

/// Bucket length of `hearth watch detect`: five minutes.
const BUCKET_MS: i64 = 300_000;
/// Events per append (one durable commit each).
const INGEST_BATCH: usize = 20_000;

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Score the detector on the Numenta Anomaly Benchmark.
    Nab {
        /// The NAB directory (data/, labels/, config/).
        #[arg(long)]
        data: PathBuf,
        /// Print `{"standard", "low_fp", "low_fn"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Simulate a fleet's telemetry as JSON lines, optionally with a
    /// regression injected.
    Simulate {
        /// Output file (one event per line).
        #[arg(long)]
        out: PathBuf,
        /// Hours simulated.
        #[arg(long, default_value_t = 48)]
        hours: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Regression to inject (repeatable): `older-phone-ttft` (model 1.4
        /// slows time to first token 1.8× on older phones) or
        /// `cellular-failures` (app 2.7.0 on cellular fails 15 % more
        /// requests).
        #[arg(long)]
        inject: Vec<String>,
        /// When the injections start, in hours from the beginning (default:
        /// three quarters of the span).
        #[arg(long)]
        inject_at_hours: Option<f64>,
        /// Mean requests per minute.
        #[arg(long, default_value_t = 60.0)]
        rate: f64,
    },
    /// Append events to the durable ingest log in DIR: a file of JSON lines,
    /// a JSON batch `{"events": [...]}`, or a binary batch.
    Ingest {
        file: PathBuf,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Detect and explain regressions over the log in DIR; updates
    /// DIR/alerts.json and prints a summary.
    Detect {
        #[arg(long)]
        dir: PathBuf,
        /// Print the alerts as JSON.
        #[arg(long)]
        json: bool,
        /// POST each opened, reopened or resolved alert to this URL as JSON
        /// (retried with backoff).
        #[arg(long)]
        webhook: Option<String>,
    },
    /// List the alerts in DIR/alerts.json.
    Alerts {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert (by id or a unique id prefix).
    Ack {
        id: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show an alert's evidence and write a plot of the metric over time
    /// next to the alerts (DIR/alert-ID.svg).
    Explain {
        id: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: WatchCommand) -> Result<ExitCode> {
    match command {
        WatchCommand::Nab { data, json } => nab(&data, json),
        WatchCommand::Simulate {
            out,
            hours,
            seed,
            inject,
            inject_at_hours,
            rate,
        } => simulate_to(&out, hours, seed, &inject, inject_at_hours, rate),
        WatchCommand::Ingest { file, dir } => ingest(&file, &dir),
        WatchCommand::Detect { dir, json, webhook } => detect(&dir, json, webhook.as_deref()),
        WatchCommand::Alerts { dir, json } => alerts(&dir, json),
        WatchCommand::Ack { id, dir } => acknowledge(&id, &dir),
        WatchCommand::Explain { id, dir, json } => explain(&id, &dir, json),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn nab(data: &Path, json_out: bool) -> Result<()> {
    let scores = hearth_watch::run_nab(data)
        .with_context(|| format!("scoring NAB in {}", data.display()))?;
    if json_out {
        println!(
            "{}",
            json!({"standard": scores.standard, "low_fp": scores.low_fp, "low_fn": scores.low_fn})
        );
    } else {
        println!("standard {:.1}", scores.standard);
        println!("low_fp   {:.1}", scores.low_fp);
        println!("low_fn   {:.1}", scores.low_fn);
    }
    Ok(())
}

fn injection(name: &str, when_ms: i64) -> Result<Injection> {
    Ok(match name {
        "older-phone-ttft" => simulate::older_phone_ttft(when_ms),
        "cellular-failures" => Injection {
            failure_rate_add: 0.15,
            ..Injection::new(
                when_ms,
                &[("network", "cellular"), ("app_version", "2.7.0")],
            )
        },
        other => {
            bail!("unknown injection {other:?}: expected older-phone-ttft or cellular-failures")
        }
    })
}

fn simulate_to(
    out: &Path,
    hours: u32,
    seed: u64,
    inject: &[String],
    inject_at_hours: Option<f64>,
    rate: f64,
) -> Result<()> {
    let mut config = FleetConfig {
        seed,
        hours,
        requests_per_minute: rate,
        ..FleetConfig::default()
    };
    let at_hours = inject_at_hours.unwrap_or(f64::from(hours) * 0.75);
    let when_ms = config.start_ms + (at_hours * 3_600_000.0) as i64;
    for name in inject {
        config.injections.push(injection(name, when_ms)?);
    }
    let events = simulate::simulate(&config);
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    for event in &events {
        serde_json::to_writer(&mut writer, event)?;
        writer.write_all(b"\n")?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "hearth: {} events over {hours} h written to {}{}",
        events.len(),
        out.display(),
        if inject.is_empty() {
            String::new()
        } else {
            format!(" ({} injected at +{at_hours} h)", inject.join(", "))
        }
    );
    Ok(())
}

/// Reads a file of events: binary batch, JSON batch, or JSON lines. Items
/// that do not parse are kept as errors so the log reports them.
fn read_events(file: &Path) -> Result<Vec<Result<TelemetryEvent, String>>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if bytes.starts_with(&BATCH_MAGIC) {
        return decode_batch(&bytes).with_context(|| format!("decoding {}", file.display()));
    }
    let first = bytes
        .iter()
        .copied()
        .find(|byte| !byte.is_ascii_whitespace());
    if first == Some(b'{')
        && let Ok(batch) = parse_json_batch(&bytes)
    {
        return Ok(batch);
    }
    let mut items = Vec::new();
    for (number, line) in BufReader::new(bytes.as_slice()).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        items.push(
            serde_json::from_str::<TelemetryEvent>(&line)
                .map_err(|error| format!("line {}: {error}", number + 1)),
        );
    }
    Ok(items)
}

fn ingest(file: &Path, dir: &Path) -> Result<()> {
    let items = read_events(file)?;
    let log =
        IngestLog::open(dir).with_context(|| format!("opening the log in {}", dir.display()))?;
    let (mut accepted, mut duplicates, mut rejected) = (0, 0, 0);
    for (chunk_index, chunk) in items.chunks(INGEST_BATCH).enumerate() {
        let report = log.append_decoded(chunk)?;
        accepted += report.accepted.len();
        duplicates += report.duplicates.len();
        for (position, reason) in &report.rejected {
            if rejected < 10 {
                eprintln!(
                    "hearth: event {} rejected: {reason}",
                    chunk_index * INGEST_BATCH + position + 1
                );
            }
            rejected += 1;
        }
    }
    println!("ingested {accepted} events ({duplicates} duplicates, {rejected} rejected)");
    Ok(())
}

fn detect(dir: &Path, json_out: bool, webhook: Option<&str>) -> Result<()> {
    let log =
        IngestLog::open(dir).with_context(|| format!("opening the log in {}", dir.display()))?;
    let events = log.read_all()?;
    drop(log);
    let aggregates = Aggregates::build(&events, BUCKET_MS)?;
    let report = pipeline::run(&aggregates, &PipelineConfig::default())?;
    let policy = LifecyclePolicy::default();
    let mut book = AlertBook::load(dir)?;
    let mut events_out: Vec<(String, &'static str)> = Vec::new();
    for alert in &report.alerts {
        match book.observe(alert, alert.last_ms, &policy) {
            Transition::Opened => events_out.push((alert.id.clone(), "opened")),
            Transition::Reopened => events_out.push((alert.id.clone(), "reopened")),
            Transition::Updated => {}
        }
    }
    let end_ms = aggregates.bucket_start(aggregates.len());
    for id in book.tick(end_ms, &policy) {
        events_out.push((id, "resolved"));
    }
    book.save(dir)?;
    if let Some(url) = webhook {
        let config = WebhookConfig::new(url);
        for (id, event) in &events_out {
            let Some(record) = book.get(id) else { continue };
            // A failed delivery is reported; the alerts are saved anyway.
            match webhook::notify(&config, event, record) {
                Ok(delivery) => eprintln!(
                    "hearth: webhook {event} {id}: {} after {} tries",
                    delivery.status, delivery.attempts
                ),
                Err(error) => eprintln!("hearth: webhook {event} {id}: {error}"),
            }
        }
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report.alerts)?);
        return Ok(());
    }
    println!(
        "{} events, {} buckets of 5 min, {} series watched, {} detections, {} alerts",
        events.len(),
        report.buckets,
        report.series,
        report.detections.len(),
        report.alerts.len()
    );
    for alert in &report.alerts {
        println!("{}", alert_line(alert));
    }
    Ok(())
}

fn format_value(alert: &Alert, value: f64) -> String {
    match alert.metric {
        pipeline::Metric::FailureRate => format!("{:.2} %", value * 100.0),
        _ => format!("{value:.0} ms"),
    }
}

fn format_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1_000);
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

fn alert_line(alert: &Alert) -> String {
    format!(
        "{}  {}  {} → {} ({:+.0} %)  onset {}  cause {}",
        alert.id,
        alert.metric,
        format_value(alert, alert.baseline),
        format_value(alert, alert.current),
        alert.relative_change * 100.0,
        format_time(alert.onset_ms),
        alert.root_cause_label()
    )
}

fn alerts(dir: &Path, json_out: bool) -> Result<()> {
    let book = AlertBook::load(dir)?;
    if json_out {
        let rows: Vec<_> = book
            .records
            .iter()
            .map(|record| {
                json!({
                    "id": record.id,
                    "state": record.state,
                    "metric": record.alert.metric,
                    "onset_ms": record.alert.onset_ms,
                    "baseline": record.alert.baseline,
                    "current": record.alert.current,
                    "relative_change": record.alert.relative_change,
                    "confidence": record.alert.confidence,
                    "root_cause": record.alert.root_cause,
                    "occurrences": record.occurrences,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if book.records.is_empty() {
        println!("no alerts");
    }
    for record in &book.records {
        println!(
            "{:<12} {}",
            format!("{:?}", record.state).to_lowercase(),
            alert_line(&record.alert)
        );
    }
    Ok(())
}

fn find<'a>(book: &'a AlertBook, id: &str) -> Result<&'a AlertRecord> {
    match book.find_prefix(id).as_slice() {
        [record] => Ok(record),
        [] => bail!("no alert with id {id:?}"),
        _ => bail!("{id:?} matches several alerts; give more of the id"),
    }
}

fn acknowledge(id: &str, dir: &Path) -> Result<()> {
    let mut book = AlertBook::load(dir)?;
    let full = find(&book, id)?.id.clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    let state = book.acknowledge(&full, now_ms)?;
    book.save(dir)?;
    println!("{full}: {}", format!("{state:?}").to_lowercase());
    Ok(())
}

fn explain(id: &str, dir: &Path, json_out: bool) -> Result<()> {
    let book = AlertBook::load(dir)?;
    let record = find(&book, id)?;
    let alert = &record.alert;
    let plot = dir.join(format!("alert-{}.svg", alert.id));
    std::fs::write(&plot, svg_plot(alert))
        .with_context(|| format!("writing {}", plot.display()))?;
    if json_out {
        println!(
            "{}",
            json!({
                "id": alert.id,
                "state": record.state,
                "metric": alert.metric,
                "baseline": alert.baseline,
                "current": alert.current,
                "relative_change": alert.relative_change,
                "onset_ms": alert.onset_ms,
                "detected_ms": alert.detected_ms,
                "confidence": alert.confidence,
                "root_cause": alert.root_cause,
                "explained": alert.explained,
                "fired": alert.fired,
                "plot": plot,
            })
        );
        return Ok(());
    }
    let mut text = String::new();
    let _ = writeln!(text, "alert      {} ({:?})", alert.id, record.state);
    let _ = writeln!(text, "metric     {}", alert.metric);
    let _ = writeln!(
        text,
        "magnitude  {} → {} ({:+.1} %)",
        format_value(alert, alert.baseline),
        format_value(alert, alert.current),
        alert.relative_change * 100.0
    );
    let _ = writeln!(text, "onset      {}", format_time(alert.onset_ms));
    let _ = writeln!(
        text,
        "detected   {} ({} min after the onset)",
        format_time(alert.detected_ms),
        (alert.detected_ms - alert.onset_ms) / 60_000
    );
    let _ = writeln!(text, "confidence {:.4}", alert.confidence);
    let _ = writeln!(
        text,
        "root cause (explains {:.0} % of the change):",
        alert.explained * 100.0
    );
    for cause in &alert.root_cause {
        let _ = writeln!(
            text,
            "  {}  share {:.0} %  {} → {}  confidence {:.3}",
            slice_label(&cause.slice),
            cause.share * 100.0,
            format_value(alert, cause.baseline),
            format_value(alert, cause.current),
            cause.confidence
        );
    }
    let fired: Vec<String> = alert
        .fired
        .iter()
        .take(8)
        .map(|(slice, count)| format!("{slice} ({count})"))
        .collect();
    let _ = writeln!(text, "series that fired: {}", fired.join(", "));
    let _ = writeln!(
        text,
        "total      {}",
        sparkline(&alert.total_series, alert.onset_ms)
    );
    if let Some(cause) = alert.root_cause.first() {
        let _ = writeln!(
            text,
            "{:<10} {}",
            "cause",
            sparkline(&alert.cause_series, alert.onset_ms)
        );
        let _ = writeln!(text, "           (cause: {})", slice_label(&cause.slice));
    }
    let _ = writeln!(text, "plot       {}", plot.display());
    print!("{text}");
    Ok(())
}

const SPARK_WIDTH: usize = 72;

/// The series as one line of block characters, `|` at the onset.
fn sparkline(series: &[SeriesPoint], onset_ms: i64) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if series.is_empty() {
        return String::new();
    }
    let per = series.len().div_ceil(SPARK_WIDTH).max(1);
    let columns: Vec<(i64, f64)> = series
        .chunks(per)
        .map(|chunk| {
            let mean = chunk.iter().map(|point| point.value).sum::<f64>() / chunk.len() as f64;
            (chunk[0].time_ms, mean)
        })
        .collect();
    let low = columns.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
    let high = columns
        .iter()
        .map(|c| c.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (high - low).max(f64::MIN_POSITIVE);
    let mut line = String::new();
    let mut marked = false;
    for (time_ms, value) in columns {
        if !marked && time_ms >= onset_ms {
            line.push('|');
            marked = true;
        }
        let level = (((value - low) / span) * 7.0).round().clamp(0.0, 7.0) as usize;
        line.push(BLOCKS[level]);
    }
    line
}

/// An SVG plot: the fleet total and the root-cause slice over time, each in
/// its own panel, the onset marked.
fn svg_plot(alert: &Alert) -> String {
    const WIDTH: f64 = 900.0;
    const PANEL: f64 = 200.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 40.0;
    let mut panels = vec![("fleet total".to_owned(), &alert.total_series)];
    if let Some(cause) = alert.root_cause.first() {
        panels.push((slice_label(&cause.slice), &alert.cause_series));
    }
    let height = TOP + panels.len() as f64 * (PANEL + 40.0) + 20.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{} {}: {} → {} from {}</text>\n",
        escape(&alert.id),
        alert.metric,
        format_value(alert, alert.baseline),
        format_value(alert, alert.current),
        format_time(alert.onset_ms)
    );
    let all: Vec<&SeriesPoint> = panels
        .iter()
        .flat_map(|(_, series)| series.iter())
        .collect();
    let t0 = all
        .iter()
        .map(|p| p.time_ms)
        .min()
        .unwrap_or(alert.onset_ms);
    let t1 = all
        .iter()
        .map(|p| p.time_ms)
        .max()
        .unwrap_or(alert.onset_ms)
        .max(t0 + 1);
    let plot_width = WIDTH - LEFT - 20.0;
    let x_of = |time_ms: i64| LEFT + (time_ms - t0) as f64 / (t1 - t0) as f64 * plot_width;
    for (index, (title, series)) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL + 40.0);
        let low = series.iter().map(|p| p.value).fold(f64::INFINITY, f64::min);
        let high = series
            .iter()
            .map(|p| p.value)
            .fold(f64::NEG_INFINITY, f64::max);
        let (low, high) = if low.is_finite() && high > low {
            (low, high)
        } else {
            (0.0, 1.0)
        };
        let y_of = |value: f64| top + PANEL - (value - low) / (high - low) * PANEL;
        let _ = writeln!(
            svg,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_width}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{LEFT}\" y=\"{}\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            top - 6.0,
            escape(title),
            LEFT - 4.0,
            top + 10.0,
            escape(&format_value(alert, high)),
            LEFT - 4.0,
            top + PANEL,
            escape(&format_value(alert, low)),
        );
        let points: Vec<String> = series
            .iter()
            .map(|p| format!("{:.1},{:.1}", x_of(p.time_ms), y_of(p.value)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.2\" points=\"{}\"/>",
            points.join(" ")
        );
        let onset = x_of(alert.onset_ms);
        let _ = writeln!(
            svg,
            "<line x1=\"{onset:.1}\" y1=\"{top}\" x2=\"{onset:.1}\" y2=\"{}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>\n\
             <text x=\"{:.1}\" y=\"{}\" fill=\"#d62728\">onset</text>",
            top + PANEL,
            onset + 4.0,
            top + 14.0
        );
    }
    let axis = TOP + panels.len() as f64 * (PANEL + 40.0) - 24.0;
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{axis}\">{}</text>\n<text x=\"{}\" y=\"{axis}\" text-anchor=\"end\">{}</text>",
        format_time(t0),
        LEFT + plot_width,
        format_time(t1)
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
