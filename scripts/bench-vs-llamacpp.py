#!/usr/bin/env python3
"""Runs the same prefill + decode work in Hearth and in llama.cpp and prints
a markdown comparison table (for BENCHMARKS.md).

Run it through scripts/bench-vs-llamacpp.sh (which prepares the reference
venv first), or directly with the reference venv's python:

    ~/.cache/hearth-ref/venv/bin/python scripts/bench-vs-llamacpp.py [options]

For every (threads, prompt tokens) pair and every round, Hearth
(`hearth bench ... --json`) and llama.cpp (a fresh python subprocess of this
script, so its peak RSS is its own) each run once, alternating which goes
first, so machine noise hits both. Each run does one warm-up pass and then
the measured pass(es): the prompt evaluated in one call, then the decode
tokens one at a time with greedy argmax. Reported values are medians over
rounds.

llama.cpp is driven through llama-cpp-python's low-level bindings:
llama_decode on llama_batch_get_one, logits of the last position only via
llama_get_logits_ith, argmax by numpy on a ctypes view (no copy into
Python lists, which would cost ~4 ms per token).

Output: the markdown report on stdout, progress on stderr, and the raw JSON
in bench-results/.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The text `hearth bench` repeats to build its prompt (crates/hearth/src/bench.rs);
# llama.cpp tokenizes the same text so both evaluate the same kind of prompt.
FILLER = (
    "The old lighthouse keeper climbed the spiral stairs every evening, "
    "counting the steps as the sea wind rattled the windows. Ships passed far out on the "
    "horizon while gulls circled the rocks below, and the lamp turned its slow bright circle "
    "over the water until morning came again. "
)

# llama.cpp figures measured earlier (FINDINGS.md, SmolLM2-135M Q4_1, on an
# AVX2 Zen 3 machine) to sanity-check this run's llama.cpp numbers.
KNOWN_LLAMA_CPP = {
    # threads: {metric: tok/s}
    2: {"decode": 99.5, "prefill_128": 270.0, "prefill_512": 261.0},
    1: {"decode": 70.8, "prefill_128": 142.0, "prefill_512": 141.5},
}

METRICS = [
    # key, label, unit, higher_is_better
    ("prefill_tok_s", "prefill", "tok/s", True),
    ("decode_tok_s", "decode", "tok/s", True),
    ("ttft_ms", "time to first token", "ms", False),
    ("peak_rss_mb", "peak RSS", "MB", False),
]


def hearth_home() -> Path:
    value = os.environ.get("HEARTH_HOME")
    return Path(value) if value else Path.home() / ".cache" / "hearth"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# llama.cpp worker (runs in its own process)
# ---------------------------------------------------------------------------


def read_status_kb(field: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def llama_worker(spec: dict) -> dict:
    """Loads the model in llama.cpp and measures prefill and decode.

    spec: model, threads, prompt_tokens, gen_tokens, repetitions.
    """
    import llama_cpp
    import numpy as np

    baseline_rss_mb = read_status_kb("VmRSS") / 1024.0
    log_lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):  # noqa: ARG001 (ctypes signature)
        if text:
            log_lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()

    threads = int(spec["threads"])
    prompt_tokens = int(spec["prompt_tokens"])
    gen_tokens = int(spec["gen_tokens"])
    repetitions = int(spec["repetitions"])

    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(spec["model"].encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {spec['model']}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    params = llama_cpp.llama_context_default_params()
    flash_attn_default = params.flash_attn_type
    requested_ctx = prompt_tokens + gen_tokens + 1
    params.n_ctx = requested_ctx
    params.n_batch = max(512, prompt_tokens)
    params.n_ubatch = 512
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context")
    memory = llama_cpp.llama_get_memory(ctx)

    text = FILLER.encode()
    buffer = (llama_cpp.llama_token * (len(text) + 16))()
    count = llama_cpp.llama_tokenize(vocab, text, len(text), buffer, len(buffer), False, False)
    if count <= 0:
        raise RuntimeError("llama.cpp produced no tokens for the benchmark text")
    filler = list(buffer[:count])
    prompt = (filler * (prompt_tokens // count + 1))[:prompt_tokens]
    prompt_array = (llama_cpp.llama_token * prompt_tokens)(*prompt)
    one = (llama_cpp.llama_token * 1)()

    def argmax_last() -> int:
        pointer = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(pointer, shape=(n_vocab,)).argmax())

    def decode(array, n: int) -> None:
        status = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, n))
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    prefill, decode_speed, ttft = [], [], []
    generated: list[int] = []
    for rep in range(repetitions + 1):  # rep 0 is the warm-up
        llama_cpp.llama_memory_clear(memory, True)
        start = time.perf_counter()
        decode(prompt_array, prompt_tokens)
        token = argmax_last()
        prefill_s = time.perf_counter() - start
        generated = [token]
        decode_start = time.perf_counter()
        for _ in range(gen_tokens):
            one[0] = token
            decode(one, 1)
            token = argmax_last()
            generated.append(token)
        decode_s = time.perf_counter() - decode_start
        if rep == 0:
            continue
        prefill.append(prompt_tokens / prefill_s)
        ttft.append(prefill_s * 1e3)
        if gen_tokens > 0:
            decode_speed.append(gen_tokens / decode_s)

    log_text = "".join(log_lines)
    if "Flash Attention enabled" in log_text:
        flash_attn_resolved = "enabled"
    elif "Flash Attention disabled" in log_text or "flash_attn            = disabled" in log_text:
        flash_attn_resolved = "disabled"
    else:
        flash_attn_resolved = "unknown"

    result = {
        "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": statistics.median(decode_speed) if decode_speed else 0.0,
        "ttft_ms": statistics.median(ttft),
        "peak_rss_mb": read_status_kb("VmHWM") / 1024.0,
        "baseline_rss_mb": baseline_rss_mb,
        "runs": {"prefill_tok_s": prefill, "decode_tok_s": decode_speed, "ttft_ms": ttft},
        "n_ctx_requested": requested_ctx,
        "n_ctx": llama_cpp.llama_n_ctx(ctx),
        "n_batch": llama_cpp.llama_n_batch(ctx),
        "n_ubatch": llama_cpp.llama_n_ubatch(ctx),
        "threads": threads,
        "flash_attn_default": _text(llama_cpp.llama_flash_attn_type_name(flash_attn_default)),
        "flash_attn_resolved": flash_attn_resolved,
        "prompt_head": prompt[:8],
        "generated_head": generated[:8],
    }
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return result


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def run_llama(args, threads: int, prompt_tokens: int) -> dict:
    spec = {
        "model": str(args.model),
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "repetitions": args.inner_repetitions,
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--llama-worker", json.dumps(spec)]
    return run_json(command, args.timeout)


def run_hearth(args, threads: int, prompt_tokens: int) -> dict:
    command = [
        str(args.hearth_bin), "bench",
        "--model", str(args.model),
        "--threads", str(threads),
        "--prompt-tokens", str(prompt_tokens),
        "--gen-tokens", str(args.gen_tokens),
        "--repetitions", str(args.inner_repetitions),
        "--json",
    ]
    return run_json(command, args.timeout)


def run_json(command: list[str], timeout: float) -> dict:
    """Runs `command` and parses the last stdout line that is a JSON object.

    Never raises: a failure is returned as {"error": ...}.
    """
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    except OSError as error:
        return {"error": str(error)}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"error": f"exit status {done.returncode}: " + " | ".join(tail)}
    for line in reversed(done.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {"error": "no JSON object on stdout"}


def build_hearth() -> str | None:
    """`cargo build --release -p hearth`; returns an error message or None."""
    log("building hearth: cargo build --release -p hearth")
    try:
        done = subprocess.run(
            ["cargo", "build", "--release", "-p", "hearth"],
            cwd=REPO_ROOT, capture_output=True, text=True,
        )
    except OSError as error:
        return str(error)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
        return "cargo build failed: " + " | ".join(errors[:5] or done.stderr.strip().splitlines()[-5:])
    return None


def cpu_info() -> dict:
    info: dict = {"logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        if key in ("model name", "cpu family", "model", "stepping") and key not in info:
            info[key] = value
        if key == "flags" and "flags" not in info:
            flags = set(value.split())
            info["flags"] = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni") if f in flags]
    return info


def llama_cpp_versions() -> dict:
    import llama_cpp

    info = {"llama_cpp_python": llama_cpp.__version__}
    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    try:
        ggml = ctypes.CDLL(str(lib))
        ggml.ggml_commit.restype = ctypes.c_char_p
        info["ggml_commit"] = _text(ggml.ggml_commit())
    except (OSError, AttributeError):
        pass
    info["system_info"] = _text(llama_cpp.llama_print_system_info()).strip()
    return info


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (%)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text(encoding="ascii").splitlines():
            if line.startswith("some "):
                for field in line.split()[1:]:
                    if field.startswith("avg10="):
                        return float(field.split("=", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def machine_load() -> dict:
    return {"load_average": os.getloadavg(), "cpu_pressure_avg10_pct": cpu_pressure()}


def median_of(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if "error" not in run and isinstance(run.get(key), (int, float))]
    return statistics.median(values) if values else None


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def ratio(hearth: float | None, llama: float | None) -> str:
    if hearth is None or llama is None or llama == 0:
        return "—"
    return f"{hearth / llama:.2f}×"


def contexts(results: list[dict]) -> str:
    sizes = []
    for entry in results:
        for run in entry["llama_cpp"]:
            if "n_ctx" in run:
                sizes.append(f"pp{entry['prompt_tokens']} → {run['n_ctx']}")
                break
    return ", ".join(dict.fromkeys(sizes)) or "?"


def report(meta: dict, results: list[dict]) -> str:
    lines = [
        f"### Hearth vs llama.cpp — {meta['model_name']}",
        "",
        f"- date: {meta['date']}",
        f"- CPU: {meta['cpu'].get('model name', '?')} (family {meta['cpu'].get('cpu family', '?')}, "
        f"model {meta['cpu'].get('model', '?')}; {meta['cpu'].get('logical_cpus')} logical CPUs; "
        f"{', '.join(meta['cpu'].get('flags', []))})",
        f"- llama.cpp: llama-cpp-python {meta['llama_cpp'].get('llama_cpp_python')} "
        f"(ggml {meta['llama_cpp'].get('ggml_commit', '?')}), flash attention "
        f"{meta['flash_attn']}, n_ctx = N + {meta['gen_tokens']} + 1 ({contexts(results)} after "
        f"llama.cpp's padding), n_batch = n_ubatch = 512 (llama.cpp clamps both to the requested n_ctx), mmap on",
        f"- work: prompt of N tokens in one call, then {meta['gen_tokens']} tokens decoded one at a "
        f"time (greedy), after one warm-up pass; median of {meta['rounds']} alternating rounds "
        f"(× {meta['inner_repetitions']} inner repetitions)",
        f"- machine load: load average {meta['load_at_start']['load_average'][0]:.2f} at start, "
        f"{meta['load_at_end']['load_average'][0]:.2f} at end (1 min); CPU pressure (some, avg10) "
        f"{fmt(meta['load_at_start']['cpu_pressure_avg10_pct'])}% at start, "
        f"{fmt(meta['load_at_end']['cpu_pressure_avg10_pct'])}% at end",
        f"- command: `{meta['command']}`",
        "",
        "| threads | pp | metric | hearth | llama.cpp | ratio (hearth/llama.cpp) |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results:
        for key, label, unit, higher_is_better in METRICS:
            hearth = median_of(entry["hearth"], key)
            llama = median_of(entry["llama_cpp"], key)
            better = "higher is better" if higher_is_better else "lower is better"
            name = f"{label} pp{entry['prompt_tokens']}" if key in ("prefill_tok_s", "ttft_ms") else (
                f"decode tg{meta['gen_tokens']}" if key == "decode_tok_s" else label)
            lines.append(
                f"| {entry['threads']} | {entry['prompt_tokens']} | {name} ({unit}, {better}) "
                f"| {fmt(hearth)} | {fmt(llama)} | {ratio(hearth, llama)} |"
            )
    baselines = [median_of(entry["llama_cpp"], "baseline_rss_mb") for entry in results]
    baselines = [value for value in baselines if value is not None]
    lines.append("")
    pressure = [meta[key]["cpu_pressure_avg10_pct"] for key in ("load_at_start", "load_at_end")]
    pressure += [run.get("cpu_pressure_before_pct") for entry in results
                 for side in ("hearth", "llama_cpp") for run in entry[side]]
    busiest = max((value for value in pressure if value is not None), default=None)
    if busiest is not None and busiest > 10.0:
        lines.append(
            f"**Warning: other processes competed for the CPU during this run (CPU pressure up to "
            f"{busiest:.0f}%); the numbers are noisy. llama.cpp's multi-threaded decode (OpenMP, "
            f"spinning threads) degrades sharply when it does not have the cores to itself.**"
        )
        lines.append("")
    if baselines:
        lines.append(
            f"llama.cpp's peak RSS is that of its Python process: the interpreter and numpy alone hold "
            f"~{statistics.median(baselines):.0f} MB before the model is loaded."
        )
    errors = sorted({f"{side.replace('_', '.')} (t={entry['threads']}, pp{entry['prompt_tokens']}): {run['error']}"
                     for entry in results for side in ("hearth", "llama_cpp")
                     for run in entry[side] if "error" in run})
    if meta.get("hearth_error"):
        errors.insert(0, f"hearth: {meta['hearth_error']}")
    for error in errors:
        lines.append(f"- failed run: {error}")

    lines += [
        "",
        "llama.cpp sanity check against earlier measurements (FINDINGS.md: llama-bench-style figures on an "
        "AVX2 Zen 3 machine; its tg128 starts from an empty context, while decode here follows the "
        "N-token prompt, so pp512 decode is expected to be lower):",
        "",
    ]
    for entry in results:
        known = KNOWN_LLAMA_CPP.get(entry["threads"])
        if not known:
            continue
        decode = median_of(entry["llama_cpp"], "decode_tok_s")
        prefill = median_of(entry["llama_cpp"], "prefill_tok_s")
        expected_prefill = known.get(f"prefill_{entry['prompt_tokens']}")
        lines.append(
            f"- {entry['threads']} thread(s), pp{entry['prompt_tokens']}: prefill {fmt(prefill)} tok/s "
            f"(earlier {fmt(expected_prefill)}), decode {fmt(decode)} tok/s (earlier {fmt(known['decode'])})"
        )
    return "\n".join(lines) + "\n"


def parse_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path,
                        default=hearth_home() / "models" / "smollm2-135m-instruct" / "model.gguf")
    parser.add_argument("--threads", type=parse_list, default=[1, 2], help="comma-separated (default 1,2)")
    parser.add_argument("--prompt-tokens", type=parse_list, default=[128, 512], help="comma-separated (default 128,512)")
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3,
                        help="alternating rounds per engine and configuration; medians are reported (default 3)")
    parser.add_argument("--inner-repetitions", type=int, default=1,
                        help="measured passes inside each run, after its warm-up (default 1)")
    parser.add_argument("--hearth-bin", type=Path, default=REPO_ROOT / "target" / "release" / "hearth")
    parser.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    parser.add_argument("--only", choices=["hearth", "llama.cpp"], help="run one engine only")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench-results")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--llama-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.llama_worker:
        print(json.dumps(llama_worker(json.loads(args.llama_worker))))
        return 0

    if args.repetitions < 1 or args.inner_repetitions < 1 or args.gen_tokens < 0:
        parser.error("--repetitions and --inner-repetitions must be at least 1")
    if not args.model.is_file():
        log(f"error: {args.model} not found; run scripts/fetch-models.sh")
        return 1

    run_hearth_side = args.only != "llama.cpp"
    run_llama_side = args.only != "hearth"
    hearth_error = None
    if run_hearth_side and not args.no_build:
        hearth_error = build_hearth()
    if run_hearth_side and hearth_error is None and not args.hearth_bin.is_file():
        hearth_error = f"{args.hearth_bin} does not exist"
    if hearth_error:
        log(f"warning: {hearth_error}; measuring llama.cpp only")
        run_hearth_side = False

    started = dt.datetime.now(dt.timezone.utc)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_info(),
        "kernel": platform.release(),
        "load_at_start": machine_load(),
        "model": str(args.model),
        "model_name": args.model.parent.name if args.model.name == "model.gguf" else args.model.name,
        "gen_tokens": args.gen_tokens,
        "rounds": args.repetitions,
        "inner_repetitions": args.inner_repetitions,
        "llama_cpp": llama_cpp_versions(),
        "hearth_error": hearth_error,
        "command": "scripts/bench-vs-llamacpp.sh " + shlex.join(sys.argv[1:]),
        "flash_attn": "?",
    }

    results = []
    for threads in args.threads:
        for prompt_tokens in args.prompt_tokens:
            entry = {"threads": threads, "prompt_tokens": prompt_tokens, "hearth": [], "llama_cpp": []}
            for round_index in range(args.repetitions):
                order = ["hearth", "llama_cpp"] if round_index % 2 == 0 else ["llama_cpp", "hearth"]
                for side in order:
                    if side == "hearth" and not run_hearth_side:
                        continue
                    if side == "llama_cpp" and not run_llama_side:
                        continue
                    pressure = cpu_pressure()
                    begin = time.perf_counter()
                    if side == "hearth":
                        run = run_hearth(args, threads, prompt_tokens)
                    else:
                        run = run_llama(args, threads, prompt_tokens)
                    run["wall_s"] = time.perf_counter() - begin
                    run["cpu_pressure_before_pct"] = pressure
                    entry[side].append(run)
                    label = "hearth   " if side == "hearth" else "llama.cpp"
                    if "error" in run:
                        log(f"[t={threads} pp={prompt_tokens} round {round_index + 1}/{args.repetitions}] "
                            f"{label} FAILED: {run['error']}")
                    else:
                        log(f"[t={threads} pp={prompt_tokens} round {round_index + 1}/{args.repetitions}] "
                            f"{label} prefill {run['prefill_tok_s']:.1f} tok/s, decode {run['decode_tok_s']:.1f} "
                            f"tok/s, ttft {run['ttft_ms']:.1f} ms, peak RSS {run['peak_rss_mb']:.0f} MB")
                        if side == "llama_cpp":
                            meta["flash_attn"] = f"{run['flash_attn_default']} → {run['flash_attn_resolved']}"
            results.append(entry)

    meta["load_at_end"] = machine_load()
    markdown = report(meta, results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    raw_path = args.out_dir / f"bench-vs-llamacpp-{stamp}.json"
    raw_path.write_text(json.dumps({"meta": meta, "results": results, "markdown": markdown}, indent=1) + "\n",
                        encoding="utf-8")
    log(f"raw results: {raw_path}")
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
