import { describe, expect, it } from 'vitest';
import {
  compileFleetQuery,
  fromSummary,
  groupFleet,
  labelKeys,
  sortFleet,
  withFiring,
  firingByHost,
  withUpdate,
  TREND_POINTS,
  type FleetHost,
} from './fleet';
import type { HostFigures, HostSummary } from './model';

function figures(cpu: number, extra: Partial<HostFigures> = {}): HostFigures {
  return {
    taken_at: '2026-01-01T00:00:00Z',
    cpu_percent: cpu,
    cpu_trend: [cpu],
    memory_used_bytes: 4e9,
    memory_total_bytes: 8e9,
    swap_used_bytes: 0,
    swap_total_bytes: 1e9,
    load_one: 1.5,
    received_bytes_per_sec: 2e6,
    sent_bytes_per_sec: 1e3,
    process_count: 300,
    busiest: { pid: 1, name: 'postgres', cpu_percent: cpu },
    ...extra,
  };
}

function host(hostname: string, opts: Partial<HostSummary> = {}): FleetHost {
  return fromSummary({
    id: 1,
    hostname,
    info: null,
    first_seen: '2026-01-01T00:00:00Z',
    last_seen: '2026-01-01T00:00:00Z',
    online: true,
    local: false,
    snapshot_count: 1,
    labels: {},
    admin_labels: {},
    figures: figures(10),
    ...opts,
  });
}

const names = (hosts: FleetHost[]) => hosts.map((h) => h.hostname);

describe('fleet rows', () => {
  it('take the figures and derive shares', () => {
    const h = host('a', { figures: figures(42, { cpu_trend: [1, 2, 42] }) });
    expect(h.memPercent).toBe(50);
    expect(h.swapPercent).toBe(0);
    expect(h.trend).toEqual([1, 2, 42]);
    expect(host('b', { figures: null }).memPercent).toBeNull();
  });

  it('append live figures to the trend once, and keep it bounded', () => {
    let h = host('a');
    const next = figures(70, { taken_at: '2026-01-01T00:00:01Z' });
    h = withUpdate(h, { online: true, last_seen: '2026-01-01T00:00:01Z', figures: next });
    expect(h.trend).toEqual([10, 70]);
    expect(h.figures?.cpu_percent).toBe(70);
    // The same figures again (a reconnect) add nothing.
    h = withUpdate(h, { online: true, last_seen: '2026-01-01T00:00:01Z', figures: next });
    expect(h.trend).toEqual([10, 70]);
    for (let i = 2; i < 100; i++) {
      const t = new Date(Date.parse('2026-01-01T00:00:00Z') + i * 1000).toISOString();
      h = withUpdate(h, { online: true, last_seen: t, figures: figures(i, { taken_at: t }) });
    }
    expect(h.trend.length).toBe(TREND_POINTS);
    expect(h.trend[TREND_POINTS - 1]).toBe(99);
    const off = withUpdate(h, { online: false, last_seen: null, figures: null });
    expect(off.online).toBe(false);
    expect(off.figures).toBe(h.figures);
  });
});

describe('fleet sort', () => {
  const hosts = [
    host('web-10', { figures: figures(5) }),
    host('web-2', { figures: figures(90) }),
    host('web-1', { figures: null, online: false }),
    host('db-1', { figures: figures(50) }),
  ];

  it('sorts names naturally both ways', () => {
    expect(names(sortFleet(hosts, { column: 'name', direction: 'asc' }))).toEqual(['db-1', 'web-1', 'web-2', 'web-10']);
    expect(names(sortFleet(hosts, { column: 'name', direction: 'desc' }))).toEqual(['web-10', 'web-2', 'web-1', 'db-1']);
  });

  it('sorts figures with the unknown last either way', () => {
    expect(names(sortFleet(hosts, { column: 'cpu', direction: 'desc' }))).toEqual(['web-2', 'db-1', 'web-10', 'web-1']);
    expect(names(sortFleet(hosts, { column: 'cpu', direction: 'asc' }))).toEqual(['web-10', 'db-1', 'web-2', 'web-1']);
    expect(names(sortFleet(hosts, { column: 'status', direction: 'asc' }))[0]).toBe('web-1');
  });
});

describe('fleet filter', () => {
  const hosts = [
    host('web-1', { labels: { env: 'prod', role: 'web' }, figures: figures(95) }),
    host('web-2', { labels: { env: 'staging', role: 'web' }, figures: figures(20, { memory_used_bytes: 7e9 }) }),
    host('db-1', { labels: { env: 'prod', role: 'db' }, figures: figures(60) }),
    host('old-1', { online: false, figures: null }),
  ];
  const run = (q: string) => {
    const c = compileFleetQuery(q);
    return { names: names(hosts.filter(c.test ?? (() => true))), errors: c.errors };
  };

  it('filters by figures', () => {
    expect(run('cpu>80').names).toEqual(['web-1']);
    expect(run('mem>50').names).toEqual(['web-2']);
    expect(run('cpu>=60 cpu<100').names).toEqual(['web-1', 'db-1']);
    expect(run('rx>1M').names).toEqual(['web-1', 'web-2', 'db-1']);
  });

  it('filters by state, label and name', () => {
    expect(run('offline').names).toEqual(['old-1']);
    expect(run('online').names).toEqual(['web-1', 'web-2', 'db-1']);
    expect(run('label:env=prod').names).toEqual(['web-1', 'db-1']);
    expect(run('env=prod').names).toEqual(['web-1', 'db-1']);
    expect(run('env=prod,staging role=web').names).toEqual(['web-1', 'web-2']);
    expect(run('label:role').names).toEqual(['web-1', 'web-2', 'db-1']);
    expect(run('web-*').names).toEqual(['web-1', 'web-2']);
    expect(run('*-1').names).toEqual(['web-1', 'db-1', 'old-1']);
    expect(run('name:db-?').names).toEqual(['db-1']);
    expect(run('db').names).toEqual(['db-1']);
    expect(run('-env=prod').names).toEqual(['web-2', 'old-1']);
    expect(run('!offline web-*').names).toEqual(['web-1', 'web-2']);
  });

  it('reports malformed words and ignores them', () => {
    const r = run('cpu>lots env=prod');
    expect(r.names).toEqual(['web-1', 'db-1']);
    expect(r.errors[0]).toContain('cpu>80');
    expect(compileFleetQuery('').test).toBeNull();
    expect(compileFleetQuery('status:sideways').errors.length).toBe(1);
  });
});

describe('fleet GPUs', () => {
  const gpu = (utilization_percent: number | null, memory_used_bytes: number | null = null) => ({
    id: '0000:03:00.0',
    name: 'Radeon',
    driver: 'amdgpu',
    utilization_percent,
    memory_used_bytes,
    memory_total_bytes: 8e9,
    temperature_celsius: null,
  });
  const hosts = [
    host('gpu-1', { figures: figures(10, { gpus: [gpu(30), gpu(70)] }) }),
    host('gpu-2', { figures: figures(10, { gpus: [gpu(null, 1e9)] }) }),
    host('plain', { figures: figures(10) }),
  ];

  it('takes the busiest GPU, unknown without one that says, and follows live figures', () => {
    expect(hosts.map((h) => h.gpuPercent)).toEqual([70, null, null]);
    const later = { ...figures(10, { gpus: [gpu(5)] }), taken_at: '2026-01-01T00:00:05Z' };
    expect(withUpdate(hosts[0], { online: true, last_seen: later.taken_at, figures: later }).gpuPercent).toBe(5);
  });

  it('sorts and filters by it', () => {
    expect(names(sortFleet(hosts, { column: 'gpu', direction: 'desc' }))).toEqual(['gpu-1', 'gpu-2', 'plain']);
    const c = compileFleetQuery('gpu>50');
    expect(c.errors).toEqual([]);
    expect(names(hosts.filter(c.test ?? (() => true)))).toEqual(['gpu-1']);
  });
});

describe('fleet alerts', () => {
  const counts = firingByHost([
    { hostname: 'web-1', state: 'firing' },
    { hostname: 'web-1', state: 'firing' },
    { hostname: 'db-1', state: 'pending' },
    { hostname: 'web-2', state: 'resolved' },
    { hostname: 'db-1', state: 'firing' },
  ]);
  const hosts = withFiring([host('web-1'), host('web-2'), host('db-1'), host('old-1', { online: false, figures: null })], counts);
  const run = (q: string) => {
    const c = compileFleetQuery(q);
    return { names: names(hosts.filter(c.test ?? (() => true))), errors: c.errors };
  };

  it('counts firing alerts per host, pending and resolved ones left out', () => {
    expect([...counts.entries()]).toEqual([
      ['web-1', 2],
      ['db-1', 1],
    ]);
    expect(hosts.map((h) => h.firing)).toEqual([2, 0, 1, 0]);
    // Not known (a backend without alerts): no count, and nothing is alerting.
    const unknown = withFiring(hosts, null);
    expect(unknown.map((h) => h.firing)).toEqual([null, null, null, null]);
    expect(unknown.filter(compileFleetQuery('alerting').test!)).toEqual([]);
    // Unchanged rows keep their objects.
    expect(withFiring(hosts, counts)[1]).toBe(hosts[1]);
  });

  it('filters with the word alerting, negated, and by count', () => {
    expect(run('alerting').names).toEqual(['web-1', 'db-1']);
    expect(run('!alerting').names).toEqual(['web-2', 'old-1']);
    expect(run('-alerting').names).toEqual(['web-2', 'old-1']);
    expect(run('alerting web-*').names).toEqual(['web-1']);
    expect(run('status:alerting').names).toEqual(['web-1', 'db-1']);
    expect(run('alerts>1').names).toEqual(['web-1']);
    expect(run('alerts>=1').names).toEqual(['web-1', 'db-1']);
    expect(run('alerts>many').errors[0]).toContain('alerts>2');
  });

  it('sorts by alerts firing, the unknown last', () => {
    expect(names(sortFleet(hosts, { column: 'alerts', direction: 'desc' }))).toEqual(['web-1', 'db-1', 'old-1', 'web-2']);
    const some = [...hosts.slice(0, 2), { ...hosts[2], firing: null }];
    expect(names(sortFleet(some, { column: 'alerts', direction: 'asc' }))).toEqual(['web-2', 'web-1', 'db-1']);
  });
});

describe('fleet groups', () => {
  it('group by a label, in natural order, unlabelled last, collapsible', () => {
    const hosts = [
      host('a', { labels: { rack: 'r10' } }),
      host('b', { labels: { rack: 'r2' } }),
      host('c', { online: false }),
      host('d', { labels: { rack: 'r2' } }),
    ];
    const items = groupFleet(hosts, 'rack', new Set());
    expect(items.map((i) => (i.kind === 'group' ? `[${i.value}:${i.count}]` : i.host.hostname))).toEqual([
      '[r2:2]',
      'b',
      'd',
      '[r10:1]',
      'a',
      '[null:1]',
      'c',
    ]);
    const folded = groupFleet(hosts, 'rack', new Set(['r2']));
    expect(folded.filter((i) => i.kind === 'host').map((i) => (i.kind === 'host' ? i.host.hostname : ''))).toEqual(['a', 'c']);
    expect(labelKeys(hosts)).toEqual(['rack']);
  });
});
