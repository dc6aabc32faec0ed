//! AVX2/F16C versions of the f16 operations on the attention path.

use std::arch::x86_64::*;

use half::f16;

/// Whether these kernels can run on this CPU.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Eight f16 at `v[i..i + 8]` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8_f16(v: &[f16], i: usize) -> __m256 {
    let chunk: &[f16; 8] = match v[i..i + 8].try_into() {
        Ok(chunk) => chunk,
        Err(_) => return _mm256_setzero_ps(),
    };
    // SAFETY: `chunk` is 16 readable bytes (f16 is a plain u16).
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8_f32(v: &[f32], i: usize) -> __m256 {
    let chunk: &[f32; 8] = match v[i..i + 8].try_into() {
        Ok(chunk) => chunk,
        Err(_) => return _mm256_setzero_ps(),
    };
    // SAFETY: `chunk` is 8 readable f32.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store8_f32(v: &mut [f32], i: usize, x: __m256) {
    if let Ok(chunk) = <&mut [f32; 8]>::try_from(&mut v[i..i + 8]) {
        // SAFETY: `chunk` is 8 writable f32.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), x) }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load8_f16(a, i + 8 * k), load8_f16(b, i + 8 * k), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load8_f16(a, i), load8_f16(b, i), acc[0]);
        i += 8;
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += a[j].to_f32() * b[j].to_f32();
    }
    sum
}

/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy_f16(out: &mut [f32], alpha: f32, v: &[f16]) {
    let n = out.len().min(v.len());
    let a = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let y = _mm256_fmadd_ps(a, load8_f16(v, i), load8_f32(out, i));
        store8_f32(out, i, y);
        i += 8;
    }
    for j in i..n {
        out[j] += alpha * v[j].to_f32();
    }
}

/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(load8_f32(src, i));
        if let Ok(chunk) = <&mut [f16; 8]>::try_from(&mut dst[i..i + 8]) {
            // SAFETY: `chunk` is 16 writable bytes.
            unsafe { _mm_storeu_si128(chunk.as_mut_ptr().cast(), h) }
        }
        i += 8;
    }
    for j in i..n {
        dst[j] = f16::from_f32(src[j]);
    }
}

/// `exp(x)` per lane: range reduction by `ln 2` (split in two parts for
/// accuracy) and a degree-6 polynomial on `[-ln2/2, ln2/2]`; about 1 ulp.
/// Lanes below `-87.3` (where the result would be subnormal) give 0, lanes
/// above `88.7` give `+inf`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp(x: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let too_small = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.336_55));
    let too_large = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(88.722_83));
    let xc = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.722_83)),
        _mm256_set1_ps(-87.336_55),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    // Taylor coefficients 1/k! for k = 6 down to 2.
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    // 2^n: n is in [-126, 128]; build it in two halves so 2^128 does not
    // overflow the exponent field.
    let ni = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32::<1>(ni);
    let pow_a = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        half,
        _mm256_set1_epi32(127),
    )));
    let pow_b = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_sub_epi32(ni, half),
        _mm256_set1_epi32(127),
    )));
    let y = _mm256_mul_ps(_mm256_mul_ps(p, pow_a), pow_b);
    let y = _mm256_andnot_ps(too_small, y);
    _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), too_large)
}

/// `sum(x[i] * x[i])` with the products rounded to f32 and summed in f64.
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [_mm256_setzero_pd(); 2];
    let mut i = 0;
    while i + 8 <= x.len() {
        let v = load8_f32(x, i);
        let sq = _mm256_mul_ps(v, v);
        acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(sq)));
        i += 8;
    }
    let sum = _mm256_add_pd(acc[0], acc[1]);
    let pair = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd::<1>(sum));
    let mut total = _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
    for &v in &x[i..] {
        total += (v * v) as f64;
    }
    total
}

/// `out[i] = x[i] * scale * weight[i]` over the common length.
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_mul(x: &[f32], weight: &[f32], scale: f32, out: &mut [f32]) {
    let n = x.len().min(weight.len()).min(out.len());
    let s = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 8 <= n {
        store8_f32(
            out,
            i,
            _mm256_mul_ps(_mm256_mul_ps(load8_f32(x, i), s), load8_f32(weight, i)),
        );
        i += 8;
    }
    for j in i..n {
        out[j] = x[j] * scale * weight[j];
    }
}

/// In-place softmax; `x` must not be all `-inf` (handled by the caller).
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn softmax(x: &mut [f32], max: f32) {
    let n = x.len();
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp(_mm256_sub_ps(load8_f32(x, i), m));
        store8_f32(x, i, e);
        acc = _mm256_add_ps(acc, e);
        i += 8;
    }
    let mut sum = hsum(acc);
    for v in &mut x[i..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = _mm256_set1_ps(1.0 / sum);
    let mut i = 0;
    while i + 8 <= n {
        store8_f32(x, i, _mm256_mul_ps(load8_f32(x, i), inv));
        i += 8;
    }
    for v in &mut x[i..] {
        *v /= sum;
    }
}

/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let g = load8_f32(gate, i);
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        store8_f32(gate, i, _mm256_mul_ps(silu, load8_f32(up, i)));
        i += 8;
    }
    for j in i..n {
        let g = gate[j];
        gate[j] = g / (1.0 + (-g).exp()) * up[j];
    }
}

/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let g = load8_f32(gate, i);
        let g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
        let inner = _mm256_mul_ps(
            _mm256_set1_ps(super::SQRT_2_OVER_PI),
            _mm256_fmadd_ps(g3, _mm256_set1_ps(0.044_715), g),
        );
        // 1 + tanh(y) = 2 - 2 / (exp(2y) + 1) = 2 exp(2y) / (exp(2y) + 1);
        // the clamp keeps exp finite, where tanh is already +-1 in f32.
        let y2 = _mm256_max_ps(
            _mm256_min_ps(_mm256_add_ps(inner, inner), _mm256_set1_ps(40.0)),
            _mm256_set1_ps(-40.0),
        );
        let e = exp(y2);
        let one_plus_tanh = _mm256_div_ps(_mm256_add_ps(e, e), _mm256_add_ps(e, one));
        let gelu = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), g), one_plus_tanh);
        store8_f32(gate, i, _mm256_mul_ps(gelu, load8_f32(up, i)));
        i += 8;
    }
    for j in i..n {
        let g = gate[j];
        let inner = super::SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
        gate[j] = 0.5 * g * (1.0 + inner.tanh()) * up[j];
    }
}
