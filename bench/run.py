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

Then the agent's own cost: a collector (`procyon serve --no-local`) on a free loopback
port with a throwaway data directory, and two `procyon-agent`s streaming to it side by
side, one at a 1 s and one at a 2 s interval. After a warm-up, each agent's CPU time
(utime + stime from /proc/PID/stat) is read at the start and end of a window of
AGENT_BENCH_SECS seconds (default 30) and its resident memory (VmRSS) every second; the
collector's CPU over the same window is reported for context. The snapshots the
collector stored during the window are counted through its API: none means the run
failed. The 1 s figures are checked against the agent's design budget (reported, not
fatal).

Standard library only. Prints a table and writes the same figures to
<target dir>/bench/report.json. Exits non-zero if a sampler or an agent fails or a
step runs too long.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_TICKS = 30
INTERVAL_S = 1.0
# Allowance on top of the ticks themselves for start-up and slow snapshots.
GRACE_S = 60.0

# The agent benchmark: one agent per interval, all running at once.
AGENT_DEFAULT_SECS = 30
AGENT_INTERVALS_S = (1, 2)
AGENT_WARMUP_S = 5.0
# The agent's design budget at a 1 s interval.
AGENT_BUDGET = {"interval_s": 1, "cpu_percent": 0.6, "rss_mib": 20.0}
# Limits on each step, so a hung collector or agent cannot hang the benchmark.
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_args():
    """Command line: where the built examples are and which Python has psutil."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-dir", required=True, type=Path,
                        help="cargo target directory holding release/ and release/examples/")
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


class AgentBenchError(Exception):
    """The agent benchmark could not be run or its result is not usable."""


def agent_secs_from_env():
    """Read AGENT_BENCH_SECS, the length of the agent measurement window in seconds."""
    text = os.environ.get("AGENT_BENCH_SECS", str(AGENT_DEFAULT_SECS))
    try:
        secs = int(text)
    except ValueError:
        sys.exit(f"error: AGENT_BENCH_SECS={text!r} is not a whole number")
    if secs < 5:
        sys.exit(f"error: AGENT_BENCH_SECS={secs}: need at least 5 for a meaningful figure")
    return secs


def cpu_seconds(pid):
    """CPU time (user + system, all threads) a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name in parentheses may hold spaces: split after its closing one.
    # What follows starts at field 3 (state); utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid):
    """Resident memory of a process in MiB (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # the kernel gives kB
    raise AgentBenchError(f"no VmRSS in /proc/{pid}/status")


def child_env(**extra):
    """This environment without PROCYON_* variables, so the user's settings cannot
    change what is measured, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCYON_")}
    env.update(extra)
    return env


class Daemon:
    """A long-running child (collector or agent) with its output in files."""

    def __init__(self, label, argv, env, log_dir):
        self.label = label
        self.stdout_path = log_dir / f"{label.replace(' ', '-')}.out"
        self.stderr_path = log_dir / f"{label.replace(' ', '-')}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env,
                                         stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        """The child's process id."""
        return self.proc.pid

    def check_running(self):
        """Raise AgentBenchError, with the end of its stderr, if the child has exited."""
        status = self.proc.poll()
        if status is not None:
            raise AgentBenchError(f"{self.label} exited with status {status}" + self.stderr_tail())

    def stderr_tail(self, lines=20):
        """The last lines of the child's stderr, as a suffix for an error message."""
        text = self.stderr_path.read_text(errors="replace").strip()
        if not text:
            return ""
        return "; its stderr:\n" + "\n".join(text.splitlines()[-lines:])


def stop_all(daemons):
    """SIGTERM every child still running, then SIGKILL those not gone after STOP_TIMEOUT_S."""
    for d in daemons:
        if d.proc.poll() is None:
            d.proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for d in daemons:
        try:
            d.proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            print(f"warning: {d.label} did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM; "
                  "killing it", file=sys.stderr)
            d.proc.kill()
            d.proc.wait()


def wait_for_collector(collector):
    """Wait until the collector prints where it listens; return (base URL, admin password).

    The first start of an empty data directory prints the new admin's password first.
    """
    password = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        collector.check_running()
        for line in collector.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("No users yet: created `admin` with password "):
                password = line.rsplit(" ", 1)[1]
            elif line.startswith("Procyon collector on "):
                base = line.split()[3].rstrip("/")
                if password is None:
                    raise AgentBenchError("the collector printed no admin password; "
                                          "its data directory was not empty")
                return base, password
        time.sleep(0.1)
    raise AgentBenchError(f"the collector did not start within {STARTUP_TIMEOUT_S:g} s"
                          + collector.stderr_tail())


def create_key_file(procyon, data_dir, key_path, env):
    """Create an agent API key with `procyon apikey create` and write it to key_path (0600)."""
    try:
        done = subprocess.run([str(procyon), "apikey", "create", "--name", "bench",
                               "--data", str(data_dir)],
                              capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                              timeout=STARTUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AgentBenchError(f"`procyon apikey create` took over {STARTUP_TIMEOUT_S:g} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AgentBenchError(f"`procyon apikey create` failed (status {done.returncode}): "
                              f"{done.stderr.strip()}")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(lines[-1].strip() + "\n")


class CollectorApi:
    """The few collector API calls the benchmark needs, over loopback only."""

    def __init__(self, base):
        self.base = base
        self.token = None
        # No proxy: an http_proxy in the environment must not divert loopback requests.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method, path, body=None):
        """Send a request; return the response, read, as (headers, parsed JSON body)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with self.opener.open(req, timeout=HTTP_TIMEOUT_S) as response:
            return response.headers, json.loads(response.read() or b"null")

    def login(self, username, password):
        """Sign in and keep the token for the next requests."""
        try:
            _, answer = self.request("POST", "/api/auth/login",
                                     {"username": username, "password": password})
        except urllib.error.URLError as e:
            raise AgentBenchError(f"cannot sign in to the collector: {e}")
        self.token = answer["token"]

    def snapshot_count(self, hostname):
        """How many snapshots the collector has stored for hostname (0 for an unknown host)."""
        query = urllib.parse.urlencode({"hostname": hostname, "limit": 1})
        try:
            headers, _ = self.request("GET", f"/api/process-snapshots/list/?{query}")
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no snapshot from this host yet
                return 0
            raise AgentBenchError(f"listing the snapshots of {hostname} failed: {e}")
        except urllib.error.URLError as e:
            raise AgentBenchError(f"cannot reach the collector: {e}")
        return int(headers["X-Total-Count"])


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
        server_env = child_env(RUST_LOG="warn")
        try:
            collector = Daemon("collector", [str(procyon), "serve", "--no-local",
                                             "--bind", "127.0.0.1:0", "--data", str(data_dir)],
                               server_env, tmp)
            daemons.append(collector)
            base, password = wait_for_collector(collector)
            api = CollectorApi(base)
            api.login("admin", password)
            create_key_file(procyon, data_dir, key_path, server_env)

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
                        rss[interval].append(rss_mib(a.pid))
                    except AgentBenchError:
                        a.check_running()  # it exited just now: say so rather than "no VmRSS"
                        raise
            collector.check_running()
            cpu_after = {d.label: cpu_seconds(d.pid) for d in daemons}
            window_s = time.monotonic() - started
            counts_after = {i: api.snapshot_count(f"bench-{i}s") for i in agents}
            for interval, a in agents.items():
                if counts_after[interval] <= counts_before[interval]:
                    raise AgentBenchError(
                        f"no snapshot from the agent at {interval} s (host bench-{interval}s) "
                        f"reached the collector during the window ({counts_after[interval]} "
                        f"stored in all)" + a.stderr_tail())
        finally:
            stop_all(daemons)

    def percent(label):
        """CPU % of one core a child used over the window."""
        return (cpu_after[label] - cpu_before[label]) / window_s * 100.0

    runs = [{
        "interval_s": interval,
        "hostname": f"bench-{interval}s",
        "cpu_percent_of_one_core": percent(a.label),
        "rss_mib": rss[interval][-1],
        "rss_mib_max": max(rss[interval]),
        "snapshots_stored": counts_after[interval] - counts_before[interval],
    } for interval, a in agents.items()]
    budget_run = next(r for r in runs if r["interval_s"] == AGENT_BUDGET["interval_s"])
    return {
        "window_s": window_s,
        "warmup_s": AGENT_WARMUP_S,
        "method": "agents run concurrently against a local collector; cpu % = "
                  "(utime + stime from /proc/PID/stat over the window) / window; "
                  "rss = VmRSS sampled every second (last and max); snapshots_stored = "
                  "snapshots the collector stored for the host during the window",
        "runs": runs,
        "collector_cpu_percent_of_one_core": percent(collector.label),
        "budget": {
            **AGENT_BUDGET,
            "cpu_pass": budget_run["cpu_percent_of_one_core"] <= AGENT_BUDGET["cpu_percent"],
            "rss_pass": budget_run["rss_mib_max"] <= AGENT_BUDGET["rss_mib"],
        },
    }


def print_agents(result):
    """Print the agent figures and the budget check."""
    for r in result["runs"]:
        print(f"agent at {r['interval_s']} s: cpu {r['cpu_percent_of_one_core']:.2f} % of one "
              f"core, rss {r['rss_mib']:.1f} MiB (max {r['rss_mib_max']:.1f}), "
              f"{r['snapshots_stored']} snapshots stored")
    print(f"collector (storing both): cpu {result['collector_cpu_percent_of_one_core']:.2f} % "
          f"of one core")
    b = result["budget"]
    run = next(r for r in result["runs"] if r["interval_s"] == b["interval_s"])
    verdict = {True: "PASS", False: "MISS"}
    print(f"budget agent at {b['interval_s']} s: "
          f"cpu <= {b['cpu_percent']:g} %: {verdict[b['cpu_pass']]} "
          f"({run['cpu_percent_of_one_core']:.2f}), "
          f"rss <= {b['rss_mib']:g} MiB: {verdict[b['rss_pass']]} ({run['rss_mib_max']:.1f})")


def main():
    """Run the benchmark, print the table, write the JSON report."""
    args = parse_args()
    ticks = ticks_from_env()
    agent_secs = agent_secs_from_env()
    here = Path(__file__).resolve().parent
    examples = args.target_dir / "release" / "examples"
    samplers = [
        Sampler("ours", "ours", [str(examples / "sampler_loop")]),
        Sampler("naive", "naive /proc", [str(examples / "naive_proc")]),
        Sampler("psutil", "psutil (seed)", [args.python, str(here / "psutil_sampler.py")]),
    ]
    procyon = args.target_dir / "release" / "procyon"
    agent = args.target_dir / "release" / "procyon-agent"
    for binary in [s.argv[0] for s in samplers] + [procyon, agent]:
        if not Path(binary).exists():
            sys.exit(f"error: {binary} not found; build it first (bench/run.sh does)")

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

    try:
        agents = run_agents(procyon, agent, agent_secs)
    except AgentBenchError as e:
        sys.exit(f"error: agent benchmark: {e}")
    print_agents(agents)

    report = {
        "machine": machine,
        "ticks": ticks,
        "interval_s": INTERVAL_S,
        "method": "samplers run concurrently; cpu per snapshot = "
                  "(total cpu from wait4 - cpu after first tick) / (ticks - 1)",
        "samplers": rows,
        "ratios": ratios,
        "agent": agents,
    }
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {report_path}")


if __name__ == "__main__":
    main()
