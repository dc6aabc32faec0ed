//! Splitting text at special-token texts before the model's tokenizer runs.
//!
//! Special tokens are applied one after another, longest text first; each
//! one splits every remaining text fragment at its non-overlapping
//! occurrences, scanning left to right. Rather than searching every
//! fragment for every special token (Gemma has thousands), all occurrences
//! of all special texts are found in one pass over the input with a trie,
//! and only the tokens that occur are applied.

use std::collections::HashMap;
use std::ops::Range;

use super::vocab::{Vocab, attr};

/// A piece of the input: text still to tokenize, or a special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// A byte trie over special-token texts.
#[derive(Debug, Default)]
struct Trie {
    /// `(node, byte) -> child node`; node 0 is the root.
    edges: HashMap<(u32, u8), u32>,
    /// The token ending at each node, if any.
    token_at: Vec<Option<u32>>,
}

impl Trie {
    fn insert(&mut self, text: &[u8], token: u32) {
        if self.token_at.is_empty() {
            self.token_at.push(None);
        }
        let mut node = 0u32;
        for &b in text {
            let next = self.token_at.len() as u32;
            node = *self.edges.entry((node, b)).or_insert(next);
            if node == next {
                self.token_at.push(None);
            }
        }
        if let Some(slot) = self.token_at.get_mut(node as usize) {
            slot.get_or_insert(token);
        }
    }

    /// Calls `found(token)` for every special text that starts at `text[0]`.
    fn matches_at(&self, text: &[u8], mut found: impl FnMut(u32)) {
        if self.token_at.is_empty() {
            return;
        }
        let mut node = 0u32;
        for &b in text {
            match self.edges.get(&(node, b)) {
                Some(&next) => node = next,
                None => return,
            }
            if let Some(Some(token)) = self.token_at.get(node as usize) {
                found(*token);
            }
        }
    }
}

/// The special tokens of a vocabulary, ready to split text.
#[derive(Debug, Default)]
pub(crate) struct SpecialSplitter {
    /// Control and unknown tokens: split only when parsing specials.
    control: Trie,
    /// User-defined tokens: always split.
    user_defined: Trie,
}

impl SpecialSplitter {
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut splitter = Self::default();
        for (id, (text, &a)) in vocab.texts.iter().zip(&vocab.attrs).enumerate() {
            if a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                splitter.control.insert(text.as_bytes(), id as u32);
            } else if a & attr::USER_DEFINED != 0 {
                splitter.user_defined.insert(text.as_bytes(), id as u32);
            }
        }
        splitter
    }

    /// Splits `text`; control and unknown token texts are recognised only
    /// when `parse_special`, user-defined ones always.
    pub(crate) fn split(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let bytes = text.as_bytes();
        // Every occurrence of every special text, by token.
        let mut occurrences: HashMap<u32, Vec<usize>> = HashMap::new();
        for start in 0..bytes.len() {
            if !text.is_char_boundary(start) {
                continue;
            }
            let mut record = |token| occurrences.entry(token).or_default().push(start);
            self.user_defined.matches_at(&bytes[start..], &mut record);
            if parse_special {
                self.control.matches_at(&bytes[start..], &mut record);
            }
        }
        let mut fragments = vec![Fragment::Text(0..bytes.len())];
        if occurrences.is_empty() {
            return fragments;
        }
        let mut order: Vec<(u32, Vec<usize>)> = occurrences.into_iter().collect();
        order.sort_by_key(|(id, _)| (std::cmp::Reverse(vocab.texts[*id as usize].len()), *id));
        for (id, starts) in order {
            let len = vocab.texts[id as usize].len();
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut cursor = range.start;
                let first = starts.partition_point(|&s| s < range.start);
                for &start in &starts[first..] {
                    if start + len > range.end {
                        break;
                    }
                    if start < cursor {
                        continue;
                    }
                    if start > cursor {
                        next.push(Fragment::Text(cursor..start));
                    }
                    next.push(Fragment::Token(id));
                    cursor = start + len;
                }
                if cursor < range.end {
                    next.push(Fragment::Text(cursor..range.end));
                }
            }
            fragments = next;
        }
        fragments
    }
}
