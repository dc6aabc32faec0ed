//! The SDK on the real SmolLM2: sessions and their transcripts, streams,
//! typed answers with snapshots, and the tool loop.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use hearth::schemars::{self, JsonSchema, Schema, SchemaGenerator, json_schema};
use hearth::{
    Engine, Error, GenerationOptions, Model, ModelOptions, Session, TOOL_ROLE, ToolChoice,
    ToolError,
};
use hearth_models::LoadOptions;
use serde::Deserialize;
use serde_json::{Value, json};

/// Every answer here is short: the tests run on two shared cores.
const MAX_TOKENS: usize = 48;

fn model_path() -> PathBuf {
    let path = hearth_core::hearth_home().join("models/smollm2-135m-instruct/model.gguf");
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

/// One model for the whole binary: the tests' sessions share its scheduler
/// as an app's sessions would.
fn model() -> Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let engine = Engine::load(&model_path(), &LoadOptions { n_threads: 2 }).unwrap();
            Model::from_engine(Arc::new(engine)).unwrap()
        })
        .clone()
}

fn session() -> Session {
    model().session().options(GenerationOptions {
        max_tokens: MAX_TOKENS,
        ..GenerationOptions::default()
    })
}

fn roles(session: &Session) -> Vec<&str> {
    session
        .transcript()
        .iter()
        .map(|m| m.role.as_str())
        .collect()
}

#[test]
fn respond_appends_the_user_and_assistant_turns_and_reset_keeps_the_system_prompt() {
    let mut session = session().system("You are terse.");
    let reply = session.respond("Hi! What is 2 + 2?").unwrap();
    assert!(!reply.trim().is_empty());
    assert_eq!(roles(&session), ["system", "user", "assistant"]);
    assert_eq!(session.transcript()[1].content, "Hi! What is 2 + 2?");
    assert_eq!(session.transcript()[2].content, reply);
    let usage = session.last_completion().unwrap().usage;
    assert!(usage.completion_tokens > 0 && usage.completion_tokens <= MAX_TOKENS);

    session.respond("And 3 + 3?").unwrap();
    assert_eq!(session.transcript().len(), 5);
    session.reset();
    assert_eq!(roles(&session), ["system"]);
}

#[test]
fn stream_deltas_concatenate_to_the_text_respond_gives() {
    let question = "Name three colours of the rainbow.";
    let mut whole = session();
    let reply = whole.respond(question).unwrap();

    let mut streamed = session();
    let deltas: Vec<String> = streamed
        .stream(question)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(deltas.len() > 1, "streamed in pieces: {deltas:?}");
    assert!(deltas.iter().all(|d| !d.is_empty()));
    assert_eq!(deltas.concat(), reply);
    assert_eq!(streamed.transcript(), whole.transcript());
}

#[test]
fn a_stream_dropped_early_keeps_what_it_produced() {
    let mut session = session();
    let mut stream = session
        .stream("Tell me a long story about a dragon.")
        .unwrap();
    let first: Vec<String> = (&mut stream).take(3).map(Result::unwrap).collect();
    drop(stream);
    assert_eq!(roles(&session), ["user", "assistant"]);
    assert_eq!(session.transcript()[1].content, first.concat());
    // The session goes on from there.
    session.respond("Thanks.").unwrap();
    assert_eq!(session.transcript().len(), 4);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mood {
    Happy,
    Calm,
    Grumpy,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Person {
    #[schemars(length(max = 24))]
    name: String,
    age: u8,
    mood: Mood,
    #[schemars(length(max = 2), inner(length(max = 16)))]
    hobbies: Vec<String>,
}

#[test]
fn respond_as_gives_a_typed_value_and_stream_as_gives_valid_snapshots_ending_in_it() {
    let mut session = session().options(GenerationOptions {
        max_tokens: 64,
        ..GenerationOptions::default()
    });
    let person: Person = session.respond_as("Invent a person.").unwrap();
    let prompt_tokens = session.last_completion().unwrap().usage.prompt_tokens;
    assert!(!person.name.is_empty() && person.name.chars().count() <= 24);
    assert!(person.hobbies.len() <= 2, "{person:?}");
    let text = &session.transcript()[1].content;
    let reparsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(reparsed["age"], json!(person.age));
    assert_eq!(
        reparsed["mood"],
        json!(format!("{:?}", person.mood).to_lowercase())
    );

    let mut snapshots = Vec::new();
    for snapshot in session
        .stream_as::<Person>("Invent another person.")
        .unwrap()
    {
        snapshots.push(snapshot.unwrap());
    }
    assert!(snapshots.len() > 3, "{snapshots:?}");
    assert!(
        snapshots.windows(2).all(|w| w[0] != w[1]),
        "consecutive snapshots differ"
    );
    let complete: Value = serde_json::from_str(&session.transcript()[3].content).unwrap();
    assert_eq!(snapshots.last(), Some(&complete));
    assert!(snapshots.iter().all(Value::is_object));
    let person: Person = serde_json::from_value(complete).unwrap();
    assert!(person.hobbies.len() <= 2);
    // A name grows through the snapshots as it is written.
    let names: Vec<&str> = snapshots
        .iter()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .collect();
    assert!(names.len() > 1, "{snapshots:?}");
    assert!(
        names.windows(2).all(|w| w[1].starts_with(w[0])),
        "{names:?}"
    );

    // Shown the schema, the model reads it in its prompt.
    let mut shown = self::session()
        .options(GenerationOptions {
            max_tokens: 64,
            ..GenerationOptions::default()
        })
        .schema_in_prompt(true);
    shown.respond_as::<Person>("Invent a person.").unwrap();
    let shown_tokens = shown.last_completion().unwrap().usage.prompt_tokens;
    assert!(
        shown_tokens > prompt_tokens + 50,
        "{shown_tokens} vs {prompt_tokens}"
    );
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
struct WeatherArgs {
    /// The city, e.g. "Paris".
    city: String,
}

#[test]
fn the_agent_loop_runs_a_rust_tool_and_answers_from_its_result() {
    let seen: Arc<Mutex<Vec<WeatherArgs>>> = Arc::default();
    let log = seen.clone();
    let weather = hearth::tool(
        "get_weather",
        "Get the current weather in a city",
        move |args: WeatherArgs| {
            log.lock().unwrap().push(args.clone());
            Ok(json!({"city": args.city, "sky": "sunny", "temperature_c": 23}))
        },
    );
    let mut agent = session().tool(weather).tool_choice(ToolChoice::Required);
    let answer = agent.respond("What's the weather like in Paris?").unwrap();

    let calls = seen.lock().unwrap().clone();
    assert!(!calls.is_empty(), "the tool was called");
    assert!(calls.iter().all(|a| !a.city.trim().is_empty()), "{calls:?}");

    let transcript = agent.transcript();
    let roles = roles(&agent);
    assert_eq!(roles.first(), Some(&"user"));
    assert_eq!(roles.last(), Some(&"assistant"));
    assert!(
        transcript[1].content.contains("<tool_call>"),
        "{transcript:?}"
    );
    let result_at = roles.iter().position(|&r| r == TOOL_ROLE).unwrap();
    assert!(transcript[result_at].content.contains("<tool_response>"));
    assert!(
        transcript[result_at]
            .content
            .contains("\"temperature_c\":23")
    );
    assert!(
        result_at < transcript.len() - 1,
        "the answer follows the result"
    );
    assert_eq!(transcript.last().unwrap().content, answer);
    assert!(!answer.contains("<tool_call>"), "{answer}");
    assert!(
        roles.len() <= 1 + 2 * 3 + 1,
        "at most four rounds: {roles:?}"
    );
}

#[test]
fn a_failing_tool_is_reported_to_the_model_as_an_error_result() {
    let failing = hearth::tool(
        "get_weather",
        "Get the current weather in a city",
        |_: WeatherArgs| Err(ToolError::new("the weather service is unavailable")),
    );
    let mut agent = session()
        .tool(failing)
        .tool_choice(ToolChoice::Required)
        .max_rounds(2);
    let answer = agent.respond("What's the weather like in Rome?").unwrap();
    assert_eq!(roles(&agent), ["user", "assistant", TOOL_ROLE, "assistant"]);
    let result = &agent.transcript()[2].content;
    assert!(
        result.contains(r#"{"error":"the weather service is unavailable"}"#),
        "{result}"
    );
    assert_eq!(agent.transcript()[3].content, answer);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)] // only its schema is used
enum Shape {
    /// A point has no size.
    Point,
    Circle {
        radius: f32,
    },
    Polygon(Vec<(i32, i32)>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)] // only its schema is used
#[serde(tag = "kind", rename_all = "snake_case")]
enum Event {
    Started { at: u64 },
    Stopped { reason: Option<String> },
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct Drawing {
    title: Option<String>,
    initial: char,
    scale: f64,
    layers: u16,
    shapes: Vec<Shape>,
    main: Box<Shape>,
    history: Vec<Event>,
    labels: std::collections::BTreeMap<String, i8>,
    owner: Option<Person>,
    #[serde(default)]
    hidden: bool,
}

#[test]
fn schemas_schemars_writes_for_common_shapes_are_accepted() {
    // One token is enough to know the constraint compiled: the answer is
    // then incomplete JSON, not a schema error.
    let mut session = session().options(GenerationOptions {
        max_tokens: 1,
        ..GenerationOptions::default()
    });
    let err = session.respond_as::<Drawing>("Draw.").unwrap_err();
    assert!(matches!(err, Error::Incomplete { .. }), "{err}");
    let err = session
        .respond_as::<Vec<Option<Mood>>>("Moods.")
        .unwrap_err();
    assert!(matches!(err, Error::Incomplete { .. }), "{err}");
    assert!(
        session.transcript().is_empty(),
        "failed turns leave nothing"
    );
}

/// A type whose schema names a type JSON does not have.
#[derive(Debug, Deserialize)]
struct Quaternion {}

impl JsonSchema for Quaternion {
    fn schema_name() -> Cow<'static, str> {
        "Quaternion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "quaternion"})
    }
}

/// A recursive type cannot be a tool's (inlined) parameters.
#[allow(dead_code)] // only its schema is used
#[derive(Debug, Deserialize, JsonSchema)]
struct Node {
    next: Option<Box<Node>>,
}

#[test]
fn schemas_and_tools_that_cannot_be_enforced_are_errors_that_leave_the_transcript_alone() {
    let mut session = session();
    let err = session
        .respond_as::<Quaternion>("Give me one.")
        .unwrap_err();
    assert!(matches!(err, Error::Schema { .. }), "{err}");
    assert!(err.to_string().contains("Quaternion"), "{err}");
    assert!(session.stream_as::<Quaternion>("Again.").is_err());
    assert!(session.transcript().is_empty());

    let mut recursive = session
        .clone()
        .tool(hearth::tool("walk", "Walks a list", |_: Node| Ok(json!(0))));
    let err = recursive.respond("Walk.").unwrap_err();
    assert!(matches!(err, Error::Schema { .. }), "{err}");
    assert!(err.to_string().contains("tool 'walk'"), "{err}");

    let mut badly_named =
        session
            .clone()
            .tool(hearth::tool("get weather", "Spaces", |_: WeatherArgs| {
                Ok(json!(0))
            }));
    assert!(matches!(badly_named.respond("Hi"), Err(Error::Tools(_))));

    let mut unknown_choice = session
        .clone()
        .tool_choice(ToolChoice::Function("nope".into()));
    assert!(matches!(unknown_choice.respond("Hi"), Err(Error::Tools(_))));

    let mut bad_options = session.clone().options(GenerationOptions {
        sampling: hearth::SamplingParams {
            top_p: 7.0,
            ..Default::default()
        },
        ..GenerationOptions::default()
    });
    assert!(bad_options.respond("Hi").is_err());
    assert!(bad_options.transcript().is_empty());
}

#[test]
fn models_load_by_installed_name_and_unknown_names_are_errors() {
    let options = ModelOptions {
        n_threads: Some(2),
        auto_pull: false,
        context: 512,
        ..ModelOptions::default()
    };
    let err = Model::load_with("no-such-model-anywhere", &options).unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");

    let model = Model::load_with("smollm2-135m-instruct", &options).unwrap();
    let mut session = model.session().options(GenerationOptions {
        max_tokens: 8,
        ..GenerationOptions::default()
    });
    assert!(!session.respond("Hello").unwrap().is_empty());
    let by_path = Model::load_with(model_path().to_str().unwrap(), &options).unwrap();
    assert_eq!(
        by_path.engine().tokenizer().vocab_size(),
        model.engine().tokenizer().vocab_size()
    );
}

#[test]
fn sessions_on_one_model_answer_concurrently() {
    let before = model().stats().generated_tokens;
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["Say hi.", "Say bye."]
            .into_iter()
            .map(|q| scope.spawn(move || session().respond(q).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| !a.is_empty()), "{answers:?}");
    assert!(model().stats().generated_tokens > before);
}
