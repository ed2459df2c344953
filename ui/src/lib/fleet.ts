// The fleet overview's rows: one per host, with the figures the table shows, and how
// they are filtered, sorted and grouped. Pure functions over plain rows, so the view
// only draws and the rules are tested here.
//
// A filter is words (see `tokenize` in filter.ts: quotes, `!` or `-` to negate), all of
// which must hold:
//   cpu>80  mem>=50  swap>10  load>4  procs>500  rx>1M  tx>10M   figures (%, count, bytes/s)
//   gpu>50                                                        the busiest GPU's share
//   online  offline  (or status:online)                           the host's state
//   alerting  (alerts>2)                                          alerts firing on the host
//   env=prod  label:env=prod  label:env  label:env=prod,staging    labels (a value may use *)
//   web-*  name:db-?                                              host name patterns
//   web                                                           part of a host name
// A word that looks like a filter but does not parse (`cpu>lots`) is reported and
// ignored, so typing never empties the table by surprise.

import { parseSize, tokenize, type Token } from './filter';
import type { Alert, HostFigures, HostSummary } from './model';
import { naturalCompare } from './natural';

/** How many CPU figures a row keeps for its sparkline. */
export const TREND_POINTS = 60;

/** One host of the overview. */
export interface FleetHost {
  id: number;
  hostname: string;
  online: boolean;
  local: boolean;
  /** Newest upload, unix ms. */
  lastSeen: number;
  labels: Record<string, string>;
  adminLabels: Record<string, string>;
  figures: HostFigures | null;
  /** Recent CPU figures, oldest first. */
  trend: number[];
  /** Memory in use as a share of physical memory; `null` when not known. */
  memPercent: number | null;
  swapPercent: number | null;
  /** The busiest GPU's share; `null` for a host without GPUs (or that does not say). */
  gpuPercent: number | null;
  /** Alerts firing on the host now; `null` when not known (no alerts on this backend). */
  firing: number | null;
}

export function percentOf(part: number | null | undefined, whole: number | null | undefined): number | null {
  if (part == null || whole == null || whole <= 0) return null;
  return (part / whole) * 100;
}

/** A host as `GET /api/hosts/` lists it, as a row. */
export function fromSummary(h: HostSummary): FleetHost {
  // `?? null`: a collector from before the overview sends no figures at all.
  const f = h.figures ?? null;
  return {
    id: h.id,
    hostname: h.hostname,
    online: h.online,
    local: h.local,
    lastSeen: Date.parse(h.last_seen) || 0,
    labels: h.labels ?? {},
    adminLabels: h.admin_labels ?? {},
    figures: f,
    trend: f ? f.cpu_trend.slice(-TREND_POINTS) : [],
    memPercent: f ? percentOf(f.memory_used_bytes, f.memory_total_bytes) : null,
    swapPercent: f ? percentOf(f.swap_used_bytes, f.swap_total_bytes) : null,
    gpuPercent: busiestGpu(f?.gpus),
    firing: null,
  };
}

/** The busiest GPU's share of a host's GPUs, `null` without any that say. */
export function busiestGpu(gpus: HostFigures['gpus']): number | null {
  let best: number | null = null;
  for (const g of gpus ?? []) {
    if (g.utilization_percent !== null && (best === null || g.utilization_percent > best)) best = g.utilization_percent;
  }
  return best;
}

/** Alerts firing now, counted by host name (pending and resolved ones do not count). */
export function firingByHost(alerts: readonly Pick<Alert, 'hostname' | 'state'>[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const a of alerts) if (a.state === 'firing') counts.set(a.hostname, (counts.get(a.hostname) ?? 0) + 1);
  return counts;
}

/** `hosts` with their firing alerts from `counts` (`null`: not known, for every host).
 *  A host keeps its object when its count is the same, so unchanged rows stay as they
 *  are. */
export function withFiring(hosts: readonly FleetHost[], counts: ReadonlyMap<string, number> | null): FleetHost[] {
  return hosts.map((h) => {
    const firing = counts === null ? null : (counts.get(h.hostname) ?? 0);
    return firing === h.firing ? h : { ...h, firing };
  });
}

/** `host` after a live change: new figures (whose trend holds the newest figure only)
 *  appended to the trend it has, unless they are the ones it already shows. */
export function withUpdate(
  host: FleetHost,
  update: { online: boolean; last_seen: string | null; figures: HostFigures | null },
): FleetHost {
  const f = update.figures;
  const lastSeen = update.last_seen ? Date.parse(update.last_seen) || host.lastSeen : host.lastSeen;
  if (!f) return { ...host, online: update.online, lastSeen };
  const fresh = !host.figures || Date.parse(f.taken_at) > Date.parse(host.figures.taken_at);
  const trend = fresh ? [...host.trend, f.cpu_percent].slice(-TREND_POINTS) : host.trend;
  return {
    ...host,
    online: update.online,
    lastSeen,
    figures: fresh ? f : host.figures,
    trend,
    memPercent: fresh ? percentOf(f.memory_used_bytes, f.memory_total_bytes) : host.memPercent,
    swapPercent: fresh ? percentOf(f.swap_used_bytes, f.swap_total_bytes) : host.swapPercent,
    gpuPercent: fresh ? busiestGpu(f.gpus) : host.gpuPercent,
  };
}

// ---- sorting ------------------------------------------------------------------------

export type FleetColumn =
  | 'name'
  | 'status'
  | 'lastSeen'
  | 'cpu'
  | 'mem'
  | 'swap'
  | 'load'
  | 'rx'
  | 'tx'
  | 'procs'
  | 'gpu'
  | 'alerts'
  | 'busiest'
  | 'labels';

export interface FleetSort {
  column: FleetColumn;
  direction: 'asc' | 'desc';
}

/** The value a column sorts by; `null` sorts last either way. */
export function fleetValue(column: FleetColumn, h: FleetHost): number | string | null {
  const f = h.figures;
  switch (column) {
    case 'name':
      return h.hostname;
    case 'status':
      return h.online ? 1 : 0;
    case 'lastSeen':
      return h.lastSeen;
    case 'cpu':
      return f ? f.cpu_percent : null;
    case 'mem':
      return h.memPercent;
    case 'swap':
      return h.swapPercent;
    case 'load':
      return f?.load_one ?? null;
    case 'rx':
      return f?.received_bytes_per_sec ?? null;
    case 'tx':
      return f?.sent_bytes_per_sec ?? null;
    case 'procs':
      return f ? f.process_count : null;
    case 'gpu':
      return h.gpuPercent;
    case 'alerts':
      return h.firing;
    case 'busiest':
      return f?.busiest?.name.toLowerCase() ?? null;
    case 'labels':
      return Object.entries(h.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ') || null;
  }
}

/** A copy of `hosts` sorted by `sort`; ties in natural order of the host name. */
export function sortFleet(hosts: readonly FleetHost[], sort: FleetSort): FleetHost[] {
  const dir = sort.direction === 'asc' ? 1 : -1;
  const keyed = hosts.map((h) => ({ h, v: fleetValue(sort.column, h) }));
  keyed.sort((a, b) => {
    if (sort.column !== 'name') {
      if (a.v === null && b.v !== null) return 1;
      if (b.v === null && a.v !== null) return -1;
      if (a.v !== null && b.v !== null && a.v !== b.v) {
        if (typeof a.v === 'string' && typeof b.v === 'string') return dir * naturalCompare(a.v, b.v);
        return a.v < b.v ? -dir : dir;
      }
      return naturalCompare(a.h.hostname, b.h.hostname);
    }
    return dir * naturalCompare(a.h.hostname, b.h.hostname);
  });
  return keyed.map((k) => k.h);
}

// ---- filtering ----------------------------------------------------------------------

const FIELDS = new Set(['cpu', 'mem', 'memory', 'swap', 'load', 'procs', 'gpu', 'alerts', 'rx', 'tx', 'label', 'name', 'host', 'status']);

type Predicate = (h: FleetHost) => boolean;

/** What a filter compiled to; `test` is `null` for an empty filter (every host). */
export interface FleetQuery {
  test: Predicate | null;
  errors: string[];
}

/** A glob (`web-*`, `db-?`) as an anchored, case-insensitive expression. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function textMatcher(pattern: string): (value: string) => boolean {
  if (/[*?]/.test(pattern)) {
    const re = globToRegExp(pattern);
    return (v) => re.test(v);
  }
  const lower = pattern.toLowerCase();
  return (v) => v.toLowerCase() === lower;
}

/** `env=prod`, `env=prod,staging`, `env=web-*` or `env` (has the key). */
function labelPredicate(spec: string): Predicate | string {
  const eq = spec.indexOf('=');
  const key = (eq < 0 ? spec : spec.slice(0, eq)).trim();
  if (!key) return `“${spec}” names no label: write label:KEY=VALUE, e.g. label:env=prod.`;
  if (eq < 0) return (h) => key in h.labels;
  const matchers = spec
    .slice(eq + 1)
    .split(',')
    .filter((v) => v.length > 0)
    .map(textMatcher);
  if (matchers.length === 0) return (h) => key in h.labels;
  return (h) => {
    const v = h.labels[key];
    return v !== undefined && matchers.some((m) => m(v));
  };
}

const NUMERIC: Record<string, { get: (h: FleetHost) => number | null; size: boolean; example: string }> = {
  cpu: { get: (h) => h.figures?.cpu_percent ?? null, size: false, example: 'cpu>80' },
  mem: { get: (h) => h.memPercent, size: false, example: 'mem>50' },
  memory: { get: (h) => h.memPercent, size: false, example: 'mem>50' },
  swap: { get: (h) => h.swapPercent, size: false, example: 'swap>10' },
  load: { get: (h) => h.figures?.load_one ?? null, size: false, example: 'load>4' },
  procs: { get: (h) => h.figures?.process_count ?? null, size: false, example: 'procs>500' },
  gpu: { get: (h) => h.gpuPercent, size: false, example: 'gpu>50' },
  alerts: { get: (h) => h.firing, size: false, example: 'alerts>2' },
  rx: { get: (h) => h.figures?.received_bytes_per_sec ?? null, size: true, example: 'rx>1M' },
  tx: { get: (h) => h.figures?.sent_bytes_per_sec ?? null, size: true, example: 'tx>1M' },
};

function numericPredicate(t: Token): Predicate | string {
  const field = NUMERIC[t.field ?? ''];
  const raw = t.value.trim().replace(/%$/, '');
  const target = field.size ? parseSize(raw) : /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : null;
  if (target === null || t.op === null) return `“${t.raw}” is not a figure: write e.g. ${field.example}.`;
  const op = t.op;
  return (h) => {
    const v = field.get(h);
    if (v === null) return false;
    switch (op) {
      case '>':
        return v > target;
      case '>=':
      case ':':
        return v >= target;
      case '<':
        return v < target;
      case '<=':
        return v <= target;
      case '=':
        return v === target;
    }
  };
}

function statePredicate(word: string): Predicate | null {
  switch (word.toLowerCase()) {
    case 'online':
    case 'up':
      return (h) => h.online;
    case 'offline':
    case 'down':
      return (h) => !h.online;
    case 'alerting':
      return (h) => (h.firing ?? 0) > 0;
    default:
      return null;
  }
}

function wordPredicate(t: Token): Predicate | string {
  switch (t.field) {
    case null: {
      const state = statePredicate(t.value);
      if (state) return state;
      // `env=prod`: a label (a key that is not one of the fields above).
      if (/^[A-Za-z0-9][A-Za-z0-9_./-]*=/.test(t.value)) return labelPredicate(t.value);
      if (/[*?]/.test(t.value)) {
        const re = globToRegExp(t.value);
        return (h) => re.test(h.hostname);
      }
      const part = t.value.toLowerCase();
      return (h) => h.hostname.toLowerCase().includes(part);
    }
    case 'label':
      return labelPredicate(t.value);
    case 'name':
    case 'host': {
      const m = textMatcher(t.value);
      return /[*?]/.test(t.value) ? (h) => m(h.hostname) : (h) => h.hostname.toLowerCase().includes(t.value.toLowerCase());
    }
    case 'status':
      return statePredicate(t.value) ?? `“${t.raw}”: a host is online, offline or alerting.`;
    default:
      return numericPredicate(t);
  }
}

/** Compiles a filter (see the top of this file). */
export function compileFleetQuery(query: string): FleetQuery {
  const tokens = tokenize(query, FIELDS);
  const errors: string[] = [];
  const preds: Predicate[] = [];
  for (const token of tokens) {
    let t = token;
    // `-env=prod`, `-offline`: tokenize negates with `-` only the fields it knows.
    if (t.field === null && !t.negated && /^-([A-Za-z0-9][A-Za-z0-9_./-]*=|(online|offline|up|down|alerting)$)/i.test(t.value)) {
      t = { ...t, negated: true, value: t.value.slice(1) };
    }
    const p = wordPredicate(t);
    if (typeof p === 'string') {
      errors.push(p);
      continue;
    }
    preds.push(t.negated ? (h) => !p(h) : p);
  }
  if (preds.length === 0) return { test: null, errors };
  return { test: (h) => preds.every((p) => p(h)), errors };
}

// ---- grouping -----------------------------------------------------------------------

/** A row of the grouped table: a group's heading, or a host. */
export type FleetItem =
  | { kind: 'group'; key: string; value: string | null; count: number; online: number; collapsed: boolean }
  | { kind: 'host'; host: FleetHost };

/** `hosts` (already filtered and sorted) under a heading per value of label `key`, in
 *  natural order of the values, hosts without the label last. Hosts keep their order
 *  within a group; a collapsed group shows its heading only. */
export function groupFleet(hosts: readonly FleetHost[], key: string, collapsed: ReadonlySet<string>): FleetItem[] {
  const groups = new Map<string | null, FleetHost[]>();
  for (const h of hosts) {
    const v = h.labels[key] ?? null;
    let list = groups.get(v);
    if (!list) groups.set(v, (list = []));
    list.push(h);
  }
  const values = [...groups.keys()].sort((a, b) => (a === null ? 1 : b === null ? -1 : naturalCompare(a, b)));
  const out: FleetItem[] = [];
  for (const value of values) {
    const list = groups.get(value) ?? [];
    const id = value ?? '';
    const isCollapsed = collapsed.has(id);
    out.push({
      kind: 'group',
      key: id,
      value,
      count: list.length,
      online: list.filter((h) => h.online).length,
      collapsed: isCollapsed,
    });
    if (!isCollapsed) for (const host of list) out.push({ kind: 'host', host });
  }
  return out;
}

/** Every label key the hosts carry, in natural order. */
export function labelKeys(hosts: readonly FleetHost[]): string[] {
  const keys = new Set<string>();
  for (const h of hosts) for (const k of Object.keys(h.labels)) keys.add(k);
  return [...keys].sort(naturalCompare);
}
