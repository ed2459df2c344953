import { describe, expect, it } from 'vitest';
import type { MapEdge, MapNode } from './model';
import { MapLayout, NO_FILTER, drawable, filterMap, matchesSearch, naturalCompare, stateOf } from './netmap';

function proc(hostname: string, pid: number, name: string): MapNode {
  return {
    id: `process:${hostname}:${pid}`,
    kind: 'process',
    hostname,
    pid,
    name,
    user: null,
    start_time: null,
    address: null,
    listening_ports: [],
  };
}

function outside(address: string): MapNode {
  return { id: `external:${address}`, kind: 'external', hostname: null, pid: null, name: address, user: null, start_time: null, address, listening_ports: [] };
}

function edge(source: MapNode, target: MapNode, port: number, state: MapEdge['state'] = 'ESTABLISHED', count = 1): MapEdge {
  return {
    source: source.id,
    target: target.id,
    protocol: 'tcp',
    local_port: null,
    remote_port: port,
    state,
    count,
    cross_host: source.hostname !== null && target.hostname !== null && source.hostname !== target.hostname,
  };
}

const app = proc('web-1', 10, 'app');
const cache = proc('web-1', 11, 'redis');
const db = proc('db-1', 20, 'postgres');
const api = outside('203.0.113.9');
const nodes = [app, cache, db, api];
const edges = [edge(app, db, 5432, 'ESTABLISHED', 3), edge(app, cache, 6379), edge(app, api, 443, 'TIME_WAIT'), edge(cache, db, 5432)];

describe('the network map', () => {
  it('puts host names in natural order', () => {
    expect(['web-10', 'web-2', 'web-1', 'db'].sort(naturalCompare)).toEqual(['db', 'web-1', 'web-2', 'web-10']);
  });

  it('filters by process, port and state, keeping only the nodes the edges touch', () => {
    expect(filterMap({ nodes, edges }, NO_FILTER).edges).toHaveLength(4);
    const byPort = filterMap({ nodes, edges }, { ...NO_FILTER, port: 5432 });
    expect(byPort.edges).toHaveLength(2);
    expect(byPort.nodes.map((n) => n.id).sort()).toEqual([app.id, cache.id, db.id].sort());
    const byState = filterMap({ nodes, edges }, { ...NO_FILTER, state: 'TIME_WAIT' });
    expect(byState.nodes.map((n) => n.name)).toEqual(['app', '203.0.113.9']);
    const byName = filterMap({ nodes, edges }, { ...NO_FILTER, process: 'REDIS' });
    expect(byName.edges).toHaveLength(2);
    expect(stateOf({ state: null, protocol: 'udp' })).toBe('UDP');
  });

  it('collapses to one node per host, merging edges and dropping those within a host', () => {
    const g = drawable(nodes, edges, 'host');
    expect(g.nodes.map((n) => n.id).sort()).toEqual(['external:203.0.113.9', 'host:db-1', 'host:web-1']);
    const toDb = g.edges.find((e) => e.target === 'host:db-1')!;
    expect(toDb.count).toBe(4);
    expect(toDb.ports).toEqual([5432]);
    expect(g.edges).toHaveLength(2);
    expect(drawable(nodes, edges, 'none').edges).toHaveLength(4);
  });

  it('collapses to one node per container, processes in none staying themselves', () => {
    const ref = { runtime: 'docker', id: 'a'.repeat(64), pod: null, name: 'web' } as const;
    // Two processes of one container on web-1 (app and a worker), redis in none.
    const worker = { ...proc('web-1', 12, 'worker'), container: ref };
    const inApp = { ...app, container: ref };
    const all = [inApp, worker, cache, db, api];
    const g = drawable(all, [...edges.map((e) => ({ ...e })), edge(worker, db, 5432), edge(inApp, worker, 9000)], 'container');
    const box = `container:web-1:docker:${'a'.repeat(64)}`;
    expect(g.nodes.map((n) => n.id).sort()).toEqual([box, cache.id, db.id, api.id].sort());
    const drawn = g.nodes.find((n) => n.id === box)!;
    expect([drawn.kind, drawn.label, drawn.hostname]).toEqual(['container', 'web (docker)', 'web-1']);
    // app→db (3) and worker→db (1) merge; the edge within the container is gone.
    expect(g.edges.find((e) => e.source === box && e.target === db.id)!.count).toBe(4);
    expect(g.edges.some((e) => e.source === box && e.target === box)).toBe(false);
    expect(g.edges.find((e) => e.source === cache.id)!.target).toBe(db.id);
  });

  it('finds nodes by name, host, pid or address', () => {
    const g = drawable(nodes, edges, 'none');
    const find = (q: string) => g.nodes.filter((n) => matchesSearch(n, q)).map((n) => n.id);
    expect(find('postgres')).toEqual([db.id]);
    expect(find('web-1')).toEqual([app.id, cache.id]);
    expect(find('20')).toEqual([db.id, api.id]); // pid 20, and the 20 of 203.0.113.9
    expect(find('203.0')).toEqual([api.id]);
    expect(find('')).toEqual([]);
  });

  it('keeps every node where it was when the map changes', () => {
    const layout = new MapLayout();
    const first = layout.place(drawable(nodes, edges, 'none').nodes);
    const newcomer = proc('web-1', 12, 'worker');
    const host = proc('web-10', 1, 'sshd');
    const more = [...nodes, newcomer, host];
    const second = layout.place(drawable(more, [...edges, edge(newcomer, db, 5432), edge(host, api, 22)], 'none').nodes);
    for (const n of nodes) expect(second.get(n.id)).toEqual(first.get(n.id));
    // A node that leaves frees its slot; the others stay.
    const third = layout.place(drawable([app, db, api, newcomer], [edge(app, db, 5432), edge(newcomer, api, 1)], 'none').nodes);
    for (const n of [app, db, api, newcomer]) expect(third.get(n.id)).toEqual(second.get(n.id));
    // Processes of one host are near each other, apart from other hosts'.
    const d = (a: MapNode, b: MapNode) => Math.hypot(first.get(a.id)!.x - first.get(b.id)!.x, first.get(a.id)!.y - first.get(b.id)!.y);
    expect(d(app, cache)).toBeLessThan(d(app, db));
  });
});

describe('the layout of outside addresses', () => {
  it('puts them beside the hosts even when the first map was empty', () => {
    const layout = new MapLayout();
    layout.place([]);
    const placed = layout.place(drawable(nodes, edges, 'none').nodes);
    const hostsRight = Math.max(...[app, cache, db].map((n) => placed.get(n.id)!.x));
    expect(placed.get(api.id)!.x).toBeGreaterThan(hostsRight);
  });
});

describe('labels', () => {
  it('are cut to a length the map can draw', () => {
    const long = proc('web-1', 7, 'x'.repeat(100));
    const [drawn] = drawable([long], [], 'none').nodes;
    expect(Array.from(drawn.label).length).toBeLessThan(40);
    expect(drawn.label.endsWith('… (7)')).toBe(true);
  });
});
