#!/usr/bin/env bash
# Serving benchmark: `hearth serve` against llama.cpp's server on the same
# workloads (see bench-serve.py --help). Builds the release binary, prepares
# the llama.cpp reference venv (scripts/reference/setup.sh; the first time
# this builds llama.cpp, 10-25 minutes on 2 cores) and the server's Python
# packages, then runs both servers one after the other.
#
#   scripts/bench-serve.sh [--threads 2] [--concurrency 1 4 16] [--out bench-results/serve.json]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$("$root/scripts/reference/setup.sh")"
if ! "$python" -c "import uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings, aiohttp" >/dev/null 2>&1; then
    echo "installing llama_cpp.server's packages and aiohttp into the reference venv" >&2
    "$python" -m pip install --quiet uvicorn fastapi sse-starlette starlette-context pydantic-settings aiohttp >&2
fi
(cd "$root" && cargo build --release --locked -p hearth >&2)
"$root/target/release/hearth" models pull smollm2-135m-instruct >&2
model="${HEARTH_HOME:-$HOME/.cache/hearth}/models/smollm2-135m-instruct/model.gguf"
mkdir -p "$root/bench-results"
"$python" "$root/scripts/bench-serve.py" --hearth "$root/target/release/hearth" \
    --model-path "$model" --out "$root/bench-results/serve.json" "$@"
