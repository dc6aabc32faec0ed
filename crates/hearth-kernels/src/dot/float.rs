//! Products with unquantized (f32, f16, bf16) weights and f32 activations.

use std::ops::Range;

use super::Job;
use crate::WeightType;

/// Dot of a stored float row with f32 `x`.
fn dot_float_row(ty: WeightType, w: &[u8], x: &[f32]) -> f32 {
    match ty {
        WeightType::F32 => w
            .chunks_exact(4)
            .zip(x)
            .map(|(b, &v)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v)
            .sum(),
        WeightType::F16 => w
            .chunks_exact(2)
            .zip(x)
            .map(|(b, &v)| half::f16::from_le_bytes([b[0], b[1]]).to_f32() * v)
            .sum(),
        WeightType::BF16 => w
            .chunks_exact(2)
            .zip(x)
            .map(|(b, &v)| half::bf16::from_le_bytes([b[0], b[1]]).to_f32() * v)
            .sum(),
        _ => 0.0,
    }
}

/// The portable kernel for float weight types.
pub(crate) fn scalar_float(job: &Job<'_>, rows: Range<usize>, tokens: Range<usize>) {
    let cols = job.w.cols();
    let ty = job.w.ty();
    for t in tokens {
        let x = &job.x[t * cols..(t + 1) * cols];
        for r in rows.clone() {
            job.out.set(t, r, dot_float_row(ty, job.weight_row(r), x));
        }
    }
}
