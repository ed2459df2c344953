"""Benchmark comparison: sample the machine the way the seed's FastAPI/psutil monitor does.

Once a second: every process with the attributes a dashboard lists, every inet
connection, network counters (total and per interface), per-core CPU and memory, then
`json.dumps` of the lot, as the monitor does before it answers a request. Paced, measured
and reported exactly like the Rust samplers (see `bench/tick_loop.rs`), so that
`bench/run.py` can compare them. Needs psutil; `bench/run.sh` installs it in a venv.
"""

import json
import os
import sys
import time

import psutil

INTERVAL_S = 1.0
DEFAULT_TICKS = 30
PROCESS_ATTRS = ["pid", "name", "username", "status", "cpu_percent", "memory_percent", "ppid"]


def sample():
    """Take one snapshot and return it serialised, with the process and socket counts."""
    # process_iter keeps its Process objects between calls, which is what lets
    # cpu_percent report use since the previous tick.
    processes = [p.info for p in psutil.process_iter(PROCESS_ATTRS)]
    connections = [
        {
            "fd": c.fd,
            "family": c.family.name,
            "type": c.type.name,
            "laddr": list(c.laddr) if c.laddr else None,
            "raddr": list(c.raddr) if c.raddr else None,
            "status": c.status,
            "pid": c.pid,
        }
        for c in psutil.net_connections(kind="inet")
    ]
    snapshot = {
        "timestamp": time.time(),
        "cpu_percent": psutil.cpu_percent(percpu=True),
        "memory": psutil.virtual_memory()._asdict(),
        "processes": processes,
        "connections": connections,
        "net_io": psutil.net_io_counters()._asdict(),
        "net_io_pernic": {k: v._asdict() for k, v in psutil.net_io_counters(pernic=True).items()},
    }
    return json.dumps(snapshot), len(processes), len(connections)


def ticks_from_env():
    """Read BENCH_TICKS; one of the ticks is the warm-up, so at least two."""
    text = os.environ.get("BENCH_TICKS", str(DEFAULT_TICKS))
    try:
        ticks = int(text)
    except ValueError:
        sys.exit(f"BENCH_TICKS={text!r} is not a whole number")
    if ticks < 2:
        sys.exit(f"BENCH_TICKS={ticks}: need at least 2 (one is the warm-up)")
    return ticks


def main():
    """Sample once a second, then print the one-line JSON report bench/run.py reads."""
    ticks = ticks_from_env()
    start = time.monotonic()
    warmup_cpu_s = 0.0
    counts = (0, 0)
    for n in range(ticks):
        # Pace against the start, not the previous tick, so slow ticks do not drift.
        wait = start + n * INTERVAL_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        _, processes, sockets = sample()
        counts = (processes, sockets)
        if n == 0:
            # Start-up (interpreter, import psutil) plus one snapshot; the runner
            # subtracts it from the total to get the steady-state cost.
            warmup_cpu_s = time.process_time()
    report = {
        "name": "psutil",
        "ticks": ticks,
        "processes": counts[0],
        "sockets": counts[1],
        "warmup_cpu_s": warmup_cpu_s,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
