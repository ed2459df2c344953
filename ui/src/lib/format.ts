// Formatting of every figure the dashboard shows: bytes, rates, percents, counts,
// durations and times. One place, so that a value reads the same in a card, a table
// and a chart. Missing values (`null`: the OS could not tell) read as an em dash,
// never as a made-up zero.

export const MISSING = '—';

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** At most three significant digits, so columns of numbers stay narrow and aligned. */
function threeDigits(value: number): string {
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** Bytes in binary units: `0 B`, `512 B`, `1.50 KiB`, `12.3 MiB`, `1.00 GiB`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes == null || !Number.isFinite(bytes)) return MISSING;
  const negative = bytes < 0;
  let value = Math.abs(bytes);
  let unit = 0;
  // Switch at 1000 rather than 1024 so no figure ever needs four digits.
  while (value >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = unit === 0 ? value.toFixed(0) : threeDigits(value);
  return `${negative ? '-' : ''}${text} ${BYTE_UNITS[unit]}`;
}

/** A byte rate: `1.20 MiB/s`. */
export function formatRate(bytesPerSec: number | null | undefined): string {
  if (bytesPerSec == null || !Number.isFinite(bytesPerSec)) return MISSING;
  return `${formatBytes(bytesPerSec)}/s`;
}

/** A percent with one decimal: `12.3%`. Tiny non-zero values do not round to a
 *  misleading `0.0%`. */
export function formatPercent(percent: number | null | undefined, digits = 1): string {
  if (percent == null || !Number.isFinite(percent)) return MISSING;
  if (percent > 0 && percent < 0.1 && digits === 1) return '<0.1%';
  return `${percent.toFixed(digits)}%`;
}

const COUNT = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A whole count with thousands separators: `12,345`. */
export function formatCount(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return MISSING;
  return COUNT.format(Math.round(n));
}

/** A large count made short: `950`, `12.3K`, `4.56M`, `7.89G`. */
export function formatCompact(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return MISSING;
  const abs = Math.abs(n);
  const sign = n < 0 ? '-' : '';
  if (abs < 1000) return `${sign}${Number.isInteger(abs) ? abs : abs.toFixed(1)}`;
  const units = ['K', 'M', 'G', 'T'];
  let value = abs;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${sign}${threeDigits(value)}${units[unit]}`;
}

/** A per-second count: `12.3K/s`. */
export function formatPerSecond(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return MISSING;
  return `${formatCompact(n < 10 && n > 0 ? Math.round(n * 10) / 10 : Math.round(n))}/s`;
}

/** A load average: two decimals. */
export function formatLoad(load: number | null | undefined): string {
  if (load == null || !Number.isFinite(load)) return MISSING;
  // Three figures at most, so that a busy machine's "5m 10.24 · 15m 12.61" still fits
  // its card instead of being cut off.
  return load.toFixed(load >= 100 ? 0 : load >= 10 ? 1 : 2);
}

/** A duration in seconds, its two largest units: `45s`, `12m 03s`, `3h 12m`, `5d 4h`. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds)) return MISSING;
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const pad = (v: number) => String(v).padStart(2, '0');
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${pad(m)}m`;
  if (m > 0) return `${m}m ${pad(s)}s`;
  return `${s}s`;
}

/** A time, or an invalid date for what is not a known time. The Unix epoch itself
 *  counts as unknown: uploads in the short format carry no start times and arrive
 *  with zero there, and no process or snapshot of interest dates from 1970. */
function parse(time: string | number | Date): Date {
  const d = time instanceof Date ? time : new Date(time);
  return d.getTime() === 0 ? new Date(Number.NaN) : d;
}

/** Whether a time is known (not missing, not the epoch placeholder). */
export function isKnownTime(time: string | number | Date | null | undefined): boolean {
  return time != null && !Number.isNaN(parse(time).getTime());
}

const pad2 = (v: number) => String(v).padStart(2, '0');

/** Local wall-clock time: `14:03:22`. */
export function formatTime(time: string | number | Date | null | undefined): string {
  if (time == null) return MISSING;
  const d = parse(time);
  if (Number.isNaN(d.getTime())) return MISSING;
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** Local date: `2026-11-21`. */
export function formatDate(time: string | number | Date | null | undefined): string {
  if (time == null) return MISSING;
  const d = parse(time);
  if (Number.isNaN(d.getTime())) return MISSING;
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

/** Local date and time: `2026-11-21 14:03:22`. ISO-like, so it sorts and reads the
 *  same everywhere. */
export function formatDateTime(time: string | number | Date | null | undefined): string {
  if (time == null) return MISSING;
  const d = parse(time);
  if (Number.isNaN(d.getTime())) return MISSING;
  return `${formatDate(d)} ${formatTime(d)}`;
}

/** How long ago: `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`. */
export function formatAgo(time: string | number | Date | null | undefined, now: number = Date.now()): string {
  if (time == null) return MISSING;
  const t = parse(time).getTime();
  if (Number.isNaN(t)) return MISSING;
  const s = Math.round((now - t) / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A process start: the time of day when it started within the last 24 h, else the
 *  date. Short enough for a table column; the full time goes in a tooltip. */
export function formatStart(time: string | null | undefined, now: number = Date.now()): string {
  if (time == null) return MISSING;
  const d = parse(time);
  if (Number.isNaN(d.getTime())) return MISSING;
  if (now - d.getTime() < 86_400_000) return formatTime(d);
  return formatDate(d);
}

/** Process status as people say it: `disk_sleep` → `disk sleep`. */
export function formatStatus(status: string): string {
  return status.replace(/_/g, ' ');
}

/** A part and its whole in one unit when they share it: `1.14 / 23.5 GiB`. */
export function formatBytesOf(part: number | null | undefined, whole: number | null | undefined): string {
  const a = formatBytes(part);
  const b = formatBytes(whole);
  if (a === MISSING || b === MISSING) return `${a} / ${b}`;
  const [av, au] = a.split(' ');
  const [bv, bu] = b.split(' ');
  return au === bu ? `${av} / ${bv} ${bu}` : `${a} / ${b}`;
}

/** A time axis label, as precise as the span shown needs: `14:03:20` within minutes,
 *  `14:03` within a day, `11-21 14:00` within days, `11-21` beyond. */
export function formatAxisTime(ms: number, spanMs: number): string {
  const d = new Date(ms);
  const date = `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  if (spanMs > 4 * 86_400_000) return date;
  if (spanMs > 86_400_000) return `${date} ${hm}`;
  if (spanMs < 5 * 60_000) return `${hm}:${pad2(d.getSeconds())}`;
  return hm;
}
