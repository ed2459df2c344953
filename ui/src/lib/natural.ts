// Natural order of host names: runs of digits compare as numbers, so `web-2` comes
// before `web-10` (text order puts `web-10`, `web-100` and `web-101` first). Letters
// compare without case; a tie falls back to plain text order, so the order is total and
// stable (`web-01` and `web-1` never swap between two sorts).

const COLLATOR = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

/** Compares two names in natural order (for `Array.prototype.sort`). */
export function naturalCompare(a: string, b: string): number {
  return COLLATOR.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** A copy of `items` in natural order of `name(item)`. */
export function naturalSort<T>(items: readonly T[], name: (item: T) => string): T[] {
  return [...items].sort((x, y) => naturalCompare(name(x), name(y)));
}
