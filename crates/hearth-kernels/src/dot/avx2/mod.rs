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
//!
//! Where the CPU also has AVX-512 VNNI on 256-bit vectors, the 32-value
//! formats form their integer block dots with one `vpdpbusd` instead of
//! `vpmaddubsw` + `vpmaddwd`. Both give the same exact i32 lanes (the i16
//! pair sums of the AVX2 sequence cannot saturate for these quants), and
//! the float operations are the same, so the results are bit-identical.

mod float;
mod kquants;
mod legacy;

use std::arch::x86_64::*;
use std::ops::Range;

use super::{Job, RangeKernel, Tile};
use crate::WeightType;
use crate::quant::{ActivationFormat, BlockMajor, QuantizedRow};

/// Proof that the CPU supports AVX2, FMA and F16C, recording whether it
/// also supports AVX512-VNNI and AVX512-VL.
#[derive(Clone, Copy)]
pub(crate) struct Cpu {
    vnni: bool,
}

impl Cpu {
    /// The token, if the running CPU has the features.
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then(|| Self {
            vnni: is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"),
        })
    }

    /// Whether `vpdpbusd` on 256-bit vectors is available.
    #[inline]
    pub(crate) fn has_vnni(self) -> bool {
        self.vnni
    }
}

/// A register-tile kernel for one weight type.
pub(super) trait TileKernel {
    /// Bytes of one weight block and values in it.
    const BLOCK_BYTES: usize;
    const BLOCK_VALUES: usize;

    /// `out[r][t] = dot(w[r], x[t])` over `n_blocks` blocks, for `x` of
    /// `T` rows. Every `w[r]` holds at least `n_blocks * BLOCK_BYTES` bytes
    /// and every `x[t]` the matching activation blocks (checked by
    /// [`check_tile`]).
    fn tile<const R: usize, const T: usize>(
        cpu: Cpu,
        n_blocks: usize,
        w: [&[u8]; R],
        x: &[QuantizedRow<'_>],
        scales: BlockMajor<'_>,
    ) -> [[f32; T]; R];
}

/// Checks the slice lengths a tile kernel relies on for its unchecked loads.
#[inline(always)]
pub(super) fn check_tile<const R: usize, const T: usize>(
    n_blocks: usize,
    block_bytes: usize,
    block_values: usize,
    w: &[&[u8]; R],
    x: &[QuantizedRow<'_>],
    sums_per_block: usize,
    by_block: Option<&BlockMajor<'_>>,
) {
    assert!(x.len() == T, "tile needs {T} activation rows");
    if let Some(scales) = by_block {
        let needed = n_blocks.saturating_sub(1) * scales.stride + T;
        assert!(
            n_blocks == 0 || (scales.d.len() >= needed && scales.s.len() >= needed),
            "block scales too short"
        );
    }
    for row in w {
        assert!(row.len() >= n_blocks * block_bytes, "weight row too short");
    }
    for xt in x {
        assert!(
            xt.qs.len() >= n_blocks * block_values,
            "activation row too short"
        );
        assert!(xt.d.len() >= n_blocks, "activation scales too short");
        assert!(
            xt.bsums.len() >= n_blocks * sums_per_block,
            "activation block sums too short"
        );
    }
}

/// Tokens whose activation rows the range loop looks up at once.
const TOKEN_GROUP: usize = 16;

/// Runs kernel `K` over `rows` x `tokens` in tiles of `R` x `T`, with
/// single-row and single-token tiles for the remainders.
fn range<K: TileKernel, const R: usize, const T: usize>(
    job: &Job<'_>,
    rows: Range<usize>,
    tokens: Range<usize>,
) {
    let (Some(cpu), Some(format)) = (Cpu::detect(), job.format) else {
        return super::scalar_quantized(job, rows, tokens);
    };
    let n_blocks = job.w.cols() / K::BLOCK_VALUES;
    let ctx = Ctx {
        cpu,
        job,
        format,
        n_blocks,
    };
    let empty = QuantizedRow {
        qs: &[],
        d: &[],
        s: &[],
        bsums: &[],
    };
    for group_start in tokens.clone().step_by(TOKEN_GROUP) {
        let group_len = TOKEN_GROUP.min(tokens.end - group_start);
        let xs: [QuantizedRow<'_>; TOKEN_GROUP] = std::array::from_fn(|i| {
            if i < group_len {
                job.acts.row(format, group_start + i)
            } else {
                empty
            }
        });
        let xs = &xs[..group_len];
        let mut r = rows.start;
        while r + R <= rows.end {
            if T == 1 {
                // Only the decode kernels stream weights faster than the
                // hardware prefetcher keeps up with.
                let start = r * job.row_bytes + PREFETCH_DISTANCE;
                prefetch(job.w.data(), start..start + R * job.row_bytes);
            }
            let w: [&[u8]; R] = std::array::from_fn(|i| job.weight_row(r + i));
            row_tile::<K, R, T>(&ctx, r, w, group_start, xs);
            r += R;
        }
        while r < rows.end {
            row_tile::<K, 1, T>(&ctx, r, [job.weight_row(r)], group_start, xs);
            r += 1;
        }
    }
}

/// What every tile of one range shares.
struct Ctx<'a, 'j> {
    cpu: Cpu,
    job: &'a Job<'j>,
    format: ActivationFormat,
    n_blocks: usize,
}

/// Rows `r..r + R` times the tokens `first_token..` of `xs`.
#[inline(always)]
fn row_tile<K: TileKernel, const R: usize, const T: usize>(
    ctx: &Ctx<'_, '_>,
    r: usize,
    w: [&[u8]; R],
    first_token: usize,
    xs: &[QuantizedRow<'_>],
) {
    let Ctx {
        cpu,
        job,
        format,
        n_blocks,
    } = *ctx;
    let mut t = 0;
    while t + T <= xs.len() {
        let scales = job.acts.by_block(format, first_token + t);
        let out = K::tile::<R, T>(cpu, n_blocks, w, &xs[t..t + T], scales);
        for (i, row) in out.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                job.out.set(first_token + t + j, r + i, v);
            }
        }
        t += T;
    }
    while t < xs.len() {
        let scales = job.acts.by_block(format, first_token + t);
        let out = K::tile::<R, 1>(cpu, n_blocks, w, &xs[t..t + 1], scales);
        for (i, v) in out.iter().enumerate() {
            job.out.set(first_token + t, r + i, v[0]);
        }
        t += 1;
    }
}

/// How far ahead of the decode loop weights are prefetched, in bytes:
/// streaming from memory needs several kilobytes of requests in flight,
/// more than the out-of-order window reaches on its own.
const PREFETCH_DISTANCE: usize = 5 * 1024;

/// Asks for the bytes of `data` in `range` (clamped to it) to be brought into
/// the L2 cache, one request per cache line.
#[inline]
fn prefetch(data: &[u8], range: Range<usize>) {
    let start = range.start.min(data.len());
    let end = range.end.min(data.len());
    for offset in (start..end).step_by(64) {
        // SAFETY: a prefetch is a hint that never faults; the address is
        // inside `data` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(data.as_ptr().add(offset).cast()) };
    }
}

/// Decode and prefill kernels for `K`.
fn pair<K: TileKernel, const DR: usize, const PT: usize>() -> (RangeKernel, RangeKernel) {
    (range::<K, DR, 1>, range::<K, 1, PT>)
}

/// `Q6_K` prefill: llama.cpp sums batches of
/// [`kquants::Q6K_TILED_MIN_TOKENS`] or more tokens in another order than
/// smaller ones; follow it.
fn q6k_prefill(job: &Job<'_>, rows: Range<usize>, tokens: Range<usize>) {
    let n_tokens = job.x.len() / job.w.cols().max(1);
    if n_tokens >= kquants::Q6K_TILED_MIN_TOKENS {
        range::<kquants::Q6KTiled, 1, 4>(job, rows, tokens)
    } else {
        range::<kquants::Q6K, 1, 4>(job, rows, tokens)
    }
}

/// The 4-row decode and 4-token prefill kernels of a 32-value format: the
/// VNNI variant `V` of `K` when `vnni`.
fn legacy_pair<K: TileKernel, V: TileKernel>(vnni: bool) -> (RangeKernel, RangeKernel) {
    if vnni {
        pair::<V, 4, 4>()
    } else {
        pair::<K, 4, 4>()
    }
}

/// The AVX2 kernels for `ty`: `(decode, prefill, prefill tile)`, or `None`
/// when this CPU lacks the features or the type has no AVX2 kernel. The
/// VNNI variants are used where the CPU has them and `allow_vnni`.
pub(super) fn select(ty: WeightType, allow_vnni: bool) -> Option<(RangeKernel, RangeKernel, Tile)> {
    let vnni = allow_vnni && Cpu::detect()?.has_vnni();
    use legacy::{Q4_0, Q4_1, Q5_1, Q8_0, Vnni};
    let ((decode, prefill), tokens) = match ty {
        WeightType::Q4_0 => (legacy_pair::<Q4_0, Vnni<Q4_0>>(vnni), 4),
        WeightType::Q4_1 => (legacy_pair::<Q4_1, Vnni<Q4_1>>(vnni), 4),
        WeightType::Q5_0 => (pair::<legacy::Q5_0, 4, 4>(), 4),
        WeightType::Q5_1 => (legacy_pair::<Q5_1, Vnni<Q5_1>>(vnni), 4),
        WeightType::Q8_0 => (legacy_pair::<Q8_0, Vnni<Q8_0>>(vnni), 4),
        WeightType::Q4K => (pair::<kquants::Q4K, 2, 4>(), 4),
        WeightType::Q5K => (pair::<kquants::Q5K, 2, 4>(), 4),
        WeightType::Q6K => (
            (
                range::<kquants::Q6K, 2, 1> as RangeKernel,
                q6k_prefill as RangeKernel,
            ),
            4,
        ),
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => {
            let k = float::range as RangeKernel;
            return Some((k, k, Tile { rows: 1, tokens: 1 }));
        }
        WeightType::Q2K => (pair::<kquants::Q2K, 2, 4>(), 4),
        WeightType::Q3K => (pair::<kquants::Q3K, 2, 4>(), 4),
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

/// [`dot_u8_i8`] in one `vpdpbusd`, from zero. The two are equal whenever
/// no pair of adjacent products leaves the i16 range, which holds for
/// `u <= 128` and any `x`: each pair sum lies in `-32768..=32512`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) fn dot_u8_i8_vnni(u: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)
}
