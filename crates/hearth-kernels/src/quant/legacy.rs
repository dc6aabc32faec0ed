//! The 32-value block formats: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`.
//!
//! Each function takes exactly one block (`type_size` bytes) and writes its
//! 32 values. In the 4- and 5-bit formats byte `j` of `qs` holds value `j` in
//! its low nibble and value `j + 16` in its high nibble; the fifth bits of
//! value `j` live in bit `j` of the little-endian u32 `qh`.

use super::f16_at;

/// `Q4_0`: f16 `d`, 16 bytes of nibbles; `x = d * (q - 8)`.
pub(crate) fn dequantize_q4_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let qs = &block[2..18];
    for (j, &byte) in qs.iter().enumerate() {
        out[j] = d * ((byte & 0x0F) as i32 - 8) as f32;
        out[j + 16] = d * ((byte >> 4) as i32 - 8) as f32;
    }
}

/// `Q4_1`: f16 `d`, f16 `m`, 16 bytes of nibbles; `x = d * q + m`.
pub(crate) fn dequantize_q4_1(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let qs = &block[4..20];
    for (j, &byte) in qs.iter().enumerate() {
        out[j] = d * (byte & 0x0F) as f32 + m;
        out[j + 16] = d * (byte >> 4) as f32 + m;
    }
}

/// Reads the high-bit word of a 5-bit block.
#[inline(always)]
pub(crate) fn qh_at(block: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        block[offset],
        block[offset + 1],
        block[offset + 2],
        block[offset + 3],
    ])
}

/// The 5-bit values `(low, high)` stored for positions `j` and `j + 16`.
#[inline(always)]
pub(crate) fn q5_pair(qs: &[u8], qh: u32, j: usize) -> (u8, u8) {
    let low_bit = ((qh >> j) & 1) as u8;
    let high_bit = ((qh >> (j + 16)) & 1) as u8;
    (
        (qs[j] & 0x0F) | (low_bit << 4),
        (qs[j] >> 4) | (high_bit << 4),
    )
}

/// `Q5_0`: f16 `d`, u32 `qh`, 16 bytes of nibbles; `x = d * (q - 16)`.
pub(crate) fn dequantize_q5_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let qh = qh_at(block, 2);
    let qs = &block[6..22];
    for j in 0..16 {
        let (lo, hi) = q5_pair(qs, qh, j);
        out[j] = d * (lo as i32 - 16) as f32;
        out[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// `Q5_1`: f16 `d`, f16 `m`, u32 `qh`, 16 bytes of nibbles; `x = d * q + m`.
pub(crate) fn dequantize_q5_1(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    let qh = qh_at(block, 4);
    let qs = &block[8..24];
    for j in 0..16 {
        let (lo, hi) = q5_pair(qs, qh, j);
        out[j] = d * lo as f32 + m;
        out[j + 16] = d * hi as f32 + m;
    }
}

/// `Q8_0`: f16 `d`, 32 signed bytes; `x = d * q`.
pub(crate) fn dequantize_q8_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    for (o, &q) in out.iter_mut().zip(&block[2..34]) {
        *o = d * (q as i8) as f32;
    }
}
