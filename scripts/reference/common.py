"""Shared helpers for the llama.cpp reference scripts.

Everything here talks to llama.cpp through llama-cpp-python's low-level
ctypes bindings (`llama_cpp.llama_*`), never through the high-level `Llama`
sampling/eval helpers, so what is measured or recorded is llama.cpp itself.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path

import llama_cpp

REPO_ROOT = Path(__file__).resolve().parents[2]

MODEL_FILES = {
    "smollm2": "smollm2-135m-instruct",
    "gemma3": "gemma3-270m",
}


def hearth_home() -> Path:
    """$HEARTH_HOME, default ~/.cache/hearth (the same rule as hearth-core)."""
    value = os.environ.get("HEARTH_HOME")
    if value:
        return Path(value)
    return Path.home() / ".cache" / "hearth"


def model_path(name: str) -> Path:
    """`<hearth home>/models/<name>/model.gguf`."""
    return hearth_home() / "models" / name / "model.gguf"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_LOG_LINES: list[str] = []


@llama_cpp.llama_log_callback
def _collect_log(level, text, user_data):  # noqa: ARG001 (ctypes signature)
    if text:
        _LOG_LINES.append(text.decode("utf-8", errors="replace"))


def capture_llama_logs() -> list[str]:
    """Routes llama.cpp's log into a list (instead of stderr) and returns it.

    The callback object is module-level so ctypes keeps it alive.
    """
    llama_cpp.llama_log_set(_collect_log, ctypes.c_void_p(0))
    return _LOG_LINES


def ggml_build() -> dict:
    """Version strings of the llama.cpp / ggml libraries bundled in the wheel."""
    info: dict = {
        "llama_cpp_python": llama_cpp.__version__,
        "llama_version": _decode(llama_cpp.llama_version()),
        "system_info": _decode(llama_cpp.llama_print_system_info()).strip(),
    }
    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    try:
        ggml = ctypes.CDLL(str(lib))
        ggml.ggml_commit.restype = ctypes.c_char_p
        ggml.ggml_version.restype = ctypes.c_char_p
        info["ggml_commit"] = _decode(ggml.ggml_commit())
        info["ggml_version"] = _decode(ggml.ggml_version())
    except (OSError, AttributeError):
        pass
    return info


def _decode(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def tokenize(vocab, text: str, add_special: bool, parse_special: bool) -> list[int]:
    """`llama_tokenize` on the UTF-8 bytes of `text`.

    add_special: add BOS/EOS where the model's metadata asks for them.
    parse_special: match special/control token text (e.g. "<|im_start|>")
    as single tokens instead of tokenizing it as plain text.
    """
    data = text.encode("utf-8")
    capacity = len(data) + 16
    while True:
        buffer = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(
            vocab, data, len(data), buffer, capacity, add_special, parse_special
        )
        if count >= 0:
            return list(buffer[:count])
        if -count <= capacity:
            raise RuntimeError(f"llama_tokenize failed ({count}) on {text!r}")
        capacity = -count


def token_piece(vocab, token: int, special: bool) -> bytes:
    """`llama_token_to_piece` with lstrip 0."""
    capacity = 64
    while True:
        buffer = ctypes.create_string_buffer(capacity)
        count = llama_cpp.llama_token_to_piece(vocab, token, buffer, capacity, 0, special)
        if count >= 0:
            return buffer.raw[:count]
        if -count <= capacity:
            raise RuntimeError(f"llama_token_to_piece failed ({count}) for {token}")
        capacity = -count
