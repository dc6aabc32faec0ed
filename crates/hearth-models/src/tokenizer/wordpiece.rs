//! WordPiece tokenization for BERT-style encoders, read from a Hugging Face
//! `tokenizer.json`.
//!
//! The stages run in the reference pipeline's order: added (special) tokens
//! are cut out of the raw text first; each remaining piece is normalised
//! (control characters dropped, whitespace unified, CJK ideographs spaced
//! out, accents stripped through NFD decomposition, lowercased character by
//! character), split on whitespace and around every punctuation character,
//! and each word is cut greedily into the longest vocabulary pieces, later
//! pieces carrying the continuation prefix (`##`); a word that cannot be cut,
//! or is longer than the model's limit, becomes `[UNK]`. The sequence is then
//! wrapped as `[CLS] … [SEP]` and cut to the length the caller asks for (the
//! file's own `truncation` and `padding` settings are not used: a
//! sentence-transformers model takes its limit from its own configuration,
//! and nothing here is padded). Only the configuration BERT models use is
//! accepted: another normalizer, pre-tokenizer or post-processor is an error,
//! never a silent difference. Character classes come from current Unicode
//! tables; the reference's are older, so a character assigned in a recent
//! Unicode version may be classed differently.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

use super::unicode;
use crate::error::{ModelError, Result};

/// Longest word (in characters, after normalisation) cut into pieces when
/// the file does not say.
const DEFAULT_MAX_WORD_CHARS: usize = 100;
/// Prefix of a piece that continues a word when the file does not say.
const DEFAULT_CONTINUATION_PREFIX: &str = "##";

/// The BERT normaliser's switches (`BertNormalizer` in `tokenizer.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BertNormalizer {
    /// Drop control characters, U+0000 and U+FFFD; turn whitespace into ' '.
    pub clean_text: bool,
    /// Put spaces around CJK ideographs so that each becomes a word.
    pub handle_chinese_chars: bool,
    /// Decompose (NFD) and drop nonspacing marks.
    pub strip_accents: bool,
    pub lowercase: bool,
}

impl BertNormalizer {
    /// `text` normalised by the enabled stages, in the reference order
    /// (clean, CJK, accents, lowercase).
    pub fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        for c in text.chars() {
            if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_control(c) {
                    continue;
                }
                if is_bert_whitespace(c) {
                    out.push(' ');
                    continue;
                }
            }
            if self.handle_chinese_chars && is_cjk_ideograph(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out
                .nfd()
                .filter(|&c| get_general_category(c) != GeneralCategory::NonspacingMark)
                .collect();
        }
        if self.lowercase {
            // Character by character, as the reference does (no final-sigma rule).
            out = out.chars().flat_map(char::to_lowercase).collect();
        }
        out
    }
}

/// Whitespace for text cleaning: tab, newline, carriage return and the
/// White_Space property.
fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// Control, format and private-use characters (Cc, Cf, Co) other than tab,
/// newline and carriage return: dropped by text cleaning. Unassigned code
/// points are kept (they become `[UNK]`), as in the reference.
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
    )
}

/// The CJK Unified Ideographs blocks and their extensions and compatibility
/// blocks (not Hangul, Hiragana or Katakana, whose words are space-separated).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Punctuation for the pre-tokenizer: ASCII punctuation (which includes
/// symbols such as `$`, `+` and `~`) and the Unicode P* categories.
fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || unicode::is_punctuation(c)
}

/// A tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<u32>,
    /// Tokens cut from the end of the text to fit the length limit (0 when it fit).
    pub truncated: usize,
}

/// A token matched as a whole before normalisation or word splitting.
#[derive(Debug, Clone)]
struct AddedToken {
    content: String,
    id: u32,
}

/// A piece of text between added tokens, or an added token.
enum Segment<'t> {
    Text(&'t str),
    Token(u32),
}

/// Splits `text` at the leftmost-longest occurrences of `added`.
fn split_added<'t>(text: &'t str, added: &[AddedToken]) -> Vec<Segment<'t>> {
    if added.is_empty() {
        return vec![Segment::Text(text)];
    }
    let mut segments = Vec::new();
    let mut last = 0;
    let mut position = 0;
    while let Some(rest) = text.get(position..) {
        let Some(c) = rest.chars().next() else { break };
        let found = added
            .iter()
            .filter(|token| rest.starts_with(token.content.as_str()))
            .max_by_key(|token| token.content.len());
        match found {
            Some(token) => {
                if last < position
                    && let Some(before) = text.get(last..position)
                {
                    segments.push(Segment::Text(before));
                }
                segments.push(Segment::Token(token.id));
                position += token.content.len();
                last = position;
            }
            None => position += c.len_utf8(),
        }
    }
    if let Some(after) = text.get(last..).filter(|after| !after.is_empty()) {
        segments.push(Segment::Text(after));
    }
    segments
}

/// The parts of `tokenizer.json` that are read.
#[derive(Deserialize)]
struct TokenizerJson {
    model: ModelJson,
    #[serde(default)]
    normalizer: Option<Value>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    post_processor: Option<Value>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenJson>,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    vocab: HashMap<String, u32>,
    unk_token: String,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    max_input_chars_per_word: Option<usize>,
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "normalized_default")]
    normalized: bool,
}

fn normalized_default() -> bool {
    true
}

/// A WordPiece tokenizer with the BERT normaliser and pre-tokenizer.
#[derive(Debug, Clone)]
pub struct WordPieceTokenizer {
    vocab: HashMap<String, u32>,
    /// Every token by id (vocabulary and added tokens).
    tokens: BTreeMap<u32, String>,
    unk_id: u32,
    cls_id: u32,
    sep_id: u32,
    continuation_prefix: String,
    max_word_chars: usize,
    normalizer: BertNormalizer,
    /// Added tokens matched in the raw text.
    raw_added: Vec<AddedToken>,
    /// Added tokens matched (by their normalised content) in normalised text.
    normalized_added: Vec<AddedToken>,
}

impl WordPieceTokenizer {
    /// Reads a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&bytes)
            .map_err(|reason| ModelError::Tokenizer(format!("{}: {reason}", path.display())))
    }

    /// Builds the tokenizer from the text of a `tokenizer.json`.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        Self::parse(json).map_err(ModelError::Tokenizer)
    }

    fn parse(json: &[u8]) -> Result<Self, String> {
        let file: TokenizerJson = serde_json::from_slice(json)
            .map_err(|error| format!("not a tokenizer.json: {error}"))?;
        let model = file.model;
        match model.kind.as_deref() {
            Some("WordPiece") | None => {}
            Some(other) => return Err(format!("model type '{other}' is not WordPiece")),
        }
        let normalizer = parse_normalizer(file.normalizer.as_ref())?;
        parse_pre_tokenizer(file.pre_tokenizer.as_ref())?;
        let (cls_id, sep_id) = parse_post_processor(file.post_processor.as_ref())?;

        let vocab = model.vocab;
        let unk_id = *vocab.get(&model.unk_token).ok_or_else(|| {
            format!(
                "the unknown token '{}' is not in the vocabulary",
                model.unk_token
            )
        })?;
        let mut tokens: BTreeMap<u32, String> = vocab
            .iter()
            .map(|(token, &id)| (id, token.clone()))
            .collect();
        let mut raw_added = Vec::new();
        let mut normalized_added = Vec::new();
        for token in file.added_tokens {
            if token.single_word || token.lstrip || token.rstrip {
                return Err(format!(
                    "added token '{}': single_word, lstrip and rstrip are not supported",
                    token.content
                ));
            }
            tokens
                .entry(token.id)
                .or_insert_with(|| token.content.clone());
            if token.normalized {
                let content = normalizer.normalize(&token.content);
                if !content.is_empty() {
                    normalized_added.push(AddedToken {
                        content,
                        id: token.id,
                    });
                }
            } else if !token.content.is_empty() {
                raw_added.push(AddedToken {
                    content: token.content,
                    id: token.id,
                });
            }
        }
        for id in [cls_id, sep_id] {
            if !tokens.contains_key(&id) {
                return Err(format!(
                    "the post-processor's token id {id} is not in the vocabulary"
                ));
            }
        }
        Ok(Self {
            vocab,
            tokens,
            unk_id,
            cls_id,
            sep_id,
            continuation_prefix: model
                .continuing_subword_prefix
                .unwrap_or_else(|| DEFAULT_CONTINUATION_PREFIX.to_owned()),
            max_word_chars: model
                .max_input_chars_per_word
                .unwrap_or(DEFAULT_MAX_WORD_CHARS),
            normalizer,
            raw_added,
            normalized_added,
        })
    }

    /// One past the largest token id.
    pub fn vocab_size(&self) -> usize {
        self.tokens
            .last_key_value()
            .map_or(0, |(&id, _)| id as usize + 1)
    }

    /// The token with id `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(&id).map(String::as_str)
    }

    /// The id of the vocabulary entry `token`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// The ids of `[CLS]`, `[SEP]` and `[UNK]`.
    pub fn special_ids(&self) -> (u32, u32, u32) {
        (self.cls_id, self.sep_id, self.unk_id)
    }

    pub fn normalizer(&self) -> &BertNormalizer {
        &self.normalizer
    }

    /// The ids of `text` without `[CLS]`/`[SEP]` and without a length limit.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for segment in split_added(text, &self.raw_added) {
            match segment {
                Segment::Token(id) => ids.push(id),
                Segment::Text(raw) => {
                    let normalized = self.normalizer.normalize(raw);
                    for inner in split_added(&normalized, &self.normalized_added) {
                        match inner {
                            Segment::Token(id) => ids.push(id),
                            Segment::Text(text) => self.tokenize_normalized(text, &mut ids),
                        }
                    }
                }
            }
        }
        ids
    }

    /// `[CLS] text [SEP]`, with the text's tokens cut to fit in `max_len`
    /// tokens in all (a `max_len` below 2 is taken as 2). How many were cut is
    /// reported in [`Encoding::truncated`].
    pub fn encode(&self, text: &str, max_len: usize) -> Encoding {
        let mut pieces = self.tokenize(text);
        let budget = max_len.max(2) - 2;
        let truncated = pieces.len().saturating_sub(budget);
        pieces.truncate(budget);
        let mut ids = Vec::with_capacity(pieces.len() + 2);
        ids.push(self.cls_id);
        ids.extend(pieces);
        ids.push(self.sep_id);
        Encoding { ids, truncated }
    }

    /// Splits normalised text into words and the words into pieces.
    fn tokenize_normalized(&self, text: &str, ids: &mut Vec<u32>) {
        for word in text
            .split(char::is_whitespace)
            .filter(|word| !word.is_empty())
        {
            let mut start = 0;
            for (index, c) in word.char_indices() {
                if !is_bert_punctuation(c) {
                    continue;
                }
                let end = index + c.len_utf8();
                if let Some(before) = word.get(start..index).filter(|before| !before.is_empty()) {
                    self.word_pieces(before, ids);
                }
                if let Some(punctuation) = word.get(index..end) {
                    self.word_pieces(punctuation, ids);
                }
                start = end;
            }
            if let Some(rest) = word.get(start..).filter(|rest| !rest.is_empty()) {
                self.word_pieces(rest, ids);
            }
        }
    }

    /// Greedy longest-match-first pieces of one word; `[UNK]` alone when the
    /// word is too long or some part of it matches no piece.
    fn word_pieces(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().count() > self.max_word_chars {
            ids.push(self.unk_id);
            return;
        }
        if let Some(&id) = self.vocab.get(word) {
            ids.push(id);
            return;
        }
        let first = ids.len();
        let mut candidate = String::with_capacity(word.len() + self.continuation_prefix.len());
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                if let Some(part) = word.get(start..end) {
                    candidate.clear();
                    if start > 0 {
                        candidate.push_str(&self.continuation_prefix);
                    }
                    candidate.push_str(part);
                    if let Some(&id) = self.vocab.get(candidate.as_str()) {
                        found = Some(id);
                        break;
                    }
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk_id);
                    return;
                }
            }
        }
    }
}

/// The `type` field of a pipeline stage.
fn stage_type(stage: &Value) -> Option<&str> {
    stage.get("type").and_then(Value::as_str)
}

/// `BertNormalizer` (an absent normaliser changes nothing).
fn parse_normalizer(normalizer: Option<&Value>) -> Result<BertNormalizer, String> {
    let Some(normalizer) = normalizer.filter(|value| !value.is_null()) else {
        return Ok(BertNormalizer {
            clean_text: false,
            handle_chinese_chars: false,
            strip_accents: false,
            lowercase: false,
        });
    };
    if stage_type(normalizer) != Some("BertNormalizer") {
        return Err(format!(
            "normalizer {normalizer} is not supported (only BertNormalizer)"
        ));
    }
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match normalizer.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(format!("normalizer: '{key}' is {other}, expected a bool")),
        }
    };
    let lowercase = flag("lowercase", true)?;
    Ok(BertNormalizer {
        clean_text: flag("clean_text", true)?,
        handle_chinese_chars: flag("handle_chinese_chars", true)?,
        // Unset, accents are stripped exactly when the text is lowercased.
        strip_accents: flag("strip_accents", lowercase)?,
        lowercase,
    })
}

/// Only `BertPreTokenizer` is accepted.
fn parse_pre_tokenizer(pre_tokenizer: Option<&Value>) -> Result<(), String> {
    match pre_tokenizer {
        Some(stage) if stage_type(stage) == Some("BertPreTokenizer") => Ok(()),
        Some(other) => Err(format!(
            "pre_tokenizer {other} is not supported (only BertPreTokenizer)"
        )),
        None => Err("pre_tokenizer is missing (expected BertPreTokenizer)".into()),
    }
}

/// The `[CLS]` and `[SEP]` ids of a `[CLS] $A [SEP]` post-processor
/// (`BertProcessing`, or `TemplateProcessing` with that single template).
fn parse_post_processor(post_processor: Option<&Value>) -> Result<(u32, u32), String> {
    let unsupported = |stage: &Value| {
        format!("post_processor {stage} is not supported (expected [CLS] $A [SEP])")
    };
    let Some(stage) = post_processor else {
        return Err("post_processor is missing (expected [CLS] $A [SEP])".into());
    };
    let as_id = |value: Option<&Value>| {
        value
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
    };
    match stage_type(stage) {
        Some("BertProcessing") => {
            let id_of = |key: &str| as_id(stage.get(key).and_then(|pair| pair.get(1)));
            id_of("cls")
                .zip(id_of("sep"))
                .ok_or_else(|| unsupported(stage))
        }
        Some("TemplateProcessing") => {
            let single = stage
                .get("single")
                .and_then(Value::as_array)
                .ok_or_else(|| unsupported(stage))?;
            let special = |item: &Value| -> Option<u32> {
                let name = item.get("SpecialToken")?.get("id")?.as_str()?;
                let ids = stage
                    .get("special_tokens")?
                    .get(name)?
                    .get("ids")?
                    .as_array()?;
                match ids.as_slice() {
                    [id] => as_id(Some(id)),
                    _ => None,
                }
            };
            match single.as_slice() {
                [first, sequence, last] if sequence.get("Sequence").is_some() => special(first)
                    .zip(special(last))
                    .ok_or_else(|| unsupported(stage)),
                _ => Err(unsupported(stage)),
            }
        }
        _ => Err(unsupported(stage)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> WordPieceTokenizer {
        let json = r###"{
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "normalized": false},
                {"id": 1, "content": "[UNK]", "normalized": false},
                {"id": 2, "content": "[CLS]", "normalized": false},
                {"id": 3, "content": "[SEP]", "normalized": false}
            ],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                "continuing_subword_prefix": "##", "max_input_chars_per_word": 10,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3,
                    "un": 4, "##aff": 5, "##able": 6, "cafe": 7, "!": 8, "中": 9,
                    "a": 10, "##a": 11, "$": 12, "aaaa": 13}}
        }"###;
        WordPieceTokenizer::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn normalizes_like_bert() {
        let normalizer = tokenizer().normalizer;
        assert_eq!(normalizer.normalize("Café\tÀ\u{200b}b\u{7}"), "cafe ab");
        assert_eq!(normalizer.normalize("x中y"), "x 中 y");
        assert_eq!(normalizer.normalize("ΣΑΣ"), "σασ");
    }

    #[test]
    fn cuts_words_into_longest_pieces() {
        let tokenizer = tokenizer();
        assert_eq!(tokenizer.tokenize("unaffable"), [4, 5, 6]);
        assert_eq!(tokenizer.tokenize("Café!!中 $"), [7, 8, 8, 9, 12]);
        // A part without a piece makes the whole word unknown.
        assert_eq!(tokenizer.tokenize("unaffx un"), [1, 4]);
        // Up to max_input_chars_per_word (10) characters, a word is cut; longer, unknown.
        assert_eq!(
            tokenizer.tokenize("aaaaaaaaaa aaaaaaaaaaa"),
            [13, 11, 11, 11, 11, 11, 11, 1]
        );
        assert_eq!(tokenizer.tokenize("aaaaa"), [13, 11]);
        assert_eq!(tokenizer.tokenize(""), Vec::<u32>::new());
    }

    #[test]
    fn added_tokens_are_matched_in_the_raw_text() {
        let tokenizer = tokenizer();
        assert_eq!(tokenizer.tokenize("a[SEP]a [sep]"), [10, 3, 10, 1, 1, 1]);
        assert_eq!(tokenizer.tokenize("[CLS][UNK]"), [2, 1]);
    }

    #[test]
    fn encode_wraps_and_reports_truncation() {
        let tokenizer = tokenizer();
        let full = tokenizer.encode("un a a", 16);
        assert_eq!(
            full,
            Encoding {
                ids: vec![2, 4, 10, 10, 3],
                truncated: 0
            }
        );
        let cut = tokenizer.encode("un a a", 4);
        assert_eq!(
            cut,
            Encoding {
                ids: vec![2, 4, 10, 3],
                truncated: 1
            }
        );
        assert_eq!(
            tokenizer.encode("a", 0),
            Encoding {
                ids: vec![2, 3],
                truncated: 1
            }
        );
    }

    #[test]
    fn other_pipelines_are_rejected() {
        let base: Value = serde_json::from_slice(
            br#"{"pre_tokenizer": {"type": "BertPreTokenizer"},
                "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]},
                "model": {"type": "WordPiece", "unk_token": "[UNK]",
                    "vocab": {"[CLS]": 0, "[SEP]": 1, "[UNK]": 2}}}"#,
        )
        .unwrap();
        assert!(WordPieceTokenizer::from_json(base.to_string().as_bytes()).is_ok());
        let variants = [
            ("/model/type", serde_json::json!("BPE")),
            ("/pre_tokenizer/type", serde_json::json!("Whitespace")),
            (
                "/post_processor/type",
                serde_json::json!("RobertaProcessing"),
            ),
            ("/model/unk_token", serde_json::json!("<unk>")),
        ];
        for (pointer, value) in variants {
            let mut json = base.clone();
            *json.pointer_mut(pointer).unwrap() = value;
            let error = WordPieceTokenizer::from_json(json.to_string().as_bytes()).unwrap_err();
            assert!(
                matches!(error, ModelError::Tokenizer(_)),
                "{pointer}: {error}"
            );
        }
        assert!(WordPieceTokenizer::from_json(b"{").is_err());
    }
}
