"""The agent's own cost: CPU and resident memory of `procyon-agent`, at 1 s and 2 s on the
machine as it is, then at 1 s on a host grown to AGENT_LARGE_PROCESSES processes.

A collector (`procyon serve --no-local`) on a free loopback port with a throwaway data
directory, and `procyon-agent`s streaming to it side by side, one at a 1 s and one at a
2 s interval. After a warm-up, each agent's CPU time (utime + stime from /proc/PID/stat)
is read at the start and end of a window of AGENT_BENCH_SECS seconds (default 30) and
its resident memory (VmRSS) every second; the collector's CPU over the same window is
reported for context. The snapshots the collector stored during the window are counted
through its API: none means the run failed.

The large host: `sampler_loop --hold-load N` adds N idle processes holding N loopback
TCP sockets, N chosen so that the machine runs AGENT_LARGE_PROCESSES (default 5,000)
processes in all; a fresh collector and one agent at 1 s are then measured the same way.
AGENT_LARGE_PROCESSES=0 leaves that part out.

AGENT_BENCH_BASELINE=/path/to/another/procyon-agent runs that build next to ours at
1 s in both parts, so two builds are compared in one run (same machine, same moment).
"""

import subprocess
import tempfile
import time
from pathlib import Path

from common import (BenchError, CollectorApi, Daemon, child_env, counts_now, cpu_seconds,
                    create_key_file, memory_mib, start_collector, stop_all)

AGENT_INTERVALS_S = (1, 2)
AGENT_WARMUP_S = 5.0
# The first ticks on a large host read every process's command line and owner, and walk
# every descriptor for socket owners: give them longer before measuring steady state.
LARGE_WARMUP_S = 15.0
# Starting thousands of processes takes a while on a busy two-core machine.
LOAD_START_TIMEOUT_S = 300.0


def measure(procyon, agents, secs, warmup_s, counts):
    """Run `agents` (label, binary, interval, hostname) against a throwaway collector
    and measure them over a window of `secs` after `warmup_s`. `counts` is appended the
    processes and sockets of the machine at the start and end of the window.

    Returns (runs, collector CPU %, window seconds). Every child is stopped before it
    returns, also on errors and on Ctrl-C.
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

            running = {}
            for label, binary, interval, hostname in agents:
                argv = [str(binary), "--config", "/dev/null", "--collector", base,
                        "--api-key-file", str(key_path), "--hostname", hostname,
                        "--interval", str(interval), "--spool", str(tmp / f"spool-{hostname}")]
                running[label] = Daemon(label, argv, child_env(PROCYON_LOG="warn"), tmp)
                daemons.append(running[label])

            time.sleep(warmup_s)
            for d in daemons:
                d.check_running()
            print(f"measuring {', '.join(running)} for {secs} s, after a {warmup_s:g} s warm-up ...",
                  flush=True)

            hostnames = {label: hostname for label, _, _, hostname in agents}
            counts_before = {label: api.snapshot_count(h) for label, h in hostnames.items()}
            counts.append(counts_now())
            started = time.monotonic()
            cpu_before = {d.label: cpu_seconds(d.pid) for d in daemons}
            rss = {label: [] for label in running}
            for tick in range(1, secs + 1):
                time.sleep(max(started + tick - time.monotonic(), 0.0))
                for label, a in running.items():
                    a.check_running()
                    try:
                        rss[label].append(memory_mib(a.pid))
                    except (BenchError, FileNotFoundError):
                        a.check_running()  # it exited just now: say so rather than "no VmRSS"
                        raise
            collector.check_running()
            cpu_after = {d.label: cpu_seconds(d.pid) for d in daemons}
            window_s = time.monotonic() - started
            counts.append(counts_now())
            counts_after = {label: api.snapshot_count(h) for label, h in hostnames.items()}
            for label, a in running.items():
                if counts_after[label] <= counts_before[label]:
                    raise BenchError(
                        f"no snapshot from {label} (host {hostnames[label]}) reached the collector "
                        f"during the window ({counts_after[label]} stored in all)" + a.stderr_tail())
        finally:
            stop_all(daemons)

    def percent(label):
        """CPU % of one core a child used over the window."""
        return (cpu_after[label] - cpu_before[label]) / window_s * 100.0

    runs = [{
        "label": label,
        "binary": str(binary),
        "interval_s": interval,
        "hostname": hostname,
        "cpu_percent_of_one_core": percent(label),
        "rss_mib": rss[label][-1],
        "rss_mib_max": max(rss[label]),
        "snapshots_stored": counts_after[label] - counts_before[label],
    } for label, binary, interval, hostname in agents]
    return runs, percent("collector"), window_s


class HeldLoad:
    """`sampler_loop --hold-load N`: N idle processes and N loopback sockets until closed."""

    def __init__(self, sampler_loop, n, log_dir):
        self.stderr_path = Path(log_dir) / "hold-load.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([str(sampler_loop), "--hold-load", str(n)],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=err, env=child_env())
        deadline = time.monotonic() + LOAD_START_TIMEOUT_S
        # It says so on stderr once every process and socket is there.
        while "holding" not in self.stderr_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise BenchError(f"the load of {n} processes could not start: "
                                 + self.stderr_path.read_text(errors="replace").strip())
            if time.monotonic() > deadline:
                self.close()
                raise BenchError(f"the load of {n} processes did not start within "
                                 f"{LOAD_START_TIMEOUT_S:g} s")
            time.sleep(0.5)

    def close(self):
        """End the load: its processes see end-of-file and exit."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_agents(procyon, agent, secs, sampler_loop=None, large_processes=0, baseline=None):
    """Measure the agent at each interval in AGENT_INTERVALS_S against a throwaway
    collector, then at 1 s with the machine grown to `large_processes` processes (when
    not 0), with `baseline` (another agent binary) beside ours at 1 s when given.

    procyon and agent are the release binaries. Returns the figures for report.json.
    """
    counts = []
    agents = [(f"agent {i}s", agent, i, f"bench-{i}s") for i in AGENT_INTERVALS_S]
    if baseline:
        agents.append(("baseline 1s", baseline, 1, "bench-baseline-1s"))
    runs, collector_cpu, window_s = measure(procyon, agents, secs, AGENT_WARMUP_S, counts)
    result = {
        "window_s": window_s,
        "warmup_s": AGENT_WARMUP_S,
        "method": "agents run concurrently against a local collector; cpu % = "
                  "(utime + stime from /proc/PID/stat over the window) / window; "
                  "rss = VmRSS sampled every second (last and max); snapshots_stored = "
                  "snapshots the collector stored for the host during the window",
        "runs": runs,
        "machine": counts,
        "collector_cpu_percent_of_one_core": collector_cpu,
    }
    if large_processes and sampler_loop:
        extra = large_processes - counts_now()["processes"]
        if extra > 0:
            print(f"starting {extra} more processes and sockets (to {large_processes:,} processes) ...",
                  flush=True)
            with tempfile.TemporaryDirectory(prefix="procyon-bench-load-") as tmp:
                load = HeldLoad(sampler_loop, extra, tmp)
                try:
                    large_counts = []
                    agents = [("agent 1s large", agent, 1, "bench-large-1s")]
                    if baseline:
                        agents.append(("baseline 1s large", baseline, 1, "bench-baseline-large-1s"))
                    large_runs, large_collector, large_window = measure(
                        procyon, agents, secs, LARGE_WARMUP_S, large_counts)
                finally:
                    load.close()
        else:
            large_counts, large_runs, large_collector, large_window = [], [], None, None
        result["large"] = {
            "target_processes": large_processes,
            "added_processes_and_sockets": max(extra, 0),
            "window_s": large_window,
            "warmup_s": LARGE_WARMUP_S,
            "runs": large_runs,
            "machine": large_counts,
            "collector_cpu_percent_of_one_core": large_collector,
        }
    return result
