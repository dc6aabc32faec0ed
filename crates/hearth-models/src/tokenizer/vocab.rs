//! The vocabulary: token texts, scores and attributes, the special token
//! ids, the end-of-generation set, and each token's rendered bytes.

use std::collections::{BTreeSet, HashMap};

use super::unicode::char_to_byte;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetaValue};

/// Token attribute bits (a token may carry several).
pub(crate) mod attr {
    pub const UNKNOWN: u8 = 1 << 0;
    pub const UNUSED: u8 = 1 << 1;
    pub const NORMAL: u8 = 1 << 2;
    pub const CONTROL: u8 = 1 << 3;
    pub const USER_DEFINED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;
}

/// Token texts whose presence marks a token as ending generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "<EOS_TOKEN>",
];

/// Texts of the end-of-turn token, when the metadata names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle tokens that end generation, with the texts that
/// identify them when the metadata names none.
const FIM_EOG: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

/// The tokenizer family a vocabulary belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VocabKind {
    /// Byte-level BPE with merges (`gpt2`).
    BytePairs,
    /// SentencePiece BPE with scores (`llama`).
    SentencePiece,
}

/// Token data read from the GGUF metadata.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub(crate) texts: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<u8>,
    pub(crate) ids: HashMap<String, u32>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eog: BTreeSet<u32>,
    /// Concatenated rendered bytes of every token; token `i` spans
    /// `piece_offsets[i]..piece_offsets[i + 1]`.
    piece_bytes: Vec<u8>,
    piece_offsets: Vec<usize>,
}

fn bad(reason: String) -> ModelError {
    ModelError::Tokenizer(reason)
}

fn array<'a>(gguf: &'a GgufFile, key: &str) -> Result<Option<&'a [MetaValue]>> {
    gguf.get_array_opt(key)
}

impl Vocab {
    /// Reads the vocabulary; `kind` decides the default special ids.
    pub(crate) fn from_gguf(gguf: &GgufFile, kind: VocabKind) -> Result<Self> {
        let path = gguf.path().display().to_string();
        let tokens =
            array(gguf, "tokenizer.ggml.tokens")?.ok_or_else(|| ModelError::MissingKey {
                path: gguf.path().into(),
                key: "tokenizer.ggml.tokens".into(),
            })?;
        let n = tokens.len();
        let n_u32 = u32::try_from(n)
            .map_err(|_| bad(format!("{path}: vocabulary of {n} tokens is too large")))?;

        let scores = match array(gguf, "tokenizer.ggml.scores")? {
            None => vec![0.0; n],
            Some(values) if values.len() >= n => values[..n]
                .iter()
                .map(|v| v.as_f64().map(|s| s as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("{path}: tokenizer.ggml.scores holds non-numbers")))?,
            Some(values) => {
                return Err(bad(format!(
                    "{path}: {} scores for {n} tokens",
                    values.len()
                )));
            }
        };
        let types: Vec<i128> = match array(gguf, "tokenizer.ggml.token_type")? {
            None => vec![1; n],
            Some(values) if values.len() >= n => values[..n]
                .iter()
                .map(MetaValue::as_integer)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    bad(format!(
                        "{path}: tokenizer.ggml.token_type holds non-integers"
                    ))
                })?,
            Some(values) => {
                return Err(bad(format!(
                    "{path}: {} token types for {n} tokens",
                    values.len()
                )));
            }
        };

        let mut texts = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        let mut attrs = Vec::with_capacity(n);
        for (i, (value, &ty)) in tokens.iter().zip(&types).enumerate() {
            let text = value.as_str().ok_or_else(|| {
                bad(format!(
                    "{path}: tokenizer.ggml.tokens[{i}] is not a string"
                ))
            })?;
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.to_string()
            };
            let id = i as u32;
            if let Some(first) = ids.insert(text.clone(), id) {
                return Err(bad(format!(
                    "{path}: duplicate token {text:?} (ids {first} and {id})"
                )));
            }
            texts.push(text);
            attrs.push(match ty {
                1 => attr::NORMAL,
                2 => attr::UNKNOWN,
                3 => attr::CONTROL,
                4 => attr::USER_DEFINED,
                5 => attr::UNUSED,
                6 => attr::BYTE,
                _ => 0,
            });
        }

        let special_id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            let default = default.filter(|&id| id < n_u32);
            Ok(match gguf.get_u32_opt(key)? {
                Some(id) if id < n_u32 => Some(id),
                _ => default,
            })
        };
        let (default_bos, default_eos) = match kind {
            VocabKind::SentencePiece => (Some(1), Some(2)),
            VocabKind::BytePairs => (Some(11), Some(11)),
        };
        let bos = special_id("tokenizer.ggml.bos_token_id", default_bos)?;
        let eos = special_id("tokenizer.ggml.eos_token_id", default_eos)?;
        let eot = special_id("tokenizer.ggml.eot_token_id", None)?;
        let eom = special_id("tokenizer.ggml.eom_token_id", None)?;

        let mut vocab = Self {
            texts,
            scores,
            attrs,
            ids,
            bos,
            eos,
            eog: BTreeSet::new(),
            piece_bytes: Vec::new(),
            piece_offsets: Vec::new(),
        };
        vocab.find_end_of_generation(gguf, eot, eom)?;
        vocab.render_pieces(kind);
        Ok(vocab)
    }

    /// The lowest id among tokens whose text is one of `texts`.
    fn find_text(&self, texts: &[&str]) -> Option<u32> {
        texts.iter().filter_map(|t| self.ids.get(*t).copied()).min()
    }

    fn mark_control(&mut self, id: u32) {
        if let Some(a) = self.attrs.get_mut(id as usize) {
            *a |= attr::CONTROL;
        }
    }

    /// Builds the end-of-generation set: EOS, EOT, EOM, the FIM pad/repo/
    /// separator tokens and every token whose text is a known end marker.
    /// Tokens recognised by their text become control tokens.
    fn find_end_of_generation(
        &mut self,
        gguf: &GgufFile,
        eot: Option<u32>,
        eom: Option<u32>,
    ) -> Result<()> {
        let n = self.texts.len() as u32;
        let eot = match eot {
            Some(id) => Some(id),
            None => {
                let found = self.find_text(EOT_TEXTS);
                found.inspect(|&id| self.mark_control(id))
            }
        };
        let eom = match eom {
            Some(id) => Some(id),
            None => self
                .find_text(&["<|eom_id|>"])
                .inspect(|&id| self.mark_control(id)),
        };
        let mut eog = BTreeSet::new();
        for (key, texts) in FIM_EOG {
            let id = match gguf.get_u32_opt(key)?.filter(|&id| id < n) {
                Some(id) => Some(id),
                None => self.find_text(texts).inspect(|&id| self.mark_control(id)),
            };
            eog.extend(id);
        }
        for text in EOG_TEXTS {
            if let Some(&id) = self.ids.get(*text) {
                eog.insert(id);
                self.mark_control(id);
            }
        }
        eog.extend(self.eos);
        eog.extend(eot);
        eog.extend(eom);
        // Vocabularies with separate return/call markers use `<|end|>`
        // inside a turn, and those with `<|tool_response>` use `</s>` as text.
        let has = |text: &str| self.ids.get(text).is_some_and(|id| eog.contains(id));
        let end_is_inside_turn =
            (has("<|return|>") || has("<|flush|>")) && (has("<|call|>") || has("<|calls|>"));
        let slash_s_is_text = has("<|tool_response>");
        if end_is_inside_turn && let Some(&end) = self.ids.get("<|end|>") {
            eog.remove(&end);
            self.attrs[end as usize] = attr::USER_DEFINED;
        }
        if slash_s_is_text && let Some(&s) = self.ids.get("</s>") {
            eog.remove(&s);
            self.attrs[s as usize] = attr::NORMAL;
        }
        // Control tokens whose text says "unused" are unused.
        for (text, a) in self.texts.iter().zip(self.attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && text.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
        self.eog = eog;
        Ok(())
    }

    /// Renders every token to the bytes it stands for in generated text.
    fn render_pieces(&mut self, kind: VocabKind) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(self.texts.len() + 1);
        offsets.push(0);
        for (text, &a) in self.texts.iter().zip(&self.attrs) {
            if a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                // Control and unknown tokens render as nothing.
            } else if a & attr::USER_DEFINED != 0 {
                bytes.extend_from_slice(text.as_bytes());
            } else if a & attr::NORMAL != 0 {
                match kind {
                    VocabKind::SentencePiece => {
                        bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes())
                    }
                    VocabKind::BytePairs => {
                        for c in text.chars() {
                            match char_to_byte(c) {
                                Some(b) => bytes.push(b),
                                None => {
                                    bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                                }
                            }
                        }
                    }
                }
            } else if a & attr::BYTE != 0 {
                bytes.extend(parse_byte_token(text));
            }
            offsets.push(bytes.len());
        }
        self.piece_bytes = bytes;
        self.piece_offsets = offsets;
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub(crate) fn attr(&self, id: u32) -> u8 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// The rendered bytes of `id` (empty when out of range).
    pub(crate) fn piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.piece_offsets.get(i), self.piece_offsets.get(i + 1)) {
            (Some(&start), Some(&end)) => self.piece_bytes.get(start..end).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The token for a raw byte in SentencePiece vocabularies: `<0xXX>`,
    /// else the byte's own one-character token.
    pub(crate) fn byte_token(&self, byte: u8) -> Option<u32> {
        self.id(&format!("<0x{byte:02X}>")).or_else(|| {
            let single = [byte];
            std::str::from_utf8(&single).ok().and_then(|s| self.id(s))
        })
    }
}

/// The byte of a `<0xXX>` token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}
