//! Integration tests of the kernels against naive code.

mod dequant;
mod matmul;
mod ops;
mod pool;
mod quantize;
mod support;
