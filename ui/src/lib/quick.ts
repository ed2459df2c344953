// The quick view's figures from one live snapshot: CPU per core, memory, the network's
// receive and send rates, and the five processes using the most CPU. Plain functions,
// cheap enough for every snapshot (one pass over the processes, no sort of them all).

import type { ProcessSample, Snapshot } from './model';

export interface QuickProcess {
  pid: number;
  /** As the machine reported it: shown as text only. */
  name: string;
  cpu: number;
  rssBytes: number;
}

export interface QuickFigures {
  hostname: string;
  takenAt: string;
  cpuTotal: number;
  /** Each core, 0-100. */
  cores: number[];
  memory: { usedBytes: number; totalBytes: number; percent: number };
  swap: { usedBytes: number; totalBytes: number };
  /** Bytes per second, all interfaces but loopback; `null` when not known. */
  receivedPerSec: number | null;
  sentPerSec: number | null;
  top: QuickProcess[];
}

const finite = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n);
const percent = (n: unknown) => (finite(n) ? Math.min(100, Math.max(0, n)) : 0);

/** Ranks a before b: more CPU, then more memory, then the lower pid (stable order for
 *  processes that tie, so the list does not flicker). */
function before(a: ProcessSample, b: ProcessSample): boolean {
  const ca = finite(a.cpu_percent) ? a.cpu_percent : 0;
  const cb = finite(b.cpu_percent) ? b.cpu_percent : 0;
  if (ca !== cb) return ca > cb;
  const ra = a.rss_bytes ?? 0;
  const rb = b.rss_bytes ?? 0;
  if (ra !== rb) return ra > rb;
  return a.pid < b.pid;
}

/** The `n` processes using the most CPU, most first. */
export function topByCpu(processes: readonly ProcessSample[], n = 5): QuickProcess[] {
  const best: ProcessSample[] = [];
  for (const p of processes) {
    if (best.length === n && !before(p, best[n - 1])) continue;
    let i = Math.min(best.length, n - 1);
    if (best.length < n) best.push(p);
    // Insertion into a list of at most n.
    while (i > 0 && before(p, best[i - 1])) {
      best[i] = best[i - 1];
      i -= 1;
    }
    best[i] = p;
  }
  return best.map((p) => ({
    pid: p.pid,
    name: String(p.name),
    cpu: finite(p.cpu_percent) ? Math.max(0, p.cpu_percent) : 0,
    rssBytes: finite(p.rss_bytes) ? p.rss_bytes : 0,
  }));
}

/** Receive and send rates: the sampler's own, or, when a snapshot lacks them (an older
 *  or foreign agent), from the byte counters of the previous snapshot of the host. */
export function networkRates(current: Snapshot, previous: Snapshot | null): { received: number | null; sent: number | null } {
  const total = current.network?.total;
  const prev = previous?.network?.total;
  const seconds = previous ? (Date.parse(current.taken_at) - Date.parse(previous.taken_at)) / 1000 : NaN;
  const rate = (own: unknown, now: unknown, before: unknown): number | null => {
    if (finite(own) && own >= 0) return own;
    if (!finite(now) || !finite(before) || !(seconds > 0) || now < before) return null; // a counter reset
    return (now - before) / seconds;
  };
  return {
    received: rate(total?.received_bytes_per_sec, total?.received_bytes, prev?.received_bytes),
    sent: rate(total?.sent_bytes_per_sec, total?.sent_bytes, prev?.sent_bytes),
  };
}

/** Everything the quick view shows, from the newest snapshot (and the one before). */
export function shapeQuick(current: Snapshot, previous: Snapshot | null = null): QuickFigures {
  const mem = current.memory;
  const total = finite(mem.total_bytes) ? mem.total_bytes : 0;
  const used = finite(mem.used_bytes) ? mem.used_bytes : 0;
  const rates = networkRates(current, previous && previous.host.hostname === current.host.hostname ? previous : null);
  return {
    hostname: current.host.hostname,
    takenAt: current.taken_at,
    cpuTotal: percent(current.cpu.total_percent),
    cores: (current.cpu.per_core_percent ?? []).map(percent),
    memory: { usedBytes: used, totalBytes: total, percent: total > 0 ? percent((used / total) * 100) : 0 },
    swap: { usedBytes: finite(mem.swap_used_bytes) ? mem.swap_used_bytes : 0, totalBytes: finite(mem.swap_total_bytes) ? mem.swap_total_bytes : 0 },
    receivedPerSec: rates.received,
    sentPerSec: rates.sent,
    top: topByCpu(current.processes ?? []),
  };
}
