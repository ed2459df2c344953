// The host in depth as the overview and the sparklines show it: filesystems' use, the
// disks' I/O taken together, the hottest sensor. The same rules as the collector's
// (`Snapshot::disk_io_bytes_per_sec`, `FilesystemSample::used_percent`), so the cards
// and the history agree.

import type { DiskSample, FilesystemSample, Snapshot } from './model';

/** Share of a filesystem in use, 0-100, as `df` counts it: of what ordinary users can
 *  have (used + free, without the blocks reserved for root). */
export function usedPercent(f: FilesystemSample): number {
  const room = f.used_bytes + f.free_bytes;
  return room > 0 ? (f.used_bytes / room) * 100 : 0;
}

/** Share of a filesystem's inodes in use, 0-100; `null` where it has no fixed number. */
export function inodesPercent(f: FilesystemSample): number | null {
  if (f.inodes_total == null || f.inodes_free == null || f.inodes_total <= 0) return null;
  return ((f.inodes_total - f.inodes_free) / f.inodes_total) * 100;
}

/** Device-mapper and software RAID devices: their I/O is also their member disks'. */
export function isStacked(d: DiskSample): boolean {
  return d.name.startsWith('dm-') || /^md\d+$/.test(d.name);
}

/** The disks' read and write rates together (stacked devices left out), or `null`
 *  when the snapshot did not measure disk I/O. */
export function diskTotals(s: Pick<Snapshot, 'disks'>): { read: number; write: number } | null {
  if (!s.disks) return null;
  let read = 0;
  let write = 0;
  for (const d of s.disks) {
    if (isStacked(d)) continue;
    read += d.read_bytes_per_sec;
    write += d.write_bytes_per_sec;
  }
  return { read, write };
}

/** The hottest sensor, or `null` when there is none. */
export function hottest(s: Pick<Snapshot, 'temperatures'>): { name: string; celsius: number } | null {
  let best: { name: string; celsius: number } | null = null;
  for (const t of s.temperatures ?? []) {
    if (best === null || t.celsius > best.celsius) best = { name: t.name, celsius: t.celsius };
  }
  return best;
}

export function formatCelsius(c: number | null | undefined): string {
  return c == null || !Number.isFinite(c) ? '—' : `${c.toFixed(0)} °C`;
}
