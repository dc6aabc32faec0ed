//! AVX2 tiles for the 32-value formats.
//!
//! The 4- and 5-bit formats are multiplied as unsigned quants `u` (0..32)
//! with the signed activation quants, and the offset is applied through the
//! activation block sums: `w = d * u + m` gives
//! `dot = d * dx * sum(u * q) + m * s` with `s = dx * sum(q)` (for `Q4_0` and
//! `Q5_0`, `m = -8 d` and `-16 d`). `Q8_0` weights are signed and use the
//! usual sign transfer so that `maddubs` sees an unsigned operand.

use std::arch::x86_64::*;

use super::{Cpu, TileKernel, check_tile, dot_u8_i8, f16x2_to_f32, hsum_ps, load128, load256, read_u32};
use crate::quant::QuantizedRow;

/// How one 32-value format unpacks a block.
trait Unpack {
    const BYTES: usize;
    /// The unsigned quants of the block at `p` and its `[d, m]`.
    ///
    /// # Safety
    /// `p..p + BYTES` must be readable; AVX2, FMA and F16C available.
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32);
}

/// The 32 nibbles of `qs[0..16]` as bytes: low nibbles first, then high.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: forwarded contract: 16 readable bytes.
    let q = unsafe { load128(p) };
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// `0x10` in byte `j` where bit `j` of `qh` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bits(qh: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q8_0;

impl Unpack for Q4_0 {
    const BYTES: usize = 18;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        // SAFETY: the block is readable (caller); the features are present.
        unsafe {
            let d = _mm_cvtss_f32(f16x2_to_f32(read_u32(p) & 0xFFFF));
            (nibbles(p.add(2)), d, -8.0 * d)
        }
    }
}

impl Unpack for Q4_1 {
    const BYTES: usize = 20;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        // SAFETY: as above.
        unsafe {
            let dm = f16x2_to_f32(read_u32(p));
            (nibbles(p.add(4)), _mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)))
        }
    }
}

impl Unpack for Q5_0 {
    const BYTES: usize = 22;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        // SAFETY: as above.
        unsafe {
            let d = _mm_cvtss_f32(f16x2_to_f32(read_u32(p) & 0xFFFF));
            let u = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(read_u32(p.add(2))));
            (u, d, -16.0 * d)
        }
    }
}

impl Unpack for Q5_1 {
    const BYTES: usize = 24;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(p: *const u8) -> (__m256i, f32, f32) {
        // SAFETY: as above.
        unsafe {
            let dm = f16x2_to_f32(read_u32(p));
            let u = _mm256_or_si256(nibbles(p.add(8)), fifth_bits(read_u32(p.add(4))));
            (u, _mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)))
        }
    }
}

/// The unsigned-quant tile shared by `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`.
///
/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_unsigned<U: Unpack, const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: [QuantizedRow<'_>; T],
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut acc_min = [[0.0f32; T]; R];
    let wp = w.map(|row| row.as_ptr());
    for b in 0..n_blocks {
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let (u, d, m) = unsafe { U::unpack(wp[r].add(b * U::BYTES)) };
            let dv = _mm256_set1_ps(d);
            for t in 0..T {
                // SAFETY: activation row `t` holds `n_blocks` blocks of 32
                // quants, a scale and a sum each (checked by the caller).
                let (q, dx, s) = unsafe {
                    (load256(x[t].qs.as_ptr().add(b * 32).cast()), *x[t].d.get_unchecked(b), *x[t].s.get_unchecked(b))
                };
                let p = _mm256_cvtepi32_ps(dot_u8_i8(u, q));
                acc[r][t] = _mm256_fmadd_ps(p, _mm256_mul_ps(dv, _mm256_set1_ps(dx)), acc[r][t]);
                acc_min[r][t] = m.mul_add(s, acc_min[r][t]);
            }
        }
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum_ps(acc[r][t]) + acc_min[r][t];
        }
    }
    out
}

macro_rules! unsigned_kernel {
    ($ty:ty) => {
        impl TileKernel for $ty {
            const BLOCK_BYTES: usize = <$ty as Unpack>::BYTES;
            const BLOCK_VALUES: usize = 32;
            #[inline(always)]
            fn tile<const R: usize, const T: usize>(
                _cpu: Cpu,
                n_blocks: usize,
                w: [&[u8]; R],
                x: [QuantizedRow<'_>; T],
            ) -> [[f32; T]; R] {
                check_tile(n_blocks, Self::BLOCK_BYTES, 32, &w, &x, 0, true);
                // SAFETY: the `Cpu` token proves the features; lengths checked.
                unsafe { tile_unsigned::<$ty, R, T>(n_blocks, w, x) }
            }
        }
    };
}

unsigned_kernel!(Q4_0);
unsigned_kernel!(Q4_1);
unsigned_kernel!(Q5_0);
unsigned_kernel!(Q5_1);

/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q8_0<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: [QuantizedRow<'_>; T],
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let wp = w.map(|row| row.as_ptr());
    for b in 0..n_blocks {
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let (wq, d) = unsafe {
                let p = wp[r].add(b * 34);
                (load256(p.add(2)), _mm_cvtss_f32(f16x2_to_f32(read_u32(p) & 0xFFFF)))
            };
            let magnitude = _mm256_sign_epi8(wq, wq);
            let dv = _mm256_set1_ps(d);
            for t in 0..T {
                // SAFETY: as in `tile_unsigned`.
                let (q, dx) = unsafe { (load256(x[t].qs.as_ptr().add(b * 32).cast()), *x[t].d.get_unchecked(b)) };
                let p = _mm256_cvtepi32_ps(dot_u8_i8(magnitude, _mm256_sign_epi8(q, wq)));
                acc[r][t] = _mm256_fmadd_ps(p, _mm256_mul_ps(dv, _mm256_set1_ps(dx)), acc[r][t]);
            }
        }
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum_ps(acc[r][t]);
        }
    }
    out
}

impl TileKernel for Q8_0 {
    const BLOCK_BYTES: usize = 34;
    const BLOCK_VALUES: usize = 32;
    #[inline(always)]
    fn tile<const R: usize, const T: usize>(
        _cpu: Cpu,
        n_blocks: usize,
        w: [&[u8]; R],
        x: [QuantizedRow<'_>; T],
    ) -> [[f32; T]; R] {
        check_tile(n_blocks, 34, 32, &w, &x, 0, false);
        // SAFETY: the `Cpu` token proves the features; lengths checked.
        unsafe { tile_q8_0::<R, T>(n_blocks, w, x) }
    }
}
