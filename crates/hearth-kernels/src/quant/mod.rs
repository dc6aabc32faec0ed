//! Block formats: dequantization of every supported weight type and
//! quantization of activations to the 8-bit companion formats.
//!
//! Layouts follow ggml exactly (little-endian, f16 scales). The activation
//! quantizers reproduce the rounding of ggml's x86 code paths, so that the
//! integer dot products computed from them are the ones llama.cpp computes.
//! Besides the ggml byte layouts, the matrix product uses an internal
//! struct-of-arrays form of the same numbers (`QuantizedRows`) with scales
//! widened to f32 and block sums precomputed.

mod activation;
#[cfg(target_arch = "x86_64")]
mod activation_avx2;
pub(crate) mod kquants;
pub(crate) mod legacy;

pub(crate) use activation::{ActivationFormat, BlockMajor, QuantizedRow, QuantizedRows};
pub use activation::{
    BLOCK_Q8_0_BYTES, BLOCK_Q8_1_BYTES, BLOCK_Q8_K_BYTES, quantize_row_q8_0, quantize_row_q8_1,
    quantize_row_q8_k,
};

use crate::{KernelError, WeightType};

/// Values in one block of the 32-wide formats (`Q4_0` … `Q8_1`).
pub const QK: usize = 32;
/// Values in one K-quant super-block.
pub const QK_K: usize = 256;

/// Reads the little-endian f16 at `bytes[offset..offset + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    half::f16::from_le_bytes([bytes[offset], bytes[offset + 1]]).to_f32()
}

/// Dequantizes one row of `ty` values from `src` into `dst`.
/// `src.len()` must equal `ty.row_bytes(dst.len())`.
pub fn dequantize_row(ty: WeightType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let cols = dst.len();
    let block = ty.block_size();
    let expected = ty
        .row_bytes(cols)
        .ok_or(KernelError::BadRowWidth { ty, cols, block })?;
    if src.len() != expected {
        return Err(KernelError::BadSize {
            what: "dequantize_row source",
            ty,
            rows: 1,
            cols,
            expected,
            actual: src.len(),
        });
    }
    let blocks = src
        .chunks_exact(ty.type_size())
        .zip(dst.chunks_exact_mut(block));
    match ty {
        WeightType::F32 => {
            for (s, d) in blocks {
                d[0] = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        WeightType::F16 => {
            for (s, d) in blocks {
                d[0] = f16_at(s, 0);
            }
        }
        WeightType::BF16 => {
            for (s, d) in blocks {
                d[0] = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        WeightType::Q4_0 => blocks.for_each(|(s, d)| legacy::dequantize_q4_0(s, d)),
        WeightType::Q4_1 => blocks.for_each(|(s, d)| legacy::dequantize_q4_1(s, d)),
        WeightType::Q5_0 => blocks.for_each(|(s, d)| legacy::dequantize_q5_0(s, d)),
        WeightType::Q5_1 => blocks.for_each(|(s, d)| legacy::dequantize_q5_1(s, d)),
        WeightType::Q8_0 => blocks.for_each(|(s, d)| legacy::dequantize_q8_0(s, d)),
        WeightType::Q2K => blocks.for_each(|(s, d)| kquants::dequantize_q2_k(s, d)),
        WeightType::Q3K => blocks.for_each(|(s, d)| kquants::dequantize_q3_k(s, d)),
        WeightType::Q4K => blocks.for_each(|(s, d)| kquants::dequantize_q4_k(s, d)),
        WeightType::Q5K => blocks.for_each(|(s, d)| kquants::dequantize_q5_k(s, d)),
        WeightType::Q6K => blocks.for_each(|(s, d)| kquants::dequantize_q6_k(s, d)),
    }
    Ok(())
}
