#!/usr/bin/env bash
# Creates the Python environment in which the official OpenAI client drives
# `hearth serve` (scripts/openai_client_check.py, run by the `serve` tests of
# crates/hearth): $HEARTH_HOME/client-venv, where $HEARTH_HOME defaults to
# ${XDG_CACHE_HOME:-$HOME/.cache}/hearth as in hearth-core.
# Idempotent and quick: an environment that already has the pinned client is
# left as it is.
#
# Usage: scripts/setup-client-venv.sh
# Environment: HEARTH_HOME, HEARTH_PYTHON (default python3), pip's own settings.
set -euo pipefail

# The client version the compatibility checks are written against.
OPENAI_VERSION=2.8.1

python="${HEARTH_PYTHON:-python3}"
home="${HEARTH_HOME:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/hearth}"
venv="$home/client-venv"
log() { printf 'setup-client-venv: %s\n' "$*" >&2; }

if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "import sys, openai; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    exit 0
fi

log "creating $venv with openai==$OPENAI_VERSION"
mkdir -p "$home"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
"$venv/bin/python" -c "import openai; print('setup-client-venv: openai', openai.__version__)" >&2
