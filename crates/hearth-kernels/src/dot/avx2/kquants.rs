//! AVX2 tiles for `Q4_K`, `Q5_K` and `Q6_K` against `Q8_K` activations.
//!
//! Inside a super-block the products stay in i32 lanes: each run of 32 (or
//! 16) values is `maddubs`-ed with the activation quants and `madd`-ed with
//! its 6- or 8-bit scale broadcast to 16 lanes; the super-block's total is
//! scaled once by `d * dx`. Mins (`Q4_K`, `Q5_K`) and the bias of 32
//! (`Q6_K`) go through the activation block sums, once per super-block.

use std::arch::x86_64::*;

use super::{Cpu, TileKernel, check_tile, f16x2_to_f32, load128, load256, read_u16, read_u32};
use crate::quant::{BlockMajor, QuantizedRow};

/// Implements [`TileKernel`] for the 256-value format `$ty` of `$bytes`
/// bytes a block, with the tile function `$tile` (16 activation block sums
/// per block).
macro_rules! kquant_kernel {
    ($ty:ty, $bytes:literal, $tile:ident) => {
        impl TileKernel for $ty {
            const BLOCK_BYTES: usize = $bytes;
            const BLOCK_VALUES: usize = 256;
            #[inline(always)]
            fn tile<const R: usize, const T: usize>(
                _cpu: Cpu,
                n_blocks: usize,
                w: [&[u8]; R],
                x: &[QuantizedRow<'_>],
                _scales: BlockMajor<'_>,
            ) -> [[f32; T]; R] {
                check_tile::<R, T>(n_blocks, $bytes, 256, &w, x, 16, None);
                // SAFETY: the `Cpu` token proves the features; lengths checked.
                unsafe { $tile::<R, T>(n_blocks, w, x) }
            }
        }
    };
}

pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

/// The eight 6-bit scales and mins of a `Q4_K`/`Q5_K` block (12 bytes at
/// `p`) as `(scales, mins)` in the low 8 bytes of each vector.
///
/// # Safety
/// `p..p + 12` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_mins_k4(p: *const u8) -> (__m128i, __m128i) {
    // SAFETY: 12 readable bytes (caller).
    let (u0, u1, u2) = unsafe { (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8))) };
    let sc_lo = u0 & 0x3F3F_3F3F;
    let m_lo = u1 & 0x3F3F_3F3F;
    let sc_hi = (u2 & 0x0F0F_0F0F) | (((u0 >> 6) & 0x0303_0303) << 4);
    let m_hi = ((u2 >> 4) & 0x0F0F_0F0F) | (((u1 >> 6) & 0x0303_0303) << 4);
    (
        _mm_set_epi32(0, 0, sc_hi as i32, sc_lo as i32),
        _mm_set_epi32(0, 0, m_hi as i32, m_lo as i32),
    )
}

/// Lane-broadcast of i16 element `j` of a vector holding eight i16 in each
/// 128-bit half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn broadcast_i16(v: __m256i, j: usize) -> __m256i {
    let lo = (2 * j) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(((lo + 1) << 8) | lo))
}

/// The `Q5_K` tile: 4-bit low quants with a fifth bit from `qh`, per-run
/// 6-bit scales and mins, the mins applied through the activation sums.
///
/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q5_k<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
) -> [[f32; T]; R] {
    let low4 = _mm256_set1_epi8(0x0F);
    let bit = _mm256_set1_epi8(0x10);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..n_blocks {
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let p = unsafe { w[r].as_ptr().add(b * 176) };
            // SAFETY: the block header (d, dmin, 12 scale bytes) is in bounds.
            let (dm, (scales, mins)) =
                unsafe { (f16x2_to_f32(read_u32(p)), scales_mins_k4(p.add(4))) };
            let d = _mm_cvtss_f32(dm);
            let dmin = _mm_cvtss_f32(_mm_movehdup_ps(dm));
            let scales16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales));
            let mins_pairs = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
            // SAFETY: `qh` (32 bytes at 16) lies inside the block.
            let mut high = unsafe { load256(p.add(16)) };
            let mut sums = [_mm256_setzero_si256(); T];
            for j in 0..4 {
                // SAFETY: 32 of the block's 128 quant bytes (at 48).
                let q = unsafe { load256(p.add(48 + 32 * j)) };
                let lo = _mm256_or_si256(
                    _mm256_and_si256(q, low4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(high), bit),
                );
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4),
                    _mm256_and_si256(_mm256_slli_epi16::<3>(high), bit),
                );
                high = _mm256_srli_epi16::<2>(high);
                let sc_lo = broadcast_i16(scales16, 2 * j);
                let sc_hi = broadcast_i16(scales16, 2 * j + 1);
                for t in 0..T {
                    // SAFETY: activation quants `256 b + 64 j ..+64` exist.
                    let (xa, xb) = unsafe {
                        let xp = x[t].qs.as_ptr().add(b * 256 + 64 * j).cast::<u8>();
                        (load256(xp), load256(xp.add(32)))
                    };
                    let pa = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xa), sc_lo);
                    let pb = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xb), sc_hi);
                    sums[t] = _mm256_add_epi32(sums[t], _mm256_add_epi32(pa, pb));
                }
            }
            for t in 0..T {
                // SAFETY: 16 block sums and a scale per activation block.
                let (bsums, dx) = unsafe {
                    (
                        load256(x[t].bsums.as_ptr().add(b * 16).cast()),
                        *x[t].d.get_unchecked(b),
                    )
                };
                let min_sum = _mm256_madd_epi16(bsums, mins_pairs);
                let v = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(sums[t]),
                    _mm256_set1_ps(d * dx),
                    acc[r][t],
                );
                acc[r][t] =
                    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(min_sum), _mm256_set1_ps(dmin * dx), v);
            }
        }
    }
    finish(acc)
}

/// Horizontal sums of the accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn finish<const R: usize, const T: usize>(acc: [[__m256; T]; R]) -> [[f32; T]; R] {
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = super::hsum_ps(acc[r][t]);
        }
    }
    out
}

/// The sum of the eight i32 lanes of `a` and of `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32_pair(a: __m256i, b: __m256i) -> (i32, i32) {
    let h = _mm256_hadd_epi32(a, b);
    let q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let q = _mm_hadd_epi32(q, q);
    (_mm_cvtsi128_si32(q), _mm_extract_epi32::<1>(q))
}

/// The lane sums of four vectors: `[sum(v[0]), .., sum(v[3])]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32_x4(v: [__m256i; 4]) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// The `Q4_K` tile, in the float order of llama.cpp's kernels for
/// interleaved `Q4_K` rows (which it uses for matrices of a multiple of 8
/// rows): the scale part and the min part accumulate separately in f32 and
/// are subtracted at the end. One token at a time (`T == 1`) adds one
/// integer total per super-block; tiles of four tokens add one per run of
/// 64 values, in four-token vectors.
///
/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4_k<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
) -> [[f32; T]; R] {
    const { assert!(T == 1 || T == 4, "Q4_K tiles take one or four tokens") };
    let low4 = _mm256_set1_epi8(0x0F);
    // One token: scalar accumulators per (row, token).
    let mut acc = [[0.0f32; T]; R];
    let mut acc_min = [[0.0f32; T]; R];
    // Four tokens: one vector of the four tokens per row.
    let mut acc4 = [_mm_setzero_ps(); R];
    let mut acc4_min = [_mm_setzero_ps(); R];
    for b in 0..n_blocks {
        // SAFETY: every activation row holds scales and sums for `n_blocks` blocks.
        let dx: [f32; T] = std::array::from_fn(|t| unsafe { *x[t].d.get_unchecked(b) });
        let bsums: [__m256i; T] =
            std::array::from_fn(|t| unsafe { load256(x[t].bsums.as_ptr().add(b * 16).cast()) });
        // Four tokens: the activation sums of sub-blocks `2j, 2j + 1` of
        // every token, as i16 pairs in the i32 lanes of `pair_sums[j]`.
        let mut pair_sums = [_mm_setzero_si128(); 4];
        let mut dx4 = _mm_setzero_ps();
        if T == 4 {
            let s32: [__m128i; T] = std::array::from_fn(|t| {
                _mm_hadd_epi16(
                    _mm256_castsi256_si128(bsums[t]),
                    _mm256_extracti128_si256::<1>(bsums[t]),
                )
            });
            let lo01 = _mm_unpacklo_epi32(s32[0], s32[1 % T]);
            let lo23 = _mm_unpacklo_epi32(s32[2 % T], s32[3 % T]);
            let hi01 = _mm_unpackhi_epi32(s32[0], s32[1 % T]);
            let hi23 = _mm_unpackhi_epi32(s32[2 % T], s32[3 % T]);
            pair_sums = [
                _mm_unpacklo_epi64(lo01, lo23),
                _mm_unpackhi_epi64(lo01, lo23),
                _mm_unpacklo_epi64(hi01, hi23),
                _mm_unpackhi_epi64(hi01, hi23),
            ];
            dx4 = _mm_setr_ps(dx[0], dx[1 % T], dx[2 % T], dx[3 % T]);
        }
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let p = unsafe { w[r].as_ptr().add(b * 144) };
            // SAFETY: the block header (d, dmin, 12 scale bytes) is in bounds.
            let (dm, (scales, mins)) =
                unsafe { (f16x2_to_f32(read_u32(p)), scales_mins_k4(p.add(4))) };
            let d = _mm_cvtss_f32(dm);
            let dmin = _mm_cvtss_f32(_mm_movehdup_ps(dm));
            let scales16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales));
            let mins16 = _mm_cvtepu8_epi16(mins);
            let mut sums = [_mm256_setzero_si256(); T];
            let (scale4, min_scale4) = (
                _mm_mul_ps(_mm_set1_ps(d), dx4),
                _mm_mul_ps(_mm_set1_ps(dmin), dx4),
            );
            for (j, &pairs) in pair_sums.iter().enumerate() {
                // SAFETY: 32 of the block's 128 quant bytes.
                let q = unsafe { load256(p.add(16 + 32 * j)) };
                let lo = _mm256_and_si256(q, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                let sc_lo = broadcast_i16(scales16, 2 * j);
                let sc_hi = broadcast_i16(scales16, 2 * j + 1);
                let mut run = [_mm256_setzero_si256(); T];
                for t in 0..T {
                    // SAFETY: activation quants `256 b + 64 j ..+64` exist.
                    let (xa, xb) = unsafe {
                        let xp = x[t].qs.as_ptr().add(b * 256 + 64 * j).cast::<u8>();
                        (load256(xp), load256(xp.add(32)))
                    };
                    let pa = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xa), sc_lo);
                    let pb = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xb), sc_hi);
                    run[t] = _mm256_add_epi32(pa, pb);
                }
                if T == 4 {
                    let total = hsum_epi32_x4(std::array::from_fn(|t| run[t % T]));
                    let min_total = _mm_madd_epi16(pairs, shuffle_epi32_dyn(mins16, j));
                    acc4[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(total), scale4, acc4[r]);
                    acc4_min[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(min_total), min_scale4, acc4_min[r]);
                } else {
                    sums[0] = _mm256_add_epi32(sums[0], run[0]);
                }
            }
            if T == 1 {
                let mins_pairs = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
                let min_sum = _mm256_madd_epi16(bsums[0], mins_pairs);
                let (total, min_total) = hsum_epi32_pair(sums[0], min_sum);
                acc[r][0] = (total as f32).mul_add(d * dx[0], acc[r][0]);
                acc_min[r][0] = (min_total as f32).mul_add(dmin * dx[0], acc_min[r][0]);
            }
        }
    }
    if T == 4 {
        for r in 0..R {
            acc[r] = first_lanes(_mm_sub_ps(acc4[r], acc4_min[r]));
        }
        acc
    } else {
        let mut out = [[0.0f32; T]; R];
        for r in 0..R {
            out[r][0] = acc[r][0] - acc_min[r][0];
        }
        out
    }
}

/// The first `T` (at most 4) lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn first_lanes<const T: usize>(v: __m128) -> [f32; T] {
    const { assert!(T <= 4, "a vector of four lanes") };
    let mut lanes = [0.0f32; 4];
    // SAFETY: `lanes` holds four floats.
    unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
    std::array::from_fn(|t| lanes[t])
}

/// Broadcast of i32 element `j` (0..4) of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn shuffle_epi32_dyn(v: __m128i, j: usize) -> __m128i {
    match j {
        0 => _mm_shuffle_epi32::<0x00>(v),
        1 => _mm_shuffle_epi32::<0x55>(v),
        2 => _mm_shuffle_epi32::<0xAA>(v),
        _ => _mm_shuffle_epi32::<0xFF>(v),
    }
}

kquant_kernel!(Q4K, 144, tile_q4_k);

kquant_kernel!(Q5K, 176, tile_q5_k);

/// The `Q6_K` tile in the order of [`Q6KTiled`]: one f32 sum per (row,
/// token), for four tokens the four sums of a row in one vector.
///
/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q6_k_tiled<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
) -> [[f32; T]; R] {
    const { assert!(T == 1 || T == 4, "tiles of one or four tokens") };
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc1 = [[0.0f32; T]; R];
    let mut acc4 = [_mm_setzero_ps(); R];
    for b in 0..n_blocks {
        // SAFETY: every activation row holds a scale per block.
        let dx: [f32; T] = std::array::from_fn(|t| unsafe { *x[t].d.get_unchecked(b) });
        let dx4 = if T == 4 {
            _mm_setr_ps(dx[0], dx[1 % T], dx[2 % T], dx[3 % T])
        } else {
            _mm_setzero_ps()
        };
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let p = unsafe { w[r].as_ptr().add(b * 210) };
            // SAFETY: scales (16 bytes at 192) and d (at 208) are in the block.
            let (scales8, d) =
                unsafe { (load128(p.add(192)), super::f16_to_f32(read_u16(p.add(208)))) };
            let mut sums = [_mm256_setzero_si256(); T];
            for half in 0..2 {
                // SAFETY: `ql` (128 bytes at 0) and `qh` (64 at 128) halves.
                let (qa, qb, qh) = unsafe {
                    (
                        load256(p.add(64 * half)),
                        load256(p.add(64 * half + 32)),
                        load256(p.add(128 + 32 * half)),
                    )
                };
                let values = [
                    _mm256_or_si256(
                        _mm256_and_si256(qa, low4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(qb, low4),
                        _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C))),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(qa), low4),
                        _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(qb), low4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), _mm256_set1_epi8(0x30)),
                    ),
                ];
                for (k, &v) in values.iter().enumerate() {
                    // Scales of runs 8 half + 2 k (low 16 values) and the next.
                    let sc = pair_scales(scales8, 8 * half + 2 * k);
                    for t in 0..T {
                        // SAFETY: activation quants `256 b + 128 half + 32 k ..+32`.
                        let xq = unsafe {
                            load256(x[t].qs.as_ptr().add(b * 256 + 128 * half + 32 * k).cast())
                        };
                        let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(v, xq), sc);
                        sums[t] = _mm256_add_epi32(sums[t], prod);
                    }
                }
            }
            let scales16 = _mm256_cvtepi8_epi16(scales8);
            let mut totals = [_mm256_setzero_si256(); T];
            for t in 0..T {
                // SAFETY: 16 block sums per activation block.
                let bsums = unsafe { load256(x[t].bsums.as_ptr().add(b * 16).cast()) };
                // The stored values are biased by 32: subtract 32 * sum(scale * bsum).
                let bias = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales16, bsums));
                totals[t] = _mm256_sub_epi32(sums[t], bias);
            }
            if T == 4 {
                let total = _mm_cvtepi32_ps(hsum_epi32_x4(std::array::from_fn(|t| totals[t % T])));
                acc4[r] = _mm_fmadd_ps(_mm_mul_ps(total, _mm_set1_ps(d)), dx4, acc4[r]);
            } else {
                let (total, _) = hsum_epi32_pair(totals[0], _mm256_setzero_si256());
                acc1[r][0] = (total as f32 * d).mul_add(dx[0], acc1[r][0]);
            }
        }
    }
    if T == 4 {
        for r in 0..R {
            acc1[r] = first_lanes(acc4[r]);
        }
    }
    acc1
}

/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q6_k<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
) -> [[f32; T]; R] {
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..n_blocks {
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let p = unsafe { w[r].as_ptr().add(b * 210) };
            // SAFETY: scales (16 bytes at 192) and d (at 208) are in the block.
            let (scales8, d) =
                unsafe { (load128(p.add(192)), super::f16_to_f32(read_u16(p.add(208)))) };
            let mut sums = [_mm256_setzero_si256(); T];
            for half in 0..2 {
                // SAFETY: `ql` (128 bytes at 0) and `qh` (64 at 128) halves.
                let (qa, qb, qh) = unsafe {
                    (
                        load256(p.add(64 * half)),
                        load256(p.add(64 * half + 32)),
                        load256(p.add(128 + 32 * half)),
                    )
                };
                let values = [
                    _mm256_or_si256(
                        _mm256_and_si256(qa, low4),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(qb, low4),
                        _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C))),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(qa), low4),
                        _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(qb), low4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), _mm256_set1_epi8(0x30)),
                    ),
                ];
                for (k, &v) in values.iter().enumerate() {
                    // Scales of runs 8 half + 2 k (low 16 values) and the next.
                    let sc = pair_scales(scales8, 8 * half + 2 * k);
                    for t in 0..T {
                        // SAFETY: activation quants `256 b + 128 half + 32 k ..+32`.
                        let xq = unsafe {
                            load256(x[t].qs.as_ptr().add(b * 256 + 128 * half + 32 * k).cast())
                        };
                        let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(v, xq), sc);
                        sums[t] = _mm256_add_epi32(sums[t], prod);
                    }
                }
            }
            let scales16 = _mm256_cvtepi8_epi16(scales8);
            for t in 0..T {
                // SAFETY: 16 block sums and a scale per activation block.
                let (bsums, dx) = unsafe {
                    (
                        load256(x[t].bsums.as_ptr().add(b * 16).cast()),
                        *x[t].d.get_unchecked(b),
                    )
                };
                // The stored values are biased by 32: subtract 32 * sum(scale * bsum).
                let bias = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales16, bsums));
                let total = _mm256_sub_epi32(sums[t], bias);
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_set1_ps(d * dx), acc[r][t]);
            }
        }
    }
    finish(acc)
}

kquant_kernel!(Q6K, 210, tile_q6_k);

/// `Q6_K` in the float order of llama.cpp's tiled kernel, which it uses
/// for batches of [`Q6K_TILED_MIN_TOKENS`] tokens or more: per (row,
/// token), `sum += (f32(block total) * d) * dx` once per super-block.
pub(super) struct Q6KTiled;

/// Batch size from which llama.cpp multiplies `Q6_K` with its tiled kernel.
pub(super) const Q6K_TILED_MIN_TOKENS: usize = 8;

kquant_kernel!(Q6KTiled, 210, tile_q6_k_tiled);

pub(super) struct Q2K;
pub(super) struct Q3K;

/// 16 bytes `[s[first]; 8] ++ [s[first + 1]; 8]` of a 16-byte vector, as i16
/// lanes (signed): the scales of two runs of 16 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_scales(scales8: __m128i, first: usize) -> __m256i {
    let first = first as i64;
    let pick = _mm_set_epi64x(
        (first + 1) * 0x0101_0101_0101_0101,
        first * 0x0101_0101_0101_0101,
    );
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales8, pick))
}

/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q2_k<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
) -> [[f32; T]; R] {
    let low2 = _mm256_set1_epi8(0x03);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..n_blocks {
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let p = unsafe { w[r].as_ptr().add(b * 84) };
            // SAFETY: scales (16 bytes at 0), d and dmin (at 80) are in the block.
            let (packed, dm) = unsafe { (load128(p), f16x2_to_f32(read_u32(p.add(80)))) };
            let d = _mm_cvtss_f32(dm);
            let dmin = _mm_cvtss_f32(_mm_movehdup_ps(dm));
            let scales8 = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
            let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(
                _mm_srli_epi16::<4>(packed),
                _mm_set1_epi8(0x0F),
            ));
            let mut sums = [_mm256_setzero_si256(); T];
            for half in 0..2 {
                // SAFETY: 32 of the block's 64 quant bytes (at 16).
                let mut q = unsafe { load256(p.add(16 + 32 * half)) };
                for plane in 0..4 {
                    let v = _mm256_and_si256(q, low2);
                    q = _mm256_srli_epi16::<2>(q);
                    let sc = pair_scales(scales8, 8 * half + 2 * plane);
                    for t in 0..T {
                        // SAFETY: activation quants `256 b + 128 half + 32 plane ..+32`.
                        let xq = unsafe {
                            load256(
                                x[t].qs
                                    .as_ptr()
                                    .add(b * 256 + 128 * half + 32 * plane)
                                    .cast(),
                            )
                        };
                        sums[t] = _mm256_add_epi32(
                            sums[t],
                            _mm256_madd_epi16(_mm256_maddubs_epi16(v, xq), sc),
                        );
                    }
                }
            }
            for t in 0..T {
                // SAFETY: 16 block sums and a scale per activation block.
                let (bsums, dx) = unsafe {
                    (
                        load256(x[t].bsums.as_ptr().add(b * 16).cast()),
                        *x[t].d.get_unchecked(b),
                    )
                };
                let min_sum = _mm256_madd_epi16(mins16, bsums);
                let v = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(sums[t]),
                    _mm256_set1_ps(d * dx),
                    acc[r][t],
                );
                acc[r][t] =
                    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(min_sum), _mm256_set1_ps(dmin * dx), v);
            }
        }
    }
    finish(acc)
}

/// The sixteen 6-bit `Q3_K` scales (12 bytes at `p`), bias removed, as i8.
///
/// # Safety
/// `p..p + 12` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_scales(p: *const u8) -> __m128i {
    // SAFETY: 12 readable bytes (caller).
    let (a0, a1, a2) = unsafe { (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8))) };
    let (low, high) = (0x0F0F_0F0Fu32, 0x0303_0303u32);
    let s0 = (a0 & low) | ((a2 & high) << 4);
    let s1 = (a1 & low) | (((a2 >> 2) & high) << 4);
    let s2 = ((a0 >> 4) & low) | (((a2 >> 4) & high) << 4);
    let s3 = ((a1 >> 4) & low) | (((a2 >> 6) & high) << 4);
    _mm_sub_epi8(
        _mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32),
        _mm_set1_epi8(32),
    )
}

/// # Safety
/// AVX2, FMA and F16C available; lengths as checked by `check_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q3_k<const R: usize, const T: usize>(
    n_blocks: usize,
    w: [&[u8]; R],
    x: &[QuantizedRow<'_>],
) -> [[f32; T]; R] {
    let low2 = _mm256_set1_epi8(0x03);
    let bit0 = _mm256_set1_epi8(0x01);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..n_blocks {
        for r in 0..R {
            // SAFETY: block `b < n_blocks` of a row holding `n_blocks` blocks.
            let p = unsafe { w[r].as_ptr().add(b * 110) };
            // SAFETY: hmask (32 bytes at 0), scales (12 at 96), d (at 108).
            let (mut high, scales8, d) = unsafe {
                (
                    load256(p),
                    q3_k_scales(p.add(96)),
                    super::f16_to_f32(read_u16(p.add(108))),
                )
            };
            let mut sums = [_mm256_setzero_si256(); T];
            for half in 0..2 {
                // SAFETY: 32 of the block's 64 quant bytes (at 32).
                let mut q = unsafe { load256(p.add(32 + 32 * half)) };
                for plane in 0..4 {
                    // Unsigned value `low2 + 4 * high_bit`; the bias of 4 is
                    // removed below through the block sums.
                    let hb = _mm256_slli_epi16::<2>(_mm256_and_si256(high, bit0));
                    let v = _mm256_or_si256(_mm256_and_si256(q, low2), hb);
                    q = _mm256_srli_epi16::<2>(q);
                    high = _mm256_srli_epi16::<1>(high);
                    let sc = pair_scales(scales8, 8 * half + 2 * plane);
                    for t in 0..T {
                        // SAFETY: activation quants `256 b + 128 half + 32 plane ..+32`.
                        let xq = unsafe {
                            load256(
                                x[t].qs
                                    .as_ptr()
                                    .add(b * 256 + 128 * half + 32 * plane)
                                    .cast(),
                            )
                        };
                        sums[t] = _mm256_add_epi32(
                            sums[t],
                            _mm256_madd_epi16(_mm256_maddubs_epi16(v, xq), sc),
                        );
                    }
                }
            }
            let scales16 = _mm256_cvtepi8_epi16(scales8);
            for t in 0..T {
                // SAFETY: 16 block sums and a scale per activation block.
                let (bsums, dx) = unsafe {
                    (
                        load256(x[t].bsums.as_ptr().add(b * 16).cast()),
                        *x[t].d.get_unchecked(b),
                    )
                };
                let bias = _mm256_slli_epi32::<2>(_mm256_madd_epi16(scales16, bsums));
                let total = _mm256_sub_epi32(sums[t], bias);
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_set1_ps(d * dx), acc[r][t]);
            }
        }
    }
    finish(acc)
}

kquant_kernel!(Q2K, 84, tile_q2_k);

kquant_kernel!(Q3K, 110, tile_q3_k);
