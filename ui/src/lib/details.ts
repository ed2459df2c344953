// Process details (threads, open files, limits, ...) as the drawer shows them: the
// sentences and summaries, apart from the component so they can be tested alone.

import type { ContainerRef, FileKind, OpenFile, ProcessDetails, ResourceLimit } from './model';
import { ApiError } from './transport';

/** How a limit reads: `1,024 / 524,288 files`, `unlimited`, `8 MiB / unlimited`. */
export function formatLimit(limit: ResourceLimit): string {
  const one = (v: number | null) => (v === null ? 'unlimited' : v.toLocaleString('en-US'));
  const unit = limit.unit && limit.soft !== null ? ` ${limit.unit}` : '';
  if (limit.soft === limit.hard) return `${one(limit.soft)}${limit.soft === null ? '' : unit}`;
  return `${one(limit.soft)} / ${one(limit.hard)}${unit}`;
}

/** The limits worth a line of their own, in this order: the rest sit behind "all". */
const KEY_LIMITS = ['Max open files', 'Max processes', 'Max address space', 'Max stack size', 'Max core file size'];

/** The limits people look for first. */
export function keyLimits(limits: ResourceLimit[]): ResourceLimit[] {
  return KEY_LIMITS.flatMap((name) => limits.filter((l) => l.name === name));
}

/** Descriptors counted by kind, in a fixed order, kinds with none left out:
 *  `[['file', 3], ['socket', 1]]`. */
export function countByKind(files: OpenFile[]): [FileKind, number][] {
  const order: FileKind[] = ['file', 'socket', 'pipe', 'anon_inode', 'other'];
  return order.map((k): [FileKind, number] => [k, files.filter((f) => f.kind === k).length]).filter(([, n]) => n > 0);
}

/** The open files' count and kinds in a line: `5 · 2 file · 2 socket · 1 pipe`. */
export function filesSummary(files: OpenFile[], total: number | null): string {
  const kinds = countByKind(files).map(([kind, n]) => `${n} ${kind.replace('_', ' ')}`);
  return [total === null ? '—' : total.toLocaleString('en-US'), ...kinds].join(' · ');
}

/** Control group paths in a line, each once (cgroup v1 repeats one per controller). */
export function cgroupText(paths: string[]): string {
  return [...new Set(paths)].join(' · ') || '/';
}

/** What a descriptor is, for its line: a socket's addresses when known, else its target. */
export function fileText(file: OpenFile): string {
  return file.socket ?? file.target;
}

/** `and 12 more` when a list was cut, else null. */
export function moreText(shown: number, total: number | null): string | null {
  return total !== null && total > shown ? `and ${(total - shown).toLocaleString('en-US')} more not listed` : null;
}

/** A container as one line: `docker web · 3f4e8a1c9b2d` (ids shortened to 12, like
 *  docker ps; the name first when it is known and not the id itself). */
export function containerText(c: ContainerRef): string {
  const id = /^[0-9a-f]{13,}$/.test(c.id) ? c.id.slice(0, 12) : c.id;
  const name = c.name && c.name !== c.id ? `${c.name} · ` : '';
  const pod = c.pod ? ` · pod ${c.pod}` : '';
  return `${c.runtime.replace('_', '-')} ${name}${id}${pod}`;
}

/** Why details could not be shown, in a sentence for the drawer. */
export function detailsError(e: unknown): string {
  if (e instanceof ApiError) {
    switch (e.status) {
      case 404:
        return `This process is gone: ${e.message}`;
      case 409:
        return `The pid now names another process: ${e.message}`;
      case 429:
        return e.message;
      case 501:
        return `Not available for this host: ${e.message}`;
      case 503:
        return `The host cannot be reached: ${e.message}`;
      default:
        return e.message;
    }
  }
  return e instanceof Error ? e.message : String(e);
}

/** The parts that could not be read, as one sentence, or null when all were. */
export function unavailableText(details: ProcessDetails): string | null {
  if (details.unavailable.length === 0) return null;
  const parts = details.unavailable.map((u) => u.part.replace('_', ' '));
  const reasons = [...new Set(details.unavailable.map((u) => u.reason))];
  return `Not shown: ${parts.join(', ')} (${reasons.join('; ')}).`;
}
