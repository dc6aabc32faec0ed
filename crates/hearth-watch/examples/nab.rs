//! Runs the default detector over the Numenta Anomaly Benchmark and prints
//! its normalised scores as JSON: `nab --data NAB_DIR [--detail]`.
//! `--detail` adds each profile's threshold, raw scores and per-file
//! results.

use std::path::PathBuf;

use anyhow::bail;
use hearth_watch::run_nab;

/// The normalised scores, in the order NAB lists its profiles.
#[derive(serde::Serialize)]
struct Summary {
    standard: f64,
    low_fp: f64,
    low_fn: f64,
}

fn main() -> anyhow::Result<()> {
    let mut data = None;
    let mut detail = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = args.next().map(PathBuf::from),
            "--detail" => detail = true,
            other => bail!("unknown argument {other}; usage: nab --data NAB_DIR [--detail]"),
        }
    }
    let Some(data) = data else {
        bail!("usage: nab --data NAB_DIR [--detail]");
    };
    let scores = run_nab(&data)?;
    let json = if detail {
        serde_json::to_string_pretty(&scores)?
    } else {
        serde_json::to_string_pretty(&Summary {
            standard: scores.standard,
            low_fp: scores.low_fp,
            low_fn: scores.low_fn,
        })?
    };
    println!("{json}");
    Ok(())
}
