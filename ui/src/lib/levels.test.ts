// Thresholds and tones: busy cores, highlighted processes, status colours.

import { describe, expect, it } from 'vitest';
import { STATUS_TONE, isHot, level, loadPercent } from './levels';
import { proc } from './testing/fixtures';

describe('levels', () => {
  it('colours utilisation green, yellow, red', () => {
    expect(level(0)).toBe('ok');
    expect(level(49.9)).toBe('ok');
    expect(level(50)).toBe('warn');
    expect(level(79.9)).toBe('warn');
    expect(level(80)).toBe('danger');
    expect(level(350)).toBe('danger');
  });
  it('highlights busy or big processes', () => {
    expect(isHot(proc(1, null, { cpu_percent: 50 }))).toBe(true);
    expect(isHot(proc(1, null, { memory_percent: 10 }))).toBe(true);
    expect(isHot(proc(1, null, { cpu_percent: 49, memory_percent: 9 }))).toBe(false);
  });
  it('gives stopped and zombie processes their own tones', () => {
    expect(STATUS_TONE.stopped).toBe('violet');
    expect(STATUS_TONE.zombie).toBe('danger');
    expect(STATUS_TONE.running).toBe('ok');
  });
  it('turns load into a per-core percent', () => {
    expect(loadPercent(2, 4)).toBe(50);
    expect(loadPercent(1, 0)).toBe(0);
  });
});
