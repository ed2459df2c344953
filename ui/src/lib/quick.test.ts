// The quick view's figures: the top five by CPU (ties, fewer than five, odd values),
// network rates (the sampler's, or from counters), and the shape of the rest.

import { describe, expect, it } from 'vitest';
import { networkRates, shapeQuick, topByCpu } from './quick';
import { counters, proc, snapshot } from './testing/fixtures';

describe('topByCpu', () => {
  it('keeps the five busiest, most first, whatever the input order', () => {
    const cpus = [3, 50, 0, 12, 99, 7, 12.5, 1, 250, 40];
    const processes = cpus.map((cpu, i) => proc(i + 1, null, { cpu_percent: cpu }));
    const expected = [250, 99, 50, 40, 12.5];
    expect(topByCpu(processes).map((p) => p.cpu)).toEqual(expected);
    expect(topByCpu([...processes].reverse()).map((p) => p.cpu)).toEqual(expected);
    expect(topByCpu(processes, 2).map((p) => p.pid)).toEqual([9, 5]);
  });

  it('breaks ties by memory, then pid, and copes with few or odd processes', () => {
    const ps = [proc(30, null, { rss_bytes: 10 }), proc(10, null, { rss_bytes: 10 }), proc(20, null, { rss_bytes: 99 })];
    expect(topByCpu(ps).map((p) => p.pid)).toEqual([20, 10, 30]);
    expect(topByCpu([])).toEqual([]);
    const odd = [proc(1, null, { cpu_percent: NaN }), proc(2, null, { cpu_percent: 5 })];
    expect(topByCpu(odd).map((p) => [p.pid, p.cpu])).toEqual([[2, 5], [1, 0]]);
  });

  it('keeps names as given, markup included (they are shown as text)', () => {
    expect(topByCpu([proc(1, null, { name: '<img src=x onerror=alert(1)>' })])[0].name).toBe('<img src=x onerror=alert(1)>');
  });
});

describe('networkRates', () => {
  const at = (t: string, patch: Parameters<typeof counters>[0]) => {
    const s = snapshot({ taken_at: t });
    s.network.total = counters(patch);
    return s;
  };

  it('uses the sampler’s rates', () => {
    const s = at('2026-01-01T00:00:10Z', { received_bytes_per_sec: 1500, sent_bytes_per_sec: 300 });
    expect(networkRates(s, null)).toEqual({ received: 1500, sent: 300 });
  });

  it('falls back to counters over the time between snapshots, never across a reset', () => {
    const prev = at('2026-01-01T00:00:10Z', { received_bytes: 1000, sent_bytes: 5000 });
    const cur = at('2026-01-01T00:00:12Z', { received_bytes: 5000, sent_bytes: 1000 });
    (cur.network.total as unknown as Record<string, unknown>).received_bytes_per_sec = undefined;
    (cur.network.total as unknown as Record<string, unknown>).sent_bytes_per_sec = null;
    expect(networkRates(cur, prev)).toEqual({ received: 2000, sent: null });
    expect(networkRates(cur, null)).toEqual({ received: null, sent: null });
  });
});

describe('shapeQuick', () => {
  it('shapes cores, memory and the top processes', () => {
    const s = snapshot({ processes: [proc(1, null, { cpu_percent: 2 }), proc(2, null, { cpu_percent: 9 })] });
    s.cpu.per_core_percent = [10, 140, -3];
    const q = shapeQuick(s);
    expect(q.cores).toEqual([10, 100, 0]);
    expect(q.memory).toEqual({ usedBytes: 2 * 2 ** 30, totalBytes: 8 * 2 ** 30, percent: 25 });
    expect(q.top.map((p) => p.pid)).toEqual([2, 1]);
    expect(q.hostname).toBe('web-1');
  });

  it('ignores a previous snapshot of another host', () => {
    const prev = snapshot({ hostname: 'other', taken_at: '2026-01-01T00:00:09Z' });
    prev.network.total = counters({ received_bytes: 0 });
    const cur = snapshot({ taken_at: '2026-01-01T00:00:10Z' });
    cur.network.total = counters({ received_bytes: 1000 });
    (cur.network.total as unknown as Record<string, unknown>).received_bytes_per_sec = undefined;
    expect(shapeQuick(cur, prev).receivedPerSec).toBeNull();
  });
});
