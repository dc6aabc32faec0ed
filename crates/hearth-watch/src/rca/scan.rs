//! The likelihood scan (see the module documentation of [`super`]).
//!
//! Why a likelihood rather than RiskLoc's relative deviations: leaves differ
//! in size by orders of magnitude (a slice with 2 requests and 1 failure has
//! a 50 % failure rate and means nothing), so per-leaf scores must weigh
//! evidence by the amount of data. The Poisson log-likelihood ratio of an
//! element's total does that, and because it is computed on aggregates a few
//! quiet leaves inside a broken slice do not hide it.

use std::collections::HashSet;

use super::lattice::{ElementKey, Lattice, masked_sums};
use super::stats::{confidence_from_llr, dispersion, log_ratio, poisson_llr};
use super::{Element, Problem, RcaConfig, ScanConfig};

/// Relative tolerance under which two likelihood ratios count as equal (the
/// same leaves summed in another order), so the shallower element wins.
const TIE_TOLERANCE: f64 = 1e-9;

struct Scan<'a> {
    lattice: &'a Lattice,
    observed: Vec<f64>,
    expected: Vec<f64>,
    /// +1 when the metric rose overall, -1 when it fell.
    direction: f64,
    /// Quasi-Poisson dispersion dividing every likelihood ratio.
    dispersion: f64,
    cfg: &'a ScanConfig,
}

#[derive(Debug, Clone)]
struct Candidate {
    element: ElementKey,
    evidence: f64,
}

impl Scan<'_> {
    fn evidence(&self, observed: f64, expected: f64) -> f64 {
        poisson_llr(observed, expected) / self.dispersion
    }

    fn in_direction(&self, observed: f64, expected: f64) -> bool {
        (observed - expected) * self.direction > 0.0
    }

    fn sums(&self, mask: &[bool]) -> (f64, f64) {
        let [observed, expected] = masked_sums(mask, [&self.observed, &self.expected]);
        (observed, expected)
    }

    /// Every element of the lattice over the alive leaves that moved in the
    /// direction of the change, and how many elements were looked at.
    fn candidates(&self, cuboids: &[Vec<usize>], alive: &[bool]) -> (Vec<Candidate>, usize) {
        let mut out = Vec::new();
        let mut tested = 0;
        for cuboid in cuboids {
            for group in self
                .lattice
                .group(cuboid, alive, [&self.observed, &self.expected])
            {
                tested += 1;
                let [observed, expected] = group.sums;
                if self.in_direction(observed, expected) {
                    out.push(Candidate {
                        evidence: self.evidence(observed, expected),
                        element: group.element,
                    });
                }
            }
        }
        (out, tested)
    }

    /// Whether a slice changed like the element did: in the same direction,
    /// with some evidence, and by a comparable log rate ratio.
    fn changed(&self, observed: f64, expected: f64, element_log_ratio: f64) -> bool {
        self.in_direction(observed, expected)
            && self.evidence(observed, expected) >= self.cfg.sibling_evidence
            && log_ratio(observed, expected).abs()
                >= self.cfg.relative_log_ratio * element_log_ratio
    }

    /// Drops conditions while the slices a condition excludes changed too:
    /// their union carries evidence of its own and most of its expected
    /// mass sits in siblings that changed individually. The whole population
    /// is never returned (a root cause names at least one condition).
    fn generalize(&self, mut element: ElementKey, alive: &[bool]) -> ElementKey {
        let mut seen = HashSet::new();
        while element.layer() > 1 && seen.insert(element.clone()) {
            let mask = self.lattice.mask(&element, alive);
            let (observed, expected) = self.sums(&mask);
            let element_log_ratio = log_ratio(observed, expected).abs();
            let mut best: Option<(f64, ElementKey)> = None;
            for &(dimension, _) in &element.0 {
                let parent = element.without(dimension);
                let complement: Vec<bool> = self
                    .lattice
                    .mask(&parent, alive)
                    .iter()
                    .zip(&mask)
                    .map(|(&in_parent, &in_element)| in_parent && !in_element)
                    .collect();
                let (rest_observed, rest_expected) = self.sums(&complement);
                if rest_expected <= 0.0 || !self.in_direction(rest_observed, rest_expected) {
                    continue;
                }
                let evidence = self.evidence(rest_observed, rest_expected);
                if evidence < self.cfg.generalize_evidence
                    || log_ratio(rest_observed, rest_expected).abs()
                        < self.cfg.relative_log_ratio * element_log_ratio
                {
                    continue;
                }
                let mut changed_mass = 0.0;
                let mut all_mass = 0.0;
                for sibling in
                    self.lattice
                        .group(&[dimension], &complement, [&self.observed, &self.expected])
                {
                    let [sibling_observed, sibling_expected] = sibling.sums;
                    all_mass += sibling_expected;
                    if self.changed(sibling_observed, sibling_expected, element_log_ratio) {
                        changed_mass += sibling_expected;
                    }
                }
                if all_mass > 0.0
                    && changed_mass / all_mass >= self.cfg.sibling_fraction
                    && best.as_ref().is_none_or(|(e, _)| evidence > *e)
                {
                    best = Some((evidence, parent));
                }
            }
            match best {
                Some((_, parent)) => element = parent,
                None => break,
            }
        }
        element
    }

    /// The strongest element, or the strongest disjoint pair among the top
    /// candidates when it explains clearly more than any single element.
    fn pieces(&self, mut candidates: Vec<Candidate>, alive: &[bool]) -> Vec<ElementKey> {
        let Some(best) = candidates
            .iter()
            .fold(None::<&Candidate>, |best, c| match best {
                None => Some(c),
                Some(b) => {
                    let tie = (c.evidence - b.evidence).abs()
                        <= TIE_TOLERANCE * c.evidence.abs().max(b.evidence.abs());
                    if (!tie && c.evidence > b.evidence)
                        || (tie
                            && (c.element.layer(), &c.element) < (b.element.layer(), &b.element))
                    {
                        Some(c)
                    } else {
                        Some(b)
                    }
                }
            })
        else {
            return Vec::new();
        };
        let best = best.clone();
        candidates.sort_by(|a, b| {
            b.evidence
                .total_cmp(&a.evidence)
                .then_with(|| a.element.layer().cmp(&b.element.layer()))
                .then_with(|| a.element.cmp(&b.element))
        });
        candidates.truncate(self.cfg.pair_candidates);
        let masks: Vec<Vec<bool>> = candidates
            .iter()
            .map(|c| self.lattice.mask(&c.element, alive))
            .collect();
        let mut pair: Option<(f64, usize, usize)> = None;
        for i in 0..candidates.len() {
            for j in i + 1..candidates.len() {
                let total = candidates[i].evidence + candidates[j].evidence;
                if pair.is_some_and(|(t, _, _)| total <= t) {
                    continue;
                }
                let disjoint = !masks[i].iter().zip(&masks[j]).any(|(&a, &b)| a && b);
                if disjoint {
                    pair = Some((total, i, j));
                }
            }
        }
        match pair {
            Some((total, i, j)) if total >= (1.0 + self.cfg.pair_gain) * best.evidence => {
                vec![candidates[i].element.clone(), candidates[j].element.clone()]
            }
            _ => vec![best.element],
        }
    }
}

pub(crate) fn search(problem: &Problem, cfg: &RcaConfig) -> Vec<Element> {
    let lattice = &problem.lattice;
    let (observed, expected) = problem.counts(cfg.scan.prior_strength);
    let change = observed.iter().sum::<f64>() - expected.iter().sum::<f64>();
    if change == 0.0 || !change.is_finite() {
        return Vec::new();
    }
    let scan = Scan {
        lattice,
        dispersion: dispersion(&observed, &expected),
        observed,
        expected,
        direction: change.signum(),
        cfg: &cfg.scan,
    };
    let cuboids = lattice.cuboids(cfg.max_layer);
    let mut alive = vec![true; lattice.leaves()];
    let mut elements: Vec<Element> = Vec::new();
    let mut first_evidence: Option<f64> = None;
    let mut tests: Option<usize> = None;
    while elements.len() < cfg.max_elements {
        let (candidates, tested) = scan.candidates(&cuboids, &alive);
        // The first pass looks at every element; its size is the number of
        // hypotheses the confidences are corrected for.
        let tests = *tests.get_or_insert(tested);
        let mut pieces: Vec<ElementKey> = Vec::new();
        for piece in scan.pieces(candidates, &alive) {
            let piece = scan.generalize(piece, &alive);
            if !pieces.contains(&piece) {
                pieces.push(piece);
            }
        }
        let mut scored: Vec<(f64, ElementKey)> = pieces
            .into_iter()
            .map(|piece| {
                let (o, e) = scan.sums(&lattice.mask(&piece, &alive));
                (scan.evidence(o, e), piece)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut accepted = false;
        for (_, piece) in scored {
            if elements.len() >= cfg.max_elements {
                break;
            }
            let mask = lattice.mask(&piece, &alive);
            let (o, e) = scan.sums(&mask);
            if !scan.in_direction(o, e) {
                continue;
            }
            let evidence = scan.evidence(o, e);
            let share = (o - e) / change;
            let confidence = confidence_from_llr(evidence, tests);
            if share < cfg.min_share || confidence < 1.0 - cfg.scan.alpha {
                continue;
            }
            match first_evidence {
                Some(first) if evidence < cfg.scan.relative_strength * first => continue,
                Some(_) => {}
                None => first_evidence = Some(evidence),
            }
            let (real, expected) = problem.element_values(&mask, &scan.expected);
            elements.push(Element {
                dims: lattice.describe(&piece),
                share,
                confidence,
                real,
                expected,
            });
            for (alive, inside) in alive.iter_mut().zip(&mask) {
                *alive &= !inside;
            }
            accepted = true;
        }
        if !accepted {
            break;
        }
    }
    elements
}
