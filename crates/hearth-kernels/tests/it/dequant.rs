//! `dequantize_row` against blocks whose values were worked out by hand
//! from the ggml layouts.

use half::f16;
use hearth_kernels::{KernelError, WeightType, dequantize_row};

fn put_f16(block: &mut [u8], offset: usize, value: f32) {
    block[offset..offset + 2].copy_from_slice(&f16::from_f32(value).to_le_bytes());
}

fn dequantize_one(ty: WeightType, block: &[u8]) -> Vec<f32> {
    let mut out = vec![f32::NAN; ty.block_size()];
    dequantize_row(ty, block, &mut out).expect("valid block");
    out
}

fn check(values: &[f32], expected: &[(usize, f32)]) {
    for &(i, v) in expected {
        assert_eq!(values[i], v, "value {i}");
    }
}

#[test]
fn q4_0_block() {
    let mut b = [0u8; 18];
    put_f16(&mut b, 0, 0.5);
    b[2] = 0x21;
    b[2 + 15] = 0xF0;
    let y = dequantize_one(WeightType::Q4_0, &b);
    check(
        &y,
        &[(0, -3.5), (16, -3.0), (15, -4.0), (31, 3.5), (5, -4.0)],
    );
}

#[test]
fn q4_1_block() {
    let mut b = [0u8; 20];
    put_f16(&mut b, 0, 0.5);
    put_f16(&mut b, 2, 1.0);
    b[4 + 3] = 0x7A;
    let y = dequantize_one(WeightType::Q4_1, &b);
    check(&y, &[(3, 6.0), (19, 4.5), (0, 1.0)]);
}

#[test]
fn q5_0_block() {
    let mut b = [0u8; 22];
    put_f16(&mut b, 0, 0.25);
    b[2..6].copy_from_slice(&0x0002_0001u32.to_le_bytes());
    b[6] = 0x3F;
    b[7] = 0x52;
    let y = dequantize_one(WeightType::Q5_0, &b);
    check(
        &y,
        &[(0, 3.75), (16, -3.25), (1, -3.5), (17, 1.25), (2, -4.0)],
    );
}

#[test]
fn q5_1_block() {
    let mut b = [0u8; 24];
    put_f16(&mut b, 0, 0.25);
    put_f16(&mut b, 2, -1.0);
    b[4..8].copy_from_slice(&0x8000_0000u32.to_le_bytes());
    b[8 + 15] = 0xA0;
    let y = dequantize_one(WeightType::Q5_1, &b);
    check(&y, &[(15, -1.0), (31, 5.5)]);
}

#[test]
fn q8_0_block() {
    let mut b = [0u8; 34];
    put_f16(&mut b, 0, 2.0);
    b[2] = (-3i8) as u8;
    b[33] = 127;
    let y = dequantize_one(WeightType::Q8_0, &b);
    check(&y, &[(0, -6.0), (31, 254.0), (1, 0.0)]);
}

#[test]
fn q2_k_block() {
    let mut b = [0u8; 84];
    put_f16(&mut b, 80, 1.0);
    put_f16(&mut b, 82, 0.5);
    b[0] = 0x21; // values 0..16: scale 1, min 2
    b[5] = 0x13; // values 80..96: scale 3, min 1
    b[10] = 0xF5; // values 160..176: scale 5, min 15
    b[16] = 0b11; // value 0 = 3
    b[16 + 16] = 0b10_0000; // value 80 (plane 2, l 16) = 2
    b[16 + 32] = 0b0100; // value 160 (half 1, plane 1, l 0) = 1
    let y = dequantize_one(WeightType::Q2K, &b);
    check(
        &y,
        &[(0, 2.0), (1, -1.0), (80, 5.5), (32, 0.0), (160, -2.5)],
    );
}

#[test]
fn q3_k_block() {
    let mut b = [0u8; 110];
    put_f16(&mut b, 108, 1.0);
    b[96] = 0x05; // scale 0 low bits
    b[96 + 8] = 0x02; // scale 0 high bits: 37 - 32 = 5; scale 9 stays -32
    b[32] = 0b10; // value 0 low bits = 2
    b[0] = 0x01; // value 0 high bit set: q = 2
    b[32 + 48] = 0b11; // value 144 (half 1, plane 0, l 16) low bits = 3
    b[16] = 0x10; // its high bit (bit 4 = half 1, plane 0) set: q = 3
    let y = dequantize_one(WeightType::Q3K, &b);
    check(&y, &[(0, 10.0), (1, -20.0), (144, -96.0)]);
}

/// Scales of the `Q4_K`/`Q5_K` tests: sub-block 0 scale 3 min 2, sub-block 5
/// scale 17 min 34, sub-block 1 scale 0 min 0.
fn k4_scales(scales: &mut [u8]) {
    scales[0] = 0x03;
    scales[4] = 0x02;
    scales[9] = 0x21;
    scales[1] = 0x40;
    scales[5] = 0x80;
}

#[test]
fn q4_k_block() {
    let mut b = [0u8; 144];
    put_f16(&mut b, 0, 1.0);
    put_f16(&mut b, 2, 0.5);
    k4_scales(&mut b[4..16]);
    b[16] = 0x07; // value 0
    b[16 + 64] = 0x90; // value 160: high nibble of qs[64]
    let y = dequantize_one(WeightType::Q4K, &b);
    check(&y, &[(0, 20.0), (1, -1.0), (160, 136.0), (32, 0.0)]);
}

#[test]
fn q5_k_block() {
    let mut b = [0u8; 176];
    put_f16(&mut b, 0, 1.0);
    put_f16(&mut b, 2, 0.5);
    k4_scales(&mut b[4..16]);
    b[16] = 0x01 | 0x20; // high bits of values 0 and 160
    b[48] = 0x07;
    b[48 + 64] = 0x90;
    let y = dequantize_one(WeightType::Q5K, &b);
    check(&y, &[(0, 68.0), (160, 408.0), (161, -17.0)]);
}

#[test]
fn q6_k_block() {
    let mut b = [0u8; 210];
    put_f16(&mut b, 208, 0.5);
    b[192] = 2;
    b[192 + 13] = (-3i8) as u8;
    b[0] = 0x05;
    b[128] = 0x02;
    b[80] = 0x30; // value 208 (half 1, plane 2, l 16): high nibble of ql[80]
    b[128 + 48] = 0x30; // its high bits: bits 4-5 of qh[48]
    let y = dequantize_one(WeightType::Q6K, &b);
    check(&y, &[(0, 5.0), (1, -32.0), (208, -28.5)]);
}

#[test]
fn float_types() {
    let values = [1.5f32, -2.25, 0.0, 65504.0];
    let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16_bytes: Vec<u8> = [1.5f32, -2.25, 0.0, 65536.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let mut out = [0.0f32; 4];
    dequantize_row(WeightType::F32, &f32_bytes, &mut out).expect("f32");
    assert_eq!(out, values);
    dequantize_row(WeightType::F16, &f16_bytes, &mut out).expect("f16");
    assert_eq!(out, values);
    dequantize_row(WeightType::BF16, &bf16_bytes, &mut out).expect("bf16");
    assert_eq!(out, [1.5, -2.25, 0.0, 65536.0]);
}

#[test]
fn rejects_bad_sizes() {
    let mut out = [0.0f32; 32];
    assert!(matches!(
        dequantize_row(WeightType::Q4_0, &[0u8; 17], &mut out),
        Err(KernelError::BadSize { .. })
    ));
    let mut out = [0.0f32; 33];
    assert!(matches!(
        dequantize_row(WeightType::Q4_0, &[0u8; 18], &mut out),
        Err(KernelError::BadRowWidth { .. })
    ));
}
