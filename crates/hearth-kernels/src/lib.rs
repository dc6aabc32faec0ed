//! Hot CPU kernels for Hearth's inference runtime.
//!
//! Weights stay in their on-disk (GGUF) block formats and are never
//! dequantized as a whole: [`matmul()`] quantizes the activations to the 8-bit
//! companion format of each weight type with llama.cpp's rounding (so the
//! integer block sums are the ones llama.cpp computes) and runs integer dot
//! products over the blocks in register tiles, spread over a [`ThreadPool`].
//! AVX2/FMA/F16C code is selected at run time, with a portable fallback that
//! the SIMD code is tested against; everything is checked against naive code.
//!
//! - [`quant`]: block layouts, [`dequantize_row`], activation quantizers.
//! - [`mod@matmul`]: the product, its work split and scratch buffers.
//! - [`pool`]: the scoped thread pool (spins briefly, then sleeps).
//! - [`ops`]: norms, activations, softmax and f16 helpers.

pub mod attention;
mod dot;
pub mod dtype;
pub mod exact;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;

pub use dtype::WeightType;
pub use matmul::{MatmulScratch, Matrix, matmul};
pub use pool::ThreadPool;
pub use quant::{dequantize_row, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};

/// Errors from kernel entry points that validate their arguments.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelError {
    /// A buffer does not have the size its shape and type require.
    #[error("{what}: expected {expected} bytes for {rows}x{cols} {ty:?}, got {actual}")]
    BadSize {
        what: &'static str,
        ty: WeightType,
        rows: usize,
        cols: usize,
        expected: usize,
        actual: usize,
    },
    /// The row width is not a multiple of the type's block size.
    #[error("row width {cols} is not a multiple of the {ty:?} block size {block}")]
    BadRowWidth {
        ty: WeightType,
        cols: usize,
        block: usize,
    },
    /// A slice does not have the number of elements its shape requires.
    #[error("{what}: expected {expected} elements, got {actual}")]
    BadLength {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A row index past the end of a matrix.
    #[error("row {row} is out of range for a matrix of {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },
    /// The operation is not implemented for this weight type.
    #[error("{op} is not supported for {ty:?}")]
    Unsupported { op: &'static str, ty: WeightType },
}
