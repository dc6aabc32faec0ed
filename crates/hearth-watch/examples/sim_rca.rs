//! Root-cause accuracy on simulated fleets: regressions injected into
//! assistant-style slices (device, model version, app version, network,
//! locale), each run through aggregation, detection across slices and
//! localisation; plus clean runs, where any alert is a false alarm.
//!
//! `cargo run --release -p hearth-watch --example sim_rca -- [--seeds N]`
//! prints `{"precision", "recall", "f1", "runs", "false_alarm_runs"}`.
//! A predicted root-cause element counts as a true positive only when it
//! is exactly the injected slice.

use hearth_watch::aggregate::Aggregates;
use hearth_watch::pipeline::{self, PipelineConfig};
use hearth_watch::simulate::{self, FleetConfig, Injection};

const BUCKET_MS: i64 = 5 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn scenarios(when: i64) -> Vec<(&'static str, Injection)> {
    vec![
        (
            "older-phone x model 1.4: TTFT x1.8",
            simulate::older_phone_ttft(when),
        ),
        (
            "cellular x app 2.7.0: failures +0.15",
            Injection {
                failure_rate_add: 0.15,
                ..Injection::new(when, &[("network", "cellular"), ("app_version", "2.7.0")])
            },
        ),
        (
            "tablet: latency x1.6",
            Injection {
                latency_factor: 1.6,
                ..Injection::new(when, &[("device_model", "tablet")])
            },
        ),
        (
            "de-DE x model 1.4: TTFT x1.7",
            Injection {
                ttft_factor: 1.7,
                ..Injection::new(when, &[("locale", "de-DE"), ("model_version", "1.4")])
            },
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut seeds = 4u64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => seeds = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let (mut tp, mut predicted, mut truth, mut runs, mut false_alarm_runs) = (0, 0, 0, 0, 0);
    for seed in 1..=seeds {
        let clean = FleetConfig {
            seed,
            ..FleetConfig::default()
        };
        let when = clean.start_ms + DAY_MS * 3 / 2;
        let report = pipeline::run(
            &Aggregates::build(&simulate::simulate(&clean), BUCKET_MS)?,
            &PipelineConfig::default(),
        )?;
        if !report.alerts.is_empty() {
            false_alarm_runs += 1;
        }
        predicted += report
            .alerts
            .iter()
            .map(|a| a.root_cause.len())
            .sum::<usize>();
        for (name, injection) in scenarios(when) {
            let mut expected: Vec<(String, String)> = injection.slice.clone();
            expected.sort();
            let events = simulate::simulate(&FleetConfig {
                injections: vec![injection],
                ..clean.clone()
            });
            let report = pipeline::run(
                &Aggregates::build(&events, BUCKET_MS)?,
                &PipelineConfig::default(),
            )?;
            let mut found = false;
            for cause in report.alerts.iter().flat_map(|a| &a.root_cause) {
                predicted += 1;
                let mut slice = cause.slice.clone();
                slice.sort();
                if slice == expected && !found {
                    found = true;
                    tp += 1;
                }
            }
            truth += 1;
            runs += 1;
            eprintln!(
                "seed {seed} {name}: {} ({} alerts: {})",
                if found { "found" } else { "missed" },
                report.alerts.len(),
                report
                    .alerts
                    .iter()
                    .map(|a| format!("{} {}", a.metric.as_str(), a.root_cause_label()))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    let precision = tp as f64 / predicted.max(1) as f64;
    let recall = tp as f64 / truth.max(1) as f64;
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    println!(
        "{}",
        serde_json::json!({
            "precision": precision, "recall": recall, "f1": f1,
            "runs": runs, "clean_runs": seeds, "false_alarm_runs": false_alarm_runs,
        })
    );
    Ok(())
}
