//! Scores root-cause localisation on the RiskLoc RS dataset and prints the
//! scores as JSON.
//!
//! ```text
//! cargo run --release -p hearth-watch --example rca -- --data ../shared/data/riskloc-rs/data/RS
//!     [--search scan|riskloc] [--cases]
//! ```
//!
//! `--cases` adds every case whose prediction differs from its label.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hearth_watch::rca::{RcaConfig, Search, evaluate_riskloc_with};

fn run() -> anyhow::Result<()> {
    let mut data: Option<PathBuf> = None;
    let mut cfg = RcaConfig::default();
    let mut show_cases = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = Some(args.next().context("--data needs a directory")?.into()),
            "--search" => {
                cfg.search = match args.next().as_deref() {
                    Some("scan") => Search::Scan,
                    Some("riskloc") => Search::RiskLoc,
                    other => bail!("--search takes scan or riskloc, not {other:?}"),
                }
            }
            "--cases" => show_cases = true,
            other => bail!(
                "unknown argument {other:?}; usage: rca --data DIR [--search scan|riskloc] [--cases]"
            ),
        }
    }
    let data = data.context("usage: rca --data DIR [--search scan|riskloc] [--cases]")?;
    let started = std::time::Instant::now();
    let (scores, outcomes) = evaluate_riskloc_with(&data, &cfg)
        .with_context(|| format!("evaluating {}", data.display()))?;
    let mut report = serde_json::json!({
        "search": format!("{:?}", cfg.search),
        "scores": scores,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if show_cases {
        let misses: Vec<_> = outcomes.iter().filter(|o| o.truth != o.predicted).collect();
        report["misses"] = serde_json::to_value(misses)?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
