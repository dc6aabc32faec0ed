//! The generation loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hearth_models::{
    CausalLm, ChatMessage, ChatTemplate, GgufFile, KvCache, LoadOptions, Tokenizer,
};

use crate::error::EngineError;
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::TextStream;

/// Prompt tokens evaluated per forward call during prefill: bounds the
/// scratch memory of a long prompt.
pub const PREFILL_CHUNK: usize = 512;

/// A loaded model with its tokenizer and chat template.
pub struct Engine {
    model: Arc<dyn CausalLm>,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", self.model.config())
            .finish()
    }
}

/// One conversation's state: the tokens whose keys and values are cached.
#[derive(Debug)]
pub struct Sequence {
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Sequence {
    /// Tokens currently held in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Most tokens this sequence can hold (prompt and generation).
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Forgets everything (keeps the memory).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<u32>,
    /// Most new tokens; clamped to what the context has room for.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they are not returned.
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Wall-clock figures of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Prompt tokens that were evaluated (those not already cached).
    pub prompt_eval_tokens: usize,
    /// Prompt tokens reused from the cache.
    pub prompt_cached_tokens: usize,
    pub prefill_ms: f64,
    /// From the start of the call to the first sampled token.
    pub ttft_ms: f64,
    /// Time spent evaluating generated tokens.
    pub decode_ms: f64,
    /// Generated tokens that were evaluated (all but the last).
    pub decode_eval_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

/// A streamed piece of output.
#[derive(Debug, Clone, Copy)]
pub struct StreamEvent<'a> {
    /// The token, or `None` for text released at the end of generation.
    pub token: Option<u32>,
    /// Text that became final with this token (may be empty).
    pub text: &'a str,
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    /// Generated token ids (an end-of-generation token is not included).
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    /// The `max_tokens` that was used when the request's was clamped to the context.
    pub max_tokens_clamped_to: Option<usize>,
    pub timings: Timings,
}

impl Engine {
    /// Opens a GGUF model file and builds its tokenizer, template and weights.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self, EngineError> {
        let gguf = GgufFile::open(path)?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&gguf)?);
        let template = ChatTemplate::from_gguf(&gguf)?;
        let model = hearth_models::registry::load_from_gguf(gguf, options)?;
        Ok(Self {
            model,
            tokenizer,
            template,
        })
    }

    pub fn model(&self) -> &Arc<dyn CausalLm> {
        &self.model
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Renders `messages` with the model's chat template (a plain
    /// `role: content` transcript when the model has none).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        match &self.template {
            Some(t) => Ok(t.render(messages, add_generation_prompt)?),
            None => {
                let mut s: String = messages
                    .iter()
                    .map(|m| format!("{}: {}\n", m.role, m.content))
                    .collect();
                if add_generation_prompt {
                    s.push_str("assistant:");
                }
                Ok(s)
            }
        }
    }

    /// Tokenizes a rendered chat prompt (special tokens parsed, BOS added
    /// if the model wants one and the template did not write it).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        let text = self.render_chat(messages, true)?;
        let mut tokens = self.tokenizer.encode(&text, true, true);
        if let (Some(bos), [a, b, ..]) = (self.tokenizer.bos_id(), tokens.as_slice())
            && *a == bos
            && *b == bos
        {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// A sequence that holds up to `context` tokens (capped at the model's
    /// trained context length).
    pub fn new_sequence(&self, context: usize) -> Sequence {
        let context = context.clamp(1, self.model.config().context_length.max(1));
        Sequence {
            cache: self.model.new_cache(context),
            tokens: Vec::new(),
        }
    }

    /// Generates a continuation of `request.prompt_tokens` in `sequence`,
    /// reusing the cached prefix it shares with the previous call. `on_token`
    /// sees each token and the text it finalised; returning `false` cancels.
    pub fn generate(
        &self,
        sequence: &mut Sequence,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(StreamEvent<'_>) -> bool,
    ) -> Result<Generation, EngineError> {
        let start = Instant::now();
        let prompt = &request.prompt_tokens;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let context = sequence.capacity();
        if prompt.len() > context {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: prompt.len(),
                context,
            });
        }
        let mut sampler = Sampler::new(request.sampling.clone())?;
        let room = context - prompt.len();
        let (max_tokens, clamped) = if request.max_tokens > room {
            (room, Some(room))
        } else {
            (request.max_tokens, None)
        };

        // Reuse the longest cached prefix, always evaluating at least one token.
        let shared = sequence
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        sequence.cache.truncate(shared);
        sequence.tokens.truncate(shared);
        let mut logits = Vec::new();
        for chunk in prompt[shared..].chunks(PREFILL_CHUNK) {
            if let Err(e) = self
                .model
                .forward(chunk, &mut sequence.cache, false, &mut logits)
            {
                sequence.reset();
                return Err(e.into());
            }
            sequence.tokens.extend_from_slice(chunk);
        }
        let prefill_ms = start.elapsed().as_secs_f64() * 1e3;

        let mut timings = Timings {
            prompt_eval_tokens: prompt.len() - shared,
            prompt_cached_tokens: shared,
            prefill_ms,
            ..Timings::default()
        };
        let mut history: Vec<u32> = prompt.clone();
        let mut tokens = Vec::new();
        let mut text = TextStream::new(&request.stop);
        let mut finish = FinishReason::Length;
        let mut stopped_by_string = false;
        let decode_start = Instant::now();
        while tokens.len() < max_tokens {
            let token = sampler.sample(&mut logits, &history);
            if tokens.is_empty() {
                timings.ttft_ms = start.elapsed().as_secs_f64() * 1e3;
            }
            if self.tokenizer.is_eog(token) {
                finish = FinishReason::Stop;
                break;
            }
            tokens.push(token);
            history.push(token);
            let check = text.push(&self.tokenizer, token);
            if !on_token(StreamEvent {
                token: Some(token),
                text: &check.emit,
            }) {
                finish = FinishReason::Cancelled;
                break;
            }
            if check.stopped {
                finish = FinishReason::Stop;
                stopped_by_string = true;
                break;
            }
            if tokens.len() == max_tokens {
                break;
            }
            if let Err(e) = self
                .model
                .forward(&[token], &mut sequence.cache, false, &mut logits)
            {
                sequence.reset();
                return Err(e.into());
            }
            sequence.tokens.push(token);
            timings.decode_eval_tokens += 1;
        }
        timings.decode_ms = decode_start.elapsed().as_secs_f64() * 1e3;

        if !stopped_by_string && finish != FinishReason::Cancelled {
            // Release text held back for incomplete UTF-8 or a partial stop string.
            let rest = text.finish();
            if !rest.is_empty() {
                on_token(StreamEvent {
                    token: None,
                    text: &rest,
                });
            }
        }
        if timings.prefill_ms > 0.0 {
            timings.prefill_tok_s = timings.prompt_eval_tokens as f64 / (timings.prefill_ms / 1e3);
        }
        if timings.decode_ms > 0.0 {
            timings.decode_tok_s = timings.decode_eval_tokens as f64 / (timings.decode_ms / 1e3);
        }
        Ok(Generation {
            text: text.text().to_string(),
            tokens,
            finish_reason: finish,
            max_tokens_clamped_to: clamped,
            timings,
        })
    }
}
