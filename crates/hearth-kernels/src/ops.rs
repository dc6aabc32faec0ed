//! Conversions of the transformer forward pass that are not tied to
//! llama.cpp's rounding (those live in [`crate::exact`]).
//!
//! Each has a portable version and an AVX2/F16C version chosen at run time.
//! Slices of unequal length are processed over their common prefix: the
//! functions never panic on input.

use half::f16;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Whether the AVX2/F16C kernels can be used (detected once, then cached by
/// the standard library).
#[inline]
fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Converts f32 to f16 (round to nearest even), over the common length.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the features were detected.
        return unsafe { avx2::f32_to_f16(src, dst) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s);
    }
}
