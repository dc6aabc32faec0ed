//! Deterministic random data for kernel tests.

use half::f16;
use hearth_kernels::WeightType;

/// Every weight type the kernels support.
pub const ALL_TYPES: [WeightType; 13] = [
    WeightType::F32,
    WeightType::F16,
    WeightType::BF16,
    WeightType::Q4_0,
    WeightType::Q4_1,
    WeightType::Q5_0,
    WeightType::Q5_1,
    WeightType::Q8_0,
    WeightType::Q2K,
    WeightType::Q3K,
    WeightType::Q4K,
    WeightType::Q5K,
    WeightType::Q6K,
];

/// A small xorshift generator: reproducible from a seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn floats(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// Byte offsets of the f16 scale fields inside one block of `ty`.
fn scale_offsets(ty: WeightType) -> &'static [usize] {
    match ty {
        WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => &[0],
        WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K => &[0, 2],
        WeightType::Q2K => &[80, 82],
        WeightType::Q3K => &[108],
        WeightType::Q6K => &[208],
        _ => &[],
    }
}

/// A random `rows` x `cols` matrix of `ty`: random quants, finite scales
/// around `scale`.
pub fn random_matrix(ty: WeightType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        WeightType::F32 => rng
            .floats(n, 1.0)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        WeightType::F16 => rng
            .floats(n, 1.0)
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        WeightType::BF16 => rng
            .floats(n, 1.0)
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => {
            let bytes = ty.row_bytes(cols).expect("whole blocks") * rows;
            let mut data: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
            let scale = match ty {
                WeightType::Q2K
                | WeightType::Q3K
                | WeightType::Q4K
                | WeightType::Q5K
                | WeightType::Q6K => 0.002,
                _ => 0.02,
            };
            for block in data.chunks_exact_mut(ty.type_size()) {
                for &off in scale_offsets(ty) {
                    let v = f16::from_f32(rng.uniform() * scale);
                    block[off..off + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            data
        }
    }
}
