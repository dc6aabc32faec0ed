// Development only: tune detector settings and dump scores.
use std::path::PathBuf;
use hearth_watch::detect::DetectorConfig;
use hearth_watch::nab::{Corpus, detect_corpus, score_corpus};

fn main() -> anyhow::Result<()> {
    let mut config = DetectorConfig::default();
    let mut data = PathBuf::from("/work/shared/data/nab");
    let mut dump = None;
    let mut files = false;
    let mut explain: Option<String> = None;
    for arg in std::env::args().skip(1) {
        let (key, value) = arg.split_once('=').unwrap_or((&arg, ""));
        match key {
            "data" => data = PathBuf::from(value),
            "dump" => dump = Some(value.to_owned()),
            "files" => files = true,
            "explain" => explain = Some(value.to_owned()),
            "suppress" => config.suppression_points = value.parse()?,
            "tail" => config.tail_points = value.parse()?,
            "half" => config.calibration_half_life = value.parse()?,
            "minc" => config.min_calibration = value.parse()?,
            "baseline" => config.baseline_points = value.parse()?,
            "shift" => config.shift_points = value.parse()?,
            "spread" => config.spread_points = value.parse()?,
            "days" => config.seasonal_days = value.parse()?,
            "rtol" => config.range_margin = value.parse()?,
            "nw" => config.grid_width = value.parse()?,
            "grid" => config.grid_points = value.parse()?,
            _ => anyhow::bail!("unknown {key}"),
        }
    }
    let corpus = Corpus::load(&data)?;
    if let Some(name) = explain {
        use hearth_watch::detect::{Detector, Point};
        use hearth_watch::nab::probation_rows;
        let series = corpus.series.iter().find(|s| s.name.contains(&name)).unwrap();
        let mut det = Detector::new(DetectorConfig { warmup: probation_rows(series.values.len()), ..config.clone() });
        let mut rows = Vec::new();
        for (&time, &value) in series.timestamps.iter().zip(&series.values) {
            let score = det.update(Point { time, value });
            let e = det.explanation();
            rows.push(serde_json::json!([value, score, e.surprisal, e.tests.iter().map(|t| t.statistic.unwrap_or(0.0)).collect::<Vec<_>>(), e.tests.iter().map(|t| -t.probability.log10()).collect::<Vec<_>>()]));
        }
        let windows: Vec<_> = series.windows.iter().map(|w| [w.first, w.last]).collect();
        std::fs::write("/tmp/nabplot/explain.json", serde_json::to_string(&serde_json::json!({"name": series.name, "rows": rows, "windows": windows, "probation": probation_rows(series.values.len())}))?)?;
        return Ok(());
    }
    let start = std::time::Instant::now();
    let mut scores = detect_corpus(&corpus, &config);
    if std::env::var_os("RANK").is_some() {
        for v in scores.iter_mut() {
            let mut sorted: Vec<f64> = v.iter().copied().filter(|&x| x > 0.0).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for x in v.iter_mut() {
                if *x > 0.0 {
                    let rank = sorted.partition_point(|&y| y > *x);
                    *x = 1.0 / (1.0 + rank as f64);
                }
            }
        }
    }
    if let Ok(len) = std::env::var("LENPOW") {
        let power: f64 = len.parse()?;
        for v in scores.iter_mut() {
            let n = v.len() as f64;
            for x in v.iter_mut() {
                if *x > 0.0 {
                    // score = s / (s + 10) -> s
                    let s = 10.0 * *x / (1.0 - *x);
                    let s2 = (s - power * (n / 4000.0).log10()).max(0.0);
                    *x = s2 / (s2 + 10.0);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let nab = score_corpus(&corpus, &scores)?;
    if let Some(path) = dump {
        let map: serde_json::Map<String, serde_json::Value> = corpus.series.iter().zip(&scores)
            .map(|(s, v)| (s.name.clone(), serde_json::json!(v))).collect();
        std::fs::write(path, serde_json::to_string(&map)?)?;
    }
    for p in &nab.profiles {
        let detected: usize = p.files.iter().map(|f| f.windows_detected).sum();
        let fps: usize = p.files.iter().map(|f| f.false_positives).sum();
        print!("win {detected:>3} fp {fps:>4} ");
        println!("{:<20} {:>7.2}  thr {:.5} raw {:>8.3} tp {} fp {} ", p.profile, p.normalized, p.best.threshold, p.best.score, p.best.true_positives, p.best.false_positives);
        if files && p.profile == "standard" {
            for f in &p.files {
                println!("   {:>7.3} {}/{} fp {:>3} {}", f.raw, f.windows_detected, f.windows, f.false_positives, f.name);
            }
        }
    }
    if std::env::var_os("WINDOWS").is_some() {
        for (series, scores) in corpus.series.iter().zip(&scores) {
            let probation = hearth_watch::nab::probation_rows(series.values.len());
            let mut outside: Vec<f64> = (probation..series.values.len())
                .filter(|&i| !series.windows.iter().any(|w| w.first <= i && i <= w.last))
                .map(|i| scores[i]).filter(|&s| s > 0.0).collect();
            outside.sort_by(|a, b| b.total_cmp(a));
            for w in &series.windows {
                let (mut best, mut at) = (0.0, 0);
                for i in w.first.max(probation)..=w.last { if scores[i] > best { best = scores[i]; at = i; } }
                let rank = outside.iter().filter(|&&s| s >= best).count();
                println!("{:<55} win {:>5}-{:<5} max {:.3} at {:>5} ({:+.2}) outside>= {:>4} top3 {:?}", series.name, w.first, w.last, best, at,
                    -((w.last + 1 - at) as f64) / w.width() as f64, rank, &outside[..outside.len().min(3)].iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>());
            }
        }
    }
    if let Ok(thr) = std::env::var("ATTRIB") {
        use hearth_watch::detect::{Detector, Point};
        use hearth_watch::nab::probation_rows;
        let thr: f64 = thr.parse()?;
        let nf = 4;
        let mut fp_by = vec![0usize; nf + 2];
        let mut tp_by = vec![0usize; nf + 2];
        for series in &corpus.series {
            let n = series.values.len();
            let probation = probation_rows(n);
            let mut det = Detector::new(DetectorConfig { warmup: probation, ..config.clone() });
            let mut first_in_window = vec![false; series.windows.len()];
            for (i, (&time, &value)) in series.timestamps.iter().zip(&series.values).enumerate() {
                let score = det.update(Point { time, value });
                if score < thr || i < probation { continue; }
                let e = det.explanation();
                let arg = if e.beyond_range { 0 } else if e.new_level { 1 } else { 2 + (e.strongest().map_or(0, |t| t.component as usize)) };
                match series.windows.iter().position(|w| w.first <= i && i <= w.last) {
                    Some(w) => if !first_in_window[w] { first_in_window[w] = true; tp_by[arg] += 1; },
                    None => fp_by[arg] += 1,
                }
            }
        }
        println!("first detections by feature {:?}", tp_by);
        println!("false positives by feature  {:?}", fp_by);
    }
    if std::env::var_os("CALIB").is_some() {
        use hearth_watch::detect::{Detector, Point};
        use hearth_watch::nab::probation_rows;
        let mut total = [0usize; 4];
        let mut all = 0usize;
        for series in &corpus.series {
            let n = series.values.len();
            let probation = probation_rows(n);
            let mut det = Detector::new(DetectorConfig { warmup: probation, ..config.clone() });
            let mut counts = [0usize; 4];
            let mut m = 0;
            for (i, (&time, &value)) in series.timestamps.iter().zip(&series.values).enumerate() {
                det.update(Point { time, value });
                if i < probation || series.windows.iter().any(|w| w.first <= i && i <= w.last) { continue; }
                m += 1;
                let s = det.explanation().surprisal;
                for (k, level) in [1.0, 2.0, 3.0, 4.0].iter().enumerate() { if s >= *level { counts[k] += 1; } }
            }
            all += m;
            for k in 0..4 { total[k] += counts[k]; }
            println!("CALIB {:>6} {:>8.4} {:>8.5} {:>8.5} {:>8.5} {}", m, counts[0] as f64 / m as f64, counts[1] as f64 / m as f64, counts[2] as f64 / m as f64, counts[3] as f64 / m as f64, series.name);
        }
        println!("CALIB total {:>8.4} {:>8.5} {:>8.5} {:>8.5}", total[0] as f64 / all as f64, total[1] as f64 / all as f64, total[2] as f64 / all as f64, total[3] as f64 / all as f64);
    }
    if std::env::var_os("MISSED").is_some() {
        use hearth_watch::detect::{Detector, Point};
        use hearth_watch::nab::probation_rows;
        for series in &corpus.series {
            let n = series.values.len();
            let probation = probation_rows(n);
            let mut det = Detector::new(DetectorConfig { warmup: probation, ..config.clone() });
            let mut best = vec![(0.0f64, 0usize, Vec::new()); series.windows.len()];
            for (i, (&time, &value)) in series.timestamps.iter().zip(&series.values).enumerate() {
                det.update(Point { time, value });
                if i < probation { continue; }
                if let Some(w) = series.windows.iter().position(|w| w.first <= i && i <= w.last) {
                    let e = det.explanation();
                    if e.surprisal > best[w].0 { best[w] = (e.surprisal, i, e.tests.iter().map(|t| (-t.probability.log10() * 10.0).round() / 10.0).collect()); }
                }
            }
            for (w, (s, at, ps)) in series.windows.iter().zip(&best) {
                println!("MISSED {:>6.2} {:+.2} {:?} {} {}-{}", s, -((w.last + 1 - at) as f64) / w.width() as f64, ps, series.name, w.first, w.last);
            }
        }
    }
    // Oracle: each file at its own best threshold.
    let profile = corpus.profile("standard")?;
    let mut oracle = 0.0;
    for (i, series) in corpus.series.iter().enumerate() {
        let single = Corpus { series: vec![series.clone()], profiles: corpus.profiles.clone() };
        let best = hearth_watch::nab::optimize_threshold(&single, &scores[i..i + 1], &profile.costs)?;
        oracle += best.score;
        if std::env::var_os("ORACLE").is_some() {
            let global = nab.profiles.iter().find(|p| p.profile == "standard").unwrap();
            let at = hearth_watch::nab::score_series(series, &scores[i], &profile.costs, global.best.threshold)?;
            println!("ORACLE {:>7.3} {}", best.score, series.name);
            println!("{:<55} own thr {:.4} score {:>6.2} | global {:>6.2} loss {:>5.2}", series.name, best.threshold, best.score, at.raw, best.score - at.raw);
        }
    }
    println!("oracle per-file thresholds: raw {:.3} normalized {:.2}", oracle, 100.0 * (oracle + 116.0) / 232.0);
    println!("detect {:.2}s", elapsed.as_secs_f64());
    Ok(())
}

#[allow(dead_code)]
fn unused() {}
