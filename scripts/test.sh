#!/usr/bin/env bash
# The project's test command: fetches the test models once into the cache,
# then checks formatting, lints, runs every test and builds the docs.
# One dev profile (dependencies and kernels optimised) serves all steps, so
# each crate is compiled once for clippy and once for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Property tests draw from a fixed seed so that a run can be reproduced;
# set PROPTEST_RNG_SEED to explore other inputs.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261125}"
step() { printf '\n==> %s\n' "$*" >&2; }

step "fetching test models into ${HEARTH_HOME:-$HOME/.cache/hearth}"
scripts/fetch-models.sh

step "OpenAI client environment for the server tests"
scripts/setup-client-venv.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "doc tests"
cargo test --workspace --locked --doc

# The test run comes last so that its summary closes the output.
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

