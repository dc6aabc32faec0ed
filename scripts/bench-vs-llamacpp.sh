#!/usr/bin/env bash
# Compares Hearth with llama.cpp on the same prefill + decode work and prints
# a markdown table (see bench-vs-llamacpp.py --help for the options).
#
#   scripts/bench-vs-llamacpp.sh [--threads 1,2] [--prompt-tokens 128,512] [--repetitions 3] ...
#
# Prepares the llama.cpp reference venv first (scripts/reference/setup.sh;
# the first time this builds llama.cpp, 10-25 minutes on 2 cores).
set -euo pipefail

scripts_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="$("$scripts_dir/reference/setup.sh")"
"$python" "$scripts_dir/bench-vs-llamacpp.py" "$@"
# The chart of the newest results, beside them in bench-results/.
"$python" "$scripts_dir/bench_plot.py" >&2
