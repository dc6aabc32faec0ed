//! `matmul` against dequantize-then-f32-dot, and SIMD against portable.

use hearth_kernels::matmul::{matmul_portable, matmul_without_vnni, vnni_active};
use hearth_kernels::{
    KernelError, MatmulScratch, Matrix, ThreadPool, WeightType, matmul, quantize_row_q8_0,
    quantize_row_q8_1, quantize_row_q8_k,
};
use proptest::prelude::*;

use crate::support::{ALL_TYPES, Rng, random_matrix};

/// Integer path against the same numbers in f32 (dequantized weights times
/// dequantized 8-bit activations): only summation order and the f16 rounding
/// of `Q8_1`'s block sums differ. Relative to `sum |w| |x|`.
const TOL_SAME_NUMBERS: f32 = 1e-3;
/// SIMD kernels against the portable ones: summation order only.
const TOL_SIMD: f32 = 2e-5;
/// Absolute slack for outputs that are near zero.
const TOL_ABS: f32 = 1e-5;

/// How far a product may be from the unquantized f32 product, in units of
/// `sum_i |w_i| * step_i` (`step_i` the quantization step of the activation
/// block holding value `i`): rounding to nearest costs half a step; the
/// 32-value formats also round their activation scale to f16 (relative
/// 2^-11), and `Q8_1`'s stored block sum once more.
struct ActivationBudget {
    steps: f32,
}

/// No activation quantization: float weights multiply f32 activations.
const FLOAT_BUDGET: ActivationBudget = ActivationBudget { steps: 0.0 };
/// `Q8_0` activations (`Q4_0`, `Q5_0`, `Q8_0` weights).
const Q8_0_BUDGET: ActivationBudget = ActivationBudget { steps: 0.5 + 2e-3 };
/// `Q8_1` activations (`Q4_1`, `Q5_1` weights).
const Q8_1_BUDGET: ActivationBudget = ActivationBudget { steps: 0.5 + 3e-3 };
/// `Q8_K` activations (the K-quants): f32 scale, so half a step.
const Q8_K_BUDGET: ActivationBudget = ActivationBudget { steps: 0.5 + 1e-4 };

fn activation_budget(ty: WeightType) -> f32 {
    let budget = match ty {
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => FLOAT_BUDGET,
        WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => Q8_0_BUDGET,
        WeightType::Q4_1 | WeightType::Q5_1 => Q8_1_BUDGET,
        WeightType::Q2K | WeightType::Q3K | WeightType::Q4K | WeightType::Q5K | WeightType::Q6K => {
            Q8_K_BUDGET
        }
        _ => Q8_1_BUDGET,
    };
    budget.steps
}

/// Quantizes `x` as the weight type's companion format and dequantizes it
/// again, through the public ggml-layout quantizers.
fn quantized_activations(ty: WeightType, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    match ty {
        WeightType::F32 | WeightType::F16 | WeightType::BF16 => out.copy_from_slice(x),
        WeightType::Q4_0
        | WeightType::Q5_0
        | WeightType::Q8_0
        | WeightType::Q4_1
        | WeightType::Q5_1 => {
            let with_sum = matches!(ty, WeightType::Q4_1 | WeightType::Q5_1);
            let block_bytes = if with_sum { 36 } else { 34 };
            let mut q = vec![0u8; x.len() / 32 * block_bytes];
            if with_sum {
                quantize_row_q8_1(x, &mut q).expect("q8_1");
            } else {
                quantize_row_q8_0(x, &mut q).expect("q8_0");
            }
            let skip = block_bytes - 32;
            for (b, o) in q.chunks_exact(block_bytes).zip(out.chunks_exact_mut(32)) {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (v, &qv) in o.iter_mut().zip(&b[skip..]) {
                    *v = d * (qv as i8) as f32;
                }
            }
        }
        _ => {
            let mut q = vec![0u8; x.len() / 256 * 292];
            quantize_row_q8_k(x, &mut q).expect("q8_K");
            for (b, o) in q.chunks_exact(292).zip(out.chunks_exact_mut(256)) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for (v, &qv) in o.iter_mut().zip(&b[4..260]) {
                    *v = d * (qv as i8) as f32;
                }
            }
        }
    }
    out
}

/// The signature shared by `matmul` and its kernel-choosing variants.
type MatmulFn = fn(
    &ThreadPool,
    &Matrix<'_>,
    &[f32],
    usize,
    &mut [f32],
    &mut MatmulScratch,
) -> Result<(), KernelError>;

struct Case {
    ty: WeightType,
    rows: usize,
    cols: usize,
    n_tokens: usize,
    weights: Vec<u8>,
    x: Vec<f32>,
}

impl Case {
    fn new(ty: WeightType, rows: usize, blocks: usize, n_tokens: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let cols = blocks * ty.block_size().max(32);
        let weights = random_matrix(ty, rows, cols, &mut rng);
        let x = rng.floats(n_tokens * cols, 2.0);
        Self {
            ty,
            rows,
            cols,
            n_tokens,
            weights,
            x,
        }
    }

    fn matrix(&self) -> Matrix<'_> {
        Matrix::new(self.ty, self.rows, self.cols, &self.weights).expect("valid matrix")
    }

    fn run(&self, threads: usize, portable: bool) -> Vec<f32> {
        self.run_with(threads, if portable { matmul_portable } else { matmul })
    }

    fn run_with(&self, threads: usize, f: MatmulFn) -> Vec<f32> {
        let pool = ThreadPool::new(threads);
        let mut out = vec![f32::NAN; self.n_tokens * self.rows];
        let mut scratch = MatmulScratch::default();
        f(
            &pool,
            &self.matrix(),
            &self.x,
            self.n_tokens,
            &mut out,
            &mut scratch,
        )
        .expect("matmul");
        out
    }

    fn dense_weights(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.rows * self.cols];
        let m = self.matrix();
        for (r, row) in w.chunks_exact_mut(self.cols).enumerate() {
            m.dequantize_row(r, row).expect("dequantize");
        }
        w
    }

    /// Checks `out` against the f32 products of the dequantized weights with
    /// the quantized activations (tight) and with the raw ones (budget).
    fn check_against_reference(&self, out: &[f32]) {
        let w = self.dense_weights();
        for t in 0..self.n_tokens {
            let x = &self.x[t * self.cols..(t + 1) * self.cols];
            let xq = quantized_activations(self.ty, x);
            let block = if self.ty.block_size() == 256 { 256 } else { 32 };
            for r in 0..self.rows {
                let wr = &w[r * self.cols..(r + 1) * self.cols];
                let got = out[t * self.rows + r];
                let same: f32 = wr.iter().zip(&xq).map(|(a, b)| a * b).sum();
                let magnitude: f32 = wr.iter().zip(&xq).map(|(a, b)| (a * b).abs()).sum();
                let tol = TOL_SAME_NUMBERS * magnitude + TOL_ABS;
                assert!(
                    (got - same).abs() <= tol,
                    "{:?} r{r} t{t}: {got} vs {same} (tol {tol})",
                    self.ty
                );
                let exact: f32 = wr.iter().zip(x).map(|(a, b)| a * b).sum();
                let mut budget = TOL_ABS + TOL_SAME_NUMBERS * magnitude;
                for (wb, xb) in wr.chunks(block).zip(x.chunks(block)) {
                    let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let step = amax / 127.0;
                    budget +=
                        activation_budget(self.ty) * step * wb.iter().map(|v| v.abs()).sum::<f32>();
                }
                assert!(
                    (got - exact).abs() <= budget,
                    "{:?} r{r} t{t}: {got} vs f32 {exact}",
                    self.ty
                );
            }
        }
    }
}

fn assert_close(ty: WeightType, a: &[f32], b: &[f32], magnitude: f32) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = TOL_SIMD * magnitude + TOL_ABS;
        assert!((x - y).abs() <= tol, "{ty:?} at {i}: {x} vs {y}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_dequantized_reference(
        type_index in 0..ALL_TYPES.len(),
        rows in 1usize..10,
        blocks in 1usize..4,
        n_tokens in 1usize..8,
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        let case = Case::new(ALL_TYPES[type_index], rows, blocks, n_tokens, seed);
        let out = case.run(threads, false);
        case.check_against_reference(&out);
    }

    #[test]
    fn simd_matches_portable(
        type_index in 0..ALL_TYPES.len(),
        rows in 1usize..24,
        blocks in 1usize..4,
        n_tokens in 1usize..20,
        seed in any::<u64>(),
    ) {
        let case = Case::new(ALL_TYPES[type_index], rows, blocks, n_tokens, seed);
        let fast = case.run(2, false);
        let portable = case.run(1, true);
        let magnitude = case.x.iter().map(|v| v.abs()).fold(0.0f32, f32::max) * case.cols as f32;
        assert_close(case.ty, &fast, &portable, magnitude);
    }
}

/// The AVX-512 VNNI kernels form the same exact integer block dots as the
/// AVX2 ones and keep every float operation, so the outputs are identical
/// bit for bit, in decode (few tokens) and prefill tiles with remainders.
#[test]
fn vnni_kernels_match_avx2_bit_for_bit() {
    let types = [
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
    ];
    for (i, &ty) in types.iter().enumerate() {
        for &(rows, blocks, n_tokens) in &[(70, 18, 1), (9, 3, 2), (70, 5, 37), (131, 2, 4)] {
            let case = Case::new(ty, rows, blocks, n_tokens, 2000 + i as u64);
            for threads in [1, 2] {
                let fast = case.run_with(threads, matmul);
                let avx2 = case.run_with(threads, matmul_without_vnni);
                for (j, (a, b)) in fast.iter().zip(&avx2).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{ty:?} at {j}: {a} vs {b}");
                }
            }
        }
    }
}

/// The VNNI kernels are the ones `matmul` runs wherever the CPU has them.
#[test]
fn vnni_kernels_run_where_available() {
    #[cfg(target_arch = "x86_64")]
    let available = std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl");
    #[cfg(not(target_arch = "x86_64"))]
    let available = false;
    assert_eq!(vnni_active(), available);
}

/// Shapes large enough for every tile and chunk path of the prefill kernels
/// (row and token remainders included), for every type.
#[test]
fn prefill_tiles_and_remainders_match_portable() {
    for (i, &ty) in ALL_TYPES.iter().enumerate() {
        for &(rows, n_tokens) in &[(70, 37), (5, 9), (131, 4)] {
            let case = Case::new(ty, rows, 2, n_tokens, 1000 + i as u64);
            let fast = case.run(2, false);
            let portable = case.run(1, true);
            let magnitude =
                case.x.iter().map(|v| v.abs()).fold(0.0f32, f32::max) * case.cols as f32;
            assert_close(ty, &fast, &portable, magnitude);
        }
    }
}

#[test]
fn scratch_is_reused_across_shapes() {
    let pool = ThreadPool::new(2);
    let mut scratch = MatmulScratch::default();
    for &(ty, n_tokens) in &[
        (WeightType::Q4_1, 9),
        (WeightType::Q6K, 2),
        (WeightType::Q8_0, 1),
    ] {
        let case = Case::new(ty, 6, 1, n_tokens, 7);
        let mut out = vec![0.0f32; n_tokens * 6];
        matmul(
            &pool,
            &case.matrix(),
            &case.x,
            n_tokens,
            &mut out,
            &mut scratch,
        )
        .expect("matmul");
        case.check_against_reference(&out);
    }
}

#[test]
fn rejects_bad_sizes() {
    let pool = ThreadPool::new(1);
    let mut scratch = MatmulScratch::default();
    let data = vec![0u8; 2 * 18];
    assert!(matches!(
        Matrix::new(WeightType::Q4_0, 2, 33, &data),
        Err(KernelError::BadRowWidth { .. })
    ));
    assert!(matches!(
        Matrix::new(WeightType::Q4_0, 3, 32, &data),
        Err(KernelError::BadSize { .. })
    ));
    let w = Matrix::new(WeightType::Q4_0, 2, 32, &data).expect("valid");
    let mut out = vec![0.0f32; 2];
    let err = matmul(&pool, &w, &[0.0; 31], 1, &mut out, &mut scratch);
    assert!(matches!(err, Err(KernelError::BadLength { .. })));
    let err = matmul(&pool, &w, &[0.0; 32], 1, &mut out[..1], &mut scratch);
    assert!(matches!(err, Err(KernelError::BadLength { .. })));
    let err = matmul(&pool, &w, &[0.0; 32], usize::MAX, &mut out, &mut scratch);
    assert!(matches!(err, Err(KernelError::BadLength { .. })));
    assert!(matches!(
        w.dequantize_row(2, &mut [0.0; 32]),
        Err(KernelError::RowOutOfRange { .. })
    ));
    assert!(matmul(&pool, &w, &[], 0, &mut [], &mut scratch).is_ok());
}

#[test]
fn zero_activations_give_zero() {
    let pool = ThreadPool::new(2);
    let mut scratch = MatmulScratch::default();
    for &ty in &ALL_TYPES {
        let case = Case::new(ty, 3, 1, 2, 3);
        let x = vec![0.0f32; case.x.len()];
        let mut out = vec![f32::NAN; 6];
        matmul(&pool, &case.matrix(), &x, 2, &mut out, &mut scratch).expect("matmul");
        assert!(out.iter().all(|&v| v == 0.0), "{ty:?}: {out:?}");
    }
}
