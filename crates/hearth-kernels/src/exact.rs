//! Element-wise functions computed exactly as llama.cpp's CPU backend
//! computes them, rounding for rounding: ggml's `expf` polynomial (the Arm
//! optimized-routines one it vectorises), its softmax (16-wide blocks summed
//! in f64), RMS norm (squares summed in f64, in order), SwiGLU, GEGLU through
//! its f16 GELU table, and RoPE with the multiply-adds fused the way its
//! build fuses them. Each function uses hardware FMA when the CPU has it and the
//! (bit-identical, slower) library `fma` otherwise.

use half::f16;

/// ggml's vectorised `expf` (the Arm optimized-routines polynomial) in
/// scalar form, so softmax and SiLU round exactly as llama.cpp's do.
#[inline(always)]
fn expf_impl(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        );
    let j = j.mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0));
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let n = n as i32;
    if n > 192 {
        return f32::INFINITY;
    }
    if n < -192 {
        return 0.0;
    }
    // 2^n in two exact steps where it leaves the normal range.
    if n > 126 {
        return j * pow2(126) * pow2(n - 126);
    }
    if n < -126 {
        return j * pow2(-126) * pow2(n + 126);
    }
    j * pow2(n)
}

#[inline(always)]
fn softmax_impl(x: &mut [f32], first: usize) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    // Chunks of 16 aligned at absolute position 0, masked slots count as 0.
    let mut start = 0;
    let lead = first % 16;
    while start < x.len() {
        let take = if start == 0 {
            (16 - lead).min(x.len())
        } else {
            16.min(x.len() - start)
        };
        let mut v = [0.0f32; 16];
        let off = if start == 0 { lead } else { 0 };
        for k in 0..take {
            let e = expf_impl(x[start + k] - max);
            x[start + k] = e;
            v[off + k] = e;
        }
        let w: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
        let y: [f32; 4] = std::array::from_fn(|i| w[i] + w[i + 4]);
        let z: [f32; 2] = std::array::from_fn(|i| y[i] + y[i + 2]);
        sum += (z[0] + z[1]) as f64;
        start += take;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[inline(always)]
fn swiglu_impl(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + expf_impl(-*g)) * u;
    }
}

/// ggml's GELU table entry for `x`: the input rounded to f16, the tanh
/// approximation in f32 with `1 + a*x*x` fused (as llama.cpp builds the
/// table), the result rounded to f16; `|x| >= 10` passes through or is 0.
#[inline(always)]
fn gelu_table_impl(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let v = f16::from_f32(x).to_f32();
    let inner = SQRT_2_OVER_PI * v * (COEF_A * v).mul_add(v, 1.0);
    f16::from_f32(0.5 * v * (1.0 + inner.tanh())).to_f32()
}

#[inline(always)]
fn geglu_impl(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_table_impl(*g) * u;
    }
}

#[inline(always)]
fn rope_impl(head: &mut [f32], pairs: &[(usize, usize)], cos: &[f32], sin: &[f32]) {
    for (i, &(a, b)) in pairs.iter().enumerate() {
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
        head[b] = x0.mul_add(sin[i], x1 * cos[i]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "fma")]
    pub(super) fn softmax(x: &mut [f32], first: usize) {
        super::softmax_impl(x, first)
    }

    #[target_feature(enable = "fma")]
    pub(super) fn swiglu(gate: &mut [f32], up: &[f32]) {
        super::swiglu_impl(gate, up)
    }

    #[target_feature(enable = "fma")]
    pub(super) fn geglu(gate: &mut [f32], up: &[f32]) {
        super::geglu_impl(gate, up)
    }

    #[target_feature(enable = "fma")]
    pub(super) fn rope(head: &mut [f32], pairs: &[(usize, usize)], cos: &[f32], sin: &[f32]) {
        super::rope_impl(head, pairs, cos, sin)
    }

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("fma")
    }
}

/// ggml's `expf`: within 1.5 ulp of the true value; overflows to infinity
/// above ~88.7 and underflows towards zero below ~-87.
pub fn expf(x: f32) -> f32 {
    expf_impl(x)
}

/// In-place softmax of the attention scores of cache positions
/// `first..first + x.len()`, as ggml computes a row padded with masked
/// (zero-probability) positions: exponentials in blocks of 16 aligned to
/// position 0, each block summed as a 16-lane tree, the block sums in f64.
pub fn softmax(x: &mut [f32], first: usize) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has FMA.
        return unsafe { x86::softmax(x, first) };
    }
    softmax_impl(x, first)
}

/// `gate[i] = silu(gate[i]) * up[i]` with ggml's `expf`, over the common length.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has FMA.
        return unsafe { x86::swiglu(gate, up) };
    }
    swiglu_impl(gate, up)
}

/// `gate[i] = gelu(gate[i]) * up[i]` with ggml's f16 GELU table, over the
/// common length.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has FMA.
        return unsafe { x86::geglu(gate, up) };
    }
    geglu_impl(gate, up)
}

/// `out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]` as ggml computes it:
/// the squares rounded to f32 and summed in f64 in order, the mean and the
/// scale in f32, `out[i] = (x[i] * scale) * weight[i]`. The mean is over all
/// of `x`; the output covers the common length of the three slices.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let sum: f64 = x.iter().map(|v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Rotates the dimension pairs `pairs[i]` of `head` by the angle whose cosine
/// and sine are `cos[i]`, `sin[i]`. Every index must be inside `head`, and
/// `cos`/`sin` at least as long as `pairs` (shorter ones stop early).
pub fn rope(head: &mut [f32], pairs: &[(usize, usize)], cos: &[f32], sin: &[f32]) {
    let n = pairs.len().min(cos.len()).min(sin.len());
    if pairs[..n]
        .iter()
        .any(|&(a, b)| a >= head.len() || b >= head.len())
    {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has FMA.
        return unsafe { x86::rope(head, &pairs[..n], cos, sin) };
    }
    rope_impl(head, &pairs[..n], cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_within_two_ulp_of_libm() {
        for i in -870..=880 {
            let x = i as f32 / 10.0 + 0.0123;
            let (ours, libm) = (expf(x), x.exp());
            let ulp = (libm.to_bits() as i64 - ours.to_bits() as i64).abs();
            assert!(ulp <= 2, "x = {x}: {ours} vs {libm}");
        }
        assert_eq!(expf(100.0), f32::INFINITY);
        assert!(expf(-100.0) < 1e-40);
    }

    #[test]
    fn softmax_sums_to_one_and_ignores_alignment_for_the_value() {
        let mut a: Vec<f32> = (0..40).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut b = a.clone();
        softmax(&mut a, 0);
        softmax(&mut b, 5);
        let sum: f32 = a.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn geglu_is_the_tanh_gelu_to_f16_precision() {
        let gate = [
            -1e4f32, -30.0, -3.0, -1.0, -1e-3, 0.0, 1e-3, 0.25, 1.0, 3.0, 7.5, 9.99, 30.0, 1e4,
        ];
        let mut got = gate;
        geglu(&mut got, &[2.0; 14]);
        for (&g, &y) in gate.iter().zip(&got) {
            let g64 = g as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (g64 + 0.044715 * g64 * g64 * g64);
            let want = 2.0 * 0.5 * g64 * (1.0 + inner.tanh());
            // Input and output go through f16: 2^-10 relative each.
            assert!(
                (y as f64 - want).abs() <= 2.5e-3 * want.abs() + 1e-6,
                "gelu({g}) = {y}, want {want}"
            );
        }
        // The table covers (-10, 10); outside, x passes through or is 0.
        assert_eq!(got[0], 0.0);
        assert_eq!(got[13], 2e4);
    }

    #[test]
    fn rms_norm_sums_in_order_in_f64() {
        let x = [3.0f32, -4.0, 0.0, 12.0];
        let w = [1.0f32, 2.0, 3.0, 0.5];
        let mut out = [0.0f32; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        // mean of squares = 169 / 4, scale = 2 / 13.
        let scale = 1.0 / (169.0f32 / 4.0).sqrt();
        assert_eq!(
            out,
            [3.0 * scale, -4.0 * scale * 2.0, 0.0, 12.0 * scale * 0.5]
        );
        // 1 + 2^-30 squared keeps its low bits only in f64.
        let tiny = [1.0f32, 1e-8, 1e-8, 1e-8];
        let mut out = [0.0f32; 4];
        rms_norm(&tiny, &[1.0; 4], 0.0, &mut out);
        assert!((out[0] - 2.0).abs() < 1e-6);
        rms_norm(&[], &[], 1e-6, &mut []);
    }

    #[test]
    fn softmax_gives_masked_scores_zero_and_keeps_extremes_finite() {
        let mut x = vec![0.5f32; 19];
        x[3] = f32::NEG_INFINITY;
        x[9] = f32::NEG_INFINITY;
        x[11] = 80.0;
        x[12] = -200.0;
        softmax(&mut x, 0);
        assert_eq!((x[3], x[9], x[12]), (0.0, 0.0, 0.0));
        assert!((x[11] - 1.0).abs() < 1e-6);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut big = [1e30f32, 1e30];
        softmax(&mut big, 0);
        assert_eq!(big, [0.5, 0.5]);
    }

    #[test]
    fn softmax_exp_is_accurate_over_the_useful_range() {
        // softmax([0, v]) = [1 / (1 + e^v), e^v / (1 + e^v)].
        for k in -870..=0 {
            let v = k as f32 / 10.0;
            let mut x = [0.0, v];
            softmax(&mut x, 0);
            let e = (v as f64).exp();
            let want = e / (1.0 + e);
            assert!(
                (x[1] as f64 - want).abs() <= 5e-7 * want + 1e-37,
                "exp({v}): {} vs {want}",
                x[1]
            );
        }
    }

    #[test]
    fn swiglu_and_rope_match_their_definitions() {
        let mut g = [0.5f32, -2.0, 3.0];
        swiglu(&mut g, &[2.0, 1.0, -1.0]);
        for (got, want) in g.iter().zip([
            0.5 / (1.0 + (-0.5f32).exp()) * 2.0,
            -2.0 / (1.0 + 2f32.exp()),
            -3.0 / (1.0 + (-3f32).exp()),
        ]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let mut head = [1.0f32, 0.0, 0.0, 1.0];
        let (c, s) = (0.6f32, 0.8f32);
        rope(&mut head, &[(0, 1), (2, 3)], &[c, c], &[s, s]);
        assert_eq!(head, [0.6, 0.8, -0.8, 0.6]);
        // Out-of-range pairs are ignored rather than panicking.
        rope(&mut head, &[(0, 9)], &[c], &[s]);
        assert_eq!(head, [0.6, 0.8, -0.8, 0.6]);
    }
}
