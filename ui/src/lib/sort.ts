// Sorting of the process table by any column, in either direction. Missing values
// (`null`) always sort last, whichever the direction, and ties fall back to the pid so
// that rows do not shuffle between two updates with equal values.

import { containerLabel } from './containers';
import type { ProcessSample, ProcessStatus } from './model';

export type ProcessColumn =
  | 'pid'
  | 'name'
  | 'user'
  | 'container'
  | 'status'
  | 'cpu'
  | 'memory'
  | 'rss'
  | 'virtual'
  | 'threads'
  | 'read'
  | 'write'
  | 'start'
  | 'cmd'
  | 'subtreeCpu'
  | 'subtreeMemory'
  | 'gpu'
  | 'gpuMemory';

export type Direction = 'asc' | 'desc';

export interface SortState {
  column: ProcessColumn;
  direction: Direction;
}

/** Order of statuses: the ones that need attention before the quiet ones. */
const STATUS_RANK: Record<ProcessStatus, number> = {
  running: 0,
  disk_sleep: 1,
  waking: 2,
  stopped: 3,
  tracing_stop: 4,
  zombie: 5,
  dead: 6,
  sleeping: 7,
  idle: 8,
  parked: 9,
  unknown: 10,
};

/** Totals of a process's subtree, for the tree view's columns. */
export interface SubtreeTotals {
  subtreeCpu: number;
  subtreeMemory: number;
}

type Value = number | string | null;

/** The value a column sorts by. Strings are lower-cased once here, not per comparison. */
export function sortValue(
  column: ProcessColumn,
  p: ProcessSample,
  totals?: (pid: number) => SubtreeTotals | undefined,
): Value {
  switch (column) {
    case 'pid':
      return p.pid;
    case 'name':
      return p.name.toLowerCase();
    case 'user':
      return p.user == null ? null : p.user.toLowerCase();
    case 'container':
      return p.container ? containerLabel(p.container).toLowerCase() : null;
    case 'status':
      return STATUS_RANK[p.status] ?? 99;
    case 'cpu':
      return p.cpu_percent;
    case 'memory':
      return p.memory_percent;
    case 'rss':
      return p.rss_bytes;
    case 'virtual':
      return p.virtual_bytes;
    case 'threads':
      return p.threads;
    case 'read':
      return p.disk_read_bytes_per_sec;
    case 'write':
      return p.disk_write_bytes_per_sec;
    case 'start':
      return p.start_time === null ? null : Date.parse(p.start_time);
    case 'cmd':
      return p.cmd === '' ? null : p.cmd.toLowerCase();
    case 'subtreeCpu':
      return totals?.(p.pid)?.subtreeCpu ?? p.cpu_percent;
    case 'subtreeMemory':
      return totals?.(p.pid)?.subtreeMemory ?? p.memory_percent;
    case 'gpu':
      return p.gpu_percent ?? null;
    case 'gpuMemory':
      return p.gpu_memory_bytes ?? null;
  }
}

function compareValues(a: Value, b: Value, direction: Direction): number {
  if (a === b) return 0;
  if (a == null || (typeof a === 'number' && Number.isNaN(a))) return 1;
  if (b == null || (typeof b === 'number' && Number.isNaN(b))) return -1;
  const order = a < b ? -1 : a > b ? 1 : 0;
  return direction === 'asc' ? order : -order;
}

/** A comparator for `Array.prototype.sort`. */
export function comparator(
  sort: SortState,
  totals?: (pid: number) => SubtreeTotals | undefined,
): (a: ProcessSample, b: ProcessSample) => number {
  return (a, b) =>
    compareValues(sortValue(sort.column, a, totals), sortValue(sort.column, b, totals), sort.direction) ||
    a.pid - b.pid;
}

/** A sorted copy. Values are computed once per process (a decorate-sort-undecorate),
 *  which keeps sorting 2,000 rows by name or start time well under a millisecond. */
export function sortProcesses(
  processes: readonly ProcessSample[],
  sort: SortState,
  totals?: (pid: number) => SubtreeTotals | undefined,
): ProcessSample[] {
  const decorated = processes.map((p) => ({ p, v: sortValue(sort.column, p, totals) }));
  decorated.sort((x, y) => compareValues(x.v, y.v, sort.direction) || x.p.pid - y.p.pid);
  return decorated.map((d) => d.p);
}

/** The direction a column starts in when first clicked: biggest first for figures,
 *  A to Z for text. */
export function defaultDirection(column: ProcessColumn): Direction {
  return column === 'pid' ||
    column === 'name' ||
    column === 'user' ||
    column === 'container' ||
    column === 'cmd' ||
    column === 'status'
    ? 'asc'
    : 'desc';
}

/** The sort after a click on a column's header: the same column flips, another one
 *  starts in its natural direction. */
export function toggleSort(current: SortState, column: ProcessColumn): SortState {
  if (current.column === column) return { column, direction: current.direction === 'asc' ? 'desc' : 'asc' };
  return { column, direction: defaultDirection(column) };
}
