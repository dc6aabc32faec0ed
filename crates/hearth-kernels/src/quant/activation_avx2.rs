//! AVX2 activation quantizers, bit-identical to the portable ones in
//! `activation.rs` (same products, same round-half-to-even).

use std::arch::x86_64::*;

use super::activation::{ActivationFormat, RowSlots};
use super::{QK, QK_K};

/// Whether the AVX2 quantizers can run on this CPU.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Eight f32 at `x[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8(x: &[f32], i: usize) -> __m256 {
    let chunk: &[f32; 8] = x[i..i + 8].try_into().unwrap_or(&[0.0; 8]);
    // SAFETY: `chunk` is 8 readable f32.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Rounds `v * scale` half-to-even to i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_scaled(v: __m256, scale: __m256) -> __m256i {
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        v, scale,
    ));
    _mm256_cvtps_epi32(r)
}

/// Packs 32 i32 lanes (values in i8 range) to 32 i8 in order and stores them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store_i8x32(q: [__m256i; 4], out: &mut [i8]) {
    let a = _mm256_packs_epi32(q[0], q[1]);
    let b = _mm256_packs_epi32(q[2], q[3]);
    let packed = _mm256_packs_epi16(a, b);
    // The packs interleave 128-bit lanes; restore the order of the 32-bit groups.
    let ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    let chunk: &mut [i8; 32] = match (&mut out[..32]).try_into() {
        Ok(chunk) => chunk,
        Err(_) => return,
    };
    // SAFETY: `chunk` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast(), ordered) }
}

/// Rounds an f32 to the nearest f16 and back.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn via_f16(v: f32) -> f32 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// Quantizes one activation row, as `quantize_row_into` does.
///
/// # Safety
/// AVX2, FMA and F16C must be available ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_row(format: ActivationFormat, x: &[f32], slots: RowSlots<'_>) {
    let sign = _mm256_set1_ps(-0.0);
    match format {
        ActivationFormat::Q8_0 | ActivationFormat::Q8_1 => {
            let blocks = x.chunks_exact(QK).zip(slots.qs.chunks_exact_mut(QK));
            for (b, (xb, qs)) in blocks.enumerate() {
                let v = [load8(xb, 0), load8(xb, 8), load8(xb, 16), load8(xb, 24)];
                let abs = v.map(|vi| _mm256_andnot_ps(sign, vi));
                let amax = hmax(_mm256_max_ps(
                    _mm256_max_ps(abs[0], abs[1]),
                    _mm256_max_ps(abs[2], abs[3]),
                ));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let scale = _mm256_set1_ps(id);
                let q = v.map(|vi| round_scaled(vi, scale));
                let sum = hsum_epi32(_mm256_add_epi32(
                    _mm256_add_epi32(q[0], q[1]),
                    _mm256_add_epi32(q[2], q[3]),
                ));
                store_i8x32(q, qs);
                let d16 = via_f16(d);
                slots.d[b] = d16;
                slots.s[b] = if format == ActivationFormat::Q8_1 {
                    via_f16(d * sum as f32)
                } else {
                    d16 * sum as f32
                };
            }
        }
        ActivationFormat::Q8K => {
            let blocks = x.chunks_exact(QK_K).zip(slots.qs.chunks_exact_mut(QK_K));
            for (b, (xb, qs)) in blocks.enumerate() {
                let mut vmax = _mm256_setzero_ps();
                for i in (0..QK_K).step_by(8) {
                    vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, load8(xb, i)));
                }
                let amax = hmax(vmax);
                if amax == 0.0 {
                    qs.fill(0);
                    slots.d[b] = 0.0;
                    slots.bsums[b * 16..(b + 1) * 16].fill(0);
                    continue;
                }
                // The first value of largest magnitude, with its sign.
                let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
                let iscale = -127.0 / max;
                let scale = _mm256_set1_ps(iscale);
                let top = _mm256_set1_epi32(127);
                let bottom = _mm256_set1_epi32(-128);
                for (run, (x32, q32)) in
                    xb.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate()
                {
                    let q = [0, 8, 16, 24].map(|i| {
                        _mm256_max_epi32(
                            _mm256_min_epi32(round_scaled(load8(x32, i), scale), top),
                            bottom,
                        )
                    });
                    slots.bsums[b * 16 + 2 * run] = hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16;
                    slots.bsums[b * 16 + 2 * run + 1] =
                        hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16;
                    store_i8x32(q, q32);
                }
                slots.d[b] = 1.0 / iscale;
            }
        }
    }
}
