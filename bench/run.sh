#!/usr/bin/env bash
# Benchmark entry point: builds the Rust samplers, the collector and the agent, sets up
# psutil in a venv, then runs bench/run.py, which compares the CPU cost per snapshot of
# Procyon's sampler, a naive /proc reader and a psutil monitor, then measures the
# agent's CPU and memory at 1 s and 2 s intervals against a local collector.
# BENCH_TICKS sets the number of one-second sampler ticks (default 30), AGENT_BENCH_SECS
# the agent measurement window in seconds (default 30). Run from anywhere; it works
# from the repository root.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release --examples --bin procyon
# The agent on its own, as it ships: built together with the procyon package, cargo
# would unify features and link the collector's (server) code into it.
cargo build --release -p procyon-agent

# Ask cargo where its target directory is, so CARGO_TARGET_DIR and config are honoured.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

venv="$target_dir/bench-venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import psutil' 2>/dev/null; then
    echo "installing psutil into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check psutil
fi

exec python3 bench/run.py --target-dir "$target_dir" --python "$venv/bin/python"
