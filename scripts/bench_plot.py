#!/usr/bin/env python3
"""Draws the Hearth vs llama.cpp comparison as an SVG bar chart.

    python3 scripts/bench_plot.py [RESULTS.json] [-o OUT.svg]

RESULTS.json is what scripts/bench-vs-llamacpp.py writes to bench-results/
(default: the newest file there); OUT.svg defaults to the same name with
.svg. Standard library only.
"""
import argparse
import glob
import json
import os
import statistics
from html import escape

COLORS = {"hearth": "#d9480f", "llama.cpp": "#495057"}
METRICS = [("prefill_tok_s", "prefill (tok/s)"), ("decode_tok_s", "decode (tok/s)")]


def medians(runs, key):
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?")
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    path = args.results or max(glob.glob("bench-results/bench-vs-llamacpp-*.json"), default=None)
    if path is None:
        raise SystemExit("no results: run scripts/bench-vs-llamacpp.sh first")
    data = json.load(open(path))
    out = args.output or os.path.splitext(path)[0] + ".svg"

    groups = []  # (label, metric label, hearth, llama)
    for r in data["results"]:
        for key, label in METRICS:
            groups.append((f"{r['threads']}T pp{r['prompt_tokens']}", label,
                           medians(r.get("hearth") or [], key), medians(r.get("llama_cpp") or [], key)))

    width, height, left, top, bottom = 960, 420, 60, 60, 90
    plot_h = height - top - bottom
    panel_w = (width - left - 20) / len(METRICS)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="24" font-size="16" font-weight="bold">Hearth vs llama.cpp — {escape(data["meta"].get("model_name", ""))}, same machine, same run</text>',
             f'<text x="{left}" y="42" fill="#555">{escape(data["meta"].get("date", ""))} · {escape(data["meta"]["cpu"].get("model name", ""))} · median of {data["meta"].get("rounds", "?")} rounds · numbers above bars: hearth / llama.cpp</text>']
    for m, (key, label) in enumerate(METRICS):
        rows = [g for g in groups if g[1] == label]
        vmax = max([max(h, l) for _, _, h, l in rows] + [1.0]) * 1.15
        x0 = left + m * panel_w
        parts.append(f'<text x="{x0 + panel_w / 2 - 40}" y="{top - 4}" font-weight="bold">{escape(label)}</text>')
        parts.append(f'<line x1="{x0}" y1="{top + plot_h}" x2="{x0 + panel_w - 20}" y2="{top + plot_h}" stroke="#999"/>')
        slot = (panel_w - 20) / max(len(rows), 1)
        bar = slot * 0.35
        for i, (group, _, h, l) in enumerate(rows):
            gx = x0 + i * slot + slot * 0.15
            for j, (name, value) in enumerate((("hearth", h), ("llama.cpp", l))):
                bh = plot_h * value / vmax
                parts.append(f'<rect x="{gx + j * bar:.1f}" y="{top + plot_h - bh:.1f}" width="{bar - 2:.1f}" height="{bh:.1f}" fill="{COLORS[name]}"/>')
                parts.append(f'<text x="{gx + j * bar + bar / 2 - 1:.1f}" y="{top + plot_h - bh - 4:.1f}" text-anchor="middle" font-size="10">{value:.0f}</text>')
            ratio = h / l if l else 0.0
            parts.append(f'<text x="{gx + bar:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{escape(group)}</text>')
            parts.append(f'<text x="{gx + bar:.1f}" y="{top + plot_h + 32}" text-anchor="middle" fill="{COLORS["hearth"]}">{ratio:.2f}×</text>')
    for j, name in enumerate(COLORS):
        parts.append(f'<rect x="{left + j * 110}" y="{height - 28}" width="12" height="12" fill="{COLORS[name]}"/>')
        parts.append(f'<text x="{left + j * 110 + 18}" y="{height - 18}">{name}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts))
    print(out)


if __name__ == "__main__":
    main()
