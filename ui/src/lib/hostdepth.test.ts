import { describe, expect, it } from 'vitest';
import { diskTotals, formatCelsius, hottest, inodesPercent, usedPercent } from './hostdepth';
import type { DiskSample, FilesystemSample } from './model';

const fs = (used: number, free: number, inodes: [number, number] | null = null): FilesystemSample => ({
  mount_point: '/',
  fs_type: 'ext4',
  device: '/dev/vda',
  total_bytes: used + free + 5,
  used_bytes: used,
  free_bytes: free,
  inodes_total: inodes ? inodes[0] : null,
  inodes_free: inodes ? inodes[1] : null,
});

const disk = (name: string, read: number): DiskSample => ({
  name,
  read_bytes_per_sec: read,
  write_bytes_per_sec: read * 2,
  reads_per_sec: 1,
  writes_per_sec: 1,
  busy_percent: 3,
});

describe('the host in depth', () => {
  it('counts use as df does, without the reserved blocks', () => {
    expect(usedPercent(fs(75, 25))).toBe(75);
    expect(usedPercent(fs(0, 0))).toBe(0);
    expect(inodesPercent(fs(1, 1, [100, 40]))).toBe(60);
    expect(inodesPercent(fs(1, 1))).toBeNull();
  });

  it('sums disks without counting stacked devices twice', () => {
    expect(diskTotals({ disks: [disk('sda', 10), disk('nvme0n1', 5), disk('dm-0', 100), disk('md0', 100)] })).toEqual({ read: 15, write: 30 });
    expect(diskTotals({})).toBeNull();
    expect(diskTotals({ disks: [] })).toEqual({ read: 0, write: 0 });
  });

  it('finds the hottest sensor', () => {
    const t = (name: string, celsius: number) => ({ name, celsius, high_celsius: null, critical_celsius: null });
    expect(hottest({ temperatures: [t('a', -3), t('b', 41.5), t('c', 40)] })).toEqual({ name: 'b', celsius: 41.5 });
    expect(hottest({ temperatures: [] })).toBeNull();
    expect(formatCelsius(41.5)).toBe('42 °C');
    expect(formatCelsius(null)).toBe('—');
  });
});
