//! The RiskLoc "RS" benchmark: real multidimensional failure cases of a
//! video service with labelled root causes (RiskLoc repository,
//! `data/RS`, from the RobustSpot publication).
//!
//! Each case is a CSV file with a `min` column (Unix time, one row per leaf
//! and minute), dimension columns, `value` (failed requests) and `cnt` (all
//! requests). `anomaly.yaml` lists per case the file stem (`data`), the
//! anomalous minute (`timestamp`) and the cause: one mapping such as
//! `{'bitrate':2000, 'p2p':1}` or a list of them.
//!
//! As in the RiskLoc loader, the leaves are the rows at the anomalous minute
//! and each leaf's forecast is the mean of its rows over the four minutes
//! before (zero when it has none). The metric is the failure rate
//! `value / cnt`. A predicted element is a true positive when it equals a
//! labelled element exactly; precision, recall and F1 are computed over the
//! summed counts of all cases, as in the RiskLoc paper.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Leaf, RcaConfig, RcaError, localize_ratio};

/// Minutes of history averaged into the forecast.
pub const HISTORY_MINUTES: i64 = 4;

/// Seconds between rows of one leaf.
const STEP_SECONDS: i64 = 60;

/// One labelled case.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskLocCase {
    /// File stem.
    pub name: String,
    pub dim_names: Vec<String>,
    /// Failed requests per leaf, real and forecast.
    pub numerator: Vec<Leaf>,
    /// All requests per leaf, real and forecast.
    pub denominator: Vec<Leaf>,
    /// The labelled root cause: a set of elements, each a set of
    /// `(dimension, value)` conditions.
    pub causes: Vec<Vec<(String, String)>>,
}

/// Scores of a localiser over a set of cases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RcaScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub cases: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseOutcome {
    pub name: String,
    pub truth: Vec<Vec<(String, String)>>,
    pub predicted: Vec<Vec<(String, String)>>,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

/// An anomaly entry of `anomaly.yaml`.
#[derive(Debug, Clone, PartialEq)]
struct Label {
    data: String,
    timestamp: i64,
    causes: Vec<Vec<(String, String)>>,
}

fn parse_error(path: &Path, line: usize, message: impl Into<String>) -> RcaError {
    RcaError::Parse {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// A scalar of the flow syntax: a quoted string or a bare number.
fn parse_scalar(text: &str) -> Option<String> {
    let text = text.trim();
    for quote in ['\'', '"'] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return Some(inner.to_string());
        }
    }
    (!text.is_empty() && !text.contains([',', '{', '}', '[', ']', ':'])).then(|| text.to_string())
}

/// `{'a': 1, 'b': 'x'}` into conditions.
fn parse_mapping(text: &str) -> Option<Vec<(String, String)>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut conditions = Vec::new();
    for item in inner.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once(':')?;
        conditions.push((parse_scalar(key)?, parse_scalar(value)?));
    }
    (!conditions.is_empty()).then_some(conditions)
}

/// A cause: one mapping or a list of mappings.
fn parse_cause(text: &str) -> Option<Vec<Vec<(String, String)>>> {
    let text = text.trim();
    let Some(list) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return parse_mapping(text).map(|m| vec![m]);
    };
    let mut causes = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let end = rest.find('}')?;
        causes.push(parse_mapping(&rest[..=end])?);
        rest = rest[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    (!causes.is_empty()).then_some(causes)
}

/// Parses the subset of YAML `anomaly.yaml` uses: a list of mappings with
/// `data`, `timestamp` and `cause` keys, causes in flow syntax.
fn parse_labels(path: &Path, text: &str) -> Result<Vec<Label>, RcaError> {
    struct Partial {
        line: usize,
        data: Option<String>,
        timestamp: Option<i64>,
        causes: Option<Vec<Vec<(String, String)>>>,
    }
    let finish = |p: Partial| -> Result<Label, RcaError> {
        match (p.data, p.timestamp, p.causes) {
            (Some(data), Some(timestamp), Some(causes)) => Ok(Label {
                data,
                timestamp,
                causes,
            }),
            _ => Err(parse_error(
                path,
                p.line,
                "entry lacks data, timestamp or cause",
            )),
        }
    };
    let mut labels = Vec::new();
    let mut current: Option<Partial> = None;
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = if let Some(rest) = trimmed.strip_prefix("- ") {
            if let Some(done) = current.take() {
                labels.push(finish(done)?);
            }
            current = Some(Partial {
                line,
                data: None,
                timestamp: None,
                causes: None,
            });
            rest
        } else {
            trimmed
        };
        let Some(entry) = current.as_mut() else {
            return Err(parse_error(path, line, "expected a list entry"));
        };
        let Some((key, value)) = body.split_once(':') else {
            return Err(parse_error(path, line, "expected key: value"));
        };
        match key.trim() {
            "data" => entry.data = Some(value.trim().to_string()),
            "timestamp" => {
                entry.timestamp = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| parse_error(path, line, "timestamp is not an integer"))?,
                )
            }
            "cause" => {
                entry.causes = Some(
                    parse_cause(value)
                        .ok_or_else(|| parse_error(path, line, "cannot parse cause"))?,
                )
            }
            other => return Err(parse_error(path, line, format!("unknown key {other:?}"))),
        }
    }
    if let Some(done) = current.take() {
        labels.push(finish(done)?);
    }
    Ok(labels)
}

fn read(path: &Path) -> Result<String, RcaError> {
    std::fs::read_to_string(path).map_err(|source| RcaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads one case file and builds its leaves.
fn load_case(path: &Path, label: Label) -> Result<RiskLocCase, RcaError> {
    let text = read(path)?;
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(parse_error(path, 1, "empty file"));
    };
    let columns: Vec<&str> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(str::trim)
        .collect();
    let position = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| parse_error(path, 1, format!("missing column {name:?}")))
    };
    let (time_column, value_column, count_column) =
        (position("min")?, position("value")?, position("cnt")?);
    let dimension_columns: Vec<usize> = (0..columns.len())
        .filter(|c| ![time_column, value_column, count_column].contains(c))
        .collect();
    let dim_names: Vec<String> = dimension_columns
        .iter()
        .map(|&c| columns[c].to_string())
        .collect();

    let history_start = label.timestamp - HISTORY_MINUTES * STEP_SECONDS;
    // Per leaf: real (failures, requests) and history sums with row count.
    let mut real: Vec<(Vec<String>, f64, f64)> = Vec::new();
    let mut history: HashMap<Vec<String>, (f64, f64, f64)> = HashMap::new();
    for (number, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns.len() {
            return Err(parse_error(
                path,
                number + 1,
                format!("{} fields, expected {}", fields.len(), columns.len()),
            ));
        }
        let number_at = |column: usize| -> Result<f64, RcaError> {
            fields[column].parse::<f64>().map_err(|_| {
                parse_error(
                    path,
                    number + 1,
                    format!("{:?} is not a number", fields[column]),
                )
            })
        };
        let time = fields[time_column]
            .parse::<i64>()
            .map_err(|_| parse_error(path, number + 1, "time is not an integer"))?;
        let is_history = time >= history_start
            && time < label.timestamp
            && (label.timestamp - time) % STEP_SECONDS == 0;
        if time != label.timestamp && !is_history {
            continue;
        }
        let dims: Vec<String> = dimension_columns
            .iter()
            .map(|&c| fields[c].to_string())
            .collect();
        let (failures, requests) = (number_at(value_column)?, number_at(count_column)?);
        if time == label.timestamp {
            real.push((dims, failures, requests));
        } else {
            let entry = history.entry(dims).or_insert((0.0, 0.0, 0.0));
            entry.0 += failures;
            entry.1 += requests;
            entry.2 += 1.0;
        }
    }
    let mut numerator = Vec::with_capacity(real.len());
    let mut denominator = Vec::with_capacity(real.len());
    for (dims, failures, requests) in real {
        let (failures_forecast, requests_forecast) = match history.get(&dims) {
            Some(&(f, r, n)) if n > 0.0 => (f / n, r / n),
            _ => (0.0, 0.0),
        };
        numerator.push(Leaf {
            dims: dims.clone(),
            real: failures,
            forecast: failures_forecast,
        });
        denominator.push(Leaf {
            dims,
            real: requests,
            forecast: requests_forecast,
        });
    }
    Ok(RiskLocCase {
        name: label.data,
        dim_names,
        numerator,
        denominator,
        causes: label.causes,
    })
}

/// Loads every case listed in `dir/anomaly.yaml`.
pub fn load_riskloc_cases(dir: &Path) -> Result<Vec<RiskLocCase>, RcaError> {
    let labels_path = dir.join("anomaly.yaml");
    let labels = parse_labels(&labels_path, &read(&labels_path)?)?;
    labels
        .into_iter()
        .map(|label| {
            let path: PathBuf = dir.join(format!("{}.csv", label.data));
            load_case(&path, label)
        })
        .collect()
}

type ElementSet = BTreeSet<(String, String)>;

/// Localises one case and compares with its label.
pub fn score_case(case: &RiskLocCase, cfg: &RcaConfig) -> Result<CaseOutcome, RcaError> {
    let root_cause = localize_ratio(&case.dim_names, &case.numerator, &case.denominator, cfg)?;
    let truth: BTreeSet<ElementSet> = case
        .causes
        .iter()
        .map(|c| c.iter().cloned().collect())
        .collect();
    let predicted: BTreeSet<ElementSet> = root_cause
        .elements
        .iter()
        .map(|e| e.dims.iter().cloned().collect())
        .collect();
    let true_positives = truth.intersection(&predicted).count();
    Ok(CaseOutcome {
        name: case.name.clone(),
        truth: truth.iter().map(|e| e.iter().cloned().collect()).collect(),
        predicted: predicted
            .iter()
            .map(|e| e.iter().cloned().collect())
            .collect(),
        true_positives,
        false_positives: predicted.len() - true_positives,
        false_negatives: truth.len() - true_positives,
    })
}

/// Sums case outcomes into scores.
pub fn summarize(outcomes: &[CaseOutcome]) -> RcaScores {
    let tp: usize = outcomes.iter().map(|o| o.true_positives).sum();
    let fp: usize = outcomes.iter().map(|o| o.false_positives).sum();
    let fn_: usize = outcomes.iter().map(|o| o.false_negatives).sum();
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    RcaScores {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
        cases: outcomes.len(),
        true_positives: tp,
        false_positives: fp,
        false_negatives: fn_,
    }
}

/// Scores `cfg` on every case of the RS dataset in `dir`.
pub fn evaluate_riskloc_with(
    dir: &Path,
    cfg: &RcaConfig,
) -> Result<(RcaScores, Vec<CaseOutcome>), RcaError> {
    let outcomes = load_riskloc_cases(dir)?
        .iter()
        .map(|case| score_case(case, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((summarize(&outcomes), outcomes))
}

/// Scores the default localiser on the RS dataset in `dir` (the folder
/// holding `anomaly.yaml` and the case files).
pub fn evaluate_riskloc(dir: &Path) -> Result<RcaScores, RcaError> {
    evaluate_riskloc_with(dir, &RcaConfig::default()).map(|(scores, _)| scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_single_and_multiple_causes() {
        let text = "- data: case1_0821\n  timestamp: 1566397800\n  cause: {'bitrate':2000,'p2p':1}\n\
                    - data: 20200530 120238 1067459140\n  timestamp: 1590811320\n  \
                    cause: [{'bitrate':4000}, {'isp':'联通', 'cdn':5}]\n";
        let labels = parse_labels(Path::new("anomaly.yaml"), text).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].data, "case1_0821");
        assert_eq!(labels[0].timestamp, 1_566_397_800);
        assert_eq!(
            labels[0].causes,
            vec![vec![
                ("bitrate".into(), "2000".into()),
                ("p2p".into(), "1".into())
            ]]
        );
        assert_eq!(labels[1].data, "20200530 120238 1067459140");
        assert_eq!(labels[1].causes.len(), 2);
        assert_eq!(
            labels[1].causes[1][0],
            ("isp".to_string(), "联通".to_string())
        );
    }

    #[test]
    fn rejects_malformed_labels() {
        let path = Path::new("anomaly.yaml");
        assert!(parse_labels(path, "- data: x\n  timestamp: soon\n  cause: {'a':1}\n").is_err());
        assert!(parse_labels(path, "- data: x\n  timestamp: 1\n").is_err());
        assert!(parse_labels(path, "- data: x\n  timestamp: 1\n  cause: {a\n").is_err());
    }
}
