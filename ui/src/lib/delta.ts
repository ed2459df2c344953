// Snapshot deltas on the live stream: rebuilds the next snapshot from the one held and
// a `SnapshotDelta` (the Rust side, `src-tauri/src/model/delta.rs`, documents the
// format and makes them). The rules are the same as there, so the rebuilt snapshot
// equals the one the collector stored.

import type { ListDelta, Placed, ProcessChange, ProcessSample, Snapshot, SnapshotDelta } from './model';

/** A delta that cannot be applied to the snapshot held: the caller must start over
 *  from a full snapshot (reconnect), never show what it would make. */
export class DeltaMismatch extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeltaMismatch';
  }
}

/** Whether `delta` was made against `base`. */
export function fits(base: Snapshot, delta: SnapshotDelta): boolean {
  return base.seq === delta.base_seq && base.host.hostname === delta.hostname && base.host.id === delta.host_id;
}

/** The snapshot `delta` stands for, rebuilt from `base`. Throws `DeltaMismatch` when
 *  `base` is not the delta's base or the edits do not fit it. */
export function applyDelta(base: Snapshot, delta: SnapshotDelta): Snapshot {
  if (!fits(base, delta)) {
    throw new DeltaMismatch(
      `the delta is against ${delta.hostname} seq ${delta.base_seq}, not ${base.host.hostname} seq ${base.seq}`,
    );
  }
  return {
    schema_version: delta.schema_version,
    host: delta.host ?? base.host,
    taken_at: delta.taken_at,
    seq: delta.seq,
    interval_ms: delta.interval_ms,
    cpu: delta.cpu ?? base.cpu,
    memory: delta.memory ?? base.memory,
    processes: applyProcesses(base.processes, delta),
    connections: applyList(base.connections, delta.connections),
    network: delta.network ?? base.network,
    ports: {
      by_local_port: applyList(base.ports.by_local_port, delta.ports.by_local_port),
      listening: applyList(base.ports.listening, delta.ports.listening),
    },
    errors: delta.errors ?? base.errors,
    // Absent, as the collector writes it, when the host has no GPU.
    ...withGpus(delta.gpus ?? base.gpus),
    ...hostDepth(base, delta),
  };
}

function withGpus(gpus: Snapshot['gpus']): Pick<Snapshot, 'gpus'> {
  return gpus && gpus.length > 0 ? { gpus } : {};
}

const DEPTH_PARTS = ['filesystems', 'disks', 'temperatures', 'fans', 'batteries'] as const;

/** The host-in-depth parts: each absent from the delta is the base's; present, it is
 *  the new value, and `null` means no longer measured (left out, as the collector
 *  leaves it out). */
function hostDepth(base: Snapshot, delta: SnapshotDelta): Partial<Snapshot> {
  const out: Record<string, unknown> = {};
  for (const key of DEPTH_PARTS) {
    const value = key in delta ? delta[key] : base[key];
    if (value !== null && value !== undefined) out[key] = value;
  }
  return out as Partial<Snapshot>;
}

/** Pid and start time; a start time may be `null` (a short upload has none): the pid
 *  alone then, which is unique in a snapshot. */
function processKey(p: { pid: number; start_time: string | null }): string {
  return `${p.pid}|${p.start_time ?? ''}`;
}

/** Entries compared by value: the JSON text of values parsed from the same serialiser
 *  is equal exactly when the values are. */
function valueKey(v: unknown): string {
  return JSON.stringify(v);
}

/** Drops the entries whose key is in `removed` (each must occur in `base`), then puts
 *  `added` at their indices. */
function rebuild<T>(base: T[], removed: Set<string>, added: Placed<T>[], key: (t: T) => string): T[] {
  const found = new Set<string>();
  const kept: T[] = [];
  for (const item of base) {
    const k = key(item);
    if (removed.has(k)) found.add(k);
    else kept.push(item);
  }
  if (found.size !== removed.size) throw new DeltaMismatch('the delta removes an entry the base does not have');
  const total = kept.length + added.length;
  const out: T[] = [];
  let next = 0;
  for (const placed of added) {
    if (!Number.isInteger(placed.at) || placed.at < out.length || placed.at >= total) {
      throw new DeltaMismatch(`an entry is placed at ${placed.at}, out of order or range`);
    }
    while (out.length < placed.at) out.push(kept[next++]);
    out.push(placed.item);
  }
  while (next < kept.length) out.push(kept[next++]);
  return out;
}

function applyList<T>(base: T[], delta: ListDelta<T>): T[] {
  const removed = new Set(delta.removed.map(valueKey));
  if (removed.size !== delta.removed.length) throw new DeltaMismatch('the delta removes an entry twice');
  return rebuild(base, removed, delta.added, valueKey);
}

/** The fields a change may carry besides its key. */
const CHANGEABLE = [
  'ppid',
  'name',
  'cmd',
  'user',
  'status',
  'cpu_percent',
  'memory_percent',
  'rss_bytes',
  'virtual_bytes',
  'threads',
  'disk_read_bytes',
  'disk_write_bytes',
  'disk_read_bytes_per_sec',
  'disk_write_bytes_per_sec',
  'kernel_thread',
  'container',
  'gpu_percent',
  'gpu_memory_bytes',
] as const satisfies readonly (keyof ProcessChange & keyof ProcessSample)[];

function applyProcesses(base: ProcessSample[], delta: SnapshotDelta): ProcessSample[] {
  const { removed, changed, added } = delta.processes;
  const removedKeys = new Set(removed.map(processKey));
  if (removedKeys.size !== removed.length) throw new DeltaMismatch('the delta removes a process twice');
  const out = rebuild(base, removedKeys, added, processKey);
  if (changed.length === 0) return out;
  // Changes apply to kept processes only, never to added ones; a key held twice
  // cannot be named.
  const addedAt = new Set(added.map((p) => p.at));
  const index = new Map<string, number | null>();
  out.forEach((p, i) => {
    if (addedAt.has(i)) return;
    const k = processKey(p);
    index.set(k, index.has(k) ? null : i);
  });
  const patched = new Set<number>();
  for (const change of changed) {
    const i = index.get(processKey(change));
    if (i === undefined || i === null) throw new DeltaMismatch(`the delta changes process ${change.pid}, which it cannot name`);
    if (patched.has(i)) throw new DeltaMismatch(`the delta changes process ${change.pid} twice`);
    patched.add(i);
    const next: Record<string, unknown> = { ...out[i] };
    for (const field of CHANGEABLE) {
      if (change[field] !== undefined) next[field] = change[field];
    }
    // A process that left its container has none, as the snapshot it came from has.
    if (next.container === null) delete next.container;
    out[i] = next as unknown as ProcessSample;
  }
  return out;
}
