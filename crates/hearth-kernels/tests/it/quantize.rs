//! The activation quantizers: exact values on chosen inputs (ties included)
//! and round trips on random ones.

use half::f16;
use hearth_kernels::{KernelError, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};
use proptest::prelude::*;

use crate::support::Rng;

fn q8_0(x: &[f32]) -> (f32, Vec<i8>) {
    let mut out = vec![0u8; 34];
    quantize_row_q8_0(x, &mut out).expect("q8_0");
    (
        f16::from_le_bytes([out[0], out[1]]).to_f32(),
        out[2..].iter().map(|&b| b as i8).collect(),
    )
}

#[test]
fn q8_0_rounds_ties_to_even() {
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -2.5;
    x[4] = -0.4;
    let (d, q) = q8_0(&x);
    assert_eq!(d, 1.0);
    assert_eq!(&q[..6], &[127, 2, 4, -2, 0, 0]);
}

#[test]
fn q8_1_stores_rounded_block_sum() {
    let mut x = [0.0f32; 32];
    x[0] = -127.0;
    x[1] = 10.0;
    x[2] = 1.25;
    let mut out = vec![0u8; 36];
    quantize_row_q8_1(&x, &mut out).expect("q8_1");
    let d = f16::from_le_bytes([out[0], out[1]]).to_f32();
    let s = f16::from_le_bytes([out[2], out[3]]).to_f32();
    assert_eq!(d, 1.0);
    assert_eq!(&out[4..7], &[(-127i8) as u8, 10, 1]);
    assert_eq!(s, -116.0);
}

#[test]
fn q8_k_uses_signed_max() {
    let mut x = [0.0f32; 256];
    x[0] = 254.0; // largest magnitude, positive: iscale = -0.5
    x[1] = 5.0; // -2.5 rounds to even: -2
    x[2] = -7.0; // 3.5 rounds to 4
    x[17] = 2.0;
    let mut out = vec![0u8; 292];
    quantize_row_q8_k(&x, &mut out).expect("q8_K");
    let d = f32::from_le_bytes([out[0], out[1], out[2], out[3]]);
    assert_eq!(d, -2.0);
    assert_eq!(&out[4..7], &[(-127i8) as u8, (-2i8) as u8, 4]);
    let bsum = |j: usize| i16::from_le_bytes([out[260 + 2 * j], out[261 + 2 * j]]);
    assert_eq!(bsum(0), -125);
    assert_eq!(bsum(1), -1);
    assert_eq!(bsum(2), 0);
}

#[test]
fn zero_blocks_quantize_to_zero() {
    let x = [0.0f32; 256];
    let mut out = vec![0xAAu8; 292];
    quantize_row_q8_k(&x, &mut out).expect("q8_K");
    assert!(out.iter().all(|&b| b == 0));
    let (d, q) = q8_0(&x[..32]);
    assert_eq!(d, 0.0);
    assert!(q.iter().all(|&v| v == 0));
}

#[test]
fn rejects_bad_sizes() {
    let mut out = vec![0u8; 34];
    assert!(matches!(
        quantize_row_q8_0(&[0.0; 31], &mut out),
        Err(KernelError::BadRowWidth { .. })
    ));
    assert!(matches!(
        quantize_row_q8_0(&[0.0; 64], &mut out),
        Err(KernelError::BadLength { .. })
    ));
    assert!(matches!(
        quantize_row_q8_k(&[0.0; 32], &mut out),
        Err(KernelError::BadRowWidth { .. })
    ));
}

/// The spacing of f16 values below 2^-14.
const F16_SUBNORMAL_ULP: f32 = 5.960_464_5e-8;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every value comes back within half a quantization step (plus the
    /// f16 rounding of the scale for the 32-value formats).
    #[test]
    fn round_trip_within_half_step(seed in any::<u64>(), scale in 1e-3f32..1e3) {
        let mut rng = Rng::new(seed);
        let x = rng.floats(512, scale);
        let mut q0 = vec![0u8; 16 * 34];
        let mut q1 = vec![0u8; 16 * 36];
        let mut qk = vec![0u8; 2 * 292];
        quantize_row_q8_0(&x, &mut q0).expect("q8_0");
        quantize_row_q8_1(&x, &mut q1).expect("q8_1");
        quantize_row_q8_k(&x, &mut qk).expect("q8_K");
        for (b, xb) in x.chunks_exact(32).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let b0 = &q0[b * 34..(b + 1) * 34];
            let b1 = &q1[b * 36..(b + 1) * 36];
            // Q8_0 and Q8_1 carry the same scale and quants.
            prop_assert_eq!(&b0[0..2], &b1[0..2]);
            prop_assert_eq!(&b0[2..], &b1[4..]);
            let d = f16::from_le_bytes([b0[0], b0[1]]).to_f32();
            let sum: i32 = b0[2..].iter().map(|&v| (v as i8) as i32).sum();
            let s = f16::from_le_bytes([b1[2], b1[3]]).to_f32();
            // f16 keeps 11 significant bits, fewer below 2^-14 (subnormal).
            prop_assert!((s - amax / 127.0 * sum as f32).abs() <= 1e-3 * s.abs() + F16_SUBNORMAL_ULP);
            for (j, &v) in xb.iter().enumerate() {
                let back = d * (b0[2 + j] as i8) as f32;
                // Half a step of the exact scale, plus what rounding the
                // scale to f16 moves the largest quant (d may be subnormal).
                let exact_d = amax / 127.0;
                let bound = 0.5 * exact_d + 127.0 * (d - exact_d).abs() + amax * 1e-6;
                prop_assert!((back - v).abs() <= bound, "{} vs {} (bound {})", back, v, bound);
            }
        }
        for (b, xb) in x.chunks_exact(256).enumerate() {
            let blk = &qk[b * 292..(b + 1) * 292];
            let d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
            for (j, &v) in xb.iter().enumerate() {
                let back = d * (blk[4 + j] as i8) as f32;
                // Half a step, plus float rounding of `iscale * v` and of
                // `d = 1 / iscale`, scaled by the largest quant.
                prop_assert!((back - v).abs() <= d.abs() * (0.5 + 127.0 * 4.0 * f32::EPSILON));
            }
            for j in 0..16 {
                let sum: i32 = blk[4 + 16 * j..4 + 16 * (j + 1)].iter().map(|&v| (v as i8) as i32).sum();
                prop_assert_eq!(sum as i16, i16::from_le_bytes([blk[260 + 2 * j], blk[261 + 2 * j]]));
            }
        }
    }
}
