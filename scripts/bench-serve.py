#!/usr/bin/env python3
"""Serving benchmark: the same workloads against `hearth serve` and
llama.cpp's server (`python -m llama_cpp.server`, default settings), same
model, same threads, one after the other in one run.

Workloads (all chat completions, greedy):
  * throughput at concurrency 1, 4 and 16: total completion tokens per
    second of wall time, and time to first token (streamed) p50/p99;
  * shared system prompt: a ~400-token system prompt with short, distinct
    user questions at concurrency 4, where prefix caching matters: TTFT p50.

Writes JSON to --out and prints a table. Progress goes to stderr.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import aiohttp

TOPICS = [
    "a lighthouse keeper", "a city garden", "the first snow", "a lost key",
    "a night train", "an old bakery", "a mountain village", "a river crossing",
    "a quiet library", "a summer storm", "a fishing boat", "a market morning",
    "a winter festival", "a clock tower", "a desert road", "a forest path",
]

SYSTEM = (
    "You are the voice assistant of a small home weather station on a hill "
    "above a harbour town. The station has a barometer, a rain gauge, a wind "
    "vane with an anemometer, an outdoor thermometer and hygrometer, and an "
    "indoor air-quality sensor that reports carbon dioxide and fine dust. "
    "Readings arrive every five minutes and are kept for thirty days. When "
    "you answer, speak in plain words as if talking to a neighbour, use "
    "metric units unless asked otherwise, round numbers sensibly, and say so "
    "when a reading is missing or looks implausible rather than guessing. "
    "Keep answers to two or three sentences, never use lists or headings, "
    "and do not repeat the question. If asked about the forecast, explain "
    "that the station only measures and cannot predict, but describe what "
    "the recent trend of pressure suggests in cautious terms. If asked about "
    "safety, such as strong wind or ice on the roads, remind the listener to "
    "follow official warnings. You do not have internet access and cannot "
    "look anything up beyond the station's own readings. The owner of the "
    "station likes short, friendly answers and dislikes exclamation marks. "
    "The harbour master sometimes asks about gusts above forty kilometres "
    "per hour, and the gardener next door asks about overnight frost. "
    "Answer both kindly and precisely, and remember that the rain gauge "
    "overflows above eighty millimetres in a day, so totals above that are "
    "lower bounds. The thermometer sits in the shade on the north wall."
)

QUESTIONS = [
    "Is it windy right now?", "Will there be frost tonight?",
    "How much rain fell today?", "What is the pressure trend?",
    "Is the air inside stuffy?", "How warm is it outside?",
    "Should I bring the boat in?", "Is the humidity high?",
    "Did it rain yesterday?", "What was the strongest gust today?",
    "Is the dust level okay?", "Is it colder than this morning?",
    "Can I hang the washing out?", "How dry has the week been?",
    "Is the rain gauge full?", "Are the roads icy?",
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


async def one_request(session, url, model, messages, max_tokens):
    """Streams one chat completion; returns (ttft_s, completion_tokens, total_s)."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    ttft = None
    chunks = 0
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            text = await resp.text()
            raise RuntimeError(f"HTTP {resp.status}: {text[:200]}")
        async for raw in resp.content:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
    total = time.perf_counter() - start
    return ttft if ttft is not None else total, chunks, total


async def run_workload(url, model, requests, concurrency, max_tokens):
    queue = list(requests)
    results = []
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker():
            while queue:
                messages = queue.pop(0)
                results.append(await one_request(session, url, model, messages, max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r[1] for r in results)
    ttfts = [r[0] * 1e3 for r in results]
    return {
        "requests": len(results),
        "concurrency": concurrency,
        "completion_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
    }


def story_requests(n):
    return [
        [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}]
        for i in range(n)
    ]


def shared_prefix_requests(n):
    return [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ]
        for i in range(n)
    ]


async def wait_ready(url, proc, timeout=300):
    deadline = time.time() + timeout
    async with aiohttp.ClientSession() as session:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/v1/models") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("server did not become ready")


def bench_server(name, cmd, url, model, args, env=None):
    log(f"== {name}: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        asyncio.run(wait_ready(url, proc))
        out = {}
        # Warm-up (page in the weights).
        asyncio.run(run_workload(url, model, story_requests(1), 1, 8))
        for c in args.concurrency:
            n = max(args.requests, c * 2)
            log(f"   {name}: throughput, concurrency {c}, {n} requests")
            out[f"c{c}"] = asyncio.run(run_workload(url, model, story_requests(n), c, args.max_tokens))
            log(f"     {out[f'c{c}']['tokens_per_s']:.1f} tok/s, TTFT p50 {out[f'c{c}']['ttft_p50_ms']:.0f} ms")
        log(f"   {name}: shared system prompt, concurrency {args.shared_concurrency}")
        out["shared_prefix"] = asyncio.run(
            run_workload(url, model, shared_prefix_requests(args.shared_requests),
                         args.shared_concurrency, args.shared_max_tokens))
        log(f"     TTFT p50 {out['shared_prefix']['ttft_p50_ms']:.0f} ms")
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hearth", required=True, help="path of the hearth binary")
    ap.add_argument("--model-path", required=True, help="the GGUF both servers load")
    ap.add_argument("--model-name", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=16, help="requests per throughput level (at least 2x concurrency)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--shared-requests", type=int, default=16)
    ap.add_argument("--shared-concurrency", type=int, default=4)
    ap.add_argument("--shared-max-tokens", type=int, default=16)
    ap.add_argument("--only", choices=["hearth", "llama.cpp"], help="run one server only")
    ap.add_argument("--no-interrupt", action="store_true",
                    help="also run llama.cpp's server with interrupt_requests off (requests queue instead of cutting the running stream)")
    ap.add_argument("--out", default="bench-serve.json")
    args = ap.parse_args()

    results = {"threads": args.threads, "max_tokens": args.max_tokens}
    if args.only in (None, "hearth"):
        port = 18181
        results["hearth"] = bench_server(
            "hearth",
            [args.hearth, "serve", "--model", args.model_path, "--port", str(port),
             "--threads", str(args.threads), "--context", "4096"],
            f"http://127.0.0.1:{port}", args.model_name, args)
    if args.only in (None, "llama.cpp"):
        port = 18182
        results["llama.cpp"] = bench_server(
            "llama.cpp",
            [sys.executable, "-m", "llama_cpp.server", "--model", args.model_path,
             "--model_alias", args.model_name, "--port", str(port),
             "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
             "--n_ctx", "4096"],
            f"http://127.0.0.1:{port}", args.model_name, args)
        if args.no_interrupt:
            port = 18183
            results["llama.cpp (no interrupt)"] = bench_server(
                "llama.cpp (no interrupt)",
                [sys.executable, "-m", "llama_cpp.server", "--model", args.model_path,
                 "--model_alias", args.model_name, "--port", str(port),
                 "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                 "--n_ctx", "4096", "--interrupt_requests", "False"],
                f"http://127.0.0.1:{port}", args.model_name, args)

    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    peers = [k for k in results if k.startswith("llama.cpp")]
    if "hearth" in results and peers:
        h = results["hearth"]
        print("| workload | hearth | " + " | ".join(f"{p} | ratio" for p in peers) + " |")
        print("|---|---|" + "---|---|" * len(peers))

        def row(label, get, fmt):
            cells = [f"{fmt(get(h))}"]
            for p in peers:
                v = get(results[p])
                cells.append(f"{fmt(v)} | {get(h) / v:.2f}x")
            print(f"| {label} | " + " | ".join(cells) + " |")

        for c in args.concurrency:
            row(f"throughput, concurrency {c} (tok/s)", lambda r: r[f"c{c}"]["tokens_per_s"], lambda v: f"{v:.1f}")
            row(f"TTFT p50, concurrency {c} (ms)", lambda r: r[f"c{c}"]["ttft_p50_ms"], lambda v: f"{v:.0f}")
            row(f"TTFT p99, concurrency {c} (ms)", lambda r: r[f"c{c}"]["ttft_p99_ms"], lambda v: f"{v:.0f}")
        row("shared system prompt, TTFT p50 (ms)", lambda r: r["shared_prefix"]["ttft_p50_ms"], lambda v: f"{v:.0f}")


if __name__ == "__main__":
    main()
