#!/usr/bin/env bash
# The desktop app's CPU and memory (bench/desktop.py), under Xvfb with a D-Bus session,
# on a release build with the `desktop` feature (the same build as bench/run.sh's, so
# nothing is rebuilt when the report runs it), next to the floor app
# (examples/desktop_floor.rs). Prints one JSON object on stdout.
# Needs what `scripts/deps.sh bench` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --examples --bin procyon --features desktop >&2
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# Services that D-Bus starts for the app (the accessibility bus) write to the session's
# standard output; only the measurement may reach ours (fd 3).
xvfb-run -a -s "-screen 0 1400x900x24" dbus-run-session -- \
    sh -c 'exec python3 bench/desktop.py "$@" >&3' desktop.py "$target_dir/release/procyon" \
    --floor "$target_dir/release/examples/desktop_floor" "$@" 3>&1 >/dev/null
