//! AVX2 tiles for the 32-value formats.
//!
//! `Q4_0`, `Q4_1` and `Q5_1` are multiplied as unsigned quants `u` (0..32)
//! with the signed activation quants, and the offset is applied through the
//! activation block sums: `w = d * u + m` gives
//! `dot = d * dx * sum(u * q) + m * s` with `s = dx * sum(q)` (for `Q4_0`,
//! `m = -8 d`). `Q5_0` and `Q8_0` keep llama.cpp's f32 rounding instead: the
//! integer lanes are sums of signed products (`u - 16` for `Q5_0`), scaled
//! by `d * dx` once per block, with no separate offset term.

use std::arch::x86_64::*;

use std::marker::PhantomData;

use super::{
    Cpu, TileKernel, check_tile, dot_u8_i8, dot_u8_i8_vnni, f16x2_to_f32, hsum_ps, load128,
    load256, read_u32,
};
use crate::quant::{BlockMajor, QuantizedRow};

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

/// `0xFF` in byte `j` where bit `j` of `qh` is set, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bit_mask(qh: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
}

/// `0x10` in byte `j` where bit `j` of `qh` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bits(qh: u32) -> __m256i {
    _mm256_and_si256(fifth_bit_mask(qh), _mm256_set1_epi8(0x10))
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
            let d = _mm_cvtss_f32(f16x2_to_f32(read_u32(p)));
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
            (
                nibbles(p.add(4)),
                _mm_cvtss_f32(dm),
                _mm_cvtss_f32(_mm_movehdup_ps(dm)),
            )
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
            let d = _mm_cvtss_f32(f16x2_to_f32(read_u32(p)));
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

/// The activation scales `d` and sums `s` of block `b` for the `T` tokens.
///
/// # Safety
/// `scales` must hold block `b` of `T` tokens (checked by `check_tile`).
#[inline(always)]
unsafe fn token_scales<const T: usize>(scales: &BlockMajor<'_>, b: usize) -> ([f32; T], [f32; T]) {
    let base = b * scales.stride;
    // SAFETY: `base + t < (b + 1) * stride <= len` for every `t < T`.
    unsafe {
        (
            std::array::from_fn(|t| *scales.d.get_unchecked(base + t)),
            std::array::from_fn(|t| *scales.s.get_unchecked(base + t)),
        )
    }
}

/// `d * dx[t]` broadcast to eight lanes, for each token `t`. For four and
/// eight tokens the products are formed in one vector multiply and the
/// lanes broadcast with shuffles, which keeps the multiply pipes free for
/// the dot products.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn token_products<const T: usize>(d: f32, dx: &[f32; T]) -> [__m256; T] {
    if T == 4 || T == 8 {
        let mut padded = [0.0f32; 8];
        padded[..T].copy_from_slice(dx);
        // SAFETY: `padded` holds 8 floats.
        let products = _mm256_mul_ps(_mm256_set1_ps(d), unsafe {
            _mm256_loadu_ps(padded.as_ptr())
        });
        std::array::from_fn(|t| _mm256_permutevar8x32_ps(products, _mm256_set1_epi32(t as i32)))
    } else {
        std::array::from_fn(|t| _mm256_set1_ps(d * dx[t]))
    }
}

/// Defines `$name`, the unsigned-quant tile shared by `Q4_0`, `Q4_1`,
/// `Q5_1`, compiled for `$features` with `$dot` forming the block dots.
macro_rules! tile_unsigned_fn {
    ($name:ident, $features:literal, $dot:ident) => {
        /// The unsigned-quant tile shared by `Q4_0`, `Q4_1`, `Q5_1`.
        ///
        /// # Safety
        /// The target features of this function available; lengths as
        /// checked by `check_tile`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<U: Unpack, const R: usize, const T: usize>(
            n_blocks: usize,
            w: [&[u8]; R],
            x: &[QuantizedRow<'_>],
            scales: BlockMajor<'_>,
        ) -> [[f32; T]; R] {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut acc_min = [[0.0f32; T]; R];
            let wp = w.map(|row| row.as_ptr());
            let xp: [*const u8; T] = std::array::from_fn(|t| x[t].qs.as_ptr().cast());
            for b in 0..n_blocks {
                // SAFETY: block `b < n_blocks` (checked by the caller).
                let (dx, sx) = unsafe { token_scales::<T>(&scales, b) };
                for r in 0..R {
                    // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
                    let (u, d, m) = unsafe { U::unpack(wp[r].add(b * U::BYTES)) };
                    let scale = token_products(d, &dx);
                    for t in 0..T {
                        acc_min[r][t] = m.mul_add(sx[t], acc_min[r][t]);
                        // SAFETY: activation row `t` holds `n_blocks` blocks of 32.
                        let q = unsafe { load256(xp[t].add(b * 32)) };
                        let p = _mm256_cvtepi32_ps($dot(u, q));
                        acc[r][t] = _mm256_fmadd_ps(p, scale[t], acc[r][t]);
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
    };
}

tile_unsigned_fn!(tile_unsigned, "avx2,fma,f16c", dot_u8_i8);
tile_unsigned_fn!(
    tile_unsigned_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    dot_u8_i8_vnni
);

/// The VNNI variant of the 32-value format `K`: the same tile with
/// `vpdpbusd` block dots, bit-identical results. Falls back to `K` on a
/// CPU without VNNI.
pub(super) struct Vnni<K>(PhantomData<K>);

/// Implements [`TileKernel`] for the 32-value format `$ty`, whose blocks
/// `$unpack` (a trait with the block's `BYTES`) describes, with the tile
/// `$tile`, and for `Vnni<$ty>` with `$vnni_tile` (falling back to `$ty`
/// on a CPU without VNNI).
macro_rules! legacy_kernel {
    ($ty:ty, $unpack:ident, $tile:ident, $vnni_tile:ident) => {
        impl TileKernel for $ty {
            const BLOCK_BYTES: usize = <$ty as $unpack>::BYTES;
            const BLOCK_VALUES: usize = 32;
            #[inline(always)]
            fn tile<const R: usize, const T: usize>(
                _cpu: Cpu,
                n_blocks: usize,
                w: [&[u8]; R],
                x: &[QuantizedRow<'_>],
                scales: BlockMajor<'_>,
            ) -> [[f32; T]; R] {
                check_tile::<R, T>(n_blocks, Self::BLOCK_BYTES, 32, &w, x, 0, Some(&scales));
                // SAFETY: the `Cpu` token proves the features; lengths checked.
                unsafe { $tile::<$ty, R, T>(n_blocks, w, x, scales) }
            }
        }

        impl TileKernel for Vnni<$ty> {
            const BLOCK_BYTES: usize = <$ty as $unpack>::BYTES;
            const BLOCK_VALUES: usize = 32;
            #[inline(always)]
            fn tile<const R: usize, const T: usize>(
                cpu: Cpu,
                n_blocks: usize,
                w: [&[u8]; R],
                x: &[QuantizedRow<'_>],
                scales: BlockMajor<'_>,
            ) -> [[f32; T]; R] {
                if !cpu.has_vnni() {
                    return <$ty as TileKernel>::tile::<R, T>(cpu, n_blocks, w, x, scales);
                }
                check_tile::<R, T>(n_blocks, Self::BLOCK_BYTES, 32, &w, x, 0, Some(&scales));
                // SAFETY: the `Cpu` token proves the features; lengths checked.
                unsafe { $vnni_tile::<$ty, R, T>(n_blocks, w, x, scales) }
            }
        }
    };
}

legacy_kernel!(Q4_0, Unpack, tile_unsigned, tile_unsigned_vnni);
legacy_kernel!(Q4_1, Unpack, tile_unsigned, tile_unsigned_vnni);
legacy_kernel!(Q5_1, Unpack, tile_unsigned, tile_unsigned_vnni);

/// How a format with signed quants and no offset unpacks a block.
trait UnpackSigned {
    const BYTES: usize;
    /// The signed quants of the block at `p` and its `d`.
    ///
    /// # Safety
    /// `p..p + BYTES` must be readable; AVX2, FMA and F16C available.
    unsafe fn unpack_signed(p: *const u8) -> (__m256i, f32);
}

impl UnpackSigned for Q8_0 {
    const BYTES: usize = 34;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack_signed(p: *const u8) -> (__m256i, f32) {
        // SAFETY: as above.
        unsafe { (load256(p.add(2)), _mm_cvtss_f32(f16x2_to_f32(read_u32(p)))) }
    }
}

/// Defines `$name`, the tile for signed quants without offset (`Q8_0`),
/// compiled for `$features` with `$dot` forming the block dots: per block,
/// `acc += (d * dx) * lanes(sum w * q)` in eight lanes of four products
/// each, then one horizontal sum.
macro_rules! tile_signed_fn {
    ($name:ident, $features:literal, $dot:ident) => {
        /// The tile for signed quants without offset.
        ///
        /// # Safety
        /// The target features of this function available; lengths as
        /// checked by `check_tile`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<S: UnpackSigned, const R: usize, const T: usize>(
            n_blocks: usize,
            w: [&[u8]; R],
            x: &[QuantizedRow<'_>],
            scales: BlockMajor<'_>,
        ) -> [[f32; T]; R] {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let wp = w.map(|row| row.as_ptr());
            let xp: [*const u8; T] = std::array::from_fn(|t| x[t].qs.as_ptr().cast());
            for b in 0..n_blocks {
                // SAFETY: block `b < n_blocks` (checked by the caller).
                let (dx, _) = unsafe { token_scales::<T>(&scales, b) };
                for r in 0..R {
                    // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
                    let (wq, d) = unsafe { S::unpack_signed(wp[r].add(b * S::BYTES)) };
                    let magnitude = _mm256_sign_epi8(wq, wq);
                    let scale = token_products(d, &dx);
                    for t in 0..T {
                        // SAFETY: activation row `t` holds `n_blocks` blocks of 32.
                        let q = unsafe { load256(xp[t].add(b * 32)) };
                        let p = _mm256_cvtepi32_ps($dot(magnitude, _mm256_sign_epi8(q, wq)));
                        acc[r][t] = _mm256_fmadd_ps(p, scale[t], acc[r][t]);
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
    };
}

tile_signed_fn!(tile_signed, "avx2,fma,f16c", dot_u8_i8);
tile_signed_fn!(
    tile_signed_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    dot_u8_i8_vnni
);

/// The signed quants `u - 16` of the `Q5_0` block at `p` (the nibble with
/// 0xF0 or-ed in where the fifth bit is clear) and its `d`.
///
/// # Safety
/// `p..p + 22` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_signed(p: *const u8) -> (__m256i, f32) {
    // SAFETY: the block is readable (caller).
    unsafe {
        let d = _mm_cvtss_f32(f16x2_to_f32(read_u32(p)));
        let high = _mm256_andnot_si256(fifth_bit_mask(read_u32(p.add(2))), _mm256_set1_epi8(-16));
        (_mm256_or_si256(nibbles(p.add(6)), high), d)
    }
}

/// The `Q5_0` tile, with the integer lanes of signed quants as llama.cpp's
/// kernels form them: `sum (u - 16) * q` per four values is
/// `maddubs(u, q) - 16 * (pair sums of q)` (exact in i16), so that only the
/// unsigned quants are multiplied.
///
/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile` (with
/// 16 pair sums per block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q5_0<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
    scales: BlockMajor<'_>,
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let wp = w.map(|row| row.as_ptr());
    let xp: [*const u8; T] = std::array::from_fn(|t| x[t].qs.as_ptr().cast());
    let sp: [*const u8; T] = std::array::from_fn(|t| x[t].bsums.as_ptr().cast());
    let ones = _mm256_set1_epi16(1);
    for b in 0..n_blocks {
        // SAFETY: block `b < n_blocks` (checked by the caller).
        let (dx, _) = unsafe { token_scales::<T>(&scales, b) };
        // SAFETY: activation row `t` holds `n_blocks` blocks of 32 quants
        // and 16 pair sums.
        let q: [__m256i; T] = std::array::from_fn(|t| unsafe { load256(xp[t].add(b * 32)) });
        let offset: [__m256i; T] = std::array::from_fn(|t| {
            if T == 1 {
                // SAFETY: as above.
                _mm256_slli_epi16::<4>(unsafe { load256(sp[t].add(b * 32)) })
            } else {
                _mm256_setzero_si256()
            }
        });
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let block = unsafe { wp[r].add(b * 22) };
            if T == 1 {
                // SAFETY: the block is readable.
                let (u, d, _) = unsafe { Q5_0::unpack(block) };
                let scale = token_products(d, &dx);
                let pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(u, q[0]), offset[0]);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                acc[r][0] = _mm256_fmadd_ps(p, scale[0], acc[r][0]);
            } else {
                // Several tokens: the sign transfer costs less per token.
                // SAFETY: the block is readable.
                let (w, d) = unsafe { q5_0_signed(block) };
                let scale = token_products(d, &dx);
                let magnitude = _mm256_sign_epi8(w, w);
                for t in 0..T {
                    let p = dot_u8_i8(magnitude, _mm256_sign_epi8(q[t], w));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale[t], acc[r][t]);
                }
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

impl TileKernel for Q5_0 {
    const BLOCK_BYTES: usize = 22;
    const BLOCK_VALUES: usize = 32;
    #[inline(always)]
    fn tile<const R: usize, const T: usize>(
        _cpu: Cpu,
        n_blocks: usize,
        w: [&[u8]; R],
        x: &[QuantizedRow<'_>],
        scales: BlockMajor<'_>,
    ) -> [[f32; T]; R] {
        check_tile::<R, T>(n_blocks, 22, 32, &w, x, 16, Some(&scales));
        // SAFETY: the `Cpu` token proves the features; lengths checked.
        unsafe { tile_q5_0::<R, T>(n_blocks, w, x, scales) }
    }
}

legacy_kernel!(Q8_0, UnpackSigned, tile_signed, tile_signed_vnni);
