// Thresholds and colour tones: when a core or a figure counts as busy, which process
// statuses need attention, and which processes are "high-resource" rows. In one place
// so the bars, badges and highlighted rows agree.

import type { ProcessSample, ProcessStatus } from './model';

export type Level = 'ok' | 'warn' | 'danger';

/** A utilisation's colour: green below 50 %, yellow below 80 %, red from 80 %. */
export function level(percent: number): Level {
  if (percent >= 80) return 'danger';
  if (percent >= 50) return 'warn';
  return 'ok';
}

export type Tone = 'ok' | 'neutral' | 'faint' | 'warn' | 'violet' | 'danger';

/** Colour of a status badge: running green, waiting on disk yellow, stopped violet,
 *  zombie and dead red, the idle and sleeping majority quiet. */
export const STATUS_TONE: Record<ProcessStatus, Tone> = {
  running: 'ok',
  sleeping: 'neutral',
  disk_sleep: 'warn',
  stopped: 'violet',
  tracing_stop: 'violet',
  zombie: 'danger',
  dead: 'danger',
  idle: 'faint',
  parked: 'faint',
  waking: 'ok',
  unknown: 'neutral',
};

/** CPU share (of one core) from which a process row is highlighted. */
export const HOT_CPU_PERCENT = 50;
/** Memory share from which a process row is highlighted. */
export const HOT_MEMORY_PERCENT = 10;

/** A process worth a second look: busy CPU or a big share of memory. */
export function isHot(p: ProcessSample): boolean {
  return (p.cpu_percent ?? 0) >= HOT_CPU_PERCENT || (p.memory_percent ?? 0) >= HOT_MEMORY_PERCENT;
}

/** Load average per core, as a utilisation-like percent for colouring. */
export function loadPercent(load: number, cores: number): number {
  return cores > 0 ? (load / cores) * 100 : 0;
}
