#!/usr/bin/env bash
# Benchmark entry point: builds the Rust samplers, sets up psutil in a venv, then runs
# bench/run.py, which compares the CPU cost per snapshot of Procyon's sampler, a naive
# /proc reader and a psutil monitor. BENCH_TICKS sets the number of one-second ticks
# (default 30). Run from anywhere; it works from the repository root.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release --examples

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
