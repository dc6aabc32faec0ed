#!/usr/bin/env python3
"""Writes the reference fixture for Hearth's sentence-embedding test.

The reference is a plain numpy implementation of the BERT encoder (post-norm
layers, exact erf GELU, absolute position embeddings, token type 0), computed
in float64 from the model's float32 safetensors, followed by the
sentence-transformers head of all-MiniLM-L6-v2: mean pooling over the tokens
and L2 normalisation. Token ids come from the `tokenizers` package loading the
model's own tokenizer.json, with its padding switched off and truncation at
the model's max_seq_length (sentence_bert_config.json), special tokens
included, as sentence-transformers does.

Run with the reference venv (see setup.sh):

    python="$(scripts/reference/setup.sh)"
    "$python" scripts/reference/gen_embeddings.py [--model-dir DIR]

The model directory defaults to the store's install of all-minilm-l6-v2
(`$HEARTH_HOME/models/all-minilm-l6-v2`, HEARTH_HOME defaulting to
~/.cache/hearth; `scripts/fetch-models.sh all-minilm-l6-v2` installs it).

Output: crates/hearth-models/tests/fixtures/embeddings_minilm.json with, per
text, the token ids, the count of tokens cut by truncation, the first
HEAD_DIMS values of the normalised embedding, the sum and the sum of absolute
values of all of its values; and the cosine similarity of every pair of texts
(computed from the full vectors, so every dimension is checked).

The script exits non-zero when a known fact does not hold: the mean-pooled
(not yet normalised) vector of "What is Deep Learning?" starts with the values
published for this model in text-embeddings-inference's test snapshots. That
run agrees with this one only to about 1e-3 (float64 and float32 runs of this
script agree to 1e-6), so it is a coarse check that the architecture is read
right, not the tolerance of the fixture.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "crates" / "hearth-models" / "tests" / "fixtures" / "embeddings_minilm.json"
MODEL_NAME = "all-minilm-l6-v2"
HEAD_DIMS = 16
DECIMALS = 7

LONG_TEXT = " ".join(
    [
        "Lighthouses guided ships along dangerous coasts for centuries.",
        "Early lights were open fires on hilltops; later towers carried oil lamps",
        "behind Fresnel lenses that gathered the light into a beam visible for",
        "more than twenty nautical miles. Keepers trimmed the wicks, wound the",
        "clockwork that turned the lens, polished the brass and logged the weather",
        "every four hours, often for decades on a rock far from the mainland.",
    ]
    * 6
)

TEXTS = [
    "",
    "The quick brown fox jumps over the lazy dog.",
    "A fast brown fox leaps over a sleepy dog.",
    "Quantum chromodynamics describes the strong interaction between quarks.",
    "Café crème brûlée, naïve façade — Ångström über Straße!",
    "Hello!!! What's up?? (e-mail: test@example.com) #tags $100 ~tilde~ `code` a+b=c",
    "我喜欢自然语言处理。北京是中国的首都。",
    "日本語のテキストと한국어 텍스트, Ελληνικά και русский текст 😀",
    "  Leading\tand trailing\nwhitespace\u00a0nbsp, zero\u200bwidth, bell\u0007, \ufffd replacement  ",
    "unbelievably antidisestablishmentarianism " + "x" * 101 + " supercalifragilisticexpialidocious",
    "Special tokens in text: [SEP] and [MASK] are kept, [cls] is not.",
    "What is Deep Learning?",
    LONG_TEXT,
]

# Index pairs (similar, unrelated) whose cosines the test orders.
SIMILAR_PAIR = (1, 2)
UNRELATED_PAIR = (1, 3)

# Mean-pooled, unnormalised values for "What is Deep Learning?" (dims 0..8).
KNOWN_POOLED = [
    -0.5905822, -0.2525167, 0.14959584, 0.054548685,
    -0.11789139, -0.16702051, -0.2331886, -0.07111306,
]
KNOWN_TOLERANCE = 2e-3


def hearth_home() -> Path:
    """$HEARTH_HOME, default ~/.cache/hearth (the same rule as hearth-core)."""
    value = os.environ.get("HEARTH_HOME")
    if value:
        return Path(value)
    return Path.home() / ".cache" / "hearth"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU: x * Phi(x)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class Bert:
    """The BERT encoder over float64 copies of the weights."""

    def __init__(self, model_dir: Path):
        config = json.loads((model_dir / "config.json").read_text())
        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        assert config["hidden_act"] == "gelu", config["hidden_act"]
        assert config.get("position_embedding_type", "absolute") == "absolute"
        raw = load_file(str(model_dir / "model.safetensors"))
        self.w = {name: value.astype(np.float64) for name, value in raw.items()}

    def linear(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def forward(self, ids: list[int]) -> np.ndarray:
        """The last hidden states, one row per token."""
        w = self.w
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        head_dim = self.hidden // self.heads
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q = self.linear(x, p + "attention.self.query").reshape(n, self.heads, head_dim)
            k = self.linear(x, p + "attention.self.key").reshape(n, self.heads, head_dim)
            v = self.linear(x, p + "attention.self.value").reshape(n, self.heads, head_dim)
            scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = np.einsum("hqk,khd->qhd", probs, v).reshape(n, self.hidden)
            attn = self.linear(context, p + "attention.output.dense")
            x = layer_norm(
                attn + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            inner = gelu(self.linear(x, p + "intermediate.dense"))
            out = self.linear(inner, p + "output.dense")
            x = layer_norm(
                out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps
            )
        return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=hearth_home() / "models" / MODEL_NAME)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    model_dir: Path = args.model_dir

    st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    max_seq_length = st_config["max_seq_length"]
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    full_lengths = [len(tokenizer.encode(text).ids) for text in TEXTS]
    tokenizer.enable_truncation(max_length=max_seq_length)

    bert = Bert(model_dir)
    cases = []
    vectors = []
    for text, full_length in zip(TEXTS, full_lengths):
        ids = tokenizer.encode(text).ids
        hidden = bert.forward(ids)
        pooled = hidden.mean(axis=0)
        if text == "What is Deep Learning?":
            diff = np.abs(pooled[: len(KNOWN_POOLED)] - np.array(KNOWN_POOLED)).max()
            if diff > KNOWN_TOLERANCE:
                print(f"known mean-pooled values differ by {diff:.2e}", file=sys.stderr)
                return 1
        vector = pooled / max(np.linalg.norm(pooled), 1e-12)
        vectors.append(vector)
        cases.append(
            {
                "text": text,
                "ids": ids,
                "truncated": full_length - len(ids),
                "head": [round(float(value), DECIMALS) for value in vector[:HEAD_DIMS]],
                "sum": round(float(vector.sum()), DECIMALS),
                "sum_abs": round(float(np.abs(vector).sum()), DECIMALS),
            }
        )
        print(f"{len(ids):4} tokens  {text[:60]!r}", file=sys.stderr)

    matrix = np.stack(vectors)
    cosines = matrix @ matrix.T
    similar = cosines[SIMILAR_PAIR]
    unrelated = cosines[UNRELATED_PAIR]
    if not similar > unrelated:
        print(f"similar pair {similar:.4f} <= unrelated pair {unrelated:.4f}", file=sys.stderr)
        return 1
    if not any(case["truncated"] > 0 for case in cases):
        print("no text is long enough to be truncated", file=sys.stderr)
        return 1

    fixture = {
        "model": {
            "name": MODEL_NAME,
            "safetensors_sha256": sha256_file(model_dir / "model.safetensors"),
            "tokenizer_sha256": sha256_file(model_dir / "tokenizer.json"),
        },
        "reference": "numpy float64 BERT + tokenizers " + __import__("tokenizers").__version__,
        "max_seq_length": max_seq_length,
        "head_dims": HEAD_DIMS,
        "similar_pair": list(SIMILAR_PAIR),
        "unrelated_pair": list(UNRELATED_PAIR),
        "cases": cases,
        "cosines": [[round(float(value), DECIMALS) for value in row] for row in cosines],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
