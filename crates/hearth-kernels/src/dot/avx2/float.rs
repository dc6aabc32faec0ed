//! AVX2 dots of f32, f16 and bf16 weight rows with f32 activations.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::Job;
use super::{Cpu, hsum_ps};
use crate::WeightType;

/// Eight weights starting at `p` as f32.
///
/// # Safety
/// `p` must have 8 readable values of `ty`; AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(ty: WeightType, p: *const u8) -> __m256 {
    // SAFETY: 32 bytes (f32) or 16 bytes (f16, bf16) readable (caller).
    unsafe {
        match ty {
            WeightType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            WeightType::BF16 => {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
            }
            _ => _mm256_loadu_ps(p.cast()),
        }
    }
}

/// `dot(w, x)` with `w` a row of `x.len()` values of `ty`.
///
/// # Safety
/// `w` must hold `x.len()` values of `ty`; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row(ty: WeightType, w: &[u8], x: &[f32]) -> f32 {
    let size = ty.type_size();
    let n = x.len();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 8 * k;
            // SAFETY: values `j..j + 8` exist in both rows (`j + 8 <= n`).
            let (wv, xv) = unsafe {
                (
                    load8(ty, w.as_ptr().add(j * size)),
                    _mm256_loadu_ps(x.as_ptr().add(j)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: values `i..i + 8` exist in both rows.
        let (wv, xv) = unsafe {
            (
                load8(ty, w.as_ptr().add(i * size)),
                _mm256_loadu_ps(x.as_ptr().add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum_ps(sum);
    let mut tail = [0.0f32; 8];
    if crate::quant::dequantize_row(ty, &w[i * size..n * size], &mut tail[..n - i]).is_ok() {
        total += tail[..n - i]
            .iter()
            .zip(&x[i..])
            .map(|(a, b)| a * b)
            .sum::<f32>();
    }
    total
}

/// Range kernel for float weight types.
pub(super) fn range(job: &Job<'_>, rows: Range<usize>, tokens: Range<usize>) {
    let Some(_cpu) = Cpu::detect() else {
        return super::super::float::scalar_float(job, rows, tokens);
    };
    let ty = job.w.ty();
    let cols = job.w.cols();
    for t in tokens {
        let x = &job.x[t * cols..(t + 1) * cols];
        for r in rows.clone() {
            let w = job.weight_row(r);
            assert!(w.len() >= cols * ty.type_size(), "weight row too short");
            // SAFETY: features detected above; the row holds `cols` values.
            let v = unsafe { dot_row(ty, w, x) };
            job.out.set(t, r, v);
        }
    }
}
