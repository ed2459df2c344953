"""The agent's own cost: CPU and resident memory of `procyon-agent` at 1 s and 2 s.

A collector (`procyon serve --no-local`) on a free loopback port with a throwaway data
directory, and two `procyon-agent`s streaming to it side by side, one at a 1 s and one
at a 2 s interval. After a warm-up, each agent's CPU time (utime + stime from
/proc/PID/stat) is read at the start and end of a window of AGENT_BENCH_SECS seconds
(default 30) and its resident memory (VmRSS) every second; the collector's CPU over the
same window is reported for context. The snapshots the collector stored during the
window are counted through its API: none means the run failed.
"""

import tempfile
import time
from pathlib import Path

from common import (BenchError, CollectorApi, Daemon, child_env, cpu_seconds, create_key_file,
                    memory_mib, start_collector, stop_all)

AGENT_INTERVALS_S = (1, 2)
AGENT_WARMUP_S = 5.0


def run_agents(procyon, agent, secs):
    """Measure the agent at each interval in AGENT_INTERVALS_S against a throwaway collector.

    procyon and agent are the release binaries. Returns the figures for report.json.
    Every child is stopped before it returns, also on errors and on Ctrl-C.
    """
    daemons = []
    with tempfile.TemporaryDirectory(prefix="procyon-bench-") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "collector"
        data_dir.mkdir()
        key_path = tmp / "api.key"
        try:
            collector, base, password = start_collector(procyon, data_dir, tmp)
            daemons.append(collector)
            api = CollectorApi(base)
            api.login("admin", password)
            create_key_file(procyon, data_dir, key_path)

            agents = {}
            for interval in AGENT_INTERVALS_S:
                hostname = f"bench-{interval}s"
                argv = [str(agent), "--config", "/dev/null", "--collector", base,
                        "--api-key-file", str(key_path), "--hostname", hostname,
                        "--interval", str(interval), "--spool", str(tmp / f"spool-{interval}s")]
                agents[interval] = Daemon(f"agent {interval}s", argv,
                                          child_env(PROCYON_LOG="warn"), tmp)
                daemons.append(agents[interval])

            time.sleep(AGENT_WARMUP_S)
            for d in daemons:
                d.check_running()
            print(f"measuring the agent at {', '.join(f'{i} s' for i in AGENT_INTERVALS_S)} "
                  f"for {secs} s, after a {AGENT_WARMUP_S:g} s warm-up ...", flush=True)

            counts_before = {i: api.snapshot_count(f"bench-{i}s") for i in agents}
            started = time.monotonic()
            cpu_before = {d.label: cpu_seconds(d.pid) for d in daemons}
            rss = {i: [] for i in agents}
            for tick in range(1, secs + 1):
                time.sleep(max(started + tick - time.monotonic(), 0.0))
                for interval, a in agents.items():
                    a.check_running()
                    try:
                        rss[interval].append(memory_mib(a.pid))
                    except (BenchError, FileNotFoundError):
                        a.check_running()  # it exited just now: say so rather than "no VmRSS"
                        raise
            collector.check_running()
            cpu_after = {d.label: cpu_seconds(d.pid) for d in daemons}
            window_s = time.monotonic() - started
            counts_after = {i: api.snapshot_count(f"bench-{i}s") for i in agents}
            for interval, a in agents.items():
                if counts_after[interval] <= counts_before[interval]:
                    raise BenchError(
                        f"no snapshot from the agent at {interval} s (host bench-{interval}s) "
                        f"reached the collector during the window ({counts_after[interval]} "
                        f"stored in all)" + a.stderr_tail())
        finally:
            stop_all(daemons)

    def percent(label):
        """CPU % of one core a child used over the window."""
        return (cpu_after[label] - cpu_before[label]) / window_s * 100.0

    return {
        "window_s": window_s,
        "warmup_s": AGENT_WARMUP_S,
        "method": "agents run concurrently against a local collector; cpu % = "
                  "(utime + stime from /proc/PID/stat over the window) / window; "
                  "rss = VmRSS sampled every second (last and max); snapshots_stored = "
                  "snapshots the collector stored for the host during the window",
        "runs": [{
            "interval_s": interval,
            "hostname": f"bench-{interval}s",
            "cpu_percent_of_one_core": percent(a.label),
            "rss_mib": rss[interval][-1],
            "rss_mib_max": max(rss[interval]),
            "snapshots_stored": counts_after[interval] - counts_before[interval],
        } for interval, a in agents.items()],
        "collector_cpu_percent_of_one_core": percent(collector.label),
    }
