"""Sampler CPU per snapshot: Procyon's sampler against a naive raw /proc reader, a psutil
monitor in the seed documents' style and, when it could be installed, Glances.

All run at the same time, each in its own process, taking one snapshot a second for
BENCH_TICKS ticks (default 30). Running them together means the same machine noise hits
all of them, so their ratios are meaningful even on a busy shared machine; the absolute
figures are less so.

The three samplers of ours (`examples/sampler_loop.rs`, `examples/naive_proc.rs`,
`bench/psutil_sampler.py`) are measured from outside with wait4(), which returns the
child's own resource use. Each reports its CPU time
just after its first tick (start-up plus one snapshot); the steady-state cost of one
snapshot is (total - first) / (ticks - 1).

Glances cannot report that itself: it runs headless (`-q`, no curses, no web server,
nothing listening) refreshing every second, and its CPU time is read from
/proc/PID/stat after a warm-up and at the end of the same window; its cost per snapshot
is that CPU time over the window's seconds.

Memory, for all of them: the highest resident size (VmRSS in /proc/PID/status) read
every 0.1 s once start-up is over. (wait4's ru_maxrss cannot serve: Linux carries the
forked runner's own high-water mark across exec into it.)
"""

import json
import os
import subprocess
import time

from common import BenchError, cpu_seconds, memory_mib

INTERVAL_S = 1.0
# Allowance on top of the ticks themselves for start-up and slow snapshots.
GRACE_S = 60.0
# Glances is measured after this much warm-up (start-up, first refreshes).
GLANCES_WARMUP_S = 5.0
# Resident memory is read once start-up is over: steady state, as for the agent.
RSS_AFTER_S = 2.0


def read_rss(pid, started, previous):
    """The larger of `previous` and the process's resident MiB now (once past start-up).
    It may have just ended (a zombie has no VmRSS), which leaves `previous`. It is not
    polled here: that could reap it before wait4 gets its resource use."""
    if time.monotonic() - started < RSS_AFTER_S:
        return previous
    try:
        return max(previous or 0.0, memory_mib(pid))
    except (OSError, BenchError):
        return previous


class Sampler:
    """One sampler process that reports on itself: how to start it and what came of it."""

    def __init__(self, key, label, argv):
        self.key = key
        self.label = label
        self.argv = argv
        self.proc = None
        self.status = None
        self.rusage = None
        self.stopped = False  # killed by the runner, not failed on its own
        self.rss_max = None

    def start(self, out_dir, env):
        """Start the sampler with its output going to files, so no pipe can fill up."""
        self.stdout_path = out_dir / f"{self.key}.out"
        self.stderr_path = out_dir / f"{self.key}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=env,
                                         stdin=subprocess.DEVNULL)
        self.started = time.monotonic()

    def poll(self):
        """Reap the sampler if it has ended; True once it has."""
        if self.status is not None:
            return True
        pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            self.rss_max = read_rss(self.proc.pid, self.started, self.rss_max)
            return False
        self.status = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        # Tell Popen the child is reaped, so it does not try to wait for it again.
        self.proc.returncode = self.status
        return True

    def kill(self):
        """Stop a sampler that is still running and reap it."""
        if self.status is None:
            self.stopped = True
            self.proc.kill()
            self.proc.wait()
            self.status = self.proc.returncode

    def failure(self):
        """A description of what went wrong, or None if it ran and reported properly."""
        stderr = self.stderr_path.read_text(errors="replace").strip()
        tail = "\n".join(stderr.splitlines()[-20:])
        if self.stopped:
            return f"sampler {self.label!r} was stopped early, as another one failed"
        if self.status != 0:
            how = (f"was killed by signal {-self.status}" if self.status < 0
                   else f"exited with status {self.status}")
            return f"sampler {self.label!r} {how}" + (f"; its stderr:\n{tail}" if tail else "")
        try:
            self.report = self.read_report()
        except ValueError as e:
            return f"sampler {self.label!r} gave no usable report ({e})" + (
                f"; its stderr:\n{tail}" if tail else "")
        return None

    def read_report(self):
        """The last line of the sampler's output: its JSON report."""
        lines = self.stdout_path.read_text(errors="replace").strip().splitlines()
        if not lines:
            raise ValueError("no output")
        report = json.loads(lines[-1])
        for field in ("name", "ticks", "processes", "sockets", "warmup_cpu_s"):
            if field not in report:
                raise ValueError(f"no {field!r} in {lines[-1]!r}")
        return report

    def figures(self, ticks):
        """CPU and memory figures from rusage and the sampler's own report."""
        total_s = self.rusage.ru_utime + self.rusage.ru_stime
        warmup_s = self.report["warmup_cpu_s"]
        # The two clocks are the same kernel counter, but guard against a sampler that
        # reports nonsense rather than print a negative cost.
        steady_s = max(total_s - warmup_s, 0.0)
        per_snapshot_ms = steady_s / (ticks - 1) * 1000.0
        return {
            "name": self.key,
            "label": self.label,
            "cpu_ms_per_snapshot": per_snapshot_ms,
            # One snapshot per INTERVAL_S: the share of one core the sampler keeps busy.
            "percent_of_one_core": per_snapshot_ms / (INTERVAL_S * 1000.0) * 100.0,
            "startup_cpu_ms": warmup_s * 1000.0,
            "total_cpu_ms": total_s * 1000.0,
            "rss_mib_max": self.rss_max,
            "processes_seen": self.report["processes"],
            "sockets_seen": self.report["sockets"],
        }


class Glances:
    """Glances, headless, refreshing every second; measured from outside."""

    key = "glances"
    label = "Glances"

    def __init__(self, argv, version):
        self.argv = argv
        self.version = version
        self.proc = None

    def start(self, out_dir, env):
        """Start it; nothing of it listens (quiet mode starts no server)."""
        self.stdout_path = out_dir / "glances.out"
        self.stderr_path = out_dir / "glances.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=env,
                                         stdin=subprocess.DEVNULL)
        self.started = time.monotonic()
        self.cpu_before = None
        self.rss_max = None

    def check_running(self):
        """Raise BenchError if Glances has exited."""
        if self.proc.poll() is not None:
            tail = "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-10:])
            raise BenchError(f"Glances exited with status {self.proc.returncode}: {tail}")

    def tick(self):
        """Called every 0.1 s: take the first reading once the warm-up is over."""
        self.rss_max = read_rss(self.proc.pid, self.started, self.rss_max)
        if self.cpu_before is None and time.monotonic() - self.started >= GLANCES_WARMUP_S:
            self.check_running()
            self.cpu_before = cpu_seconds(self.proc.pid)
            self.window_start = time.monotonic()

    def finish(self):
        """The last reading; then stop it. Returns its figures."""
        self.check_running()
        if self.cpu_before is None:
            raise BenchError("the run was shorter than the Glances warm-up")
        cpu = cpu_seconds(self.proc.pid) - self.cpu_before
        window = time.monotonic() - self.window_start
        self.kill()
        per_snapshot_ms = cpu / window * INTERVAL_S * 1000.0
        return {
            "name": self.key,
            "label": f"{self.label} {self.version}",
            "cpu_ms_per_snapshot": per_snapshot_ms,
            "percent_of_one_core": cpu / window * 100.0,
            "window_s": window,
            "rss_mib_max": self.rss_max,
        }

    def kill(self):
        """Stop it if it still runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_samplers(samplers, glances, ticks, out_dir):
    """Start every sampler (and Glances) at once and wait for all of them, within a
    time limit. Returns (rows, glances row or None, glances problem or None)."""
    env = dict(os.environ, BENCH_TICKS=str(ticks))
    for s in samplers:
        s.start(out_dir, env)
    if glances:
        glances.start(out_dir, env)
    limit_s = ticks * INTERVAL_S + GRACE_S
    deadline = time.monotonic() + limit_s
    glances_row = None
    glances_problem = None
    try:
        # A list, not a generator: every sampler is polled each round, so a crash is
        # seen at once even while an earlier one is still running.
        while not all([s.poll() for s in samplers]):
            failed = [s for s in samplers if s.status not in (None, 0)]
            if failed:
                break  # no point waiting for the others
            if time.monotonic() > deadline:
                running = ", ".join(s.label for s in samplers if s.status is None)
                raise BenchError(f"samplers still running after {limit_s:.0f} s: {running}")
            if glances and glances_problem is None:
                try:
                    glances.tick()
                except BenchError as e:
                    glances_problem = str(e)
            time.sleep(0.1)
        if glances and glances_problem is None:
            try:
                glances_row = glances.finish()
            except BenchError as e:
                glances_problem = str(e)
    finally:
        for s in samplers:
            s.kill()
        if glances:
            glances.kill()
    problems = [p for p in (s.failure() for s in samplers) if p]
    if problems:
        raise BenchError("\n".join(problems))
    return [s.figures(ticks) for s in samplers], glances_row, glances_problem
