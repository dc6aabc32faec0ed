#!/usr/bin/env bash
# Prepares the reference environment used by gen_fixtures.py,
# gen_embeddings.py and bench-vs-llamacpp.py: a virtual environment outside
# the repository with llama-cpp-python (which bundles and builds llama.cpp),
# numpy, jinja2, and tokenizers + safetensors (for the sentence-embedding
# reference, which needs no deep-learning framework).
#
# Idempotent: does nothing when the venv already imports them all. Prints the
# venv's python path on stdout; everything else goes to stderr.
#
#   HEARTH_REF_HOME  where the venv lives (default ~/.cache/hearth-ref)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
# Small pure-Python-API packages, installed whenever one is missing.
EXTRA_PACKAGES=(numpy jinja2 "tokenizers==0.23.3" "safetensors==0.8.0")
ref_home="${HEARTH_REF_HOME:-$HOME/.cache/hearth-ref}"
venv="$ref_home/venv"
python="$venv/bin/python"

if [[ ! -x "$python" ]]; then
    echo "creating $venv" >&2
    mkdir -p "$ref_home"
    python3 -m venv "$venv"
fi

if "$python" -c "import llama_cpp, numpy, jinja2, tokenizers, safetensors" >/dev/null 2>&1; then
    installed="$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
    if [[ "$installed" != "$LLAMA_CPP_PYTHON_VERSION" ]]; then
        echo "note: $venv has llama-cpp-python $installed (expected $LLAMA_CPP_PYTHON_VERSION); keeping it" >&2
    fi
elif "$python" -c "import llama_cpp" >/dev/null 2>&1; then
    echo "installing ${EXTRA_PACKAGES[*]} into $venv" >&2
    "$python" -m pip install --quiet "${EXTRA_PACKAGES[@]}" >&2
else
    jobs="$(nproc)"
    echo "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION from source into $venv" >&2
    echo "this compiles llama.cpp and takes 10-25 minutes on 2 cores (CMAKE_BUILD_PARALLEL_LEVEL=$jobs)" >&2
    # llama.cpp's default CMake options: passing -DLLAMA_BUILD_TOOLS=ON in
    # CMAKE_ARGS breaks the build of this sdist.
    CMAKE_BUILD_PARALLEL_LEVEL="$jobs" "$python" -m pip install \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" "${EXTRA_PACKAGES[@]}" >&2
    "$python" -c "import llama_cpp" >&2
fi

echo "$python"
