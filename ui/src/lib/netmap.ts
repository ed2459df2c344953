// The network map's shaping, apart from drawing: filters, one node per host or per
// container, and a
// layout that keeps every node where it was while the map follows new snapshots.
//
// The layout is not a force simulation: hosts sit on a grid in natural name order, a
// host's processes on a sunflower spiral inside its cell, outside addresses on a spiral
// of their own beside the grid. A node keeps its slot for as long as it is on the map,
// and a new one takes a free slot, so a live update moves nothing that was there.

import { containerKey, containerLabel, runtimeLabel } from './containers';
import type { MapEdge, MapNode, MapNodeKind, NetworkMap } from './model';

/** Host names in natural order: web-2 before web-10. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
}

/** What the filters keep. Empty text and `null` keep everything. */
export interface MapFilter {
  /** Part of a process name (or outside address), either end of an edge. */
  process: string;
  /** A port, local or remote. */
  port: number | null;
  /** A TCP state, or `UDP` for UDP edges. */
  state: string;
}

export const NO_FILTER: MapFilter = { process: '', port: null, state: '' };

/** The states the state filter offers, in the order a person looks for them. */
export const STATES: readonly string[] = [
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'CLOSE_WAIT',
  'TIME_WAIT',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'LAST_ACK',
  'CLOSING',
  'UDP',
];

/** An edge's state as the filter and legend name it. */
export function stateOf(edge: Pick<MapEdge, 'state' | 'protocol'>): string {
  return edge.state ?? (edge.protocol === 'udp' ? 'UDP' : 'UNKNOWN');
}

/** Colours by state: established is the normal case, opening and closing stand out. */
export function stateColor(state: string): string {
  switch (state) {
    case 'ESTABLISHED':
      return '#3b82f6';
    case 'SYN_SENT':
    case 'SYN_RECV':
      return '#ef4444';
    case 'UDP':
      return '#8b5cf6';
    default:
      return '#f59e0b';
  }
}

/** Hosts' edges merged (one node per host) over several states. */
export const MIXED_COLOR = '#94a3b8';

/** Node colours by kind. */
export const KIND_COLORS: Record<DrawnKind | 'group', string> = {
  process: '#10b981',
  host: '#64748b',
  external: '#f97316',
  container: '#8b5cf6',
  group: '#94a3b8',
};

/** What the map draws as one node: each process, one node per container (processes
 *  in none stay themselves), or one node per host. */
export type MapCollapse = 'none' | 'container' | 'host';

/** A drawn node's kind: the map's, or a container made by collapsing. */
export type DrawnKind = MapNodeKind | 'container';

/** The edges the filter keeps, and the nodes they touch. */
export function filterMap(map: Pick<NetworkMap, 'nodes' | 'edges'>, filter: MapFilter): { nodes: MapNode[]; edges: MapEdge[] } {
  const byId = new Map(map.nodes.map((n) => [n.id, n]));
  const text = filter.process.trim().toLowerCase();
  const named = (id: string) => (byId.get(id)?.name ?? '').toLowerCase().includes(text);
  const edges = map.edges.filter(
    (e) =>
      (text === '' || named(e.source) || named(e.target)) &&
      (filter.port === null || e.remote_port === filter.port || e.local_port === filter.port) &&
      (filter.state === '' || stateOf(e) === filter.state),
  );
  const touched = new Set<string>();
  for (const e of edges) {
    touched.add(e.source);
    touched.add(e.target);
  }
  return { nodes: map.nodes.filter((n) => touched.has(n.id)), edges };
}

/** An edge as drawn: one or several of the map's edges. */
export interface DrawnEdge {
  id: string;
  source: string;
  target: string;
  /** Connections it stands for. */
  count: number;
  /** The state, or `MIXED` when it joins edges of several. */
  state: string;
  /** Ports it goes to. */
  ports: number[];
  cross_host: boolean;
}

/** A node as drawn. */
export interface DrawnNode {
  id: string;
  kind: DrawnKind;
  label: string;
  hostname: string | null;
  /** The map's node (`null` for a host or container made by collapsing). */
  node: MapNode | null;
}

/** The node a node collapses into: its host's, or its container's (on its host);
 *  outside addresses, and processes in no container, stay themselves. */
function collapsedId(node: MapNode, collapse: MapCollapse): string {
  if (node.hostname === null) return node.id;
  if (collapse === 'host') return `host:${node.hostname}`;
  return node.container ? `container:${node.hostname}:${containerKey(node.container)}` : node.id;
}

/** The node drawn for the nodes that collapse into `id`, from the first of them. */
function collapsedNode(id: string, n: MapNode, collapse: MapCollapse): DrawnNode {
  if (collapse === 'host' && n.hostname !== null) return { id, kind: 'host', label: n.hostname, hostname: n.hostname, node: null };
  if (id === n.id) return { id, kind: n.kind, label: labelOf(n), hostname: n.hostname, node: n };
  if (id.startsWith('container:') && n.container) {
    const label = `${cut(containerLabel(n.container))} (${runtimeLabel(n.container)})`;
    return { id, kind: 'container', label, hostname: n.hostname, node: null };
  }
  return { id, kind: 'host', label: n.hostname ?? id, hostname: n.hostname, node: null };
}

/**
 * The graph to draw: each map edge as it is, or one node per host or per container
 * (`collapse`) with the edges between two nodes merged into one; edges within one host
 * (or one container) are left out then.
 */
export function drawable(nodes: MapNode[], edges: MapEdge[], collapse: MapCollapse): { nodes: DrawnNode[]; edges: DrawnEdge[] } {
  if (collapse === 'none') {
    return {
      nodes: nodes.map((n) => ({ id: n.id, kind: n.kind, label: labelOf(n), hostname: n.hostname, node: n })),
      edges: edges.map((e) => ({
        id: edgeId(e),
        source: e.source,
        target: e.target,
        count: e.count,
        state: stateOf(e),
        ports: [e.remote_port],
        cross_host: e.cross_host,
      })),
    };
  }
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const outNodes = new Map<string, DrawnNode>();
  for (const n of nodes) {
    const id = collapsedId(n, collapse);
    if (outNodes.has(id)) continue;
    outNodes.set(id, collapsedNode(id, n, collapse));
  }
  const merged = new Map<string, DrawnEdge>();
  for (const e of edges) {
    const s = byId.get(e.source);
    const t = byId.get(e.target);
    if (!s || !t) continue;
    const source = collapsedId(s, collapse);
    const target = collapsedId(t, collapse);
    if (source === target) continue;
    const id = `${source}\u0000${target}`;
    const state = stateOf(e);
    const m = merged.get(id);
    if (!m) {
      merged.set(id, { id, source, target, count: e.count, state, ports: [e.remote_port], cross_host: e.cross_host });
    } else {
      m.count += e.count;
      if (m.state !== state) m.state = 'MIXED';
      if (!m.ports.includes(e.remote_port)) m.ports.push(e.remote_port);
    }
  }
  const used = new Set<string>();
  for (const e of merged.values()) {
    used.add(e.source);
    used.add(e.target);
  }
  return { nodes: [...outNodes.values()].filter((n) => used.has(n.id)), edges: [...merged.values()] };
}

export function edgeId(e: MapEdge): string {
  return `${e.source}\u0000${e.target}\u0000${e.protocol}\u0000${e.remote_port}\u0000${e.state ?? ''}`;
}

/** Longest name drawn on the map; the details show it whole. Cut here rather than by
 *  the graph library's ellipsis, which measures each label letter by letter. */
const MAX_LABEL = 32;

function cut(text: string): string {
  const chars = Array.from(text);
  return chars.length > MAX_LABEL ? `${chars.slice(0, MAX_LABEL - 1).join('')}…` : text;
}

/** What a node is called on the map. */
export function labelOf(n: MapNode): string {
  if (n.kind === 'process') return n.pid === null ? cut(n.name) : `${cut(n.name)} (${n.pid})`;
  if (n.kind === 'host') return `${cut(n.name)}: unknown process`;
  return n.name;
}

/** Whether a search matches a node: name, host, pid or address, case ignored. */
export function matchesSearch(n: DrawnNode, query: string): boolean {
  const q = query.trim().toLowerCase();
  if (q === '') return false;
  return (
    n.label.toLowerCase().includes(q) ||
    (n.hostname ?? '').toLowerCase().includes(q) ||
    (n.node?.address ?? '').toLowerCase().includes(q) ||
    String(n.node?.pid ?? '') === q
  );
}

export interface Point {
  x: number;
  y: number;
}

/** Distance between neighbours on a spiral. */
const SPACING = 44;
/** The golden angle: consecutive slots never line up. */
const GOLDEN = Math.PI * (3 - Math.sqrt(5));

function spiral(slot: number, spacing = SPACING): Point {
  const r = spacing * Math.sqrt(slot + 0.5);
  const a = slot * GOLDEN;
  return { x: r * Math.cos(a), y: r * Math.sin(a) };
}

/** The radius a spiral of `n` slots needs. */
function spiralRadius(n: number, spacing = SPACING): number {
  return spacing * Math.sqrt(n + 0.5) + spacing;
}

/** Slots handed out in order, freed slots first. */
class Slots {
  private bySlot = new Map<string, number>();
  private free: number[] = [];
  private next = 0;

  get size(): number {
    return this.bySlot.size;
  }

  /** Keeps the slots of `ids`, frees the others, and gives new ids the lowest free slots. */
  sync(ids: string[]): void {
    const keep = new Set(ids);
    for (const [id, slot] of this.bySlot) {
      if (!keep.has(id)) {
        this.bySlot.delete(id);
        this.free.push(slot);
      }
    }
    this.free.sort((a, b) => b - a);
    for (const id of ids) {
      if (this.bySlot.has(id)) continue;
      this.bySlot.set(id, this.free.pop() ?? this.next++);
    }
  }

  ids(): string[] {
    return [...this.bySlot.keys()];
  }

  slot(id: string): number {
    return this.bySlot.get(id) ?? 0;
  }

  /** Highest slot in use, plus one. */
  get extent(): number {
    let n = 0;
    for (const s of this.bySlot.values()) n = Math.max(n, s + 1);
    return n;
  }
}

/**
 * Positions that stay put: call `place` with each new version of the graph; a node
 * keeps its position for as long as it is in every version. `reset` starts afresh
 * (another grouping, or when the hosts have outgrown their cells).
 */
export class MapLayout {
  private hosts = new Slots();
  private members = new Map<string, Slots>();
  private outside = new Slots();
  private cols = 0;
  private cell = 0;
  private outsideOrigin: Point | null = null;

  reset(): void {
    this.hosts = new Slots();
    this.members = new Map();
    this.outside = new Slots();
    this.cols = 0;
    this.cell = 0;
    this.outsideOrigin = null;
  }

  /** The grid cell of each host (its centre), for drawing host labels. */
  hostCentre(hostname: string): Point {
    const slot = this.hosts.slot(hostname);
    const col = slot % Math.max(this.cols, 1);
    const row = Math.floor(slot / Math.max(this.cols, 1));
    return { x: col * this.cell, y: row * this.cell };
  }

  place(nodes: DrawnNode[]): Map<string, Point> {
    const perHost = new Map<string, string[]>();
    const outside: string[] = [];
    for (const n of nodes) {
      if (n.hostname === null) outside.push(n.id);
      else {
        const list = perHost.get(n.hostname);
        if (list) list.push(n.id);
        else perHost.set(n.hostname, [n.id]);
      }
    }
    const hostnames = [...perHost.keys()].sort(naturalCompare);
    const biggest = Math.max(1, ...[...perHost.values()].map((l) => l.length));
    // The grid is sized on the first version; a host that outgrows its cell later is
    // drawn overlapping rather than moving every other host.
    if (this.cols === 0 && hostnames.length > 0) {
      this.cols = Math.max(1, Math.ceil(Math.sqrt(hostnames.length)));
      this.cell = Math.max(220, 2 * spiralRadius(biggest) + SPACING);
    }
    // Hosts that leave keep their cell (they may be back with the next snapshot).
    const known = new Set([...perHost.keys()]);
    this.hosts.sync([...this.hosts.ids().filter((h) => !known.has(h)), ...hostnames]);
    const out = new Map<string, Point>();
    for (const h of hostnames) {
      let slots = this.members.get(h);
      if (!slots) {
        slots = new Slots();
        this.members.set(h, slots);
      }
      const ids = perHost.get(h)!;
      // The host's own node (one per host when collapsed) sits in the middle.
      slots.sync(ids.filter((id) => !id.startsWith('host:')));
      const centre = this.hostCentre(h);
      for (const id of ids) {
        if (id.startsWith('host:') && ids.length === 1) out.set(id, centre);
        else if (id.startsWith('host:')) out.set(id, { x: centre.x, y: centre.y - this.cell / 2 + SPACING / 2 });
        else {
          const p = spiral(slots.slot(id));
          out.set(id, { x: centre.x + p.x, y: centre.y + p.y });
        }
      }
    }
    this.outside.sync(outside);
    // Beside the grid as it was first drawn; more addresses later spiral outwards.
    if (this.outsideOrigin === null && (hostnames.length > 0 || outside.length > 0)) {
      const cols = Math.max(this.cols, 1);
      const rows = Math.ceil(Math.max(this.hosts.extent, 1) / cols);
      const radius = spiralRadius(this.outside.extent);
      this.outsideOrigin = { x: cols * this.cell - this.cell / 2 + radius + SPACING, y: ((rows - 1) * this.cell) / 2 };
    }
    const origin = this.outsideOrigin ?? { x: 0, y: 0 };
    for (const id of outside) {
      const p = spiral(this.outside.slot(id));
      out.set(id, { x: origin.x + p.x, y: origin.y + p.y });
    }
    return out;
  }
}

