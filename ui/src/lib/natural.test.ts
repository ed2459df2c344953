import { describe, expect, it } from 'vitest';
import { naturalCompare, naturalSort } from './natural';

describe('natural order', () => {
  it('puts web-2 before web-10 and web-100', () => {
    const names = ['web-10', 'web-100', 'web-2', 'web-101', 'web-1', 'db-3', 'web-20'];
    expect([...names].sort(naturalCompare)).toEqual(['db-3', 'web-1', 'web-2', 'web-10', 'web-20', 'web-100', 'web-101']);
  });

  it('compares every run of digits, ignores case, and is total', () => {
    expect(naturalCompare('rack2-node10', 'rack10-node2')).toBeLessThan(0);
    expect(naturalCompare('rack2-node10', 'rack2-node9')).toBeGreaterThan(0);
    expect(naturalCompare('Web-2', 'web-10')).toBeLessThan(0);
    // Equal to the collator, still ordered: the sort never swaps them between runs.
    expect(naturalCompare('web-01', 'web-1')).not.toBe(0);
    expect(naturalCompare('web-1', 'web-01')).toBe(-naturalCompare('web-01', 'web-1'));
    expect(naturalCompare('a', 'a')).toBe(0);
  });

  it('sorts objects by a name', () => {
    const hosts = [{ n: 'h-11' }, { n: 'h-9' }, { n: 'h-100' }];
    expect(naturalSort(hosts, (h) => h.n).map((h) => h.n)).toEqual(['h-9', 'h-11', 'h-100']);
  });
});
