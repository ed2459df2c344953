// What the user set up in the process explorer (search, flat or tree, sort, collapsed
// branches, a focused subtree), kept outside the component so that it survives a trip
// to another view and back.

import type { SortState } from './sort';

export type ExplorerMode = 'flat' | 'tree';

export class ExplorerState {
  query = $state('');
  mode = $state<ExplorerMode>('flat');
  sort = $state<SortState>({ column: 'cpu', direction: 'desc' });
  /** Tree view: pids whose children are hidden. */
  collapsed = $state.raw<ReadonlySet<number>>(new Set());
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

  focus(pid: number | null, name: string | null = null) {
    this.focusPid = pid;
    this.focusName = pid === null ? null : name;
  }
}
