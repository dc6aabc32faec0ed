//! Time to embed a batch of 16 short sentences with all-MiniLM-L6-v2, as the
//! embeddings endpoint gets them:
//! `cargo run --release -p hearth-models --example embed_bench -- [THREADS]`
//! (the model installed by `hearth models pull all-minilm-l6-v2`).

use std::time::Instant;

use hearth_models::LoadOptions;
use hearth_models::bert::BertModel;

fn main() -> anyhow::Result<()> {
    let n_threads = std::env::args()
        .nth(1)
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(2);
    let dir = hearth_core::hearth_home()
        .join("models")
        .join("all-minilm-l6-v2");
    let model = BertModel::load_with_options(&dir, &LoadOptions { n_threads })?;
    let texts: Vec<String> = (0..16)
        .map(|i| format!("Sentence number {i} talks about lighthouses and the sea."))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = model.embed(&texts)?.iter().map(|e| e.n_tokens).sum();
    let runs = 10;
    let start = Instant::now();
    for _ in 0..runs {
        model.embed(&texts)?;
    }
    let each = start.elapsed() / runs;
    println!("16 sentences ({tokens} tokens), {n_threads} threads: {each:.1?} per batch");
    Ok(())
}
