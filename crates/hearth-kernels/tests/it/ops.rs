//! Row and element-wise operations against naive f64 code.

use half::f16;
use hearth_kernels::ops;
use proptest::prelude::*;

use crate::support::Rng;

/// f32 kernels against f64 references, relative to the magnitude of the
/// terms involved.
const TOL_F32: f64 = 1e-5;

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rms_norm_matches_naive(seed in any::<u64>(), n in 1usize..300) {
        let mut rng = Rng::new(seed);
        let x = rng.floats(n, 3.0);
        let w = rng.floats(n, 1.0);
        let mut out = vec![0.0; n];
        ops::rms_norm(&x, &w, 1e-6, &mut out);
        let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let scale = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..n {
            let want = x[i] as f64 * scale * w[i] as f64;
            prop_assert!((out[i] as f64 - want).abs() <= TOL_F32 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn softmax_matches_naive(seed in any::<u64>(), n in 1usize..300, shift in -100.0f32..100.0) {
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = rng.floats(n, 10.0).iter().map(|v| v + shift).collect();
        let mut y = x.clone();
        ops::softmax(&mut y);
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        for i in 0..n {
            let want = (x[i] as f64 - max).exp() / sum;
            prop_assert!((y[i] as f64 - want).abs() <= TOL_F32 * (want + 1e-3));
        }
    }

    #[test]
    fn activations_match_naive(seed in any::<u64>(), n in 1usize..300) {
        let mut rng = Rng::new(seed);
        let gate = rng.floats(n, 8.0);
        let up = rng.floats(n, 2.0);
        let mut silu = gate.clone();
        ops::silu_mul(&mut silu, &up);
        let mut gelu = gate.clone();
        ops::gelu_tanh_mul(&mut gelu, &up);
        for i in 0..n {
            let (g, u) = (gate[i] as f64, up[i] as f64);
            let want_silu = g / (1.0 + (-g).exp()) * u;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g);
            let want_gelu = 0.5 * g * (1.0 + inner.tanh()) * u;
            prop_assert!((silu[i] as f64 - want_silu).abs() <= TOL_F32 * (1.0 + want_silu.abs()) * 10.0);
            prop_assert!((gelu[i] as f64 - want_gelu).abs() <= TOL_F32 * (1.0 + want_gelu.abs()) * 10.0);
        }
    }

    #[test]
    fn f16_kernels_match_naive(seed in any::<u64>(), n in 0usize..300, alpha in -2.0f32..2.0) {
        let mut rng = Rng::new(seed);
        let a = to_f16(&rng.floats(n, 4.0));
        let b = to_f16(&rng.floats(n, 4.0));
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
        let magnitude: f64 = a.iter().zip(&b).map(|(x, y)| (x.to_f64() * y.to_f64()).abs()).sum();
        let got = ops::dot_f16(&a, &b) as f64;
        prop_assert!((got - want).abs() <= TOL_F32 * (magnitude + 1.0));

        let base = rng.floats(n, 1.0);
        let mut out = base.clone();
        ops::axpy_f16(&mut out, alpha, &a);
        for i in 0..n {
            let want = base[i] as f64 + alpha as f64 * a[i].to_f64();
            prop_assert!((out[i] as f64 - want).abs() <= TOL_F32 * (1.0 + want.abs()));
        }

        let src = rng.floats(n, 100.0);
        let mut dst = vec![f16::ZERO; n];
        ops::f32_to_f16(&src, &mut dst);
        for i in 0..n {
            prop_assert_eq!(dst[i].to_bits(), f16::from_f32(src[i]).to_bits());
        }
    }
}

#[test]
fn softmax_handles_infinities() {
    let mut x = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
    ops::softmax(&mut x);
    assert_eq!(x, [0.0, 0.5, 0.0, 0.5]);
    let mut all = [f32::NEG_INFINITY; 3];
    ops::softmax(&mut all);
    assert_eq!(all, [0.0; 3]);
    let mut big = [1e30f32, 1e30];
    ops::softmax(&mut big);
    assert_eq!(big, [0.5, 0.5]);
}

#[test]
fn f32_to_f16_rounds_to_nearest_even() {
    // 1 + 2^-11 lies halfway between 1 and the next f16 (1 + 2^-10): ties go
    // to the even mantissa, 1; 1 + 3 * 2^-11 goes up to 1 + 2^-9.
    let src = [
        1.0 + f32::powi(2.0, -11),
        1.0 + 3.0 * f32::powi(2.0, -11),
        70000.0,
        -0.0,
    ];
    let mut dst = [f16::ZERO; 4];
    ops::f32_to_f16(&src, &mut dst);
    assert_eq!(dst[0], f16::ONE);
    assert_eq!(dst[1].to_f32(), 1.0 + f32::powi(2.0, -9));
    assert_eq!(dst[2], f16::INFINITY);
    assert_eq!(dst[3].to_bits(), 0x8000);
}

/// Long enough rows for the vector loops, with the awkward values inside.
#[test]
fn vector_paths_handle_extremes() {
    let mut x = vec![0.5f32; 19];
    x[3] = f32::NEG_INFINITY;
    x[9] = f32::NEG_INFINITY;
    x[11] = 80.0;
    x[12] = -200.0;
    let mut y = x.clone();
    ops::softmax(&mut y);
    assert_eq!(y[3], 0.0);
    assert_eq!(y[9], 0.0);
    assert!(y[12] == 0.0);
    assert!((y[11] - 1.0).abs() < 1e-6);
    assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);

    let gate: Vec<f32> = [
        -1e4f32, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 1e4, 3.0, -3.0, 7.5,
        -7.5, 0.25,
    ]
    .to_vec();
    let up = vec![1.0f32; gate.len()];
    let mut silu = gate.clone();
    ops::silu_mul(&mut silu, &up);
    let mut gelu = gate.clone();
    ops::gelu_tanh_mul(&mut gelu, &up);
    for (i, &g) in gate.iter().enumerate() {
        let g64 = g as f64;
        let want_silu = g64 / (1.0 + (-g64).exp());
        let inner = (2.0 / std::f64::consts::PI).sqrt() * (g64 + 0.044715 * g64 * g64 * g64);
        let want_gelu = 0.5 * g64 * (1.0 + inner.tanh());
        assert!(
            (silu[i] as f64 - want_silu).abs() <= 1e-5 * (1.0 + want_silu.abs()),
            "silu({g}) = {}",
            silu[i]
        );
        assert!(
            (gelu[i] as f64 - want_gelu).abs() <= 1e-5 * (1.0 + want_gelu.abs()),
            "gelu({g}) = {}",
            gelu[i]
        );
    }
}

/// `exp` inside softmax over the whole useful range, against f64.
#[test]
fn softmax_exp_is_accurate() {
    // Two entries: softmax([0, v]) = [1 / (1 + e^v), e^v / (1 + e^v)], with
    // padding of -inf to reach the vector path.
    for k in -870..=0 {
        let v = k as f32 / 10.0;
        let mut x = vec![f32::NEG_INFINITY; 16];
        x[0] = 0.0;
        x[5] = v;
        ops::softmax(&mut x);
        let e = (v as f64).exp();
        let want = e / (1.0 + e);
        assert!(
            (x[5] as f64 - want).abs() <= 4e-7 * want + 1e-37,
            "exp({v}): {} vs {want}",
            x[5]
        );
    }
}

#[test]
fn simd_f16_matches_portable() {
    let mut rng = Rng::new(5);
    for n in [0usize, 7, 8, 31, 32, 33, 100] {
        let a = to_f16(&rng.floats(n, 2.0));
        let b = to_f16(&rng.floats(n, 2.0));
        let fast = ops::dot_f16(&a, &b);
        let slow = ops::dot_f16_portable(&a, &b);
        assert!(
            (fast - slow).abs() <= 1e-5 * (1.0 + slow.abs()),
            "n {n}: {fast} vs {slow}"
        );
        let mut out_fast = rng.floats(n, 1.0);
        let mut out_slow = out_fast.clone();
        ops::axpy_f16(&mut out_fast, 0.75, &a);
        ops::axpy_f16_portable(&mut out_slow, 0.75, &a);
        assert_eq!(out_fast, out_slow);
    }
}
