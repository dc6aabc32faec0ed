//! Prometheus metrics in the text exposition format, written by hand.
//!
//! The server keeps its own counters (requests by route and status, token
//! latencies as the handlers receive tokens, a tokens-per-second window) and
//! reads the scheduler's through [`hearth_engine::BatchStats`] at scrape
//! time. Everything is atomics or short critical sections: recording never
//! waits on a scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Upper bounds (seconds) of the time-to-first-token histogram.
const TTFT_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds (seconds) of the inter-token latency histogram.
const ITL_BUCKETS: &[f64] = &[0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// The tokens-per-second gauge averages over this many whole seconds.
const RATE_WINDOW_SECONDS: u64 = 10;

/// The server's own counters.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    time_to_first_token: Histogram,
    inter_token_latency: Histogram,
    token_rate: RateWindow,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            token_rate: RateWindow::new(RATE_WINDOW_SECONDS),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, endpoint: &str, status: u16) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint.to_owned(), status)).or_default() += 1;
        }
    }

    /// A request's first token arrived `elapsed` after the request did.
    pub fn record_first_token(&self, elapsed: Duration) {
        self.time_to_first_token.observe(elapsed.as_secs_f64());
        self.token_rate.add(1);
    }

    /// A later token arrived `gap` after the previous one.
    pub fn record_next_token(&self, gap: Duration) {
        self.inter_token_latency.observe(gap.as_secs_f64());
        self.token_rate.add(1);
    }

    /// The exposition text: the server's counters and the scheduler's.
    pub fn render(&self, state: &AppState) -> String {
        let stats = state.batch().stats();
        let config = state.batch().config();
        let mut out = String::new();
        out.push_str(
            "# HELP hearth_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE hearth_http_requests_total counter\n",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "hearth_http_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {count}",
                    escape_label(endpoint)
                );
            }
        }
        let gauges: [(&str, &str, &str, f64); 11] = [
            (
                "hearth_queue_depth",
                "gauge",
                "Requests waiting for admission.",
                stats.queued as f64,
            ),
            (
                "hearth_queue_capacity",
                "gauge",
                "Most requests that may wait.",
                config.max_queue as f64,
            ),
            (
                "hearth_running_sequences",
                "gauge",
                "Sequences being generated.",
                stats.running as f64,
            ),
            (
                "hearth_kv_blocks_used",
                "gauge",
                "KV cache blocks in use.",
                stats.kv_blocks_used as f64,
            ),
            (
                "hearth_kv_blocks_total",
                "gauge",
                "KV cache blocks in the pool.",
                stats.kv_blocks_total as f64,
            ),
            (
                "hearth_prefix_cache_hit_tokens_total",
                "counter",
                "Prompt tokens served from the prefix cache.",
                stats.prefix_cache_hit_tokens as f64,
            ),
            (
                "hearth_prompt_tokens_evaluated_total",
                "counter",
                "Prompt tokens evaluated.",
                stats.prompt_tokens_evaluated as f64,
            ),
            (
                "hearth_generated_tokens_total",
                "counter",
                "Tokens generated.",
                stats.generated_tokens as f64,
            ),
            (
                "hearth_scheduler_steps_total",
                "counter",
                "Forward steps run.",
                stats.steps as f64,
            ),
            (
                "hearth_generation_tokens_per_second",
                "gauge",
                "Tokens delivered per second over the last 10 s.",
                self.token_rate.per_second(),
            ),
            (
                "hearth_uptime_seconds",
                "gauge",
                "Seconds since the server started.",
                state.uptime().as_secs_f64(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        self.time_to_first_token.render(
            &mut out,
            "hearth_time_to_first_token_seconds",
            "Request arrival to first generated token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "hearth_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a request.",
        );
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the `+Inf` bucket; not cumulative.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, seconds: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((seconds * 1e6).round() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Events per second over the last whole seconds, kept in a ring of
/// one-second slots.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    window: u64,
    /// `(second since start, count in that second)`.
    slots: Mutex<Vec<(u64, u64)>>,
}

impl RateWindow {
    fn new(window: u64) -> Self {
        Self {
            start: Instant::now(),
            window,
            slots: Mutex::new(vec![(u64::MAX, 0); window as usize + 1]),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    fn add(&self, n: u64) {
        let second = self.now();
        if let Ok(mut slots) = self.slots.lock() {
            let len = slots.len() as u64;
            if let Some(slot) = slots.get_mut((second % len) as usize) {
                if slot.0 != second {
                    *slot = (second, 0);
                }
                slot.1 += n;
            }
        }
    }

    /// The mean over the `window` whole seconds before the current one.
    fn per_second(&self) -> f64 {
        let now = self.now();
        let oldest = now.saturating_sub(self.window);
        let total: u64 = match self.slots.lock() {
            Ok(slots) => slots
                .iter()
                .filter(|(second, _)| *second >= oldest && *second < now)
                .map(|(_, count)| count)
                .sum(),
            Err(_) => 0,
        };
        total as f64 / self.window as f64
    }
}

/// Middleware: counts each response by its route template and status.
pub async fn track(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = matched
        .as_ref()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let response = next.run(request).await;
    state
        .metrics()
        .record_request(&endpoint, response.status().as_u16());
    response
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let body = state.metrics().render(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::new(&[0.1, 1.0]);
        for seconds in [0.05, 0.5, 0.7, 3.0] {
            histogram.observe(seconds);
        }
        let mut out = String::new();
        histogram.render(&mut out, "h", "test");
        assert!(out.contains("h_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("h_count 4\n"), "{out}");
        assert!(out.contains("h_sum 4.25\n"), "{out}");
    }

    #[test]
    fn rate_window_ignores_the_current_second() {
        let rate = RateWindow::new(10);
        rate.add(50);
        // Only whole past seconds count; this second is still filling.
        assert!(rate.per_second() <= 5.0);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
