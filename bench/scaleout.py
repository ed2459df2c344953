"""Scale-out: two collectors on one PostgreSQL, against the single SQLite collector.

A throwaway PostgreSQL cluster (Debian's `postgresql` binaries, run as the `postgres`
user when the bench runs as root, since initdb refuses root) on a free loopback port,
with its default durability settings: what an operator's server would have. Two
`procyon serve --database postgres://...` share it.

- Ingest: at each step of agents at 1 s, half the agents send to each collector (two
  load generators at once, one per collector, each measuring its own collector's CPU).
  A step is sustained when both halves are: every frame acked and p99 under 100 ms. The
  combined p99 reported is the higher of the two, an upper bound of the whole's.
  PostgreSQL's own CPU (its server and every backend) and the database's growth are
  read around each step.
- Live fan-out across collectors: one agent sends to collector B while dashboards follow
  its host on collector A (`loadgen fanout --watch-collector`): the time from the
  agent's send to a dashboard on A receiving it.
- Another collector's snapshots: every collector hears of every snapshot the others
  store, with the fleet overview's figures of it, and reads back from the database only
  those of hosts someone follows on it. One more step sends agents to collector A only,
  while nobody follows anything on B: A's CPU per snapshot is what ingest costs, B's
  what hearing of one costs.
- The estimate for 10,000 agents at 1 s, from those two costs per snapshot, PostgreSQL's
  and the bytes stored per snapshot, with the arithmetic. With N collectors sharing R
  snapshots a second evenly, each one ingests R/N and hears of R(N-1)/N: its CPU tends
  to R times the hearing cost however many collectors there are, which bounds the fleet
  (on top, each reads back one snapshot a second per host followed on it).

Everything runs on this one machine, load generators included, so the agent count two
collectors carry here is not what two machines would carry: the estimate uses CPU per
snapshot, which does not depend on how many machines share it.
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import types
from pathlib import Path

from common import BenchError, Daemon, child_env, cpu_seconds, start_collector, stop_all, write_secret, STARTUP_TIMEOUT_S
from pieces import NotAvailable

#: USER_HZ on every mainstream Linux build.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def postgres_bin():
    """The newest PostgreSQL server binaries under /usr/lib/postgresql, or None."""
    found = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for d in root.iterdir():
            if d.name.isdigit() and (d / "bin" / "initdb").exists():
                found.append((int(d.name), d / "bin"))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port():
    """A loopback port free at this moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres():
    """A PostgreSQL cluster of its own in a temporary directory: yields a namespace with
    `url` (database `postgres`, user `postgres`, trust on loopback), `dir`, `port`,
    `bin`; stopped and removed on the way out."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise NotAvailable("PostgreSQL is not installed (Debian's `postgresql` package; "
                           "scripts/deps.sh bench installs it)")
    as_postgres = os.geteuid() == 0
    tmp = Path(tempfile.mkdtemp(prefix="procyon-bench-pg-"))
    prefix = []
    if as_postgres:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise NotAvailable("running as root, and there is no `postgres` user to run PostgreSQL as")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*argv):
        done = subprocess.run(prefix + [str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S * 4)
        if done.returncode != 0:
            raise BenchError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    data = tmp / "data"
    port = free_port()
    started = False
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c max_connections=300"
        run("pg_ctl", "-D", str(data), "-l", str(tmp / "server.log"), "-o", options, "-w", "start")
        started = True
        yield types.SimpleNamespace(url=f"postgres://postgres@127.0.0.1:{port}/postgres", dir=tmp,
                                    data=data, port=port, bin=bin_dir)
    finally:
        if started:
            with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
                run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def postgres_cpu_seconds(pg):
    """CPU seconds used so far by the cluster: its server process with the children it
    has reaped, plus every live backend (its children)."""
    try:
        main_pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        pid, ppid = int(entry), int(fields[1])
        if pid == main_pid:
            # utime, stime, cutime, cstime: the reaped children's time is the server's.
            total += sum(int(v) for v in fields[11:15])
        elif ppid == main_pid:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def database_bytes(pg):
    """The database's size on disk, as PostgreSQL counts it (tables, indexes, TOAST)."""
    done = subprocess.run([str(pg.bin / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                           "-Atc", "SELECT pg_database_size('postgres')"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"psql failed: {done.stderr.strip()}")
    return int(done.stdout.strip())


def start_pair(procyon, pg, tmp):
    """Two collectors on `pg`; the first creates the admin user and prints its password."""
    extra = ("--database", pg.url, "--max-connections-per-address", "4096", "--max-streams-per-user", "4096")
    daemons = []
    collectors = []
    for name in ("a", "b"):
        log_dir = tmp / name
        (log_dir / "data").mkdir(parents=True)
        collector, base, password = start_collector(procyon, log_dir / "data", log_dir, extra=extra,
                                                    need_password=(name == "a"))
        daemons.append(collector)
        collectors.append(types.SimpleNamespace(daemon=collector, base=base, password=password))
    return collectors, daemons


def create_key(procyon, pg, key_path):
    """An agent API key in the shared database, written to key_path (0600)."""
    done = subprocess.run([str(procyon), "apikey", "create", "--name", "bench", "--database", pg.url],
                          capture_output=True, text=True, env=child_env(RUST_LOG="warn"),
                          stdin=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"`procyon apikey create` failed (status {done.returncode}): {done.stderr.strip()}")
    write_secret(key_path, lines[-1])


def ingest_step(loadgen, collectors, key, agents, step_secs, tmp, processes, halves=None):
    """One step: `agents` at 1 s split over the two collectors (`halves`, evenly unless
    given), both load generators at once; their reports (one per collector sent to)."""
    halves = halves or [agents // 2, agents - agents // 2]
    gens = []
    for c, n, name in zip(collectors, halves, ("a", "b")):
        if n == 0:
            continue
        argv = [str(loadgen), "--collector", c.base, "--api-key-file", str(key),
                "--collector-pid", str(c.daemon.pid), "--host-prefix", f"bench-scale-{name}",
                "--processes", str(processes),
                "ingest", "--agents", str(n), "--interval", "1", "--duration", str(step_secs), "--p99-ms", "100"]
        gens.append(Daemon(f"loadgen scale-out {name} {n}", argv, child_env(), tmp))
    try:
        reports = [None] * len(gens)

        def wait(i):
            reports[i] = gens[i].wait_json(step_secs + 600)

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(gens))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(r is None for r in reports):
            raise BenchError("a scale-out load generator gave no report")
        return reports
    finally:
        stop_all(gens)


def combine(agents, reports, pg_cpu_s, db_growth, wall_s):
    """One step's figures from its two halves."""
    p99s = [((r.get("latency_ms") or {}).get("p99") or 0) for r in reports]
    acked = sum(r.get("acked", 0) for r in reports)
    collector_cpu = sum(((r.get("cpu") or {}).get("collector_cpu_percent") or 0) for r in reports)
    return {
        "agents": agents,
        "halves": [r.get("agents") for r in reports],
        "sustained": all(r.get("sustained") for r in reports),
        "acked": acked,
        "rate_per_s": sum(r.get("rate_per_s", 0) for r in reports),
        "p99_ms": max(p99s),
        "p99_ms_each": p99s,
        "collectors_cpu_percent": collector_cpu,
        "loadgen_cpu_percent": sum(((r.get("cpu") or {}).get("loadgen_cpu_percent") or 0) for r in reports),
        # Over the whole step, connecting included: a lower bound of its share while
        # sending. Per snapshot (below) it is exact.
        "postgres_cpu_percent": None if pg_cpu_s is None else 100.0 * pg_cpu_s / wall_s,
        "postgres_cpu_seconds": pg_cpu_s,
        "database_growth_bytes": db_growth,
        "first_problem": next((r.get("first_problem") for r in reports if r.get("first_problem")), None),
    }


def others_step(loadgen, collectors, key, agents, step_secs, tmp, processes):
    """`agents` at 1 s all on collector A, while B only hears of what A stores (nobody
    follows anything on B): the two costs per snapshot apart. B's CPU is read around the
    whole step (connecting and the last acks included), so its figure is an upper
    bound."""
    b = collectors[1].daemon.pid
    before = cpu_seconds(b)
    report = ingest_step(loadgen, collectors, key, agents, step_secs, tmp, processes, halves=[agents, 0])[0]
    b_cpu_s = cpu_seconds(b) - before
    rate, acked = report.get("rate_per_s") or 0, report.get("acked") or 0
    if not rate or not acked:
        return None
    return {
        "agents": agents,
        "sustained": bool(report.get("sustained")),
        "p99_ms": (report.get("latency_ms") or {}).get("p99"),
        "ingest_core_ms_per_snapshot": ((report.get("cpu") or {}).get("collector_cpu_percent") or 0) / 100.0 / rate * 1000,
        "heard_core_ms_per_snapshot": b_cpu_s / acked * 1000,
    }


#: Two-core collectors kept at most 70 % busy, so a spike or a lost collector has room.
CORES_USABLE = 2 * 0.7


def estimate(best, split):
    """What 10,000 agents at 1 s need, from the best sustained step's per-snapshot costs
    (PostgreSQL's, the bytes stored) and the step on one collector's (the collectors')."""
    rate = best["rate_per_s"]
    if not rate:
        return None
    target = 10_000
    pg_core_s = (best["postgres_cpu_seconds"] or 0) / max(1, best["acked"])
    bytes_per = (best["database_growth_bytes"] or 0) / max(1, best["acked"])
    out = {
        "agents": target,
        "postgres_core_ms_per_snapshot": pg_core_s * 1000,
        "stored_bytes_per_snapshot": bytes_per,
        "postgres_cores": pg_core_s * target,
        "disk_per_day_bytes": bytes_per * target * 86_400,
    }
    if split:
        ingest_s = split["ingest_core_ms_per_snapshot"] / 1000
        heard_s = split["heard_core_ms_per_snapshot"] / 1000

        def per_collector(n):
            """Cores each of N collectors needs: it ingests target/N snapshots a second
            and hears of target(N-1)/N."""
            return target * (ingest_s + heard_s * (n - 1)) / n

        fits = next((n for n in range(1, 1001) if per_collector(n) <= CORES_USABLE), None)
        out.update({
            "ingest_core_ms_per_snapshot": ingest_s * 1000,
            "heard_core_ms_per_snapshot": heard_s * 1000,
            # However many collectors: each hears of nearly all of the fleet.
            "fleet_ceiling_per_s": CORES_USABLE / heard_s if heard_s else None,
            "collectors_of_two_cores": fits,
            "cores_per_collector_at_10": per_collector(10),
        })
    return out


def run_scaleout(procyon, loadgen, steps, step_secs, clients, fanout_secs, processes=480):
    """The whole part: the ingest ramp over two collectors, the fan-out across them, and
    the estimate."""
    with throwaway_postgres() as pg, tempfile.TemporaryDirectory(prefix="procyon-bench-scale-") as tmp:
        tmp = Path(tmp)
        daemons = []
        try:
            collectors, daemons = start_pair(procyon, pg, tmp)
            key = tmp / "api.key"
            create_key(procyon, pg, key)
            out = []
            for agents in steps:
                print(f"scale-out: {agents} agents at 1 s over two collectors on PostgreSQL, "
                      f"{step_secs} s ...", flush=True)
                cpu0, size0 = postgres_cpu_seconds(pg), database_bytes(pg)
                t0 = time.monotonic()
                reports = ingest_step(loadgen, collectors, key, agents, step_secs, tmp, processes)
                wall = time.monotonic() - t0
                cpu1, size1 = postgres_cpu_seconds(pg), database_bytes(pg)
                for c in collectors:
                    c.daemon.check_running()
                step = combine(agents, reports, None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
                               size1 - size0, wall)
                out.append(step)
                print(f"  {step['rate_per_s']:.0f}/s, p99 {step['p99_ms']} ms, collectors "
                      f"{step['collectors_cpu_percent']:.0f} %, PostgreSQL "
                      f"{(step['postgres_cpu_percent'] or 0):.0f} % of one core, "
                      f"{'sustained' if step['sustained'] else 'not sustained'}", flush=True)
                if not step["sustained"]:
                    break
            best = max((s for s in out if s["sustained"]), key=lambda s: s["agents"], default=None)
            split = None
            if best:
                n = max(10, best["agents"] // 2)
                print(f"scale-out, another collector's snapshots: {n} agents at 1 s on collector A only, "
                      f"{step_secs} s ...", flush=True)
                split = others_step(loadgen, collectors, key, n, step_secs, tmp, processes)

            write_secret(tmp / "admin.pw", collectors[0].password)
            print(f"scale-out fan-out: one agent on collector B, {clients} dashboards on A, "
                  f"{fanout_secs} s ...", flush=True)
            gen = Daemon("loadgen fan-out across", [
                str(loadgen), "--collector", collectors[1].base, "--api-key-file", str(key),
                "--host-prefix", "bench-scale-fanout",
                "fanout", "--clients", str(clients), "--interval", "1", "--duration", str(fanout_secs),
                "--admin-password-file", str(tmp / "admin.pw"), "--watch-collector", collectors[0].base,
            ], child_env(), tmp)
            daemons.append(gen)
            fanout = gen.wait_json(fanout_secs + 300)
            return {"steps": out, "best": best, "fanout": fanout, "others": split,
                    "estimate": estimate(best, split) if best else None, "processes": processes}
        finally:
            stop_all(daemons)
