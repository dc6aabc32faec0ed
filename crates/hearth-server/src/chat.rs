//! `POST /v1/chat/completions`.
//!
//! Messages are checked and rendered with the model's chat template, the
//! request's fields become sampling parameters and token filters
//! (`logit_bias`, `response_format`, the tool-call grammar), and the
//! generation is returned whole or streamed as `chat.completion.chunk`
//! events. Tools use `hearth_engine::tools`: they are described in the
//! system prompt, calls are held to their schemas by a grammar, and the
//! output is split back into content and `tool_calls` (a streamed call is
//! sent whole, in one chunk, once it is complete).

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hearth_engine::Completion;
use hearth_engine::tools::{
    self, ToolCall, ToolCallParser, ToolChoice as EngineToolChoice, ToolError, ToolEvent, ToolSpec,
};
use hearth_models::ChatMessage;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::filter::FilterChain;
use crate::generation::{self, ChunkFormat, Job, finish_reason, to_json};
use crate::openai::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatCompletionRequest, ChatMessageIn,
    ChunkChoice, Delta, HearthInfo, MessageContent, Tool, ToolCallDelta, ToolCallOut, ToolChoice,
    UsageOut, new_id, unix_time,
};
use crate::response_format;
use crate::validate::{self, SamplingInput};

/// Roles a message may have; `developer` is OpenAI's newer name for `system`.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// `POST /v1/chat/completions`.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    validate::model(&request.model, state.model_id())?;
    validate::single_choice(request.n, "n")?;
    let tool_use = tool_use(request.tools, request.tool_choice)?;
    let mut messages = chat_messages(request.messages)?;
    if tool_use.active() {
        messages = tools::with_tools(&messages, &tool_use.specs);
    }
    if request.logprobs == Some(true) {
        return Err(ApiError::invalid("logprobs", "logprobs are not supported"));
    }
    if request.top_logprobs.is_some_and(|n| n != 0) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "logprobs are not supported",
        ));
    }
    let (stream, include_usage) =
        validate::streaming(request.stream, request.stream_options.as_ref())?;
    let max_tokens = match request.max_completion_tokens {
        Some(n) => validate::max_tokens(Some(n), "max_completion_tokens")?,
        None => validate::max_tokens(request.max_tokens, "max_tokens")?,
    };
    let sampling = validate::sampling(SamplingInput {
        temperature: request.temperature,
        top_p: request.top_p,
        seed: request.seed,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        top_k: request.top_k,
        min_p: request.min_p,
        repeat_penalty: request.repeat_penalty,
    })?;
    let mut filters = FilterChain::default();
    let vocab_size = state.engine().tokenizer().vocab_size();
    if let Some(bias) = validate::logit_bias(request.logit_bias.as_ref(), vocab_size)? {
        filters.push(Box::new(bias));
    }
    if let Some(constraint) =
        response_format::filter(state.constraints(), request.response_format.as_ref())?
    {
        if tool_use.active() {
            return Err(ApiError::invalid(
                "response_format",
                "response_format cannot be combined with tools the model may call",
            ));
        }
        filters.push(Box::new(constraint));
    }
    let parallel = request.parallel_tool_calls.unwrap_or(true);
    if let Some(grammar) = tools::grammar_with(&tool_use.specs, &tool_use.choice, parallel) {
        let constraint = response_format::compile(state.constraints(), &grammar, "tools")?;
        filters.push(Box::new(constraint));
    }

    let engine = state.engine().clone();
    let prompt_tokens = tokio::task::spawn_blocking(move || engine.encode_chat(&messages))
        .await
        .map_err(|e| ApiError::Internal(format!("tokenizing task: {e}")))?
        .map_err(|e| {
            ApiError::invalid(
                "messages",
                format!("the messages cannot be rendered with the model's chat template: {e}"),
            )
        })?;
    let job = Job {
        prompt_tokens,
        max_tokens,
        sampling,
        stop: request.stop.map(|s| s.into_strings()).unwrap_or_default(),
        filter: filters.into_filter(),
        kind: hearth_core::telemetry::EventKind::Chat,
    };
    let running = generation::submit(&state, job, "messages", arrived)?;
    let id = new_id("chatcmpl");
    let created = unix_time();
    let model = state.model_id().to_owned();
    if stream {
        let format = ChatChunks {
            id,
            created,
            model,
            include_usage,
            parser: tool_use.active().then(ToolCallParser::new),
        };
        return Ok(generation::sse_response(running, format));
    }
    let (text, completion) = running.collect().await?;
    let headers = generation::result_headers(completion.max_tokens_clamped_to);
    let mut finish = finish_reason(completion.finish_reason);
    let (content, tool_calls) = match tool_use.active() {
        true => match tools::parse(&text) {
            (content, calls) if calls.is_empty() => (Some(content), None),
            (content, calls) => {
                finish = "tool_calls";
                let calls = calls.into_iter().map(ToolCallOut::from).collect();
                (Some(content).filter(|c| !c.trim().is_empty()), Some(calls))
            }
        },
        false => (Some(text), None),
    };
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason: finish,
        }],
        usage: completion.usage.into(),
        hearth: HearthInfo::from_completion(&completion),
    };
    Ok((headers, Json(body)).into_response())
}

/// Checks roles and contents and flattens text parts.
fn chat_messages(messages: Vec<ChatMessageIn>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must contain at least one message",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| {
            if !ROLES.contains(&message.role.as_str()) {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!(
                        "unknown role '{}': expected one of {}",
                        message.role,
                        ROLES.join(", ")
                    ),
                ));
            }
            if message.tool_calls.is_some() && message.role != "assistant" {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_calls"),
                    "only assistant messages carry tool calls",
                ));
            }
            let content = match message.content {
                Some(MessageContent::Text(text)) => text,
                Some(MessageContent::Parts(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(text)) => texts.push(text),
                            ("text", None) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}].text"),
                                    "a text part needs its text",
                                ));
                            }
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}].type"),
                                    format!(
                                        "content parts of type '{kind}' are not supported; only 'text' is"
                                    ),
                                ));
                            }
                        }
                    }
                    texts.join("\n")
                }
                None if message.role == "assistant" => String::new(),
                None => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].content"),
                        format!("a {} message needs content", message.role),
                    ));
                }
            };
            Ok(match message.role.as_str() {
                "developer" => ChatMessage::new("system", content),
                // Results go back to the model inside a user turn.
                "tool" => ChatMessage::new("user", tools::render_result(&content)),
                "assistant" => {
                    let calls: Vec<ToolCall> = message
                        .tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                        .map(|(j, call)| ToolCall {
                            id: call.id.unwrap_or_else(|| format!("call_{j}")),
                            name: call.function.name,
                            arguments: call.function.arguments,
                        })
                        .collect();
                    ChatMessage::new("assistant", tools::render_calls(&content, &calls))
                }
                _ => ChatMessage::new(message.role, content),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(merge_tool_results)
}

/// Consecutive tool results become one user turn, as the model was trained
/// to read them.
fn merge_tool_results(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut merged: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for message in messages {
        let is_result = message.role == "user" && message.content.starts_with("<tool_response>");
        match merged.last_mut() {
            Some(last)
                if is_result
                    && last.role == "user"
                    && last.content.starts_with("<tool_response>") =>
            {
                last.content.push('\n');
                last.content.push_str(&message.content);
            }
            _ => merged.push(message),
        }
    }
    merged
}

/// The tools a request offers and whether the model may call them.
struct ToolUse {
    specs: Vec<ToolSpec>,
    choice: EngineToolChoice,
}

impl ToolUse {
    fn active(&self) -> bool {
        !self.specs.is_empty() && self.choice != EngineToolChoice::None
    }
}

/// Validates `tools` and `tool_choice` (absent means `auto` when tools are given).
fn tool_use(tools: Option<Vec<Tool>>, choice: Option<ToolChoice>) -> Result<ToolUse, ApiError> {
    let tools = tools.unwrap_or_default();
    for (i, Tool::Function { function }) in tools.iter().enumerate() {
        let name = &function.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                "function names must be 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        if function.parameters.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.parameters"),
                "function parameters must be a JSON schema object",
            ));
        }
    }
    let choice = match choice {
        None if tools.is_empty() => EngineToolChoice::None,
        None => EngineToolChoice::Auto,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "none" => EngineToolChoice::None,
            "auto" => EngineToolChoice::Auto,
            "required" => EngineToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "tool_choice must be 'none', 'auto', 'required' or a named function, got '{other}'"
                    ),
                ));
            }
        },
        Some(ToolChoice::Named(named)) => {
            if named.kind != "function" {
                return Err(ApiError::invalid(
                    "tool_choice.type",
                    format!("tool_choice.type must be 'function', got '{}'", named.kind),
                ));
            }
            EngineToolChoice::Function(named.function.name)
        }
    };
    if tools.is_empty() && choice != EngineToolChoice::None {
        return Err(ApiError::invalid(
            "tool_choice",
            "tool_choice is only allowed when tools are given",
        ));
    }
    let specs: Vec<ToolSpec> = tools
        .into_iter()
        .map(|Tool::Function { function }| ToolSpec {
            name: function.name,
            description: function.description.unwrap_or_default(),
            parameters: function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    tools::validate(&specs, &choice).map_err(|error| {
        let param = match error {
            ToolError::UnknownChoice(_) => "tool_choice.function.name",
            ToolError::NoTools(_) => "tool_choice",
            _ => "tools",
        };
        ApiError::invalid(param, error.to_string())
    })?;
    Ok(ToolUse { specs, choice })
}

/// Writes `chat.completion.chunk`s.
struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Splits tool calls from content when the model may call tools.
    parser: Option<ToolCallParser>,
}

impl ChatChunks {
    fn chunk(&self, delta: Delta, finish: Option<&'static str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
            hearth: None,
        }
    }
}

impl ChatChunks {
    /// The chunk for a parsed piece of output; a call cut off by
    /// `max_tokens` is neither a call nor content, so it sends nothing.
    fn event_chunk(&self, event: ToolEvent) -> Option<String> {
        let delta = match event {
            ToolEvent::Content(text) => Delta {
                content: Some(text),
                ..Delta::default()
            },
            ToolEvent::Call { index, call } => Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index,
                    call: call.into(),
                }]),
                ..Delta::default()
            },
            ToolEvent::Unfinished(_) => return None,
        };
        Some(to_json(&self.chunk(delta, None)))
    }
}

impl ChunkFormat for ChatChunks {
    fn opening(&mut self) -> Vec<String> {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..Delta::default()
        };
        vec![to_json(&self.chunk(delta, None))]
    }

    fn text(&mut self, text: String) -> Vec<String> {
        match self.parser.as_mut() {
            Some(parser) => {
                let events = parser.push(&text);
                events
                    .into_iter()
                    .filter_map(|e| self.event_chunk(e))
                    .collect()
            }
            None => self
                .event_chunk(ToolEvent::Content(text))
                .into_iter()
                .collect(),
        }
    }

    fn closing(&mut self, completion: &Completion) -> Vec<String> {
        let (rest, called) = match self.parser.as_mut() {
            Some(parser) => (parser.finish(), parser.calls() > 0),
            None => (Vec::new(), false),
        };
        let mut chunks: Vec<String> = rest
            .into_iter()
            .filter_map(|e| self.event_chunk(e))
            .collect();
        let finish = if called {
            "tool_calls"
        } else {
            finish_reason(completion.finish_reason)
        };
        let mut last = self.chunk(Delta::default(), Some(finish));
        last.hearth = Some(HearthInfo::from_completion(completion));
        chunks.push(to_json(&last));
        if self.include_usage {
            let mut usage = self.chunk(Delta::default(), None);
            usage.choices.clear();
            usage.usage = Some(Some(UsageOut::from(completion.usage)));
            chunks.push(to_json(&usage));
        }
        chunks
    }
}
