"""Collector ingest and live fan-out, measured with the load generator
(`examples/loadgen.rs`) against a real `procyon serve` on loopback.

Ingest: a ramp of simulated agents (steps of agent counts up to 1,000 at 1 s), each
step sending realistic snapshots over `/ws/agent` for a few seconds; the highest rate
sustained with p99 send-to-ack latency under 100 ms is the figure.

Its peer, in the same run: raw SQLite inserts of the same rows. Once the ramp is over
and the collector stopped, every row its ingest wrote (the tables that grew during the
ramp) is read back from its database and inserted into a fresh database with the same
tables and indexes (no triggers, no foreign-key checks), with Python's sqlite3 module
(SQLite's C library doing the work): one transaction per snapshot's worth of rows, as
the collector commits each snapshot before acknowledging it; WAL and synchronous=NORMAL
as the collector uses. Rows a snapshot's ingest writes vary with the store's layout,
which is why they are read from the store rather than made up here.

Fan-out: a fresh collector, 100 dashboards on `/ws/process-snapshots/?hostname=X`
(signed in as admin) and one agent sending to host X; the time from sending a snapshot
to each client receiving it, against the same snapshots' send-to-ack time.
"""

import contextlib
import resource
import sqlite3
import tempfile
import time
import types
from pathlib import Path

from common import (BenchError, Daemon, child_env, create_key_file, start_collector, stop_all,
                    write_secret)

# Snapshots' worth of rows replayed into raw SQLite at most (the ramp may store tens of
# thousands; a few thousand give a steady figure).
RAW_MAX_SNAPSHOTS = 3000
# Tables that ingest does not write, whatever their counts do.
NOT_INGEST = {"_sqlx_migrations", "users", "api_keys", "audit_log", "sqlite_sequence"}


def raise_open_files_limit():
    """A thousand agents and their collector need more than the usual 1,024 descriptors:
    raise the soft limit to the hard one, for this process and its children."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def table_counts(db_path):
    """Rows per table of a SQLite database, read-only."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


def find_database(data_dir):
    """The collector's SQLite file in its data directory."""
    candidates = [p for p in Path(data_dir).iterdir()
                  if p.is_file() and p.suffix in (".db", ".sqlite", ".sqlite3")]
    if len(candidates) != 1:
        raise BenchError(f"cannot tell the collector's database in {data_dir}: "
                         f"{[p.name for p in Path(data_dir).iterdir()]}")
    return candidates[0]


def raw_sqlite(source_db, tables, snapshots, scratch_dir):
    """Insert `snapshots`' worth of the rows of `tables` from source_db into a fresh
    database with the same tables and indexes, one transaction per snapshot's worth.
    Returns the rates."""
    fraction = min(1.0, RAW_MAX_SNAPSHOTS / snapshots)
    transactions = max(1, round(snapshots * fraction))
    src = sqlite3.connect(f"file:{source_db}?mode=ro", uri=True)
    try:
        schema = [sql for (sql,) in src.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND type IN ('table', 'index') "
            "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index'")]
        rows = {}
        columns = {}
        for t in tables:
            total = src.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
            take = max(1, round(total * fraction))
            cursor = src.execute(f'SELECT * FROM "{t}" LIMIT ?', (take,))
            columns[t] = len(cursor.description)
            rows[t] = cursor.fetchall()
    finally:
        src.close()

    path = Path(scratch_dir) / "raw.db"
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        for sql in schema:
            con.execute(sql)
        statements = {t: f'INSERT INTO "{t}" VALUES ({", ".join("?" * columns[t])})'
                      for t in tables}
        # Each transaction takes its share of every table, as one snapshot's ingest does.
        batches = []
        for i in range(transactions):
            batch = []
            for t in tables:
                n = len(rows[t])
                lo, hi = n * i // transactions, n * (i + 1) // transactions
                if hi > lo:
                    batch.append((statements[t], rows[t][lo:hi]))
            batches.append(batch)
        started = time.perf_counter()
        for batch in batches:
            con.execute("BEGIN")
            for statement, chunk in batch:
                con.executemany(statement, chunk)
            con.execute("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        con.close()
    inserted = sum(len(r) for r in rows.values())
    return {
        "snapshots_per_s": transactions / elapsed,
        "rows_per_s": inserted / elapsed,
        "rows": inserted,
        "rows_per_snapshot": inserted / transactions,
        "transactions": transactions,
        "tables": sorted(tables),
        "seconds": elapsed,
    }


def ramp_limit_s(steps, step_secs):
    """The longest the ramp may take: what the load generator itself allows (each step
    may be tried twice), plus a bit."""
    return len(steps) * 2 * (step_secs + 200) + 60


@contextlib.contextmanager
def throwaway_collector(procyon, label, extra=()):
    """A collector on a free loopback port with an empty data directory and an agent
    API key in `key`: yields a namespace with tmp, data_dir, collector, base, password,
    key and daemons (children to stop; the collector is the first). Everything is
    stopped and removed on the way out. `extra` are more arguments of `procyon serve`;
    a callable is given the scratch directory and returns them."""
    with tempfile.TemporaryDirectory(prefix=f"procyon-bench-{label}-") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "collector"
        data_dir.mkdir()
        daemons = []
        try:
            # Every simulated agent and dashboard comes from one loopback address, the
            # dashboards as one user: lift the per-client shares, which keep clients
            # from starving each other and are not what is measured here.
            more = tuple(extra(tmp) if callable(extra) else extra)
            collector, base, password = start_collector(procyon, data_dir, tmp, extra=(
                "--max-connections-per-address", "4096", "--max-streams-per-user", "4096", *more))
            daemons.append(collector)
            create_key_file(procyon, data_dir, tmp / "api.key")
            yield types.SimpleNamespace(tmp=tmp, data_dir=data_dir, collector=collector, base=base,
                                        password=password, key=tmp / "api.key", daemons=daemons)
        finally:
            stop_all(daemons)


def loadgen_argv(loadgen, env, host_prefix):
    """The load generator's common arguments against `env`'s collector."""
    return [str(loadgen), "--collector", env.base, "--api-key-file", str(env.key),
            "--collector-pid", str(env.collector.pid), "--host-prefix", host_prefix]


def run_ingest(procyon, loadgen, steps, step_secs, processes=480, rate_intervals=()):
    """The ramp against a throwaway collector, then raw SQLite with its rows. Each step
    also reports the collector's resident memory before its agents connect, with all
    of them connected, and a few seconds after they left. If the ramp's last step is
    sustained, the same agents then send at each of `rate_intervals` (see run_rates)."""
    with throwaway_collector(procyon, f"ingest-{processes}") as env:
        db = find_database(env.data_dir)
        before = table_counts(db)
        print(f"collector ingest: ramp of {','.join(map(str, steps))} agents at 1 s, "
              f"{processes} processes each, {step_secs} s per step ...", flush=True)
        gen = Daemon(f"loadgen ramp {processes}", loadgen_argv(loadgen, env, "bench-ingest") + [
            "--processes", str(processes),
            "ramp", "--steps", ",".join(map(str, steps)), "--interval", "1",
            "--step-duration", str(step_secs), "--p99-ms", "100"], child_env(), env.tmp)
        env.daemons.append(gen)
        ramp = gen.wait_json(ramp_limit_s(steps, step_secs))
        print(gen.stderr_path.read_text(errors="replace").strip(), flush=True)
        env.collector.check_running()
        rate_steps = []
        if rate_intervals and (ramp.get("best") or {}).get("agents") == max(steps):
            rate_steps = run_rates(loadgen, env, max(steps), rate_intervals, step_secs, processes)
        # Stopped, so that everything it wrote is in the database file.
        stop_all(env.daemons)
        after = table_counts(db)
        grown = [t for t in after if t not in NOT_INGEST and after[t] > before.get(t, 0)]
        acked = sum(s.get("acked", 0) for s in ramp["steps"] + rate_steps)
        if not grown or acked == 0:
            raise BenchError("the ramp stored nothing: no raw SQLite peer to compare with")
        raw = raw_sqlite(db, grown, acked, env.tmp)
    return {"ramp": ramp, "rate_steps": rate_steps, "raw_sqlite": raw, "stored_snapshots": acked,
            "processes": processes}


def run_rates(loadgen, env, agents, intervals, step_secs, processes):
    """Past the ramp's last step: the same agents sending faster, one shorter interval a
    step, until one is not sustained. The ramp at 1 s stops at the load generator's
    agent count; this finds the collector's own ceiling in snapshots a second, which is
    what is compared with raw SQLite."""
    out = []
    for interval in intervals:
        print(f"collector ingest: {agents} agents every {interval} s ...", flush=True)
        gen = Daemon(f"loadgen rate {interval}", loadgen_argv(loadgen, env, "bench-ingest") + [
            "--processes", str(processes),
            "ingest", "--agents", str(agents), "--interval", str(interval),
            "--duration", str(step_secs), "--p99-ms", "100"], child_env(), env.tmp)
        env.daemons.append(gen)
        step = gen.wait_json(step_secs + 600)
        env.daemons.remove(gen)
        lat = step.get("latency_ms", {})
        print(f"  {step.get('rate_per_s', 0):.0f}/s, p99 {lat.get('p99')} ms, "
              f"{'sustained' if step.get('sustained') else 'not sustained'}", flush=True)
        out.append(step)
        if not step.get("sustained"):
            break
    return out


def run_fanout(procyon, loadgen, clients, secs):
    """One agent and `clients` dashboards on a fresh collector."""
    with throwaway_collector(procyon, "fanout") as env:
        write_secret(env.tmp / "admin.pw", env.password)
        print(f"live fan-out: {clients} dashboards, one agent at 1 s for {secs} s ...", flush=True)
        gen = Daemon("loadgen fanout", loadgen_argv(loadgen, env, "bench") + [
            "fanout", "--clients", str(clients), "--interval", "1", "--duration", str(secs),
            "--admin-password-file", str(env.tmp / "admin.pw")], child_env(), env.tmp)
        env.daemons.append(gen)
        result = gen.wait_json(secs + 300)
        env.collector.check_running()
    return result
