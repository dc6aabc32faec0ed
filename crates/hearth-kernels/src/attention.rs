//! Attention dot products over an f16 KV cache, summed in the exact order
//! llama.cpp's CPU backend uses, so that scores and outputs agree to the bit.
//!
//! ggml computes a single query row with `ggml_vec_dot_f16` (four 16-lane
//! accumulators over 64-wide steps, folded pairwise, then a 16-lane tree) and
//! several rows with its tiled GEMM (one 16-lane accumulator, then the same
//! tree). Values enter the sums as f32 products fused with the accumulator.
//! A lane is chosen by the absolute index of the term (the key dimension for
//! scores, the cache position for outputs), so masked positions, which
//! contribute exact zeros, do not shift the order.

use half::f16;

/// Which of llama.cpp's summation orders to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumOrder {
    /// One query row (decode): `ggml_vec_dot_f16`.
    VecDot,
    /// Several query rows (prefill): the tiled GEMM.
    Tiled,
}

impl SumOrder {
    /// The order llama.cpp uses when `n_rows` query rows are evaluated at once.
    pub fn for_rows(n_rows: usize) -> Self {
        if n_rows == 1 {
            Self::VecDot
        } else {
            Self::Tiled
        }
    }

    fn accumulators(self) -> usize {
        match self {
            Self::VecDot => 4,
            Self::Tiled => 1,
        }
    }
}

/// Lanes of one accumulator.
const LANES: usize = 16;

/// Folds `acc` (`n_acc * 16 * width` values, accumulator-major then lane)
/// into `out` (`width`) the way ggml reduces.
#[inline(always)]
fn fold(acc: &mut [f32], n_acc: usize, width: usize, out: &mut [f32]) {
    let block = LANES * width;
    if n_acc == 4 {
        for i in 0..block {
            acc[i] += acc[2 * block + i];
            acc[block + i] += acc[3 * block + i];
        }
        for i in 0..block {
            acc[i] += acc[block + i];
        }
    }
    // 16-lane tree: (i, i + 8), (i, i + 4), (i, i + 2), (0, 1).
    let mut span = LANES / 2;
    while span >= 1 {
        for lane in 0..span {
            for d in 0..width {
                acc[lane * width + d] += acc[(lane + span) * width + d];
            }
        }
        span /= 2;
    }
    out.copy_from_slice(&acc[..width]);
}

#[inline(always)]
fn dot_impl(order: SumOrder, a: &[f16], b: &[f16]) -> f32 {
    let n_acc = order.accumulators();
    let mut acc = [0.0f32; 4 * LANES];
    let step = n_acc * LANES;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let slot = (i % step) / LANES * LANES + i % LANES;
        acc[slot] = x.to_f32().mul_add(y.to_f32(), acc[slot]);
    }
    let mut out = [0.0f32];
    fold(&mut acc[..n_acc * LANES], n_acc, 1, &mut out);
    out[0]
}

#[inline(always)]
fn weighted_sum_impl<'v>(
    order: SumOrder,
    weights: &[f32],
    first: usize,
    value: &dyn Fn(usize) -> &'v [f16],
    out: &mut [f32],
    acc: &mut [f32],
) {
    let width = out.len();
    let n_acc = order.accumulators();
    let acc = &mut acc[..n_acc * LANES * width];
    acc.fill(0.0);
    let step = n_acc * LANES;
    for (j, &w) in weights.iter().enumerate() {
        let pos = first + j;
        let slot = (pos % step) / LANES * LANES + pos % LANES;
        let row = &mut acc[slot * width..(slot + 1) * width];
        for (a, v) in row.iter_mut().zip(value(pos)) {
            *a = w.mul_add(v.to_f32(), *a);
        }
    }
    fold(acc, n_acc, width, out);
}

/// Converts `n_keys` key rows (`key(j)`, `width` values each) to f32 in
/// transposed layout `out[d * stride + j]`, with `stride` at least `n_keys`,
/// a multiple of 8 and never a multiple of 64 (rows a power-of-two apart
/// would fight over the same cache sets); the padding is zero. Returns the
/// stride.
pub fn transpose_keys<'k>(
    key: &dyn Fn(usize) -> &'k [f16],
    n_keys: usize,
    width: usize,
    out: &mut Vec<f32>,
) -> usize {
    let mut stride = n_keys.div_ceil(8) * 8;
    if stride.is_multiple_of(64) {
        stride += 8;
    }
    out.clear();
    out.resize(width * stride, 0.0);
    for j in 0..n_keys {
        for (d, v) in key(j).iter().take(width).enumerate() {
            out[d * stride + j] = v.to_f32();
        }
    }
    stride
}

#[inline(always)]
fn scores_transposed_impl(
    order: SumOrder,
    q: &[f16],
    keys_t: &[f32],
    stride: usize,
    first: usize,
    out: &mut [f32],
) {
    let width = q.len();
    let n_acc = order.accumulators();
    let step = n_acc * LANES;
    for (j, o) in out.iter_mut().enumerate() {
        let mut acc = [0.0f32; 4 * LANES];
        for (i, x) in q.iter().enumerate() {
            let slot = (i % step) / LANES * LANES + i % LANES;
            acc[slot] = x
                .to_f32()
                .mul_add(keys_t[i * stride + first + j], acc[slot]);
        }
        let mut r = [0.0f32];
        fold(&mut acc[..n_acc * LANES], n_acc, 1, &mut r);
        *o = r[0];
        let _ = width;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    /// Eight f16 values at `p` as f32.
    ///
    /// # Safety
    /// `p` must point to 8 readable f16 values; F16C must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    /// The 16-lane tree of `(lo, hi)`: lanes `i` and `i + 8`, then `i + 4`,
    /// `i + 2`, `i + 1`, as ggml's `_mm512_reduce_add_ps` associates them.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn tree16(lo: __m256, hi: __m256) -> f32 {
        let w = _mm256_add_ps(lo, hi);
        let x = _mm_add_ps(_mm256_castps256_ps128(w), _mm256_extractf128_ps(w, 1));
        let y = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let z = _mm_add_ss(y, _mm_shuffle_ps(y, y, 1));
        _mm_cvtss_f32(z)
    }

    /// [`super::scores_rows`] for widths that are multiples of 16 (up to 512).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn scores_rows(
        order: SumOrder,
        q: &[f16],
        keys: &[f16],
        row_stride: usize,
        offset: usize,
        first: usize,
        out: &mut [f32],
    ) {
        let width = q.len();
        let mut qv = [_mm256_setzero_ps(); 64];
        for (c, reg) in qv.iter_mut().enumerate().take(width / 8) {
            // SAFETY: `8 * c + 8 <= width == q.len()`.
            *reg = unsafe { load8(q.as_ptr().add(8 * c)) };
        }
        let n_acc = order.accumulators();
        let zero = _mm256_setzero_ps();
        for (j, o) in out.iter_mut().enumerate() {
            let start = (first + j) * row_stride + offset;
            let k = &keys[start..start + width];
            let mut acc = [[zero; 2]; 4];
            for c in 0..width / LANES {
                let slot = &mut acc[c % n_acc];
                // SAFETY: `16 * c + 16 <= width == k.len()`.
                unsafe {
                    let p = k.as_ptr().add(c * LANES);
                    slot[0] = _mm256_fmadd_ps(qv[2 * c], load8(p), slot[0]);
                    slot[1] = _mm256_fmadd_ps(qv[2 * c + 1], load8(p.add(8)), slot[1]);
                }
            }
            if n_acc == 4 {
                let [a0, a1, a2, a3] = acc;
                for h in 0..2 {
                    let folded = [_mm256_add_ps(a0[h], a2[h]), _mm256_add_ps(a1[h], a3[h])];
                    acc[0][h] = _mm256_add_ps(folded[0], folded[1]);
                }
            }
            *o = tree16(acc[0][0], acc[0][1]);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn weighted_sum<'v>(
        order: SumOrder,
        weights: &[f32],
        first: usize,
        value: &dyn Fn(usize) -> &'v [f16],
        out: &mut [f32],
        acc: &mut [f32],
    ) {
        let width = out.len();
        if !width.is_multiple_of(8) {
            return weighted_sum_impl(order, weights, first, value, out, acc);
        }
        let n_acc = order.accumulators();
        let rows = n_acc * LANES;
        let acc = &mut acc[..rows * width];
        acc.fill(0.0);
        for (j, &w) in weights.iter().enumerate() {
            let pos = first + j;
            let v = value(pos);
            if v.len() < width {
                continue;
            }
            let slot = (pos % rows) / LANES * LANES + pos % LANES;
            let row = &mut acc[slot * width..(slot + 1) * width];
            let wv = _mm256_set1_ps(w);
            for d in (0..width).step_by(8) {
                // SAFETY: `d + 8 <= width <= v.len()` and `row.len() == width`.
                unsafe {
                    let r = row.as_mut_ptr().add(d);
                    _mm256_storeu_ps(
                        r,
                        _mm256_fmadd_ps(wv, load8(v.as_ptr().add(d)), _mm256_loadu_ps(r)),
                    );
                }
            }
        }
        fold(acc, n_acc, width, out);
    }

    /// Scores of eight consecutive keys starting at column `j0` of the
    /// transposed keys, one key per lane, with `N_ACC` accumulators of 16
    /// lanes (4: `SumOrder::VecDot`, 1: `SumOrder::Tiled`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scores8<const N_ACC: usize>(q: &[f32], keys_t: &[f32], stride: usize, j0: usize) -> __m256 {
        let width = q.len();
        let zero = _mm256_setzero_ps();
        let mut acc = [[zero; LANES]; N_ACC];
        for c in 0..width / LANES {
            let slot = &mut acc[c % N_ACC];
            for (l, a) in slot.iter_mut().enumerate() {
                let d = c * LANES + l;
                // SAFETY: `d < width` and `j0 + 8 <= stride`, so the 8 values
                // at `d * stride + j0` lie inside `keys_t` (`width * stride`).
                let k = unsafe { _mm256_loadu_ps(keys_t.as_ptr().add(d * stride + j0)) };
                *a = _mm256_fmadd_ps(_mm256_set1_ps(q[d]), k, *a);
            }
        }
        let mut lanes = acc[0];
        if N_ACC == 4 {
            for l in 0..LANES {
                let folded = [
                    _mm256_add_ps(acc[0][l], acc[2 % N_ACC][l]),
                    _mm256_add_ps(acc[1 % N_ACC][l], acc[3 % N_ACC][l]),
                ];
                lanes[l] = _mm256_add_ps(folded[0], folded[1]);
            }
        }
        let mut span = LANES / 2;
        while span >= 1 {
            for l in 0..span {
                lanes[l] = _mm256_add_ps(lanes[l], lanes[l + span]);
            }
            span /= 2;
        }
        lanes[0]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn scores_transposed(
        order: SumOrder,
        q: &[f16],
        keys_t: &[f32],
        stride: usize,
        first: usize,
        out: &mut [f32],
    ) {
        let width = q.len();
        if !width.is_multiple_of(LANES) || width > 512 || keys_t.len() < width * stride {
            return scores_transposed_impl(order, q, keys_t, stride, first, out);
        }
        let mut qf = [0.0f32; 512];
        for (d, x) in q.iter().enumerate() {
            qf[d] = x.to_f32();
        }
        let qf = &qf[..width];
        // Blocks of 8 keys aligned to the stride's columns.
        let last = first + out.len();
        let mut j0 = first / 8 * 8;
        while j0 < last {
            let block = match order {
                SumOrder::VecDot => scores8::<4>(qf, keys_t, stride, j0),
                SumOrder::Tiled => scores8::<1>(qf, keys_t, stride, j0),
            };
            let mut values = [0.0f32; 8];
            // SAFETY: `values` holds 8 floats.
            unsafe { _mm256_storeu_ps(values.as_mut_ptr(), block) };
            for (i, v) in values.iter().enumerate() {
                let j = j0 + i;
                if j >= first && j < last {
                    out[j - first] = *v;
                }
            }
            j0 += 8;
        }
    }

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
}

/// `sum_i a[i] * b[i]` over the common length, in llama.cpp's `order`.
pub fn dot_f16_ordered(order: SumOrder, a: &[f16], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    let mut out = [0.0f32];
    scores_rows(order, &a[..n], &b[..n], 0, 0, 0, &mut out);
    out[0]
}

/// Scratch values [`weighted_sum_f16`] needs for outputs of `width`.
pub const fn weighted_sum_scratch_len(width: usize) -> usize {
    4 * LANES * width
}

/// `out[j] = dot(q, keys[(first + j) * row_stride + offset..][..q.len()])`
/// for every `j < out.len()`, in llama.cpp's `order`: the scores of one
/// query against keys laid out row by row (a KV cache). Same values as one
/// [`dot_f16_ordered`] per key, with the query converted once.
pub fn scores_rows(
    order: SumOrder,
    q: &[f16],
    keys: &[f16],
    row_stride: usize,
    offset: usize,
    first: usize,
    out: &mut [f32],
) {
    let width = q.len();
    let end = (first + out.len()).saturating_sub(1) * row_stride + offset + width;
    if out.is_empty() {
        return;
    }
    if end > keys.len() {
        out.fill(f32::NAN);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if x86::available() && width.is_multiple_of(LANES) && width <= 512 {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::scores_rows(order, q, keys, row_stride, offset, first, out) };
    }
    for (j, o) in out.iter_mut().enumerate() {
        let start = (first + j) * row_stride + offset;
        *o = dot_impl(order, q, &keys[start..start + width]);
    }
}

/// `out[j] = sum_i q[i] * key(first + j)[i]` for every `j < out.len()`, in
/// llama.cpp's `order`, with the keys given transposed by
/// [`transpose_keys`] (`keys_t[i * stride + j]`). Faster than one
/// [`dot_f16_ordered`] per key when many queries share the keys (prefill).
pub fn scores_transposed(
    order: SumOrder,
    q: &[f16],
    keys_t: &[f32],
    stride: usize,
    first: usize,
    out: &mut [f32],
) {
    if first + out.len() > stride || keys_t.len() < q.len() * stride {
        out.fill(f32::NAN);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::scores_transposed(order, q, keys_t, stride, first, out) };
    }
    scores_transposed_impl(order, q, keys_t, stride, first, out)
}

/// `out[d] = sum_j weights[j] * value(first + j)[d]` in llama.cpp's `order`,
/// where `weights` are the attention probabilities (already rounded to f16
/// values) of cache positions `first..first + weights.len()`. `acc` is
/// scratch of at least [`weighted_sum_scratch_len`]`(out.len())` values (a
/// shorter one costs an allocation). Each `value(pos)` should hold
/// `out.len()` values; shorter rows contribute over their length.
pub fn weighted_sum_f16<'v>(
    order: SumOrder,
    weights: &[f32],
    first: usize,
    value: &dyn Fn(usize) -> &'v [f16],
    out: &mut [f32],
    acc: &mut [f32],
) {
    let needed = weighted_sum_scratch_len(out.len());
    if acc.len() < needed {
        let mut own = vec![0.0; needed];
        return weighted_sum_f16(order, weights, first, value, out, &mut own);
    }
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { x86::weighted_sum(order, weights, first, value, out, acc) };
    }
    weighted_sum_impl(order, weights, first, value, out, acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(values: &[f32]) -> Vec<f16> {
        values.iter().map(|&v| f16::from_f32(v)).collect()
    }

    #[test]
    fn orders_agree_with_a_plain_sum_up_to_rounding() {
        let a: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..256)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0)
            .collect();
        let (a, b) = (halves(&a), halves(&b));
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
        for order in [SumOrder::VecDot, SumOrder::Tiled] {
            let got = dot_f16_ordered(order, &a, &b) as f64;
            assert!(
                (got - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                "{order:?}: {got} vs {exact}"
            );
            assert_eq!(
                got as f32,
                dot_impl(order, &a, &b),
                "SIMD build differs from portable"
            );
        }
    }

    #[test]
    fn the_two_orders_are_different_sums() {
        // 2^24 + 1 rounds back to 2^24 in f32: the association decides
        // whether the ones survive.
        let mut a = vec![0.0f32; 64];
        a[0] = 4096.0;
        a[16] = 1.0;
        a[32] = -4096.0;
        a[48] = 1.0;
        let mut b = vec![0.0f32; 64];
        b[0] = 4096.0;
        b[16] = 1.0;
        b[32] = 4096.0;
        b[48] = 1.0;
        let (a, b) = (halves(&a), halves(&b));
        // Tiled: ((2^24 + 1) - 2^24) + 1 = 1; VecDot: (2^24 - 2^24) + (1 + 1) = 2.
        assert_eq!(dot_f16_ordered(SumOrder::Tiled, &a, &b), 1.0);
        assert_eq!(dot_f16_ordered(SumOrder::VecDot, &a, &b), 2.0);
    }

    #[test]
    fn transposed_scores_equal_row_by_row_scores() {
        let keys: Vec<Vec<f16>> = (0..37)
            .map(|j| {
                halves(
                    &(0..64)
                        .map(|d| ((j * 7 + d * 13) % 29) as f32 / 3.0 - 4.0)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let q = halves(
            &(0..64)
                .map(|d| (d % 11) as f32 / 5.0 - 1.0)
                .collect::<Vec<_>>(),
        );
        let mut kt = Vec::new();
        let stride = transpose_keys(&|j| &keys[j], keys.len(), 64, &mut kt);
        for order in [SumOrder::VecDot, SumOrder::Tiled] {
            for first in [0, 3, 8, 30] {
                let mut out = vec![0.0; keys.len() - first];
                scores_transposed(order, &q, &kt, stride, first, &mut out);
                for (j, &s) in out.iter().enumerate() {
                    assert_eq!(
                        s,
                        dot_f16_ordered(order, &q, &keys[first + j]),
                        "{order:?} first {first} key {j}"
                    );
                }
                let mut portable = vec![0.0; keys.len() - first];
                scores_transposed_impl(order, &q, &kt, stride, first, &mut portable);
                assert_eq!(out, portable);
            }
        }
    }

    #[test]
    fn row_scores_equal_one_dot_per_key() {
        let width = 64;
        let stride = 3 * width;
        let cache: Vec<f16> = (0..20 * stride)
            .map(|i| f16::from_f32(((i * 31 % 97) as f32 - 48.0) / 11.0))
            .collect();
        let q = halves(
            &(0..width)
                .map(|d| (d % 13) as f32 / 6.0 - 1.0)
                .collect::<Vec<_>>(),
        );
        for order in [SumOrder::VecDot, SumOrder::Tiled] {
            let mut out = vec![0.0; 15];
            scores_rows(order, &q, &cache, stride, width, 5, &mut out);
            for (j, &s) in out.iter().enumerate() {
                let start = (5 + j) * stride + width;
                assert_eq!(s, dot_f16_ordered(order, &q, &cache[start..start + width]));
            }
        }
        let mut out = vec![0.0; 30];
        scores_rows(SumOrder::VecDot, &q, &cache, stride, width, 5, &mut out);
        assert!(
            out.iter().all(|v| v.is_nan()),
            "out-of-range rows are reported, not read"
        );
    }

    #[test]
    fn weighted_sum_matches_naive_and_respects_positions() {
        let values: Vec<Vec<f16>> = (0..40)
            .map(|p| halves(&[p as f32, 1.0, -(p as f32) / 4.0]))
            .collect();
        let weights: Vec<f32> = (0..30)
            .map(|j| f16::from_f32(1.0 / (j as f32 + 2.0)).to_f32())
            .collect();
        let mut acc = vec![0.0; weighted_sum_scratch_len(3)];
        for order in [SumOrder::VecDot, SumOrder::Tiled] {
            let mut out = [0.0f32; 3];
            weighted_sum_f16(order, &weights, 10, &|p| &values[p], &mut out, &mut acc);
            for d in 0..3 {
                let naive: f32 = weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w * values[10 + j][d].to_f32())
                    .sum();
                assert!(
                    (out[d] - naive).abs() <= 1e-4 * naive.abs().max(1.0),
                    "{order:?} {d}: {} vs {naive}",
                    out[d]
                );
            }
        }
    }
}
