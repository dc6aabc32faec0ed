//! Tool calls on the real SmolLM2: the grammar holds every call to its
//! tool's schema, through the batching scheduler.

use std::sync::mpsc::channel;
use std::time::Duration;

use hearth_engine::tools::{self, ToolChoice, ToolSpec};
use hearth_engine::{
    BatchConfig, BatchEngine, BatchRequest, ConstraintFactory, Event, FinishReason, SamplingParams,
};
use hearth_models::ChatMessage;
use serde_json::{Value, json};

use crate::support::smollm2;

fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "get_weather".into(),
            description: "Get the current weather in a city".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }),
        },
        ToolSpec {
            name: "set_timer".into(),
            description: "Start a countdown timer".into(),
            // Local definitions, as schema generators write them.
            parameters: json!({
                "type": "object",
                "properties": {"minutes": {"$ref": "#/$defs/Minutes"}},
                "required": ["minutes"],
                "additionalProperties": false,
                "$defs": {"Minutes": {"type": "integer", "minimum": 1, "maximum": 120}}
            }),
        },
    ]
}

fn run(user: &str, choice: &ToolChoice) -> (String, FinishReason) {
    let engine = smollm2();
    let factory = ConstraintFactory::new(engine.tokenizer()).unwrap();
    let specs = specs();
    tools::validate(&specs, choice).unwrap();
    let messages = tools::with_tools(&[ChatMessage::new("user", user)], &specs);
    let prompt = engine.encode_chat(&messages).unwrap();
    let filter =
        tools::grammar(&specs, choice).map(|spec| Box::new(factory.compile(&spec).unwrap()) as _);
    let batch = BatchEngine::start(
        engine.clone(),
        BatchConfig {
            context: 2048,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    let (tx, rx) = channel();
    batch
        .submit(BatchRequest {
            prompt_tokens: prompt,
            max_tokens: Some(96),
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            filter,
            sink: Box::new(tx),
        })
        .unwrap();
    let mut text = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).unwrap() {
            Event::Token { text: t, .. } | Event::Text(t) => text.push_str(&t),
            Event::Done(done) => return (text, done.finish_reason),
            Event::Error(e) => panic!("{e}"),
        }
    }
}

#[test]
fn required_and_named_choices_yield_calls_that_fit_the_schema() {
    let (text, finish) = run("What's the weather like in Paris?", &ToolChoice::Required);
    assert_eq!(finish, FinishReason::Stop, "{text}");
    let (_, calls) = tools::parse(&text);
    assert!(!calls.is_empty(), "{text}");
    for call in &calls {
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        match call.name.as_str() {
            "get_weather" => {
                assert!(args["city"].is_string(), "{args}");
                assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
            }
            "set_timer" => {
                let m = args["minutes"].as_i64().unwrap();
                assert!((1..=120).contains(&m), "{args}");
            }
            other => panic!("unknown tool {other}"),
        }
    }

    let (text, _) = run(
        "What's the weather like in Paris?",
        &ToolChoice::Function("set_timer".into()),
    );
    let (_, calls) = tools::parse(&text);
    assert!(!calls.is_empty(), "{text}");
    for call in &calls {
        assert_eq!(call.name, "set_timer");
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        let m = args["minutes"].as_i64().unwrap();
        assert!((1..=120).contains(&m), "{args}");
    }
    assert!(!text.contains("\n    "), "arguments are compact: {text}");
}

#[test]
fn auto_gives_text_or_well_formed_calls() {
    let (text, _) = run("Say hello to me.", &ToolChoice::Auto);
    let (content, calls) = tools::parse(&text);
    assert!(
        !content.is_empty() || !calls.is_empty(),
        "an answer of some kind: {text:?}"
    );
    if !text.contains("<tool_call>") {
        assert!(!text.starts_with('<'), "{text}");
    }
}
