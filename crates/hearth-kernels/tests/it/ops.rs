//! RMS norm and the f16 conversion against naive code.

use half::f16;
use hearth_kernels::{exact, ops};
use proptest::prelude::*;

use crate::support::Rng;

/// f32 kernels against f64 references, relative to the magnitude of the
/// terms involved.
const TOL_F32: f64 = 1e-5;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rms_norm_matches_naive(seed in any::<u64>(), n in 1usize..300) {
        let mut rng = Rng::new(seed);
        let x = rng.floats(n, 3.0);
        let w = rng.floats(n, 1.0);
        let mut out = vec![0.0; n];
        exact::rms_norm(&x, &w, 1e-6, &mut out);
        let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let scale = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..n {
            let want = x[i] as f64 * scale * w[i] as f64;
            prop_assert!((out[i] as f64 - want).abs() <= TOL_F32 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn f32_to_f16_matches_the_scalar_conversion(seed in any::<u64>(), n in 0usize..300) {
        let mut rng = Rng::new(seed);
        let src = rng.floats(n, 100.0);
        let mut dst = vec![f16::ZERO; n];
        ops::f32_to_f16(&src, &mut dst);
        for i in 0..n {
            prop_assert_eq!(dst[i].to_bits(), f16::from_f32(src[i]).to_bits());
        }
    }
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
