// Snapshot deltas: rebuilding the next snapshot exactly, and refusing deltas that do
// not fit the snapshot held.

import { describe, expect, it } from 'vitest';
import { DeltaMismatch, applyDelta } from './delta';
import type { LiveMessage, Snapshot, SnapshotDelta } from './model';
import type { SocketLike, StoredSnapshot } from './transport';
import { WebTransport } from './transport';
import { conn, snapshot as fixtureSnapshot, proc } from './testing/fixtures';

/** The shared fixture snapshot at tick `seq`, with processes, sockets and ports that a
 *  delta can change. */
function snapshot(seq: number, patch: Partial<Snapshot> = {}): Snapshot {
  return {
    ...fixtureSnapshot({ processes: [proc(1, null), proc(2, 1), proc(3, 1, { threads: 4 })] }),
    taken_at: `2026-01-01T00:00:0${seq}Z`,
    seq,
    memory: { total_bytes: 8, used_bytes: 4, available_bytes: 4, swap_total_bytes: 0, swap_used_bytes: 0 },
    connections: [conn({ local_port: 80 }), conn({ local_port: 443 })],
    ports: { by_local_port: [{ protocol: 'tcp', port: 80, connections: 1 }], listening: [] },
    ...patch,
  };
}

function emptyDelta(base: Snapshot, seq: number): SnapshotDelta {
  return {
    hostname: base.host.hostname,
    host_id: base.host.id,
    base_seq: base.seq,
    seq,
    schema_version: 1,
    taken_at: `2026-01-01T00:00:0${seq}Z`,
    interval_ms: 1000,
    processes: { removed: [], changed: [], added: [] },
    connections: { removed: [], added: [] },
    ports: { by_local_port: { removed: [], added: [] }, listening: { removed: [], added: [] } },
  };
}

describe('applyDelta', () => {
  it('carries the host in depth: kept when absent, replaced when present, gone when null', () => {
    const fs = { mount_point: '/', fs_type: 'ext4', device: '/dev/vda', total_bytes: 10, used_bytes: 4, free_bytes: 6, inodes_total: null, inodes_free: null };
    const disk = { name: 'vda', read_bytes_per_sec: 1, write_bytes_per_sec: 2, reads_per_sec: 1, writes_per_sec: 1, busy_percent: 3 };
    const base = snapshot(1, { filesystems: [fs], disks: [disk], temperatures: [] });
    const kept = applyDelta(base, { ...emptyDelta(base, 2), disks: [{ ...disk, busy_percent: 9 }] });
    expect(kept.filesystems).toEqual([fs]);
    expect(kept.disks?.[0].busy_percent).toBe(9);
    expect(kept.temperatures).toEqual([]);
    expect('fans' in kept).toBe(false);
    const gone = applyDelta(base, { ...emptyDelta(base, 2), filesystems: null });
    expect('filesystems' in gone).toBe(false);
    expect(gone.disks).toEqual([disk]);
  });


  const base = snapshot(1);
  const start = base.processes[1].start_time;

  it('carries a process container: gained, named, and left (absent again)', () => {
    const ref = { runtime: 'docker', id: 'a'.repeat(64), pod: null } as const;
    const change = (container: SnapshotDelta['processes']['changed'][0]['container']): SnapshotDelta => ({
      ...emptyDelta(base, 2),
      processes: { removed: [], changed: [{ pid: 2, start_time: start, container }], added: [] },
    });
    const gained = applyDelta(base, change(ref));
    expect(gained.processes[1].container).toEqual(ref);
    const named = applyDelta(gained, { ...change({ ...ref, name: 'web' }), base_seq: 2, seq: 3 });
    expect(named.processes[1].container?.name).toBe('web');
    const left = applyDelta(named, { ...change(null), base_seq: 3, seq: 4 });
    expect('container' in left.processes[1]).toBe(false);
  });

  it('rebuilds the next snapshot: removed, changed and added entries in their places', () => {
    const born = proc(4, 1, { name: 'new' });
    const delta: SnapshotDelta = {
      ...emptyDelta(base, 2),
      cpu: { total_percent: 50, per_core_percent: [60, 40], load_average: null },
      processes: {
        removed: [{ pid: 2, start_time: start }],
        changed: [{ pid: 3, start_time: start, cpu_percent: 12.5, threads: null }],
        added: [{ at: 0, item: proc(0, null) }, { at: 3, item: born }],
      },
      connections: { removed: [conn({ local_port: 80 })], added: [{ at: 0, item: conn({ local_port: 22 }) }] },
      ports: {
        by_local_port: { removed: [{ protocol: 'tcp', port: 80, connections: 1 }], added: [] },
        listening: { removed: [], added: [] },
      },
    };
    const next = applyDelta(base, JSON.parse(JSON.stringify(delta)) as SnapshotDelta);
    expect(next).toEqual(
      snapshot(2, {
        cpu: { total_percent: 50, per_core_percent: [60, 40], load_average: null },
        processes: [proc(0, null), proc(1, null), proc(3, 1, { cpu_percent: 12.5, threads: null }), born],
        connections: [conn({ local_port: 22 }), conn({ local_port: 443 })],
        ports: { by_local_port: [], listening: [] },
      }),
    );
    // The base is left as it was.
    expect(base).toEqual(snapshot(1));
  });

  it('keeps what the delta leaves out', () => {
    const next = applyDelta(base, emptyDelta(base, 2));
    expect(next).toEqual({ ...base, seq: 2, taken_at: '2026-01-01T00:00:02Z' });
  });

  it('names processes without a start time by their pid, and sets figures to null', () => {
    // A short upload's processes: no start time, figures that may be unknown.
    const short = snapshot(1, {
      processes: [proc(1, null, { start_time: null }), proc(2, 1, { start_time: null, cpu_percent: null })],
    });
    const delta: SnapshotDelta = {
      ...emptyDelta(short, 2),
      processes: {
        removed: [{ pid: 1, start_time: null }],
        changed: [{ pid: 2, start_time: null, cpu_percent: 3, rss_bytes: null }],
        added: [],
      },
    };
    const next = applyDelta(short, JSON.parse(JSON.stringify(delta)) as SnapshotDelta);
    expect(next.processes).toEqual([proc(2, 1, { start_time: null, cpu_percent: 3, rss_bytes: null })]);
  });

  it('carries GPU figures: per process, and the GPU list, absent again when it empties', () => {
    const radeon = {
      id: '0000:03:00.0',
      name: 'Radeon',
      driver: 'amdgpu',
      utilization_percent: 40,
      memory_used_bytes: 1024,
      memory_total_bytes: 8192,
      temperature_celsius: 51,
    };
    const delta: SnapshotDelta = {
      ...emptyDelta(base, 2),
      gpus: [radeon],
      processes: {
        removed: [],
        changed: [{ pid: 3, start_time: start, gpu_percent: 12.5, gpu_memory_bytes: 4096 }],
        added: [],
      },
    };
    const next = applyDelta(base, delta);
    expect(next.gpus).toEqual([radeon]);
    expect([next.processes[2].gpu_percent, next.processes[2].gpu_memory_bytes]).toEqual([12.5, 4096]);
    // Unchanged in the next delta: kept.
    expect(applyDelta(next, emptyDelta(next, 3)).gpus).toEqual([radeon]);
    // No GPU any more: the field is gone, as the collector writes it.
    const gone = applyDelta(next, { ...emptyDelta(next, 3), gpus: [] });
    expect('gpus' in gone).toBe(false);
  });

  it('refuses a delta made against another snapshot', () => {
    expect(() => applyDelta(snapshot(5), emptyDelta(base, 6))).toThrow(DeltaMismatch);
    const otherHost = { ...base, host: { ...base.host, hostname: 'web-2' } };
    expect(() => applyDelta(otherHost, emptyDelta(base, 2))).toThrow(DeltaMismatch);
  });

  it('refuses edits that do not fit the base', () => {
    const bad = (processes: SnapshotDelta['processes']) => () =>
      applyDelta(base, { ...emptyDelta(base, 2), processes });
    expect(bad({ removed: [{ pid: 99, start_time: start }], changed: [], added: [] })).toThrow(DeltaMismatch);
    expect(bad({ removed: [], changed: [{ pid: 99, start_time: start }], added: [] })).toThrow(DeltaMismatch);
    expect(bad({ removed: [], changed: [], added: [{ at: 9, item: proc(9, null) }] })).toThrow(DeltaMismatch);
    const twice = [
      { at: 1, item: proc(8, null) },
      { at: 0, item: proc(9, null) },
    ];
    expect(bad({ removed: [], changed: [], added: twice })).toThrow(DeltaMismatch);
    // A change may not name a process that the same delta adds.
    expect(
      bad({ removed: [], changed: [{ pid: 9, start_time: start, name: 'x' }], added: [{ at: 0, item: proc(9, null) }] }),
    ).toThrow(DeltaMismatch);
    const gone = conn({ local_port: 1 });
    expect(() =>
      applyDelta(base, { ...emptyDelta(base, 2), connections: { removed: [gone], added: [] } }),
    ).toThrow(DeltaMismatch);
  });
});

/** A WebSocket the test drives by hand. */
class FakeSocket implements SocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  closed = false;
  constructor(readonly url: string) {}
  send(message: LiveMessage) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  close() {
    this.closed = true;
  }
}

describe('the live stream with deltas', () => {
  it('asks for deltas, applies them, and reconnects rather than show a delta it cannot apply', () => {
    const sockets: FakeSocket[] = [];
    const t = new WebTransport({
      origin: 'http://c',
      storage: null,
      // Tickets are the transport test's concern; this one is about deltas.
      socketCredentials: 'none',
      socket: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
    });
    (t as unknown as { current: unknown }).current = { token: 'T', username: 'v', role: 'viewer', expires_at: 4e9 };
    const got: StoredSnapshot[] = [];
    const sub = t.live('web-1', { onSnapshot: (s) => got.push(s), onStatus: () => {} });
    expect(new URL(sockets[0].url).searchParams.get('delta')).toBe('1');
    const base = snapshot(1);
    const delta = { ...emptyDelta(base, 2), memory: { ...base.memory, used_bytes: 5 } };
    sockets[0].onopen?.({});
    sockets[0].send({ type: 'full', snapshot_id: 10, snapshot: base });
    sockets[0].send({ type: 'delta', snapshot_id: 11, delta });
    expect(got.map((s) => [s.snapshot_id, s.seq, s.memory.used_bytes, s.snapshot_time])).toEqual([
      [10, 1, 4, base.taken_at],
      [11, 2, 5, delta.taken_at],
    ]);
    // A delta against a snapshot this client does not hold: nothing shown, a new
    // connection (which starts with a full snapshot).
    sockets[0].send({ type: 'delta', snapshot_id: 13, delta: emptyDelta(snapshot(7), 8) });
    expect(got).toHaveLength(2);
    expect(sockets[0].closed).toBe(true);
    expect(sockets).toHaveLength(2);
    // The new connection holds nothing yet: a delta first is refused the same way.
    sockets[1].send({ type: 'delta', snapshot_id: 12, delta: emptyDelta(got[1], 3) });
    expect(got).toHaveLength(2);
    expect(sockets).toHaveLength(3);
    sockets[2].send({ type: 'full', snapshot_id: 12, snapshot: snapshot(3) });
    expect(got.map((s) => s.seq)).toEqual([1, 2, 3]);
    sub.close();
  });
});
