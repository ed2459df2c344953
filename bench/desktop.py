#!/usr/bin/env python3
"""The desktop app's cost: CPU % of one core and memory, with the window open at 1 s
updates and with the window hidden in the tray (`procyon desktop --hidden`), next to the
floor: the least a Tauri window costs here (examples/desktop_floor.rs, a window of the
same size showing a number that changes every second), measured the same way in turn.

Runs the real app (under Xvfb when started by bench/desktop.sh) with its data and
settings in a temporary folder, lets it settle, then reads /proc for the app and every
process it started (WebKit's web and network processes): CPU time over the window, and
memory at the end, both as resident size (RSS, counts shared pages once per process, so
it overstates) and as proportional size (PSS, shared pages split between processes).

Prints one JSON object on stdout.
Usage: desktop.py PROCYON_BIN [--floor FLOOR_BIN] [--settle S] [--seconds S]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid):
    """pid and all its descendants."""
    found = [pid]
    for p in found:
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


def memory_kib(pid, key):
    path = f"/proc/{pid}/smaps_rollup" if key == "Pss:" else f"/proc/{pid}/status"
    wanted = key if key == "Pss:" else "VmRSS:"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(wanted):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def names(pids):
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                out.append(f.read().strip())
        except OSError:
            pass
    return sorted(out)


def measure(argv, hidden, settle, seconds):
    home = tempfile.mkdtemp(prefix="procyon-desktop-bench-")
    env = dict(os.environ)
    env.update(
        XDG_DATA_HOME=os.path.join(home, "data"),
        XDG_CONFIG_HOME=os.path.join(home, "config"),
        XDG_CACHE_HOME=os.path.join(home, "cache"),
        RUST_LOG="warn",
    )
    args = list(argv) + (["--hidden"] if hidden else [])
    app = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        if app.poll() is not None:
            raise RuntimeError(f"the app exited early ({app.returncode})")
        pids = children(app.pid)
        start = sum(cpu_ticks(p) for p in pids)
        t0 = time.monotonic()
        time.sleep(seconds)
        pids = children(app.pid)
        used = sum(cpu_ticks(p) for p in pids) - start
        elapsed = time.monotonic() - t0
        return {
            "cpu_percent": round(100.0 * used / TICKS / elapsed, 2),
            "rss_mib": round(sum(memory_kib(p, "VmRSS:") for p in pids) / 1024, 1),
            "pss_mib": round(sum(memory_kib(p, "Pss:") for p in pids) / 1024, 1),
            # The app's own process, without WebKit's.
            "own_pss_mib": round(memory_kib(app.pid, "Pss:") / 1024, 1),
            "processes": names(pids),
        }
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=15)
        except subprocess.TimeoutExpired:
            for p in children(app.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(home, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--floor", help="the floor app (examples/desktop_floor)")
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    if not os.environ.get("DISPLAY"):
        sys.exit("desktop.py needs a display: run it through bench/desktop.sh (Xvfb)")
    ours = [a.binary, "desktop"]
    # In turn, floor first, so that neither always runs on a machine the other warmed.
    floor = {}
    if a.floor:
        floor["open"] = measure([a.floor], False, a.settle, a.seconds)
    opened = measure(ours, False, a.settle, a.seconds)
    if a.floor:
        floor["hidden"] = measure([a.floor], True, a.settle, a.seconds)
    hidden = measure(ours, True, a.settle, a.seconds)
    out = {
        "cpu_open_percent": opened["cpu_percent"],
        "cpu_hidden_percent": hidden["cpu_percent"],
        "rss_open_mib": opened["rss_mib"],
        "pss_open_mib": opened["pss_mib"],
        "own_pss_open_mib": opened["own_pss_mib"],
        "rss_hidden_mib": hidden["rss_mib"],
        "pss_hidden_mib": hidden["pss_mib"],
        "processes": opened["processes"],
        "seconds": a.seconds,
        "budget": {"cpu_open_percent": 3.0, "cpu_hidden_percent": 1.0, "memory_mib": 150},
        "note": "Xvfb: no GPU, so WebKit draws in software; a real desktop costs less CPU",
    }
    if floor:
        out["floor"] = {
            "cpu_open_percent": floor["open"]["cpu_percent"],
            "cpu_hidden_percent": floor["hidden"]["cpu_percent"],
            "pss_open_mib": floor["open"]["pss_mib"],
            "rss_open_mib": floor["open"]["rss_mib"],
            "own_pss_open_mib": floor["open"]["own_pss_mib"],
            "processes": floor["open"]["processes"],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
