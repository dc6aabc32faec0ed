//! Constrained decoding on the real SmolLM2 model: every completed output
//! matches its schema or grammar, bad schemas fail at compile time, and a
//! token outside the mask is never accepted.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth_engine::{Constraint, ConstraintError, ConstraintFactory, ConstraintSpec, Engine};
use hearth_models::ChatMessage;
use serde_json::{Value, json};

use crate::support;

/// The factory for SmolLM2's vocabulary, built once per test binary.
fn factory() -> &'static ConstraintFactory {
    static FACTORY: OnceLock<ConstraintFactory> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let engine = support::smollm2();
        let start = Instant::now();
        let factory = ConstraintFactory::new(engine.tokenizer()).expect("constraint factory");
        eprintln!(
            "constraint factory for {} tokens built in {:.1} ms",
            factory.vocab_size(),
            start.elapsed().as_secs_f64() * 1e3
        );
        factory
    })
}

/// What a constrained greedy generation produced.
struct Constrained {
    text: String,
    /// Whether the constraint completed (or an end-of-generation token was
    /// sampled) within the token budget.
    finished: bool,
    /// Time of each `mask_logits` call.
    mask_times: Vec<Duration>,
}

/// Greedy generation for a one-message chat, masked by `constraint`. At each
/// step the token the model preferred most among the masked ones must be
/// rejected by `commit` before the chosen token is committed.
fn generate(
    engine: &Engine,
    constraint: &mut Constraint,
    prompt: &str,
    max_tokens: usize,
) -> Constrained {
    let tokenizer = engine.tokenizer();
    let model = engine.model();
    let prompt = engine
        .encode_chat(&[ChatMessage::new("user", prompt)])
        .unwrap();
    let mut cache = model.new_cache(prompt.len() + max_tokens + 1);
    let mut logits = Vec::new();
    model
        .forward(&prompt, &mut cache, false, &mut logits)
        .unwrap();
    let mut generated = Vec::new();
    let mut mask_times = Vec::new();
    let mut finished = false;
    for _ in 0..max_tokens {
        if constraint.is_finished() {
            finished = true;
            break;
        }
        let original = logits.clone();
        let start = Instant::now();
        constraint.mask_logits(&mut logits).unwrap();
        mask_times.push(start.elapsed());
        let token = hearth_engine::argmax(&logits);
        assert!(logits[token as usize].is_finite(), "argmax of a dead mask");

        let masked_favourite = (0..logits.len())
            .filter(|&i| logits[i] == f32::NEG_INFINITY && i < tokenizer.vocab_size())
            .max_by(|&a, &b| original[a].total_cmp(&original[b]));
        if let Some(disallowed) = masked_favourite {
            let result = constraint.commit(disallowed as u32);
            assert!(
                matches!(result, Err(ConstraintError::Rejected { .. })),
                "masked token {disallowed} ({:?}) was accepted: {result:?}",
                tokenizer.token_text(disallowed as u32)
            );
        }

        constraint.commit(token).unwrap();
        if tokenizer.is_eog(token) {
            finished = true;
            break;
        }
        generated.push(token);
        model
            .forward(&[token], &mut cache, false, &mut logits)
            .unwrap();
    }
    finished |= constraint.is_finished();
    Constrained {
        text: tokenizer.decode(&generated),
        finished,
        mask_times,
    }
}

fn report_mask_times(label: &str, times: &[Duration]) {
    let mut micros: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e6).collect();
    let first = micros.first().copied().unwrap_or(0.0);
    micros.sort_by(f64::total_cmp);
    let mean = micros.iter().sum::<f64>() / micros.len().max(1) as f64;
    eprintln!(
        "{label}: {} masks, mean {mean:.0} us, median {:.0} us, max {:.0} us, first {first:.0} us",
        micros.len(),
        micros.get(micros.len() / 2).copied().unwrap_or(0.0),
        micros.last().copied().unwrap_or(0.0),
    );
}

fn compile(spec: ConstraintSpec) -> Constraint {
    factory().compile(&spec).expect("constraint compiles")
}

fn invalid_schema_message(spec: ConstraintSpec) -> String {
    match factory().compile(&spec) {
        Err(ConstraintError::InvalidSchema(message)) => {
            eprintln!("invalid schema message: {message}");
            message
        }
        other => panic!("{spec:?} should be an invalid schema, got {other:?}"),
    }
}

#[test]
fn json_schema_output_validates_against_the_schema() {
    let engine = support::smollm2();
    let colors = ["red", "green", "blue"];
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "favorite_color": {"enum": colors},
            "hobbies": {
                "type": "array",
                "items": {"type": "string", "maxLength": 12},
                "minItems": 1,
                "maxItems": 2
            }
        },
        "required": ["name", "age", "favorite_color", "hobbies"],
        "additionalProperties": false
    });
    let mut constraint = compile(ConstraintSpec::JsonSchema(schema));
    let out = generate(
        &engine,
        &mut constraint,
        "Describe a person named Alice who is 30 years old as JSON.",
        96,
    );
    report_mask_times("json schema", &out.mask_times);
    eprintln!("json schema output: {}", out.text);
    assert!(out.finished, "unfinished: {:?}", out.text);

    let value: Value = serde_json::from_str(&out.text).expect("output parses as JSON");
    let object = value.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["age", "favorite_color", "hobbies", "name"]);
    let name = object["name"].as_str().expect("name is a string");
    assert!(name.chars().count() <= 16, "{name:?}");
    let age = object["age"]
        .as_u64()
        .expect("age is a non-negative integer");
    assert!(age <= 150);
    let color = object["favorite_color"]
        .as_str()
        .expect("color is a string");
    assert!(colors.contains(&color), "{color:?}");
    let hobbies = object["hobbies"].as_array().expect("hobbies is an array");
    assert!((1..=2).contains(&hobbies.len()), "{hobbies:?}");
    for hobby in hobbies {
        let hobby = hobby.as_str().expect("hobby is a string");
        assert!(hobby.chars().count() <= 12, "{hobby:?}");
    }
}

#[test]
fn json_object_output_is_a_json_object() {
    let engine = support::smollm2();
    let mut constraint = compile(ConstraintSpec::JsonObject);
    let out = generate(
        &engine,
        &mut constraint,
        "Reply with a JSON object with the keys city and country for Paris.",
        64,
    );
    report_mask_times("json object", &out.mask_times);
    eprintln!("json object output: {}", out.text);
    assert!(out.finished, "unfinished: {:?}", out.text);
    let value: Value = serde_json::from_str(&out.text).expect("output parses as JSON");
    assert!(value.is_object(), "{value}");
}

#[test]
fn lark_grammar_yields_exactly_one_alternative() {
    let engine = support::smollm2();
    let mut constraint = compile(ConstraintSpec::Lark(r#"start: "yes" | "no""#.to_string()));
    let out = generate(
        &engine,
        &mut constraint,
        "Is Paris the capital of France? Answer yes or no.",
        8,
    );
    report_mask_times("lark yes/no", &out.mask_times);
    assert!(out.finished);
    assert!(out.text == "yes" || out.text == "no", "{:?}", out.text);

    let mut constraint = compile(ConstraintSpec::Regex("[0-9]{3}".to_string()));
    let out = generate(&engine, &mut constraint, "Pick a number.", 8);
    assert!(out.finished);
    assert!(
        out.text.len() == 3 && out.text.bytes().all(|b| b.is_ascii_digit()),
        "{:?}",
        out.text
    );
}

#[test]
fn invalid_schemas_fail_at_compile_time() {
    let message = invalid_schema_message(ConstraintSpec::JsonSchema(json!({"type": "nonsense"})));
    assert!(message.contains("nonsense"), "{message}");

    let message = invalid_schema_message(ConstraintSpec::JsonSchema(json!({
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/missing"}},
        "required": ["a"]
    })));
    assert!(message.contains("missing"), "{message}");

    // A keyword that cannot be enforced is an error, also when the schema
    // asks for lenient compilation itself.
    let message = invalid_schema_message(ConstraintSpec::JsonSchema(json!({
        "type": "string",
        "format": "no-such-format",
        "x-guidance": {"lenient": true}
    })));
    assert!(message.contains("no-such-format"), "{message}");

    let message = invalid_schema_message(ConstraintSpec::JsonSchema(json!("object")));
    assert!(message.contains("object or a boolean"), "{message}");

    let message = invalid_schema_message(ConstraintSpec::Lark("start: (".to_string()));
    assert!(!message.is_empty());
    let message = invalid_schema_message(ConstraintSpec::Regex("(".to_string()));
    assert!(!message.is_empty());
}

#[test]
fn commits_outside_the_grammar_are_rejected() {
    let tokenizer = support::smollm2().tokenizer().clone();
    let factory = factory();
    let yes = tokenizer.encode("yes", false, false);
    assert_eq!(yes.len(), 1, "'yes' is one SmolLM2 token");
    let maybe = tokenizer.encode("maybe", false, false)[0];
    let eog = tokenizer.eog_ids();

    let mut constraint = factory
        .compile(&ConstraintSpec::Lark(r#"start: "yes" | "no""#.to_string()))
        .unwrap();
    // Without a mask computed, commit checks the grammar itself.
    let rejected = constraint.commit(maybe);
    assert!(
        matches!(rejected, Err(ConstraintError::Rejected { token, .. }) if token == maybe),
        "{rejected:?}"
    );
    // End of generation before the grammar is complete.
    assert!(constraint.commit(eog[0]).is_err());
    assert!(constraint.commit(factory.vocab_size() as u32 + 7).is_err());

    // With a mask: only the allowed tokens keep finite logits.
    let mut logits = vec![0.0f32; factory.vocab_size() + 64];
    constraint.mask_logits(&mut logits).unwrap();
    let allowed: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect();
    assert!(allowed.contains(&yes[0]), "{allowed:?}");
    assert!(!allowed.contains(&maybe));
    assert!(allowed.iter().all(|&t| (t as usize) < factory.vocab_size()));
    assert!(allowed.iter().all(|&t| !tokenizer.is_eog(t)));
    assert!(constraint.commit(maybe).is_err());

    // The rejections left the state untouched.
    constraint.commit(yes[0]).unwrap();
    assert!(constraint.is_finished());
    let mut logits = vec![0.0f32; factory.vocab_size()];
    constraint.mask_logits(&mut logits).unwrap();
    let allowed: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect();
    let mut expected = eog.clone();
    expected.sort_unstable();
    assert_eq!(allowed, expected, "only end of generation after completion");
    assert!(constraint.commit(yes[0]).is_err());
    constraint.commit(eog[0]).unwrap();

    // A grammar that is complete but could go on ends on end of generation.
    let mut constraint = factory
        .compile(&ConstraintSpec::Regex("(yes)+".to_string()))
        .unwrap();
    constraint.commit(yes[0]).unwrap();
    assert!(!constraint.is_finished());
    constraint.commit(eog[0]).unwrap();
    assert!(constraint.is_finished());
    assert!(constraint.commit(yes[0]).is_err());
}

#[test]
fn a_mask_with_no_finite_allowed_logit_is_an_error() {
    let mut constraint = compile(ConstraintSpec::Lark(r#"start: "yes" | "no""#.to_string()));
    let mut logits = vec![f32::NEG_INFINITY; factory().vocab_size()];
    assert!(matches!(
        constraint.mask_logits(&mut logits),
        Err(ConstraintError::Internal(_))
    ));
}

#[test]
fn special_tokens_are_only_reachable_by_name() {
    let engine = support::smollm2();
    let tokenizer = engine.tokenizer();
    let im_end = tokenizer.token_id("<|im_end|>").expect("<|im_end|>");
    let im_start = tokenizer.token_id("<|im_start|>").expect("<|im_start|>");

    // As text, "<|im_end|>" is spelled with ordinary tokens: neither the
    // end-of-generation token nor another control token is ever allowed.
    let mut constraint = compile(ConstraintSpec::Regex(
        r"(<\|im_end\|>|<\|im_start\|>)x".to_string(),
    ));
    let mut logits = vec![0.0f32; tokenizer.vocab_size()];
    constraint.mask_logits(&mut logits).unwrap();
    assert_eq!(logits[im_end as usize], f32::NEG_INFINITY);
    assert_eq!(logits[im_start as usize], f32::NEG_INFINITY);
    assert!(logits.iter().any(|v| v.is_finite()));

    // Named in a grammar, a special token is the only token allowed.
    let mut constraint = compile(ConstraintSpec::Lark(
        "start: <|im_start|> \"x\"".to_string(),
    ));
    let mut logits = vec![0.0f32; tokenizer.vocab_size()];
    constraint.mask_logits(&mut logits).unwrap();
    let allowed: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    assert_eq!(allowed, [im_start as usize]);
    constraint.commit(im_start).unwrap();
    assert!(!constraint.is_finished());
}

#[test]
fn forced_tokens_spell_the_fixed_part_of_the_schema() {
    let tokenizer = support::smollm2().tokenizer().clone();
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": false
    });
    let mut constraint = compile(ConstraintSpec::JsonSchema(schema));
    let forced = constraint.forced_tokens();
    assert!(!forced.is_empty());
    let text = tokenizer.decode(&forced);
    assert!(r#"{"name": ""#.starts_with(&text), "{text:?}");
    for token in forced {
        constraint.commit(token).unwrap();
    }
    assert!(!constraint.is_finished());
}

#[test]
fn gemma3_sentencepiece_vocabulary() {
    let engine = support::gemma3();
    let start = Instant::now();
    let factory = ConstraintFactory::new(engine.tokenizer()).expect("constraint factory");
    eprintln!(
        "gemma3 factory for {} tokens built in {:.1} ms",
        factory.vocab_size(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let mut constraint = factory
        .compile(&ConstraintSpec::JsonSchema(schema))
        .unwrap();
    let out = generate(
        &engine,
        &mut constraint,
        "Describe a person named Alice who is 30 years old as JSON.",
        48,
    );
    report_mask_times("gemma3 json schema", &out.mask_times);
    eprintln!("gemma3 output: {}", out.text);
    assert!(out.finished);
    let value: Value = serde_json::from_str(&out.text).unwrap();
    assert!(value["name"].is_string() && value["age"].is_u64());
}
