//! Running a request on the scheduler, shared by chat and text completions.
//!
//! A request is submitted with a [`ChannelSink`]: the scheduler thread sends
//! [`Event`]s into an unbounded tokio channel and the handler reads them. The
//! handler owns the receiver, so when a client goes away (its response
//! future or SSE body is dropped) the receiver is dropped, the sink reports
//! itself closed and the scheduler cancels the sequence.
//!
//! The endpoints differ only in the JSON of their chunks; [`ChunkFormat`]
//! says how to write them, and [`sse_response`] does the streaming.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use hearth_engine::{
    BatchRequest, Completion, EngineError, Event, EventSink, FinishReason, SamplingParams,
    SubmitError, TokenFilter,
};
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::AppState;
use crate::error::ApiError;
use crate::telemetry::{self, Outcome};
use hearth_core::telemetry::EventKind;

/// The response header that reports a lowered `max_tokens`.
pub const CLAMPED_HEADER: &str = "x-hearth-max-tokens-clamped";

/// A validated generation request.
pub struct Job {
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub filter: Option<Box<dyn TokenFilter>>,
    /// What kind of request this is, for its telemetry event.
    pub kind: EventKind,
}

/// Delivers a request's events into a tokio channel.
struct ChannelSink(UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// What a running request yields to its handler.
pub enum Piece {
    /// Text that became final (never empty).
    Text(String),
    /// The request finished normally.
    Done(Completion),
    /// The request failed; nothing follows.
    Failed(ApiError),
}

/// A submitted request: its event stream and what is known up front.
pub struct Running {
    events: UnboundedReceiver<Event>,
    state: AppState,
    arrived: Instant,
    last_token: Option<Instant>,
    finished: bool,
    kind: EventKind,
    /// `max_tokens` lowered to this to fit the context (known before the
    /// first token: the context and prompt length decide it).
    pub clamped_to: Option<usize>,
}

/// Queues `job`. `prompt_param` names the request field an error about the
/// prompt points at (`messages` or `prompt`); `arrived` is when the request
/// came in, for the time-to-first-token metric.
pub fn submit(
    state: &AppState,
    job: Job,
    prompt_param: &str,
    arrived: Instant,
) -> Result<Running, ApiError> {
    let context = state.batch().config().context;
    let room = context.saturating_sub(job.prompt_tokens.len());
    let clamped_to = job.max_tokens.filter(|&n| n > room).map(|_| room);
    let (sender, events) = unbounded_channel();
    let kind = job.kind;
    let request = BatchRequest {
        prompt_tokens: job.prompt_tokens,
        max_tokens: job.max_tokens,
        sampling: job.sampling,
        stop: job.stop,
        filter: job.filter,
        sink: Box::new(ChannelSink(sender)),
    };
    state.batch().submit(request).map_err(|error| match error {
        SubmitError::QueueFull(waiting) => ApiError::QueueFull { waiting },
        SubmitError::Stopped => ApiError::Unavailable("the server is shutting down".into()),
        SubmitError::Invalid(error @ EngineError::PromptTooLong { .. }) => {
            ApiError::InvalidRequest {
                message: error.to_string(),
                param: Some(prompt_param.to_owned()),
                code: Some("context_length_exceeded"),
            }
        }
        SubmitError::Invalid(error @ EngineError::EmptyPrompt) => {
            ApiError::invalid(prompt_param, error.to_string())
        }
        SubmitError::Invalid(error @ EngineError::InvalidParameter(_)) => {
            ApiError::invalid_body(error.to_string())
        }
        other => ApiError::Internal(format!("submit: {other}")),
    })?;
    Ok(Running {
        events,
        state: state.clone(),
        arrived,
        last_token: None,
        finished: false,
        kind,
        clamped_to,
    })
}

impl Running {
    /// The next piece; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<Piece> {
        if self.finished {
            return None;
        }
        loop {
            let Some(event) = self.events.recv().await else {
                // The scheduler dropped the request without finishing it.
                self.finished = true;
                return Some(Piece::Failed(ApiError::Unavailable(
                    "the server is shutting down".into(),
                )));
            };
            match event {
                Event::Token { text, .. } => {
                    let now = Instant::now();
                    let metrics = self.state.metrics();
                    match self.last_token {
                        None => metrics.record_first_token(now - self.arrived),
                        Some(previous) => metrics.record_next_token(now - previous),
                    }
                    self.last_token = Some(now);
                    if !text.is_empty() {
                        return Some(Piece::Text(text));
                    }
                }
                Event::Text(text) => {
                    if !text.is_empty() {
                        return Some(Piece::Text(text));
                    }
                }
                Event::Done(completion) => {
                    self.finished = true;
                    self.record(Outcome::Done(&completion));
                    if completion.finish_reason == FinishReason::Cancelled {
                        return Some(Piece::Failed(ApiError::Unavailable(
                            "generation was cancelled: the server is shutting down".into(),
                        )));
                    }
                    return Some(Piece::Done(completion));
                }
                Event::Error(message) => {
                    self.finished = true;
                    let error = if self.state.is_shutting_down() {
                        ApiError::Unavailable(format!("generation stopped: {message}"))
                    } else {
                        ApiError::Internal(format!("generation: {message}"))
                    };
                    self.record(Outcome::Failed(error.code().unwrap_or("error")));
                    return Some(Piece::Failed(error));
                }
            }
        }
    }

    fn record(&self, outcome: Outcome<'_>) {
        let latency_ms = self.arrived.elapsed().as_secs_f64() * 1e3;
        telemetry::record_request(&self.state, self.kind, latency_ms, outcome);
    }

    /// Waits for the whole text.
    pub async fn collect(mut self) -> Result<(String, Completion), ApiError> {
        let mut text = String::new();
        while let Some(piece) = self.next().await {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::Done(completion) => return Ok((text, completion)),
                Piece::Failed(error) => return Err(error),
            }
        }
        Err(ApiError::Internal("the event stream ended twice".into()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away before the end.
            self.record(Outcome::Failed("client_disconnected"));
        }
    }
}

/// OpenAI's name for why generation ended.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// The response headers that go with a request's result.
pub fn result_headers(clamped_to: Option<usize>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(n) = clamped_to {
        headers.insert(
            HeaderName::from_static(CLAMPED_HEADER),
            HeaderValue::from(n),
        );
    }
    headers
}

/// How an endpoint writes its stream chunks.
pub trait ChunkFormat: Send + 'static {
    /// Chunks sent before any text (chat announces the role).
    fn opening(&mut self) -> Vec<String>;
    /// The chunks for a piece of text (none while text is held back).
    fn text(&mut self, text: String) -> Vec<String>;
    /// Chunks after the last text: the finish reason, then usage if asked.
    fn closing(&mut self, completion: &Completion) -> Vec<String>;
}

/// Serializes a chunk; the types written here always serialize.
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        eprintln!("hearth-server: cannot serialize a chunk: {e}");
        "{}".to_owned()
    })
}

struct SseState<F> {
    running: Running,
    format: F,
    pending: VecDeque<SseEvent>,
    done: bool,
}

/// Streams `running` as server-sent events: `data: {chunk}` per piece, then
/// `data: [DONE]`. A failure mid-stream is sent as an OpenAI error object.
pub fn sse_response<F: ChunkFormat>(running: Running, mut format: F) -> Response {
    let headers = result_headers(running.clamped_to);
    let pending = format
        .opening()
        .into_iter()
        .map(|data| SseEvent::default().data(data))
        .collect();
    let state = SseState {
        running,
        format,
        pending,
        done: false,
    };
    let events = stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), state));
            }
            if state.done {
                return None;
            }
            match state.running.next().await {
                Some(Piece::Text(text)) => {
                    for data in state.format.text(text) {
                        state.pending.push_back(SseEvent::default().data(data));
                    }
                }
                Some(Piece::Done(completion)) => {
                    for data in state.format.closing(&completion) {
                        state.pending.push_back(SseEvent::default().data(data));
                    }
                    state.pending.push_back(SseEvent::default().data("[DONE]"));
                    state.done = true;
                }
                Some(Piece::Failed(error)) => {
                    state
                        .pending
                        .push_back(SseEvent::default().data(to_json(&error.body())));
                    state.pending.push_back(SseEvent::default().data("[DONE]"));
                    state.done = true;
                }
                None => state.done = true,
            }
        }
    });
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15));
    (headers, Sse::new(events).keep_alive(keep_alive)).into_response()
}
