//! Stop strings over streamed text.
//!
//! Text that could still turn into a stop string is held back, so a stream
//! never shows a client the first half of a stop sequence.

use hearth_models::Tokenizer;
use hearth_models::tokenizer::StreamDecoder;

/// Generated tokens to text: holds back incomplete UTF-8 and anything that
/// could still become a stop string.
#[derive(Debug, Default)]
pub struct TextStream {
    decoder: StreamDecoder,
    stops: StopMatcher,
}

impl TextStream {
    pub fn new(stops: &[String]) -> Self {
        Self {
            decoder: StreamDecoder::new(),
            stops: StopMatcher::new(stops),
        }
    }

    /// Adds a generated token.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> StopCheck {
        let piece = self.decoder.push(tokenizer, id);
        self.stops.push(&piece)
    }

    /// Releases what was held back when generation ends other than by a
    /// stop string.
    pub fn finish(&mut self) -> String {
        let tail = self.decoder.finish();
        let check = self.stops.push(&tail);
        let mut rest = check.emit;
        if !check.stopped {
            rest.push_str(&self.stops.finish());
        }
        rest
    }

    /// All text so far, cut at the stop string if one matched.
    pub fn text(&self) -> &str {
        self.stops.text()
    }
}

/// Watches generated text for stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCheck {
    /// Text that is now safe to show.
    pub emit: String,
    /// A stop string matched; generation should end.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds newly decoded text.
    pub fn push(&mut self, piece: &str) -> StopCheck {
        let search_from = self.emitted.saturating_sub(self.longest_stop());
        self.text.push_str(piece);
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.text[floor_boundary(&self.text, search_from)..].find(s.as_str()))
            .min()
            .map(|i| i + floor_boundary(&self.text, search_from));
        if let Some(at) = found {
            let emit = self.text[self.emitted.min(at)..at].to_string();
            self.text.truncate(at);
            self.emitted = at;
            return StopCheck {
                emit,
                stopped: true,
            };
        }
        let hold = self.partial_suffix();
        let safe = floor_boundary(&self.text, self.text.len() - hold);
        let emit = if safe > self.emitted {
            self.text[self.emitted..safe].to_string()
        } else {
            String::new()
        };
        self.emitted = self.emitted.max(safe);
        StopCheck {
            emit,
            stopped: false,
        }
    }

    /// Releases held-back text at the end of generation.
    pub fn finish(&mut self) -> String {
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        rest
    }

    /// All text so far, cut at the stop string if one matched.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn longest_stop(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }

    /// Length of the longest suffix of the text that is a proper prefix of a stop string.
    fn partial_suffix(&self) -> usize {
        let bytes = self.text.as_bytes();
        self.stops
            .iter()
            .map(|s| {
                let s = s.as_bytes();
                (1..s.len().min(bytes.len() + 1))
                    .rev()
                    .find(|&n| bytes.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let c = m.push(p);
            out.push_str(&c.emit);
            if c.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_split_across_pieces_is_never_shown() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there\nUs", "er: more"]),
            ("Hi there".to_string(), true)
        );
    }

    #[test]
    fn held_back_text_is_released_when_it_does_not_match() {
        assert_eq!(
            run(&["STOP"], &["a ST", "x", " b"]),
            ("a STx b".to_string(), false)
        );
        assert_eq!(
            run(&["STOP"], &["ends with ST"]),
            ("ends with ST".to_string(), false)
        );
    }

    #[test]
    fn earliest_stop_wins_and_unicode_is_safe() {
        assert_eq!(run(&["b", "é"], &["aébc"]), ("a".to_string(), true));
        assert_eq!(run(&[], &["日本", "語"]), ("日本語".to_string(), false));
    }
}
