#!/usr/bin/env bash
# The desktop app's CPU and memory (bench/desktop.py), under Xvfb with a D-Bus session,
# on a release build with the `desktop` feature (kept apart from the collector's binary
# as target/bench/procyon-desktop). Prints one JSON object. Needs scripts/deps.sh bench.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --release --features desktop --bin procyon >&2
mkdir -p "$target_dir/bench"
cp "$target_dir/release/procyon" "$target_dir/bench/procyon-desktop"
# The collector's benchmarks expect a plain build at target/release/procyon again.
cargo build --release --bin procyon >&2
exec xvfb-run -a -s "-screen 0 1400x900x24" dbus-run-session -- \
    python3 bench/desktop.py "$target_dir/bench/procyon-desktop" "$@"
