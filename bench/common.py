"""What the benchmark's parts share: child processes, their CPU and memory, a throwaway
collector, the machine description, and running a command that prints one JSON object.

Standard library only. Every wait is bounded; every child is stopped on the way out.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Limits on each step, so a hung child cannot hang the benchmark.
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A part of the benchmark could not be run or its result is not usable."""


def cpu_seconds(pid):
    """CPU time (user + system, all threads) a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name in parentheses may hold spaces: split after its closing one.
    # What follows starts at field 3 (state); utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid, field="VmRSS"):
    """A memory figure of a process in MiB from /proc/PID/status: VmRSS (resident now)
    or VmHWM (the most it was ever resident)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # the kernel gives kB
    raise BenchError(f"no {field} in /proc/{pid}/status")


def child_env(**extra):
    """This environment without PROCYON_* variables, so the user's settings cannot
    change what is measured, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCYON_")}
    env.update(extra)
    return env


def machine_info():
    """Cores, CPU model, and how many processes and sockets there are to sample now."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        memory_kib = int(f.readline().split()[1])
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_mib": memory_kib // 1024,
            **counts_now()}


def counts_now():
    """How many processes and inet sockets the machine has at this moment."""
    processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
    sockets = 0
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{table}") as f:
                sockets += sum(1 for _ in f) - 1  # minus the header line
        except FileNotFoundError:
            pass
    return {"processes": processes, "sockets": sockets}


class Daemon:
    """A long-running child (collector, agent, load generator) with its output in files."""

    def __init__(self, label, argv, env, log_dir):
        self.label = label
        name = label.replace(" ", "-").replace("/", "-")
        self.stdout_path = Path(log_dir) / f"{name}.out"
        self.stderr_path = Path(log_dir) / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env,
                                         stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        """The child's process id."""
        return self.proc.pid

    def check_running(self):
        """Raise BenchError, with the end of its stderr, if the child has exited."""
        status = self.proc.poll()
        if status is not None:
            raise BenchError(f"{self.label} exited with status {status}" + self.stderr_tail())

    def stderr_tail(self, lines=20):
        """The last lines of the child's stderr, as a suffix for an error message."""
        text = self.stderr_path.read_text(errors="replace").strip()
        if not text:
            return ""
        return "; its stderr:\n" + "\n".join(text.splitlines()[-lines:])

    def wait_json(self, timeout_s):
        """Wait (bounded) for the child to end by itself; return the JSON object it
        printed last on stdout. A child that overruns is killed and reported."""
        try:
            status = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"{self.label} did not stop by itself within {timeout_s:g} s")
        if status != 0:
            raise BenchError(f"{self.label} exited with status {status}" + self.stderr_tail())
        return last_json_object(self.stdout_path.read_text(errors="replace"), self.label)


def last_json_object(text, label):
    """The last line of `text` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise BenchError(f"{label} printed no JSON object")


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


def run_json(label, argv, timeout_s, env=None, cwd=None):
    """Run a command that prints one JSON object on stdout; return it. Its stderr passes
    through, so its progress stays visible."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=timeout_s, env=env, cwd=cwd, text=True)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label} took over {timeout_s:g} s and was stopped")
    except OSError as e:
        raise BenchError(f"{label} could not start: {e}")
    if done.returncode != 0:
        raise BenchError(f"{label} exited with status {done.returncode}")
    return last_json_object(done.stdout, label)


def start_collector(procyon, data_dir, log_dir, extra=(), need_password=True):
    """Start `procyon serve --no-local` on a free loopback port with an empty data
    directory; return (daemon, base URL, admin password). A second collector on a
    database that already has its admin prints no password: `need_password=False`
    then, and the password is None."""
    collector = Daemon("collector", [str(procyon), "serve", "--no-local", "--bind", "127.0.0.1:0",
                                     "--data", str(data_dir), *extra],
                       child_env(RUST_LOG="warn"), log_dir)
    try:
        base, password = wait_for_collector(collector, need_password)
    except BaseException:
        stop_all([collector])
        raise
    return collector, base, password


def wait_for_collector(collector, need_password=True):
    """Wait until the collector prints where it listens; return (base URL, admin password).

    The first start of an empty data directory prints the new admin's password first.
    """
    password = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        collector.check_running()
        for line in collector.stdout_path.read_text(errors="replace").splitlines():
            prefix = "No users yet: created `admin`; its password is in "
            if line.startswith(prefix):
                password_file = line[len(prefix):].split(" (", 1)[0]
                with open(password_file, encoding="utf-8") as f:
                    password = f.read().strip()
            elif line.startswith("Procyon collector on "):
                base = line.split()[3].rstrip("/")
                if password is None and need_password:
                    raise BenchError("the collector printed no admin password; "
                                     "its data directory was not empty")
                return base, password
        time.sleep(0.1)
    raise BenchError(f"the collector did not start within {STARTUP_TIMEOUT_S:g} s"
                     + collector.stderr_tail())


def write_secret(path, text):
    """Write a key or password to a new file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text.strip() + "\n")


def create_key_file(procyon, data_dir, key_path):
    """Create an agent API key with `procyon apikey create` and write it to key_path (0600)."""
    try:
        done = subprocess.run([str(procyon), "apikey", "create", "--name", "bench",
                               "--data", str(data_dir)],
                              capture_output=True, text=True, env=child_env(RUST_LOG="warn"),
                              stdin=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`procyon apikey create` took over {STARTUP_TIMEOUT_S:g} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"`procyon apikey create` failed (status {done.returncode}): "
                         f"{done.stderr.strip()}")
    write_secret(key_path, lines[-1])


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
            raise BenchError(f"cannot sign in to the collector: {e}")
        self.token = answer["token"]

    def snapshot_count(self, hostname):
        """How many snapshots the collector has stored for hostname (0 for an unknown host)."""
        query = urllib.parse.urlencode({"hostname": hostname, "limit": 1})
        try:
            headers, _ = self.request("GET", f"/api/process-snapshots/list/?{query}")
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no snapshot from this host yet
                return 0
            raise BenchError(f"listing the snapshots of {hostname} failed: {e}")
        except urllib.error.URLError as e:
            raise BenchError(f"cannot reach the collector: {e}")
        return int(headers["X-Total-Count"])
