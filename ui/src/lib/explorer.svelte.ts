// What the user set up in the process explorer (search, flat, tree or by container,
// sort, collapsed branches and containers, a focused subtree), kept outside the component so that it survives a trip
// to another view and back.

import type { SortState } from './sort';

export type ExplorerMode = 'flat' | 'tree' | 'containers';

export class ExplorerState {
  query = $state('');
  mode = $state<ExplorerMode>('flat');
  sort = $state<SortState>({ column: 'cpu', direction: 'desc' });
  /** Tree view: pids whose children are hidden. */
  collapsed = $state.raw<ReadonlySet<number>>(new Set());
  /** By container: containers whose processes are hidden (`containerKey`, or `''`
   *  for the processes in none). */
  collapsedContainers = $state.raw<ReadonlySet<string>>(new Set());
  /** Only this pid's subtree. */
  focusPid = $state<number | null>(null);
  focusName = $state<string | null>(null);
  /** A process to open the details of once its host's snapshot shows it (from a
   *  search over every host); cleared when opened. */
  pendingOpen = $state<{ host: string; pid: number } | null>(null);

  toggleCollapsed(pid: number) {
    const next = new Set(this.collapsed);
    if (next.has(pid)) next.delete(pid);
    else next.add(pid);
    this.collapsed = next;
  }

  setCollapsed(pid: number, collapsed: boolean) {
    if (this.collapsed.has(pid) === collapsed) return;
    this.toggleCollapsed(pid);
  }

  toggleContainer(key: string | null) {
    const next = new Set(this.collapsedContainers);
    const k = key ?? '';
    if (next.has(k)) next.delete(k);
    else next.add(k);
    this.collapsedContainers = next;
  }

  focus(pid: number | null, name: string | null = null) {
    this.focusPid = pid;
    this.focusName = pid === null ? null : name;
  }
}
