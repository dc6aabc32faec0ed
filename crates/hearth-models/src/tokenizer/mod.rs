//! Tokenizers read from GGUF metadata (`tokenizer.ggml.*`), matching
//! llama.cpp's `llama_tokenize` token for token.
//!
//! Two models are supported: byte-level BPE with merges (`gpt2`, with the
//! pre-tokenizer named by `tokenizer.ggml.pre`) and SentencePiece BPE with
//! scores (`llama`). Both share the vocabulary (`vocab`) and the
//! special-token splitting (`special`) that runs first; each stage lives
//! in its own module so that a new model or pre-tokenizer is one module and
//! one match arm.

mod bpe;
mod pretokenize;
mod special;
mod spm;
mod unicode;
mod vocab;
pub mod wordpiece;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

use self::bpe::BytePairEncoder;
use self::pretokenize::PreTokenizer;
use self::special::{Fragment, SpecialSplitter};
use self::vocab::{Vocab, VocabKind, attr};

/// The model-specific part of a tokenizer.
#[derive(Debug)]
enum Model {
    BytePairs(BytePairEncoder),
    SentencePiece {
        /// Prefix a space to text that starts the input or follows a
        /// special token.
        add_space_prefix: bool,
    },
}

/// A tokenizer built from `tokenizer.ggml.*` metadata.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    special: SpecialSplitter,
    add_bos: bool,
    add_eos: bool,
}

impl Tokenizer {
    /// Reads the vocabulary, merges or scores, special tokens and flags.
    /// Errors on an unknown tokenizer model or pre-tokenizer, and on
    /// malformed tokenizer metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path().display().to_string();
        let model_name = gguf.get_str("tokenizer.ggml.model")?;
        let (kind, model, default_add_bos) = match model_name {
            "gpt2" => {
                let pre_name = gguf.get_str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
                let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
                    ModelError::Tokenizer(format!(
                        "{path}: pre-tokenizer '{pre_name}' is not supported"
                    ))
                })?;
                let merges = gguf
                    .get_array_opt("tokenizer.ggml.merges")?
                    .ok_or_else(|| ModelError::MissingKey {
                        path: gguf.path().into(),
                        key: "tokenizer.ggml.merges".into(),
                    })?;
                let default_add_bos = pre.default_add_bos;
                let encoder = BytePairEncoder::new(merges, pre)
                    .map_err(|e| ModelError::Tokenizer(format!("{path}: {e}")))?;
                (
                    VocabKind::BytePairs,
                    Model::BytePairs(encoder),
                    default_add_bos,
                )
            }
            "llama" => {
                let add_space_prefix = gguf
                    .get_bool_opt("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                (
                    VocabKind::SentencePiece,
                    Model::SentencePiece { add_space_prefix },
                    true,
                )
            }
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "{path}: tokenizer model '{other}' is not supported"
                )));
            }
        };
        let vocab = Vocab::from_gguf(gguf, kind)?;
        let add_bos = gguf
            .get_bool_opt("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos);
        let add_eos = gguf
            .get_bool_opt("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);
        if add_bos && vocab.bos.is_none() {
            return Err(ModelError::Tokenizer(format!(
                "{path}: add_bos_token is set but there is no BOS token"
            )));
        }
        if add_eos && vocab.eos.is_none() {
            return Err(ModelError::Tokenizer(format!(
                "{path}: add_eos_token is set but there is no EOS token"
            )));
        }
        let special = SpecialSplitter::new(&vocab);
        Ok(Self {
            vocab,
            model,
            special,
            add_bos,
            add_eos,
        })
    }

    /// Tokenizes `text`. `add_special`: add BOS (and EOS) as the model's
    /// metadata asks; `parse_special`: recognise control-token text such as
    /// `<|im_start|>` as single tokens. Same as llama.cpp's `llama_tokenize`.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.special.split(&self.vocab, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.vocab.bos);
        }
        match &self.model {
            Model::BytePairs(encoder) => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(range) => {
                            encoder.encode(&self.vocab, &text[range], &mut out)
                        }
                    }
                }
            }
            Model::SentencePiece { add_space_prefix } => {
                let mut after_special = true;
                let mut escaped = String::new();
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(range) => {
                            escaped.clear();
                            if *add_space_prefix && after_special {
                                escaped.push('\u{2581}');
                            }
                            for c in text[range].chars() {
                                escaped.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm::encode(&self.vocab, &escaped, &mut out);
                            after_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.vocab.eos);
        }
        out
    }

    /// The bytes a token renders to (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.vocab.piece(id)
    }

    /// Lossy UTF-8 of the concatenated token bytes.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens; valid ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// Whether BOS is added by `encode(.., add_special = true, ..)`.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether EOS is added by `encode(.., add_special = true, ..)`.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// End-of-generation tokens (EOS, EOT, `<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }

    /// All end-of-generation tokens, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        self.vocab.eog.iter().copied().collect()
    }

    /// Whether `id` is a control token (rendered as nothing).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }

    /// The token whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The text of a token as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }
}

/// Turns a stream of token ids into text, holding back incomplete UTF-8.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a token; returns the text that became complete. Bytes that
    /// can never become valid UTF-8 are replaced by U+FFFD; an incomplete
    /// sequence at the end is held back for the next token.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tokenizer.token_bytes(id));
        let mut text = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match error.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        text
    }

    /// Flushes what is left (lossy).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
