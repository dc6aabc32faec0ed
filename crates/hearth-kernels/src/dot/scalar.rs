//! Portable dot products of one weight row with one quantized activation
//! row: integer sums inside each block, f32 scaling per block.
//!
//! These are the reference for the SIMD kernels and the fallback on CPUs
//! without them. `w` is one row in its stored layout and `x` the matching
//! activation row; the caller guarantees matching lengths.

use crate::WeightType;
use crate::quant::kquants::{q3_k_scales, q6_k_value, scale_min_k4};
use crate::quant::legacy::{q5_pair, qh_at};
use crate::quant::{QK, QK_K, QuantizedRow, f16_at};

/// `dot(w, x)` for a quantized weight type with its companion activation
/// format; float types return 0 (they take the f32 path).
pub(crate) fn dot_row(ty: WeightType, w: &[u8], x: QuantizedRow<'_>) -> f32 {
    match ty {
        WeightType::Q4_0 => dot_q4_0(w, x),
        WeightType::Q4_1 => dot_q4_1(w, x),
        WeightType::Q5_0 => dot_q5_0(w, x),
        WeightType::Q5_1 => dot_q5_1(w, x),
        WeightType::Q8_0 => dot_q8_0(w, x),
        WeightType::Q2K => dot_q2_k(w, x),
        WeightType::Q3K => dot_q3_k(w, x),
        WeightType::Q4K => dot_q4_k(w, x),
        WeightType::Q5K => dot_q5_k(w, x),
        WeightType::Q6K => dot_q6_k(w, x),
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => 0.0,
    }
}

/// Blocks of 32 values: `(weight block, activation quants, activation d, activation s)`.
fn blocks32<'a>(
    w: &'a [u8],
    type_size: usize,
    x: QuantizedRow<'a>,
) -> impl Iterator<Item = (&'a [u8], &'a [i8], f32, f32)> + 'a {
    w.chunks_exact(type_size)
        .zip(x.qs.chunks_exact(QK))
        .zip(x.d.iter().zip(x.s))
        .map(|((wb, xq), (&d, &s))| (wb, xq, d, s))
}

fn dot_q4_0(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, _) in blocks32(w, 18, x) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += ((wb[2 + j] & 0x0F) as i32 - 8) * xq[j] as i32;
            isum += ((wb[2 + j] >> 4) as i32 - 8) * xq[j + 16] as i32;
        }
        sum += f16_at(wb, 0) * dx * isum as f32;
    }
    sum
}

fn dot_q4_1(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    let mut sum_min = 0.0f32;
    for (wb, xq, dx, sx) in blocks32(w, 20, x) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (wb[4 + j] & 0x0F) as i32 * xq[j] as i32;
            isum += (wb[4 + j] >> 4) as i32 * xq[j + 16] as i32;
        }
        sum += f16_at(wb, 0) * dx * isum as f32;
        sum_min += f16_at(wb, 2) * sx;
    }
    sum + sum_min
}

fn dot_q5_0(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, _) in blocks32(w, 22, x) {
        let qh = qh_at(wb, 2);
        let mut isum = 0i32;
        for j in 0..16 {
            let (lo, hi) = q5_pair(&wb[6..22], qh, j);
            isum += (lo as i32 - 16) * xq[j] as i32 + (hi as i32 - 16) * xq[j + 16] as i32;
        }
        sum += f16_at(wb, 0) * dx * isum as f32;
    }
    sum
}

fn dot_q5_1(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    let mut sum_min = 0.0f32;
    for (wb, xq, dx, sx) in blocks32(w, 24, x) {
        let qh = qh_at(wb, 4);
        let mut isum = 0i32;
        for j in 0..16 {
            let (lo, hi) = q5_pair(&wb[8..24], qh, j);
            isum += lo as i32 * xq[j] as i32 + hi as i32 * xq[j + 16] as i32;
        }
        sum += f16_at(wb, 0) * dx * isum as f32;
        sum_min += f16_at(wb, 2) * sx;
    }
    sum + sum_min
}

fn dot_q8_0(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, _) in blocks32(w, 34, x) {
        let isum: i32 = wb[2..34]
            .iter()
            .zip(xq)
            .map(|(&q, &v)| (q as i8) as i32 * v as i32)
            .sum();
        sum += f16_at(wb, 0) * dx * isum as f32;
    }
    sum
}

/// Super-blocks: `(weight block, activation quants, activation d, bsums)`.
fn blocks256<'a>(
    w: &'a [u8],
    type_size: usize,
    x: QuantizedRow<'a>,
) -> impl Iterator<Item = (&'a [u8], &'a [i8], f32, &'a [i16])> + 'a {
    w.chunks_exact(type_size)
        .zip(x.qs.chunks_exact(QK_K))
        .zip(x.d.iter().zip(x.bsums.chunks_exact(16)))
        .map(|((wb, xq), (&d, bs))| (wb, xq, d, bs))
}

fn dot_q2_k(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, bsums) in blocks256(w, 84, x) {
        let scales = &wb[0..16];
        let qs = &wb[16..80];
        let mut isum = 0i32;
        let mut isum_min = 0i32;
        for (i, &v) in xq.iter().enumerate() {
            let q = (qs[(i / 128) * 32 + i % 32] >> (2 * ((i % 128) / 32))) & 3;
            isum += (scales[i / 16] & 0x0F) as i32 * q as i32 * v as i32;
        }
        for (j, &b) in bsums.iter().enumerate() {
            isum_min += (scales[j] >> 4) as i32 * b as i32;
        }
        sum += dx * (f16_at(wb, 80) * isum as f32 - f16_at(wb, 82) * isum_min as f32);
    }
    sum
}

fn dot_q3_k(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, _) in blocks256(w, 110, x) {
        let hmask = &wb[0..32];
        let qs = &wb[32..96];
        let scales = q3_k_scales(&wb[96..108]);
        let mut isum = 0i32;
        for (run, xr) in xq.chunks_exact(16).enumerate() {
            let mut run_sum = 0i32;
            for (k, &v) in xr.iter().enumerate() {
                let i = run * 16 + k;
                let (half, plane, l) = (i / 128, (i % 128) / 32, i % 32);
                let low = ((qs[half * 32 + l] >> (2 * plane)) & 3) as i32;
                let high = hmask[l] & (1 << (half * 4 + plane)) != 0;
                run_sum += (low - if high { 0 } else { 4 }) * v as i32;
            }
            isum += scales[run] as i32 * run_sum;
        }
        sum += dx * f16_at(wb, 108) * isum as f32;
    }
    sum
}

/// Shared by `Q4_K` and `Q5_K`: `value(i)` gives the unsigned quant of
/// position `i` of the block. Returns the integer sums `(sum sc * w * q,
/// sum m * bsum)` of the super-block.
fn q45_k_sums(wb: &[u8], xq: &[i8], bsums: &[i16], value: impl Fn(usize) -> u8) -> (i32, i32) {
    let scales = &wb[4..16];
    let mut isum = 0i32;
    let mut isum_min = 0i32;
    for (j, xr) in xq.chunks_exact(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let run: i32 = xr
            .iter()
            .enumerate()
            .map(|(k, &v)| value(j * 32 + k) as i32 * v as i32)
            .sum();
        isum += sc as i32 * run;
        isum_min += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
    }
    (isum, isum_min)
}

/// As llama.cpp's kernels for interleaved `Q4_K` rows: the scale and min
/// parts accumulate separately over super-blocks.
fn dot_q4_k(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    let mut sum_min = 0.0f32;
    for (wb, xq, dx, bsums) in blocks256(w, 144, x) {
        let qs = &wb[16..144];
        let (isum, isum_min) = q45_k_sums(wb, xq, bsums, |i| {
            let byte = qs[(i / 64) * 32 + i % 32];
            if (i / 32) % 2 == 0 {
                byte & 0x0F
            } else {
                byte >> 4
            }
        });
        sum += isum as f32 * (f16_at(wb, 0) * dx);
        sum_min += isum_min as f32 * (f16_at(wb, 2) * dx);
    }
    sum - sum_min
}

fn dot_q5_k(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, bsums) in blocks256(w, 176, x) {
        let qh = &wb[16..48];
        let qs = &wb[48..176];
        let (isum, isum_min) = q45_k_sums(wb, xq, bsums, |i| {
            let byte = qs[(i / 64) * 32 + i % 32];
            let low = if (i / 32) % 2 == 0 {
                byte & 0x0F
            } else {
                byte >> 4
            };
            low | (((qh[i % 32] >> (i / 32)) & 1) << 4)
        });
        sum += dx * (f16_at(wb, 0) * isum as f32 - f16_at(wb, 2) * isum_min as f32);
    }
    sum
}

fn dot_q6_k(w: &[u8], x: QuantizedRow<'_>) -> f32 {
    let mut sum = 0.0f32;
    for (wb, xq, dx, _) in blocks256(w, 210, x) {
        let (ql, qh, scales) = (&wb[0..128], &wb[128..192], &wb[192..208]);
        let mut isum = 0i32;
        for (run, xr) in xq.chunks_exact(16).enumerate() {
            let run_sum: i32 = xr
                .iter()
                .enumerate()
                .map(|(k, &v)| (q6_k_value(ql, qh, run * 16 + k) as i32 - 32) * v as i32)
                .sum();
            isum += (scales[run] as i8) as i32 * run_sum;
        }
        sum += dx * f16_at(wb, 208) * isum as f32;
    }
    sum
}
