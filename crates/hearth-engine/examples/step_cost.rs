//! Cost of one forward step: 16 sequences decoding one token each against
//! one sequence prefilling 16 tokens (same rows through the weights).
use std::time::Instant;

use hearth_models::{BatchSeq, ForwardScratch, LoadOptions, LogitsWanted};

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("model");
    let model = hearth_models::load_model(path.as_ref(), &LoadOptions { n_threads: 2 })?;
    let bs = 16;
    let n_seq = 16;
    let ctx = 112;
    let mut pool = model.new_kv_pool(bs, n_seq * (ctx / bs + 2) + 16);
    let mut scratch = ForwardScratch::default();
    let mut logits = Vec::new();
    let tables: Vec<Vec<u32>> = (0..n_seq)
        .map(|s| ((s * (ctx / bs + 2)) as u32..((s + 1) * (ctx / bs + 2)) as u32).collect())
        .collect();
    let prompt: Vec<u32> = (0..ctx as u32).map(|i| 100 + i).collect();
    for t in &tables {
        let seq = BatchSeq {
            tokens: &prompt,
            blocks: t,
            pos: 0,
            logits: LogitsWanted::Last,
        };
        model.forward_batch(&[seq], &mut pool, &mut scratch, &mut logits)?;
    }
    let one = [7u32];
    let sixteen: Vec<u32> = (0..16).map(|i| 300 + i).collect();
    let (mut tb, mut tp, mut tn) = (0.0, 0.0, 0.0);
    for _ in 0..10 {
        let batch: Vec<BatchSeq> = tables
            .iter()
            .map(|t| BatchSeq {
                tokens: &one,
                blocks: t,
                pos: ctx,
                logits: LogitsWanted::Last,
            })
            .collect();
        let s = Instant::now();
        logits.clear();
        model.forward_batch(&batch, &mut pool, &mut scratch, &mut logits)?;
        tb += s.elapsed().as_secs_f64();
        let batch: Vec<BatchSeq> = tables
            .iter()
            .map(|t| BatchSeq {
                tokens: &one,
                blocks: t,
                pos: ctx,
                logits: LogitsWanted::None,
            })
            .collect();
        let s = Instant::now();
        logits.clear();
        model.forward_batch(&batch, &mut pool, &mut scratch, &mut logits)?;
        tn += s.elapsed().as_secs_f64();
        let seq = BatchSeq {
            tokens: &sixteen,
            blocks: &tables[0],
            pos: ctx,
            logits: LogitsWanted::Last,
        };
        let s = Instant::now();
        logits.clear();
        model.forward_batch(&[seq], &mut pool, &mut scratch, &mut logits)?;
        tp += s.elapsed().as_secs_f64();
    }
    println!(
        "16 decodes: {:.1} ms/step, 16 decodes without logits {:.1} ms, one 16-token chunk: {:.1} ms",
        tb * 100.0,
        tn * 100.0,
        tp * 100.0
    );
    Ok(())
}
