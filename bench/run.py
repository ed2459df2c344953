"""Benchmark runner: CPU cost per snapshot of Procyon's sampler, a naive /proc reader and psutil.

Started by `bench/run.sh`, which builds the samplers and the psutil venv first. The three
samplers run at the same time, each in its own process, taking one snapshot a second
for BENCH_TICKS ticks (default 30). Running them together means the same machine noise
hits all three, so their ratios are meaningful even on a busy shared machine; the
absolute figures are less so.

Each sampler's total CPU time is measured from outside with wait4(), which returns the
child's own resource use. Each sampler reports its CPU time just after its first tick
(start-up plus one snapshot); the steady-state cost of one snapshot is then
(total - first) / (ticks - 1).

Standard library only. Prints a table and writes the same figures to
<target dir>/bench/report.json. Exits non-zero if a sampler fails or runs too long.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_TICKS = 30
INTERVAL_S = 1.0
# Allowance on top of the ticks themselves for start-up and slow snapshots.
GRACE_S = 60.0


def parse_args():
    """Command line: where the built examples are and which Python has psutil."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-dir", required=True, type=Path,
                        help="cargo target directory holding release/examples/")
    parser.add_argument("--python", required=True,
                        help="Python interpreter with psutil installed")
    return parser.parse_args()


def ticks_from_env():
    """Read BENCH_TICKS; one tick is the warm-up, so at least two are needed."""
    text = os.environ.get("BENCH_TICKS", str(DEFAULT_TICKS))
    try:
        ticks = int(text)
    except ValueError:
        sys.exit(f"error: BENCH_TICKS={text!r} is not a whole number")
    if ticks < 2:
        sys.exit(f"error: BENCH_TICKS={ticks}: need at least 2 (one is the warm-up)")
    return ticks


def machine_info():
    """Cores, CPU model, and how many processes and sockets there are to sample."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
    sockets = 0
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{table}") as f:
                sockets += sum(1 for _ in f) - 1  # minus the header line
        except FileNotFoundError:
            pass
    return {"cores": os.cpu_count(), "cpu_model": model,
            "processes": processes, "sockets": sockets}


class Sampler:
    """One sampler process: how to start it and what came of it."""

    def __init__(self, key, label, argv):
        self.key = key
        self.label = label
        self.argv = argv
        self.proc = None
        self.status = None
        self.rusage = None
        self.stopped = False  # killed by the runner, not failed on its own

    def start(self, out_dir, env):
        """Start the sampler with its output going to files, so no pipe can fill up."""
        self.stdout_path = out_dir / f"{self.key}.out"
        self.stderr_path = out_dir / f"{self.key}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=env)

    def poll(self):
        """Reap the sampler if it has ended; True once it has."""
        if self.status is not None:
            return True
        pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
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


def run_all(samplers, ticks, out_dir):
    """Start every sampler at once and wait for all of them, within a time limit."""
    env = dict(os.environ, BENCH_TICKS=str(ticks))
    for s in samplers:
        s.start(out_dir, env)
    limit_s = ticks * INTERVAL_S + GRACE_S
    deadline = time.monotonic() + limit_s
    try:
        # A list, not a generator: every sampler is polled each round, so a crash is
        # seen at once even while an earlier one is still running.
        while not all([s.poll() for s in samplers]):
            failed = [s for s in samplers if s.status not in (None, 0)]
            if failed:
                break  # no point waiting for the others
            if time.monotonic() > deadline:
                running = ", ".join(s.label for s in samplers if s.status is None)
                raise TimeoutError(f"still running after {limit_s:.0f} s: {running}")
            time.sleep(0.1)
    finally:
        for s in samplers:
            s.kill()


def figures(sampler, ticks):
    """CPU figures of one sampler from its rusage and its own report."""
    total_s = sampler.rusage.ru_utime + sampler.rusage.ru_stime
    warmup_s = sampler.report["warmup_cpu_s"]
    # The two clocks are the same kernel counter, but guard against a sampler that
    # reports nonsense rather than print a negative cost.
    steady_s = max(total_s - warmup_s, 0.0)
    per_snapshot_ms = steady_s / (ticks - 1) * 1000.0
    return {
        "name": sampler.key,
        "label": sampler.label,
        "cpu_ms_per_snapshot": per_snapshot_ms,
        # One snapshot per INTERVAL_S: the share of one core the sampler keeps busy.
        "percent_of_one_core": per_snapshot_ms / (INTERVAL_S * 1000.0) * 100.0,
        "startup_cpu_ms": warmup_s * 1000.0,
        "total_cpu_ms": total_s * 1000.0,
        "processes_seen": sampler.report["processes"],
        "sockets_seen": sampler.report["sockets"],
    }


def ratio(a, b):
    """a / b, or None when b is zero."""
    return a / b if b > 0 else None


def main():
    """Run the benchmark, print the table, write the JSON report."""
    args = parse_args()
    ticks = ticks_from_env()
    here = Path(__file__).resolve().parent
    examples = args.target_dir / "release" / "examples"
    samplers = [
        Sampler("ours", "ours", [str(examples / "sampler_loop")]),
        Sampler("naive", "naive /proc", [str(examples / "naive_proc")]),
        Sampler("psutil", "psutil (seed)", [args.python, str(here / "psutil_sampler.py")]),
    ]
    for s in samplers:
        if not Path(s.argv[0]).exists():
            sys.exit(f"error: {s.argv[0]} not found; build it first (bench/run.sh does)")

    out_dir = args.target_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"machine: {machine['cores']} cores, {machine['cpu_model']}, "
          f"{machine['processes']} processes, {machine['sockets']} sockets")
    print(f"running {len(samplers)} samplers together, {ticks} ticks at {INTERVAL_S:g} s ...",
          flush=True)

    # Ctrl-C or a kill of the runner must not leave samplers behind: turn SIGTERM into
    # an exception so the cleanup in run_all runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("error: interrupted"))
    try:
        run_all(samplers, ticks, out_dir)
    except TimeoutError as e:
        sys.exit(f"error: samplers did not finish in time: {e}")

    problems = [p for p in (s.failure() for s in samplers) if p]
    if problems:
        sys.exit("error: " + "\nerror: ".join(problems))

    rows = [figures(s, ticks) for s in samplers]
    by_name = {r["name"]: r for r in rows}
    ratios = {
        "ours_over_naive": ratio(by_name["ours"]["cpu_ms_per_snapshot"],
                                 by_name["naive"]["cpu_ms_per_snapshot"]),
        "ours_over_psutil": ratio(by_name["ours"]["cpu_ms_per_snapshot"],
                                  by_name["psutil"]["cpu_ms_per_snapshot"]),
    }

    print(f"{'sampler':<17}{'cpu ms/snapshot':<18}{'% of one core at 1 s':<23}"
          f"{'start-up ms':<14}{'seen processes/sockets'}")
    for r in rows:
        print(f"{r['label']:<17}{r['cpu_ms_per_snapshot']:<18.2f}{r['percent_of_one_core']:<23.2f}"
              f"{r['startup_cpu_ms']:<14.1f}{r['processes_seen']}/{r['sockets_seen']}")
    for key, label in (("ours_over_naive", "ours/naive"), ("ours_over_psutil", "ours/psutil")):
        value = ratios[key]
        print(f"ratio {label}: " + (f"{value:.2f}" if value is not None else "n/a"))

    report = {
        "machine": machine,
        "ticks": ticks,
        "interval_s": INTERVAL_S,
        "method": "samplers run concurrently; cpu per snapshot = "
                  "(total cpu from wait4 - cpu after first tick) / (ticks - 1)",
        "samplers": rows,
        "ratios": ratios,
    }
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {report_path}")


if __name__ == "__main__":
    main()
