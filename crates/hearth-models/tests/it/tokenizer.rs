//! Tokenizers: known llama.cpp ids, round trips, special tokens, streaming.

use anyhow::{Context, Result};
use hearth_models::ModelError;
use hearth_models::gguf::{GgufFile, MetaValue};
use hearth_models::tokenizer::{StreamDecoder, Tokenizer};

use crate::support::{GgufWriter, open_model, s, strings};

fn smollm() -> Result<Tokenizer> {
    Ok(Tokenizer::from_gguf(&open_model("smollm2-135m-instruct")?)?)
}

fn gemma() -> Result<Tokenizer> {
    Ok(Tokenizer::from_gguf(&open_model("gemma3-270m")?)?)
}

const ROUND_TRIP_TEXTS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé café naïve résumé Straße — «quotes» “double” ‘single’",
    "中文测试，你好世界！日本語のテキスト。한국어 Ελληνικά Русский עברית العربية हिन्दी",
    "emoji 😀👍🏽🇫🇷 👨‍👩‍👧‍👦 ❤️",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}\n",
    "a  b   c    d\t\te\n\n\nf   \n   ",
    "1234567890 3.14159 1,000,000 ½ ٣٤",
    "   leading and trailing   ",
    "I'm sure you'll see they've done it",
];

#[test]
fn smollm2_matches_known_llama_cpp_ids() -> Result<()> {
    let tok = smollm()?;
    assert_eq!(
        tok.encode("The quick brown fox jumps over the lazy dog.", true, true),
        [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30]
    );
    assert_eq!(
        tok.encode("The capital of France is Paris.", false, false),
        [504, 3575, 282, 4649, 314, 7042, 30]
    );
    // Digits are split one by one.
    assert_eq!(
        tok.encode(" 12345", false, false),
        [216, 33, 34, 35, 36, 37]
    );
    Ok(())
}

#[test]
fn smollm2_special_tokens() -> Result<()> {
    let tok = smollm()?;
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.adds_bos()),
        (Some(1), Some(2), false)
    );
    assert_eq!(tok.eog_ids(), [0, 2, 4]);
    assert!(tok.is_eog(2) && !tok.is_eog(1) && !tok.is_eog(504));
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.token_text(504), Some("The"));
    assert_eq!(tok.token_text(1_000_000), None);
    // Control tokens render as nothing.
    assert!(tok.token_bytes(1).is_empty());
    assert!(tok.token_bytes(u32::MAX).is_empty());
    Ok(())
}

#[test]
fn special_token_text_is_parsed_only_when_asked() -> Result<()> {
    let tok = smollm()?;
    let text = "<|im_start|>user\nHi<|im_end|>\n";
    let parsed = tok.encode(text, false, true);
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.iter().filter(|&&id| id == 2).count(), 1);
    assert_eq!(parsed, [1, 4093, 198, 26843, 2, 198]);
    let plain = tok.encode(text, false, false);
    assert!(!plain.contains(&1) && !plain.contains(&2));
    assert_eq!(tok.decode(&plain), text);
    // A special token glued to text, and an incomplete one.
    assert_eq!(tok.encode("x<|im_end|>y", false, true)[1], 2);
    assert!(!tok.encode("<|im_start", false, true).contains(&1));
    Ok(())
}

#[test]
fn smollm2_round_trips() -> Result<()> {
    let tok = smollm()?;
    for text in ROUND_TRIP_TEXTS {
        let ids = tok.encode(text, false, false);
        assert_eq!(&tok.decode(&ids), text);
    }
    assert!(tok.encode("", true, true).is_empty());
    Ok(())
}

#[test]
fn gemma3_adds_bos_and_round_trips() -> Result<()> {
    let tok = gemma()?;
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.adds_bos()),
        (Some(2), Some(1), true)
    );
    let ids = tok.encode("Hello world", true, false);
    assert_eq!(ids.first(), Some(&2));
    assert_eq!(tok.decode(&ids), "Hello world");
    assert_eq!(tok.encode("", true, false), [2]);
    for text in ROUND_TRIP_TEXTS {
        let ids = tok.encode(text, false, false);
        assert_eq!(&tok.decode(&ids), text);
    }
    // Whitespace runs are user-defined tokens, split even without parse_special.
    let two_spaces = tok.token_id("  ").context("no two-space token")?;
    assert!(tok.encode("a  b", false, false).contains(&two_spaces));
    assert!(
        tok.is_eog(1) && tok.is_eog(tok.token_id("<end_of_turn>").context("no <end_of_turn>")?)
    );
    let turn = tok
        .token_id("<start_of_turn>")
        .context("no <start_of_turn>")?;
    assert_eq!(
        tok.encode("<start_of_turn>user", false, true).first(),
        Some(&turn)
    );
    Ok(())
}

#[test]
fn gemma3_falls_back_to_byte_tokens() -> Result<()> {
    let tok = gemma()?;
    // A supplementary private-use character has no token of its own.
    let ids = tok.encode("\u{10FFFD}", false, false);
    let bytes: Vec<String> = "\u{10FFFD}"
        .bytes()
        .map(|b| format!("<0x{b:02X}>"))
        .collect();
    let expected: Vec<u32> = bytes.iter().filter_map(|b| tok.token_id(b)).collect();
    assert_eq!(ids, expected);
    assert_eq!(ids, [482, 381, 429, 427]);
    assert_eq!(tok.decode(&ids), "\u{10FFFD}");
    Ok(())
}

#[test]
fn stream_decoder_holds_back_incomplete_utf8() -> Result<()> {
    let tok = gemma()?;
    let byte = |b: u8| {
        tok.token_id(&format!("<0x{b:02X}>"))
            .context("no byte token")
    };
    let mut decoder = StreamDecoder::default();
    let mut out = String::new();
    for b in "😀".bytes() {
        let piece = decoder.push(&tok, byte(b)?);
        if out.is_empty() && !piece.is_empty() {
            assert_eq!(piece, "😀");
        }
        out.push_str(&piece);
    }
    assert_eq!(out, "😀");
    // An invalid byte is replaced, a dangling lead byte is flushed lossily.
    assert_eq!(decoder.push(&tok, byte(0xFF)?), "\u{FFFD}");
    assert_eq!(decoder.push(&tok, byte(0xE2)?), "");
    assert_eq!(decoder.finish(), "\u{FFFD}");
    assert_eq!(decoder.finish(), "");
    Ok(())
}

#[test]
fn stream_decoder_reassembles_any_text() -> Result<()> {
    let tok = smollm()?;
    for text in ROUND_TRIP_TEXTS {
        let mut decoder = StreamDecoder::default();
        let mut out = String::new();
        for id in tok.encode(text, false, false) {
            out.push_str(&decoder.push(&tok, id));
        }
        out.push_str(&decoder.finish());
        assert_eq!(&out, text);
    }
    Ok(())
}

/// Encoding must stay fast on long prompts (the merge loop is O(n log n)).
#[test]
fn long_prompt_encodes_quickly() -> Result<()> {
    let tok = smollm()?;
    let text =
        "The quick brown fox jumps over the lazy dog, 1234 times! Ünïcödé 中文 😀\n".repeat(120);
    let start = std::time::Instant::now();
    let ids = tok.encode(&text, false, true);
    let long_word = tok.encode(&"a".repeat(20_000), false, false);
    let elapsed = start.elapsed();
    assert!(ids.len() > 3000 && !long_word.is_empty());
    assert!(elapsed.as_millis() < 500, "encoding took {elapsed:?}");
    Ok(())
}

#[test]
fn model_file_types_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<hearth_models::ChatTemplate>();
    assert_send_sync::<GgufFile>();
}

// Synthetic vocabularies: error paths and the two models on tiny data.

fn bpe_file(extra: impl FnOnce(GgufWriter) -> GgufWriter) -> GgufWriter {
    let base = GgufWriter::default()
        .kv("general.architecture", s("llama"))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.pre", s("gpt-2"))
        .kv(
            "tokenizer.ggml.tokens",
            strings(["<eos>", "a", "b", "ab", "\u{120}", "\u{120}ab", "c"]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array([3, 1, 1, 1, 1, 1, 1].map(MetaValue::I32).to_vec()),
        )
        .kv("tokenizer.ggml.merges", strings(["a b", "\u{120} ab"]))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(0));
    extra(base)
}

fn load(writer: &GgufWriter) -> Result<std::result::Result<Tokenizer, ModelError>> {
    let dir = tempfile::tempdir()?;
    let path = writer.write(&dir, "tok.gguf")?;
    Ok(Tokenizer::from_gguf(&GgufFile::open(&path)?))
}

#[test]
fn synthetic_bpe_merges_by_rank() -> Result<()> {
    let tok = load(&bpe_file(|w| w))??;
    assert_eq!(tok.encode("ab ab", false, false), [3, 5]);
    assert_eq!(tok.encode("abc<eos>", false, true), [3, 6, 0]);
    assert_eq!(tok.eog_ids(), [0]);
    // Characters without any token are dropped, as llama.cpp does.
    assert_eq!(tok.encode("z", false, false), Vec::<u32>::new());
    Ok(())
}

#[test]
fn bad_tokenizer_metadata_is_an_error() -> Result<()> {
    let cases: Vec<(&str, GgufWriter)> = vec![
        (
            "unknown model",
            bpe_file(|w| w.kv("x", s("x"))).with("tokenizer.ggml.model", s("wordpiece-xl")),
        ),
        (
            "unknown pre-tokenizer",
            bpe_file(|w| w).with("tokenizer.ggml.pre", s("no-such-pre")),
        ),
        (
            "duplicate token",
            bpe_file(|w| w).with(
                "tokenizer.ggml.tokens",
                strings(["a", "a", "b", "c", "d", "e", "f"]),
            ),
        ),
        (
            "short token types",
            bpe_file(|w| w).with(
                "tokenizer.ggml.token_type",
                MetaValue::Array(vec![MetaValue::I32(1)]),
            ),
        ),
        (
            "tokens not strings",
            bpe_file(|w| w).with(
                "tokenizer.ggml.tokens",
                MetaValue::Array(vec![MetaValue::U8(1)]),
            ),
        ),
        (
            "add_bos without bos",
            bpe_file(|w| w.kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))).with(
                "tokenizer.ggml.tokens",
                strings(["<eos>", "a", "b", "ab", "\u{120}", "\u{120}ab", "c"]),
            ),
        ),
    ];
    for (what, writer) in cases {
        let result = load(&writer)?;
        // The BPE default BOS id (11) is outside this 7-token vocabulary.
        assert!(result.is_err(), "{what}: loaded");
    }
    let mut missing_merges = bpe_file(|w| w);
    missing_merges
        .kv
        .retain(|(k, _)| k != "tokenizer.ggml.merges");
    assert!(matches!(
        load(&missing_merges)?,
        Err(ModelError::MissingKey { .. })
    ));
    Ok(())
}

#[test]
fn synthetic_sentencepiece_prefers_high_scores_and_byte_fallback() -> Result<()> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["\u{2581}", "h", "i", "\u{2581}h", "hi", "\u{2581}hi"].map(String::from));
    let n = tokens.len();
    let mut types = vec![2, 3, 3];
    types.extend([6; 256]);
    types.extend([1; 6]);
    let mut scores = vec![0.0f32; n];
    scores[n - 3] = -1.0; // ▁h
    scores[n - 2] = -0.5; // hi (merged first)
    scores[n - 1] = -2.0; // ▁hi
    let writer = GgufWriter::default()
        .kv("tokenizer.ggml.model", s("llama"))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
        )
        .kv(
            "tokenizer.ggml.scores",
            MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        );
    let tok = load(&writer)?.context("loading")?;
    let id = |t: &str| tok.token_id(t).context("missing token");
    // BOS by default, a space prefix, "hi" merges before "▁h", then "▁hi".
    assert_eq!(
        tok.encode("hi", true, false),
        [id("<s>")?, id("\u{2581}hi")?]
    );
    // 'é' has no token: its two UTF-8 bytes become byte tokens.
    assert_eq!(
        tok.encode("é", false, false),
        [id("\u{2581}")?, id("<0xC3>")?, id("<0xA9>")?]
    );
    assert_eq!(tok.decode(&tok.encode("hi é", true, false)), " hi é");
    Ok(())
}

trait With {
    fn with(self, key: &str, value: MetaValue) -> Self;
}

impl With for GgufWriter {
    /// Replaces the value of `key`.
    fn with(mut self, key: &str, value: MetaValue) -> Self {
        for (k, v) in &mut self.kv {
            if k == key {
                *v = value.clone();
            }
        }
        self
    }
}
