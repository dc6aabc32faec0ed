//! The K-quant super-block formats (256 values per block).
//!
//! Each function takes exactly one super-block and writes its 256 values.
//! Layouts, in byte order:
//! - `Q2_K` (84 B): `scales[16]` (low nibble scale, high nibble min per 16
//!   values), `qs[64]` (2-bit), f16 `d`, f16 `dmin`.
//! - `Q3_K` (110 B): `hmask[32]`, `qs[64]` (low 2 bits), `scales[12]`
//!   (sixteen 6-bit scales biased by 32), f16 `d`.
//! - `Q4_K` (144 B): f16 `d`, f16 `dmin`, `scales[12]` (eight 6-bit scales
//!   and eight 6-bit mins), `qs[128]`.
//! - `Q5_K` (176 B): as `Q4_K`, then `qh[32]` before `qs[128]`.
//! - `Q6_K` (210 B): `ql[128]`, `qh[64]`, `scales[16]` (i8), f16 `d`.

use super::f16_at;

/// Scale and min `j` (`0..8`) of the 6-bit packed `Q4_K`/`Q5_K` scales.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, scales: &[u8]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// The sixteen signed 6-bit scales of a `Q3_K` block (bias removed).
#[inline(always)]
pub(crate) fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

pub(crate) fn dequantize_q2_k(block: &[u8], out: &mut [f32]) {
    let scales = &block[0..16];
    let qs = &block[16..80];
    let d = f16_at(block, 80);
    let dmin = f16_at(block, 82);
    // Value i: 128-half h, 2-bit plane p, 32-run r; sub-block of 16 = i / 16.
    for (i, o) in out.iter_mut().enumerate() {
        let half = i / 128;
        let plane = (i % 128) / 32;
        let l = i % 32;
        let q = (qs[half * 32 + l] >> (2 * plane)) & 3;
        let sc = scales[i / 16];
        *o = d * (sc & 0x0F) as f32 * q as f32 - dmin * (sc >> 4) as f32;
    }
}

pub(crate) fn dequantize_q3_k(block: &[u8], out: &mut [f32]) {
    let hmask = &block[0..32];
    let qs = &block[32..96];
    let scales = q3_k_scales(&block[96..108]);
    let d = f16_at(block, 108);
    for (i, o) in out.iter_mut().enumerate() {
        let half = i / 128;
        let plane = (i % 128) / 32;
        let l = i % 32;
        let low = ((qs[half * 32 + l] >> (2 * plane)) & 3) as i32;
        let high_set = hmask[l] & (1 << (half * 4 + plane)) != 0;
        let q = low - if high_set { 0 } else { 4 };
        *o = d * scales[i / 16] as f32 * q as f32;
    }
}

pub(crate) fn dequantize_q4_k(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (pair, (chunk, q)) in out
        .chunks_exact_mut(64)
        .zip(qs.chunks_exact(32))
        .enumerate()
    {
        let (sc0, m0) = scale_min_k4(2 * pair, scales);
        let (sc1, m1) = scale_min_k4(2 * pair + 1, scales);
        let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        for l in 0..32 {
            chunk[l] = d0 * (q[l] & 0x0F) as f32 - min0;
            chunk[l + 32] = d1 * (q[l] >> 4) as f32 - min1;
        }
    }
}

pub(crate) fn dequantize_q5_k(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let scales = &block[4..16];
    let qh = &block[16..48];
    let qs = &block[48..176];
    for (pair, (chunk, q)) in out
        .chunks_exact_mut(64)
        .zip(qs.chunks_exact(32))
        .enumerate()
    {
        let (sc0, m0) = scale_min_k4(2 * pair, scales);
        let (sc1, m1) = scale_min_k4(2 * pair + 1, scales);
        let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        for l in 0..32 {
            let h0 = ((qh[l] >> (2 * pair)) & 1) << 4;
            let h1 = ((qh[l] >> (2 * pair + 1)) & 1) << 4;
            chunk[l] = d0 * ((q[l] & 0x0F) | h0) as f32 - min0;
            chunk[l + 32] = d1 * ((q[l] >> 4) | h1) as f32 - min1;
        }
    }
}

/// The unsigned 6-bit value (`0..64`, bias 32 not removed) at position `i`.
#[inline(always)]
pub(crate) fn q6_k_value(ql: &[u8], qh: &[u8], i: usize) -> u8 {
    let half = i / 128;
    let plane = (i % 128) / 32;
    let l = i % 32;
    let low_byte = ql[half * 64 + (plane & 1) * 32 + l];
    let low = if plane < 2 {
        low_byte & 0x0F
    } else {
        low_byte >> 4
    };
    let high = (qh[half * 32 + l] >> (2 * plane)) & 3;
    low | (high << 4)
}

pub(crate) fn dequantize_q6_k(block: &[u8], out: &mut [f32]) {
    let ql = &block[0..128];
    let qh = &block[128..192];
    let scales = &block[192..208];
    let d = f16_at(block, 208);
    for (i, o) in out.iter_mut().enumerate() {
        let q = q6_k_value(ql, qh, i) as i32 - 32;
        *o = d * (scales[i / 16] as i8) as f32 * q as f32;
    }
}
