//! Dot-product kernels behind [`crate::matmul`], and their run-time selection.
//!
//! A kernel computes a rectangle of the output — a range of weight rows
//! times a range of tokens — so that SIMD versions can walk it in register
//! tiles that load each weight block once for several tokens.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod float;
pub(crate) mod scalar;

use std::marker::PhantomData;
use std::ops::Range;

use crate::WeightType;
use crate::matmul::Matrix;
use crate::pool::SendPtr;
use crate::quant::{ActivationFormat, QuantizedRows};

/// The output matrix of a product, `out[t * rows + r]`, shared by the tasks
/// of one parallel loop that each write a disjoint set of elements.
pub(crate) struct OutView<'a> {
    ptr: SendPtr<f32>,
    rows: usize,
    len: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a> OutView<'a> {
    /// # Safety
    /// Concurrent users must [`set`](Self::set) disjoint elements.
    pub(crate) unsafe fn new(out: &'a mut [f32], rows: usize) -> Self {
        Self {
            ptr: SendPtr::new(out.as_mut_ptr()),
            rows,
            len: out.len(),
            _out: PhantomData,
        }
    }

    /// Writes element `(token, row)`.
    #[inline(always)]
    pub(crate) fn set(&self, token: usize, row: usize, value: f32) {
        let index = token * self.rows + row;
        assert!(
            index < self.len && row < self.rows,
            "output index out of range"
        );
        // SAFETY: in bounds (checked above); the constructor's contract
        // makes this element written by this task only.
        unsafe { self.ptr.get().add(index).write(value) }
    }
}

/// Everything a kernel reads for one product.
pub(crate) struct Job<'a> {
    pub(crate) w: Matrix<'a>,
    /// Bytes of one weight row.
    pub(crate) row_bytes: usize,
    /// The f32 activations, `x[t * cols..][..cols]`.
    pub(crate) x: &'a [f32],
    /// The quantized activations (quantized weight types only).
    pub(crate) acts: &'a QuantizedRows,
    pub(crate) format: Option<ActivationFormat>,
    pub(crate) out: &'a OutView<'a>,
}

impl<'a> Job<'a> {
    #[inline(always)]
    pub(crate) fn weight_row(&self, r: usize) -> &'a [u8] {
        &self.w.data()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// Computes the outputs of `rows` x `tokens`.
pub(crate) type RangeKernel = fn(job: &Job<'_>, rows: Range<usize>, tokens: Range<usize>);

/// The portable kernel for quantized types: one row and token at a time.
fn scalar_quantized(job: &Job<'_>, rows: Range<usize>, tokens: Range<usize>) {
    let Some(format) = job.format else { return };
    let ty = job.w.ty();
    for t in tokens {
        let x = job.acts.row(format, t);
        for r in rows.clone() {
            job.out.set(t, r, scalar::dot_row(ty, job.weight_row(r), x));
        }
    }
}

/// The activation format `ty` is multiplied with, `None` for float types.
pub(crate) fn activation_format(ty: WeightType) -> Option<ActivationFormat> {
    match ty {
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => None,
        WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => Some(ActivationFormat::Q8_0),
        WeightType::Q4_1 | WeightType::Q5_1 => Some(ActivationFormat::Q8_1),
        WeightType::Q2K | WeightType::Q3K | WeightType::Q4K | WeightType::Q5K | WeightType::Q6K => {
            Some(ActivationFormat::Q8K)
        }
    }
}

/// Register tile shape of a kernel: rows and tokens computed together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tile {
    pub(crate) rows: usize,
    pub(crate) tokens: usize,
}

/// The kernels chosen for one weight type on this CPU.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    /// For one or a few tokens.
    pub(crate) decode: RangeKernel,
    /// For many tokens, in tiles of `tile`.
    pub(crate) prefill: RangeKernel,
    pub(crate) tile: Tile,
}

/// Which kernels a product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelChoice {
    /// The fastest this CPU has.
    Fastest,
    /// The SIMD kernels without AVX-512 VNNI.
    WithoutVnni,
    /// The portable kernels.
    Portable,
}

/// Whether products use AVX-512 VNNI kernels on this CPU.
pub(crate) fn vnni_active() -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = avx2::Cpu::detect() {
        return cpu.has_vnni();
    }
    false
}

/// The kernels for `ty` on this CPU, as allowed by `choice`.
pub(crate) fn select(ty: WeightType, choice: KernelChoice) -> Kernels {
    #[cfg(target_arch = "x86_64")]
    if choice != KernelChoice::Portable
        && let Some((decode, prefill, tile)) = avx2::select(ty, choice == KernelChoice::Fastest)
    {
        return Kernels {
            decode,
            prefill,
            tile,
        };
    }
    let kernel = match activation_format(ty) {
        None => float::scalar_float as RangeKernel,
        Some(_) => scalar_quantized,
    };
    Kernels {
        decode: kernel,
        prefill: kernel,
        tile: Tile { rows: 1, tokens: 1 },
    }
}
