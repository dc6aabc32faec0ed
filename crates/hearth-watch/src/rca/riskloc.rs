//! RiskLoc (Kalander, 2022): weighted risk over a two-way partition of the
//! leaves.
//!
//! Each leaf gets a relative deviation `2 (f - r) / (f + r)`. The normal
//! leaves' deviations are assumed symmetric around zero, so the cut-off is
//! the less extreme tail (after ignoring `n_remove` outliers) mirrored to the
//! other side; leaves beyond it are abnormal. Abnormal leaves weigh their
//! deviation, normal leaves their distance to the cut-off (both capped at 1).
//! An element's risk is its weighted abnormal proportion minus a ripple-effect
//! term (how unevenly its leaves deviate once its forecast is rescaled to
//! its real total). Layers are searched from the top; within a cuboid the
//! element with the highest explanatory power whose risk passes the
//! threshold is the cuboid's candidate, and the first layer with a candidate
//! ends the search. Found elements are removed and the search repeats while
//! the abnormal leaves left explain enough of the change.

use super::lattice::Lattice;
use super::{Element, Measures, Problem, RcaConfig};

/// Largest weight of a leaf.
const MAX_WEIGHT: f64 = 1.0;

struct Leaves {
    /// The metric per leaf (ratio for ratio metrics).
    real: Vec<f64>,
    predict: Vec<f64>,
    /// Explanatory power per leaf (share of the total change).
    power: Vec<f64>,
    deviation: Vec<f64>,
    abnormal: Vec<bool>,
    weight: Vec<f64>,
}

fn relative_deviation(real: f64, predict: f64) -> f64 {
    let sum = predict + real;
    if sum == 0.0 {
        0.0
    } else {
        2.0 * (predict - real) / sum
    }
}

fn explanatory_power(measures: &Measures) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    match measures {
        Measures::Additive { real, forecast } => {
            let change = real.iter().sum::<f64>() - forecast.iter().sum::<f64>();
            let power = real
                .iter()
                .zip(forecast)
                .map(|(r, f)| if change == 0.0 { 0.0 } else { (r - f) / change })
                .collect();
            (real.clone(), forecast.clone(), power)
        }
        Measures::Ratio {
            numerator_real,
            numerator_forecast,
            denominator_real,
            denominator_forecast,
        } => {
            // Change of the overall ratio when only this leaf moves from its
            // forecast to its real values, normalised to sum to one.
            let total_a: f64 = numerator_forecast.iter().sum();
            let total_b: f64 = denominator_forecast.iter().sum();
            let raw: Vec<f64> = (0..numerator_real.len())
                .map(|leaf| {
                    let delta_a = numerator_real[leaf] - numerator_forecast[leaf];
                    let delta_b = denominator_real[leaf] - denominator_forecast[leaf];
                    let denominator = total_b * (total_b + delta_b);
                    if denominator == 0.0 {
                        0.0
                    } else {
                        (delta_a * total_b - delta_b * total_a) / denominator
                    }
                })
                .collect();
            let sum: f64 = raw.iter().sum();
            let power = raw
                .iter()
                .map(|p| if sum == 0.0 { 0.0 } else { p / sum })
                .collect();
            let ratio = |n: &[f64], d: &[f64]| -> Vec<f64> {
                n.iter()
                    .zip(d)
                    .map(|(n, d)| if *d == 0.0 { 0.0 } else { n / d })
                    .collect()
            };
            (
                ratio(numerator_real, denominator_real),
                ratio(numerator_forecast, denominator_forecast),
                power,
            )
        }
    }
}

/// The cut-off between normal and abnormal deviations.
fn cutoff(deviation: &[f64], n_remove: usize) -> f64 {
    let mut distinct: Vec<f64> = deviation.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let Some(last) = distinct.len().checked_sub(1) else {
        return 0.0;
    };
    let skip = n_remove.min(last);
    let low = distinct[skip];
    let high = distinct[last - skip];
    // The tail nearer to zero is the normal side; mirror it.
    if low.abs() <= high.abs() { -low } else { -high }
}

impl Leaves {
    fn new(problem: &Problem, n_remove: usize) -> Leaves {
        let (real, predict, mut power) = explanatory_power(&problem.measures);
        let deviation: Vec<f64> = real
            .iter()
            .zip(&predict)
            .map(|(&r, &p)| relative_deviation(r, p))
            .collect();
        let cut = cutoff(&deviation, n_remove);
        let anomaly_right = if cut == 0.0 {
            cut.is_sign_positive()
        } else {
            cut > 0.0
        };
        let abnormal: Vec<bool> = deviation
            .iter()
            .map(|&d| if anomaly_right { d > cut } else { d < cut })
            .collect();
        let weight = (0..deviation.len())
            .map(|leaf| {
                let w = if abnormal[leaf] {
                    deviation[leaf].abs()
                } else if real[leaf] == 0.0 && predict[leaf] == 0.0 {
                    0.0
                } else {
                    (cut - deviation[leaf]).abs()
                };
                w.min(MAX_WEIGHT)
            })
            .collect();
        let abnormal_power: f64 = power
            .iter()
            .zip(&abnormal)
            .filter(|(_, a)| **a)
            .map(|(p, _)| p)
            .sum();
        if abnormal_power < 0.0 {
            power.iter_mut().for_each(|p| *p = -*p);
        }
        Leaves {
            real,
            predict,
            power,
            deviation,
            abnormal,
            weight,
        }
    }

    fn abnormal_power(&self, alive: &[bool]) -> f64 {
        (0..self.power.len())
            .filter(|&leaf| alive[leaf] && self.abnormal[leaf])
            .map(|leaf| self.power[leaf])
            .sum()
    }

    /// Weighted share of abnormal leaves, with one pseudo-weight of normal.
    fn high_risk(&self, mask: &[bool]) -> f64 {
        let (mut abnormal, mut normal) = (0.0, 1.0);
        for leaf in (0..mask.len()).filter(|&leaf| mask[leaf]) {
            if self.abnormal[leaf] {
                abnormal += self.weight[leaf];
            } else {
                normal += self.weight[leaf];
            }
        }
        abnormal / (abnormal + normal)
    }

    /// How far the element's leaves are from one common relative change:
    /// mean deviation after rescaling the forecast to the real total, over
    /// the mean deviation itself. Zero for a perfect ripple effect.
    fn low_risk(&self, mask: &[bool]) -> f64 {
        let leaves: Vec<usize> = (0..mask.len())
            .filter(|&leaf| mask[leaf] && self.real[leaf] != 0.0 && self.predict[leaf] != 0.0)
            .collect();
        if leaves.is_empty() {
            return 0.0;
        }
        let real_sum: f64 = leaves.iter().map(|&l| self.real[l]).sum();
        let predict_sum: f64 = leaves.iter().map(|&l| self.predict[l]).sum();
        let count = leaves.len() as f64;
        let rescaled_deviation = leaves
            .iter()
            .map(|&l| {
                let adjusted = self.predict[l] * real_sum / predict_sum;
                relative_deviation(self.real[l], adjusted).abs()
            })
            .sum::<f64>()
            / count;
        let deviation = leaves.iter().map(|&l| self.deviation[l].abs()).sum::<f64>() / count;
        if deviation == 0.0 {
            0.0
        } else {
            rescaled_deviation / deviation
        }
    }
}

struct Found {
    element: super::lattice::ElementKey,
    power: f64,
    risk: f64,
}

fn search_layers(
    lattice: &Lattice,
    leaves: &Leaves,
    cuboids: &[Vec<usize>],
    alive: &[bool],
    power_threshold: f64,
    risk_threshold: f64,
) -> Option<Found> {
    let abnormal: Vec<f64> = leaves
        .abnormal
        .iter()
        .map(|&a| f64::from(u8::from(a)))
        .collect();
    let mut best: Option<Found> = None;
    let mut layer = 0;
    for cuboid in cuboids {
        if cuboid.len() != layer {
            if best.is_some() {
                break;
            }
            layer = cuboid.len();
        }
        let floor = best.as_ref().map_or(power_threshold, |b| b.power);
        let mut groups: Vec<_> = lattice
            .group(cuboid, alive, [&leaves.power, &abnormal])
            .into_iter()
            .filter(|g| g.sums[1] > 0.0 && g.sums[0] > floor)
            .collect();
        groups.sort_by(|a, b| b.sums[0].total_cmp(&a.sums[0]));
        for group in groups {
            let mask = lattice.mask(&group.element, alive);
            let risk = leaves.high_risk(&mask) - leaves.low_risk(&mask);
            if risk >= risk_threshold {
                best = Some(Found {
                    element: group.element,
                    power: group.sums[0],
                    risk,
                });
                break;
            }
        }
    }
    best
}

pub(crate) fn search(problem: &Problem, cfg: &RcaConfig) -> Vec<Element> {
    let lattice = &problem.lattice;
    let leaves = Leaves::new(problem, cfg.riskloc.n_remove);
    let (_, expected) = problem.counts(cfg.scan.prior_strength);
    let cuboids = lattice.cuboids(cfg.max_layer);
    let mut alive = vec![true; lattice.leaves()];
    let power_threshold = leaves.abnormal_power(&alive) * cfg.riskloc.pep_threshold;
    let mut elements = Vec::new();
    while elements.len() < cfg.max_elements {
        let remaining = leaves.abnormal_power(&alive);
        if remaining <= 0.0 || remaining < power_threshold {
            break;
        }
        let Some(found) = search_layers(
            lattice,
            &leaves,
            &cuboids,
            &alive,
            power_threshold,
            cfg.riskloc.risk_threshold,
        ) else {
            break;
        };
        let mask = lattice.mask(&found.element, &alive);
        let (real, expected) = problem.element_values(&mask, &expected);
        elements.push(Element {
            dims: lattice.describe(&found.element),
            share: found.power,
            confidence: found.risk.clamp(0.0, 1.0),
            real,
            expected,
        });
        for (alive, inside) in alive.iter_mut().zip(&mask) {
            *alive &= !inside;
        }
    }
    elements
}
