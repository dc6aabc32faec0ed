//! AVX2/F16C version of the f32 to f16 conversion.

use std::arch::x86_64::*;

use half::f16;

/// Whether these kernels can run on this CPU.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8_f32(v: &[f32], i: usize) -> __m256 {
    let chunk: &[f32; 8] = match v[i..i + 8].try_into() {
        Ok(chunk) => chunk,
        Err(_) => return _mm256_setzero_ps(),
    };
    // SAFETY: `chunk` is 8 readable f32.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(load8_f32(src, i));
        if let Ok(chunk) = <&mut [f16; 8]>::try_from(&mut dst[i..i + 8]) {
            // SAFETY: `chunk` is 16 writable bytes.
            unsafe { _mm_storeu_si128(chunk.as_mut_ptr().cast(), h) }
        }
        i += 8;
    }
    for j in i..n {
        dst[j] = f16::from_f32(src[j]);
    }
}
