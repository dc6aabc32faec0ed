//! Token ids and token pieces against llama.cpp's, from the fixtures written
//! by `scripts/reference/gen_fixtures.py` (ASCII, numbers, accents, CJK,
//! Arabic, Devanagari, emoji sequences, code, whitespace runs, contractions,
//! special-token text), in both tokenize modes.

use anyhow::{Context, Result};
use hearth_models::Tokenizer;
use serde_json::Value;

use crate::support;

fn fixture(name: &str) -> Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama_cpp")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|x| x as u32)
        .collect()
}

fn check(model: &str, fixture_name: &str) -> Result<()> {
    let gguf = support::open_model(model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let fixture = fixture(fixture_name)?;
    let cases = fixture["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 30, "fixture has only {} cases", cases.len());
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().context("text")?;
        let add_special = case["add_special"].as_bool().context("add_special")?;
        let parse_special = case["parse_special"].as_bool().context("parse_special")?;
        let ours = tokenizer.encode(text, add_special, parse_special);
        let expected = ids(&case["tokens"]);
        if ours != expected {
            mismatches.push(format!("{text:?} (special {add_special}/{parse_special}): ours {ours:?}, llama.cpp {expected:?}"));
        }
    }
    for piece in fixture["pieces"].as_array().context("pieces")? {
        let id = piece["id"].as_u64().context("id")? as u32;
        let hex: String = tokenizer
            .token_bytes(id)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if hex != piece["hex"].as_str().context("hex")? {
            mismatches.push(format!(
                "piece of {id}: ours {hex}, llama.cpp {}",
                piece["hex"]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    Ok(())
}

#[test]
fn smollm2_tokens_equal_llama_cpp() -> Result<()> {
    check("smollm2-135m-instruct", "tokens_smollm2.json")
}

#[test]
fn gemma3_tokens_equal_llama_cpp() -> Result<()> {
    check("gemma3-270m", "tokens_gemma3.json")
}
