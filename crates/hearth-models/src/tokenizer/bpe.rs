//! Byte-level BPE (GPT-2 style): words are byte-encoded to printable
//! characters, then the lowest-ranked adjacent pair is merged until no
//! ranked pair is left.
//!
//! The merge loop keeps the symbols of a word in a linked list and the
//! candidate pairs in a priority queue (lowest rank, then leftmost first),
//! so a word of n characters costs O(n log n). Merge components are
//! interned so that looking a pair up hashes two integers, not strings.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::pretokenize::PreTokenizer;
use super::unicode::byte_encode_into;
use super::vocab::Vocab;
use crate::error::{ModelError, Result};
use crate::gguf::MetaValue;

/// Merge ranks and the pre-tokenizer of a byte-level BPE vocabulary.
#[derive(Debug)]
pub(crate) struct BytePairEncoder {
    pre: PreTokenizer,
    /// Merge component text -> interned id.
    interned: HashMap<String, u32>,
    /// (left, right) interned ids -> rank (lower merges first).
    ranks: HashMap<(u32, u32), u32>,
}

/// One symbol of the word being merged: a byte range and its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl BytePairEncoder {
    /// Builds the encoder from `tokenizer.ggml.merges` ("left right" strings,
    /// in rank order; a pair listed twice keeps its first rank).
    pub(crate) fn new(merges: &[MetaValue], pre: PreTokenizer) -> Result<Self> {
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut ranks = HashMap::with_capacity(merges.len());
        let mut intern = |s: &str| -> u32 {
            let next = interned.len() as u32;
            *interned.entry(s.to_string()).or_insert(next)
        };
        for (rank, merge) in merges.iter().enumerate() {
            let merge = merge.as_str().ok_or_else(|| {
                ModelError::Tokenizer(format!("tokenizer.ggml.merges[{rank}] is not a string"))
            })?;
            // The separator is the first space after the first byte.
            let bytes = merge.as_bytes();
            let Some(split) = bytes.iter().skip(1).position(|&b| b == b' ').map(|i| i + 1) else {
                continue;
            };
            let (left, right) = (&merge[..split], &merge[split + 1..]);
            let key = (intern(left), intern(right));
            ranks.entry(key).or_insert(rank as u32);
        }
        Ok(Self {
            pre,
            interned,
            ranks,
        })
    }

    fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let left = self.interned.get(left)?;
        let right = self.interned.get(right)?;
        self.ranks.get(&(*left, *right)).copied()
    }

    /// Tokenizes one fragment of plain text (no special tokens) into `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut word = String::new();
        let mut symbols = Vec::new();
        let mut queue = BinaryHeap::new();
        for piece in self.pre.split(text) {
            word.clear();
            byte_encode_into(piece, &mut word);
            self.encode_word(vocab, &word, &mut symbols, &mut queue, out);
        }
    }

    /// Merges one byte-encoded word and appends its tokens. A final symbol
    /// that is not in the vocabulary falls back to the tokens of its
    /// single bytes (those that exist).
    fn encode_word(
        &self,
        vocab: &Vocab,
        word: &str,
        symbols: &mut Vec<Symbol>,
        queue: &mut BinaryHeap<Reverse<(u32, usize, usize, usize)>>,
        out: &mut Vec<u32>,
    ) {
        if word.is_empty() {
            return;
        }
        if self.pre.ignore_merges
            && let Some(id) = vocab.id(word)
        {
            out.push(id);
            return;
        }
        symbols.clear();
        queue.clear();
        for (start, c) in word.char_indices() {
            let index = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: index.checked_sub(1),
                next: (start + c.len_utf8() < word.len()).then_some(index + 1),
            });
        }
        let text = |s: &Symbol| &word[s.start..s.start + s.len];
        // Queue entries: (rank, left index, left len, right len); an entry
        // is stale once either symbol changed length.
        let push_pair = |symbols: &[Symbol], queue: &mut BinaryHeap<_>, left: usize| {
            let Some(right) = symbols[left].next else {
                return;
            };
            let (l, r) = (&symbols[left], &symbols[right]);
            if let Some(rank) = self.rank(text(l), text(r)) {
                queue.push(Reverse((rank, left, l.len, r.len)));
            }
        };
        for left in 0..symbols.len() {
            push_pair(symbols, queue, left);
        }
        while let Some(Reverse((_, left, left_len, right_len))) = queue.pop() {
            let Some(right) = symbols[left].next else {
                continue;
            };
            if symbols[left].len != left_len
                || symbols[right].len != right_len
                || left_len == 0
                || right_len == 0
            {
                continue;
            }
            let merged_next = symbols[right].next;
            symbols[left].len += right_len;
            symbols[left].next = merged_next;
            symbols[right].len = 0;
            if let Some(next) = merged_next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = symbols[left].prev {
                push_pair(symbols, queue, prev);
            }
            push_pair(symbols, queue, left);
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let symbol = symbols[i];
            let piece = text(&symbol);
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        let single = [b];
                        if let Some(id) =
                            std::str::from_utf8(&single).ok().and_then(|s| vocab.id(s))
                        {
                            out.push(id);
                        }
                    }
                }
            }
            at = symbol.next;
        }
    }
}
