//! The dimension lattice: leaves encoded as small integer codes per
//! dimension, elements as conjunctions of `dimension = value` conditions, and
//! group-by sums over the leaves of every cuboid (set of dimensions).

use std::collections::HashMap;

use super::RcaError;

/// One condition of an element: dimension index and value code.
pub(crate) type Condition = (usize, u32);

/// A conjunction of conditions, sorted by dimension, at most one per
/// dimension. The empty element matches every leaf.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ElementKey(pub(crate) Vec<Condition>);

impl ElementKey {
    /// Number of conditions (the element's layer in the lattice).
    pub(crate) fn layer(&self) -> usize {
        self.0.len()
    }

    /// The element without its condition on `dimension`.
    pub(crate) fn without(&self, dimension: usize) -> ElementKey {
        ElementKey(
            self.0
                .iter()
                .copied()
                .filter(|&(d, _)| d != dimension)
                .collect(),
        )
    }
}

/// Leaves encoded per dimension.
#[derive(Debug, Clone)]
pub(crate) struct Lattice {
    names: Vec<String>,
    /// Per dimension: code -> value.
    values: Vec<Vec<String>>,
    /// Leaf-major codes: `codes[leaf * dimensions + d]`.
    codes: Vec<u32>,
    leaves: usize,
}

impl Lattice {
    /// Encodes leaves given as value lists aligned with `names`. Leaves whose
    /// values repeat are kept as separate rows; callers merge them first when
    /// they must be unique (see [`Lattice::dedup_index`]).
    pub(crate) fn new<'a>(
        names: &[String],
        rows: impl IntoIterator<Item = &'a [String]>,
    ) -> Result<Lattice, RcaError> {
        if names.is_empty() {
            return Err(RcaError::NoDimensions);
        }
        for (index, name) in names.iter().enumerate() {
            if names[..index].contains(name) {
                return Err(RcaError::DuplicateDimension(name.clone()));
            }
        }
        let dimensions = names.len();
        let mut lookup: Vec<HashMap<String, u32>> = vec![HashMap::new(); dimensions];
        let mut values: Vec<Vec<String>> = vec![Vec::new(); dimensions];
        let mut codes = Vec::new();
        let mut leaves = 0;
        for (leaf, row) in rows.into_iter().enumerate() {
            if row.len() != dimensions {
                return Err(RcaError::DimensionCount {
                    leaf,
                    expected: dimensions,
                    found: row.len(),
                });
            }
            for (d, value) in row.iter().enumerate() {
                let next = values[d].len() as u32;
                let code = *lookup[d].entry(value.clone()).or_insert_with(|| {
                    values[d].push(value.clone());
                    next
                });
                codes.push(code);
            }
            leaves += 1;
        }
        Ok(Lattice {
            names: names.to_vec(),
            values,
            codes,
            leaves,
        })
    }

    pub(crate) fn leaves(&self) -> usize {
        self.leaves
    }

    pub(crate) fn code(&self, leaf: usize, dimension: usize) -> u32 {
        self.codes[leaf * self.names.len() + dimension]
    }

    fn row(&self, leaf: usize) -> &[u32] {
        let dimensions = self.names.len();
        &self.codes[leaf * dimensions..(leaf + 1) * dimensions]
    }

    /// For each leaf, the index of the first leaf with the same values, so
    /// that callers can merge duplicate rows.
    pub(crate) fn dedup_index(&self) -> (Vec<usize>, usize) {
        let mut first: HashMap<&[u32], usize> = HashMap::new();
        let mut index = Vec::with_capacity(self.leaves);
        for leaf in 0..self.leaves {
            let next = first.len();
            index.push(*first.entry(self.row(leaf)).or_insert(next));
        }
        let unique = first.len();
        (index, unique)
    }

    /// The element named by `(dimension, value)` pairs, if every name and
    /// value occurs.
    pub(crate) fn key_of(&self, conditions: &[(String, String)]) -> Option<ElementKey> {
        let mut key = Vec::with_capacity(conditions.len());
        for (name, value) in conditions {
            let dimension = self.names.iter().position(|n| n == name)?;
            let code = self.values[dimension].iter().position(|v| v == value)?;
            key.push((dimension, code as u32));
        }
        key.sort_unstable();
        Some(ElementKey(key))
    }

    pub(crate) fn matches(&self, leaf: usize, element: &ElementKey) -> bool {
        element
            .0
            .iter()
            .all(|&(d, code)| self.code(leaf, d) == code)
    }

    /// Membership of every leaf in `element`, restricted to `alive`.
    pub(crate) fn mask(&self, element: &ElementKey, alive: &[bool]) -> Vec<bool> {
        (0..self.leaves)
            .map(|leaf| alive[leaf] && self.matches(leaf, element))
            .collect()
    }

    /// The element as `(dimension name, value)` pairs.
    pub(crate) fn describe(&self, element: &ElementKey) -> Vec<(String, String)> {
        element
            .0
            .iter()
            .map(|&(d, code)| (self.names[d].clone(), self.values[d][code as usize].clone()))
            .collect()
    }

    /// All cuboids (sets of dimensions) of layers `1..=max_layer`, layer by
    /// layer, each in lexicographic order.
    pub(crate) fn cuboids(&self, max_layer: usize) -> Vec<Vec<usize>> {
        let dimensions = self.names.len();
        let mut out = Vec::new();
        for layer in 1..=max_layer.min(dimensions) {
            let mut combination: Vec<usize> = (0..layer).collect();
            loop {
                out.push(combination.clone());
                // Advance to the next combination in lexicographic order.
                let mut i = layer;
                while i > 0 && combination[i - 1] == dimensions - layer + i - 1 {
                    i -= 1;
                }
                if i == 0 {
                    break;
                }
                combination[i - 1] += 1;
                for j in i..layer {
                    combination[j] = combination[j - 1] + 1;
                }
            }
        }
        out
    }

    /// Groups the `alive` leaves by their values on `cuboid` and sums
    /// `columns` (each indexed by leaf) per group. Groups come out in order of
    /// first appearance.
    pub(crate) fn group<const N: usize>(
        &self,
        cuboid: &[usize],
        alive: &[bool],
        columns: [&[f64]; N],
    ) -> Vec<Group<N>> {
        let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut groups: Vec<Group<N>> = Vec::new();
        let mut key = Vec::with_capacity(cuboid.len());
        for leaf in (0..self.leaves).filter(|&leaf| alive[leaf]) {
            key.clear();
            key.extend(cuboid.iter().map(|&d| self.code(leaf, d)));
            let slot = match index.get(&key) {
                Some(&slot) => slot,
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push(Group {
                        element: ElementKey(
                            cuboid.iter().copied().zip(key.iter().copied()).collect(),
                        ),
                        sums: [0.0; N],
                        leaves: 0,
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[slot];
            for (sum, column) in group.sums.iter_mut().zip(columns.iter()) {
                *sum += column[leaf];
            }
            group.leaves += 1;
        }
        groups
    }
}

/// Sums over the leaves of one element.
#[derive(Debug, Clone)]
pub(crate) struct Group<const N: usize> {
    pub(crate) element: ElementKey,
    pub(crate) sums: [f64; N],
    pub(crate) leaves: usize,
}

/// Sums `columns` over the leaves where `mask` holds.
pub(crate) fn masked_sums<const N: usize>(mask: &[bool], columns: [&[f64]; N]) -> [f64; N] {
    let mut sums = [0.0; N];
    for (leaf, _) in mask.iter().enumerate().filter(|(_, inside)| **inside) {
        for (sum, column) in sums.iter_mut().zip(columns.iter()) {
            *sum += column[leaf];
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lattice(rows: &[[&str; 3]]) -> Lattice {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        Lattice::new(&names, rows.iter().map(|r| r.as_slice())).unwrap()
    }

    #[test]
    fn cuboids_cover_every_subset_once() {
        let l = lattice(&[["x", "y", "z"]]);
        let cuboids = l.cuboids(3);
        assert_eq!(cuboids.len(), 7);
        assert_eq!(cuboids[0], vec![0]);
        assert_eq!(cuboids[3], vec![0, 1]);
        assert_eq!(cuboids[6], vec![0, 1, 2]);
        assert_eq!(l.cuboids(2).len(), 6);
    }

    #[test]
    fn group_sums_per_element() {
        let l = lattice(&[["x", "y", "z"], ["x", "w", "z"], ["v", "y", "z"]]);
        let values = [1.0, 2.0, 4.0];
        let alive = [true, true, true];
        let groups = l.group(&[0], &alive, [&values]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].sums[0], 3.0);
        assert_eq!(groups[1].sums[0], 4.0);
        let groups = l.group(&[1, 2], &[true, false, true], [&values]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].sums[0], 5.0);
        assert_eq!(groups[0].leaves, 2);
    }
}
