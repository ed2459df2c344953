"""Benchmarks that live in their own programs, each printing one JSON object (or, for the
dashboard, writing one file): uplink bytes, storage, the desktop app and the dashboard.

Each is optional: when its program is not in this checkout (or cannot run here, e.g. no
display for the desktop app, no Node.js for the dashboard), the report says "not
available" and goes on. Their figures are picked from their JSON by the words in the key
names (e.g. "full" + "json" + "bytes"), and the key used is kept in the report, so a
renamed key shows as "not found" rather than as a wrong number.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from common import BenchError, child_env, run_json

UPLINK_TICKS = 30


class NotAvailable(Exception):
    """The piece cannot run in this checkout or on this machine; the reason is the message."""


def flatten(value, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}, numbers only."""
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix.rstrip(".").lower()] = float(value)
    return out


def pick(obj, *wanted, prefer=("steady", "mean", "per_snapshot", "avg")):
    """The number under the key that holds all the words of one of `wanted` (tried in
    order): (key, value), or (None, None). Among several, a key naming a steady state or
    a mean wins, then the shortest."""
    flat = flatten(obj)
    for words in wanted:
        keys = [k for k in flat if all(w in k for w in words)]
        if keys:
            keys.sort(key=lambda k: (not any(p in k for p in prefer), len(k)))
            return keys[0], flat[keys[0]]
    return None, None


def to_mib(key, value):
    """A memory or size figure in MiB, whatever unit its key names."""
    if key is None:
        return None
    if "mib" in key or "_mb" in key:
        return value
    if "kib" in key or "_kb" in key:
        return value / 1024.0
    if "gib" in key:
        return value * 1024.0
    return value / (1024.0 * 1024.0)  # bytes


def example(root, target_dir, name):
    """The built release example `name`, or NotAvailable if this checkout has none."""
    if not (root / "examples" / f"{name}.rs").exists():
        raise NotAvailable(f"examples/{name}.rs is not in this checkout")
    binary = target_dir / "release" / "examples" / name
    if not binary.exists():
        raise NotAvailable(f"{binary} is not built (bench/run.sh builds every example)")
    return binary


def run_uplink(root, target_dir):
    """Uplink bytes per snapshot in steady state against the full JSON of the same one."""
    binary = example(root, target_dir, "uplink_bytes")
    result = run_json("uplink_bytes", [str(binary), "--ticks", str(UPLINK_TICKS)], 600,
                      env=child_env(), cwd=root)
    full_key, full = pick(result, ("full", "json", "bytes"), ("json", "bytes"))
    wire_key, wire = pick(result, ("delta", "wire", "bytes"), ("wire", "bytes"), ("delta", "bytes"))
    return {"output": result, "full_json_bytes": full, "wire_bytes": wire,
            "keys": {"full_json_bytes": full_key, "wire_bytes": wire_key}}


def run_store(root, target_dir):
    """Storage per process-metric sample and per host per month, and the store's insert
    rate against raw SQLite."""
    binary = example(root, target_dir, "store_bench")
    result = run_json("store_bench", [str(binary)], 900, env=child_env(), cwd=root)
    per_sample_key, per_sample = pick(result, ("bytes", "per", "sample"), ("bytes", "sample"))
    # The design's month budget is for the rollup tiers (a month of history at minute and
    # hour resolution); the raw tier keeps only the last 24 h and is reported apart.
    month_key, month = pick(result, ("month", "mib", "rollup"), ("month",))
    raw_key, raw = pick(result, ("raw", "rows"), ("sqlite", "rows"))
    store_key, store = pick(result, ("store", "rows"), ("ours", "rows"))
    return {"output": result, "bytes_per_sample": per_sample, "month_mib_per_host": to_mib(month_key, month),
            "raw_rows_per_s": raw, "store_rows_per_s": store,
            "keys": {"bytes_per_sample": per_sample_key, "month": month_key,
                     "raw_rows_per_s": raw_key, "store_rows_per_s": store_key}}


def run_desktop(root):
    """The desktop app's CPU with its window open and hidden, and its memory."""
    script = root / "bench" / "desktop.sh"
    if not script.exists():
        raise NotAvailable("bench/desktop.sh is not in this checkout")
    result = run_json("bench/desktop.sh", ["bash", str(script)], 900, env=child_env(), cwd=root)
    open_key, open_cpu = pick(result, ("open", "cpu"), ("visible", "cpu"))
    hidden_key, hidden_cpu = pick(result, ("hidden", "cpu"), ("tray", "cpu"))
    rss_key, rss = pick(result, ("rss",), ("memory",))
    return {"output": result, "cpu_percent_open": open_cpu, "cpu_percent_hidden": hidden_cpu,
            "rss_mib": to_mib(rss_key, rss),
            "keys": {"cpu_percent_open": open_key, "cpu_percent_hidden": hidden_key, "rss": rss_key}}


def run_dashboard(root, target_dir, procyon):
    """The dashboard's frame times with 2,000 processes and its bundle size, from
    bench/browser/bench.mjs (its lines go to the terminal; its figures to browser.json)."""
    return run_browser(root, target_dir, procyon, "bench.mjs", "browser.json", "dashboard")


def run_fleet(root, target_dir, procyon):
    """The fleet overview of 1,000 hosts scrolled while they change, from
    bench/browser/fleet.mjs (figures in browser-fleet.json)."""
    return run_browser(root, target_dir, procyon, "fleet.mjs", "browser-fleet.json", "fleet overview")


def run_map(root, target_dir, procyon):
    """The network map of 200 hosts and 5,000 edges, from bench/browser/map.mjs (figures
    in browser-map.json)."""
    return run_browser(root, target_dir, procyon, "map.mjs", "browser-map.json", "map")


def run_browser(root, target_dir, procyon, script, out_name, what):
    """One browser benchmark: its lines go to the terminal, its figures to
    <target>/bench/<out_name>, which is returned."""
    if shutil.which("node") is None:
        raise NotAvailable("Node.js is not installed (scripts/deps.sh bench installs it)")
    if not (root / "ui" / "dist" / "index.html").exists():
        raise NotAvailable("ui/dist is not built (`make ui` builds it)")
    out = target_dir / "bench" / out_name
    if out.exists():
        out.unlink()
    env = dict(os.environ, PROCYON_BIN=str(procyon), CARGO_TARGET_DIR=str(target_dir))
    try:
        done = subprocess.run(["node", str(root / "bench" / "browser" / script)], cwd=root,
                              env=env, stdin=subprocess.DEVNULL, timeout=900)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the {what} benchmark took over 900 s and was stopped")
    if done.returncode != 0 or not out.exists():
        raise BenchError(f"the {what} benchmark failed (status {done.returncode})")
    return json.loads(out.read_text())


def root_dir():
    """The repository root (this file is in bench/)."""
    return Path(__file__).resolve().parent.parent
