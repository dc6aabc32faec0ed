fn read(p: &str) -> Vec<f32> { std::fs::read(p).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0],c[1],c[2],c[3]])).collect() }
fn main() {
    let g = hearth_models::GgufFile::open(std::path::Path::new(&std::env::args().nth(1).unwrap())).unwrap();
    let t = g.tensor("blk.0.attn_v.weight").unwrap();
    let m = t.matrix().unwrap();
    let x = read("/tmp/ref/lc_attn_norm0.f32");
    let lc = read("/tmp/ref/lc_vcur0.f32");
    let pool = hearth_kernels::ThreadPool::new(1);
    for portable in [false, true] {
        let mut out = vec![0.0; 5 * 192];
        let mut s = hearth_kernels::MatmulScratch::default();
        if portable { hearth_kernels::matmul::matmul_portable(&pool, &m, &x, 5, &mut out, &mut s).unwrap(); } else { hearth_kernels::matmul(&pool, &m, &x, 5, &mut out, &mut s).unwrap(); }
        let d = out.iter().zip(&lc).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let mut out1 = vec![0.0; 192];
        hearth_kernels::matmul(&pool, &m, &x[4*576..], 1, &mut out1, &mut s).unwrap();
        let d1 = out1.iter().zip(&lc[4*192..]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("portable={portable}: max diff vs llama.cpp {d:e}; single-token {d1:e}");
    }
}
