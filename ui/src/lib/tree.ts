// The process tree: parents and children from `ppid`, subtree totals of CPU and
// memory, one pid's subtree, and the flattening of the tree into table rows that the
// explorer shows (expand/collapse, search with ancestors kept for context).
//
// Data comes from monitored machines and may be inconsistent (a parent missing, a
// process naming itself or a cycle as its parent in racy data): every process appears
// exactly once, and nothing recurses, so no input can exhaust the stack.

import type { ProcessSample } from './model';

export interface TreeNode {
  proc: ProcessSample;
  parent: TreeNode | null;
  children: TreeNode[];
  /** Distance from its root (roots are 0). */
  depth: number;
  /** CPU of this process and all its descendants. */
  subtreeCpu: number;
  /** Memory share of this process and all its descendants. */
  subtreeMemory: number;
  /** Resident bytes of this process and all its descendants. */
  subtreeRss: number;
  /** Number of descendants (not counting itself). */
  descendants: number;
}

export interface Forest {
  roots: TreeNode[];
  byPid: Map<number, TreeNode>;
}

/** Builds the tree. Roots keep the input order (pid order from the sampler). */
export function buildForest(processes: readonly ProcessSample[]): Forest {
  const byPid = new Map<number, TreeNode>();
  for (const proc of processes) {
    // A duplicated pid (should not happen) keeps its first occurrence.
    if (byPid.has(proc.pid)) continue;
    byPid.set(proc.pid, {
      proc,
      parent: null,
      children: [],
      depth: 0,
      subtreeCpu: 0,
      subtreeMemory: 0,
      subtreeRss: 0,
      descendants: 0,
    });
  }
  const roots: TreeNode[] = [];
  for (const node of byPid.values()) {
    const ppid = node.proc.ppid;
    const parent = ppid != null && ppid !== node.proc.pid ? byPid.get(ppid) : undefined;
    if (parent) {
      node.parent = parent;
      parent.children.push(node);
    } else {
      roots.push(node);
    }
  }
  // Walk from the roots; whatever is not reached sits on a cycle: cut it loose as a
  // root rather than lose it.
  const seen = new Set<TreeNode>();
  const order: TreeNode[] = [];
  const walk = (root: TreeNode) => {
    const stack = [root];
    root.depth = 0;
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (seen.has(node)) continue;
      seen.add(node);
      order.push(node);
      for (const child of node.children) {
        child.depth = node.depth + 1;
        stack.push(child);
      }
    }
  };
  for (const root of roots) walk(root);
  if (seen.size < byPid.size) {
    for (const node of byPid.values()) {
      if (seen.has(node)) continue;
      if (node.parent) {
        const siblings = node.parent.children;
        siblings.splice(siblings.indexOf(node), 1);
        node.parent = null;
      }
      roots.push(node);
      walk(node);
    }
  }
  // Totals bottom-up: reverse pre-order visits every child before its parent.
  for (let i = order.length - 1; i >= 0; i -= 1) {
    const node = order[i];
    // An unknown figure (a short upload may leave them out) adds nothing to a total.
    node.subtreeCpu += node.proc.cpu_percent ?? 0;
    node.subtreeMemory += node.proc.memory_percent ?? 0;
    node.subtreeRss += node.proc.rss_bytes ?? 0;
    const parent = node.parent;
    if (parent) {
      parent.subtreeCpu += node.subtreeCpu;
      parent.subtreeMemory += node.subtreeMemory;
      parent.subtreeRss += node.subtreeRss;
      parent.descendants += node.descendants + 1;
    }
  }
  return { roots, byPid };
}

/** The pid and every descendant's pid, parents before children. Empty when the pid is
 *  not in the forest. */
export function subtreePids(forest: Forest, pid: number): number[] {
  const start = forest.byPid.get(pid);
  if (!start) return [];
  const out: number[] = [];
  const stack = [start];
  while (stack.length > 0) {
    const node = stack.pop()!;
    out.push(node.proc.pid);
    for (let i = node.children.length - 1; i >= 0; i -= 1) stack.push(node.children[i]);
  }
  return out;
}

/** The chain from a root down to the pid's parent (not the pid itself). */
export function ancestors(forest: Forest, pid: number): TreeNode[] {
  const out: TreeNode[] = [];
  let node = forest.byPid.get(pid)?.parent ?? null;
  while (node && out.length < forest.byPid.size) {
    out.push(node);
    node = node.parent;
  }
  return out.reverse();
}

/** One line of the tree as the table shows it. */
export interface TreeRow {
  node: TreeNode;
  /** Indentation level (relative to the shown root when a subtree is focused). */
  depth: number;
  /** Whether it has children at all. */
  hasChildren: boolean;
  /** Whether its children are shown. */
  expanded: boolean;
  /** False for an ancestor shown only to give a search match its context. */
  matched: boolean;
}

export interface FlattenOptions {
  /** Pids whose children are hidden. */
  collapsed?: ReadonlySet<number>;
  /** Order of siblings. */
  compare?: (a: ProcessSample, b: ProcessSample) => number;
  /** Only processes for which this holds, plus their ancestors (shown dimmed).
   *  While it is set every path to a match is open, whatever is collapsed. */
  match?: (p: ProcessSample) => boolean;
  /** Show only this pid's subtree, with it as the root. */
  focus?: number | null;
}

/** Depth-first rows of the tree, as shown. */
export function flattenTree(forest: Forest, options: FlattenOptions = {}): TreeRow[] {
  const { collapsed, compare, match } = options;
  let roots = forest.roots;
  if (options.focus != null) {
    const focused = forest.byPid.get(options.focus);
    roots = focused ? [focused] : [];
  }
  // With a search: which nodes are shown (matches and their ancestors).
  let shown: Set<TreeNode> | null = null;
  let matched: Set<TreeNode> | null = null;
  if (match) {
    shown = new Set();
    matched = new Set();
    const stack = [...roots];
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (match(node.proc)) {
        matched.add(node);
        let up: TreeNode | null = node;
        const top = options.focus != null ? forest.byPid.get(options.focus) : null;
        while (up && !shown.has(up)) {
          shown.add(up);
          if (up === top) break;
          up = up.parent;
        }
      }
      for (const child of node.children) stack.push(child);
    }
  }
  const sorted = (nodes: TreeNode[]) => {
    const list = shown ? nodes.filter((n) => shown!.has(n)) : nodes.slice();
    if (compare) list.sort((a, b) => compare(a.proc, b.proc));
    return list;
  };
  const rows: TreeRow[] = [];
  const baseDepth = roots.length > 0 ? roots[0].depth : 0;
  const stack: TreeNode[] = sorted(roots).reverse();
  while (stack.length > 0) {
    const node = stack.pop()!;
    const hasChildren = node.children.length > 0;
    const expanded = hasChildren && (shown !== null || !collapsed?.has(node.proc.pid));
    rows.push({
      node,
      depth: node.depth - baseDepth,
      hasChildren,
      expanded,
      matched: matched ? matched.has(node) : true,
    });
    if (expanded) {
      const kids = sorted(node.children);
      for (let i = kids.length - 1; i >= 0; i -= 1) stack.push(kids[i]);
    }
  }
  return rows;
}

/** Pids of every process that has children: "collapse all". */
export function parentPids(forest: Forest): Set<number> {
  const out = new Set<number>();
  for (const node of forest.byPid.values()) if (node.children.length > 0) out.add(node.proc.pid);
  return out;
}
