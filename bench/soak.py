"""Soak: the collector under a steady fleet for a long time, and whether it stays flat.

200 simulated agents (`examples/loadgen.rs soak`, each sending a realistic snapshot a
second over `/ws/agent`, reconnecting as real agents do) and 20 dashboards (each
following one agent's host over `/ws/process-snapshots/?hostname=X&delta=1`, as the
dashboard's host page does) run against a throwaway collector for BENCH_SOAK_SECS
(default 3600). Every BENCH_SOAK_SAMPLE_SECS (default 10) the load generator samples the
collector's resident memory (VmRSS), its open files (entries of /proc/PID/fd), its CPU,
and the p50/p99 ingest latency (send to ack) of the window; the samples are written to
<target dir>/bench/soak.csv, one row each.

Each curve gets its least-squares slope per hour, fitted after a warm-up: the first
fifth of the run, at most 10 minutes, while caches fill to their bounds (SQLite's page
cache on each connection, the allocator's arenas, the hub's newest snapshot per host,
each dashboard's base for its deltas). "Flat", the budget, is concrete per curve:

- memory: a slope of at most 16 bytes per stored snapshot (at 200 agents at 1 s, about
  11 MiB an hour). A leak tied to the work leaks per snapshot, and the smallest block
  an allocator hands out is 16 bytes: one of those lost per snapshot would show as this
  slope, so anything below it is not a per-snapshot leak but noise or a bounded cache
  still filling;
- open files: a fitted rise over the measured run of less than one descriptor. The
  soak's connections are steady, so a descriptor gained is one leaked;
- p99 latency: a slope of at most 10 % of its mean per hour. The store's tables grow by
  the hour's snapshots (720,000 at 200 agents), which costs B-tree lookups a little, a
  few percent; a queue building up or a scan over growing data grows with the data
  itself and shows far above that.

A curve is flat when its slope, less twice the slope's standard error (the lower end
of its 95 % interval), is within that budget: a verdict of "not flat" then means the
samples show a rise past the budget, not only noise. A short run extrapolates a few
minutes to an hour, so its intervals are wide: it can show a leak, but says less about
flatness than an hour does (the report notes runs under 30 minutes).
"""

import csv
from pathlib import Path

from collector import loadgen_argv, throwaway_collector
from common import BenchError, Daemon, child_env, write_secret

# Warm-up: this share of the run, at most WARMUP_MAX_S, is left out of the fits.
WARMUP_SHARE = 0.2
WARMUP_MAX_S = 600.0
# The budgets, as the module's doc explains them.
FLAT_BYTES_PER_SNAPSHOT = 16.0
FLAT_FILES_OVER_RUN = 1.0
FLAT_P99_SHARE_PER_HOUR = 0.10
# Under this, the report notes that the verdicts are extrapolated from a short run.
SHORT_RUN_S = 1800.0

CSV_COLUMNS = ("t_s", "rss_mib", "open_files", "p50_ms", "p99_ms", "acked_per_s", "collector_cpu_percent",
               "loadgen_cpu_percent", "dashboard_messages_per_s", "agent_reconnects", "dashboard_reconnects")


def slope_per_hour(points):
    """Least-squares slope of (t_s, value) points and its standard error, both per hour;
    (None, None) with fewer than 3 points."""
    points = [(t, v) for t, v in points if v is not None]
    if len(points) < 3:
        return None, None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None, None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var
    intercept = mean_v - slope * mean_t
    residuals = sum((v - intercept - slope * t) ** 2 for t, v in points)
    error = (residuals / (n - 2) / var) ** 0.5
    return slope * 3600.0, error * 3600.0


def rows_of(samples):
    """The CSV rows of the load generator's samples."""
    rows = []
    for s in samples:
        lat = s.get("latency_ms") or {}
        rss = s.get("rss_kib")
        rows.append({
            "t_s": round(s["t_s"], 1),
            "rss_mib": None if rss is None else round(rss / 1024.0, 2),
            "open_files": s.get("open_files"),
            "p50_ms": lat.get("p50"),
            "p99_ms": lat.get("p99"),
            "acked_per_s": round(s.get("acked_per_s", 0.0), 1),
            "collector_cpu_percent": s.get("collector_cpu_percent"),
            "loadgen_cpu_percent": s.get("loadgen_cpu_percent"),
            "dashboard_messages_per_s": round(s.get("dashboard_messages_per_s", 0.0), 1),
            "agent_reconnects": s.get("agent_reconnects"),
            "dashboard_reconnects": s.get("dashboard_reconnects"),
        })
    return rows


def write_csv(path, rows):
    """One row per sample."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})


def curves(rows, duration_s):
    """Each curve's mean, first and last value, and slope per hour after the warm-up,
    with what "flat" allows it and whether it is."""
    warmup = min(WARMUP_MAX_S, duration_s * WARMUP_SHARE)
    fitted = [r for r in rows if r["t_s"] >= warmup]
    measured_h = (fitted[-1]["t_s"] - fitted[0]["t_s"]) / 3600.0 if len(fitted) > 1 else 0.0
    acked_per_h = (sum(r["acked_per_s"] for r in fitted) / len(fitted) * 3600.0) if fitted else 0.0

    def curve(key):
        values = [r[key] for r in fitted if r[key] is not None]
        slope, error = slope_per_hour([(r["t_s"], r[key]) for r in fitted])
        return {
            "slope_per_hour": slope,
            "slope_error_per_hour": error,
            # The lower end of the slope's 95 % interval: what the verdict is on.
            "slope_low_per_hour": None if slope is None else slope - 2.0 * error,
            "mean": sum(values) / len(values) if values else None,
            "first": values[0] if values else None,
            "last": values[-1] if values else None,
        }

    memory, files, p99 = curve("rss_mib"), curve("open_files"), curve("p99_ms")
    memory["limit_per_hour"] = FLAT_BYTES_PER_SNAPSHOT * acked_per_h / (1024.0 * 1024.0)
    memory["unit"] = "MiB/h"
    files["limit_per_hour"] = FLAT_FILES_OVER_RUN / measured_h if measured_h else None
    files["unit"] = "files/h"
    p99["limit_per_hour"] = FLAT_P99_SHARE_PER_HOUR * p99["mean"] if p99["mean"] else None
    p99["unit"] = "ms/h"
    for c in (memory, files, p99):
        low, limit = c["slope_low_per_hour"], c["limit_per_hour"]
        c["flat"] = None if low is None or limit is None else low <= limit
    return {"warmup_s": warmup, "fitted_samples": len(fitted), "measured_h": measured_h,
            "acked_per_hour": acked_per_h, "memory": memory, "open_files": files, "p99": p99}


def run_soak(procyon, loadgen, secs, agents, dashboards, sample_secs, out_dir):
    """The soak against a throwaway collector; its samples, the CSV and the curves."""
    with throwaway_collector(procyon, "soak") as env:
        write_secret(env.tmp / "admin.pw", env.password)
        print(f"soak: {agents} agents at 1 s and {dashboards} dashboards for {secs} s, sampled every "
              f"{sample_secs} s ...", flush=True)
        gen = Daemon("loadgen soak", loadgen_argv(loadgen, env, "bench-soak") + [
            "soak", "--agents", str(agents), "--dashboards", str(dashboards), "--interval", "1",
            "--duration", str(secs), "--sample-every", str(sample_secs),
            "--admin-password-file", str(env.tmp / "admin.pw")], child_env(), env.tmp)
        env.daemons.append(gen)
        result = gen.wait_json(secs + 900)
        env.collector.check_running()
    rows = rows_of(result["samples"])
    if len(rows) < 3:
        raise BenchError(f"the soak took {len(rows)} samples: too few to fit a curve")
    csv_path = Path(out_dir) / "soak.csv"
    write_csv(csv_path, rows)
    result["csv"] = str(csv_path)
    result["curves"] = curves(rows, float(secs))
    del result["samples"]
    result["rows"] = rows
    return result
