//! Matrix products of quantized weights with f32 activations.
//!
//! The activations are first quantized to the weight type's 8-bit companion
//! format (once per call, into the reusable [`MatmulScratch`]); the output is
//! then cut into rectangles of rows x tokens that the pool's threads claim.
//! Decoding (a handful of tokens) is bound by reading the weights, so rows
//! are split in a few large contiguous chunks per thread and each weight byte
//! is read once. Prefill cuts tokens too, into blocks whose quantized
//! activations stay in the core's cache while the kernel streams weight rows
//! against them in register tiles.

use std::ops::Range;

use crate::dot::{self, Job, KernelChoice, OutView, Tile};
use crate::quant::QuantizedRows;
use crate::{KernelError, ThreadPool, WeightType};

/// A borrowed weight matrix of `rows` x `cols` in its stored block format.
/// Each row holds `ty.row_bytes(cols)` bytes; rows are contiguous.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    ty: WeightType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> Matrix<'a> {
    /// Checks that `data` holds exactly `rows` rows of `cols` values of `ty`.
    pub fn new(
        ty: WeightType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let block = ty.block_size();
        let row_bytes = ty
            .row_bytes(cols)
            .ok_or(KernelError::BadRowWidth { ty, cols, block })?;
        let expected = row_bytes.checked_mul(rows).ok_or(KernelError::BadSize {
            what: "matrix",
            ty,
            rows,
            cols,
            expected: usize::MAX,
            actual: data.len(),
        })?;
        if data.len() != expected {
            return Err(KernelError::BadSize {
                what: "matrix",
                ty,
                rows,
                cols,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    pub fn ty(&self) -> WeightType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        // `new` checked that the width is a whole number of blocks.
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// The stored bytes of row `row`, if it exists.
    pub fn row_data(&self, row: usize) -> Option<&'a [u8]> {
        let row_bytes = self.row_bytes();
        self.data
            .get(row.checked_mul(row_bytes)?..(row + 1).checked_mul(row_bytes)?)
    }

    /// Dequantizes row `row` into `dst` (`dst.len() == cols`).
    pub fn dequantize_row(&self, row: usize, dst: &mut [f32]) -> Result<(), KernelError> {
        let src = self.row_data(row).ok_or(KernelError::RowOutOfRange {
            row,
            rows: self.rows,
        })?;
        crate::quant::dequantize_row(self.ty, src, dst)
    }
}

/// Reusable buffers for [`matmul`] (the quantized activations), so that the
/// steady-state decode loop does not allocate.
#[derive(Debug, Default)]
pub struct MatmulScratch {
    acts: QuantizedRows,
}

impl MatmulScratch {
    pub fn new() -> Self {
        Self::default()
    }
}

/// `out[t * w.rows() + r] = sum_c w[r, c] * x[t * w.cols() + c]` for every
/// token `t < n_tokens`, spread over `pool`.
///
/// `x.len()` must be `n_tokens * w.cols()` and `out.len()` `n_tokens * w.rows()`.
/// Quantized weights are multiplied with activations quantized to their
/// 8-bit companion format (`Q8_0` for `Q4_0`/`Q5_0`/`Q8_0`, `Q8_1` for
/// `Q4_1`/`Q5_1`, `Q8_K` for the K-quants), as llama.cpp does.
pub fn matmul(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    matmul_with(pool, w, x, n_tokens, out, scratch, KernelChoice::Fastest)
}

/// [`matmul`] with the choice of the portable kernels, for testing the SIMD
/// kernels against them.
#[doc(hidden)]
pub fn matmul_portable(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    matmul_with(pool, w, x, n_tokens, out, scratch, KernelChoice::Portable)
}

/// [`matmul`] with the SIMD kernels that do not need AVX-512 VNNI, for
/// testing the VNNI kernels against them.
#[doc(hidden)]
pub fn matmul_without_vnni(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    matmul_with(
        pool,
        w,
        x,
        n_tokens,
        out,
        scratch,
        KernelChoice::WithoutVnni,
    )
}

/// Whether [`matmul`] uses AVX-512 VNNI kernels on this CPU.
#[doc(hidden)]
pub fn vnni_active() -> bool {
    dot::vnni_active()
}

fn check_len(
    what: &'static str,
    expected: Option<usize>,
    actual: usize,
) -> Result<(), KernelError> {
    let expected = expected.unwrap_or(usize::MAX);
    if expected != actual {
        return Err(KernelError::BadLength {
            what,
            expected,
            actual,
        });
    }
    Ok(())
}

fn matmul_with(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    choice: KernelChoice,
) -> Result<(), KernelError> {
    check_len("matmul input", n_tokens.checked_mul(w.cols), x.len())?;
    check_len("matmul output", n_tokens.checked_mul(w.rows), out.len())?;
    if n_tokens == 0 || w.rows == 0 {
        return Ok(());
    }
    let format = dot::activation_format(w.ty);
    if let Some(format) = format {
        scratch.acts.quantize(
            pool,
            format,
            x,
            w.cols,
            n_tokens,
            choice == KernelChoice::Portable,
        );
    }
    let kernels = dot::select(w.ty, choice);
    let (row_chunk, token_chunk, prefill) = plan(
        w.rows,
        w.row_bytes(),
        n_tokens,
        kernels.tile,
        pool.n_threads(),
    );
    let kernel = if prefill {
        kernels.prefill
    } else {
        kernels.decode
    };
    let row_chunks = w.rows.div_ceil(row_chunk);
    let token_chunks = n_tokens.div_ceil(token_chunk);
    // SAFETY: every task below writes the elements of its own rectangle
    // (the rectangles partition the output).
    let view = unsafe { OutView::new(out, w.rows) };
    let job = Job {
        w: *w,
        row_bytes: w.row_bytes(),
        x,
        acts: &scratch.acts,
        format,
        out: &view,
    };
    let rect = |i: usize| -> (Range<usize>, Range<usize>) {
        let (rc, tc) = (i % row_chunks, i / row_chunks);
        let rows = rc * row_chunk..((rc + 1) * row_chunk).min(w.rows);
        let tokens = tc * token_chunk..((tc + 1) * token_chunk).min(n_tokens);
        (rows, tokens)
    };
    pool.run(row_chunks * token_chunks, &|i| {
        let (rows, tokens) = rect(i);
        kernel(&job, rows, tokens);
    });
    Ok(())
}

/// Chunk sizes `(rows, tokens)` of the rectangles a product is cut into,
/// and whether to use the prefill kernel.
fn plan(
    rows: usize,
    row_bytes: usize,
    n_tokens: usize,
    tile: Tile,
    n_threads: usize,
) -> (usize, usize, bool) {
    /// Tokens whose quantized activations a prefill task keeps hot.
    const PREFILL_TOKENS: usize = 32;
    /// Rows a prefill task streams against its token block.
    const PREFILL_ROWS: usize = 64;
    /// Row chunks per thread when decoding, for balance on busy cores.
    const DECODE_CHUNKS_PER_THREAD: usize = 2;
    /// Decode chunks are whole multiples of the decode kernels' row tiles.
    const DECODE_ROW_MULTIPLE: usize = 4;
    /// Least weight bytes per decode chunk: below this, handing work to
    /// another thread costs more than it saves.
    const MIN_DECODE_CHUNK_BYTES: usize = 16 * 1024;
    let round_up = |v: usize, m: usize| v.div_ceil(m) * m;
    if n_tokens < tile.tokens.max(2) {
        let worth = (rows.saturating_mul(row_bytes).saturating_mul(n_tokens)
            / MIN_DECODE_CHUNK_BYTES)
            .max(1);
        let n_chunks = if n_threads > 1 {
            (n_threads * DECODE_CHUNKS_PER_THREAD).min(worth)
        } else {
            1
        };
        let chunk = round_up(rows.div_ceil(n_chunks).max(1), DECODE_ROW_MULTIPLE);
        return (chunk, n_tokens, false);
    }
    let token_chunk = round_up(PREFILL_TOKENS.min(n_tokens), tile.tokens.max(1));
    let mut row_chunk = round_up(PREFILL_ROWS.min(rows), tile.rows.max(1));
    // Keep enough rectangles for every thread to have several.
    while row_chunk > 4 * tile.rows
        && rows.div_ceil(row_chunk) * n_tokens.div_ceil(token_chunk) < 4 * n_threads
    {
        row_chunk = round_up(row_chunk / 2, tile.rows.max(1));
    }
    (row_chunk, token_chunk, true)
}
