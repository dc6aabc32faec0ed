//! A deterministic fleet simulator: realistic assistant telemetry with
//! regressions injected into chosen slices.
//!
//! The fleet is a fixed mix of device classes, OS and app versions, locales
//! and networks; model version 1.4 rolls out gradually over 1.3. Traffic
//! follows a daily cycle, time to first token and generation time are
//! lognormal per device class, and a base share of requests fails. Each
//! [`Injection`] changes the requests of one slice from a given time on,
//! which is the ground truth a detector and a localiser are tested against.
//! The same seed always yields the same events, so tests can assert exact
//! outcomes.

use hearth_core::telemetry::{Dimensions, EventKind, SCHEMA_VERSION, TelemetryEvent};

/// 2026-01-05T00:00:00Z, a Monday, in Unix milliseconds.
pub const DEFAULT_START_MS: i64 = 1_767_571_200_000;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// A regression injected into a slice from `when_ms` on.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Unix milliseconds from which the change applies.
    pub when_ms: i64,
    /// Conditions `(dimension, value)` a request must all meet to be
    /// affected; dimension names as in [`Dimensions::pairs`].
    pub slice: Vec<(String, String)>,
    /// Multiplies time to first token.
    pub ttft_factor: f64,
    /// Multiplies generation time (latency is time to first token plus
    /// generation time, so a slower first token also slows latency).
    pub latency_factor: f64,
    /// Added to the failure probability.
    pub failure_rate_add: f64,
}

impl Injection {
    /// An injection that changes nothing yet, for `slice` from `when_ms`.
    pub fn new(when_ms: i64, slice: &[(&str, &str)]) -> Self {
        Injection {
            when_ms,
            slice: slice
                .iter()
                .map(|(dim, value)| ((*dim).to_owned(), (*value).to_owned()))
                .collect(),
            ttft_factor: 1.0,
            latency_factor: 1.0,
            failure_rate_add: 0.0,
        }
    }

    /// Whether the injection affects a request with `dims` at `time_ms`.
    pub fn applies(&self, dims: &Dimensions, time_ms: i64) -> bool {
        time_ms >= self.when_ms
            && self.slice.iter().all(|(dim, value)| {
                dims.pairs()
                    .iter()
                    .any(|(name, actual)| name == dim && actual == value)
            })
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub seed: u64,
    /// First timestamp, Unix milliseconds.
    pub start_ms: i64,
    /// Length of the simulated span, in hours.
    pub hours: u32,
    /// Mean requests per minute over a day (the daily cycle swings ±60 %).
    pub requests_per_minute: f64,
    /// Share of requests on model 1.4 at the start and at the end of the
    /// span (linear in between).
    pub rollout: (f64, f64),
    /// Probability that a request fails, before injections.
    pub base_failure_rate: f64,
    pub injections: Vec<Injection>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            seed: 1,
            start_ms: DEFAULT_START_MS,
            hours: 48,
            requests_per_minute: 60.0,
            rollout: (0.2, 0.6),
            base_failure_rate: 0.02,
            injections: Vec::new(),
        }
    }
}

/// One device class: its traffic weight, median time to first token and
/// generation time (ms), and the OS versions it runs.
struct DeviceClass {
    name: &'static str,
    weight: f64,
    ttft_ms: f64,
    generation_ms: f64,
    os_versions: &'static [(&'static str, f64)],
}

const DEVICES: [DeviceClass; 5] = [
    DeviceClass {
        name: "flagship-phone",
        weight: 0.25,
        ttft_ms: 180.0,
        generation_ms: 1_500.0,
        os_versions: &[("ios-18", 0.5), ("android-15", 0.5)],
    },
    DeviceClass {
        name: "mid-phone",
        weight: 0.30,
        ttft_ms: 320.0,
        generation_ms: 2_500.0,
        os_versions: &[("android-14", 0.6), ("android-15", 0.4)],
    },
    DeviceClass {
        name: "older-phone",
        weight: 0.15,
        ttft_ms: 650.0,
        generation_ms: 4_000.0,
        os_versions: &[("android-12", 0.4), ("android-13", 0.3), ("ios-16", 0.3)],
    },
    DeviceClass {
        name: "tablet",
        weight: 0.12,
        ttft_ms: 280.0,
        generation_ms: 2_200.0,
        os_versions: &[("ios-18", 0.6), ("android-14", 0.4)],
    },
    DeviceClass {
        name: "laptop",
        weight: 0.18,
        ttft_ms: 150.0,
        generation_ms: 1_200.0,
        os_versions: &[("macos-15", 0.5), ("windows-11", 0.5)],
    },
];

const APP_VERSIONS: [(&str, f64); 3] = [("2.6.0", 0.2), ("2.7.0", 0.35), ("2.8.0", 0.45)];
const LOCALES: [(&str, f64); 5] = [
    ("en-US", 0.35),
    ("en-GB", 0.10),
    ("de-DE", 0.15),
    ("fr-FR", 0.15),
    ("ja-JP", 0.25),
];
const NETWORKS: [(&str, f64); 3] = [("wifi", 0.6), ("cellular", 0.3), ("offline", 0.1)];
const FAILURE_CODES: [(&str, f64); 3] = [("timeout", 0.5), ("oom", 0.3), ("model_load", 0.2)];
const TTFT_SIGMA: f64 = 0.35;
const GENERATION_SIGMA: f64 = 0.4;

/// SplitMix64: small, fast and good enough for simulation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Lognormal with the given median and log-scale standard deviation.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson with mean `lambda` (normal approximation above 30).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut product = self.uniform();
        let mut count = 0;
        while product > limit {
            product *= self.uniform();
            count += 1;
        }
        count
    }

    fn pick<'a>(&mut self, choices: &[(&'a str, f64)]) -> &'a str {
        let total: f64 = choices.iter().map(|(_, weight)| weight).sum();
        let mut target = self.uniform() * total;
        for (name, weight) in choices {
            if target < *weight {
                return name;
            }
            target -= weight;
        }
        choices.last().map_or("unknown", |(name, _)| name)
    }
}

/// Relative traffic at `time_ms`: a daily cycle peaking at 15:00 UTC, mean 1.
pub fn diurnal_factor(time_ms: i64) -> f64 {
    let hour = time_ms.rem_euclid(24 * HOUR_MS) as f64 / HOUR_MS as f64;
    1.0 + 0.6 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin()
}

/// Simulates the fleet, oldest event first. Event ids are
/// `sim-<seed>-<index>`, unique per seed.
pub fn simulate(config: &FleetConfig) -> Vec<TelemetryEvent> {
    let mut rng = Rng::new(config.seed);
    let mut events = Vec::new();
    let minutes = i64::from(config.hours) * 60;
    let span_ms = (minutes * MINUTE_MS).max(1) as f64;
    let device_weights: Vec<(&str, f64)> = DEVICES
        .iter()
        .map(|device| (device.name, device.weight))
        .collect();
    for minute in 0..minutes {
        let minute_start = config.start_ms + minute * MINUTE_MS;
        let count = rng.poisson(config.requests_per_minute * diurnal_factor(minute_start));
        let mut offsets: Vec<i64> = (0..count)
            .map(|_| (rng.uniform() * MINUTE_MS as f64) as i64)
            .collect();
        offsets.sort_unstable();
        let progress = (minute_start - config.start_ms) as f64 / span_ms;
        let rollout = config.rollout.0 + (config.rollout.1 - config.rollout.0) * progress;
        for offset in offsets {
            let time_ms = minute_start + offset;
            let device_name = rng.pick(&device_weights);
            let device = DEVICES
                .iter()
                .find(|device| device.name == device_name)
                .unwrap_or(&DEVICES[0]);
            let dims = Dimensions {
                device_model: device.name.to_owned(),
                os_version: rng.pick(device.os_versions).to_owned(),
                app_version: rng.pick(&APP_VERSIONS).to_owned(),
                model_version: if rng.uniform() < rollout {
                    "1.4"
                } else {
                    "1.3"
                }
                .to_owned(),
                locale: rng.pick(&LOCALES).to_owned(),
                network: rng.pick(&NETWORKS).to_owned(),
            };
            let mut ttft_factor = 1.0;
            let mut latency_factor = 1.0;
            let mut failure_rate = config.base_failure_rate;
            for injection in &config.injections {
                if injection.applies(&dims, time_ms) {
                    ttft_factor *= injection.ttft_factor;
                    latency_factor *= injection.latency_factor;
                    failure_rate += injection.failure_rate_add;
                }
            }
            let ttft = rng.lognormal(device.ttft_ms, TTFT_SIGMA) * ttft_factor;
            let generation = rng.lognormal(device.generation_ms, GENERATION_SIGMA) * latency_factor;
            let failed = rng.uniform() < failure_rate;
            let failure = failed.then(|| rng.pick(&FAILURE_CODES).to_owned());
            let index = events.len();
            events.push(TelemetryEvent {
                schema_version: SCHEMA_VERSION,
                event_id: format!("sim-{}-{index}", config.seed),
                request_id: format!("req-{}-{index}", config.seed),
                timestamp_ms: time_ms,
                kind: EventKind::Chat,
                latency_ms: round_ms(if failed { ttft } else { ttft + generation }),
                ttft_ms: (!failed).then(|| round_ms(ttft)),
                tokens_per_s: (!failed).then(|| round_ms(200_000.0 / generation.max(1.0))),
                audio_rtf: None,
                failure,
                peak_memory_mb: None,
                dims,
            });
        }
    }
    events
}

/// Rounds to a hundredth, to keep JSON small.
fn round_ms(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The demo regression: model 1.4 slows time to first token by 80 % on
/// older phones from `when_ms` on.
pub fn older_phone_ttft(when_ms: i64) -> Injection {
    Injection {
        ttft_factor: 1.8,
        ..Injection::new(
            when_ms,
            &[("device_model", "older-phone"), ("model_version", "1.4")],
        )
    }
}
