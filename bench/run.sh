#!/usr/bin/env bash
# The benchmark report in one command (`make bench` runs it after installing what is
# missing and building the dashboard). It builds the collector, the agent and every
# example in release mode, sets up a Python venv with psutil (and Glances from PyPI,
# when it installs), then runs bench/run.py, which measures every part side by side
# and writes <target dir>/bench/report.json. See bench/run.py for the parts and the
# environment variables that size them. Run from anywhere.
set -euo pipefail

cd "$(dirname "$0")/.."

# The fuzz targets (every decoder of outside bytes: uploads, agent frames, deltas,
# dashboards, netlink, /proc, the filter language), run far longer than `cargo test` runs them.
# BENCH_FUZZ_CASES (default 20000, about 10 s per 1,000 on a development machine) sets
# the cases per target; 0 skips them, as does a BENCH_ONLY without `fuzz`. A debug
# build, so that an arithmetic overflow is caught as the panic it is there. A failure
# stops the bench: it is a bug to fix first.
fuzz_cases="${BENCH_FUZZ_CASES:-20000}"
if [ -n "${BENCH_ONLY:-}" ] && [[ ",$BENCH_ONLY," != *,fuzz,* ]]; then
    fuzz_cases=0
fi
if [ "$fuzz_cases" != 0 ]; then
    echo "fuzzing: $fuzz_cases cases per target"
    PROCYON_FUZZ_CASES="$fuzz_cases" cargo test --all-features -p procyon --lib fuzz
fi
# `fuzz` is this script's part, not the report's.
if [ -n "${BENCH_ONLY:-}" ]; then
    BENCH_ONLY=$(tr ',' '\n' <<<"$BENCH_ONLY" | { grep -vx 'fuzz' || true; } | paste -sd, -)
    [ -n "$BENCH_ONLY" ] || exit 0
    export BENCH_ONLY
fi

# With the desktop feature, so one binary serves as the collector and as the desktop
# app (bench/desktop.sh builds the same and so reuses it).
cargo build --release --examples --bin procyon --features desktop
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
# Glances is a peer, not a requirement: without it the report says so and goes on.
glances=""
if "$venv/bin/python" -c 'import glances' 2>/dev/null ||
    { echo "installing glances into $venv" &&
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check glances; }; then
    glances="$venv/bin/python"
else
    echo "glances could not be installed; the report goes on without it" >&2
fi

# The design's reference machine runs ~480 processes and ~400 TCP sockets; an idle
# development machine has far fewer. BENCH_LOAD=N (default 400) adds N idle processes
# holding N loopback sockets for the whole run, so every part is measured on a machine
# that busy; BENCH_LOAD=0 measures the machine as it is. The load ends with the report:
# it lasts as long as its input (fd 9, held by the report) stays open.
if [ "${BENCH_LOAD:-400}" != 0 ]; then
    exec 9> >(exec "$target_dir/release/examples/sampler_loop" --hold-load "${BENCH_LOAD:-400}")
    sleep 3
fi

exec python3 -B bench/run.py --target-dir "$target_dir" --python "$venv/bin/python" --glances "$glances"
