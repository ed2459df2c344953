"""Alert evaluation's cost on the collector, against a floor measured in the same run.

The floor: a collector with no alert rules taking simulated agents at 1 s (the load
generator's `ingest`, 1,000 agents by default) for a window; its CPU over the window is
what ingest costs. Then a fresh collector with 50 rules (`--alerts FILE`, every rule
watching every host: a third host measures, a third process filters taken together, a
third per-process measures, levels set so that nothing fires, as in
examples/alert_eval.rs) takes the same load. The budget (DESIGN.md): the rules add
under 10 % to the collector's CPU. The two runs alternate (BENCH_ALERT_ROUNDS pairs,
default 2) and each side's median is taken, so that a noisy moment of a shared machine
falls on both sides or neither.

The same evaluation alone, without the network or the store, comes from
examples/alert_eval.rs (microseconds per snapshot); at 1,000 snapshots a second it is
also given as a share of the floor's CPU, a figure that does not depend on the
machine's noise between two collector runs.
"""

import json
import statistics
import subprocess

from collector import loadgen_argv, throwaway_collector
from common import BenchError, Daemon, child_env

RULES = 50


def rules_toml(count):
    """`count` rules in the --alerts file's TOML, the mix of examples/alert_eval.rs."""
    out = []
    for i in range(count):
        kind = i % 6
        out.append("[[rules]]")
        out.append(f'name = "rule-{i}"')
        if kind == 0:
            out += ['metric = "host.cpu_percent"', "threshold = 1000.0", "for_secs = 60"]
        elif kind == 1:
            out += ['metric = "host.memory_percent"', "threshold = 1000.0"]
        elif kind == 2:
            out += ['metric = "process.count"', 'process = "name:nginx"', "threshold = 1000.0"]
        elif kind == 3:
            out += ['metric = "process.absent"', 'process = "name:s"']
        elif kind == 4:
            out += ['metric = "process.cpu_percent"', 'process = "user:root cpu>1"', "threshold = 1000.0"]
        else:
            out += ['metric = "process.rss_bytes"', 'process = "cmd:java"', "threshold = 1e15"]
        out.append("")
    return "\n".join(out)


def one_run(procyon, loadgen, label, rules, agents, secs, processes):
    """Collector CPU for `agents` at 1 s over `secs`, with `rules` rules."""

    def extra(tmp):
        if not rules:
            return ()
        path = tmp / "alerts.toml"
        path.write_text(rules_toml(rules))
        return ("--alerts", str(path))

    with throwaway_collector(procyon, f"alerts-{label}", extra=extra) as env:
        print(f"alert evaluation: {agents} agents at 1 s for {secs} s, {rules} rules ...", flush=True)
        gen = Daemon(f"loadgen alerts {label}", loadgen_argv(loadgen, env, "bench-alerts") + [
            "--processes", str(processes),
            "ingest", "--agents", str(agents), "--interval", "1",
            "--duration", str(secs), "--p99-ms", "100"], child_env(), env.tmp)
        env.daemons.append(gen)
        step = gen.wait_json(secs + 600)
        env.collector.check_running()
    cpu = (step.get("cpu") or {}).get("collector_cpu_percent")
    if cpu is None:
        raise BenchError(f"the load generator reported no collector CPU for the {label} run")
    lat = step.get("latency_ms", {})
    print(f"  collector cpu {cpu:.1f} %, {step.get('rate_per_s', 0):.0f} snapshots/s, p99 {lat.get('p99')} ms",
          flush=True)
    return {"label": label, "rules": rules, "collector_cpu_percent": cpu, "rate_per_s": step.get("rate_per_s"),
            "p99_ms": lat.get("p99"), "sustained": step.get("sustained")}


def run_alerts(procyon, loadgen, alert_eval, agents, secs, rounds, processes=480):
    """The floor and the rules alternately, then the evaluation alone."""
    runs = []
    for i in range(rounds):
        runs.append(one_run(procyon, loadgen, f"floor-{i}", 0, agents, secs, processes))
        runs.append(one_run(procyon, loadgen, f"rules-{i}", RULES, agents, secs, processes))
    floor = statistics.median(r["collector_cpu_percent"] for r in runs if r["rules"] == 0)
    with_rules = statistics.median(r["collector_cpu_percent"] for r in runs if r["rules"])
    alone = None
    if alert_eval is not None:
        done = subprocess.run([str(alert_eval), "--hosts", str(agents), "--rules", str(RULES),
                               "--processes", str(processes)], capture_output=True, text=True,
                              timeout=900, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise BenchError(f"alert_eval failed: {done.stderr.strip()[-500:]}")
        alone = json.loads(done.stdout.strip().splitlines()[-1])
    return {"agents": agents, "window_s": secs, "rules": RULES, "runs": runs,
            "floor_cpu_percent": floor, "rules_cpu_percent": with_rules, "evaluation_alone": alone,
            "method": __doc__.strip()}
