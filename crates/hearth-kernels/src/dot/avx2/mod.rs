//! AVX2 + FMA + F16C kernels (x86-64), selected at run time.
//!
//! Every kernel is a register tile of `R` weight rows by `T` tokens: the
//! weight block is loaded and unpacked once per row and multiplied with the
//! activation blocks of all `T` tokens, each (row, token) pair keeping its
//! own accumulators. Decoding uses tiles of several rows by one token (the
//! independent rows hide the latency of the accumulation chains); prefill
//! uses one row by several tokens, which divides the unpacking work and the
//! weight traffic by `T`.
//!
//! Kernels take a [`Cpu`] token, which can only be obtained by detecting
//! the features, so the safe wrappers here are sound to call.

mod float;
mod kquants;
mod legacy;

use std::arch::x86_64::*;
use std::ops::Range;

use super::{Job, RangeKernel, Tile};
use crate::WeightType;
use crate::quant::QuantizedRow;

/// Proof that the CPU supports AVX2, FMA and F16C.
#[derive(Clone, Copy)]
pub(crate) struct Cpu(());

impl Cpu {
    /// The token, if the running CPU has the features.
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then_some(Self(()))
    }
}

/// A register-tile kernel for one weight type.
pub(super) trait TileKernel {
    /// Bytes of one weight block and values in it.
    const BLOCK_BYTES: usize;
    const BLOCK_VALUES: usize;

    /// `out[r][t] = dot(w[r], x[t])` over `n_blocks` blocks. Every `w[r]`
    /// holds at least `n_blocks * BLOCK_BYTES` bytes and every `x[t]` the
    /// matching activation blocks (checked by [`check_tile`]).
    fn tile<const R: usize, const T: usize>(
        cpu: Cpu,
        n_blocks: usize,
        w: [&[u8]; R],
        x: [QuantizedRow<'_>; T],
    ) -> [[f32; T]; R];
}

/// Checks the slice lengths a tile kernel relies on for its unchecked loads.
#[inline(always)]
pub(super) fn check_tile<const R: usize, const T: usize>(
    n_blocks: usize,
    block_bytes: usize,
    block_values: usize,
    w: &[&[u8]; R],
    x: &[QuantizedRow<'_>; T],
    sums_per_block: usize,
    needs_s: bool,
) {
    for row in w {
        assert!(row.len() >= n_blocks * block_bytes, "weight row too short");
    }
    for xt in x {
        assert!(xt.qs.len() >= n_blocks * block_values, "activation row too short");
        assert!(xt.d.len() >= n_blocks, "activation scales too short");
        assert!(!needs_s || xt.s.len() >= n_blocks, "activation sums too short");
        assert!(xt.bsums.len() >= n_blocks * sums_per_block, "activation block sums too short");
    }
}

/// Runs kernel `K` over `rows` x `tokens` in tiles of `R` x `T`, with
/// single-row and single-token tiles for the remainders.
fn range<K: TileKernel, const R: usize, const T: usize>(job: &Job<'_>, rows: Range<usize>, tokens: Range<usize>) {
    let (Some(cpu), Some(format)) = (Cpu::detect(), job.format) else {
        return super::scalar_quantized(job, rows, tokens);
    };
    let n_blocks = job.w.cols() / K::BLOCK_VALUES;
    let mut r = rows.start;
    while r + R <= rows.end {
        if T == 1 {
            prefetch_rows(job, r + PREFETCH_TILES * R..(r + (PREFETCH_TILES + 1) * R).min(rows.end));
        }
        let w: [&[u8]; R] = std::array::from_fn(|i| job.weight_row(r + i));
        let mut t = tokens.start;
        while t + T <= tokens.end {
            let x = std::array::from_fn(|i| job.acts.row(format, t + i));
            let out = K::tile::<R, T>(cpu, n_blocks, w, x);
            for (i, row) in out.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    job.out.set(t + j, r + i, v);
                }
            }
            t += T;
        }
        while t < tokens.end {
            let out = K::tile::<R, 1>(cpu, n_blocks, w, [job.acts.row(format, t)]);
            for (i, v) in out.iter().enumerate() {
                job.out.set(t, r + i, v[0]);
            }
            t += 1;
        }
        r += R;
    }
    while r < rows.end {
        let w = [job.weight_row(r)];
        let mut t = tokens.start;
        while t + T <= tokens.end {
            let x = std::array::from_fn(|i| job.acts.row(format, t + i));
            let out = K::tile::<1, T>(cpu, n_blocks, w, x);
            for (j, &v) in out[0].iter().enumerate() {
                job.out.set(t + j, r, v);
            }
            t += T;
        }
        while t < tokens.end {
            let out = K::tile::<1, 1>(cpu, n_blocks, w, [job.acts.row(format, t)]);
            job.out.set(t, r, out[0][0]);
            t += 1;
        }
        r += 1;
    }
}

/// How many row tiles ahead the decode loop prefetches weights: streaming
/// from memory needs the requests in flight well before the data is used.
const PREFETCH_TILES: usize = 1;

/// Asks for the weight bytes of `rows` to be brought into the cache.
#[inline]
fn prefetch_rows(job: &Job<'_>, rows: Range<usize>) {
    let data = job.w.data();
    let start = (rows.start * job.row_bytes).min(data.len());
    let end = (rows.end * job.row_bytes).min(data.len());
    for offset in (start..end).step_by(64) {
        // SAFETY: a prefetch is a hint that never faults; the address is
        // inside `data` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(offset).cast()) };
    }
}

/// Decode and prefill kernels for `K`.
fn pair<K: TileKernel, const DR: usize, const PT: usize>() -> (RangeKernel, RangeKernel) {
    (range::<K, DR, 1>, range::<K, 1, PT>)
}

/// The AVX2 kernels for `ty`: `(decode, prefill, prefill tile)`, or `None`
/// when this CPU lacks the features or the type has no AVX2 kernel.
pub(super) fn select(ty: WeightType) -> Option<(RangeKernel, RangeKernel, Tile)> {
    Cpu::detect()?;
    let ((decode, prefill), tokens) = match ty {
        WeightType::Q4_0 => (pair::<legacy::Q4_0, 4, 4>(), 4),
        WeightType::Q4_1 => (pair::<legacy::Q4_1, 4, 4>(), 4),
        WeightType::Q5_0 => (pair::<legacy::Q5_0, 4, 4>(), 4),
        WeightType::Q5_1 => (pair::<legacy::Q5_1, 4, 4>(), 4),
        WeightType::Q8_0 => (pair::<legacy::Q8_0, 4, 4>(), 4),
        WeightType::Q4K => (pair::<kquants::Q4K, 2, 4>(), 4),
        WeightType::Q5K => (pair::<kquants::Q5K, 2, 4>(), 4),
        WeightType::Q6K => (pair::<kquants::Q6K, 2, 4>(), 4),
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => {
            let k = float::range as RangeKernel;
            return Some((k, k, Tile { rows: 1, tokens: 1 }));
        }
        WeightType::Q2K | WeightType::Q3K => return None,
    };
    Some((decode, prefill, Tile { rows: 1, tokens }))
}

// ---- helpers shared by the kernels -------------------------------------

/// Loads 32 bytes at `p`.
///
/// # Safety
/// `p..p + 32` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load256(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Loads 16 bytes at `p`.
///
/// # Safety
/// `p..p + 16` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load128(p: *const u8) -> __m128i {
    // SAFETY: the caller guarantees 16 readable bytes; unaligned load.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Reads the little-endian u16 at `p`.
///
/// # Safety
/// `p..p + 2` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn read_u16(p: *const u8) -> u16 {
    // SAFETY: the caller guarantees 2 readable bytes; unaligned read.
    u16::from_le(unsafe { p.cast::<u16>().read_unaligned() })
}

/// Reads the little-endian u32 at `p`.
///
/// # Safety
/// `p..p + 4` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn read_u32(p: *const u8) -> u32 {
    // SAFETY: the caller guarantees 4 readable bytes; unaligned read.
    u32::from_le(unsafe { p.cast::<u32>().read_unaligned() })
}

/// Two f16 values packed in a u32 (low half first) as f32 `[a, b, 0, 0]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16x2_to_f32(bits: u32) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// One f16 value as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    _mm_cvtss_f32(f16x2_to_f32(bits as u32))
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `acc + sum of adjacent u8 x i8 products of (u, x)` as 8 i32 lanes
/// (groups of four products), the core of every quantized dot.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_u8_i8(u: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
}
