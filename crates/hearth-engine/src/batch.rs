//! Serving many requests at once: a bounded queue in front of a scheduler
//! thread that runs every admitted sequence in one batched forward per step.
//!
//! Callers submit a [`BatchRequest`] and receive [`Event`]s through the
//! request's [`EventSink`]: one per generated token, then a final
//! [`Event::Done`] (or [`Event::Error`]). A sink that reports itself closed
//! (the client went away) cancels its sequence at the next step.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hearth_models::{BatchSeq, ForwardScratch, KvPool, LogitsWanted};

use crate::blocks::{self, BlockManager};
use crate::error::EngineError;
use crate::generate::{Engine, FinishReason};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::TextStream;

/// Limits of the scheduler.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Requests waiting for admission; a submit beyond this is refused.
    pub max_queue: usize,
    /// Sequences decoding together in one step.
    pub max_running: usize,
    /// Tokens per sequence (prompt and generation), capped at the model's.
    pub context: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the pool (its memory is committed as blocks are used).
    pub kv_blocks: usize,
    /// Most tokens evaluated in one step: long prompts are prefilled in
    /// chunks so running streams keep moving.
    pub step_tokens: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_queue: 64,
            max_running: 16,
            context: 4096,
            block_size: 16,
            kv_blocks: 1024,
            step_tokens: 256,
        }
    }
}

/// A token filter applied before sampling (constrained decoding).
pub trait TokenFilter: Send {
    /// Disallowed tokens' logits become negative infinity.
    fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String>;
    /// Advances past the sampled token.
    fn commit(&mut self, token: u32) -> Result<(), String>;
    /// The constrained text is complete: generation stops.
    fn is_finished(&self) -> bool;
}

/// Where a request's events go. Runs on the scheduler thread: keep it cheap.
pub trait EventSink: Send {
    /// Delivers an event; `false` means the receiver is gone (cancels).
    fn send(&mut self, event: Event) -> bool;
    /// The receiver is gone (checked every step, also during prefill).
    fn is_closed(&self) -> bool {
        false
    }
}

impl EventSink for std::sync::mpsc::Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        std::sync::mpsc::Sender::send(self, event).is_ok()
    }
}

/// One generation request.
pub struct BatchRequest {
    pub prompt_tokens: Vec<u32>,
    /// Most new tokens; `None` means as many as the context leaves. A value
    /// beyond the context is clamped and reported in [`Completion`].
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings.
    pub stop: Vec<String>,
    pub filter: Option<Box<dyn TokenFilter>>,
    pub sink: Box<dyn EventSink>,
}

impl std::fmt::Debug for BatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRequest")
            .field("prompt_tokens", &self.prompt_tokens.len())
            .field("max_tokens", &self.max_tokens)
            .field("sampling", &self.sampling)
            .field("stop", &self.stop)
            .field("constrained", &self.filter.is_some())
            .finish()
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// Set when the request's `max_tokens` did not fit and was lowered.
    pub max_tokens_clamped_to: Option<usize>,
    /// Waiting in the queue, milliseconds.
    pub queue_ms: f64,
    /// Submission to first token, milliseconds.
    pub ttft_ms: f64,
    /// Submission to completion, milliseconds.
    pub total_ms: f64,
}

/// What a request's sink receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token and the text it made final (may be empty).
    Token {
        id: u32,
        text: String,
    },
    /// Text released at the end (held back for UTF-8 or a partial stop string).
    Text(String),
    Done(Completion),
    Error(String),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("the request queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    #[error("the scheduler has stopped")]
    Stopped,
    #[error(transparent)]
    Invalid(#[from] EngineError),
}

/// Counters for monitoring, read without stopping the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    pub queued: usize,
    pub running: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    /// Prompt tokens served from the prefix cache, since start.
    pub prefix_cache_hit_tokens: u64,
    /// Prompt tokens evaluated, since start.
    pub prompt_tokens_evaluated: u64,
    /// Tokens generated, since start.
    pub generated_tokens: u64,
    /// Forward steps run, since start.
    pub steps: u64,
    /// Sequences that gave up their blocks to an older one, since start.
    pub preemptions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicUsize,
    running: AtomicUsize,
    kv_blocks_used: AtomicUsize,
    kv_blocks_total: AtomicUsize,
    prefix_hits: AtomicU64,
    prompt_evaluated: AtomicU64,
    generated: AtomicU64,
    steps: AtomicU64,
    preemptions: AtomicU64,
}

struct Queued {
    request: BatchRequest,
    submitted: Instant,
}

/// The scheduler: owns the model's sequences; requests come through [`submit`](Self::submit).
pub struct BatchEngine {
    engine: Arc<Engine>,
    config: BatchConfig,
    queue: Mutex<Option<SyncSender<Queued>>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for BatchEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl BatchEngine {
    /// Starts the scheduler thread.
    pub fn start(engine: Arc<Engine>, mut config: BatchConfig) -> Result<Self, EngineError> {
        let model_context = engine.model().config().context_length.max(1);
        config.context = config.context.clamp(1, model_context);
        config.max_queue = config.max_queue.max(1);
        config.max_running = config.max_running.max(1);
        config.block_size = config.block_size.max(1);
        // One sequence of the full context must always fit.
        config.kv_blocks = config
            .kv_blocks
            .max(config.context.div_ceil(config.block_size));
        let (tx, rx) = std::sync::mpsc::sync_channel(config.max_queue);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, counters, stop, config) = (
                engine.clone(),
                counters.clone(),
                stop.clone(),
                config.clone(),
            );
            std::thread::Builder::new()
                .name("hearth-scheduler".into())
                .spawn(move || run_scheduler(&engine, &config, &rx, &counters, &stop))
                .map_err(|e| EngineError::InvalidParameter(format!("scheduler thread: {e}")))?
        };
        Ok(Self {
            engine,
            config,
            queue: Mutex::new(Some(tx)),
            counters,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Validates and queues a request. A prompt longer than the context, an
    /// empty prompt or bad sampling parameters are refused here; a full
    /// queue is [`SubmitError::QueueFull`].
    pub fn submit(&self, request: BatchRequest) -> Result<(), SubmitError> {
        if request.prompt_tokens.is_empty() {
            return Err(EngineError::EmptyPrompt.into());
        }
        if request.prompt_tokens.len() > self.config.context {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: request.prompt_tokens.len(),
                context: self.config.context,
            }
            .into());
        }
        request.sampling.validate()?;
        if request.max_tokens == Some(0) {
            return Err(
                EngineError::InvalidParameter("max_tokens must be at least 1".into()).into(),
            );
        }
        let guard = self.queue.lock().map_err(|_| SubmitError::Stopped)?;
        let tx = guard.as_ref().ok_or(SubmitError::Stopped)?;
        self.counters.queued.fetch_add(1, Ordering::SeqCst);
        let queued = Queued {
            request,
            submitted: Instant::now(),
        };
        match tx.try_send(queued) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                Err(SubmitError::QueueFull(self.config.max_queue))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                Err(SubmitError::Stopped)
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> BatchStats {
        let c = &self.counters;
        BatchStats {
            queued: c.queued.load(Ordering::Relaxed),
            running: c.running.load(Ordering::Relaxed),
            kv_blocks_used: c.kv_blocks_used.load(Ordering::Relaxed),
            kv_blocks_total: c.kv_blocks_total.load(Ordering::Relaxed),
            prefix_cache_hit_tokens: c.prefix_hits.load(Ordering::Relaxed),
            prompt_tokens_evaluated: c.prompt_evaluated.load(Ordering::Relaxed),
            generated_tokens: c.generated.load(Ordering::Relaxed),
            steps: c.steps.load(Ordering::Relaxed),
            preemptions: c.preemptions.load(Ordering::Relaxed),
        }
    }

    /// Stops the scheduler after the running requests are cancelled.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for BatchEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A request admitted to the running set.
struct Running {
    request: BatchRequest,
    sampler: Sampler,
    /// Prompt and generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Leading tokens whose keys and values are in `blocks`.
    n_cached: usize,
    blocks: Vec<u32>,
    /// Leading blocks published to the prefix cache, and the hash of the
    /// prefix they hold.
    n_published: usize,
    prefix_hash: u64,
    max_tokens: usize,
    clamped: Option<usize>,
    text: TextStream,
    cached_prompt_tokens: usize,
    submitted: Instant,
    queue_ms: f64,
    ttft_ms: Option<f64>,
    /// Admission order (the youngest is preempted first).
    admitted: u64,
}

impl Running {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    fn finish(mut self, reason: FinishReason, blocks: &mut BlockManager) {
        blocks.release_all(&mut self.blocks);
        if reason != FinishReason::Cancelled {
            let rest = self.text.finish();
            if !rest.is_empty() {
                self.request.sink.send(Event::Text(rest));
            }
        }
        let total_ms = self.submitted.elapsed().as_secs_f64() * 1e3;
        let completion = Completion {
            finish_reason: reason,
            usage: Usage {
                prompt_tokens: self.prompt_len,
                cached_prompt_tokens: self.cached_prompt_tokens,
                completion_tokens: self.generated(),
            },
            max_tokens_clamped_to: self.clamped,
            queue_ms: self.queue_ms,
            ttft_ms: self.ttft_ms.unwrap_or(total_ms),
            total_ms,
        };
        self.request.sink.send(Event::Done(completion));
    }

    fn fail(mut self, message: String, blocks: &mut BlockManager) {
        blocks.release_all(&mut self.blocks);
        self.request.sink.send(Event::Error(message));
    }

    /// Gives up the blocks; the sequence will be prefilled again (prompt
    /// and generated tokens), mostly from the prefix cache.
    fn preempt(&mut self, blocks: &mut BlockManager) {
        blocks.release_all(&mut self.blocks);
        self.n_cached = 0;
        self.n_published = 0;
        self.prefix_hash = blocks::ROOT_HASH;
    }

    /// Publishes every newly filled block to the prefix cache.
    fn publish(&mut self, blocks: &mut BlockManager) {
        let bs = blocks.block_size();
        while (self.n_published + 1) * bs <= self.n_cached {
            let i = self.n_published;
            self.prefix_hash = blocks.register(
                self.blocks[i],
                self.prefix_hash,
                &self.tokens[i * bs..(i + 1) * bs],
            );
            self.n_published += 1;
        }
    }
}

struct Scheduler<'a> {
    engine: &'a Engine,
    config: &'a BatchConfig,
    rx: &'a Receiver<Queued>,
    counters: &'a Counters,
    blocks: BlockManager,
    pool: KvPool,
    scratch: ForwardScratch,
    running: Vec<Running>,
    /// A request taken off the queue that waits for room.
    pending: Option<Queued>,
    admitted: u64,
    logits: Vec<f32>,
}

fn run_scheduler(
    engine: &Engine,
    config: &BatchConfig,
    rx: &Receiver<Queued>,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let pool = engine
        .model()
        .new_kv_pool(config.block_size, config.kv_blocks);
    counters
        .kv_blocks_total
        .store(config.kv_blocks, Ordering::Relaxed);
    let mut s = Scheduler {
        engine,
        config,
        rx,
        counters,
        blocks: BlockManager::new(config.kv_blocks, config.block_size),
        pool,
        scratch: ForwardScratch::default(),
        running: Vec::new(),
        pending: None,
        admitted: 0,
        logits: Vec::new(),
    };
    while !stop.load(Ordering::SeqCst) {
        if s.running.is_empty() && s.pending.is_none() {
            // Idle: wait for work, waking now and then to see `stop`.
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(q) => s.pending = Some(q),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        s.drop_cancelled();
        s.admit();
        s.step();
        s.publish_counts();
    }
    for r in s.running.drain(..) {
        r.fail("the server is shutting down".into(), &mut s.blocks);
    }
}

impl Scheduler<'_> {
    /// Running sequences and blocks in use, for [`BatchEngine::stats`].
    fn publish_counts(&self) {
        self.counters
            .running
            .store(self.running.len(), Ordering::Relaxed);
        self.counters
            .kv_blocks_used
            .store(self.blocks.in_use(), Ordering::Relaxed);
    }

    fn next_queued(&mut self) -> Option<Queued> {
        let q = self.pending.take().or_else(|| self.rx.try_recv().ok())?;
        Some(q)
    }

    /// Removes sequences whose client has gone.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].request.sink.is_closed() {
                let mut r = self.running.swap_remove(i);
                self.blocks.release_all(&mut r.blocks);
                self.publish_counts();
                r.finish(FinishReason::Cancelled, &mut self.blocks);
            } else {
                i += 1;
            }
        }
    }

    /// Moves queued requests into the running set while there is room:
    /// a free slot and blocks for the prompt (less its cached prefix).
    fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(q) = self.next_queued() else {
                return;
            };
            if q.request.sink.is_closed() {
                self.counters.queued.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let bs = self.blocks.block_size();
            let prompt_len = q.request.prompt_tokens.len();
            // Evaluate at least the last prompt token: its logits pick the
            // first generated token.
            let (hit, hash) = self
                .blocks
                .match_prefix(&q.request.prompt_tokens, prompt_len - 1);
            let needed = prompt_len.div_ceil(bs) - hit.len();
            // A sequence still reading a prompt that shares more whole
            // blocks with this one will publish them shortly: wait for them
            // rather than compute the same keys twice.
            let shared_soon = self
                .running
                .iter()
                .filter(|r| r.n_cached < r.prompt_len)
                .map(|r| common_prefix(&r.tokens[..r.prompt_len], &q.request.prompt_tokens))
                .max()
                .unwrap_or(0)
                .min(prompt_len - 1)
                / bs;
            // Leave every running sequence a block to grow into.
            let short = needed + self.running.len() > self.blocks.available();
            if (short || shared_soon > hit.len()) && !self.running.is_empty() {
                let mut hit = hit;
                self.blocks.release_all(&mut hit);
                self.pending = Some(q);
                return;
            }
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
            let Queued { request, submitted } = q;
            let sampler = match Sampler::new(request.sampling.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let mut hit = hit;
                    self.blocks.release_all(&mut hit);
                    let mut sink = request.sink;
                    sink.send(Event::Error(e.to_string()));
                    continue;
                }
            };
            let room = self.config.context - prompt_len;
            let (max_tokens, clamped) = match request.max_tokens {
                Some(m) if m > room => (room, Some(room)),
                Some(m) => (m, None),
                None => (room, None),
            };
            let mut hit = hit;
            let full_blocks = hit.len();
            let mut cached = full_blocks * bs;
            // Part of the next block may be cached too: copy those slots.
            if let Some((src, n)) = self.blocks.match_partial(
                hash,
                &request.prompt_tokens[cached..],
                prompt_len - 1 - cached,
            ) && let Some(dst) = self.blocks.allocate()
            {
                self.pool.copy_block(src, dst, n);
                hit.push(dst);
                cached += n;
            }
            self.counters
                .prefix_hits
                .fetch_add(cached as u64, Ordering::Relaxed);
            self.admitted += 1;
            let text = TextStream::new(&request.stop);
            self.running.push(Running {
                tokens: request.prompt_tokens.clone(),
                prompt_len: request.prompt_tokens.len(),
                request,
                sampler,
                n_cached: cached,
                n_published: full_blocks,
                blocks: hit,
                prefix_hash: hash,
                max_tokens,
                clamped,
                text,
                cached_prompt_tokens: cached,
                queue_ms: submitted.elapsed().as_secs_f64() * 1e3,
                submitted,
                ttft_ms: None,
                admitted: self.admitted,
            });
        }
    }

    /// Gives sequence `i` blocks up to `len` tokens, preempting the youngest
    /// other sequences if the pool is short. `false` if it cannot.
    fn reserve(&mut self, i: usize, len: usize) -> bool {
        let bs = self.blocks.block_size();
        while self.running[i].blocks.len() * bs < len {
            match self.blocks.allocate() {
                Some(b) => self.running[i].blocks.push(b),
                None => {
                    let victim = (0..self.running.len())
                        .filter(|&j| j != i && !self.running[j].blocks.is_empty())
                        .max_by_key(|&j| self.running[j].admitted);
                    match victim {
                        Some(j) if self.running[j].admitted > self.running[i].admitted => {
                            self.running[j].preempt(&mut self.blocks);
                            self.counters.preemptions.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return false,
                    }
                }
            }
        }
        true
    }

    /// One batched forward: a token for every decoding sequence, then
    /// prompt chunks within the step's token budget; then sampling.
    fn step(&mut self) {
        if self.running.is_empty() {
            return;
        }
        // Oldest first: they decode, the rest prefill in admission order.
        self.running.sort_by_key(|r| r.admitted);
        let mut budget = self.config.step_tokens.max(1);
        let mut plan: Vec<(usize, usize)> = Vec::new();
        for i in 0..self.running.len() {
            let r = &self.running[i];
            let todo = r.tokens.len() - r.n_cached;
            let decoding = todo == 1 && r.generated() > 0;
            let take = if decoding { 1 } else { todo.min(budget) };
            if take == 0 || (!decoding && budget == 0) {
                continue;
            }
            let end = r.n_cached + take;
            if !self.reserve(i, end) {
                continue;
            }
            budget = budget.saturating_sub(take);
            plan.push((i, take));
        }
        // A preemption may have emptied a sequence planned earlier.
        plan.retain(|&(i, take)| {
            let r = &self.running[i];
            r.blocks.len() * self.blocks.block_size() >= r.n_cached + take
        });
        if plan.is_empty() {
            // The oldest could not get a block with every other sequence
            // preempted: it alone does not fit.
            if !self.running.is_empty() {
                let r = self.running.remove(0);
                r.fail(
                    "the KV cache is too small for this request".into(),
                    &mut self.blocks,
                );
            }
            return;
        }
        let batch: Vec<BatchSeq<'_>> = plan
            .iter()
            .map(|&(i, take)| {
                let r = &self.running[i];
                BatchSeq {
                    tokens: &r.tokens[r.n_cached..r.n_cached + take],
                    blocks: &r.blocks,
                    pos: r.n_cached,
                    logits: if r.n_cached + take == r.tokens.len() {
                        LogitsWanted::Last
                    } else {
                        LogitsWanted::None
                    },
                }
            })
            .collect();
        self.logits.clear();
        let result = self.engine.model().forward_batch(
            &batch,
            &mut self.pool,
            &mut self.scratch,
            &mut self.logits,
        );
        drop(batch);
        self.counters.steps.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let message = format!("forward pass failed: {e}");
            for r in self.running.drain(..) {
                r.fail(message.clone(), &mut self.blocks);
            }
            return;
        }

        let vocab = self.engine.model().config().vocab_size;
        let mut row = 0;
        let mut done: Vec<(usize, Result<FinishReason, String>)> = Vec::new();
        for &(i, take) in &plan {
            let r = &mut self.running[i];
            let prefill = r.n_cached < r.prompt_len;
            if prefill {
                let evaluated = take.min(r.prompt_len - r.n_cached);
                self.counters
                    .prompt_evaluated
                    .fetch_add(evaluated as u64, Ordering::Relaxed);
            }
            r.n_cached += take;
            r.publish(&mut self.blocks);
            if r.n_cached < r.tokens.len() {
                continue;
            }
            let logits = &mut self.logits[row * vocab..(row + 1) * vocab];
            row += 1;
            let before = r.generated();
            let outcome = sample_next(self.engine, r, logits);
            self.counters
                .generated
                .fetch_add((r.generated() - before) as u64, Ordering::Relaxed);
            if let Some(outcome) = outcome {
                done.push((i, outcome));
            }
        }
        // Remove finished sequences, highest index first.
        done.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, outcome) in done {
            let mut r = self.running.swap_remove(i);
            // Counted before the client hears `Done`.
            self.blocks.release_all(&mut r.blocks);
            self.publish_counts();
            match outcome {
                Ok(reason) => r.finish(reason, &mut self.blocks),
                Err(message) => r.fail(message, &mut self.blocks),
            }
        }
    }
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Samples, streams and checks the end conditions of one sequence whose
/// logits are ready. `None` means it goes on.
fn sample_next(
    engine: &Engine,
    r: &mut Running,
    logits: &mut [f32],
) -> Option<Result<FinishReason, String>> {
    if r.generated() >= r.max_tokens {
        return Some(Ok(FinishReason::Length));
    }
    if let Some(filter) = r.request.filter.as_mut()
        && let Err(e) = filter.mask_logits(logits)
    {
        return Some(Err(format!("constrained decoding failed: {e}")));
    }
    let token = r.sampler.sample(logits, &r.tokens);
    if r.ttft_ms.is_none() {
        r.ttft_ms = Some(r.submitted.elapsed().as_secs_f64() * 1e3);
    }
    let tokenizer = engine.tokenizer();
    if tokenizer.is_eog(token) {
        return Some(Ok(FinishReason::Stop));
    }
    if let Some(filter) = r.request.filter.as_mut()
        && let Err(e) = filter.commit(token)
    {
        return Some(Err(format!("constrained decoding failed: {e}")));
    }
    r.tokens.push(token);
    let check = r.text.push(tokenizer, token);
    let delivered = r.request.sink.send(Event::Token {
        id: token,
        text: check.emit,
    });
    if !delivered {
        return Some(Ok(FinishReason::Cancelled));
    }
    if check.stopped {
        return Some(Ok(FinishReason::Stop));
    }
    if r.request.filter.as_ref().is_some_and(|f| f.is_finished()) {
        return Some(Ok(FinishReason::Stop));
    }
    if r.generated() >= r.max_tokens {
        return Some(Ok(FinishReason::Length));
    }
    None
}
