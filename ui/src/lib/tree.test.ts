// The process tree: links, subtree totals, cycles, subtrees, and the rows shown.

import { describe, expect, it } from 'vitest';
import { proc } from './testing/fixtures';
import { ancestors, buildForest, flattenTree, parentPids, subtreePids } from './tree';

// 1 ─┬─ 10 ─┬─ 100
//    │      └─ 101
//    └─ 20
// 2 (parent 999 is not in the list: a root)
const sample = [
  proc(1, null, { cpu_percent: 1, memory_percent: 1, rss_bytes: 100 }),
  proc(2, 999, { cpu_percent: 5 }),
  proc(10, 1, { cpu_percent: 2, memory_percent: 2, rss_bytes: 200 }),
  proc(20, 1, { cpu_percent: 4, memory_percent: 0.5, rss_bytes: 50 }),
  proc(100, 10, { cpu_percent: 10, memory_percent: 3, rss_bytes: 300 }),
  proc(101, 10, { cpu_percent: 20, memory_percent: 4, rss_bytes: 400 }),
];

describe('buildForest', () => {
  it('links parents and children, and orphans become roots', () => {
    const f = buildForest(sample);
    expect(f.roots.map((r) => r.proc.pid)).toEqual([1, 2]);
    expect(f.byPid.get(10)!.children.map((c) => c.proc.pid)).toEqual([100, 101]);
    expect(f.byPid.get(100)!.parent!.proc.pid).toBe(10);
    expect(f.byPid.get(101)!.depth).toBe(2);
  });

  it('adds up cpu and memory over subtrees', () => {
    const f = buildForest(sample);
    const one = f.byPid.get(1)!;
    expect(one.subtreeCpu).toBeCloseTo(37);
    expect(one.subtreeMemory).toBeCloseTo(10.5);
    expect(one.subtreeRss).toBe(1050);
    expect(one.descendants).toBe(4);
    const ten = f.byPid.get(10)!;
    expect(ten.subtreeCpu).toBeCloseTo(32);
    expect(ten.descendants).toBe(2);
    const leaf = f.byPid.get(100)!;
    expect(leaf.subtreeCpu).toBe(10);
    expect(leaf.descendants).toBe(0);
  });

  it('keeps every process once when the data has cycles or self-parents', () => {
    const f = buildForest([proc(1, 2), proc(2, 1), proc(3, 3), proc(4, 1)]);
    expect(f.byPid.size).toBe(4);
    const rows = flattenTree(f);
    expect(rows.map((r) => r.node.proc.pid).sort()).toEqual([1, 2, 3, 4]);
  });

  it('handles deep chains without recursion', () => {
    const chain = Array.from({ length: 50_000 }, (_, i) => proc(i + 1, i === 0 ? null : i));
    const f = buildForest(chain);
    expect(f.byPid.get(50_000)!.depth).toBe(49_999);
    expect(f.byPid.get(1)!.descendants).toBe(49_999);
    expect(flattenTree(f)).toHaveLength(50_000);
  });
});

describe('subtrees', () => {
  it('lists a pid and its descendants, parents first', () => {
    const f = buildForest(sample);
    expect(subtreePids(f, 10)).toEqual([10, 100, 101]);
    expect(subtreePids(f, 1)).toEqual([1, 10, 100, 101, 20]);
    expect(subtreePids(f, 4242)).toEqual([]);
  });
  it('lists ancestors from the root down', () => {
    const f = buildForest(sample);
    expect(ancestors(f, 101).map((n) => n.proc.pid)).toEqual([1, 10]);
    expect(ancestors(f, 1)).toEqual([]);
  });
});

describe('flattenTree', () => {
  it('gives depth-first rows with depths', () => {
    const rows = flattenTree(buildForest(sample));
    expect(rows.map((r) => [r.node.proc.pid, r.depth])).toEqual([
      [1, 0],
      [10, 1],
      [100, 2],
      [101, 2],
      [20, 1],
      [2, 0],
    ]);
    expect(rows[0].hasChildren && rows[0].expanded).toBe(true);
    expect(rows[2].hasChildren).toBe(false);
  });

  it('hides the children of collapsed processes', () => {
    const rows = flattenTree(buildForest(sample), { collapsed: new Set([10]) });
    expect(rows.map((r) => r.node.proc.pid)).toEqual([1, 10, 20, 2]);
    expect(rows[1].expanded).toBe(false);
  });

  it('collapse all leaves only the roots', () => {
    const f = buildForest(sample);
    expect(flattenTree(f, { collapsed: parentPids(f) }).map((r) => r.node.proc.pid)).toEqual([1, 2]);
  });

  it('orders siblings with the comparator', () => {
    const rows = flattenTree(buildForest(sample), { compare: (a, b) => (b.cpu_percent ?? 0) - (a.cpu_percent ?? 0) });
    expect(rows.map((r) => r.node.proc.pid)).toEqual([2, 1, 20, 10, 101, 100]);
  });

  it('shows matches with their ancestors, dimming the ancestors', () => {
    const f = buildForest(sample);
    const rows = flattenTree(f, { match: (p) => p.pid === 101, collapsed: new Set([1, 10]) });
    expect(rows.map((r) => [r.node.proc.pid, r.matched])).toEqual([
      [1, false],
      [10, false],
      [101, true],
    ]);
  });

  it('shows one pid subtree alone with that pid at depth 0', () => {
    const rows = flattenTree(buildForest(sample), { focus: 10 });
    expect(rows.map((r) => [r.node.proc.pid, r.depth])).toEqual([
      [10, 0],
      [100, 1],
      [101, 1],
    ]);
    expect(flattenTree(buildForest(sample), { focus: 4242 })).toEqual([]);
  });

  it('combines a focus with a search without climbing out of the subtree', () => {
    const rows = flattenTree(buildForest(sample), { focus: 10, match: (p) => p.pid === 100 });
    expect(rows.map((r) => r.node.proc.pid)).toEqual([10, 100]);
  });
});
