//! `POST /v1/completions`: plain-text continuation of one prompt (a string,
//! or token ids of this model), whole or streamed as `text_completion`
//! chunks.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hearth_engine::Completion;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::filter::FilterChain;
use crate::generation::{self, ChunkFormat, Job, finish_reason, to_json};
use crate::openai::{
    CompletionRequest, HearthInfo, Prompt, TextChoice, TextCompletion, UsageOut, new_id, unix_time,
};
use crate::validate::{self, SamplingInput};

/// OpenAI's default `max_tokens` for text completions.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// `POST /v1/completions`.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    validate::model(&request.model, state.model_id())?;
    validate::single_choice(request.n, "n")?;
    validate::single_choice(request.best_of, "best_of")?;
    if request.logprobs.is_some_and(|n| n != 0) {
        return Err(ApiError::invalid("logprobs", "logprobs are not supported"));
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not supported"));
    }
    let (stream, include_usage) =
        validate::streaming(request.stream, request.stream_options.as_ref())?;
    let max_tokens =
        validate::max_tokens(request.max_tokens, "max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
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
    let vocab_size = state.engine().tokenizer().vocab_size();
    let mut filters = FilterChain::default();
    if let Some(bias) = validate::logit_bias(request.logit_bias.as_ref(), vocab_size)? {
        filters.push(Box::new(bias));
    }

    let one_prompt = || {
        ApiError::invalid(
            "prompt",
            "exactly one prompt per request is supported (n prompts need n requests)",
        )
    };
    let tokenizer = state.engine().tokenizer().clone();
    let (prompt_text, prompt_tokens) = match request.prompt {
        Prompt::Text(text) => tokio::task::spawn_blocking(move || {
            let tokens = tokenizer.encode(&text, true, false);
            (text, tokens)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("tokenizing task: {e}")))?,
        Prompt::Texts(mut texts) if texts.len() == 1 => {
            let text = texts.pop().unwrap_or_default();
            tokio::task::spawn_blocking(move || {
                let tokens = tokenizer.encode(&text, true, false);
                (text, tokens)
            })
            .await
            .map_err(|e| ApiError::Internal(format!("tokenizing task: {e}")))?
        }
        Prompt::Tokens(tokens) => {
            if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token {bad} is not in this model's vocabulary (0..{vocab_size})"),
                ));
            }
            (tokenizer.decode(&tokens), tokens)
        }
        Prompt::Texts(_) | Prompt::TokenLists(_) => return Err(one_prompt()),
    };
    let job = Job {
        prompt_tokens,
        max_tokens: Some(max_tokens),
        sampling,
        stop: request.stop.map(|s| s.into_strings()).unwrap_or_default(),
        filter: filters.into_filter(),
        kind: hearth_core::telemetry::EventKind::Completion,
    };
    let running = generation::submit(&state, job, "prompt", arrived)?;
    let echo = request.echo.unwrap_or(false).then_some(prompt_text);
    let id = new_id("cmpl");
    let created = unix_time();
    let model = state.model_id().to_owned();
    if stream {
        let format = TextChunks {
            id,
            created,
            model,
            include_usage,
            echo,
        };
        return Ok(generation::sse_response(running, format));
    }
    let (text, completion) = running.collect().await?;
    let headers = generation::result_headers(completion.max_tokens_clamped_to);
    let text = match echo {
        Some(prompt) => prompt + &text,
        None => text,
    };
    let body = TextCompletion {
        id,
        object: "text_completion",
        created,
        model,
        choices: vec![TextChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason: Some(finish_reason(completion.finish_reason)),
        }],
        usage: Some(Some(completion.usage.into())),
        hearth: Some(HearthInfo::from_completion(&completion)),
    };
    Ok((headers, Json(body)).into_response())
}

/// Writes `text_completion` chunks.
struct TextChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// The prompt, sent first when `echo` is set.
    echo: Option<String>,
}

impl TextChunks {
    fn chunk(&self, text: String, finish: Option<&'static str>) -> TextCompletion {
        TextCompletion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
            hearth: None,
        }
    }
}

impl ChunkFormat for TextChunks {
    fn opening(&mut self) -> Vec<String> {
        match self.echo.take() {
            Some(prompt) => vec![to_json(&self.chunk(prompt, None))],
            None => Vec::new(),
        }
    }

    fn text(&mut self, text: String) -> Vec<String> {
        vec![to_json(&self.chunk(text, None))]
    }

    fn closing(&mut self, completion: &Completion) -> Vec<String> {
        let mut last = self.chunk(String::new(), Some(finish_reason(completion.finish_reason)));
        last.hearth = Some(HearthInfo::from_completion(completion));
        let mut chunks = vec![to_json(&last)];
        if self.include_usage {
            let mut usage = self.chunk(String::new(), None);
            usage.choices.clear();
            usage.usage = Some(Some(UsageOut::from(completion.usage)));
            chunks.push(to_json(&usage));
        }
        chunks
    }
}
