//! A conversation with a model: its transcript, its generation options and
//! its tools, and the turn that answers one user message.
//!
//! Every answer is a *turn*: the user message is appended, then one or
//! more *rounds* are generated through the model's scheduler. Without
//! tools a turn is one round. With tools, a round whose output is tool
//! calls runs them, records the calls and their results, and generates the
//! next round, until the model answers in text; the last allowed round is
//! held to text so the turn always ends in an answer. Streams drive the
//! turn as they are read, so [`Session::respond`] is the same turn read to
//! its end: for one input and options both give the same text.
//!
//! The transcript changes only when a turn ends: a finished turn keeps its
//! messages, a failed one is removed as if it never ran, and a stream
//! dropped before its end keeps what it had produced.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use hearth_engine::tools::{self, ToolCall, ToolCallParser, ToolChoice, ToolEvent, ToolSpec};
use hearth_engine::{
    BatchRequest, Completion, ConstraintSpec, Event, FinishReason, SamplingParams, TokenFilter,
};
use hearth_models::ChatMessage;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::Error;
use super::model::Model;
use super::partial_json;
use super::schema;
use super::tool::{Tool, ToolError};

/// Role of the transcript messages that carry tool results. The model reads
/// them as user turns (the format it was trained on); the transcript keeps
/// them apart so an app can show or hide them.
pub const TOOL_ROLE: &str = "tool";

/// Rounds per turn unless [`Session::max_rounds`] says otherwise.
pub const DEFAULT_MAX_ROUNDS: usize = 4;

/// How a tool call opens in the model's output.
const CALL_OPEN: &str = "<tool_call>";

/// A text answer that may not open like a tool call: the last round of a
/// turn with tools.
const TEXT_ONLY_GRAMMAR: &str = "start: TEXT\nTEXT: /[^<](.|\\n)*/\n";

/// How each answer is generated. The default is greedy (deterministic).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Most tokens per round of an answer.
    pub max_tokens: usize,
    /// The sampling chain (temperature, top-k/p, min-p, penalties, seed);
    /// its default is greedy.
    pub sampling: SamplingParams,
    /// The answer ends before any of these strings.
    pub stop: Vec<String>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
        }
    }
}

/// A conversation: a transcript of [`ChatMessage`]s (the system prompt
/// first, when set), generation options and tools. Cloning forks the
/// conversation.
#[derive(Clone)]
pub struct Session {
    model: Model,
    transcript: Vec<ChatMessage>,
    options: GenerationOptions,
    tools: Vec<Arc<dyn Tool>>,
    tool_choice: ToolChoice,
    max_rounds: usize,
    schema_in_prompt: bool,
    last_completion: Option<Completion>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tools: Vec<&str> = self.tools.iter().map(|t| t.name()).collect();
        f.debug_struct("Session")
            .field("transcript", &self.transcript)
            .field("options", &self.options)
            .field("tools", &tools)
            .field("tool_choice", &self.tool_choice)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

/// What a turn generates.
#[derive(Debug, Clone)]
enum Mode {
    /// Text, with the session's tools.
    Text,
    /// JSON for `schema`; tools are not offered.
    Json {
        schema: Value,
        type_name: &'static str,
    },
}

impl Session {
    pub(crate) fn new(model: Model) -> Self {
        Self {
            model,
            transcript: Vec::new(),
            options: GenerationOptions::default(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            max_rounds: DEFAULT_MAX_ROUNDS,
            schema_in_prompt: false,
            last_completion: None,
        }
    }

    /// Sets the system prompt (replacing any earlier one).
    pub fn system(mut self, prompt: impl Into<String>) -> Self {
        let prompt = prompt.into();
        match self.transcript.first_mut() {
            Some(first) if first.role == "system" => first.content = prompt,
            _ => self
                .transcript
                .insert(0, ChatMessage::new("system", prompt)),
        }
        self
    }

    /// Sets the generation options.
    pub fn options(mut self, options: GenerationOptions) -> Self {
        self.options = options;
        self
    }

    /// Changes the generation options of the next turns.
    pub fn set_options(&mut self, options: GenerationOptions) {
        self.options = options;
    }

    /// The generation options.
    pub fn generation_options(&self) -> &GenerationOptions {
        &self.options
    }

    /// Offers `tool` to the model in text answers. Names are checked when an
    /// answer starts ([`Error::Tools`]).
    pub fn tool(mut self, tool: impl Tool + 'static) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }

    /// Offers a shared tool.
    pub fn shared_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.push(tool);
        self
    }

    /// What the first round of each answer may do with the tools (default
    /// [`ToolChoice::Auto`]). Later rounds are `Auto`, and the last round
    /// answers in text. [`ToolChoice::None`] hides the tools.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = choice;
        self
    }

    /// Most rounds (generations) per answer, at least 1; the last one is
    /// held to text. Default [`DEFAULT_MAX_ROUNDS`].
    pub fn max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    /// Whether typed answers also show the model their JSON schema (in the
    /// system prompt). The schema is enforced either way; showing it lets a
    /// capable model read the fields' descriptions (doc comments), but it
    /// distracts very small models, so it is off by default.
    pub fn schema_in_prompt(mut self, show: bool) -> Self {
        self.schema_in_prompt = show;
        self
    }

    /// The messages so far: the system prompt (if set), then user and
    /// assistant turns; with tools, an assistant turn that called tools
    /// (its text holds the `<tool_call>` blocks) is followed by a
    /// [`TOOL_ROLE`] message with their results.
    pub fn transcript(&self) -> &[ChatMessage] {
        &self.transcript
    }

    /// Forgets the conversation, keeping the system prompt.
    pub fn reset(&mut self) {
        let keep = usize::from(self.transcript.first().is_some_and(|m| m.role == "system"));
        self.transcript.truncate(keep);
        self.last_completion = None;
    }

    /// The model this session runs on.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How the last round of the last answer ended: finish reason, token
    /// counts and timings.
    pub fn last_completion(&self) -> Option<&Completion> {
        self.last_completion.as_ref()
    }

    /// Answers `input`, running tools as the model calls them, and returns
    /// the final answer's text.
    pub fn respond(&mut self, input: impl Into<String>) -> Result<String, Error> {
        let mut stream = self.stream(input)?;
        for delta in &mut stream {
            delta?;
        }
        Ok(stream.turn.answer.take().unwrap_or_default())
    }

    /// Answers `input` as text deltas, as they are generated. Content the
    /// model writes in every round is streamed; tool calls are run between
    /// rounds and are not part of the text.
    pub fn stream(&mut self, input: impl Into<String>) -> Result<TextStream<'_>, Error> {
        let turn = self.start_turn(input.into(), Mode::Text)?;
        Ok(TextStream {
            session: self,
            turn,
        })
    }

    /// Answers `input` with a `T`, generated under `T`'s JSON schema and
    /// deserialised. The JSON text is the assistant turn in the transcript.
    pub fn respond_as<T: DeserializeOwned + JsonSchema>(
        &mut self,
        input: impl Into<String>,
    ) -> Result<T, Error> {
        let start = self.transcript.len();
        let mut stream = self.start_json::<T>(input.into())?;
        for delta in &mut stream {
            delta?;
        }
        let text = stream.turn.answer.take().unwrap_or_default();
        let finish = stream.turn.finish_reason;
        drop(stream);
        let result = serde_json::from_str::<T>(&text).map_err(|source| {
            json_error(
                source,
                text.clone(),
                finish,
                self.options.max_tokens,
                std::any::type_name::<T>(),
            )
        });
        if result.is_err() {
            self.transcript.truncate(start);
        }
        result
    }

    /// Answers `input` with JSON for `T`'s schema, as snapshots: each is the
    /// JSON generated so far closed into a valid value (unfinished strings,
    /// arrays and objects closed, a dangling key dropped), so a UI can show
    /// it growing. Consecutive snapshots differ; the last is the complete
    /// value (deserialise it with `serde_json::from_value`).
    pub fn stream_as<T: JsonSchema>(
        &mut self,
        input: impl Into<String>,
    ) -> Result<JsonStream<'_>, Error> {
        let type_name = std::any::type_name::<T>();
        let max_tokens = self.options.max_tokens;
        let inner = self.start_json::<T>(input.into())?;
        Ok(JsonStream {
            inner,
            text: String::new(),
            last: None,
            finished: false,
            type_name,
            max_tokens,
        })
    }

    fn start_json<T: JsonSchema>(&mut self, input: String) -> Result<TextStream<'_>, Error> {
        let mode = Mode::Json {
            schema: schema::schema_of::<T>(),
            type_name: std::any::type_name::<T>(),
        };
        let turn = self.start_turn(input, mode)?;
        Ok(TextStream {
            session: self,
            turn,
        })
    }

    /// Appends the user message and submits the first round.
    fn start_turn(&mut self, input: String, mode: Mode) -> Result<Turn, Error> {
        let specs = match mode {
            Mode::Text if self.tool_choice != ToolChoice::None => self.tool_specs()?,
            _ => Vec::new(),
        };
        let choice_needs_tools = matches!(
            self.tool_choice,
            ToolChoice::Required | ToolChoice::Function(_)
        );
        if matches!(mode, Mode::Text) && (!specs.is_empty() || choice_needs_tools) {
            tools::validate(&specs, &self.tool_choice)?;
        }
        let mut turn = Turn {
            start_len: self.transcript.len(),
            mode,
            specs,
            round: 0,
            rx: None,
            parser: None,
            raw: String::new(),
            delivered: String::new(),
            pending: VecDeque::new(),
            answer: None,
            finish_reason: None,
            done: false,
        };
        self.transcript.push(ChatMessage::new("user", input));
        if let Err(e) = self.submit_round(&mut turn) {
            self.transcript.truncate(turn.start_len);
            return Err(e);
        }
        Ok(turn)
    }

    /// The tools as the engine describes them: schemas with their local
    /// references expanded (they are embedded in a larger grammar).
    fn tool_specs(&self) -> Result<Vec<ToolSpec>, Error> {
        self.tools
            .iter()
            .map(|tool| {
                let parameters =
                    schema::inline_refs(&tool.parameters()).map_err(|reason| Error::Schema {
                        what: format!("tool '{}'", tool.name()),
                        reason,
                    })?;
                Ok(ToolSpec {
                    name: tool.name().to_string(),
                    description: tool.description().to_string(),
                    parameters,
                })
            })
            .collect()
    }

    /// Submits the turn's current round: the prompt from the transcript,
    /// and the constraint for the round.
    fn submit_round(&self, turn: &mut Turn) -> Result<(), Error> {
        let mut messages: Vec<ChatMessage> = self
            .transcript
            .iter()
            .map(|m| {
                if m.role == TOOL_ROLE {
                    ChatMessage::new("user", m.content.clone())
                } else {
                    m.clone()
                }
            })
            .collect();
        let constraint = match &turn.mode {
            Mode::Json { schema, type_name } => {
                if self.schema_in_prompt {
                    let hint = format!(
                        "Answer with JSON that matches this JSON schema:\n{}",
                        schema::inline_refs(schema).unwrap_or_else(|_| schema.clone())
                    );
                    messages = with_system_section(messages, &hint);
                }
                Some(
                    self.compile(&ConstraintSpec::JsonSchema(schema.clone()), || {
                        format!("type {type_name}")
                    })?,
                )
            }
            Mode::Text if turn.specs.is_empty() => None,
            Mode::Text => {
                messages = tools::with_tools(&messages, &turn.specs);
                let last_round = turn.round + 1 >= self.max_rounds;
                let choice = match turn.round {
                    _ if last_round => ToolChoice::None,
                    0 => self.tool_choice.clone(),
                    _ => ToolChoice::Auto,
                };
                let spec = match tools::grammar(&turn.specs, &choice) {
                    Some(spec) => spec,
                    None => ConstraintSpec::Lark(TEXT_ONLY_GRAMMAR.to_string()),
                };
                turn.parser = (choice != ToolChoice::None).then(ToolCallParser::new);
                Some(self.compile(&spec, || "the tools".to_string())?)
            }
        };
        let prompt_tokens = self.model.engine().encode_chat(&messages)?;
        let (sender, receiver) = channel();
        self.model.batch().submit(BatchRequest {
            prompt_tokens,
            max_tokens: Some(self.options.max_tokens),
            sampling: self.options.sampling.clone(),
            stop: self.options.stop.clone(),
            filter: constraint.map(|c| Box::new(c) as Box<dyn TokenFilter>),
            sink: Box::new(sender),
        })?;
        turn.rx = Some(receiver);
        turn.raw.clear();
        turn.delivered.clear();
        Ok(())
    }

    fn compile(
        &self,
        spec: &ConstraintSpec,
        what: impl FnOnce() -> String,
    ) -> Result<hearth_engine::Constraint, Error> {
        match self.model.constraints()?.compile(spec) {
            Ok(constraint) => Ok(constraint),
            Err(hearth_engine::ConstraintError::InvalidSchema(reason)) => Err(Error::Schema {
                what: what(),
                reason,
            }),
            Err(other) => Err(Error::Constraints(other)),
        }
    }

    /// Waits for the next event of the turn's round and applies it.
    fn advance(&mut self, turn: &mut Turn) -> Result<(), Error> {
        let Some(rx) = &turn.rx else {
            turn.done = true;
            return Ok(());
        };
        match rx.recv() {
            Ok(Event::Token { text, .. } | Event::Text(text)) => {
                turn.push_text(&text);
                Ok(())
            }
            Ok(Event::Done(completion)) => self.end_round(turn, completion),
            Ok(Event::Error(message)) => {
                self.abandon(turn);
                Err(Error::Generation(message))
            }
            Err(_) => {
                self.abandon(turn);
                Err(Error::Stopped)
            }
        }
    }

    /// A round ended: run its calls and go on, or record the answer.
    fn end_round(&mut self, turn: &mut Turn, completion: Completion) -> Result<(), Error> {
        turn.rx = None;
        turn.finish_reason = Some(completion.finish_reason);
        self.last_completion = Some(completion);
        let mut calls = Vec::new();
        if let Some(mut parser) = turn.parser.take() {
            for event in parser.finish() {
                // A call cut off by `max_tokens` is neither run nor shown.
                if let ToolEvent::Content(text) = event
                    && !text.starts_with(CALL_OPEN)
                {
                    turn.queue(text);
                }
            }
            calls = tools::parse(&turn.raw).1;
        }
        if calls.is_empty() {
            let answer = std::mem::take(&mut turn.delivered);
            self.transcript
                .push(ChatMessage::new("assistant", answer.clone()));
            turn.answer = Some(answer);
            turn.done = true;
            return Ok(());
        }
        self.transcript.push(ChatMessage::new(
            "assistant",
            tools::render_calls(&turn.delivered, &calls),
        ));
        let results: Vec<String> = calls.iter().map(|call| self.run_tool(call)).collect();
        self.transcript
            .push(ChatMessage::new(TOOL_ROLE, results.join("\n")));
        turn.round += 1;
        if let Err(e) = self.submit_round(turn) {
            self.abandon(turn);
            return Err(e);
        }
        Ok(())
    }

    /// Runs one call; the result (or the error) as the model reads it.
    fn run_tool(&self, call: &ToolCall) -> String {
        let result = match self.tools.iter().find(|t| t.name() == call.name) {
            None => Err(ToolError::new(format!("there is no tool '{}'", call.name))),
            Some(tool) => match serde_json::from_str::<Value>(&call.arguments) {
                Ok(arguments) => tool.call(arguments),
                Err(e) => Err(ToolError::InvalidArguments(e.to_string())),
            },
        };
        let content = match result {
            Ok(Value::String(text)) => text,
            Ok(value) => value.to_string(),
            Err(error) => json!({ "error": error.to_string() }).to_string(),
        };
        tools::render_result(&content)
    }

    /// Removes a failed turn from the transcript.
    fn abandon(&mut self, turn: &mut Turn) {
        turn.rx = None;
        turn.done = true;
        self.transcript.truncate(turn.start_len);
    }

    /// A stream dropped before its end: cancel the round and keep what was
    /// produced (nothing at all removes the turn).
    fn interrupt(&mut self, turn: &mut Turn) {
        turn.rx = None;
        turn.done = true;
        if turn.round == 0 && turn.delivered.is_empty() {
            self.transcript.truncate(turn.start_len);
        } else {
            let produced = std::mem::take(&mut turn.delivered);
            self.transcript
                .push(ChatMessage::new("assistant", produced));
        }
    }
}

/// `messages` with `section` appended to the system prompt (a new one at
/// the front if there is none).
fn with_system_section(mut messages: Vec<ChatMessage>, section: &str) -> Vec<ChatMessage> {
    match messages.first_mut() {
        Some(m) if m.role == "system" => m.content = format!("{}\n\n{section}", m.content),
        _ => messages.insert(0, ChatMessage::new("system", section)),
    }
    messages
}

/// The error for a typed answer that does not parse.
fn json_error(
    source: serde_json::Error,
    text: String,
    finish: Option<FinishReason>,
    max_tokens: usize,
    type_name: &'static str,
) -> Error {
    if finish == Some(FinishReason::Length) && source.is_eof() {
        Error::Incomplete { max_tokens, text }
    } else {
        Error::Deserialize {
            type_name,
            text,
            source,
        }
    }
}

/// The state of one answer in progress.
#[derive(Debug)]
struct Turn {
    /// Transcript length before the user message.
    start_len: usize,
    mode: Mode,
    /// The tools offered (empty without tools).
    specs: Vec<ToolSpec>,
    round: usize,
    /// Events of the round in flight.
    rx: Option<Receiver<Event>>,
    /// Splits content from calls in rounds that may call tools.
    parser: Option<ToolCallParser>,
    /// The round's text as generated.
    raw: String,
    /// The round's content handed out (or queued).
    delivered: String,
    pending: VecDeque<String>,
    /// The final answer's content, once the turn is done.
    answer: Option<String>,
    finish_reason: Option<FinishReason>,
    done: bool,
}

impl Turn {
    fn push_text(&mut self, text: &str) {
        self.raw.push_str(text);
        match &mut self.parser {
            Some(parser) => {
                for event in parser.push(text) {
                    if let ToolEvent::Content(content) = event {
                        self.queue(content);
                    }
                }
            }
            None => self.queue(text.to_string()),
        }
    }

    fn queue(&mut self, text: String) {
        if !text.is_empty() {
            self.delivered.push_str(&text);
            self.pending.push_back(text);
        }
    }
}

/// An answer as text deltas; see [`Session::stream`]. Reading it drives the
/// generation; dropping it early cancels the generation and keeps the text
/// produced so far in the transcript.
#[must_use = "a stream does nothing unless read"]
pub struct TextStream<'s> {
    session: &'s mut Session,
    turn: Turn,
}

impl std::fmt::Debug for TextStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStream")
            .field("round", &self.turn.round)
            .field("done", &self.turn.done)
            .finish_non_exhaustive()
    }
}

impl TextStream<'_> {
    /// Why the last round ended, once the stream is exhausted.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.turn.finish_reason
    }
}

impl Iterator for TextStream<'_> {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(delta) = self.turn.pending.pop_front() {
                return Some(Ok(delta));
            }
            if self.turn.done {
                return None;
            }
            if let Err(e) = self.session.advance(&mut self.turn) {
                return Some(Err(e));
            }
        }
    }
}

impl Drop for TextStream<'_> {
    fn drop(&mut self) {
        if !self.turn.done {
            self.session.interrupt(&mut self.turn);
        }
    }
}

/// A typed answer as JSON snapshots; see [`Session::stream_as`].
#[must_use = "a stream does nothing unless read"]
pub struct JsonStream<'s> {
    inner: TextStream<'s>,
    /// The JSON text so far.
    text: String,
    last: Option<Value>,
    finished: bool,
    type_name: &'static str,
    max_tokens: usize,
}

impl std::fmt::Debug for JsonStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonStream")
            .field("text", &self.text)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl JsonStream<'_> {
    /// The JSON text generated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The final snapshot, or an error if the JSON is incomplete.
    fn finish(&mut self) -> Option<Result<Value, Error>> {
        self.finished = true;
        match serde_json::from_str::<Value>(&self.text) {
            Ok(value) if self.last.as_ref() == Some(&value) => None,
            Ok(value) => {
                self.last = Some(value.clone());
                Some(Ok(value))
            }
            Err(source) => {
                let turn_start = self.inner.turn.start_len;
                self.inner.session.transcript.truncate(turn_start);
                Some(Err(json_error(
                    source,
                    self.text.clone(),
                    self.inner.turn.finish_reason,
                    self.max_tokens,
                    self.type_name,
                )))
            }
        }
    }
}

impl Iterator for JsonStream<'_> {
    type Item = Result<Value, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            match self.inner.next() {
                None => return self.finish(),
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Some(Ok(delta)) => {
                    self.text.push_str(&delta);
                    let snapshot = partial_json::close(&self.text)
                        .and_then(|closed| serde_json::from_str::<Value>(&closed).ok());
                    if let Some(value) = snapshot
                        && self.last.as_ref() != Some(&value)
                    {
                        self.last = Some(value.clone());
                        return Some(Ok(value));
                    }
                }
            }
        }
    }
}
