//! Pre-tokenizers of byte-level BPE models: split text into words before
//! merges run, as `tokenizer.ggml.pre` asks.
//!
//! Each pre-tokenizer is a list of stages applied in turn, each one
//! splitting every piece of the previous stage (a stage never looks across
//! piece boundaries). The GPT-2 and Llama 3 patterns are hand-written
//! scanners that follow the regular expressions' leftmost-alternative
//! semantics; the simple stages (`\p{N}`, `\p{N}+`, ...) keep the text
//! between matches as pieces of its own, as a regex split does.

use std::ops::Range;

use super::unicode::{is_letter, is_number, is_punctuation, is_whitespace};

/// One splitting stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// The Llama 3 pattern: case-insensitive contractions,
    /// `[^\r\n\p{L}\p{N}]?\p{L}+`, numbers in groups of at most `max_digits`,
    /// ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
    Llama3 { max_digits: usize },
    /// `\p{N}`: every number character alone.
    EachNumber,
    /// `\p{N}+`: runs of number characters.
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+`: runs of punctuation and some symbols.
    PunctuationRuns,
    /// `[0-9][0-9][0-9]`: groups of three ASCII digits.
    ThreeDigits,
}

/// A pre-tokenizer: its stages, and the flags its name implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreTokenizer {
    stages: Vec<Stage>,
    /// A word that is itself a vocabulary token is emitted without merges.
    pub(crate) ignore_merges: bool,
    /// Whether BOS is added when the metadata does not say.
    pub(crate) default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (empty: `default`),
    /// or `None` when the name is not supported.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        let make = |stages: Vec<Stage>| Self {
            stages,
            ignore_merges: false,
            default_add_bos: false,
        };
        let llama3 = Stage::Llama3 { max_digits: 3 };
        Some(match name {
            "" | "default" => make(vec![
                Stage::PunctuationRuns,
                Stage::Gpt2,
                Stage::NumberRuns,
                Stage::ThreeDigits,
            ]),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => Self {
                stages: vec![llama3],
                ignore_merges: true,
                default_add_bos: true,
            },
            "dbrx" | "smaug-bpe" => make(vec![llama3]),
            "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" => {
                make(vec![Stage::Llama3 { max_digits: 1 }])
            }
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => make(vec![Stage::EachNumber, Stage::Gpt2]),
            "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "exaone4" => {
                make(vec![Stage::Gpt2])
            }
            _ => return None,
        })
    }

    /// Splits `text` into words (slices of `text`, in order, covering it).
    pub(crate) fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::with_capacity(1);
        pieces.push(0..chars.len());
        let mut next = Vec::new();
        for &stage in &self.stages {
            next.clear();
            for piece in &pieces {
                split_piece(stage, &chars, piece.clone(), &mut next);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        // Char ranges to byte ranges.
        let mut byte_at = Vec::with_capacity(chars.len() + 1);
        let mut offset = 0;
        for c in &chars {
            byte_at.push(offset);
            offset += c.len_utf8();
        }
        byte_at.push(offset);
        pieces
            .into_iter()
            .filter(|r| r.start < r.end)
            .filter_map(|r| text.get(byte_at[r.start]..byte_at[r.end]))
            .collect()
    }
}

fn split_piece(stage: Stage, chars: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
    match stage {
        Stage::Gpt2 => Scanner::new(chars, piece, out).gpt2(),
        Stage::Llama3 { max_digits } => Scanner::new(chars, piece, out).llama3(max_digits),
        Stage::EachNumber => split_matches(chars, piece, out, |chars, at, _| {
            is_number(chars[at]).then_some(1)
        }),
        Stage::NumberRuns => split_matches(chars, piece, out, |chars, at, end| {
            run_len(chars, at, end, is_number)
        }),
        Stage::PunctuationRuns => split_matches(chars, piece, out, |chars, at, end| {
            run_len(chars, at, end, |c| {
                is_punctuation(c) || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
            })
        }),
        Stage::ThreeDigits => split_matches(chars, piece, out, |chars, at, end| {
            (at + 3 <= end && chars[at..at + 3].iter().all(char::is_ascii_digit)).then_some(3)
        }),
    }
}

/// The length of the run of `class` characters at `at` (`None` if empty).
fn run_len(chars: &[char], at: usize, end: usize, class: impl Fn(char) -> bool) -> Option<usize> {
    let len = chars[at..end].iter().take_while(|&&c| class(c)).count();
    (len > 0).then_some(len)
}

/// A regex split: `matcher(chars, at, end)` gives the length of a match
/// starting at `at`; matches and the text between them become pieces.
fn split_matches(
    chars: &[char],
    piece: Range<usize>,
    out: &mut Vec<Range<usize>>,
    matcher: impl Fn(&[char], usize, usize) -> Option<usize>,
) {
    let (mut gap_start, mut at) = (piece.start, piece.start);
    while at < piece.end {
        match matcher(chars, at, piece.end) {
            Some(len) if len > 0 => {
                if at > gap_start {
                    out.push(gap_start..at);
                }
                out.push(at..at + len);
                at += len;
                gap_start = at;
            }
            _ => at += 1,
        }
    }
    if gap_start < piece.end {
        out.push(gap_start..piece.end);
    }
}

/// The classes the scanners test, for a position that may lie outside the
/// piece (then nothing matches).
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    in_range: bool,
    letter: bool,
    number: bool,
    whitespace: bool,
}

impl Flags {
    fn of(c: char) -> Self {
        Self {
            in_range: true,
            letter: is_letter(c),
            number: is_number(c),
            whitespace: is_whitespace(c),
        }
    }

    /// `[^\s\p{L}\p{N}]` inside the piece.
    fn other(self) -> bool {
        self.in_range && !(self.whitespace || self.letter || self.number)
    }
}

/// A cursor over one piece that emits words as it advances.
struct Scanner<'a, 'o> {
    chars: &'a [char],
    start: usize,
    end: usize,
    out: &'o mut Vec<Range<usize>>,
    prev_end: usize,
}

impl<'a, 'o> Scanner<'a, 'o> {
    fn new(chars: &'a [char], piece: Range<usize>, out: &'o mut Vec<Range<usize>>) -> Self {
        Self {
            chars,
            start: piece.start,
            end: piece.end,
            out,
            prev_end: piece.start,
        }
    }

    fn char_at(&self, pos: usize) -> Option<char> {
        (self.start <= pos && pos < self.end).then(|| self.chars[pos])
    }

    fn flags(&self, pos: usize) -> Flags {
        self.char_at(pos).map(Flags::of).unwrap_or_default()
    }

    /// Emits the word ending at `end` (nothing if empty).
    fn emit(&mut self, end: usize) {
        if end > self.prev_end {
            self.out.push(self.prev_end..end);
        }
        self.prev_end = end;
    }

    /// Length of `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (ASCII case folded when
    /// `fold_case`), or 0.
    fn contraction(&self, pos: usize, fold_case: bool) -> usize {
        if self.char_at(pos) != Some('\'') {
            return 0;
        }
        let fold = |c: Option<char>| c.map(|c| if fold_case { c.to_ascii_lowercase() } else { c });
        let next = fold(self.char_at(pos + 1));
        if matches!(next, Some('s' | 't' | 'm' | 'd')) {
            return 2;
        }
        match (next, fold(self.char_at(pos + 2))) {
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
            _ => 0,
        }
    }

    /// Length of the whitespace run at `pos`, and the position just after
    /// its last `\r` or `\n` (if any).
    fn whitespace_run(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut after_newline = None;
        while self.flags(pos + n).whitespace {
            if matches!(self.char_at(pos + n), Some('\r' | '\n')) {
                after_newline = Some(pos + n + 1);
            }
            n += 1;
        }
        (n, after_newline)
    }

    /// `\s+(?!\S)|\s+` at `pos` with a run of `n` whitespace characters:
    /// the last one is left for the next word when a non-space follows.
    fn whitespace_end(&self, pos: usize, n: usize) -> usize {
        if n > 1 && self.char_at(pos + n).is_some() {
            pos + n - 1
        } else {
            pos + n
        }
    }

    fn gpt2(mut self) {
        let mut pos = self.start;
        while pos < self.end {
            let c = self.chars[pos];
            let contraction = self.contraction(pos, false);
            if contraction > 0 {
                pos += contraction;
                self.emit(pos);
                continue;
            }
            // ` ?X+` for the three classes.
            let skip_space = usize::from(c == ' ');
            let first = self.flags(pos + skip_space);
            let class: Option<fn(Flags) -> bool> = if first.letter {
                Some(|f| f.letter)
            } else if first.number {
                Some(|f| f.number)
            } else if first.other() {
                Some(Flags::other)
            } else {
                None
            };
            if let Some(class) = class {
                pos += skip_space;
                while class(self.flags(pos)) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            let (n, _) = self.whitespace_run(pos);
            pos = if n > 0 {
                self.whitespace_end(pos, n)
            } else {
                pos + 1
            };
            self.emit(pos);
        }
    }

    fn llama3(mut self, max_digits: usize) {
        let max_digits = max_digits.max(1);
        let mut pos = self.start;
        while pos < self.end {
            let c = self.chars[pos];
            let flags = Flags::of(c);
            let contraction = self.contraction(pos, true);
            if contraction > 0 {
                pos += contraction;
                self.emit(pos);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(c == '\r' || c == '\n' || flags.number)
                && (flags.letter || self.flags(pos + 1).letter)
            {
                pos += 1;
                while self.flags(pos).letter {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            // `\p{N}{1,max_digits}`
            if flags.number {
                let mut group_start = pos;
                while self.flags(pos).number {
                    pos += 1;
                    if pos - group_start >= max_digits {
                        self.emit(pos);
                        group_start = pos;
                    }
                }
                self.emit(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let skip_space = usize::from(c == ' ');
            let next = self.flags(pos + skip_space);
            if !(next.whitespace || next.letter || next.number) {
                pos += skip_space;
                while self.flags(pos).other() {
                    pos += 1;
                }
                while matches!(self.char_at(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            let (n, after_newline) = self.whitespace_run(pos);
            pos = match after_newline {
                // `\s*[\r\n]+`
                Some(end) => end,
                None if n > 0 => self.whitespace_end(pos, n),
                None => pos + 1,
            };
            self.emit(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str, text: &str) -> Vec<String> {
        let pre = PreTokenizer::from_name(name)
            .map(|p| p.split(text))
            .unwrap_or_default();
        pre.into_iter().map(str::to_string).collect()
    }

    #[test]
    fn gpt2_splits_like_the_regex() {
        assert_eq!(
            split("gpt2", "Hello world's  end!!\n\n x 123"),
            [
                "Hello", " world", "'s", " ", " end", "!!", "\n\n", " x", " 123"
            ]
        );
    }

    #[test]
    fn smollm_splits_digits_alone() {
        assert_eq!(
            split("smollm", "a 2024 b"),
            ["a", " ", "2", "0", "2", "4", " b"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines() {
        assert_eq!(
            split("llama-bpe", "I'M 1234567\n\n  hi..\n"),
            [
                "I", "'M", " ", "123", "456", "7", "\n\n", " ", " hi", "..\n"
            ]
        );
    }

    #[test]
    fn qwen2_splits_single_digits() {
        assert_eq!(split("qwen2", "x12"), ["x", "1", "2"]);
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "Ünïcödé\t\u{3000}text 😀👍 — «quotes» 3.14 ½ \r\n";
        for name in ["default", "gpt2", "smollm", "llama-bpe", "qwen2"] {
            assert_eq!(split(name, text).concat(), text, "{name}");
        }
    }
}
