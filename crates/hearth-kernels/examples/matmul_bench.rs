//! Times `matmul` on SmolLM2-135M shapes with random weights.
//!
//! `cargo run --release -p hearth-kernels --example matmul_bench [threads...]`
//!
//! For each thread count it prints the time per call of each shape (weights
//! hot in cache) for 1 and 128 tokens with GB/s of weights and GFLOP/s, then
//! the two model-level figures: one decode step over all 30 layers plus the
//! output projection with every weight read from memory (96 MB, more than
//! the caches), and a 128-token prefill (output projection for the last
//! token only). Only the matrix products are timed.

use std::time::{Duration, Instant};

use hearth_kernels::{MatmulScratch, Matrix, ThreadPool, WeightType, matmul};

const LAYERS: usize = 30;
/// `(type, rows, cols)` of a layer's q, k, v, o, gate, up, down.
const LAYER_SHAPES: [(WeightType, usize, usize); 7] = [
    (WeightType::Q4_1, 576, 576),
    (WeightType::Q4_1, 192, 576),
    (WeightType::Q4_1, 192, 576),
    (WeightType::Q4_1, 576, 576),
    (WeightType::Q4_1, 1536, 576),
    (WeightType::Q4_1, 1536, 576),
    (WeightType::Q4_1, 576, 1536),
];
const OUTPUT: (WeightType, usize, usize) = (WeightType::Q8_0, 49152, 576);

struct Rng(u64);

impl Rng {
    fn byte(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

fn weights((ty, rows, cols): (WeightType, usize, usize), rng: &mut Rng) -> Vec<u8> {
    let n = ty.row_bytes(cols).unwrap_or(0) * rows;
    let mut data: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
    for block in data.chunks_exact_mut(ty.type_size()) {
        block[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        if ty == WeightType::Q4_1 {
            block[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
        }
    }
    data
}

fn activations(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.byte() as f32 / 64.0 - 2.0).collect()
}

/// Best time of `f` over at least `min_time` (and 3 runs).
fn best_time(mut f: impl FnMut(), min_time: Duration) -> Duration {
    f();
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < min_time || runs < 3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn matrix(shape: (WeightType, usize, usize), data: &[u8]) -> Matrix<'_> {
    Matrix::new(shape.0, shape.1, shape.2, data).expect("valid shape")
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let thread_counts = if args.is_empty() { vec![1, 2] } else { args };
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let layers: Vec<Vec<Vec<u8>>> = (0..LAYERS)
        .map(|_| LAYER_SHAPES.iter().map(|&s| weights(s, &mut rng)).collect())
        .collect();
    let output = weights(OUTPUT, &mut rng);
    let x_max = activations(128 * 1536, &mut rng);
    let mut out = vec![0.0f32; 128 * 49152];

    for &threads in &thread_counts {
        let pool = ThreadPool::new(threads);
        let mut scratch = MatmulScratch::default();
        let mut shapes: Vec<(WeightType, usize, usize, &[u8])> = LAYER_SHAPES
            .iter()
            .zip(&layers[0])
            .map(|(&(t, r, c), d)| (t, r, c, d.as_slice()))
            .collect();
        shapes.remove(2);
        shapes.push((OUTPUT.0, OUTPUT.1, OUTPUT.2, &output));
        for n_tokens in [1usize, 128] {
            for &(ty, rows, cols, data) in &shapes {
                let w = matrix((ty, rows, cols), data);
                let x = &x_max[..n_tokens * cols];
                let o = &mut out[..n_tokens * rows];
                let t = best_time(
                    || matmul(&pool, &w, x, n_tokens, o, &mut scratch).expect("matmul"),
                    Duration::from_millis(200),
                );
                let secs = t.as_secs_f64();
                println!(
                    "threads {threads} tokens {n_tokens:3} {:>4} {rows:5}x{cols:4}: {:9.1} us {:6.1} GB/s {:6.1} GFLOP/s",
                    ty.name(),
                    secs * 1e6,
                    data.len() as f64 / secs / 1e9,
                    2.0 * (rows * cols * n_tokens) as f64 / secs / 1e9,
                );
            }
        }

        let forward = |n_tokens: usize, out: &mut [f32], scratch: &mut MatmulScratch| {
            for layer in &layers {
                for (&shape, data) in LAYER_SHAPES.iter().zip(layer) {
                    let x = &x_max[..n_tokens * shape.2];
                    let o = &mut out[..n_tokens * shape.1];
                    matmul(&pool, &matrix(shape, data), x, n_tokens, o, scratch).expect("matmul");
                }
            }
            let o = &mut out[..OUTPUT.1];
            matmul(
                &pool,
                &matrix(OUTPUT, &output),
                &x_max[..OUTPUT.2],
                1,
                o,
                scratch,
            )
            .expect("matmul");
        };
        let step = best_time(
            || forward(1, &mut out, &mut scratch),
            Duration::from_millis(1500),
        );
        let total_bytes: usize =
            layers.iter().flatten().map(Vec::len).sum::<usize>() + output.len();
        println!(
            "threads {threads}: decode step {:.2} ms = {:.1} tok/s, {:.1} GB/s over {:.0} MB (matmuls only)",
            step.as_secs_f64() * 1e3,
            1.0 / step.as_secs_f64(),
            total_bytes as f64 / step.as_secs_f64() / 1e9,
            total_bytes as f64 / 1e6
        );
        let prefill = best_time(
            || forward(128, &mut out, &mut scratch),
            Duration::from_millis(1500),
        );
        println!(
            "threads {threads}: prefill 128 tokens {:.1} ms = {:.1} tok/s (matmuls only)",
            prefill.as_secs_f64() * 1e3,
            128.0 / prefill.as_secs_f64()
        );
    }
}
