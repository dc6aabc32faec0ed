//! Every registered architecture loads from a tiny random-weight GGUF and
//! runs; evaluating a prompt at once or token by token gives the same
//! logits (the KV cache holds what the batch computed).

use anyhow::Result;
use hearth_models::gguf::MetaValue;
use hearth_models::{LoadOptions, ModelError, load_model};

use crate::support::{GgufWriter, s};

const VOCAB: u64 = 96;
const EMBD: u64 = 64;
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const HEAD_DIM: u64 = 16;
const FF: u64 = 128;
const LAYERS: usize = 2;

/// Largest logit difference between batched and incremental evaluation:
/// the two paths sum attention in different (llama.cpp's) orders.
const BATCH_VS_INCREMENTAL_TOLERANCE: f32 = 1e-3;

/// Deterministic pseudo-random weights in [-scale, scale].
fn weights(n: u64, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tiny_model(arch: &str) -> GgufWriter {
    let u32v = |v: u64| MetaValue::U32(v as u32);
    let mut w = GgufWriter::default()
        .kv("general.architecture", s(arch))
        .kv(&format!("{arch}.block_count"), u32v(LAYERS as u64))
        .kv(&format!("{arch}.context_length"), u32v(256))
        .kv(&format!("{arch}.embedding_length"), u32v(EMBD))
        .kv(&format!("{arch}.feed_forward_length"), u32v(FF))
        .kv(&format!("{arch}.attention.head_count"), u32v(HEADS))
        .kv(&format!("{arch}.attention.head_count_kv"), u32v(KV_HEADS))
        .kv(&format!("{arch}.attention.key_length"), u32v(HEAD_DIM))
        .kv(
            &format!("{arch}.attention.layer_norm_rms_epsilon"),
            MetaValue::F32(1e-5),
        )
        .kv(&format!("{arch}.rope.freq_base"), MetaValue::F32(10_000.0));
    if arch == "gemma3" {
        w = w.kv("gemma3.attention.sliding_window", u32v(4));
    }
    let mut seed = 1;
    let mut t = |w: GgufWriter, name: &str, dims: &[u64], scale: f32| {
        seed += 1;
        let n = dims.iter().product();
        w.f32_tensor(name, dims, &weights(n, seed, scale))
    };
    w = t(w, "token_embd.weight", &[EMBD, VOCAB], 1.0);
    w = t(w, "output_norm.weight", &[EMBD], 0.1);
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for il in 0..LAYERS {
        let n = |x: &str| format!("blk.{il}.{x}");
        w = t(w, &n("attn_norm.weight"), &[EMBD], 1.0);
        w = t(w, &n("attn_q.weight"), &[EMBD, q], 0.2);
        w = t(w, &n("attn_k.weight"), &[EMBD, kv], 0.2);
        w = t(w, &n("attn_v.weight"), &[EMBD, kv], 0.2);
        w = t(w, &n("attn_output.weight"), &[q, EMBD], 0.2);
        w = t(w, &n("ffn_norm.weight"), &[EMBD], 1.0);
        w = t(w, &n("ffn_gate.weight"), &[EMBD, FF], 0.2);
        w = t(w, &n("ffn_up.weight"), &[EMBD, FF], 0.2);
        w = t(w, &n("ffn_down.weight"), &[FF, EMBD], 0.2);
        if arch == "qwen2" {
            w = t(w, &n("attn_q.bias"), &[q], 0.1);
            w = t(w, &n("attn_k.bias"), &[kv], 0.1);
            w = t(w, &n("attn_v.bias"), &[kv], 0.1);
        }
        if arch == "gemma3" {
            w = t(w, &n("attn_q_norm.weight"), &[HEAD_DIM], 1.0);
            w = t(w, &n("attn_k_norm.weight"), &[HEAD_DIM], 1.0);
            w = t(w, &n("post_attention_norm.weight"), &[EMBD], 1.0);
            w = t(w, &n("post_ffw_norm.weight"), &[EMBD], 1.0);
        }
    }
    if arch == "llama" {
        w = t(w, "rope_freqs.weight", &[HEAD_DIM / 2], 0.0);
        // Frequency factors must be positive: overwrite with 1..=2.
        if let Some(last) = w.tensors.last_mut() {
            last.data = (0..HEAD_DIM / 2)
                .flat_map(|i| (1.0 + i as f32 / 8.0).to_le_bytes())
                .collect();
        }
    }
    w
}

/// Largest element-wise difference of two rows.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn batch_matches_incremental(arch: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = tiny_model(arch).write(&dir, "tiny.gguf")?;
    let model = load_model(&path, &LoadOptions { n_threads: 2 })?;
    assert_eq!(model.config().architecture, arch);
    assert_eq!(model.config().vocab_size, VOCAB as usize);
    let tokens = [3u32, 17, 42, 5, 88, 1, 60, 9];

    let mut batched = model.new_cache(32);
    let mut all = Vec::new();
    model.forward(&tokens, &mut batched, true, &mut all)?;
    assert_eq!(all.len(), tokens.len() * VOCAB as usize);
    assert!(all.iter().all(|v| v.is_finite()));

    let mut incremental = model.new_cache(32);
    let mut logits = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        model.forward(&[t], &mut incremental, false, &mut logits)?;
        let row = &all[i * VOCAB as usize..(i + 1) * VOCAB as usize];
        let diff = max_abs_diff(row, &logits);
        assert!(
            diff < BATCH_VS_INCREMENTAL_TOLERANCE,
            "{arch} token {i}: diff {diff}"
        );
    }
    assert_eq!(incremental.len(), tokens.len());

    // Truncating the cache and re-evaluating reproduces the same logits.
    incremental.truncate(4);
    model.forward(&tokens[4..], &mut incremental, false, &mut logits)?;
    let last = &all[(tokens.len() - 1) * VOCAB as usize..];
    let diff = max_abs_diff(last, &logits);
    assert!(
        diff < BATCH_VS_INCREMENTAL_TOLERANCE,
        "{arch} after truncate: diff {diff}"
    );
    Ok(())
}

#[test]
fn llama_batch_matches_incremental() -> Result<()> {
    batch_matches_incremental("llama")
}

#[test]
fn qwen2_batch_matches_incremental() -> Result<()> {
    batch_matches_incremental("qwen2")
}

#[test]
fn gemma3_batch_matches_incremental_with_sliding_window() -> Result<()> {
    batch_matches_incremental("gemma3")
}

#[test]
fn full_context_and_bad_tokens_are_errors_not_panics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = tiny_model("llama").write(&dir, "tiny.gguf")?;
    let model = load_model(&path, &LoadOptions { n_threads: 1 })?;
    let mut cache = model.new_cache(4);
    let mut logits = Vec::new();
    let err = model
        .forward(&[1, 2, 3, 4, 5], &mut cache, false, &mut logits)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextFull {
                needed: 5,
                capacity: 4
            }
        ),
        "{err}"
    );
    let err = model
        .forward(&[VOCAB as u32], &mut cache, false, &mut logits)
        .unwrap_err();
    assert!(matches!(err, ModelError::BadToken { .. }), "{err}");
    assert_eq!(cache.len(), 0, "a failed call leaves the cache as it was");
    Ok(())
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut w = tiny_model("llama");
    w.tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let err = load_model(&w.write(&dir, "missing.gguf")?, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("blk.1.ffn_up.weight"), "{err}");

    let mut w = tiny_model("llama");
    if let Some(t) = w
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.attn_q.weight")
    {
        t.dims = vec![EMBD / 2, HEADS * HEAD_DIM * 2];
    }
    let err = load_model(&w.write(&dir, "shape.gguf")?, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("blk.0.attn_q.weight"), "{err}");
    Ok(())
}
