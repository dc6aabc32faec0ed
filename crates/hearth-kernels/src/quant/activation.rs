//! Activation quantizers: f32 rows to `Q8_0`, `Q8_1` and `Q8_K`.
//!
//! Rounding reproduces what ggml runs on x86: for `Q8_0`/`Q8_1` the scale is
//! `amax / 127` stored as f16 and values are `round_ties_even(x * 127 /
//! amax)`; for `Q8_K` the scale is f32 `1 / iscale` with `iscale = -127 /
//! max` (`max` the signed value of largest magnitude) and values are
//! `min(127, round_ties_even(iscale * x))`.
//!
//! [`QuantizedRows`] holds the same numbers as struct-of-arrays for the
//! matrix product: quants contiguous per row, scales widened to f32 (the
//! exact values of the f16 that ggml stores) and block sums precomputed.

use half::f16;

use super::{QK, QK_K};
use crate::pool::SendPtr;
use crate::{KernelError, ThreadPool, WeightType};

/// Bytes of one ggml `block_q8_0`: f16 `d`, `qs[32]`.
pub const BLOCK_Q8_0_BYTES: usize = 34;
/// Bytes of one ggml `block_q8_1`: f16 `d`, f16 `s = d * sum(qs)`, `qs[32]`.
pub const BLOCK_Q8_1_BYTES: usize = 36;
/// Bytes of one ggml `block_q8_K`: f32 `d`, `qs[256]`, i16 `bsums[16]`.
pub const BLOCK_Q8_K_BYTES: usize = 292;

/// One 32-value block quantized as `Q8_0`/`Q8_1` do it.
struct Block32 {
    /// `amax / 127` in f32 (ggml stores it rounded to f16).
    d: f32,
    qs: [i8; QK],
    sum: i32,
}

#[inline(always)]
fn quantize_block32(x: &[f32]) -> Block32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        *q = r;
        sum += r as i32;
    }
    Block32 { d, qs, sum }
}

/// Rounds an f32 to the nearest f16 and back.
#[inline(always)]
fn via_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// One 256-value block quantized as `Q8_K`: `(d, qs)`.
#[inline(always)]
fn quantize_block_k(x: &[f32], qs: &mut [i8]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        qs.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (iscale * v).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    1.0 / iscale
}

fn check_lengths(
    what: &'static str,
    x: &[f32],
    dst: &[u8],
    block: usize,
    block_bytes: usize,
) -> Result<usize, KernelError> {
    if !x.len().is_multiple_of(block) {
        return Err(KernelError::BadRowWidth {
            ty: WeightType::F32,
            cols: x.len(),
            block,
        });
    }
    let n_blocks = x.len() / block;
    let expected = n_blocks * block_bytes;
    if dst.len() != expected {
        return Err(KernelError::BadLength {
            what,
            expected,
            actual: dst.len(),
        });
    }
    Ok(n_blocks)
}

/// Quantizes `x` to ggml `block_q8_0`s in `dst`.
/// `x.len()` must be a multiple of 32 and `dst.len()` `x.len() / 32 * 34`.
pub fn quantize_row_q8_0(x: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_lengths("q8_0 destination bytes", x, dst, QK, BLOCK_Q8_0_BYTES)?;
    for (xb, out) in x
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(BLOCK_Q8_0_BYTES))
    {
        let b = quantize_block32(xb);
        out[0..2].copy_from_slice(&f16::from_f32(b.d).to_le_bytes());
        for (o, q) in out[2..].iter_mut().zip(b.qs) {
            *o = q as u8;
        }
    }
    Ok(())
}

/// Quantizes `x` to ggml `block_q8_1`s in `dst`.
/// `x.len()` must be a multiple of 32 and `dst.len()` `x.len() / 32 * 36`.
pub fn quantize_row_q8_1(x: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_lengths("q8_1 destination bytes", x, dst, QK, BLOCK_Q8_1_BYTES)?;
    for (xb, out) in x
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(BLOCK_Q8_1_BYTES))
    {
        let b = quantize_block32(xb);
        out[0..2].copy_from_slice(&f16::from_f32(b.d).to_le_bytes());
        out[2..4].copy_from_slice(&f16::from_f32(b.d * b.sum as f32).to_le_bytes());
        for (o, q) in out[4..].iter_mut().zip(b.qs) {
            *o = q as u8;
        }
    }
    Ok(())
}

/// Quantizes `x` to ggml `block_q8_K`s in `dst`.
/// `x.len()` must be a multiple of 256 and `dst.len()` `x.len() / 256 * 292`.
pub fn quantize_row_q8_k(x: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_lengths("q8_K destination bytes", x, dst, QK_K, BLOCK_Q8_K_BYTES)?;
    let mut qs = [0i8; QK_K];
    for (xb, out) in x
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_Q8_K_BYTES))
    {
        let d = quantize_block_k(xb, &mut qs);
        out[0..4].copy_from_slice(&d.to_le_bytes());
        for (o, &q) in out[4..260].iter_mut().zip(&qs) {
            *o = q as u8;
        }
        for (j, sums) in out[260..292].chunks_exact_mut(2).enumerate() {
            let s: i32 = qs[j * 16..(j + 1) * 16].iter().map(|&q| q as i32).sum();
            sums.copy_from_slice(&(s as i16).to_le_bytes());
        }
    }
    Ok(())
}

/// The 8-bit format activations are quantized to for a weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActivationFormat {
    /// 32-value blocks; `s` holds `d * sum(qs)` unrounded and `bsums` the
    /// sum of each adjacent pair of quants (`Q4_0`, `Q5_0`, `Q8_0` weights).
    Q8_0,
    /// 32-value blocks; `s` holds `f16(d * sum(qs))` as ggml's `Q8_1`
    /// (`Q4_1`, `Q5_1` weights).
    Q8_1,
    /// 256-value blocks with f32 `d` and sums per 16 values (K-quants).
    Q8K,
}

impl ActivationFormat {
    pub(crate) fn block(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q8_1 => QK,
            Self::Q8K => QK_K,
        }
    }

    /// Values covered by one entry of `bsums` (`None`: no sums kept).
    fn values_per_sum(self) -> Option<usize> {
        match self {
            Self::Q8_0 => Some(2),
            Self::Q8_1 => None,
            Self::Q8K => Some(16),
        }
    }

    /// Entries of `bsums` per row of `cols` values.
    fn sums_per_row(self, cols: usize) -> usize {
        self.values_per_sum().map_or(0, |n| cols / n)
    }
}

/// Rows of activations quantized to an 8-bit format, struct-of-arrays.
///
/// For row `t` with `nb = cols / block` blocks: `qs[t * cols..][..cols]` the
/// quants, `d[t * nb..][..nb]` the block scales (f16-exact values for the
/// 32-value formats), `s[t * nb..][..nb]` `d * sum(qs)` per block (32-value
/// formats), and `bsums[t * m..][..m]` the sum of each run of 16 quants
/// (`Q8K`, `m = cols / 16`) or of each adjacent pair (`Q8_0`, `m = cols / 2`). The 32-value formats also keep `d` and `s` block-major
/// (`d_by_block[b * n_rows + t]`), so that a kernel reads the scales of
/// several consecutive tokens with one load.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    pub(crate) cols: usize,
    pub(crate) n_rows: usize,
    pub(crate) qs: Vec<i8>,
    pub(crate) d: Vec<f32>,
    pub(crate) s: Vec<f32>,
    pub(crate) bsums: Vec<i16>,
    pub(crate) d_by_block: Vec<f32>,
    pub(crate) s_by_block: Vec<f32>,
}

/// Block-major scales starting at one token: `d[b * stride + t]` and
/// `s[b * stride + t]` are those of block `b` of the `t`-th token from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockMajor<'a> {
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
    pub(crate) stride: usize,
}

/// One row of [`QuantizedRows`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantizedRow<'a> {
    pub(crate) qs: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
    pub(crate) bsums: &'a [i16],
}

impl QuantizedRows {
    /// Sizes the buffers for `n_rows` rows of `cols` (growing only).
    /// `cols` must be a multiple of the format's block.
    pub(crate) fn resize(&mut self, format: ActivationFormat, n_rows: usize, cols: usize) {
        let nb = cols / format.block();
        self.cols = cols;
        self.n_rows = n_rows;
        grow(&mut self.qs, n_rows * cols, 0);
        grow(&mut self.d, n_rows * nb, 0.0);
        if format != ActivationFormat::Q8K {
            grow(&mut self.s, n_rows * nb, 0.0);
            grow(&mut self.d_by_block, n_rows * nb, 0.0);
            grow(&mut self.s_by_block, n_rows * nb, 0.0);
        }
        grow(&mut self.bsums, n_rows * format.sums_per_row(cols), 0);
    }

    /// The block-major scales from token `t` on (empty for `Q8K`).
    pub(crate) fn by_block(&self, format: ActivationFormat, t: usize) -> BlockMajor<'_> {
        let len = self.n_rows * (self.cols / format.block());
        match format {
            ActivationFormat::Q8_0 | ActivationFormat::Q8_1 => BlockMajor {
                d: self.d_by_block.get(t..len).unwrap_or(&[]),
                s: self.s_by_block.get(t..len).unwrap_or(&[]),
                stride: self.n_rows,
            },
            ActivationFormat::Q8K => BlockMajor {
                d: &[],
                s: &[],
                stride: self.n_rows,
            },
        }
    }

    /// Row `t`.
    pub(crate) fn row(&self, format: ActivationFormat, t: usize) -> QuantizedRow<'_> {
        let nb = self.cols / format.block();
        let s: &[f32] = match format {
            ActivationFormat::Q8_0 | ActivationFormat::Q8_1 => &self.s[t * nb..(t + 1) * nb],
            ActivationFormat::Q8K => &[],
        };
        let m = format.sums_per_row(self.cols);
        let bsums = &self.bsums[t * m..(t + 1) * m];
        QuantizedRow {
            qs: &self.qs[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * nb..(t + 1) * nb],
            s,
            bsums,
        }
    }
}

impl QuantizedRows {
    /// Quantizes the `n_rows` rows of `cols` values in `x` (rows spread over
    /// `pool` when there are several). `x.len()` must be `n_rows * cols` and
    /// `cols` a multiple of the format's block.
    pub(crate) fn quantize(
        &mut self,
        pool: &ThreadPool,
        format: ActivationFormat,
        x: &[f32],
        cols: usize,
        n_rows: usize,
        force_scalar: bool,
    ) {
        self.resize(format, n_rows, cols);
        let nb = cols / format.block();
        let sums_per_row = format.sums_per_row(cols);
        let s_per_row = if format == ActivationFormat::Q8K {
            0
        } else {
            nb
        };
        let qs = SendPtr::new(self.qs.as_mut_ptr());
        let d = SendPtr::new(self.d.as_mut_ptr());
        let s = SendPtr::new(self.s.as_mut_ptr());
        let bsums = SendPtr::new(self.bsums.as_mut_ptr());
        let one_row = |t: usize| {
            // SAFETY: `resize` made every buffer hold `n_rows` rows of the
            // per-row lengths used here, and row `t` is written by this call
            // only (each index runs once) while `self` is mutably borrowed.
            let (row_qs, row_sums) = unsafe {
                (
                    std::slice::from_raw_parts_mut(qs.get().add(t * cols), cols),
                    std::slice::from_raw_parts_mut(bsums.get().add(t * sums_per_row), sums_per_row),
                )
            };
            // SAFETY: as above.
            let slots = unsafe {
                RowSlots {
                    qs: &mut *row_qs,
                    d: std::slice::from_raw_parts_mut(d.get().add(t * nb), nb),
                    s: std::slice::from_raw_parts_mut(s.get().add(t * s_per_row), s_per_row),
                    bsums: &mut *row_sums,
                }
            };
            quantize_row_into(format, &x[t * cols..(t + 1) * cols], slots, force_scalar);
            if format == ActivationFormat::Q8_0 {
                for (sum, pair) in row_sums.iter_mut().zip(row_qs.chunks_exact(2)) {
                    *sum = pair[0] as i16 + pair[1] as i16;
                }
            }
        };
        if n_rows >= 4 && pool.n_threads() > 1 {
            pool.run(n_rows, &one_row);
        } else {
            (0..n_rows).for_each(one_row);
        }
        if format != ActivationFormat::Q8K {
            for t in 0..n_rows {
                for b in 0..nb {
                    self.d_by_block[b * n_rows + t] = self.d[t * nb + b];
                    self.s_by_block[b * n_rows + t] = self.s[t * nb + b];
                }
            }
        }
    }
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Mutable views of one row's buffers, for quantizing into.
pub(crate) struct RowSlots<'a> {
    pub(crate) qs: &'a mut [i8],
    pub(crate) d: &'a mut [f32],
    pub(crate) s: &'a mut [f32],
    pub(crate) bsums: &'a mut [i16],
}

/// Quantizes one activation row `x` into `slots`.
pub(crate) fn quantize_row_into(
    format: ActivationFormat,
    x: &[f32],
    slots: RowSlots<'_>,
    force_scalar: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if !force_scalar && super::activation_avx2::available() {
        // SAFETY: the features were just detected.
        return unsafe { super::activation_avx2::quantize_row(format, x, slots) };
    }
    let _ = force_scalar;
    match format {
        ActivationFormat::Q8_0 | ActivationFormat::Q8_1 => {
            for (b, (xb, qs)) in x
                .chunks_exact(QK)
                .zip(slots.qs.chunks_exact_mut(QK))
                .enumerate()
            {
                let block = quantize_block32(xb);
                qs.copy_from_slice(&block.qs);
                let d16 = via_f16(block.d);
                slots.d[b] = d16;
                slots.s[b] = if format == ActivationFormat::Q8_1 {
                    via_f16(block.d * block.sum as f32)
                } else {
                    d16 * block.sum as f32
                };
            }
        }
        ActivationFormat::Q8K => {
            for (b, (xb, qs)) in x
                .chunks_exact(QK_K)
                .zip(slots.qs.chunks_exact_mut(QK_K))
                .enumerate()
            {
                slots.d[b] = quantize_block_k(xb, qs);
                for (j, run) in qs.chunks_exact(16).enumerate() {
                    slots.bsums[b * 16 + j] = run.iter().map(|&q| q as i16).sum();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn quantized(format: ActivationFormat, x: &[f32], force_scalar: bool) -> QuantizedRows {
        let mut rows = QuantizedRows::default();
        rows.quantize(&ThreadPool::new(1), format, x, x.len(), 1, force_scalar);
        rows
    }

    /// The SIMD quantizers produce exactly the portable numbers.
    #[test]
    fn simd_quantizers_are_bit_exact() {
        let mut seed = 99u64;
        for scale in [1e-3f32, 0.5, 30.0, 1e4] {
            let mut x: Vec<f32> = (0..1024).map(|_| xorshift(&mut seed) * scale).collect();
            x[5] = 0.5 * scale; // ties
            x[300] = -x.iter().fold(0.0f32, |m, v| m.max(v.abs())) * 1.5;
            x[40..72].fill(0.0); // an all-zero 32-block
            for format in [
                ActivationFormat::Q8_0,
                ActivationFormat::Q8_1,
                ActivationFormat::Q8K,
            ] {
                let a = quantized(format, &x, false);
                let b = quantized(format, &x, true);
                assert_eq!(a.qs, b.qs, "{format:?} quants");
                assert_eq!(a.d, b.d, "{format:?} scales");
                assert_eq!(a.s, b.s, "{format:?} sums");
                assert_eq!(a.bsums, b.bsums, "{format:?} block sums");
            }
        }
    }

    /// The internal rows hold the same numbers as the ggml byte layouts.
    #[test]
    fn internal_rows_match_ggml_layouts() {
        let mut seed = 7u64;
        let x: Vec<f32> = (0..512).map(|_| xorshift(&mut seed) * 3.0).collect();
        let mut q0 = vec![0u8; 16 * BLOCK_Q8_0_BYTES];
        let mut q1 = vec![0u8; 16 * BLOCK_Q8_1_BYTES];
        let mut qk = vec![0u8; 2 * BLOCK_Q8_K_BYTES];
        quantize_row_q8_0(&x, &mut q0).expect("q8_0");
        quantize_row_q8_1(&x, &mut q1).expect("q8_1");
        quantize_row_q8_k(&x, &mut qk).expect("q8_K");
        let r0 = quantized(ActivationFormat::Q8_0, &x, false);
        let r1 = quantized(ActivationFormat::Q8_1, &x, false);
        let rk = quantized(ActivationFormat::Q8K, &x, false);
        for b in 0..16 {
            let blk = &q0[b * 34..(b + 1) * 34];
            assert_eq!(f16::from_le_bytes([blk[0], blk[1]]).to_f32(), r0.d[b]);
            assert!(
                blk[2..]
                    .iter()
                    .zip(&r0.qs[b * 32..])
                    .all(|(&a, &q)| a as i8 == q)
            );
            let blk = &q1[b * 36..(b + 1) * 36];
            assert_eq!(f16::from_le_bytes([blk[2], blk[3]]).to_f32(), r1.s[b]);
        }
        for b in 0..2 {
            let blk = &qk[b * 292..(b + 1) * 292];
            assert_eq!(
                f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
                rk.d[b]
            );
            assert!(
                blk[4..260]
                    .iter()
                    .zip(&rk.qs[b * 256..])
                    .all(|(&a, &q)| a as i8 == q)
            );
            for j in 0..16 {
                assert_eq!(
                    i16::from_le_bytes([blk[260 + 2 * j], blk[261 + 2 * j]]),
                    rk.bsums[b * 16 + j]
                );
            }
        }
    }
}
