//! Tool calling: how tools are described to the model, the grammar that
//! holds its calls to each tool's JSON schema, and the parser that turns
//! its output back into calls, whole or streamed.
//!
//! The wire format is the widely trained "Hermes" one: tools are listed
//! inside `<tools></tools>` in the system prompt, and the model answers a
//! call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one
//! block per call (several blocks are parallel calls). Results go back as
//! `<tool_response>` blocks in a user turn, which every chat template can
//! render.

use hearth_models::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::constraint::ConstraintSpec;

const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON schema of the arguments object.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

fn empty_object_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Text or calls, as the model decides.
    Auto,
    /// Text only; the tools are not shown.
    None,
    /// At least one call, to any tool.
    Required,
    /// Calls to this tool only.
    Function(String),
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique within the response (`call_<n>`), to match results to calls.
    pub id: String,
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// Why a tool request is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolError {
    #[error("tool {0}: names must be 1-64 letters, digits, '_' or '-'")]
    BadName(String),
    #[error("tool '{0}' is defined twice")]
    Duplicate(String),
    #[error("tool '{name}': parameters must be a JSON schema object")]
    BadParameters { name: String },
    #[error("tool_choice names '{0}', which is not among the tools")]
    UnknownChoice(String),
    #[error("tool_choice is '{0}' but no tools were given")]
    NoTools(String),
}

/// Checks names, uniqueness, parameter schemas and the choice.
pub fn validate(tools: &[ToolSpec], choice: &ToolChoice) -> Result<(), ToolError> {
    let mut seen = std::collections::HashSet::new();
    for t in tools {
        let ok = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ToolError::BadName(format!("{:?}", t.name)));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(ToolError::Duplicate(t.name.clone()));
        }
        if !t.parameters.is_object() {
            return Err(ToolError::BadParameters {
                name: t.name.clone(),
            });
        }
    }
    match choice {
        ToolChoice::Function(name) if !seen.contains(name.as_str()) => {
            Err(ToolError::UnknownChoice(name.clone()))
        }
        ToolChoice::Required if tools.is_empty() => Err(ToolError::NoTools("required".into())),
        _ => Ok(()),
    }
}

/// The system-prompt section that lists the tools.
pub fn system_prompt(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        let entry = json!({
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        });
        s.push('\n');
        s.push_str(&entry.to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// `messages` with the tools described in the system message (prepended
/// to the first one, or a new one at the front).
pub fn with_tools(messages: &[ChatMessage], tools: &[ToolSpec]) -> Vec<ChatMessage> {
    let mut out = messages.to_vec();
    if tools.is_empty() {
        return out;
    }
    let section = system_prompt(tools);
    match out.first_mut() {
        Some(m) if m.role == "system" => m.content = format!("{}\n\n{section}", m.content),
        _ => out.insert(0, ChatMessage::new("system", section)),
    }
    out
}

/// An assistant turn that made `calls`, as the model writes it.
pub fn render_calls(content: &str, calls: &[ToolCall]) -> String {
    let mut s = content.to_string();
    for c in calls {
        if !s.is_empty() {
            s.push('\n');
        }
        let args: Value =
            serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments.clone()));
        let body = json!({"name": c.name, "arguments": args});
        s.push_str(&format!("{CALL_OPEN}\n{body}\n{CALL_CLOSE}"));
    }
    s
}

/// A tool's result, as the model reads it (inside a user turn).
pub fn render_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// The constraint for `choice` (none for [`ToolChoice::None`]): calls hold
/// to their tool's schema; with `Auto` the answer is either text (not
/// starting with `<`) or calls.
pub fn grammar(tools: &[ToolSpec], choice: &ToolChoice) -> Option<ConstraintSpec> {
    grammar_with(tools, choice, true)
}

/// [`grammar`], allowing several calls in one answer only if `parallel`
/// (OpenAI's `parallel_tool_calls`).
pub fn grammar_with(
    tools: &[ToolSpec],
    choice: &ToolChoice,
    parallel: bool,
) -> Option<ConstraintSpec> {
    let allowed: Vec<&ToolSpec> = match choice {
        ToolChoice::None => return None,
        ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
        ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
    };
    if allowed.is_empty() {
        return None;
    }
    // Each tool's local definitions move to the root of the combined
    // schema under a per-tool prefix, so `$ref`s (recursive ones included)
    // still resolve once the parameters are embedded.
    let mut defs = serde_json::Map::new();
    let variants: Vec<Value> = allowed
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": t.name},
                    "arguments": hoist_definitions(&t.parameters, &format!("tool{i}_"), &mut defs),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = if variants.len() == 1 {
        variants[0].clone()
    } else {
        json!({"anyOf": variants})
    };
    if let Value::Object(map) = &mut schema {
        if !defs.is_empty() {
            map.insert("$defs".into(), Value::Object(defs));
        }
        map.insert("x-guidance".into(), crate::constraint::json_options());
    }
    let repeat = if parallel { " (\"\\n\" call)*" } else { "" };
    let calls = format!(
        "calls: call{repeat}\ncall: \"{CALL_OPEN}\\n\" %json {schema} \"\\n{CALL_CLOSE}\"\n"
    );
    let start = match choice {
        ToolChoice::Auto => "start: calls | TEXT\nTEXT: /[^<](.|\\n)*/\n",
        _ => "start: calls\n",
    };
    Some(ConstraintSpec::Lark(format!("{start}{calls}")))
}

/// `schema` without its `$defs`/`definitions`, which go into `defs` as
/// `PREFIX` + name, with every local `$ref` to them rewritten.
fn hoist_definitions(
    schema: &Value,
    prefix: &str,
    defs: &mut serde_json::Map<String, Value>,
) -> Value {
    fn rewrite(value: &mut Value, prefix: &str) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get_mut("$ref") {
                    for key in ["#/$defs/", "#/definitions/"] {
                        if let Some(name) = r.strip_prefix(key) {
                            *r = format!("#/$defs/{prefix}{name}");
                            break;
                        }
                    }
                }
                map.values_mut().for_each(|v| rewrite(v, prefix));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, prefix)),
            _ => {}
        }
    }
    let mut out = schema.clone();
    if let Value::Object(map) = &mut out {
        map.remove("$schema");
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(found)) = map.remove(key) {
                for (name, mut def) in found {
                    rewrite(&mut def, prefix);
                    defs.insert(format!("{prefix}{name}"), def);
                }
            }
        }
    }
    rewrite(&mut out, prefix);
    out
}

/// What [`ToolCallParser`] found in a piece of streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// Text meant for the user.
    Content(String),
    /// A complete call; `index` counts calls in this response from 0.
    Call { index: usize, call: ToolCall },
    /// A call the output ended inside of (cut off by `max_tokens`),
    /// verbatim: neither run nor shown as content.
    Unfinished(String),
}

/// Splits streamed model output into content and tool calls. Text that
/// might be the start of `<tool_call>` is held back until it is decided.
#[derive(Debug, Default)]
pub struct ToolCallParser {
    buffer: String,
    in_call: bool,
    /// A call just closed: a newline right after it separates calls.
    after_call: bool,
    calls: usize,
}

impl ToolCallParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds newly generated text.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.buffer.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.buffer.find(CALL_CLOSE) else {
                    break;
                };
                let body: String = self.buffer[..end].to_string();
                self.buffer.drain(..end + CALL_CLOSE.len());
                self.in_call = false;
                match parse_call(&body, self.calls) {
                    Some(call) => {
                        out.push(ToolEvent::Call {
                            index: self.calls,
                            call,
                        });
                        self.calls += 1;
                    }
                    None => out.push(ToolEvent::Content(format!("{CALL_OPEN}{body}{CALL_CLOSE}"))),
                }
                self.after_call = true;
            } else if self.after_call && !self.buffer.is_empty() {
                // The separator between parallel calls is not content.
                if self.buffer.starts_with('\n') {
                    self.buffer.remove(0);
                }
                self.after_call = false;
            } else if let Some(start) = self.buffer.find(CALL_OPEN) {
                let before = self.buffer[..start].to_string();
                if !before.trim().is_empty() {
                    out.push(ToolEvent::Content(before));
                }
                self.buffer.drain(..start + CALL_OPEN.len());
                self.in_call = true;
            } else {
                // Hold back a suffix that could begin `<tool_call>`.
                let keep = (1..CALL_OPEN.len())
                    .rev()
                    .find(|&k| {
                        self.buffer.len() >= k
                            && self.buffer.is_char_boundary(self.buffer.len() - k)
                            && CALL_OPEN.starts_with(&self.buffer[self.buffer.len() - k..])
                    })
                    .unwrap_or(0);
                let emit = self.buffer.len() - keep;
                if emit > 0 {
                    out.push(ToolEvent::Content(self.buffer[..emit].to_string()));
                    self.buffer.drain(..emit);
                }
                break;
            }
        }
        out
    }

    /// Ends the stream: held-back text is content; a call still open is
    /// [`ToolEvent::Unfinished`].
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let rest = std::mem::take(&mut self.buffer);
        if std::mem::take(&mut self.in_call) {
            return vec![ToolEvent::Unfinished(format!("{CALL_OPEN}{rest}"))];
        }
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![ToolEvent::Content(rest)]
        }
    }

    /// Calls found so far.
    pub fn calls(&self) -> usize {
        self.calls
    }
}

/// Parses a whole response into its content and calls (an unfinished
/// call is dropped).
pub fn parse(text: &str) -> (String, Vec<ToolCall>) {
    let mut parser = ToolCallParser::new();
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let (mut content, mut calls) = (String::new(), Vec::new());
    for e in events {
        match e {
            ToolEvent::Content(t) => content.push_str(&t),
            ToolEvent::Call { call, .. } => calls.push(call),
            ToolEvent::Unfinished(_) => {}
        }
    }
    (content, calls)
}

fn parse_call(body: &str, index: usize) -> Option<ToolCall> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value.get("arguments").cloned().unwrap_or(json!({}));
    Some(ToolCall {
        id: format!("call_{index}"),
        name,
        arguments: arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolSpec {
        ToolSpec {
            name: "get_weather".into(),
            description: "Current weather".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    #[test]
    fn streamed_calls_are_split_from_content_at_any_chunking() {
        let text = "Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        let (content, calls) = parse(text);
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].id, "call_1");
        assert_eq!(calls[1].arguments, r#"{"city":"Rome"}"#);
        for step in 1..7 {
            let mut p = ToolCallParser::new();
            let mut events = Vec::new();
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(step) {
                events.extend(p.push(&chunk.iter().collect::<String>()));
            }
            events.extend(p.finish());
            let indices: Vec<usize> = events
                .iter()
                .filter_map(|e| match e {
                    ToolEvent::Call { index, .. } => Some(*index),
                    _ => None,
                })
                .collect();
            assert_eq!(indices, vec![0, 1], "chunks of {step}");
            let content: String = events
                .iter()
                .filter_map(|e| match e {
                    ToolEvent::Content(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(content, "Let me check.", "chunks of {step}");
        }
    }

    #[test]
    fn text_that_only_looks_like_a_call_is_content() {
        let (content, calls) = parse("a < b and <tool_call>not json</tool_call> end <tool");
        assert!(calls.is_empty());
        assert_eq!(
            content,
            "a < b and <tool_call>not json</tool_call> end <tool"
        );
        let mut p = ToolCallParser::new();
        p.push("ok <tool_call>{\"name\": \"x\", \"argu");
        assert_eq!(
            p.finish(),
            vec![ToolEvent::Unfinished(
                "<tool_call>{\"name\": \"x\", \"argu".into()
            )]
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let w = weather();
        assert!(validate(std::slice::from_ref(&w), &ToolChoice::Auto).is_ok());
        assert_eq!(
            validate(&[w.clone(), w.clone()], &ToolChoice::Auto),
            Err(ToolError::Duplicate("get_weather".into()))
        );
        assert_eq!(
            validate(
                std::slice::from_ref(&w),
                &ToolChoice::Function("nope".into())
            ),
            Err(ToolError::UnknownChoice("nope".into()))
        );
        assert_eq!(
            validate(&[], &ToolChoice::Required),
            Err(ToolError::NoTools("required".into()))
        );
        let bad = ToolSpec {
            name: "has space".into(),
            ..w
        };
        assert!(matches!(
            validate(&[bad], &ToolChoice::Auto),
            Err(ToolError::BadName(_))
        ));
    }

    #[test]
    fn rendered_calls_parse_back() {
        let calls = vec![ToolCall {
            id: "call_0".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        }];
        let (content, parsed) = parse(&render_calls("", &calls));
        assert_eq!(content, "");
        assert_eq!(parsed, calls);
        assert!(grammar(&[weather()], &ToolChoice::None).is_none());
        assert!(grammar(&[weather()], &ToolChoice::Required).is_some());
    }
}
