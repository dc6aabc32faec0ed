//! Element-wise functions computed exactly as llama.cpp's CPU backend
//! computes them, rounding for rounding: ggml's `expf` polynomial (the Arm
//! optimized-routines one it vectorises), its softmax (16-wide blocks summed
//! in f64), SwiGLU, and RoPE with the multiply-adds fused the way its build
//! fuses them. Each function uses hardware FMA when the CPU has it and the
//! (bit-identical, slower) library `fma` otherwise.

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
