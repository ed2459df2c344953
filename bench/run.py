"""Benchmark report: every figure of Procyon's performance budgets, measured on this
machine in one run, each printed next to its peer with `ratio <ours>/<other>: <number>`
lines and next to its budget (met, or missed by how much). The same goes to
<target dir>/bench/report.json.

Started by `bench/run.sh`, which builds everything and sets up the Python venv first.
The parts, in order (BENCH_ONLY=part,part runs a subset):

- samplers:  CPU per snapshot of our sampler, a naive raw /proc reader, a psutil sampler
             in the seed documents' style and Glances, side by side (bench/samplers.py);
- agents:    procyon-agent's steady-state CPU and memory at 1 s and 2 s (bench/agents.py),
             against the samplers above, then at 1 s on a host grown to 5,000 processes
             and sockets;
- uplink:    bytes on the wire per steady-state snapshot against its full JSON
             (examples/uplink_bytes.rs);
- store:     storage per process-metric sample and per host per month, and the store
             against raw SQLite (examples/store_bench.rs);
- collector: the highest ingest rate of simulated agents sustained with p99 < 100 ms,
             against raw SQLite inserts of the same rows, and the collector's memory per
             connected host and after they leave (bench/collector.py); then the same
             ramp with 5,000 processes per host (BENCH_LARGE_STEPS), for the cost per
             process;
- alerts:    the collector's CPU with 50 alert rules against the same load without rules
             (the floor), 1,000 agents at 1 s, alternating (bench/alerts.py); and the
             evaluation alone per snapshot (examples/alert_eval.rs);
- fanout:    time from sending a snapshot to 100 dashboards receiving it;
- scaleout:  two collectors on one throwaway PostgreSQL with the agents spread over
             both: the highest agent count at 1 s sustained, against the single SQLite
             collector's above; live fan-out across them (an agent on one, dashboards on
             the other); and what 10,000 agents at 1 s would need (bench/scaleout.py);
- soak:      200 simulated agents and 20 dashboards for an hour: the collector's memory,
             open files and p99 latency as curves (<target dir>/bench/soak.csv), each
             curve's slope per hour, and whether it is flat (bench/soak.py says what
             flat means for each);
- desktop:   the desktop app's CPU (window open, hidden) and memory, next to the floor, a
             bare Tauri window of the same size (examples/desktop_floor.rs) (bench/desktop.sh);
- dashboard: frame times with 2,000 processes and the bundle size (bench/browser/bench.mjs);
- fleet:     frame times scrolling the fleet overview of 1,000 changing hosts
             (bench/browser/fleet.mjs);
- map:       the network map of 200 hosts and 5,000 edges: time to the first map and
             frame times while zooming and while following updates (bench/browser/map.mjs).

A part whose program is not in this checkout, or that cannot run on this machine, is
reported as not available. A part that fails is reported and the others still run;
the exit status is then non-zero. Missed budgets are reported, not fatal.

Environment: BENCH_TICKS (sampler ticks, default 30), AGENT_BENCH_SECS (agent window,
default 30), AGENT_LARGE_PROCESSES (processes of the large host, default 5000; 0: not
measured), AGENT_BENCH_BASELINE (another procyon-agent binary measured beside ours),
BENCH_RAMP_STEPS (default
10,25,50,100,150,200,300,400,500,750,1000,1250,1500,2000), BENCH_STEP_SECS
(seconds per ramp step, default 10), BENCH_LARGE_STEPS (the 5,000-process ramp, default
10,25,50,100,150,200,300,400; empty to skip it), BENCH_FANOUT_CLIENTS (default 100),
BENCH_FANOUT_SECS (default 20), BENCH_SCALEOUT_STEPS (agents over the two PostgreSQL
collectors, default the ramp's), BENCH_SCALEOUT_CLIENTS (dashboards of the fan-out
across collectors, default 10), BENCH_ALERT_AGENTS (default 1000), BENCH_ALERT_SECS (the
window of each alert run, default 20), BENCH_ALERT_ROUNDS (floor and rules pairs, default
2), BENCH_SOAK_SECS (default 3600), BENCH_SOAK_AGENTS
(default 200), BENCH_SOAK_DASHBOARDS (default 20), BENCH_SOAK_SAMPLE_SECS (default 10),
BENCH_ONLY. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import agents as agents_part
import alerts as alerts_part
import collector as collector_part
import pieces
import samplers as samplers_part
import scaleout as scaleout_part
import soak as soak_part
from common import BenchError, counts_now, machine_info

# Agent counts of the collector ramp (at 1 s): up to the budget's 1,000, then on, to
# show where it stops.
RAMP_STEPS = "10,25,50,100,150,200,300,400,500,750,1000,1250,1500,2000"
# The same with 5,000 processes per host: ten times the work per snapshot, so the steps
# stop lower (and the load generator's prepared frames must fit its memory bound).
LARGE_STEPS = "10,25,50,100,150,200,300,400"
# After the ramp at 1 s, its last step's agents sending faster: the collector's ceiling
# in snapshots a second, past what the load generator's agent count offers at 1 s.
RATE_INTERVALS = (0.5, 0.33, 0.25, 0.2, 0.15)
LARGE_PROCESSES = 5000

PARTS = ("samplers", "agents", "uplink", "store", "collector", "alerts", "fanout", "scaleout", "soak", "desktop",
         "dashboard", "fleet", "map")

# The design's budgets (DESIGN.md, "Performance budgets"). Never loosened here.
BUDGET = {
    "agent_cpu_percent_1s": 0.6,
    "agent_rss_mib_1s": 20.0,
    "agent_cpu_percent_1s_large": 3.0,
    "agent_rss_mib_1s_large": 30.0,
    "uplink_share_of_full_json": 0.10,
    "collector_agents_at_1s": 1000,
    "collector_p99_ms": 100.0,
    "collector_share_of_raw_sqlite": 0.5,
    "collector_kib_per_host": 256.0,
    "collector_after_leave_share": 1.10,
    "alerts_added_share_of_collector_cpu": 0.10,
    "storage_bytes_per_sample": 1.0,
    "storage_mib_per_host_month": 50.0,
    "desktop_cpu_percent_open": 3.0,
    "desktop_cpu_percent_hidden": 1.0,
    "desktop_rss_mib": 150.0,
    # Against the floor measured in the same run (a bare Tauri window, see
    # examples/desktop_floor.rs): open at most the floor + 2 % of one core; hidden in
    # the tray what an agent may (0.6 %); at most the floor + 50 MiB PSS in all, and the
    # app's own process (without WebKit's) at most 40 MiB PSS.
    "desktop_cpu_percent_open_over_floor": 2.0,
    "desktop_cpu_percent_hidden_floor_budget": 0.6,
    "desktop_pss_mib_over_floor": 50.0,
    "desktop_own_pss_mib": 40.0,
    "dashboard_dropped_frames": 0,
    # The fleet overview and the map follow the dashboard's: smooth means no frame
    # dropped while scrolling or following updates; zooming 5,000 edges at most two
    # vsyncs a frame (p95).
    "fleet_dropped_frames": 0,
    "map_live_dropped_frames": 0,
    "map_zoom_frame_p95_ms": 33.4,
}


def env_int(name, default, minimum):
    """A whole-number setting from the environment, at least `minimum`."""
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        sys.exit(f"error: {name}={text!r} is not a whole number")
    if value < minimum:
        sys.exit(f"error: {name}={value}: must be at least {minimum}")
    return value


def env_steps(name="BENCH_RAMP_STEPS", default=RAMP_STEPS, empty_ok=False):
    """Increasing agent counts from the environment variable `name`."""
    text = os.environ.get(name, default)
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"error: {name}={text!r}: not a list of whole numbers")
    if not steps and empty_ok:
        return steps
    if not steps or any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 1:
        sys.exit(f"error: {name}={text!r}: agent counts must increase from 1 up")
    return steps


def fmt(value, digits=2):
    """A number for a report line; 'n/a' for none."""
    if value is None:
        return "n/a"
    if float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


class Report:
    """What is printed, kept also for report.json."""

    def __init__(self):
        self.lines = []
        self.ratios = []
        self.budgets = []

    def say(self, line=""):
        """Print a line of the report."""
        print(line, flush=True)
        self.lines.append(line)

    def section(self, title):
        """Start a part's block."""
        self.say()
        self.say(f"== {title}")

    def ratio(self, ours, other, a, b, digits=3):
        """`ratio ours/other: a/b`; n/a when either side is missing or b is zero."""
        value = a / b if a is not None and b else None
        self.say(f"ratio {ours}/{other}: {fmt(value, digits)}")
        self.ratios.append({"ours": ours, "other": other, "ours_value": a, "other_value": b,
                            "ratio": value})
        return value

    def budget(self, name, value, op, limit, unit):
        """A budget line: met, or missed by how much. `op` is <=, < or >=."""
        if value is None:
            verdict, met, missed_by = "not measured", None, None
        else:
            met = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
            missed_by = None if met else abs(value - limit)
            if met:
                verdict = "met"
            else:
                over = f", {abs(value - limit) / limit * 100:.0f} % off" if limit else ""
                verdict = f"MISSED by {fmt(missed_by, 3)} {unit}{over}".rstrip()
        self.say(f"budget {name}: {fmt(value, 3)} {op} {fmt(limit, 3)} {unit}: {verdict}")
        self.budgets.append({"name": name, "value": value, "op": op, "limit": limit,
                             "unit": unit, "met": met, "missed_by": missed_by})


def report_samplers(r, result):
    """Sampler table and its ratios."""
    rows = result["samplers"]
    r.section(f"sampler CPU per snapshot ({result['ticks']} ticks at 1 s, all side by side)")
    r.say(f"{'sampler':<20}{'cpu ms/snapshot':>16}{'% of one core':>15}{'peak rss MiB':>14}"
          f"{'processes/sockets':>19}")
    for row in rows:
        seen = (f"{row['processes_seen']}/{row['sockets_seen']}" if "processes_seen" in row
                else "-")
        r.say(f"{row['label']:<20}{row['cpu_ms_per_snapshot']:>16.2f}"
              f"{row['percent_of_one_core']:>15.2f}{fmt(row['rss_mib_max'], 1):>14}{seen:>19}")
    if result.get("glances_problem"):
        r.say(f"Glances: not available ({result['glances_problem']})")
    by = {row["name"]: row for row in rows}
    for other in ("naive", "psutil", "glances"):
        if other in by:
            r.ratio("ours", other, by["ours"]["cpu_ms_per_snapshot"],
                    by[other]["cpu_ms_per_snapshot"])


def report_agents(r, result, sampler_rows):
    """Agent figures against the samplers, and the agent budgets at both sizes."""
    r.section(f"agent steady state against a local collector ({result['window_s']:.0f} s window)")
    peers = {row["name"]: row for row in sampler_rows or [] if row["name"] != "ours"}

    def machine(counts):
        if not counts:
            return "n/a"
        p = [c["processes"] for c in counts]
        s = [c["sockets"] for c in counts]
        return f"{min(p):,}-{max(p):,} processes, {min(s):,}-{max(s):,} sockets"

    def say_run(run):
        r.say(f"{run['label']}: cpu {run['cpu_percent_of_one_core']:.3f} % of one core, "
              f"rss {run['rss_mib']:.1f} MiB (max {run['rss_mib_max']:.1f}), "
              f"{run['snapshots_stored']} snapshots stored")

    r.say(f"machine during the window: {machine(result.get('machine'))}")
    for run in result["runs"]:
        i = run["interval_s"]
        say_run(run)
        if run["label"].startswith("baseline"):
            continue
        for name, peer in peers.items():
            # A peer sampling every i seconds costs its per-snapshot CPU once per i s.
            r.ratio(f"agent-cpu-{i}s", f"{name}-cpu-{i}s", run["cpu_percent_of_one_core"],
                    peer["cpu_ms_per_snapshot"] / (i * 1000.0) * 100.0)
        for name, peer in peers.items():
            r.ratio(f"agent-rss-{i}s", f"{name}-rss", run["rss_mib_max"], peer["rss_mib_max"])
    r.say(f"collector (storing them): cpu {result['collector_cpu_percent_of_one_core']:.2f} % "
          f"of one core")
    by = {run["label"]: run for run in result["runs"]}
    one = by["agent 1s"]
    if "baseline 1s" in by:
        r.ratio("agent-cpu-1s", "baseline-cpu-1s", one["cpu_percent_of_one_core"],
                by["baseline 1s"]["cpu_percent_of_one_core"])
    r.budget("agent cpu at 1 s", one["cpu_percent_of_one_core"], "<=",
             BUDGET["agent_cpu_percent_1s"], "% of one core")
    r.budget("agent rss at 1 s", one["rss_mib_max"], "<=", BUDGET["agent_rss_mib_1s"], "MiB")

    large = result.get("large")
    if large is None:
        return
    r.section(f"agent on a large host ({large['target_processes']:,} processes wanted, "
              f"{large['added_processes_and_sockets']:,} processes and sockets added)")
    r.say(f"machine during the window: {machine(large['machine'])}")
    by = {run["label"]: run for run in large["runs"]}
    for run in large["runs"]:
        say_run(run)
    big = by.get("agent 1s large")
    if big and "baseline 1s large" in by:
        r.ratio("agent-cpu-1s-large", "baseline-cpu-1s-large", big["cpu_percent_of_one_core"],
                by["baseline 1s large"]["cpu_percent_of_one_core"])
    r.budget("agent cpu at 1 s, large host", big and big["cpu_percent_of_one_core"], "<=",
             BUDGET["agent_cpu_percent_1s_large"], "% of one core")
    r.budget("agent rss at 1 s, large host", big and big["rss_mib_max"], "<=",
             BUDGET["agent_rss_mib_1s_large"], "MiB")


def report_uplink(r, result):
    """Uplink bytes against the full JSON."""
    r.section(f"uplink bytes per steady-state snapshot ({pieces.UPLINK_TICKS} ticks)")
    r.say(f"wire bytes per snapshot: {fmt(result['wire_bytes'], 0)} "
          f"(from {result['keys']['wire_bytes']})")
    r.say(f"full JSON bytes of the same snapshot: {fmt(result['full_json_bytes'], 0)} "
          f"(from {result['keys']['full_json_bytes']})")
    share = r.ratio("wire", "full-json", result["wire_bytes"], result["full_json_bytes"])
    r.budget("uplink share of full JSON", share, "<=", BUDGET["uplink_share_of_full_json"],
             "x full JSON")


def report_store(r, result):
    """Storage figures."""
    r.section("storage")
    keys = result["keys"]
    r.say(f"bytes per process-metric sample at full resolution: "
          f"{fmt(result['bytes_per_sample'], 3)} (from {keys['bytes_per_sample']})")
    r.say(f"MiB per host per month after rollups: {fmt(result['month_mib_per_host'], 2)} "
          f"(from {keys['month']})")
    r.say(f"store rows/s: {fmt(result['store_rows_per_s'])}, raw SQLite rows/s: "
          f"{fmt(result['raw_rows_per_s'])}")
    r.ratio("store-rows-per-s", "raw-sqlite-rows-per-s", result["store_rows_per_s"],
            result["raw_rows_per_s"])
    r.budget("storage per process-metric sample", result["bytes_per_sample"], "<=",
             BUDGET["storage_bytes_per_sample"], "bytes")
    r.budget("storage per host per month", result["month_mib_per_host"], "<",
             BUDGET["storage_mib_per_host_month"], "MiB")


def mib(kib):
    """KiB as MiB for a report line; None stays None."""
    return None if kib is None else kib / 1024.0


def report_collector(r, result):
    """The ramp, its best step against raw SQLite, the collector budget and its memory."""
    ramp, raw = result["ramp"], result["raw_sqlite"]
    processes = result.get("processes", 480)
    large = processes != 480
    r.section(f"collector ingest: simulated agents at 1 s over /ws/agent, on loopback"
              f"{f', {processes} processes per host' if large else ''}")
    first = next((s for s in ramp["steps"] if "snapshot" in s), None)
    if first:
        snap = first["snapshot"]
        r.say(f"each snapshot: {snap['processes']} processes, {snap['connections']} sockets, "
              f"{snap['json_bytes']:,} bytes of JSON, {snap['frame_bytes_mean']:,.0f} bytes "
              f"on the wire")
    r.say(f"{'agents':>7}{'offered/s':>11}{'acked/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'collector cpu %':>17}{'loadgen cpu %':>15}{'rss MiB before/with/after':>27}"
          f"{'KiB a host':>12}  verdict")
    for s in ramp["steps"]:
        lat = s.get("latency_ms", {})
        cpu = s.get("cpu", {})
        tries = f" (try {s['attempts']})" if s.get("attempts", 1) > 1 else ""
        verdict = ("sustained" if s.get("sustained")
                   else f"not sustained: {s.get('first_problem') or 'p99 over the limit'}") + tries
        mem = s.get("memory", {})
        rss = "/".join(fmt(mib(mem.get(k)), 0) for k in ("before_kib", "connected_kib", "after_kib"))
        r.say(f"{s['agents']:>7}{fmt(s.get('offered_per_s'), 0):>11}{fmt(s.get('rate_per_s'), 1):>10}"
              f"{fmt(lat.get('p50'), 1):>9}{fmt(lat.get('p99'), 1):>9}"
              f"{fmt(cpu.get('collector_cpu_percent'), 0):>17}{fmt(cpu.get('loadgen_cpu_percent'), 0):>15}"
              f"{rss:>27}{fmt(mem.get('per_connected_host_kib'), 0):>12}  {verdict}")
    best = ramp.get("best") or {}
    for step in result.get("rate_steps", []):
        lat = step.get("latency_ms", {})
        r.say(f"{step['agents']:>7} agents every {step['interval_s']:g} s: {fmt(step.get('rate_per_s'), 1)} "
              f"snapshots/s, p50 {fmt(lat.get('p50'), 1)} ms, p99 {fmt(lat.get('p99'), 1)} ms, collector cpu "
              f"{fmt(step.get('cpu', {}).get('collector_cpu_percent'), 0)} %: "
              f"{'sustained' if step.get('sustained') else 'not sustained: ' + str(step.get('first_problem') or 'p99 over the limit')}")
    sustained_rates = [s for s in result.get("rate_steps", []) if s.get("sustained")]
    fastest = max(sustained_rates, key=lambda s: s["rate_per_s"], default=None)
    rate = max(best.get("rate_per_s", 0.0), fastest["rate_per_s"] if fastest else 0.0)
    ceiling = " (the highest step offered: the collector's ceiling may be higher)" if (
        best and best.get("agents") == max(s["agents"] for s in ramp["steps"])
        and not ramp.get("stopped_by")) else ""
    r.say(f"most agents sustained at 1 s with p99 < {BUDGET['collector_p99_ms']:g} ms: "
          f"{best.get('agents', 0)} ({fmt(best.get('rate_per_s', 0.0), 1)} snapshots/s){ceiling}")
    r.say(f"highest rate sustained with p99 < {BUDGET['collector_p99_ms']:g} ms: {fmt(rate, 1)} snapshots/s"
          + (f" ({fastest['agents']} agents every {fastest['interval_s']:g} s)" if fastest and
             fastest["rate_per_s"] >= best.get("rate_per_s", 0.0) else ""))
    r.say(f"raw SQLite, the same rows ({raw['rows_per_snapshot']:.1f} rows per snapshot in "
          f"{', '.join(raw['tables'])}): {fmt(raw['snapshots_per_s'], 1)} snapshots/s, "
          f"{fmt(raw['rows_per_s'], 0)} rows/s")
    tag = f"-{processes}p" if large else ""
    share = r.ratio(f"collector-snapshots-per-s{tag}", f"raw-sqlite-snapshots-per-s{tag}", rate,
                    raw["snapshots_per_s"])
    steps = ramp["steps"]
    start = next((s["memory"]["before_kib"] for s in steps if s.get("memory", {}).get("before_kib")), None)

    def at(agents):
        return next((s for s in steps if s["agents"] == agents and s.get("memory")), None)

    if start:
        r.say(f"collector memory at the start of the ramp: {fmt(mib(start), 1)} MiB")
    for agents in (100, 1000):
        s = at(agents)
        if s:
            m = s["memory"]
            r.say(f"collector memory with {agents} agents connected: {fmt(mib(m['connected_kib']), 1)} MiB, "
                  f"{fmt(m['per_connected_host_kib'], 0)} KiB per connected host; "
                  f"{m['after_settle_s']} s after they left: {fmt(mib(m['after_kib']), 1)} MiB")
    if large:
        # The budgets are for the reference host (480 processes): this ramp gives the
        # cost per process.
        return
    r.budget("collector agents sustained at 1 s (p99 < 100 ms)", best.get("agents", 0), ">=",
             BUDGET["collector_agents_at_1s"], "agents")
    r.budget("collector rate against raw SQLite", share, ">=",
             BUDGET["collector_share_of_raw_sqlite"], "x raw SQLite")
    for agents in (100, 1000):
        s = at(agents)
        r.budget(f"collector memory per connected host, {agents} agents",
                 s["memory"]["per_connected_host_kib"] if s else None, "<=",
                 BUDGET["collector_kib_per_host"], "KiB")
    last = steps[-1].get("memory", {}) if steps else {}
    after = last.get("after_kib")
    r.budget("collector memory after the agents left, against the start",
             after / start if after and start else None, "<=", BUDGET["collector_after_leave_share"],
             "x the start")


def report_alerts(r, result):
    """Collector CPU with the rules against the floor, and the evaluation alone."""
    r.section(f"alert evaluation: {result['agents']} agents at 1 s, {result['rules']} rules, "
              f"{result['window_s']} s windows, floor and rules alternating")
    for run in result["runs"]:
        r.say(f"{run['label']:<10} {run['rules']:>3} rules: collector cpu {fmt(run['collector_cpu_percent'], 1)} %, "
              f"{fmt(run['rate_per_s'], 0)} snapshots/s, p99 {fmt(run['p99_ms'], 1)} ms"
              f"{'' if run['sustained'] else ' (not sustained)'}")
    floor, ours = result["floor_cpu_percent"], result["rules_cpu_percent"]
    r.say(f"median collector cpu: {fmt(floor, 1)} % without rules (the floor), {fmt(ours, 1)} % with them")
    r.ratio("collector-cpu-with-rules", "collector-cpu-floor", ours, floor)
    added = (ours - floor) / floor if floor else None
    alone = result.get("evaluation_alone")
    if alone:
        # CPU time, not wall time: the collectors' runs are CPU time too.
        cpu = alone.get("cpu_percent_of_a_core_at_1s", alone["percent_of_a_core_at_1s"])
        share = cpu / floor if floor else None
        r.say(f"evaluation alone (examples/alert_eval.rs): {fmt(alone.get('cpu_us_per_snapshot'), 1)} us of CPU "
              f"per snapshot ({fmt(alone['us_per_snapshot'], 1)} us wall), {fmt(cpu, 2)} % of one core at "
              f"{alone['hosts']} snapshots/s")
        r.ratio("alert-evaluation-alone-cpu", "collector-cpu-floor", cpu, floor)
        result["evaluation_share_of_floor"] = share
    r.budget("alert rules added to the collector's cpu", added, "<",
             BUDGET["alerts_added_share_of_collector_cpu"], "x the floor")


def report_fanout(r, result):
    """Fan-out latency against the ingest (ack) latency of the same snapshots."""
    r.section(f"live fan-out: one agent, {result['clients']} dashboards on one host's stream")
    lat, every, ack = result["latency_ms"], result["all_clients_ms"], result["ack_latency_ms"]
    r.say(f"send to a dashboard receiving it: p50 {fmt(lat['p50'], 1)} ms, p99 "
          f"{fmt(lat['p99'], 1)} ms ({result['delivered']} deliveries, {result['missed']} missed)")
    r.say(f"send to all {result['clients']} having it: p50 {fmt(every['p50'], 1)} ms, p99 "
          f"{fmt(every['p99'], 1)} ms")
    r.say(f"send to ack (ingest alone), same snapshots: p50 {fmt(ack['p50'], 1)} ms, p99 "
          f"{fmt(ack['p99'], 1)} ms")
    r.ratio("fanout-p50", "ingest-ack-p50", lat["p50"], ack["p50"])
    r.ratio("fanout-p99", "ingest-ack-p99", lat["p99"], ack["p99"])


def report_scaleout(r, result, single):
    """Two PostgreSQL collectors against the single SQLite collector, the fan-out across
    them, and the estimate for 10,000 agents."""
    r.section(f"scale-out: two collectors on one PostgreSQL, {result['processes']} processes a host, at 1 s")
    for s in result["steps"]:
        r.say(f"{s['agents']} agents ({'+'.join(map(str, s['halves']))}): {s['rate_per_s']:.0f}/s acked, "
              f"p99 {fmt(s['p99_ms'], 1)} ms, collectors {fmt(s['collectors_cpu_percent'], 0)} %, "
              f"PostgreSQL {fmt(s['postgres_cpu_percent'] or 0, 0)} %, load generators "
              f"{fmt(s['loadgen_cpu_percent'], 0)} % of one core; "
              f"{'sustained' if s['sustained'] else 'not sustained: ' + str(s['first_problem'] or 'p99 over 100 ms')}")
    best = result["best"]
    r.say(f"highest sustained: {best['agents'] if best else 0} agents (collectors, PostgreSQL and load "
          f"generators on this one machine)")
    single_best = ((single or {}).get("ramp") or {}).get("best") if single else None
    if single_best and best:
        r.say(f"single SQLite collector in this run: {single_best['agents']} agents")
        r.ratio("scaleout-postgres-agents", "single-sqlite-agents", best["agents"], single_best["agents"])
    elif best:
        r.say("single SQLite collector: not in this run (BENCH_ONLY without collector)")
    f = result["fanout"]
    lat = f["latency_ms"]
    r.say(f"agent on B to a dashboard on A: p50 {fmt(lat['p50'], 1)} ms, p99 {fmt(lat['p99'], 1)} ms "
          f"({f['delivered']} deliveries to {f['clients']} dashboards, {f['missed']} missed)")
    split = result.get("others")
    if split:
        r.say(f"another collector's snapshots: {split['agents']} agents on A only "
              f"({'sustained' if split['sustained'] else 'not sustained'}, p99 {fmt(split['p99_ms'] or 0, 1)} ms), "
              f"nothing followed on B: A ingests at {fmt(split['ingest_core_ms_per_snapshot'], 3)} core-ms a "
              f"snapshot, B hears of each at {fmt(split['heard_core_ms_per_snapshot'], 3)} core-ms")
    e = result["estimate"]
    if e:
        if "heard_core_ms_per_snapshot" in e:
            fits = e["collectors_of_two_cores"]
            r.say(f"10,000 agents at 1 s: N collectors each ingest 10,000/N and hear of 10,000(N-1)/N a second, "
                  f"{fmt(e['ingest_core_ms_per_snapshot'], 3)} and {fmt(e['heard_core_ms_per_snapshot'], 3)} core-ms "
                  f"each: with 10 collectors {fmt(e['cores_per_collector_at_10'], 1)} cores each; "
                  + (f"{fits} two-core collectors at 70 % (the fleet tops out near "
                     f"{fmt(e['fleet_ceiling_per_s'] or 0, 0)} snapshots a second, where hearing of the others "
                     f"alone fills a collector)" if fits else
                     f"no number of two-core collectors at 70 % carries it: whatever their number, the fleet tops "
                     f"out near {fmt(e['fleet_ceiling_per_s'] or 0, 0)} snapshots a second, since each collector "
                     f"hears of nearly every snapshot")
                  + "; on top, each reads back one snapshot a second per host followed on it")
        r.say(f"PostgreSQL {fmt(e['postgres_core_ms_per_snapshot'], 3)} core-ms x 10,000/s = "
              f"{fmt(e['postgres_cores'], 1)} cores; disk {e['stored_bytes_per_snapshot']:,.0f} bytes a snapshot x "
              f"864,000,000 a day = {e['disk_per_day_bytes'] / 2**30:,.1f} GiB a day before retention and rollups")


def report_fleet(r, result):
    """The fleet overview's frames."""
    r.section(f"fleet overview: {result['hosts']:,} hosts, scrolled while "
              f"{result['uploads_while_scrolling']:,} uploads changed them")
    r.say(f"frame p50 {fmt(result['p50'], 1)} ms, p95 {fmt(result['p95'], 1)} ms, p99 {fmt(result['p99'], 1)} ms, "
          f"{result['dropped']} dropped of {result['frames']}")
    r.budget("fleet overview dropped frames", result["dropped"], "<=", BUDGET["fleet_dropped_frames"], "frames")


def report_map(r, result):
    """The map's first draw and frames."""
    r.section(f"map: {result['hosts']} hosts, {result['hosts'] * result['per_host']:,} edges across hosts")
    r.say(f"first map shown after {result['first_map_ms']:,} ms")
    for name, f in (("zooming", result["zoom"]), ("following updates", result["live"])):
        r.say(f"{name}: frame p50 {fmt(f['p50'], 1)} ms, p95 {fmt(f['p95'], 1)} ms, p99 {fmt(f['p99'], 1)} ms, "
              f"{f['dropped']} dropped of {f['frames']}")
    r.budget("map frame p95 while zooming", result["zoom"]["p95"], "<=", BUDGET["map_zoom_frame_p95_ms"], "ms")
    r.budget("map dropped frames while following updates", result["live"]["dropped"], "<=",
             BUDGET["map_live_dropped_frames"], "frames")


def report_soak(r, result):
    """The soak's curves: each one's slope per hour against what flat allows."""
    c = result["curves"]
    r.section(f"soak: {result['agents']} agents at {result['interval_s']:g} s and {result['dashboards']} "
              f"dashboards for {result['duration_s']:,.0f} s")
    r.say(f"{result['acked']:,} snapshots stored of {result['sent']:,} sent; {result['rejected']} rejected, "
          f"{result['errors']} errors, {result['unanswered']} unanswered when a connection ended; "
          f"{result['agent_reconnects']} agent and {result['dashboard_reconnects']} dashboard reconnects; "
          f"{result['dashboard_messages']:,} live messages to dashboards")
    if result.get("first_problem"):
        r.say(f"first problem: {result['first_problem']}")
    r.say(f"curves: {result['csv']} ({len(result['rows'])} samples every {result['sample_every_s']:g} s); "
          f"fitted after a {c['warmup_s']:.0f} s warm-up over {c['measured_h'] * 60:.1f} min, "
          f"{c['acked_per_hour']:,.0f} snapshots an hour")
    for label, key, digits in (("collector memory (MiB)", "memory", 1), ("open files", "open_files", 0),
                               ("p99 ingest latency (ms)", "p99", 1)):
        k = c[key]
        r.say(f"{label}: first {fmt(k['first'], digits)}, last {fmt(k['last'], digits)}, mean "
              f"{fmt(k['mean'], digits)}; slope {fmt(k['slope_per_hour'], 3)} "
              f"± {fmt(k['slope_error_per_hour'] and 2 * k['slope_error_per_hour'], 3)} {k['unit']} (95 %)")
    if result["duration_s"] < soak_part.SHORT_RUN_S:
        r.say(f"(a run under {soak_part.SHORT_RUN_S / 60:.0f} minutes: its slopes are extrapolated to an hour, "
              "and their 95 % intervals are wide)")
    # On the lower end of each slope's 95 % interval: "not flat" is a rise the samples
    # show, not noise (bench/soak.py).
    for name, key in (("soak memory slope, low end (flat: 16 bytes per stored snapshot)", "memory"),
                      ("soak open files slope, low end (flat: under one over the run)", "open_files"),
                      ("soak p99 slope, low end (flat: 10 % of its mean an hour)", "p99")):
        k = c[key]
        limit = k["limit_per_hour"]
        # No limit (nothing stored, or no span to fit over): not measured rather than met.
        r.budget(name, k["slope_low_per_hour"] if limit is not None else None, "<=",
                 limit if limit is not None else 0.0, k["unit"])


def report_desktop(r, result):
    """Desktop app budgets: absolute, and against the floor of the same run."""
    r.section("desktop app")
    keys = result["keys"]
    r.say(f"cpu with the window open: {fmt(result['cpu_percent_open'])} % (from {keys['cpu_percent_open']}), "
          f"hidden: {fmt(result['cpu_percent_hidden'])} % (from {keys['cpu_percent_hidden']}), "
          f"rss {fmt(result['rss_mib'], 1)} MiB (from {keys['rss']})")
    out = result.get("output") or {}
    floor = out.get("floor")
    if floor:
        r.say(f"floor (a bare Tauri window, same size, a number changing every second): open "
              f"{fmt(floor['cpu_open_percent'])} %, hidden {fmt(floor['cpu_hidden_percent'])} %, "
              f"PSS {fmt(floor['pss_open_mib'], 1)} MiB ({fmt(floor['own_pss_open_mib'], 1)} MiB its own process)")
        r.say(f"ours: PSS {fmt(out['pss_open_mib'], 1)} MiB ({fmt(out['own_pss_open_mib'], 1)} MiB the app's own process)")
        r.ratio("desktop-cpu-open", "floor-cpu-open", result["cpu_percent_open"], floor["cpu_open_percent"])
        r.ratio("desktop-cpu-hidden", "floor-cpu-hidden", result["cpu_percent_hidden"], floor["cpu_hidden_percent"])
        r.ratio("desktop-pss", "floor-pss", out["pss_open_mib"], floor["pss_open_mib"])
        r.budget("desktop cpu, window open, over the floor", result["cpu_percent_open"] - floor["cpu_open_percent"],
                 "<=", BUDGET["desktop_cpu_percent_open_over_floor"], "% of one core")
        r.budget("desktop cpu, hidden in the tray", result["cpu_percent_hidden"], "<=",
                 BUDGET["desktop_cpu_percent_hidden_floor_budget"], "% of one core")
        r.budget("desktop pss over the floor", out["pss_open_mib"] - floor["pss_open_mib"], "<=",
                 BUDGET["desktop_pss_mib_over_floor"], "MiB")
        r.budget("desktop pss, the app's own process", out["own_pss_open_mib"], "<=",
                 BUDGET["desktop_own_pss_mib"], "MiB")
    else:
        r.say("floor: not measured (examples/desktop_floor was not built)")
    r.budget("desktop cpu, window open", result["cpu_percent_open"], "<=",
             BUDGET["desktop_cpu_percent_open"], "% of one core")
    r.budget("desktop cpu, hidden", result["cpu_percent_hidden"], "<=",
             BUDGET["desktop_cpu_percent_hidden"], "% of one core")
    r.budget("desktop rss", result["rss_mib"], "<=", BUDGET["desktop_rss_mib"], "MiB")


def report_dashboard(r, result):
    """Dashboard frames and bundle."""
    r.section(f"dashboard: {result['processes']} processes updating every second, scrolled")
    for layout in ("list", "tree"):
        f = result[layout]
        r.say(f"{layout}: frame p50 {fmt(f['p50'], 1)} ms, p95 {fmt(f['p95'], 1)} ms, p99 "
              f"{fmt(f['p99'], 1)} ms, {f['dropped']} dropped of {f['frames']}")
    b = result["bundle_gzip_bytes"]
    r.say(f"bundle gzipped: {b['js']:,} bytes of JavaScript ({b['entry']:,} before first paint), "
          f"{b['css']:,} of CSS")
    r.budget("dashboard dropped frames (list)", result["list"]["dropped"], "<=",
             BUDGET["dashboard_dropped_frames"], "frames")


def main():
    """Run every part, print the report, write report.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-dir", required=True, type=Path,
                        help="cargo target directory holding release/ and release/examples/")
    parser.add_argument("--python", required=True, help="Python interpreter with psutil")
    parser.add_argument("--glances", default="",
                        help="Python interpreter with Glances installed (empty: none)")
    args = parser.parse_args()
    ticks = env_int("BENCH_TICKS", 30, 2)
    agent_secs = env_int("AGENT_BENCH_SECS", 30, 5)
    large_processes = env_int("AGENT_LARGE_PROCESSES", 5000, 0)
    baseline = os.environ.get("AGENT_BENCH_BASELINE") or None
    if baseline and not Path(baseline).is_file():
        sys.exit(f"error: AGENT_BENCH_BASELINE={baseline!r} is not a file")
    steps = env_steps()
    large_steps = env_steps("BENCH_LARGE_STEPS", LARGE_STEPS, empty_ok=True)
    step_secs = env_int("BENCH_STEP_SECS", 10, 1)
    clients = env_int("BENCH_FANOUT_CLIENTS", 100, 1)
    fanout_secs = env_int("BENCH_FANOUT_SECS", 20, 2)
    scaleout_steps = env_steps("BENCH_SCALEOUT_STEPS", ",".join(map(str, steps)))
    scaleout_clients = env_int("BENCH_SCALEOUT_CLIENTS", 10, 1)
    alert_agents = env_int("BENCH_ALERT_AGENTS", 1000, 1)
    alert_secs = env_int("BENCH_ALERT_SECS", 20, 5)
    alert_rounds = env_int("BENCH_ALERT_ROUNDS", 2, 1)
    soak_secs = env_int("BENCH_SOAK_SECS", 3600, 60)
    soak_agents = env_int("BENCH_SOAK_AGENTS", 200, 1)
    soak_dashboards = env_int("BENCH_SOAK_DASHBOARDS", 20, 0)
    soak_sample_secs = env_int("BENCH_SOAK_SAMPLE_SECS", 10, 1)
    only = [p.strip() for p in os.environ.get("BENCH_ONLY", ",".join(PARTS)).split(",") if p.strip()]
    unknown = [p for p in only if p not in PARTS]
    if unknown:
        sys.exit(f"error: BENCH_ONLY: unknown parts {unknown}; the parts are {', '.join(PARTS)}")

    root = pieces.root_dir()
    release = args.target_dir / "release"
    procyon, agent = release / "procyon", release / "procyon-agent"
    examples = release / "examples"
    for binary in (procyon, agent, examples / "sampler_loop", examples / "naive_proc",
                   examples / "loadgen"):
        if not binary.exists():
            sys.exit(f"error: {binary} not found; build it first (bench/run.sh does)")
    out_dir = args.target_dir / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)

    # Ctrl-C or a kill of the runner must not leave children behind: turn SIGTERM into
    # an exception so every part's cleanup runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("error: interrupted"))
    open_files = collector_part.raise_open_files_limit()

    r = Report()
    machine = machine_info()
    machine.update(kernel=platform.release(), open_files_limit=open_files)
    r.say(f"machine: {machine['cores']} cores, {machine['cpu_model']}, {machine['memory_mib']:,} MiB, "
          f"{machine['processes']} processes, {machine['sockets']} sockets, "
          f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results, counts = {}, [machine["processes"], machine["sockets"]]
    failed = []

    def part(name, run):
        """Run one part; keep its result, or why it did not run."""
        if name not in only:
            return None
        now = counts_now()
        counts.extend([now["processes"], now["sockets"]])
        try:
            results[name] = run()
        except pieces.NotAvailable as e:
            results[name] = {"available": False, "reason": str(e)}
            r.section(name)
            r.say(f"{name}: not available ({e})")
        except BenchError as e:
            results[name] = {"error": str(e)}
            failed.append(name)
            r.section(name)
            r.say(f"{name}: FAILED: {e}")
        return results.get(name)

    def samplers():
        sampler = samplers_part.Sampler
        samplers = [
            sampler("ours", "ours", [str(examples / "sampler_loop")]),
            sampler("naive", "naive /proc", [str(examples / "naive_proc")]),
            sampler("psutil", "psutil (seed)", [args.python, str(root / "bench" / "psutil_sampler.py")]),
        ]
        glances = None
        problem = None
        if args.glances:
            try:
                version = subprocess.run([args.glances, "-m", "glances", "-V"], capture_output=True,
                                         text=True, timeout=60, stdin=subprocess.DEVNULL).stdout
            except subprocess.TimeoutExpired:
                version = ""
            version = version.splitlines()[0].replace("Glances version:", "").strip() if version else ""
            glances = samplers_part.Glances(
                [args.glances, "-m", "glances", "-q", "-t", "1", "--disable-check-update"], version)
        else:
            problem = "it could not be installed into the bench venv"
        print(f"running {len(samplers) + bool(glances)} samplers together, {ticks} ticks at 1 s ...",
              flush=True)
        rows, glances_row, glances_problem = samplers_part.run_samplers(samplers, glances, ticks, out_dir)
        if glances_row:
            rows.append(glances_row)
        result = {"ticks": ticks, "interval_s": 1.0, "samplers": rows,
                  "glances_problem": glances_problem or problem,
                  "method": samplers_part.__doc__.strip()}
        report_samplers(r, result)
        return result

    def agents():
        result = agents_part.run_agents(procyon, agent, agent_secs, examples / "sampler_loop",
                                        large_processes, baseline)
        report_agents(r, result, (results.get("samplers") or {}).get("samplers"))
        return result

    def uplink():
        result = pieces.run_uplink(root, args.target_dir)
        report_uplink(r, result)
        return result

    def store():
        result = pieces.run_store(root, args.target_dir)
        report_store(r, result)
        return result

    def collector():
        result = collector_part.run_ingest(procyon, examples / "loadgen", steps, step_secs,
                                           rate_intervals=RATE_INTERVALS)
        report_collector(r, result)
        if large_steps:
            large = collector_part.run_ingest(procyon, examples / "loadgen", large_steps, step_secs,
                                              processes=LARGE_PROCESSES)
            report_collector(r, large)
            result["large"] = large
        return result

    def alerts():
        alert_eval = examples / "alert_eval"
        result = alerts_part.run_alerts(procyon, examples / "loadgen", alert_eval if alert_eval.exists() else None,
                                        alert_agents, alert_secs, alert_rounds)
        report_alerts(r, result)
        return result

    def fanout():
        result = collector_part.run_fanout(procyon, examples / "loadgen", clients, fanout_secs)
        report_fanout(r, result)
        return result

    def scaleout():
        result = scaleout_part.run_scaleout(procyon, examples / "loadgen", scaleout_steps, step_secs,
                                            scaleout_clients, fanout_secs)
        report_scaleout(r, result, results.get("collector"))
        return result

    def fleet():
        result = pieces.run_fleet(root, args.target_dir, procyon)
        report_fleet(r, result)
        return result

    def map_():
        result = pieces.run_map(root, args.target_dir, procyon)
        report_map(r, result)
        return result

    def soak():
        result = soak_part.run_soak(procyon, examples / "loadgen", soak_secs, soak_agents, soak_dashboards,
                                    soak_sample_secs, out_dir)
        report_soak(r, result)
        return result

    def desktop():
        result = pieces.run_desktop(root)
        report_desktop(r, result)
        return result

    def dashboard():
        result = pieces.run_dashboard(root, args.target_dir, procyon)
        report_dashboard(r, result)
        return result

    for name, run in (("samplers", samplers), ("agents", agents), ("uplink", uplink),
                      ("store", store), ("collector", collector), ("alerts", alerts), ("fanout", fanout),
                      ("scaleout", scaleout), ("soak", soak), ("desktop", desktop), ("dashboard", dashboard),
                      ("fleet", fleet), ("map", map_)):
        part(name, run)

    now = counts_now()
    counts.extend([now["processes"], now["sockets"]])
    machine["during_run"] = {"processes_min": min(counts[0::2]), "processes_max": max(counts[0::2]),
                             "sockets_min": min(counts[1::2]), "sockets_max": max(counts[1::2])}
    r.section("summary")
    d = machine["during_run"]
    r.say(f"machine: {machine['cores']} cores, {machine['cpu_model']}; during the run "
          f"{d['processes_min']}-{d['processes_max']} processes, {d['sockets_min']}-{d['sockets_max']} sockets")
    for ratio in r.ratios:
        r.say(f"ratio {ratio['ours']}/{ratio['other']}: {fmt(ratio['ratio'], 3)}")
    for b in r.budgets:
        verdict = ("not measured" if b["met"] is None else "met" if b["met"]
                   else f"MISSED by {fmt(b['missed_by'], 3)} {b['unit']}")
        r.say(f"budget {b['name']}: {fmt(b['value'], 3)} {b['op']} {fmt(b['limit'], 3)} {b['unit']}: {verdict}")
    for name in PARTS:
        res = results.get(name)
        if name not in only:
            r.say(f"{name}: skipped (BENCH_ONLY)")
        elif res and res.get("available") is False:
            r.say(f"{name}: not available ({res['reason']})")
        elif res and "error" in res:
            r.say(f"{name}: FAILED")

    report = {
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "budgets": r.budgets,
        "ratios": r.ratios,
        "parts": results,
        "lines": r.lines,
    }
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {report_path}")
    if failed:
        sys.exit(f"error: these parts failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
