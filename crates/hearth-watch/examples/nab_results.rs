//! Scores a published NAB detector's results directory with this crate's
//! scorer: `nab_results --data NAB_DIR --results RESULTS_DIR --detector NAME`.
//! RESULTS_DIR holds `NAME/<group>/NAME_<file>.csv` with an `anomaly_score`
//! column, as NAB writes them.

use std::path::PathBuf;

use anyhow::{Context, bail};
use hearth_watch::nab::{Corpus, normalize, score_corpus, score_series};

fn main() -> anyhow::Result<()> {
    let mut data = None;
    let mut results = None;
    let mut detector = None;
    let mut thresholds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = args.next().map(PathBuf::from),
            "--results" => results = args.next().map(PathBuf::from),
            "--detector" => detector = args.next(),
            "--thresholds" => thresholds = args.next().map(PathBuf::from),
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(data), Some(results), Some(detector)) = (data, results, detector) else {
        bail!("usage: nab_results --data NAB_DIR --results RESULTS_DIR --detector NAME");
    };
    let corpus = Corpus::load(&data)?;
    let mut scores = Vec::new();
    for series in &corpus.series {
        let (group, file) = series.name.split_once('/').context("series name without group")?;
        let path = results.join(&detector).join(group).join(format!("{detector}_{file}"));
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let mut lines = text.lines();
        let header = lines.next().context("empty results file")?;
        let column = header
            .split(',')
            .position(|name| name == "anomaly_score")
            .context("no anomaly_score column")?;
        let mut file_scores = Vec::new();
        for line in lines.filter(|line| !line.is_empty()) {
            let field = line.split(',').nth(column).context("short row")?;
            file_scores.push(field.parse::<f64>().with_context(|| format!("{path:?}: {field}"))?);
        }
        scores.push(file_scores);
    }
    let nab = score_corpus(&corpus, &scores)?;
    if std::env::var_os("NAB_ORACLE").is_some() {
        let profile = corpus.profile("standard")?;
        let mut oracle = 0.0;
        for (i, series) in corpus.series.iter().enumerate() {
            let single = Corpus { series: vec![series.clone()], profiles: corpus.profiles.clone() };
            let own = hearth_watch::nab::optimize_threshold(&single, &scores[i..i + 1], &profile.costs)?.score;
            oracle += own;
            if std::env::var("NAB_ORACLE").is_ok_and(|v| v == "2") {
                println!("ORACLE {:>7.3} {}", own, series.name);
            }
        }
        println!("oracle per-file: {:.2}", 100.0 * (oracle + 116.0) / 232.0);
    }
    if std::env::var_os("NAB_FILES").is_some() {
        for profile in nab.profiles.iter().filter(|p| p.profile == "standard") {
            for file in &profile.files {
                println!("   {:>7.3} {}/{} fp {:>3} {}", file.raw, file.windows_detected, file.windows, file.false_positives, file.name);
            }
        }
    }
    for profile in &nab.profiles {
        println!(
            "{:<20} normalized {:>9.4}  raw {:>10.5}  threshold {:.6}  null {:.1}  perfect {:.1}",
            profile.profile,
            profile.normalized,
            profile.best.score,
            profile.best.threshold,
            profile.null,
            profile.perfect
        );
    }
    // With NAB's thresholds file, also score each file at the recorded
    // threshold and sum, as NAB's scoring step does.
    if let Some(path) = thresholds {
        let text = std::fs::read_to_string(&path)?;
        let table: serde_json::Value = serde_json::from_str(&text)?;
        for profile in &nab.profiles {
            let Some(threshold) = table[&detector][&profile.profile]["threshold"].as_f64() else {
                continue;
            };
            let costs = &corpus.profile(&profile.profile)?.costs;
            let mut raw = 0.0;
            for (series, scores) in corpus.series.iter().zip(&scores) {
                raw += score_series(series, scores, costs, threshold)?.raw;
            }
            println!(
                "{:<20} at recorded threshold {threshold:.6}: normalized {:>9.4}  raw {raw:>10.5}",
                profile.profile,
                normalize(raw, profile.null, profile.perfect)
            );
        }
    }
    Ok(())
}
