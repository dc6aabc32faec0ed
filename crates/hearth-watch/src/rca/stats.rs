//! Small statistics: the Poisson log-likelihood ratio, its dispersion, and
//! normal and chi-square tails for confidences.

/// Smallest expected value used in a ratio, so that an element with no
/// expected mass and some observed mass scores large but finite.
const MIN_EXPECTED: f64 = 1e-9;

/// Log-likelihood ratio of a Poisson count `observed` under its own rate
/// against the expected rate `expected`: `K ln(K/M) - (K - M)`. It is zero
/// when `K = M`, positive otherwise, and grows linearly with the amount of
/// data at a fixed relative change.
pub(crate) fn poisson_llr(observed: f64, expected: f64) -> f64 {
    let expected = expected.max(MIN_EXPECTED);
    let observed = observed.max(0.0);
    let log_term = if observed > 0.0 {
        observed * (observed / expected).ln()
    } else {
        0.0
    };
    (log_term - (observed - expected)).max(0.0)
}

/// Log of the rate ratio `observed / expected`, guarded against zeros.
pub(crate) fn log_ratio(observed: f64, expected: f64) -> f64 {
    (observed.max(MIN_EXPECTED) / expected.max(MIN_EXPECTED)).ln()
}

/// Median of the 0.5 quantile of a chi-square variable with one degree of
/// freedom; dividing the median squared deviance residual by it estimates
/// the dispersion robustly.
const CHI2_1_MEDIAN: f64 = 0.454_936_4;

/// Quasi-Poisson dispersion: the median leaf deviance over its expectation
/// under a Poisson model, never below 1. The median ignores the few abnormal
/// leaves; the floor keeps count data at Poisson noise at least.
pub(crate) fn dispersion(observed: &[f64], expected: &[f64]) -> f64 {
    let mut deviances: Vec<f64> = observed
        .iter()
        .zip(expected)
        .map(|(&k, &m)| 2.0 * poisson_llr(k, m))
        .filter(|d| d.is_finite())
        .collect();
    if deviances.is_empty() {
        return 1.0;
    }
    deviances.sort_by(f64::total_cmp);
    let middle = deviances.len() / 2;
    let median = if deviances.len() % 2 == 1 {
        deviances[middle]
    } else {
        0.5 * (deviances[middle - 1] + deviances[middle])
    };
    (median / CHI2_1_MEDIAN).max(1.0)
}

/// Complementary error function, with relative error below 1.2e-7
/// everywhere (Chebyshev fit of `exp(-z^2) * erfc(z)` in `t = 1/(1+z/2)`).
pub(crate) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

/// Upper tail `P(X > statistic)` of a chi-square variable with one degree
/// of freedom.
pub(crate) fn chi2_1_tail(statistic: f64) -> f64 {
    if statistic <= 0.0 {
        return 1.0;
    }
    erfc((statistic / 2.0).sqrt())
}

/// Confidence that a likelihood-ratio finding is not noise: one minus its
/// Bonferroni-adjusted p-value over `tests` candidates.
pub(crate) fn confidence_from_llr(llr: f64, tests: usize) -> f64 {
    let p = chi2_1_tail(2.0 * llr) * tests.max(1) as f64;
    (1.0 - p).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAIL_TOLERANCE: f64 = 1e-6;

    #[test]
    fn llr_is_zero_at_expectation_and_grows_with_data() {
        assert_eq!(poisson_llr(10.0, 10.0), 0.0);
        let small = poisson_llr(20.0, 10.0);
        let large = poisson_llr(200.0, 100.0);
        assert!((large - 10.0 * small).abs() < 1e-9);
        assert!((poisson_llr(0.0, 3.0) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn chi_square_tail_matches_tables() {
        // P(chi2_1 > 3.841459) = 0.05, P(chi2_1 > 6.634897) = 0.01.
        assert!((chi2_1_tail(3.841_459) - 0.05).abs() < TAIL_TOLERANCE);
        assert!((chi2_1_tail(6.634_897) - 0.01).abs() < TAIL_TOLERANCE);
        assert!((erfc(-1.0) - 1.842_700_79).abs() < TAIL_TOLERANCE);
    }

    #[test]
    fn dispersion_ignores_a_few_outliers() {
        let expected = vec![100.0; 21];
        let mut observed: Vec<f64> = (0..21).map(|i| 95.0 + (i % 11) as f64).collect();
        observed[3] = 400.0;
        observed[7] = 500.0;
        let phi = dispersion(&observed, &expected);
        assert!((1.0..1.5).contains(&phi), "dispersion {phi}");
    }
}
