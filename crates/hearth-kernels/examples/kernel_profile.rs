//! Runs one matmul shape in a loop, for profiling a single kernel:
//! `kernel_profile TYPE ROWS COLS TOKENS THREADS SECONDS`.

use std::time::{Duration, Instant};

use hearth_kernels::{MatmulScratch, Matrix, ThreadPool, WeightType, matmul};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let ty = match args.first().map(String::as_str) {
        Some("q4_0") => WeightType::Q4_0,
        Some("q5_0") => WeightType::Q5_0,
        Some("q5_1") => WeightType::Q5_1,
        Some("q8_0") => WeightType::Q8_0,
        Some("q4_k") => WeightType::Q4K,
        Some("q5_k") => WeightType::Q5K,
        Some("q6_k") => WeightType::Q6K,
        Some("f16") => WeightType::F16,
        _ => WeightType::Q4_1,
    };
    let (rows, cols, n_tokens, threads, seconds) =
        (arg(1, 1536), arg(2, 576), arg(3, 128), arg(4, 1), arg(5, 3));
    let mut seed = 0x9e37_79b9_u64;
    let mut data: Vec<u8> = (0..ty.row_bytes(cols).expect("whole blocks") * rows)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    if ty.block_size() > 1 {
        let scale_offset = match ty {
            WeightType::Q6K => 208,
            _ => 0,
        };
        for block in data.chunks_exact_mut(ty.type_size()) {
            block[scale_offset..scale_offset + 2]
                .copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            if matches!(
                ty,
                WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K
            ) {
                block[2..4].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
        }
    } else {
        for v in data.chunks_exact_mut(2) {
            v.copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        }
    }
    let w = Matrix::new(ty, rows, cols, &data).expect("valid shape");
    let x: Vec<f32> = (0..n_tokens * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let mut out = vec![0.0f32; n_tokens * rows];
    let pool = ThreadPool::new(threads);
    let mut scratch = MatmulScratch::default();
    let start = Instant::now();
    let mut calls = 0u64;
    let mut best = Duration::MAX;
    while start.elapsed() < Duration::from_secs(seconds as u64) {
        let t = Instant::now();
        matmul(&pool, &w, &x, n_tokens, &mut out, &mut scratch).expect("matmul");
        best = best.min(t.elapsed());
        calls += 1;
    }
    let secs = best.as_secs_f64();
    println!(
        "{} {rows}x{cols} x {n_tokens} tokens, {threads} threads: {calls} calls, best {:.1} us, {:.1} GFLOP/s, {:.1} GB/s",
        ty.name(),
        secs * 1e6,
        2.0 * (rows * cols * n_tokens) as f64 / secs / 1e9,
        data.len() as f64 / secs / 1e9
    );
}
