//! The continuous-batching scheduler on the real SmolLM2: batched streams
//! give the single-sequence engine's tokens, prefixes are reused, the pool
//! survives preemption, cancellation frees blocks, the queue is bounded.

use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use hearth_engine::{
    BatchConfig, BatchEngine, BatchRequest, Completion, Event, EventSink, FinishReason,
    GenerateRequest, SamplingParams, SubmitError,
};
use hearth_models::ChatMessage;

use crate::support::smollm2;

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "How many legs does a spider have?",
];

fn chat(user: &str) -> Vec<u32> {
    let engine = smollm2();
    engine
        .encode_chat(&[ChatMessage::new("user", user)])
        .unwrap()
}

fn request(prompt: Vec<u32>, max_tokens: usize, sink: Box<dyn EventSink>) -> BatchRequest {
    BatchRequest {
        prompt_tokens: prompt,
        max_tokens: Some(max_tokens),
        sampling: SamplingParams::default(),
        stop: Vec::new(),
        filter: None,
        sink,
    }
}

/// Waits for a request's end; returns its tokens, text and completion.
fn collect(rx: &Receiver<Event>) -> (Vec<u32>, String, Completion) {
    let (mut tokens, mut text) = (Vec::new(), String::new());
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).expect("event") {
            Event::Token { id, text: t } => {
                tokens.push(id);
                text.push_str(&t);
            }
            Event::Text(t) => text.push_str(&t),
            Event::Done(c) => return (tokens, text, c),
            Event::Error(e) => panic!("request failed: {e}"),
        }
    }
}

fn solo(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let engine = smollm2();
    let mut seq = engine.new_sequence(1024);
    let req = GenerateRequest {
        prompt_tokens: prompt.to_vec(),
        max_tokens,
        sampling: SamplingParams::default(),
        stop: Vec::new(),
    };
    engine
        .generate(&mut seq, &req, &mut |_| true)
        .unwrap()
        .tokens
}

fn start(config: BatchConfig) -> BatchEngine {
    BatchEngine::start(smollm2(), config).unwrap()
}

#[test]
fn concurrent_streams_match_single_sequence_generation() {
    let batch = start(BatchConfig {
        context: 1024,
        ..BatchConfig::default()
    });
    let receivers: Vec<_> = PROMPTS
        .iter()
        .map(|p| {
            let (tx, rx) = channel();
            batch.submit(request(chat(p), 24, Box::new(tx))).unwrap();
            rx
        })
        .collect();
    for (p, rx) in PROMPTS.iter().zip(&receivers) {
        let (tokens, text, done) = collect(rx);
        assert_eq!(tokens, solo(&chat(p), 24), "prompt {p:?}: {text:?}");
        assert_eq!(done.usage.completion_tokens, tokens.len());
        assert_eq!(done.usage.prompt_tokens, chat(p).len());
    }
    let stats = batch.stats();
    assert!(
        stats.steps < 4 * 25,
        "streams shared forward steps: {} steps for 4 x 24 tokens",
        stats.steps
    );
    assert_eq!(stats.kv_blocks_used, 0, "every block released");
}

#[test]
fn shared_prefix_blocks_are_reused_across_requests() {
    let batch = start(BatchConfig {
        context: 1024,
        block_size: 16,
        ..BatchConfig::default()
    });
    let engine = smollm2();
    let system = "You are a concise assistant for a home weather station on a \
                  hill above the harbour. You read the barometer, the rain gauge, \
                  the wind vane and the thermometer. Answer in one short sentence, \
                  never use lists, and say when a reading is missing.";
    let prompt = |user: &str| {
        engine
            .encode_chat(&[
                ChatMessage::new("system", system),
                ChatMessage::new("user", user),
            ])
            .unwrap()
    };
    let first = prompt("Is it going to rain?");
    let second = prompt("What is the humidity?");
    let shared = first
        .iter()
        .zip(&second)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared >= 32, "the system prompt spans whole blocks");

    let (tx, rx) = channel();
    batch
        .submit(request(first.clone(), 8, Box::new(tx)))
        .unwrap();
    let (_, _, done) = collect(&rx);
    assert_eq!(done.usage.cached_prompt_tokens, 0);

    let (tx, rx) = channel();
    batch
        .submit(request(second.clone(), 16, Box::new(tx)))
        .unwrap();
    let (tokens, _, done) = collect(&rx);
    let cached = done.usage.cached_prompt_tokens;
    assert!((shared / 16 * 16..=shared).contains(&cached), "{cached}");
    assert_eq!(
        tokens,
        solo(&second, 16),
        "cached keys give the same continuation"
    );
    assert!(batch.stats().prefix_cache_hit_tokens >= (shared / 16 * 16) as u64);

    // Two new questions at once: the second waits for the first to publish
    // the shared blocks instead of computing them again.
    let other_system = format!(
        "{system} Always mention the time of the last reading, and if the \
         readings disagree with each other, say which instrument you trust \
         more and why, in plain words a neighbour would understand."
    );
    let prompt2 = |user: &str| {
        engine
            .encode_chat(&[
                ChatMessage::new("system", other_system.as_str()),
                ChatMessage::new("user", user),
            ])
            .unwrap()
    };
    let third = prompt2("Is it foggy by the harbour?");
    let fourth = prompt2("How strong is the wind?");
    let shared = third
        .iter()
        .zip(&fourth)
        .take_while(|(a, b)| a == b)
        .count();
    let (tx3, rx3) = channel();
    let (tx4, rx4) = channel();
    batch.submit(request(third, 4, Box::new(tx3))).unwrap();
    batch
        .submit(request(fourth.clone(), 8, Box::new(tx4)))
        .unwrap();
    collect(&rx3);
    let (tokens, _, done) = collect(&rx4);
    let cached = done.usage.cached_prompt_tokens;
    assert!((shared / 16 * 16..=shared).contains(&cached), "{cached}");
    assert_eq!(tokens, solo(&fourth, 8));
    let before = first
        .iter()
        .zip(&fourth)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        shared / 16 > before / 16,
        "the new part of the system prompt spans whole blocks"
    );
}

#[test]
fn part_of_a_cached_block_is_copied_for_a_prompt_that_diverges_inside_it() {
    let batch = start(BatchConfig {
        context: 256,
        block_size: 16,
        ..BatchConfig::default()
    });
    let first = chat(PROMPTS[3]);
    assert!(first.len() >= 33, "{} tokens", first.len());
    let (tx, rx) = channel();
    batch
        .submit(request(first.clone(), 1, Box::new(tx)))
        .unwrap();
    collect(&rx);
    // Shares 16 + 4 tokens: one whole block and 4 slots of the next.
    let mut second = first[..20].to_vec();
    second.extend(
        smollm2()
            .tokenizer()
            .encode(" banana bread recipe", false, false),
    );
    assert_ne!(second[20], first[20]);
    let (tx, rx) = channel();
    batch
        .submit(request(second.clone(), 8, Box::new(tx)))
        .unwrap();
    let (tokens, _, done) = collect(&rx);
    assert_eq!(done.usage.cached_prompt_tokens, 20);
    assert_eq!(tokens, solo(&second, 8));
}

#[test]
fn a_small_pool_preempts_and_still_completes_every_stream() {
    // 12 blocks of 16 tokens: four 40-token prompts growing by 40 tokens
    // each cannot all be resident at once.
    let batch = start(BatchConfig {
        context: 128,
        block_size: 16,
        kv_blocks: 12,
        ..BatchConfig::default()
    });
    let receivers: Vec<_> = PROMPTS
        .iter()
        .map(|p| {
            let (tx, rx) = channel();
            batch.submit(request(chat(p), 40, Box::new(tx))).unwrap();
            rx
        })
        .collect();
    for (p, rx) in PROMPTS.iter().zip(&receivers) {
        let (tokens, _, done) = collect(rx);
        // A preempted sequence recomputes its keys in one prompt-sized
        // pass, whose sums differ in the last bits from token-by-token
        // decoding, so only the start is compared exactly.
        let expected = solo(&chat(p), 40);
        assert_eq!(tokens[..16], expected[..16], "prompt {p:?}");
        assert!(
            done.finish_reason == FinishReason::Stop || tokens.len() == 40,
            "{done:?}"
        );
    }
    let stats = batch.stats();
    assert!(stats.preemptions > 0, "the pool was too small for all four");
    assert_eq!(stats.kv_blocks_used, 0);
}

/// A client that goes away after a few tokens.
struct Impatient {
    tx: std::sync::mpsc::Sender<Event>,
    left: usize,
}

impl EventSink for Impatient {
    fn send(&mut self, event: Event) -> bool {
        let _ = self.tx.send(event);
        self.left = self.left.saturating_sub(1);
        self.left > 0
    }

    fn is_closed(&self) -> bool {
        self.left == 0
    }
}

#[test]
fn a_client_that_leaves_is_cancelled_and_its_blocks_freed() {
    let batch = start(BatchConfig {
        context: 1024,
        ..BatchConfig::default()
    });
    let (tx, rx) = channel();
    let sink = Impatient { tx, left: 3 };
    batch
        .submit(request(chat(PROMPTS[1]), 500, Box::new(sink)))
        .unwrap();
    let (tokens, _, done) = collect(&rx);
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    assert_eq!(tokens.len(), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while batch.stats().kv_blocks_used != 0 {
        assert!(Instant::now() < deadline, "blocks were not released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_queue_is_bounded_and_bad_requests_are_refused_up_front() {
    let batch = start(BatchConfig {
        context: 256,
        max_queue: 2,
        max_running: 1,
        ..BatchConfig::default()
    });
    let mut receivers = Vec::new();
    let mut full = 0;
    for _ in 0..12 {
        let (tx, rx) = channel();
        match batch.submit(request(chat(PROMPTS[0]), 16, Box::new(tx))) {
            Ok(()) => receivers.push(rx),
            Err(SubmitError::QueueFull(2)) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full > 0, "a full queue refuses requests");
    for rx in &receivers {
        collect(rx);
    }

    let (tx, _rx) = channel();
    let err = batch
        .submit(request(vec![1; 300], 4, Box::new(tx)))
        .unwrap_err();
    assert!(err.to_string().contains("44 too many"), "{err}");
    let (tx, _rx) = channel();
    let err = batch.submit(request(vec![], 4, Box::new(tx))).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let (tx, _rx) = channel();
    let err = batch
        .submit(request(chat(PROMPTS[0]), 0, Box::new(tx)))
        .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");

    // max_tokens beyond the context is clamped and reported.
    let prompt = chat(PROMPTS[2]);
    let room = 256 - prompt.len();
    let (tx, rx) = channel();
    batch.submit(request(prompt, 10_000, Box::new(tx))).unwrap();
    let (_, _, done) = collect(&rx);
    assert_eq!(done.max_tokens_clamped_to, Some(room));
}

/// Tags every event with the request it belongs to.
struct Tagged {
    tag: usize,
    tx: std::sync::mpsc::Sender<(usize, Event)>,
}

impl EventSink for Tagged {
    fn send(&mut self, event: Event) -> bool {
        self.tx.send((self.tag, event)).is_ok()
    }
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks_while_running_streams_keep_decoding() {
    let batch = start(BatchConfig {
        context: 2048,
        step_tokens: 256,
        ..BatchConfig::default()
    });
    let (tx, rx) = channel();
    let sink = Tagged {
        tag: 0,
        tx: tx.clone(),
    };
    batch
        .submit(request(chat(PROMPTS[1]), 200, Box::new(sink)))
        .unwrap();
    // Wait until the first stream is decoding.
    let (tag, first) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(tag == 0 && matches!(first, Event::Token { .. }));

    let words = "the quick brown fox jumps over the lazy dog ".repeat(70);
    let long = chat(&words);
    assert!(long.len() > 600, "{} tokens", long.len());
    let sink = Tagged { tag: 1, tx };
    batch
        .submit(request(long.clone(), 1, Box::new(sink)))
        .unwrap();
    let mut tokens_meanwhile = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).unwrap() {
            (0, Event::Token { .. }) => tokens_meanwhile += 1,
            (0, Event::Done(_)) => panic!("the first stream ended before the long prompt was read"),
            (1, Event::Token { .. } | Event::Done(_)) => break,
            (_, Event::Error(e)) => panic!("{e}"),
            _ => {}
        }
    }
    // The long prompt takes at least len/256 steps; the stream gets a token in each.
    assert!(
        tokens_meanwhile + 1 >= long.len() / 256,
        "{tokens_meanwhile} tokens streamed during a {}-token prefill",
        long.len()
    );
}
