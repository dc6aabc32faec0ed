//! Constrained decoding: JSON schemas, "any JSON object", Lark grammars and
//! regular expressions enforced token by token with `llguidance`.
//!
//! A [`ConstraintFactory`] is built once per model: it turns every token of
//! the vocabulary into the bytes it renders to and builds `llguidance`'s
//! token trie over them. Control and end-of-generation tokens are entered
//! under the trie's special-token marker (byte `0xFF` followed by the token's
//! text, a byte that never occurs in UTF-8), so no text-level rule can ever
//! produce them; only a grammar that names them (`<|im_end|>` in Lark) can.
//! Each request compiles its [`ConstraintSpec`] into a [`Constraint`], the
//! per-sequence matcher that masks logits and advances with each sampled
//! token.
//!
//! Constraints fail closed: a schema this module cannot enforce exactly is
//! rejected at compile time (no lenient mode, user `x-guidance` options are
//! replaced by ours), and a state with no allowed token is an error rather
//! than an unconstrained step. JSON is generated compactly (`", "` and
//! `": "` separators, no free whitespace) so that a small model cannot spend
//! its token budget on indentation.

use std::sync::Arc;

use hearth_models::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

/// Why a constraint could not be built or advanced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    /// The schema or grammar is malformed or uses something that cannot be
    /// enforced; the message is fit for a 400 response.
    #[error("invalid constraint: {0}")]
    InvalidSchema(String),
    /// `token` is not allowed at this point of the grammar.
    #[error("token {token} rejected by the constraint: {reason}")]
    Rejected { token: u32, reason: String },
    /// The matcher failed (no allowed token, limits exceeded, a bug).
    #[error("constraint failure: {0}")]
    Internal(String),
}

/// What a generated text must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// A JSON schema (OpenAI's `response_format.json_schema.schema`).
    JsonSchema(Value),
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// A grammar in `llguidance`'s Lark dialect; special tokens are written
    /// as their text, e.g. `<|im_end|>`.
    Lark(String),
    /// A regular expression the whole output must match.
    Regex(String),
}

/// Compiles constraints for one tokenizer. Building it walks the whole
/// vocabulary (tens of milliseconds); clones share the built state.
#[derive(Clone)]
pub struct ConstraintFactory {
    parser_factory: Arc<ParserFactory>,
    /// End-of-generation tokens, ascending: the only tokens allowed once a
    /// grammar is complete.
    eog: Arc<[u32]>,
}

impl std::fmt::Debug for ConstraintFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintFactory")
            .field("vocab_size", &self.vocab_size())
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

/// The byte each special token's trie entry starts with.
const SPECIAL_MARKER: u8 = TokTrie::SPECIAL_TOKEN_MARKER;

/// JSON compile options forced onto every schema: strict (no keyword is
/// silently ignored) and compact.
pub(crate) fn json_options() -> Value {
    serde_json::json!({
        "item_separator": ", ",
        "key_separator": ": ",
        "whitespace_flexible": false,
        "lenient": false,
    })
}

/// Our tokenizer as `llguidance` sees it.
struct TokenEnvironment {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenEnvironment {
    /// Tokenizes `bytes` with the model's tokenizer when that reproduces the
    /// bytes exactly (it may not for invalid UTF-8 or a SentencePiece space
    /// prefix); otherwise falls back to the trie's greedy tokenization.
    fn tokenize(&self, bytes: &[u8], parse_special: bool) -> Vec<u32> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let tokens = self.tokenizer.encode(text, false, parse_special);
            let mut rendered = Vec::with_capacity(bytes.len());
            for &token in &tokens {
                let piece = self.trie.token(token);
                match piece.first() {
                    Some(&SPECIAL_MARKER) => rendered.extend_from_slice(&piece[1..]),
                    _ => rendered.extend_from_slice(piece),
                }
            }
            if rendered == bytes {
                return tokens;
            }
        }
        self.trie.greedy_tokenize(bytes)
    }
}

impl TokenizerEnv for TokenEnvironment {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        self.tokenize(bytes, false)
    }

    fn tokenize_bytes_special(&self, bytes: &[u8]) -> Vec<u32> {
        self.tokenize(bytes, true)
    }
}

/// The trie entry of every token: its rendered bytes; `0xFF` + its text for
/// control, end-of-generation and other tokens that render as nothing; no
/// bytes (never allowed) for the few byte-level tokens that start with
/// `0xFF`, which no UTF-8 text contains.
fn trie_words(tokenizer: &Tokenizer) -> Vec<Vec<u8>> {
    (0..tokenizer.vocab_size() as u32)
        .map(|id| {
            let bytes = tokenizer.token_bytes(id);
            let special = tokenizer.is_control(id) || tokenizer.is_eog(id) || bytes.is_empty();
            if special {
                match tokenizer.token_text(id) {
                    Some(text) if !text.is_empty() => {
                        let mut word = Vec::with_capacity(text.len() + 1);
                        word.push(SPECIAL_MARKER);
                        word.extend_from_slice(text.as_bytes());
                        word
                    }
                    _ => Vec::new(),
                }
            } else if bytes.first() == Some(&SPECIAL_MARKER) {
                Vec::new()
            } else {
                bytes.to_vec()
            }
        })
        .collect()
}

/// `llguidance` error text without its trailing state markers.
fn clean_message(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    let text = text.split("\n<").next().unwrap_or(&text);
    text.trim().to_string()
}

impl ConstraintFactory {
    /// Builds the token trie for `tokenizer`. Errors when the vocabulary has
    /// no end-of-generation token (a constrained output could never end).
    pub fn new(tokenizer: &Arc<Tokenizer>) -> Result<Self, ConstraintError> {
        let vocab_size = tokenizer.vocab_size();
        let vocab_size_u32 = u32::try_from(vocab_size)
            .map_err(|_| ConstraintError::Internal(format!("vocabulary of {vocab_size} tokens")))?;
        let mut eog = tokenizer.eog_ids();
        eog.extend(tokenizer.eos_id());
        eog.retain(|&id| id < vocab_size_u32);
        eog.sort_unstable();
        eog.dedup();
        let primary_eos = tokenizer
            .eos_id()
            .filter(|&id| id < vocab_size_u32)
            .or_else(|| eog.first().copied())
            .ok_or_else(|| {
                ConstraintError::Internal(
                    "the vocabulary has no end-of-generation token".to_string(),
                )
            })?;
        let words = trie_words(tokenizer);
        let tokenizer = Arc::clone(tokenizer);
        let eog_for_trie = eog.clone();
        let parser_factory = llguidance::panic_utils::catch_unwind(move || {
            let info = TokRxInfo::new(vocab_size_u32, primary_eos);
            let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog_for_trie);
            let environment: llguidance::toktrie::TokEnv =
                Arc::new(TokenEnvironment { tokenizer, trie });
            let mut factory = ParserFactory::new_simple(&environment)?;
            factory.quiet();
            factory.limits_mut().verbose_errors = false;
            Ok(factory)
        })
        .map_err(|e| ConstraintError::Internal(clean_message(&e)))?;
        Ok(Self {
            parser_factory: Arc::new(parser_factory),
            eog: eog.into(),
        })
    }

    /// Number of tokens the constraints know; logits past it are always
    /// masked.
    pub fn vocab_size(&self) -> usize {
        self.parser_factory.tok_env().tok_trie().vocab_size()
    }

    /// Validates and compiles `spec` into a fresh per-sequence constraint.
    /// A malformed, unsatisfiable or unsupported schema or grammar is
    /// [`ConstraintError::InvalidSchema`].
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = match spec {
            ConstraintSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_json_options(schema)?)
            }
            ConstraintSpec::JsonObject => TopLevelGrammar::from_json_schema(serde_json::json!({
                "type": "object",
                "x-guidance": json_options(),
            })),
            ConstraintSpec::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
            ConstraintSpec::Regex(pattern) => TopLevelGrammar::from_regex(pattern),
        };
        let parser = self
            .parser_factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::InvalidSchema(clean_message(&e)))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(ConstraintError::InvalidSchema(error));
        }
        Ok(Constraint {
            matcher,
            allowed: None,
            eog: Arc::clone(&self.eog),
            vocab_size: self.vocab_size(),
        })
    }
}

/// `schema` with our JSON compile options in its `x-guidance` slot.
fn with_json_options(schema: &Value) -> Result<Value, ConstraintError> {
    match schema {
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("x-guidance".to_string(), json_options());
            Ok(Value::Object(map))
        }
        Value::Bool(true) => Ok(serde_json::json!({ "x-guidance": json_options() })),
        Value::Bool(false) => Err(ConstraintError::InvalidSchema(
            "the schema `false` accepts no value".to_string(),
        )),
        _ => Err(ConstraintError::InvalidSchema(
            "a JSON schema must be an object or a boolean".to_string(),
        )),
    }
}

/// The matcher state of one sequence: which tokens may come next.
///
/// Per step: [`mask_logits`](Self::mask_logits), sample, then
/// [`commit`](Self::commit) the sampled token. Once
/// [`is_finished`](Self::is_finished), only end-of-generation tokens are
/// allowed.
pub struct Constraint {
    matcher: Matcher,
    /// The allowed set computed for the current position, until a commit.
    allowed: Option<SimpleVob>,
    eog: Arc<[u32]>,
    vocab_size: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("finished", &self.is_finished())
            .field("error", &self.matcher.get_error())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// The allowed set at the current position, computed once per position.
    fn allowed(&mut self) -> Result<&SimpleVob, ConstraintError> {
        match &mut self.allowed {
            Some(set) => Ok(set),
            slot @ None => {
                if let Some(error) = self.matcher.get_error() {
                    return Err(ConstraintError::Internal(error));
                }
                let set = self
                    .matcher
                    .compute_mask_or_eos()
                    .map_err(|e| ConstraintError::Internal(clean_message(&e)))?;
                Ok(slot.insert(set))
            }
        }
    }

    /// Sets the logits of every token the grammar does not allow here to
    /// `-inf` (and of every index past the vocabulary). Errors, leaving the
    /// logits unspecified, when no token would remain with a finite logit.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let vocab_size = self.vocab_size;
        let allowed = self.allowed()?;
        let words = allowed.as_slice();
        let known = logits.len().min(vocab_size);
        let (inside, outside) = logits.split_at_mut(known);
        outside.fill(f32::NEG_INFINITY);
        let mut any_finite = false;
        for (chunk, values) in inside.chunks_mut(32).enumerate() {
            let bits = words.get(chunk).copied().unwrap_or(0);
            if bits == 0 {
                values.fill(f32::NEG_INFINITY);
                continue;
            }
            for (bit, value) in values.iter_mut().enumerate() {
                if bits & (1 << bit) == 0 {
                    *value = f32::NEG_INFINITY;
                } else if *value > f32::NEG_INFINITY {
                    any_finite = true;
                }
            }
        }
        if any_finite {
            Ok(())
        } else {
            Err(ConstraintError::Internal(
                "no token allowed by the constraint has a finite logit".to_string(),
            ))
        }
    }

    /// Advances past `token`. Errors, leaving the state unchanged, when the
    /// grammar does not allow `token` here. After the grammar is complete an
    /// end-of-generation token is accepted and changes nothing.
    pub fn commit(&mut self, token: u32) -> Result<(), ConstraintError> {
        let rejected = |reason: &str| ConstraintError::Rejected {
            token,
            reason: reason.to_string(),
        };
        if let Some(error) = self.matcher.get_error() {
            return Err(ConstraintError::Internal(error));
        }
        if token as usize >= self.vocab_size {
            return Err(rejected("outside the vocabulary"));
        }
        if self.is_finished() {
            return if self.eog.contains(&token) {
                Ok(())
            } else {
                Err(rejected(
                    "the output is complete; only end of generation is allowed",
                ))
            };
        }
        match &self.allowed {
            Some(allowed) if !allowed.is_allowed(token) => {
                return Err(rejected("not allowed by the mask at this position"));
            }
            Some(_) => {}
            None => {
                let valid = self
                    .matcher
                    .validate_tokens(&[token])
                    .map_err(|e| ConstraintError::Internal(clean_message(&e)))?;
                if valid == 0 {
                    return Err(rejected("not allowed by the grammar at this position"));
                }
            }
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| rejected(&clean_message(&e)))?;
        self.allowed = None;
        Ok(())
    }

    /// Tokens the grammar forces next, in order (possibly none). Each must
    /// still be [`commit`](Self::commit)ted; they may be evaluated in one
    /// forward pass instead of being sampled.
    pub fn forced_tokens(&mut self) -> Vec<u32> {
        if self.is_finished() {
            return Vec::new();
        }
        self.matcher.compute_ff_tokens()
    }

    /// Whether the grammar is complete: nothing but end of generation may
    /// follow, and generation should stop.
    pub fn is_finished(&self) -> bool {
        !self.matcher.is_error() && self.matcher.is_stopped()
    }

    /// The end-of-generation tokens allowed once the grammar is complete.
    pub fn eog_tokens(&self) -> &[u32] {
        &self.eog
    }
}

impl crate::batch::TokenFilter for Constraint {
    fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
        Constraint::mask_logits(self, logits).map_err(|e| e.to_string())
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        Constraint::commit(self, token).map_err(|e| e.to_string())
    }

    fn is_finished(&self) -> bool {
        Constraint::is_finished(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn factory_is_shared_and_constraint_moves_between_threads() {
        assert_send_sync::<ConstraintFactory>();
        assert_send::<Constraint>();
    }

    #[test]
    fn llguidance_errors_lose_their_state_dump() {
        let error = "Invalid type: nonsense\n<non-verbose/>";
        assert_eq!(clean_message(&error), "Invalid type: nonsense");
    }

    #[test]
    fn schemas_that_are_not_objects_are_rejected() {
        assert!(matches!(
            with_json_options(&serde_json::json!("string")),
            Err(ConstraintError::InvalidSchema(_))
        ));
        assert!(matches!(
            with_json_options(&Value::Bool(false)),
            Err(ConstraintError::InvalidSchema(_))
        ));
        let replaced = with_json_options(&serde_json::json!({
            "type": "string",
            "x-guidance": {"lenient": true}
        }))
        .unwrap();
        assert_eq!(replaced["x-guidance"]["lenient"], Value::Bool(false));
    }
}
