//! Element-wise and row operations of the transformer forward pass.
//!
//! Each has a portable version; the ones on the attention path over an f16
//! KV cache (`dot_f16`, `axpy_f16`, `f32_to_f16`) also have an AVX2/F16C
//! version chosen at run time. Slices of unequal length are processed over
//! their common prefix: the functions never panic on input.

use half::f16;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Whether the AVX2/F16C kernels can be used (detected once, then cached by
/// the standard library).
#[inline]
fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `sqrt(2 / pi)`, the constant of the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]`; the mean is over all
/// of `x`, the output over the common length of the three slices.
///
/// As in ggml, the squares are rounded to f32 and summed in f64, the mean
/// and the scale are f32, and `out[i] = (x[i] * scale) * weight[i]`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        unsafe {
            let mean = (avx2::sum_squares(x) / x.len() as f64) as f32;
            avx2::scale_mul(x, weight, 1.0 / (mean + eps).sqrt(), out);
        }
        return;
    }
    let sum_sq: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum_sq / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * g;
    }
}

/// In-place softmax over `x` (the maximum is subtracted first, so large
/// values do not overflow). `-inf` entries get probability 0; an all `-inf`
/// row becomes all zeros.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::softmax(x, max) };
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate[i] = silu(gate[i]) * up[i]` with `silu(g) = g / (1 + exp(-g))`,
/// over the common length.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::silu_mul(gate, up) };
    }
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]` (the tanh approximation
/// `0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))`), over the common length.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::gelu_tanh_mul(gate, up) };
    }
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        let inner = SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v);
        *g = 0.5 * v * (1.0 + inner.tanh()) * u;
    }
}

/// Dot product of f16 `a` and f16 `b` over their common length,
/// accumulated in f32.
pub fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::dot_f16(a, b) };
    }
    dot_f16_portable(a, b)
}

/// Portable [`dot_f16`].
#[doc(hidden)]
pub fn dot_f16_portable(a: &[f16], b: &[f16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x.to_f32() * y.to_f32()).sum()
}

/// `out[i] += alpha * v[i]` with f16 `v`, over the common length.
pub fn axpy_f16(out: &mut [f32], alpha: f32, v: &[f16]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::axpy_f16(out, alpha, v) };
    }
    axpy_f16_portable(out, alpha, v);
}

/// Portable [`axpy_f16`].
#[doc(hidden)]
pub fn axpy_f16_portable(out: &mut [f32], alpha: f32, v: &[f16]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += alpha * x.to_f32();
    }
}

/// Converts f32 to f16 (round to nearest even), over the common length.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::f32_to_f16(src, dst) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s);
    }
}
