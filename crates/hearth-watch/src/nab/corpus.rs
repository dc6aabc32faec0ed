//! Reading the NAB corpus: data files, label windows and scoring profiles.
//!
//! The layout is NAB's own: `data/<group>/<name>.csv` files of
//! `timestamp,value` rows, `labels/combined_windows.json` mapping each file's
//! relative path to its anomaly windows, and `config/profiles.json` with the
//! cost matrices. Files are parsed by hand: they are two columns of plain
//! text, and a CSV dependency would buy nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::WatchError;

/// One anomaly window as inclusive row indices into its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First row of the window.
    pub first: usize,
    /// Last row of the window (inclusive); `first <= last`.
    pub last: usize,
}

impl Window {
    /// Number of rows in the window.
    pub fn width(&self) -> usize {
        self.last - self.first + 1
    }
}

/// One NAB data file with its label windows.
#[derive(Debug, Clone)]
pub struct LabeledSeries {
    /// Path relative to the data directory, e.g. `realKnownCause/nyc_taxi.csv`.
    pub name: String,
    /// Seconds since 1970-01-01 00:00:00 (the files carry no time zone).
    pub timestamps: Vec<i64>,
    /// The metric, one value per timestamp.
    pub values: Vec<f64>,
    /// Anomaly windows, sorted and disjoint.
    pub windows: Vec<Window>,
}

/// Weights of one application profile's cost matrix.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct CostMatrix {
    #[serde(rename = "tpWeight")]
    pub true_positive: f64,
    #[serde(rename = "fpWeight")]
    pub false_positive: f64,
    #[serde(rename = "fnWeight")]
    pub false_negative: f64,
    /// Carried for completeness; NAB's score does not use it.
    #[serde(rename = "tnWeight", default)]
    pub true_negative: f64,
}

/// A named scoring profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// NAB's name, e.g. `standard` or `reward_low_FP_rate`.
    pub name: String,
    pub costs: CostMatrix,
}

/// The whole benchmark: every labelled series and the scoring profiles.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Series in the order of their names.
    pub series: Vec<LabeledSeries>,
    /// Profiles in the order of their names.
    pub profiles: Vec<Profile>,
}

impl Corpus {
    /// Loads NAB's layout under `dir` (`data/`, `labels/combined_windows.json`,
    /// `config/profiles.json`).
    pub fn load(dir: &Path) -> Result<Self, WatchError> {
        let windows_path = dir.join("labels").join("combined_windows.json");
        let windows: BTreeMap<String, Vec<[String; 2]>> = read_json(&windows_path)?;
        let series = windows
            .iter()
            .map(|(name, windows)| {
                let path = dir.join("data").join(name);
                let text = read_text(&path)?;
                let (timestamps, values) = parse_series(&path, &text)?;
                let windows = locate_windows(name, &timestamps, windows)?;
                Ok(LabeledSeries {
                    name: name.clone(),
                    timestamps,
                    values,
                    windows,
                })
            })
            .collect::<Result<Vec<_>, WatchError>>()?;
        let profiles = load_profiles(&dir.join("config").join("profiles.json"))?;
        Ok(Corpus { series, profiles })
    }

    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Result<&Profile, WatchError> {
        self.profiles
            .iter()
            .find(|profile| profile.name == name)
            .ok_or_else(|| WatchError::MissingProfile(name.to_owned()))
    }

    /// Number of label windows over all series.
    pub fn window_count(&self) -> usize {
        self.series.iter().map(|series| series.windows.len()).sum()
    }
}

/// Reads another detector's NAB results: `results_dir/<detector>/<group>/
/// <detector>_<file>.csv` for every series of `corpus`, each with an
/// `anomaly_score` column, as NAB writes them. Returns one score vector per
/// series, in the corpus' order.
pub fn load_detector_results(
    results_dir: &Path,
    detector: &str,
    corpus: &Corpus,
) -> Result<Vec<Vec<f64>>, WatchError> {
    corpus
        .series
        .iter()
        .map(|series| {
            let (group, file) = series.name.rsplit_once('/').unwrap_or(("", &series.name));
            let path = results_dir
                .join(detector)
                .join(group)
                .join(format!("{detector}_{file}"));
            let text = read_text(&path)?;
            parse_anomaly_scores(&path, &text)
        })
        .collect()
}

fn parse_anomaly_scores(path: &Path, text: &str) -> Result<Vec<f64>, WatchError> {
    let parse_error = |line: usize, message: String| WatchError::Parse {
        path: PathBuf::from(path),
        line,
        message,
    };
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split(',')
        .position(|name| name.trim() == "anomaly_score")
        .ok_or_else(|| parse_error(1, "no anomaly_score column".to_owned()))?;
    lines
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let field = line
                .split(',')
                .nth(column)
                .ok_or_else(|| parse_error(index + 2, "row too short".to_owned()))?;
            field
                .trim()
                .parse()
                .map_err(|_| parse_error(index + 2, format!("not a number: {field:?}")))
        })
        .collect()
}

#[derive(Deserialize)]
struct ProfileJson {
    #[serde(rename = "CostMatrix")]
    cost_matrix: CostMatrix,
}

/// Reads NAB's `profiles.json`.
pub fn load_profiles(path: &Path) -> Result<Vec<Profile>, WatchError> {
    let profiles: BTreeMap<String, ProfileJson> = read_json(path)?;
    Ok(profiles
        .into_iter()
        .map(|(name, profile)| Profile {
            name,
            costs: profile.cost_matrix,
        })
        .collect())
}

fn read_text(path: &Path) -> Result<String, WatchError> {
    std::fs::read_to_string(path).map_err(|source| WatchError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, WatchError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|source| WatchError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Parses `timestamp,value` rows after a header line.
pub fn parse_series(path: &Path, text: &str) -> Result<(Vec<i64>, Vec<f64>), WatchError> {
    let parse_error = |line: usize, message: String| WatchError::Parse {
        path: PathBuf::from(path),
        line,
        message,
    };
    let mut timestamps = Vec::new();
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate().skip(1) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (time, value) = line
            .split_once(',')
            .ok_or_else(|| parse_error(index + 1, format!("expected timestamp,value: {line:?}")))?;
        let time =
            parse_timestamp(time).map_err(|error| parse_error(index + 1, error.to_string()))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| parse_error(index + 1, format!("not a number: {value:?}")))?;
        if !value.is_finite() {
            return Err(parse_error(
                index + 1,
                format!("not a finite number: {value}"),
            ));
        }
        timestamps.push(time);
        values.push(value);
    }
    Ok((timestamps, values))
}

fn locate_windows(
    name: &str,
    timestamps: &[i64],
    windows: &[[String; 2]],
) -> Result<Vec<Window>, WatchError> {
    let not_found = |start: &str, end: &str| WatchError::WindowNotInData {
        series: name.to_owned(),
        start: start.to_owned(),
        end: end.to_owned(),
    };
    let mut located: Vec<Window> = Vec::with_capacity(windows.len());
    for [start, end] in windows {
        let first_time = parse_timestamp(start)?;
        let last_time = parse_timestamp(end)?;
        // NAB requires both bounds to be timestamps of the data.
        let first = timestamps.iter().position(|&time| time == first_time);
        let last = timestamps.iter().position(|&time| time == last_time);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(not_found(start, end));
        };
        let overlaps = located
            .last()
            .is_some_and(|previous| previous.last >= first);
        if last < first || overlaps {
            return Err(not_found(start, end));
        }
        located.push(Window { first, last });
    }
    Ok(located)
}

/// Parses `YYYY-MM-DD HH:MM:SS`, optionally followed by a fraction that must
/// be zero, into seconds since 1970-01-01 00:00:00.
pub fn parse_timestamp(text: &str) -> Result<i64, WatchError> {
    let error = || WatchError::Timestamp {
        text: text.to_owned(),
    };
    let text = text.trim();
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if !fraction.bytes().all(|byte| byte == b'0') {
        return Err(error());
    }
    let bytes = whole.as_bytes();
    let separators_ok = bytes.len() == 19
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && (bytes[10] == b' ' || bytes[10] == b'T')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return Err(error());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, WatchError> {
        let digits = &bytes[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(error());
        }
        Ok(digits
            .iter()
            .fold(0_i64, |acc, digit| acc * 10 + i64::from(digit - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return Err(error());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so that the leap day ends the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds_since_the_epoch() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00").unwrap(), 0);
        assert_eq!(parse_timestamp("2000-03-01 00:00:01").unwrap(), 951_868_801);
        assert_eq!(
            parse_timestamp("2014-04-10 07:15:00.000000").unwrap(),
            parse_timestamp("2014-04-10 07:15:00").unwrap()
        );
        assert_eq!(
            parse_timestamp("2016-02-29 23:59:59").unwrap(),
            1_456_790_399
        );
        for bad in [
            "2015-02-29 00:00:00",
            "2014-04-10 07:15",
            "2014-04-10 07:15:00.5",
            "x",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn series_rows_are_parsed_after_the_header() {
        let text = "timestamp,value\n2014-01-01 00:00:00,1.5\r\n2014-01-01 00:05:00,-2\n";
        let (times, values) = parse_series(Path::new("x.csv"), text).unwrap();
        assert_eq!(times[1] - times[0], 300);
        assert_eq!(values, vec![1.5, -2.0]);
        let error = parse_series(Path::new("x.csv"), "t,v\n2014-01-01 00:00:00,abc\n");
        assert!(matches!(error, Err(WatchError::Parse { line: 2, .. })));
    }
}
