fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = hearth_models::load_model(
        std::path::Path::new(&args[1]),
        &hearth_models::LoadOptions { n_threads: 2 },
    )
    .unwrap();
    let toks: Vec<u32> = serde_json::from_str(&args[2]).unwrap();
    let mut cache = model.new_cache(512);
    let mut logits = Vec::new();
    let batch: usize = args
        .get(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(toks.len());
    model
        .forward(&toks[..batch], &mut cache, false, &mut logits)
        .unwrap();
    for t in &toks[batch..] {
        model
            .forward(&[*t], &mut cache, false, &mut logits)
            .unwrap();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    let top: Vec<(usize, f32)> = idx[..10].iter().map(|&i| (i, logits[i])).collect();
    println!("{top:?}");
}
