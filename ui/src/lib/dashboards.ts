// Dashboards people arrange: what the view needs besides the transport. Host patterns
// (`web-*`), series of several hosts or processes on one time axis, a new widget's
// defaults, and reading an exported dashboard back in. The shapes are the collector's
// (`Dashboard`, `DashboardInput`, `Widget` in model.ts); the collector checks every
// dashboard it is sent, so these only help the person get it right the first time.

import type { DashboardInput, Widget } from './model';

/** Columns of the grid (the collector's `GRID_COLUMNS`). */
export const GRID_COLUMNS = 12;
/** The most widgets on one dashboard (the collector's `MAX_WIDGETS`). */
export const MAX_WIDGETS = 64;
/** The most hosts one chart draws: more lines than this are unreadable anyway. */
export const MAX_CHART_HOSTS = 16;

export type WidgetKind = Widget['kind'];

export const WIDGET_KINDS: readonly { kind: WidgetKind; label: string }[] = [
  { kind: 'host_chart', label: 'Host chart' },
  { kind: 'process_chart', label: 'Process chart' },
  { kind: 'process_table', label: 'Process table' },
  { kind: 'top_ports', label: 'Top ports' },
  { kind: 'alerts', label: 'Alerts' },
  { kind: 'network_map', label: 'Network map' },
];

/** A host name pattern: `*` any run of characters, `?` one; compared ignoring case,
 *  as host names are. A pattern without either matches that name only. */
export function hostMatcher(pattern: string): (hostname: string) => boolean {
  const escaped = pattern
    .trim()
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  const re = new RegExp(`^${escaped}$`, 'i');
  return (hostname) => re.test(hostname);
}

export interface TimedValues {
  label: string;
  /** `[seconds since the epoch, value]`, in any order. */
  points: readonly (readonly [number, number | null])[];
}

/** A series' value at each time of a shared axis: `null` is a gap (drawn as one),
 *  `undefined` a time the series has no sample at (another series has), drawn across. */
export type AlignedValue = number | null | undefined;

/** Several series on one time axis: the union of their times. Hosts sample each at its
 *  own instants, so at most times only one series has a point: a hole there is
 *  `undefined`, which the chart draws a line across (as uPlot's own `join` does), while
 *  a series' own `null` stays a gap. Filling holes with `null` drew every host as
 *  scattered dots. */
export function alignSeries(list: readonly TimedValues[]): { x: number[]; series: { label: string; values: AlignedValue[] }[] } {
  const times = new Set<number>();
  for (const s of list) for (const [t] of s.points) times.add(t);
  const x = [...times].sort((a, b) => a - b);
  const index = new Map(x.map((t, i) => [t, i]));
  const series = list.map((s) => {
    const values: AlignedValue[] = new Array(x.length).fill(undefined);
    for (const [t, v] of s.points) values[index.get(t)!] = v;
    return { label: s.label, values };
  });
  return { x, series };
}

/** Points of several processes added up per time (the processes of one group are in
 *  the same snapshots, so their times are the same); a time where none has a value
 *  stays a gap. */
export function sumByTime(lists: readonly (readonly (readonly [number, number | null])[])[]): [number, number | null][] {
  const sums = new Map<number, number | null>();
  for (const list of lists) {
    for (const [t, v] of list) {
      const before = sums.get(t) ?? null;
      sums.set(t, v === null ? before : (before ?? 0) + v);
    }
  }
  return [...sums.entries()].sort((a, b) => a[0] - b[0]);
}

/** A new widget of `kind`, full width under the others, on `host` where it needs one. */
export function newWidget(kind: WidgetKind, widgets: readonly Widget[], host: string): Widget {
  const y = widgets.reduce((bottom, w) => Math.max(bottom, w.y + w.h), 0);
  const at = { x: 0, y, w: 6, h: 4 };
  switch (kind) {
    case 'host_chart':
      return { kind, ...at, hosts: host || '*', metric: 'cpu_percent' };
    case 'process_chart':
      return { kind, ...at, host, process: 'procyon', metric: 'cpu_percent' };
    case 'process_table':
      return { kind, ...at, w: 12, h: 6, host, filter: 'cpu>1', limit: 20 };
    case 'top_ports':
      return { kind, ...at, w: 4, host, limit: 10 };
    case 'alerts':
      return { kind, ...at };
    case 'network_map':
      return { kind, ...at, w: 12, h: 8, collapsed: false };
  }
}

/** The fields the collector adds to a dashboard it answers with. */
const ANSWER_ONLY = ['id', 'owner', 'updated_at', 'read_only'];

/** An exported dashboard: what the collector takes back, pretty-printed. */
export function exportText(dashboard: DashboardInput & Partial<Record<string, unknown>>): string {
  const copy: Record<string, unknown> = { ...dashboard };
  for (const key of ANSWER_ONLY) delete copy[key];
  return JSON.stringify(copy, null, 2) + '\n';
}

/** Reads an exported dashboard for import: a clear message for text that is not one.
 *  The collector checks it in full when it is saved. An import is private whatever the
 *  file says: sharing is for the person importing to decide. */
export function parseImport(text: string): DashboardInput {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error('The file is not JSON.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('The file is not a dashboard (a JSON object with `name` and `widgets`).');
  }
  const v = value as Record<string, unknown>;
  if (typeof v.name !== 'string' || !Array.isArray(v.widgets)) {
    throw new Error('The file is not a dashboard: it needs a `name` and a `widgets` list.');
  }
  const copy: Record<string, unknown> = { ...v };
  for (const key of ANSWER_ONLY) delete copy[key];
  copy.shared = 'private';
  copy.shared_with = [];
  return copy as unknown as DashboardInput;
}

/** One setting of a widget, as the settings form shows it. */
export interface SettingField {
  name: string;
  label: string;
  /** `bool` is shown as a choice of two (`options`, values `false` and `true`). */
  type: 'text' | 'host' | 'number' | 'select' | 'bool';
  options?: readonly { value: string; label: string }[];
  optional?: boolean;
  hint?: string;
}

const HOST_METRICS = [
  { value: 'cpu_percent', label: 'CPU' },
  { value: 'memory_used_bytes', label: 'Memory in use' },
  { value: 'process_count', label: 'Processes' },
  { value: 'sent_bytes_per_sec', label: 'Sent per second' },
  { value: 'received_bytes_per_sec', label: 'Received per second' },
] as const;

const PROCESS_METRICS = [
  { value: 'cpu_percent', label: 'CPU' },
  { value: 'rss_bytes', label: 'Memory (resident)' },
] as const;

const TITLE: SettingField = { name: 'title', label: 'Title', type: 'text', optional: true, hint: 'Blank: made from the settings' };

/** The settings of each kind of widget, in the order the form shows them. */
export const SETTING_FIELDS: Record<WidgetKind, readonly SettingField[]> = {
  host_chart: [
    TITLE,
    { name: 'hosts', label: 'Hosts', type: 'host', hint: 'A name, or a pattern such as web-*' },
    { name: 'metric', label: 'Figure', type: 'select', options: HOST_METRICS },
  ],
  process_chart: [
    TITLE,
    { name: 'host', label: 'Host', type: 'host' },
    { name: 'process', label: 'Process name', type: 'text', hint: 'Every process of this name, added up' },
    { name: 'metric', label: 'Figure', type: 'select', options: PROCESS_METRICS },
  ],
  process_table: [
    TITLE,
    { name: 'host', label: 'Host', type: 'host' },
    { name: 'filter', label: 'Filter', type: 'text', optional: true, hint: 'As in the process explorer: cpu>5 user:root' },
    { name: 'limit', label: 'Rows', type: 'number' },
  ],
  top_ports: [TITLE, { name: 'host', label: 'Host', type: 'host' }, { name: 'limit', label: 'Ports', type: 'number' }],
  alerts: [TITLE, { name: 'hosts', label: 'Hosts', type: 'host', optional: true, hint: 'Blank: every host; or a pattern' }],
  network_map: [
    TITLE,
    { name: 'hosts', label: 'Hosts', type: 'host', optional: true, hint: 'Blank: every host; or names and patterns: web-*, db-1' },
    {
      name: 'collapsed',
      label: 'Draw',
      type: 'bool',
      options: [
        { value: 'false', label: 'Processes, grouped by host' },
        { value: 'true', label: 'One node per host' },
      ],
    },
  ],
};

/** A widget from the settings form's values: blank optional fields left out, numbers
 *  read as numbers. The grid place is kept. */
export function widgetFromForm(widget: Widget, values: Record<string, string>): Widget {
  const out: Record<string, unknown> = { kind: widget.kind, x: widget.x, y: widget.y, w: widget.w, h: widget.h };
  for (const field of SETTING_FIELDS[widget.kind]) {
    const raw = (values[field.name] ?? '').trim();
    if (raw === '' && field.optional) {
      if (field.name === 'filter') out.filter = '';
      continue;
    }
    out[field.name] = field.type === 'number' ? Number(raw) : field.type === 'bool' ? raw === 'true' : raw;
  }
  return out as unknown as Widget;
}

/** The settings form's values of a widget. */
export function formFromWidget(widget: Widget): Record<string, string> {
  const values: Record<string, string> = {};
  const fields = widget as unknown as Record<string, unknown>;
  for (const field of SETTING_FIELDS[widget.kind]) {
    const v = fields[field.name];
    values[field.name] = v === undefined || v === null ? '' : String(v);
  }
  return values;
}
