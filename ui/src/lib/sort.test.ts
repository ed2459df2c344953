// Sorting the process table by every column, missing values last, stable ties.

import { describe, expect, it } from 'vitest';
import type { ProcessColumn } from './sort';
import { comparator, defaultDirection, sortProcesses, toggleSort } from './sort';
import { proc } from './testing/fixtures';

const list = [
  proc(3, 1, {
    name: 'beta',
    user: 'root',
    status: 'running',
    cpu_percent: 50,
    memory_percent: 1,
    rss_bytes: 300,
    virtual_bytes: 10,
    threads: 4,
    disk_read_bytes_per_sec: 10,
    disk_write_bytes_per_sec: null,
    start_time: '2026-01-01T00:00:03Z',
    cmd: 'b',
  }),
  proc(1, null, {
    name: 'Alpha',
    user: null,
    status: 'sleeping',
    cpu_percent: 5,
    memory_percent: 3,
    rss_bytes: 100,
    virtual_bytes: 30,
    threads: null,
    disk_read_bytes_per_sec: 30,
    disk_write_bytes_per_sec: 5,
    start_time: '2026-01-01T00:00:01Z',
    cmd: '',
  }),
  proc(2, 1, {
    name: 'gamma',
    user: 'alice',
    status: 'zombie',
    cpu_percent: 20,
    memory_percent: 2,
    rss_bytes: 200,
    virtual_bytes: 20,
    threads: 9,
    disk_read_bytes_per_sec: null,
    disk_write_bytes_per_sec: 1,
    start_time: '2026-01-01T00:00:02Z',
    cmd: 'a',
  }),
];

const pids = (column: ProcessColumn, direction: 'asc' | 'desc') =>
  sortProcesses(list, { column, direction }).map((p) => p.pid);

describe('sortProcesses', () => {
  it.each<[ProcessColumn, number[]]>([
    ['pid', [1, 2, 3]],
    ['name', [1, 3, 2]],
    ['user', [2, 3, 1]],
    ['status', [3, 2, 1]],
    ['cpu', [1, 2, 3]],
    ['memory', [3, 2, 1]],
    ['rss', [1, 2, 3]],
    ['virtual', [3, 2, 1]],
    ['threads', [3, 2, 1]],
    ['read', [3, 1, 2]],
    ['write', [2, 1, 3]],
    ['start', [1, 2, 3]],
    ['cmd', [2, 3, 1]],
    ['subtreeCpu', [1, 2, 3]],
    ['subtreeMemory', [3, 2, 1]],
  ])('sorts by %s ascending', (column, expected) => {
    expect(pids(column, 'asc')).toEqual(expected);
  });

  it('puts missing values last in both directions', () => {
    expect(pids('user', 'desc')).toEqual([3, 2, 1]);
    expect(pids('threads', 'desc')).toEqual([2, 3, 1]);
    expect(pids('read', 'desc')).toEqual([1, 3, 2]);
    expect(pids('cmd', 'desc')).toEqual([3, 2, 1]);
  });

  it('breaks ties by pid, so equal rows do not shuffle', () => {
    const same = [proc(9, null), proc(4, null), proc(7, null)];
    expect(sortProcesses(same, { column: 'cpu', direction: 'desc' }).map((p) => p.pid)).toEqual([4, 7, 9]);
    expect([...same].sort(comparator({ column: 'cpu', direction: 'asc' })).map((p) => p.pid)).toEqual([4, 7, 9]);
  });

  it('uses subtree totals when given', () => {
    const totals = new Map([
      [1, { subtreeCpu: 100, subtreeMemory: 0 }],
      [2, { subtreeCpu: 1, subtreeMemory: 0 }],
      [3, { subtreeCpu: 50, subtreeMemory: 0 }],
    ]);
    expect(sortProcesses(list, { column: 'subtreeCpu', direction: 'desc' }, (pid) => totals.get(pid)).map((p) => p.pid)).toEqual([1, 3, 2]);
  });

  it('does not change its input', () => {
    const before = list.map((p) => p.pid);
    sortProcesses(list, { column: 'cpu', direction: 'desc' });
    expect(list.map((p) => p.pid)).toEqual(before);
  });
});

describe('toggleSort', () => {
  it('flips the same column and starts others in their natural direction', () => {
    expect(toggleSort({ column: 'cpu', direction: 'desc' }, 'cpu')).toEqual({ column: 'cpu', direction: 'asc' });
    expect(toggleSort({ column: 'cpu', direction: 'desc' }, 'name')).toEqual({ column: 'name', direction: 'asc' });
    expect(toggleSort({ column: 'name', direction: 'asc' }, 'rss')).toEqual({ column: 'rss', direction: 'desc' });
    expect(defaultDirection('memory')).toBe('desc');
  });
});
