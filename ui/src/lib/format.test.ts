// Formatting of bytes, rates, percents, counts, durations and times (UTC in tests).

import { describe, expect, it } from 'vitest';
import {
  MISSING,
  formatAgo,
  formatAxisTime,
  formatBytes,
  formatBytesOf,
  formatCompact,
  formatCount,
  formatDateTime,
  formatDuration,
  formatLoad,
  formatPercent,
  formatPerSecond,
  formatRate,
  formatStart,
  formatStatus,
  formatTime,
  isKnownTime,
} from './format';

describe('bytes and rates', () => {
  it('uses binary units with at most three significant digits', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1000)).toBe('0.98 KiB');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(12.3 * 1024 * 1024)).toBe('12.3 MiB');
    expect(formatBytes(150 * 1024 * 1024)).toBe('150 MiB');
    expect(formatBytes(1024 ** 3)).toBe('1.00 GiB');
    expect(formatBytes(5 * 1024 ** 5)).toBe('5.00 PiB');
  });
  it('shows missing values as a dash, never zero', () => {
    expect(formatBytes(null)).toBe(MISSING);
    expect(formatBytes(undefined)).toBe(MISSING);
    expect(formatBytes(Number.NaN)).toBe(MISSING);
    expect(formatRate(null)).toBe(MISSING);
  });
  it('writes a part of a whole with one unit when they share it', () => {
    expect(formatBytesOf(1.5 * 1024 ** 3, 16 * 1024 ** 3)).toBe('1.50 / 16.0 GiB');
    expect(formatBytesOf(512 * 1024 ** 2, 16 * 1024 ** 3)).toBe('512 MiB / 16.0 GiB');
    expect(formatBytesOf(null, 1)).toBe('— / 1 B');
  });
  it('formats rates', () => {
    expect(formatRate(0)).toBe('0 B/s');
    expect(formatRate(2.5 * 1024 * 1024)).toBe('2.50 MiB/s');
  });
});

describe('percents and counts', () => {
  it('formats percents', () => {
    expect(formatPercent(0)).toBe('0.0%');
    expect(formatPercent(12.345)).toBe('12.3%');
    expect(formatPercent(0.04)).toBe('<0.1%');
    expect(formatPercent(250)).toBe('250.0%');
    expect(formatPercent(null)).toBe(MISSING);
    expect(formatPercent(33.333, 0)).toBe('33%');
  });
  it('formats counts', () => {
    expect(formatCount(1234567)).toBe('1,234,567');
    expect(formatCount(2.6)).toBe('3');
    expect(formatCompact(950)).toBe('950');
    expect(formatCompact(12_345)).toBe('12.3K');
    expect(formatCompact(4_560_000)).toBe('4.56M');
    expect(formatCompact(7.89e9)).toBe('7.89G');
    expect(formatPerSecond(3.21)).toBe('3.2/s');
    expect(formatPerSecond(1500)).toBe('1.50K/s');
    expect(formatLoad(0.5)).toBe('0.50');
    expect(formatLoad(10.24)).toBe('10.2');
    expect(formatLoad(123.4)).toBe('123');
    expect(formatLoad(null)).toBe(MISSING);
  });
});

describe('durations and times', () => {
  it('keeps the two largest units', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(45)).toBe('45s');
    expect(formatDuration(723)).toBe('12m 03s');
    expect(formatDuration(3 * 3600 + 12 * 60 + 5)).toBe('3h 12m');
    expect(formatDuration(5 * 86400 + 4 * 3600)).toBe('5d 4h');
    expect(formatDuration(-3)).toBe('0s');
    expect(formatDuration(null)).toBe(MISSING);
  });
  it('formats times in local time (UTC in tests)', () => {
    expect(formatTime('2026-11-21T09:05:07.123Z')).toBe('09:05:07');
    expect(formatDateTime('2026-11-21T09:05:07.123Z')).toBe('2026-11-21 09:05:07');
    expect(formatTime('not a time')).toBe(MISSING);
    expect(formatDateTime('1970-01-01T00:00:00Z')).toBe(MISSING);
    expect(isKnownTime('1970-01-01T00:00:00.000Z')).toBe(false);
    expect(isKnownTime('2026-11-21T09:05:07Z')).toBe(true);
    expect(isKnownTime(null)).toBe(false);
  });
  it('says how long ago', () => {
    const now = Date.parse('2026-11-21T12:00:00Z');
    expect(formatAgo('2026-11-21T12:00:00Z', now)).toBe('just now');
    expect(formatAgo('2026-11-21T11:59:18Z', now)).toBe('42 s ago');
    expect(formatAgo('2026-11-21T11:55:00Z', now)).toBe('5 min ago');
    expect(formatAgo('2026-11-21T09:00:00Z', now)).toBe('3 h ago');
    expect(formatAgo('2026-11-19T12:00:00Z', now)).toBe('2 d ago');
  });
  it('shows a start as a time today and a date before', () => {
    const now = Date.parse('2026-11-21T12:00:00Z');
    expect(formatStart('2026-11-21T08:30:00Z', now)).toBe('08:30:00');
    expect(formatStart('2026-11-01T08:30:00Z', now)).toBe('2026-11-01');
  });
  it('labels time axes as precisely as their span needs', () => {
    const t = Date.parse('2026-11-21T14:03:20Z');
    expect(formatAxisTime(t, 60_000)).toBe('14:03:20');
    expect(formatAxisTime(t, 3600_000)).toBe('14:03');
    expect(formatAxisTime(t, 2 * 86_400_000)).toBe('11-21 14:03');
    expect(formatAxisTime(t, 30 * 86_400_000)).toBe('11-21');
  });
  it('spells statuses as words', () => {
    expect(formatStatus('disk_sleep')).toBe('disk sleep');
    expect(formatStatus('running')).toBe('running');
  });
});
