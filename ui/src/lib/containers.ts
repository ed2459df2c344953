// Containers in the process explorer: how one is named in a cell, and the processes
// grouped by container (one heading per container, then its processes; the processes
// in none come last, under their own heading).

import type { ContainerRef, ProcessSample } from './model';

/** What a container is called in a cell: its name when the runtime gave one, else its
 *  id shortened to 12 like `docker ps` (nspawn and LXC ids are names already). */
export function containerLabel(c: ContainerRef): string {
  if (c.name) return c.name;
  return /^[0-9a-f]{13,}$/.test(c.id) ? c.id.slice(0, 12) : c.id;
}

/** The runtime as people write it: `docker`, `cri-o`, `systemd-nspawn`. */
export function runtimeLabel(c: ContainerRef): string {
  return c.runtime.replaceAll('_', '-');
}

/** One container's processes. `key` is `null` for the processes in no container. */
export interface ContainerGroup {
  key: string | null;
  label: string;
  runtime: string | null;
  procs: ProcessSample[];
  cpuPercent: number;
  memoryPercent: number;
}

/** Identity of a container across snapshots: runtime and id (a name may come later). */
export function containerKey(c: ContainerRef): string {
  return `${c.runtime}:${c.id}`;
}

/** The processes by container, each group's processes in the order given; groups by
 *  label (natural order, case ignored), the group of processes in none last. */
export function groupByContainer(procs: readonly ProcessSample[]): ContainerGroup[] {
  const groups = new Map<string | null, ContainerGroup>();
  for (const p of procs) {
    const c = p.container ?? null;
    const key = c ? containerKey(c) : null;
    let g = groups.get(key);
    if (!g) {
      g = {
        key,
        label: c ? containerLabel(c) : 'No container',
        runtime: c ? runtimeLabel(c) : null,
        procs: [],
        cpuPercent: 0,
        memoryPercent: 0,
      };
      groups.set(key, g);
    }
    g.procs.push(p);
    g.cpuPercent += p.cpu_percent ?? 0;
    g.memoryPercent += p.memory_percent ?? 0;
  }
  const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });
  return [...groups.values()].sort((a, b) => {
    if (a.key === null || b.key === null) return a.key === null ? (b.key === null ? 0 : 1) : -1;
    return collator.compare(a.label, b.label) || a.key.localeCompare(b.key);
  });
}
