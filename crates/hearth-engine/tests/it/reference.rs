//! Agreement with llama.cpp (fixtures from `scripts/reference/gen_fixtures.py`):
//! the same prompt tokens give the same logits within a named tolerance and
//! the same greedy continuation token for token.

use hearth_engine::{Engine, argmax};
use serde_json::Value;

use crate::support;

/// Largest absolute difference allowed between our logits and llama.cpp's
/// for SmolLM2 (Q4_1/Q8_0). The forward pass reproduces llama.cpp's
/// activation quantization, f16 roundings and summation orders, so the
/// logits agree to the fixtures' four printed decimals (the test prints the
/// largest difference); the margin covers fixtures regenerated with a
/// llama.cpp build that sums in other orders.
const LOGIT_ABS_TOLERANCE: f32 = 0.02;

/// The same bound for Gemma 3 (Q5_0/Q8_0/Q4_K/Q6_K): its products follow
/// the summation orders of the kernels llama.cpp picks for each type and
/// batch size, and the fixtures agree to their four printed decimals.
const GEMMA3_LOGIT_ABS_TOLERANCE: f32 = 0.02;

/// Greedy continuations must agree on at least this many leading tokens
/// (the whole fixture continuation unless it is shorter).
const MIN_MATCHING_TOKENS: usize = 32;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn pairs(v: &Value) -> Vec<(u32, f32)> {
    v.as_array()
        .expect("array of pairs")
        .iter()
        .map(|p| {
            (
                p[0].as_u64().expect("id") as u32,
                p[1].as_f64().expect("logit") as f32,
            )
        })
        .collect()
}

fn max_logit_diff(ours: &[f32], reference: &[(u32, f32)]) -> f32 {
    reference
        .iter()
        .map(|&(id, l)| (ours[id as usize] - l).abs())
        .fold(0.0, f32::max)
}

fn check_model(engine: &Engine, fixture: &str, tolerance: f32, min_matching: usize) {
    let fixture = support::fixture(fixture);
    let model = engine.model();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in fixture["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let prompt = ids(&case["prompt_tokens"]);
        let expected = ids(&case["generated"]);
        let mut cache = model.new_cache(2048);
        let mut logits = Vec::new();
        model
            .forward(&prompt, &mut cache, false, &mut logits)
            .expect("prefill");

        let step0 = pairs(&case["step0_top20"]);
        let mut worst = max_logit_diff(&logits, &step0);
        let later: Vec<Vec<(u32, f32)>> = case["top5_steps_1_to_8"]
            .as_array()
            .expect("steps")
            .iter()
            .map(pairs)
            .collect();

        let mut matched = 0;
        for (step, &want) in expected.iter().enumerate() {
            if step >= 1 && step <= later.len() {
                worst = worst.max(max_logit_diff(&logits, &later[step - 1]));
            }
            let got = argmax(&logits);
            if got != want {
                break;
            }
            matched += 1;
            if step + 1 < expected.len() {
                model
                    .forward(&[got], &mut cache, false, &mut logits)
                    .expect("decode");
            }
        }
        report.push(format!(
            "{name}: {matched}/{} tokens match, max |dlogit| {worst:.4}",
            expected.len()
        ));
        if worst > tolerance {
            failures.push(format!("{name}: logits differ by {worst} > {tolerance}"));
        }
        let required = min_matching.min(expected.len());
        if matched < required {
            failures.push(format!(
                "{name}: only {matched} greedy tokens match llama.cpp"
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        report.join("\n")
    );
}

#[test]
fn smollm2_logits_and_greedy_tokens_match_llama_cpp() {
    check_model(
        &support::smollm2(),
        "greedy_smollm2.json",
        LOGIT_ABS_TOLERANCE,
        MIN_MATCHING_TOKENS,
    );
}

#[test]
fn gemma3_logits_and_greedy_tokens_match_llama_cpp() {
    check_model(
        &support::gemma3(),
        "greedy_gemma3.json",
        GEMMA3_LOGIT_ABS_TOLERANCE,
        MIN_MATCHING_TOKENS,
    );
}

/// The chat prompt rendered by our template and tokenizer is exactly the
/// one llama.cpp was given for the chat cases.
#[test]
fn smollm2_chat_prompts_tokenize_like_llama_cpp() {
    let engine = support::smollm2();
    let fixture = support::fixture("greedy_smollm2.json");
    for case in fixture["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let add_special = case["add_special"].as_bool().unwrap_or(false);
        let parse_special = case["parse_special"].as_bool().unwrap_or(false);
        let ours = engine.tokenizer().encode(text, add_special, parse_special);
        assert_eq!(ours, ids(&case["prompt_tokens"]), "case {}", case["name"]);
    }
}
