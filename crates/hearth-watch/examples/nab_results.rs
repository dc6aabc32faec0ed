//! Scores published NAB detector results with this crate's scorer, to check
//! it against NAB's own numbers:
//! `nab_results --data NAB_DIR --results RESULTS_DIR [--detector NAME]...`.
//! RESULTS_DIR is NAB's `results/` (one folder per detector, as NAB writes
//! them). For each detector it prints the normalised scores at the
//! thresholds NAB recorded (`NAB_DIR/config/thresholds.json`) beside those
//! in `RESULTS_DIR/final_results.json`, and at the thresholds this crate's
//! sweep finds.

use std::path::PathBuf;

use anyhow::{Context, bail};
use hearth_watch::nab::{
    Corpus, load_detector_results, normalize, score_at_threshold, score_corpus,
};

fn main() -> anyhow::Result<()> {
    let mut data = None;
    let mut results = None;
    let mut detectors = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = args.next().map(PathBuf::from),
            "--results" => results = args.next().map(PathBuf::from),
            "--detector" => detectors.extend(args.next()),
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(data), Some(results)) = (data, results) else {
        bail!("usage: nab_results --data NAB_DIR --results RESULTS_DIR [--detector NAME]...");
    };
    let read_json = |path: PathBuf| -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(serde_json::from_str(&text)?)
    };
    let published = read_json(results.join("final_results.json"))?;
    let thresholds = read_json(data.join("config").join("thresholds.json"))?;
    if detectors.is_empty() {
        let table = published
            .as_object()
            .context("final_results.json is not an object")?;
        detectors = table.keys().cloned().collect();
    }
    let corpus = Corpus::load(&data)?;
    println!(
        "{:<18} {:<20} {:>9} {:>9} {:>9}",
        "detector", "profile", "published", "recorded", "swept"
    );
    for detector in &detectors {
        let scores = match load_detector_results(&results, detector, &corpus) {
            Ok(scores) => scores,
            Err(error) => {
                println!("{detector:<18} skipped: {error}");
                continue;
            }
        };
        let swept = match score_corpus(&corpus, &scores) {
            Ok(swept) => swept,
            Err(error) => {
                println!("{detector:<18} skipped: {error}");
                continue;
            }
        };
        for profile in &swept.profiles {
            let costs = &corpus.profile(&profile.profile)?.costs;
            let recorded = thresholds[detector][&profile.profile]["threshold"]
                .as_f64()
                .map(|threshold| score_at_threshold(&corpus, &scores, costs, threshold))
                .transpose()?
                .map(|raw| normalize(raw, profile.null, profile.perfect));
            let published = published[detector][&profile.profile].as_f64();
            let show = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.4}"));
            println!(
                "{:<18} {:<20} {:>9} {:>9} {:>9.4}",
                detector,
                profile.profile,
                show(published),
                show(recorded),
                profile.normalized
            );
        }
    }
    Ok(())
}
