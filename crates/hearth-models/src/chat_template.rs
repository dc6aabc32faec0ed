//! Chat templates (Jinja, from `tokenizer.chat_template`), rendered the way
//! Hugging Face's `apply_chat_template` renders them.
//!
//! The template runs in minijinja configured like transformers' Jinja
//! environment: `trim_blocks` and `lstrip_blocks` on, loop controls, Python
//! string and dict methods (`.strip()`, `.startswith()`, `.items()`, via
//! minijinja-contrib's pycompat), a `raise_exception` function and a
//! `tojson` filter that writes JSON as Python's `json.dumps` does. The
//! context holds `messages`, `add_generation_prompt`, `bos_token` and
//! `eos_token`.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, context};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// Name of the compiled template inside its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

fn template_error(error: &Error) -> ModelError {
    // minijinja's message names the template line; causes are appended.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    ModelError::Template(message)
}

/// The text of the token `tokenizer.ggml.<which>_token_id` names, or "".
fn special_token_text(gguf: &GgufFile, which: &str) -> Result<String> {
    let Some(id) = gguf.get_u32_opt(&format!("tokenizer.ggml.{which}_token_id"))? else {
        return Ok(String::new());
    };
    let tokens = gguf.get_array_opt("tokenizer.ggml.tokens")?.unwrap_or(&[]);
    Ok(tokens
        .get(id as usize)
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string())
}

impl ChatTemplate {
    /// The template in `tokenizer.chat_template`, or `Ok(None)` when the
    /// file has none. `bos_token`/`eos_token` are the texts of the tokens
    /// the tokenizer metadata names.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Option<Self>> {
        let Some(source) = gguf.get_str_opt("tokenizer.chat_template")? else {
            return Ok(None);
        };
        let bos = special_token_text(gguf, "bos")?;
        let eos = special_token_text(gguf, "eos")?;
        Self::new(source, &bos, &eos).map(Some)
    }

    /// Compiles `source`; `bos_token`/`eos_token` are exposed to it.
    /// A syntax error is `ModelError::Template` with minijinja's message.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| template_error(&e))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the template appends
    /// the header of the assistant's turn. Errors raised by the template
    /// (`raise_exception`) or by evaluation are `ModelError::Template`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&e))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        template.render(ctx).map_err(|e| template_error(&e))
    }
}

/// `raise_exception(message)`: aborts rendering with `message`.
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson(indent=None, sort_keys=False)`: JSON as Python's `json.dumps`
/// writes it with `ensure_ascii=False` (`", "` and `": "` separators, or
/// one item per line when indented).
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    let mut writer = JsonWriter {
        out: &mut out,
        indent,
        sort_keys: sort_keys.unwrap_or(false),
    };
    writer.value(value, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonWriter<'a> {
    out: &'a mut String,
    indent: Option<usize>,
    sort_keys: bool,
}

impl JsonWriter<'_> {
    fn newline(&mut self, depth: usize) {
        if let Some(indent) = self.indent {
            self.out.push('\n');
            self.out.extend(std::iter::repeat_n(' ', indent * depth));
        }
    }

    fn separator(&mut self) {
        self.out
            .push_str(if self.indent.is_some() { "," } else { ", " });
    }

    fn value(&mut self, value: &Value, depth: usize) -> std::result::Result<(), Error> {
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => match value.as_i64() {
                Some(i) if value.is_integer() => {
                    let _ = write!(self.out, "{i}");
                }
                _ => {
                    let f = f64::try_from(value.clone()).unwrap_or(f64::NAN);
                    self.float(f);
                }
            },
            ValueKind::String => self.string(value.as_str().unwrap_or_default()),
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.out.push('{');
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        self.separator();
                    }
                    self.newline(depth + 1);
                    match key.as_str() {
                        Some(s) => self.string(s),
                        None => self.string(&key.to_string()),
                    }
                    self.out.push_str(": ");
                    self.value(&value.get_item(key)?, depth + 1)?;
                }
                if !keys.is_empty() {
                    self.newline(depth);
                }
                self.out.push('}');
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.separator();
                    }
                    self.newline(depth + 1);
                    self.value(item, depth + 1)?;
                }
                if !items.is_empty() {
                    self.newline(depth);
                }
                self.out.push(']');
            }
            _ => self.string(&value.to_string()),
        }
        Ok(())
    }

    /// Floats as Python prints them: `1.0`, `0.5`, `1e+20`, `NaN`.
    fn float(&mut self, f: f64) {
        if f.is_nan() {
            self.out.push_str("NaN");
        } else if f.is_infinite() {
            self.out
                .push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        } else if f == f.trunc() && f.abs() < 1e16 {
            let _ = write!(self.out, "{f:.1}");
        } else {
            let text = format!("{f:e}");
            match text.split_once('e') {
                Some((mantissa, exp)) if f.abs() >= 1e16 || f.abs() < 1e-4 => {
                    let sign = if exp.starts_with('-') { "-" } else { "+" };
                    let digits = exp.trim_start_matches('-');
                    let _ = write!(self.out, "{mantissa}e{sign}{digits:0>2}");
                }
                _ => {
                    let _ = write!(self.out, "{f}");
                }
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{08}' => self.out.push_str("\\b"),
                '\u{0C}' => self.out.push_str("\\f"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", u32::from(c));
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}
