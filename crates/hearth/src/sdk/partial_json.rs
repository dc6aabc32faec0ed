//! Closing a prefix of a JSON text into valid JSON, so that a value being
//! generated can be shown while it grows.
//!
//! One pass over the prefix tracks the stack of open objects and arrays,
//! whether the scanner is inside a string (and an escape), a number or a
//! literal, and the last point where the text could be cut and closed (after
//! an opening bracket or a complete value). The unfinished tail is kept when
//! it can be completed without guessing (a string value is closed, a number
//! loses a dangling sign, point or exponent, a literal is spelled out);
//! otherwise (a key, a colon, a trailing comma) the text falls back to the
//! last cut point. Every bracket still open is then closed.

/// What the scanner is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Between tokens.
    None,
    /// A string that started at `start` (the opening quote).
    String {
        start: usize,
        is_key: bool,
        /// Where an unfinished escape (`\`, `\u12`) begins.
        escape_at: Option<usize>,
        /// Hex digits still due in a `\u` escape.
        hex_left: u8,
        /// Where a `\uD800`-`\uDBFF` escape begins while its low half is due.
        high_surrogate_at: Option<usize>,
    },
    /// A number that started at `start`.
    Number { start: usize },
    /// `true`, `false` or `null`, started at `start`.
    Literal { start: usize, word: &'static str },
}

/// What may come next, outside any token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object.
    Key,
    /// After a key.
    Colon,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After a value inside a container.
    CommaOrEnd,
    /// The top-level value is complete.
    Done,
}

#[derive(Debug)]
struct Scanner<'a> {
    text: &'a [u8],
    /// Closing bracket of every open container, outermost first.
    stack: Vec<u8>,
    expect: Expect,
    token: Token,
    /// Last position the text can be cut at, with the depth of the stack there.
    cut: Option<(usize, usize)>,
}

impl Scanner<'_> {
    fn value_done(&mut self, end: usize) {
        self.token = Token::None;
        self.expect = if self.stack.is_empty() {
            Expect::Done
        } else {
            Expect::CommaOrEnd
        };
        self.cut = Some((end, self.stack.len()));
    }

    /// Feeds the byte at `i`; `false` stops the scan (the text is not JSON).
    fn feed(&mut self, i: usize, byte: u8) -> bool {
        match self.token {
            Token::String { .. } => {
                self.feed_string(i, byte);
                return true;
            }
            Token::Number { .. } => {
                if matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    return true;
                }
                self.value_done(i);
            }
            Token::Literal { start, word } => {
                let at = i - start;
                if word.as_bytes().get(at) != Some(&byte) {
                    return false;
                }
                if at + 1 == word.len() {
                    self.value_done(i + 1);
                }
                return true;
            }
            Token::None => {}
        }
        if self.expect == Expect::Done {
            return false;
        }
        let wants_value = matches!(self.expect, Expect::Value | Expect::ValueOrEnd);
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'{' | b'[' if wants_value => {
                let (close, expect) = if byte == b'{' {
                    (b'}', Expect::KeyOrEnd)
                } else {
                    (b']', Expect::ValueOrEnd)
                };
                self.stack.push(close);
                self.expect = expect;
                self.cut = Some((i + 1, self.stack.len()));
            }
            b'}' | b']' => {
                let ends = matches!(
                    (byte, self.expect),
                    (b'}', Expect::KeyOrEnd | Expect::CommaOrEnd)
                        | (b']', Expect::ValueOrEnd | Expect::CommaOrEnd)
                );
                if !ends || self.stack.last() != Some(&byte) {
                    return false;
                }
                self.stack.pop();
                self.value_done(i + 1);
            }
            b'"' => {
                let is_key = matches!(self.expect, Expect::KeyOrEnd | Expect::Key);
                if !is_key && !wants_value {
                    return false;
                }
                self.token = Token::String {
                    start: i,
                    is_key,
                    escape_at: None,
                    hex_left: 0,
                    high_surrogate_at: None,
                };
            }
            b':' if self.expect == Expect::Colon => self.expect = Expect::Value,
            b',' if self.expect == Expect::CommaOrEnd => {
                self.expect = if self.stack.last() == Some(&b'}') {
                    Expect::Key
                } else {
                    Expect::Value
                };
            }
            b'-' | b'0'..=b'9' if wants_value => self.token = Token::Number { start: i },
            b't' | b'f' | b'n' if wants_value => {
                let word = match byte {
                    b't' => "true",
                    b'f' => "false",
                    _ => "null",
                };
                self.token = Token::Literal { start: i, word };
            }
            _ => return false,
        }
        true
    }

    fn feed_string(&mut self, i: usize, byte: u8) {
        let Token::String {
            is_key,
            escape_at,
            hex_left,
            high_surrogate_at,
            ..
        } = &mut self.token
        else {
            return;
        };
        if let Some(at) = *escape_at {
            if *hex_left > 0 {
                *hex_left -= 1;
                if *hex_left == 0 {
                    // `at` is the backslash of `\uXXXX`.
                    *escape_at = None;
                    let digits = self.text.get(at + 2..at + 6).unwrap_or_default();
                    let unit = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| u16::from_str_radix(d, 16).ok());
                    let high = unit.is_some_and(|u| (0xD800..0xDC00).contains(&u));
                    *high_surrogate_at = high.then_some(at);
                }
            } else if byte == b'u' {
                *hex_left = 4;
            } else {
                *escape_at = None;
                *high_surrogate_at = None;
            }
            return;
        }
        match byte {
            b'\\' => *escape_at = Some(i),
            b'"' => {
                let is_key = *is_key;
                if is_key {
                    self.token = Token::None;
                    self.expect = Expect::Colon;
                } else {
                    self.value_done(i + 1);
                }
            }
            _ => *high_surrogate_at = None,
        }
    }
}

/// `text`, a prefix of a JSON text, closed into valid JSON: the longest
/// complete reading of the prefix. `None` when nothing of a value has
/// appeared yet (empty or blank text, a lone `-`). A complete JSON text comes
/// back unchanged (less anything after its top-level value).
///
/// ```
/// use hearth::close_partial_json as close;
///
/// assert_eq!(close(r#"{"name": "Ad"#).as_deref(), Some(r#"{"name": "Ad"}"#));
/// assert_eq!(close(r#"{"tags": ["a", "#).as_deref(), Some(r#"{"tags": ["a"]}"#));
/// assert_eq!(close(r#"{"name": "Ada", "ag"#).as_deref(), Some(r#"{"name": "Ada"}"#));
/// assert_eq!(close(""), None);
/// ```
pub fn close(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut scanner = Scanner {
        text: bytes,
        stack: Vec::new(),
        expect: Expect::Value,
        token: Token::None,
        cut: None,
    };
    let mut end = bytes.len();
    for (i, &byte) in bytes.iter().enumerate() {
        if !scanner.feed(i, byte) {
            end = i;
            break;
        }
    }
    let closers = |depth: usize| -> String {
        scanner.stack[..depth]
            .iter()
            .rev()
            .map(|&b| char::from(b))
            .collect()
    };
    let fallback = || {
        scanner
            .cut
            .map(|(at, depth)| format!("{}{}", &text[..at], closers(depth)))
    };
    match scanner.token {
        Token::String {
            is_key: false,
            escape_at,
            high_surrogate_at,
            ..
        } => {
            let cut = [escape_at, high_surrogate_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            Some(format!(
                "{}\"{}",
                &text[..cut],
                closers(scanner.stack.len())
            ))
        }
        Token::Number { start } => {
            let digits = text[start..end].trim_end_matches(['-', '+', '.', 'e', 'E']);
            if digits.is_empty() {
                fallback()
            } else {
                Some(format!(
                    "{}{}",
                    &text[..start + digits.len()],
                    closers(scanner.stack.len())
                ))
            }
        }
        Token::Literal { start, word } => Some(format!(
            "{}{word}{}",
            &text[..start],
            closers(scanner.stack.len())
        )),
        Token::String { is_key: true, .. } | Token::None => fallback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn documents() -> Vec<String> {
        let values = [
            json!({"name": "Ada", "age": 36, "tags": ["math", "engines"], "address": {"city": "London", "zip": null}}),
            json!([
                1,
                -2.5,
                3e10,
                -0.25e-3,
                true,
                false,
                null,
                "x",
                [],
                {},
                [[]],
                [{}]
            ]),
            json!({"quote": "she said \"hi\"\\ and left\n\tbye", "unicode": "é — 日本 🎉", "empty": ""}),
            json!("a lone string with \\ and \""),
            json!(-12.75e-2),
            json!({"a": {"b": {"c": [1, {"d": [true, {"e": "deep"}]}]}}}),
        ];
        let mut docs: Vec<String> = values.iter().map(Value::to_string).collect();
        docs.extend(
            values
                .iter()
                .map(|v| serde_json::to_string_pretty(v).unwrap()),
        );
        // Escapes as a generator may write them, pairs included.
        docs.push(r#"{"emoji": "\ud83c\udf89 party", "e": "caf\u00e9", "tab": "\t"}"#.to_string());
        docs.push(r#"{"k": "a\u0041\ud83d\ude00b", "list": [ 1 , 2 ] , "z" : false }"#.to_string());
        docs
    }

    fn prefixes(text: &str) -> impl Iterator<Item = &str> {
        (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .map(|i| &text[..i])
    }

    #[test]
    fn every_prefix_of_every_document_closes_into_valid_json() {
        for doc in documents() {
            let full: Value = serde_json::from_str(&doc).unwrap();
            let mut seen_any = false;
            for prefix in prefixes(&doc) {
                let Some(closed) = close(prefix) else {
                    assert!(
                        !seen_any || prefix.trim().is_empty(),
                        "{prefix:?} lost its value"
                    );
                    continue;
                };
                seen_any = true;
                if let Err(e) = serde_json::from_str::<Value>(&closed) {
                    panic!("prefix {prefix:?} closed into {closed:?}: {e}");
                }
            }
            let closed = close(&doc).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&closed).unwrap(), full);
        }
    }

    #[test]
    fn unfinished_pieces_are_closed_or_dropped() {
        let cases = [
            ("", None),
            ("  ", None),
            ("{", Some("{}")),
            ("{\"na", Some("{}")),
            ("{\"name\"", Some("{}")),
            ("{\"name\": ", Some("{}")),
            ("{\"name\": \"Al", Some("{\"name\": \"Al\"}")),
            ("{\"name\": \"Al\\", Some("{\"name\": \"Al\"}")),
            ("{\"name\": \"Al\\u00", Some("{\"name\": \"Al\"}")),
            ("{\"name\": \"Al\\ud83c", Some("{\"name\": \"Al\"}")),
            (
                "{\"name\": \"Al\\ud83c\\udf89",
                Some("{\"name\": \"Al\\ud83c\\udf89\"}"),
            ),
            ("{\"name\": \"Al\", ", Some("{\"name\": \"Al\"}")),
            ("{\"age\": 3", Some("{\"age\": 3}")),
            ("{\"age\": -", Some("{}")),
            ("{\"x\": 1.", Some("{\"x\": 1}")),
            ("{\"x\": 1e+", Some("{\"x\": 1}")),
            ("{\"ok\": tr", Some("{\"ok\": true}")),
            ("[1, [2, {\"a\": [", Some("[1, [2, {\"a\": []}]]")),
            ("[1, 2, ", Some("[1, 2]")),
            ("\"abc", Some("\"abc\"")),
            ("-", None),
            ("{\"a\": 1} trailing", Some("{\"a\": 1}")),
        ];
        for (prefix, want) in cases {
            assert_eq!(close(prefix).as_deref(), want, "{prefix:?}");
        }
    }

    /// Any JSON value of a few levels, scalars of every kind.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[ -~\\u00e9\\u65e5\\U0001F389\\n\\t\"\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\"\\\\]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn prefixes_of_generated_values_close_into_valid_json(v in value(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            for prefix in prefixes(&text) {
                if let Some(closed) = close(prefix) {
                    prop_assert!(serde_json::from_str::<Value>(&closed).is_ok(), "{:?} -> {:?}", prefix, closed);
                }
            }
            // A complete text closes into itself.
            prop_assert_eq!(close(&text), Some(text.clone()));
        }
    }
}
