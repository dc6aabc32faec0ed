#!/usr/bin/env python3
"""Writes llama.cpp reference fixtures for Hearth's tokenizer and model tests.

Run with the reference venv (see setup.sh):

    ~/.cache/hearth-ref/venv/bin/python scripts/reference/gen_fixtures.py

Outputs (crates/hearth-models/tests/fixtures/llama_cpp/):
  tokens_<model>.json  llama_tokenize ids for a fixed set of texts, in two
                       modes, plus token_to_piece bytes for a few ids.
  greedy_<model>.json  greedy continuations with the top logits of the first
                       steps, evaluated prompt-in-one-batch then one token at
                       a time, flash attention disabled.

The output is deterministic for a given llama.cpp build and model file (both
are recorded in each file's "llama_cpp" and "model" headers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from common import (
    MODEL_FILES,
    REPO_ROOT,
    capture_llama_logs,
    ggml_build,
    model_path,
    sha256_file,
    token_piece,
    tokenize,
)

DEFAULT_OUT = REPO_ROOT / "crates" / "hearth-models" / "tests" / "fixtures" / "llama_cpp"

# Context settings used for every greedy run (recorded in the fixture header).
N_CTX = 2048
N_BATCH = 512
N_THREADS = 2
SEED = 0
GEN_TOKENS = 64
TOP_FIRST = 20
TOP_LATER = 5
LATER_STEPS = 8
LOGIT_DECIMALS = 4

LONG_PARAGRAPH = (
    "The history of the lighthouse is long and varied. Early lighthouses were "
    "simple fires built on hilltops, later raised on platforms to improve their "
    "visibility. In the nineteenth century, engineers designed tall stone towers "
    "fitted with Fresnel lenses, which concentrated the light of a single lamp "
    "into a beam visible for more than twenty nautical miles. Keepers trimmed "
    "the wicks, wound the clockwork that turned the lens, and recorded the "
    "weather every four hours. Today most lights are automated, powered by the "
    "grid or by solar panels, and monitored remotely; yet many towers still "
    "stand, preserved as museums, guest houses, or simply as landmarks that "
    "remind sailors and tourists alike of the people who once kept them burning "
    "through storms, fog, and long winter nights."
)

CHATML_TEXT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
GEMMA_TURN_TEXT = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"

TEXTS: list[str] = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!",
    "1234567 and 3.14159",
    "Call 555-0199 before 10:30pm on 2024-03-15; it costs $1,299.99 (or 50%).",
    "Café, naïve, résumé, Ångström, jalapeño, Straße.",
    "日本語のテキストと中文文本。",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Привет, мир! Ελληνικά γράμματα.",
    "Emoji: 😀👍🏽🎉",
    "Family 👨‍👩‍👧‍👦, rainbow flag 🏳️‍🌈, flags 🇫🇷🇯🇵",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    'fn main() {\n    let squares: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", squares);\n}\n',
    '{"name": "Hearth", "tags": ["llm", "cpu"], "nested": {"a": 1, "b": [true, null]}, "quote": "she said \\"hi\\""}',
    "multiple   spaces    between     words",
    "tabs\tand\t\tdouble tabs",
    "line one\nline two\r\nline three",
    "paragraph\n\n\nafter three newlines",
    "   leading spaces",
    "trailing spaces   ",
    " ",
    "\n",
    "    indented code\n\tand tab-indented\n",
    "I'm sure they'll say we've done it, but DON'T you think it's odd? You'RE right, I'd say.",
    "MiXeD CaSe TeXt, camelCaseIdentifiers and SCREAMING_SNAKE_CASE",
    "",
    LONG_PARAGRAPH,
    CHATML_TEXT,
    "before<|endoftext|>after <|im_end|>",
    GEMMA_TURN_TEXT,
    "<bos>text<eos>",
    "See https://example.com/path?q=a+b&x=1#frag or mail a.b@example.org",
    "Mixed scripts: hello世界مرحبا123abc",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]

# Texts whose tokens contribute ids to the token_to_piece table.
PIECE_SOURCE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Café, naïve, résumé, Ångström, jalapeño, Straße.",
    "Emoji: 😀👍🏽🎉",
    "日本語のテキストと中文文本。",
    "line one\nline two\r\nline three",
    "multiple   spaces    between     words",
    "tabs\tand\t\tdouble tabs",
]
MAX_PIECES = 128

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Greedy prompts. "raw": the text itself; "chat": messages rendered with the
# model's chat template ("system": "default" lets the template insert its
# default system prompt, "none" removes that block, a string is an explicit
# system message).
GREEDY_PROMPTS = {
    "smollm2": [
        {"name": "raw_capital", "kind": "raw", "text": "The capital of France is"},
        {"name": "raw_fibonacci", "kind": "raw", "text": "def fibonacci(n):"},
        {"name": "raw_once", "kind": "raw", "text": "Once upon a time"},
        {"name": "chat_capital_default_system", "kind": "chat", "system": "default",
         "user": "What is the capital of France?"},
        {"name": "chat_capital_no_system", "kind": "chat", "system": "none",
         "user": "What is the capital of France?"},
        {"name": "chat_haiku_default_system", "kind": "chat", "system": "default",
         "user": "Write a haiku about a lighthouse."},
        {"name": "chat_colors_custom_system", "kind": "chat",
         "system": "You are a concise assistant. Answer in one sentence.",
         "user": "Name the three primary colors."},
    ],
    "gemma3": [
        {"name": "raw_capital", "kind": "raw", "text": "The capital of France is"},
        {"name": "raw_fibonacci", "kind": "raw", "text": "def fibonacci(n):"},
        {"name": "raw_once", "kind": "raw", "text": "Once upon a time"},
        {"name": "raw_french", "kind": "raw", "text": "Les Misérables est un roman de"},
        {"name": "raw_list", "kind": "raw", "text": "Three facts about the Moon:\n1."},
    ],
}

# Facts established independently of these scripts (FINDINGS.md). A
# mismatch means the reference build or model file is not the expected one.
KNOWN_TOKENS = {
    "smollm2": {
        "The quick brown fox jumps over the lazy dog.":
            [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30],
    },
}
KNOWN_GREEDY = {
    # name -> (expected generated ids prefix, expected generated text prefix)
    "smollm2": {
        "chat_capital_no_system": ([504, 3575, 282, 4649, 314, 7042, 30, 2], None),
        "chat_capital_default_system": (None, "L"),
    },
    "gemma3": {
        "raw_capital": (None, " the capital of the country of France. It is the largest city in France."),
    },
}


class Reference:
    """One model loaded in llama.cpp with the fixture context settings."""

    def __init__(self, path: Path):
        self.path = path
        # Llama() only loads the model and creates the context; all
        # evaluation below goes through the low-level llama_* functions.
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=N_CTX,
            n_batch=N_BATCH,
            n_threads=N_THREADS,
            logits_all=False,
            seed=SEED,
            flash_attn=False,
            verbose=False,
        )
        self.ctx = self.llm.ctx
        self.model = self.llm.model
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        params = self.llm.context_params
        if params.flash_attn_type != llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED:
            raise RuntimeError("flash attention is not disabled")
        self.header = {
            **ggml_build(),
            "load": (
                f"Llama(model_path, n_ctx={N_CTX}, n_batch={N_BATCH}, n_threads={N_THREADS}, "
                f"logits_all=False, seed={SEED}, flash_attn=False, verbose=False)"
            ),
            "context_params": {
                "n_ctx": llama_cpp.llama_n_ctx(self.ctx),
                "n_batch": llama_cpp.llama_n_batch(self.ctx),
                "n_ubatch": llama_cpp.llama_n_ubatch(self.ctx),
                "n_threads": params.n_threads,
                "n_threads_batch": params.n_threads_batch,
                "flash_attn_type": params.flash_attn_type,
                "flash_attn_type_name": _text(llama_cpp.llama_flash_attn_type_name(params.flash_attn_type)),
                "type_k": params.type_k,
                "type_v": params.type_v,
                "swa_full": bool(params.swa_full),
            },
            "evaluation": (
                "prompt in one llama_decode(llama_batch_get_one(prompt)), then one "
                "llama_decode per generated token; logits of the last position only "
                "(llama_get_logits_ith(ctx, -1)); greedy argmax, ties to the lower id"
            ),
        }

    def last_logits(self) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        if not pointer:
            raise RuntimeError("llama_get_logits_ith returned NULL")
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def decode(self, tokens: list[int]) -> None:
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        batch = llama_cpp.llama_batch_get_one(array, len(tokens))
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def reset(self) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def text_of(self, tokens: list[int]) -> str:
        data = b"".join(token_piece(self.vocab, token, False) for token in tokens)
        return data.decode("utf-8", errors="replace")


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def top_k(logits: np.ndarray, k: int) -> list[list]:
    """The k largest logits as [id, logit], ties ordered by lower id."""
    order = np.argsort(-logits, kind="stable")[:k]
    return [[int(i), round(float(logits[i]), LOGIT_DECIMALS)] for i in order]


def model_header(name: str, path: Path) -> dict:
    return {
        "name": name,
        "file": f"models/{name}/model.gguf",
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
    }


def tokens_fixture(ref: Reference, name: str) -> dict:
    cases = []
    for text in TEXTS:
        for add_special, parse_special in ((True, False), (False, True)):
            cases.append({
                "text": text,
                "add_special": add_special,
                "parse_special": parse_special,
                "tokens": tokenize(ref.vocab, text, add_special, parse_special),
            })

    ids: set[int] = set()
    for token in (llama_cpp.llama_vocab_bos(ref.vocab), llama_cpp.llama_vocab_eos(ref.vocab)):
        if 0 <= token < ref.n_vocab:
            ids.add(token)
    ids.update(tokenize(ref.vocab, CHATML_TEXT, False, True))
    ids.update(tokenize(ref.vocab, GEMMA_TURN_TEXT, False, True))
    for text in PIECE_SOURCE_TEXTS:
        ids.update(tokenize(ref.vocab, text, False, False))
    pieces = [
        {
            "id": token,
            "hex": token_piece(ref.vocab, token, False).hex(),
            "hex_special": token_piece(ref.vocab, token, True).hex(),
        }
        for token in sorted(ids)[:MAX_PIECES]
    ]
    return {
        "generated_by": "scripts/reference/gen_fixtures.py",
        "llama_cpp": {key: ref.header[key] for key in ("llama_cpp_python", "llama_version", "ggml_commit", "ggml_version") if key in ref.header},
        "model": model_header(name, ref.path),
        "flags": {
            "add_special": "llama_tokenize add_special: add BOS/EOS where the model metadata asks for them",
            "parse_special": "llama_tokenize parse_special: special/control token text is matched as one token",
            "hex": "llama_token_to_piece(vocab, id, buf, len, lstrip=0, special=false) bytes",
            "hex_special": "the same with special=true",
        },
        "cases": cases,
        "pieces": pieces,
    }


def render_chat(ref: Reference, prompt: dict) -> tuple[str, list[dict]]:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source = ref.llm.metadata.get("tokenizer.chat_template")
    if not source:
        raise RuntimeError("the model has no chat template")
    system = prompt["system"]
    messages = [{"role": "user", "content": prompt["user"]}]
    if system not in ("default", "none"):
        messages.insert(0, {"role": "system", "content": system})
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(source).render(messages=messages, add_generation_prompt=True)
    if system == "none":
        block = f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n"
        if not text.startswith(block):
            raise RuntimeError("unexpected default system block in the rendered template")
        text = text[len(block):]
    return text, messages


def greedy_case(ref: Reference, prompt: dict) -> dict:
    case: dict = {"name": prompt["name"], "kind": prompt["kind"]}
    if prompt["kind"] == "chat":
        text, messages = render_chat(ref, prompt)
        case["system"] = prompt["system"]
        case["messages"] = messages
        parse_special = True
    else:
        text = prompt["text"]
        parse_special = False
    prompt_tokens = tokenize(ref.vocab, text, True, parse_special)
    case.update({
        "text": text,
        "add_special": True,
        "parse_special": parse_special,
        "prompt_tokens": prompt_tokens,
    })

    ref.reset()
    ref.decode(prompt_tokens)
    generated: list[int] = []
    later: list[list[list]] = []
    stop = "length"
    for step in range(GEN_TOKENS):
        logits = ref.last_logits()
        if step == 0:
            case["step0_top20"] = top_k(logits, TOP_FIRST)
            case["step0_stats"] = {
                "n_vocab": int(logits.size),
                "mean": round(float(logits.mean(dtype=np.float64)), LOGIT_DECIMALS + 2),
                "std": round(float(logits.std(dtype=np.float64)), LOGIT_DECIMALS + 2),
                "max": round(float(logits.max()), LOGIT_DECIMALS),
                "min": round(float(logits.min()), LOGIT_DECIMALS),
            }
        elif step <= LATER_STEPS:
            later.append(top_k(logits, TOP_LATER))
        token = int(np.argmax(logits))  # first maximum: ties go to the lower id
        generated.append(token)
        if ref.is_eog(token):
            stop = "eog"
            break
        ref.decode([token])
    case.update({
        "generated": generated,
        "generated_text": ref.text_of(generated),
        "stop": stop,
        "top5_steps_1_to_8": later,
    })
    return case


def greedy_fixture(ref: Reference, name: str, key: str) -> dict:
    return {
        "generated_by": "scripts/reference/gen_fixtures.py",
        "llama_cpp": ref.header,
        "model": model_header(name, ref.path),
        "settings": {
            "gen_tokens": GEN_TOKENS,
            "stop": "at the first end-of-generation token (llama_vocab_is_eog), which is kept as the last id",
            "prompt_tokenization": "llama_tokenize(add_special=true, parse_special=true for chat prompts, false for raw)",
            "step0_top20": "[id, logit] of the 20 largest logits before the first generated token",
            "top5_steps_1_to_8": "entry i: the 5 largest logits before generated token i+1",
            "step0_stats": "over the full vocabulary; std is the population standard deviation",
            "logit_rounding_decimals": LOGIT_DECIMALS,
        },
        "eog_ids": [t for t in range(ref.n_vocab) if ref.is_eog(t)],
        "cases": [greedy_case(ref, prompt) for prompt in GREEDY_PROMPTS[key]],
    }


def check_known(key: str, tokens: dict, greedy: dict) -> list[str]:
    problems = []
    for text, expected in KNOWN_TOKENS.get(key, {}).items():
        for case in tokens["cases"]:
            if case["text"] == text and not case["parse_special"]:
                if case["tokens"] != expected:
                    problems.append(f"{key}: {text!r} -> {case['tokens']}, expected {expected}")
    by_name = {case["name"]: case for case in greedy["cases"]}
    for name, (ids, text) in KNOWN_GREEDY.get(key, {}).items():
        case = by_name[name]
        if ids is not None and case["generated"][: len(ids)] != ids:
            problems.append(f"{key}/{name}: generated {case['generated'][:len(ids)]}, expected {ids}")
        if text is not None and not case["generated_text"].startswith(text):
            problems.append(f"{key}/{name}: generated {case['generated_text']!r}, expected to start with {text!r}")
    return problems


def dump(value: dict) -> str:
    """JSON with one line per top-level key and per list element of a
    top-level list (cases, pieces): compact yet diff-friendly."""
    lines = ["{"]
    items = list(value.items())
    for index, (key, item) in enumerate(items):
        comma = "," if index + 1 < len(items) else ""
        if isinstance(item, list) and item and isinstance(item[0], dict):
            lines.append(f"  {json.dumps(key)}: [")
            for inner, element in enumerate(item):
                inner_comma = "," if inner + 1 < len(item) else ""
                lines.append("    " + json.dumps(element, ensure_ascii=False, separators=(",", ":")) + inner_comma)
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(item, ensure_ascii=False, separators=(',', ':'))}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--smollm2", type=Path, default=model_path(MODEL_FILES["smollm2"]))
    parser.add_argument("--gemma3", type=Path, default=model_path(MODEL_FILES["gemma3"]))
    parser.add_argument("--models", default="smollm2,gemma3", help="comma-separated subset")
    args = parser.parse_args()

    capture_llama_logs()
    llama_cpp.llama_backend_init()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for key in [k.strip() for k in args.models.split(",") if k.strip()]:
        if key not in MODEL_FILES:
            parser.error(f"unknown model {key!r}")
        path: Path = getattr(args, key)
        if not path.is_file():
            print(f"error: {path} not found; run scripts/fetch-models.sh", file=sys.stderr)
            return 1
        name = MODEL_FILES[key]
        print(f"{key}: loading {path}", file=sys.stderr)
        ref = Reference(path)
        tokens = tokens_fixture(ref, name)
        greedy = greedy_fixture(ref, name, key)
        problems += check_known(key, tokens, greedy)
        for stem, data in (("tokens", tokens), ("greedy", greedy)):
            target = args.out_dir / f"{stem}_{key}.json"
            target.write_text(dump(data), encoding="utf-8")
            print(f"wrote {target} ({target.stat().st_size} bytes)", file=sys.stderr)
        for case in greedy["cases"]:
            print(f"  {case['name']}: {case['generated_text'][:70]!r}", file=sys.stderr)
        del ref
    if problems:
        for problem in problems:
            print(f"MISMATCH: {problem}", file=sys.stderr)
        return 1
    print("known facts: ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
