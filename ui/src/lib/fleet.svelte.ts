// The fleet overview's live state: one row per host, started from the hosts list (which
// carries each host's figures and CPU trend) and kept current by the fleet stream
// (`/ws/fleet`: the hosts that changed, at most once a second). The list the app polls
// brings hosts that appeared or went, and label changes. The view's filter, sort and
// grouping live here too, so they survive a visit to a host and back.

import { fromSummary, withUpdate, type FleetHost, type FleetSort } from './fleet';
import type { FleetRow, HostSummary } from './model';
import type { LiveStatus, LiveSubscription, Transport } from './transport';

const IDLE: LiveStatus = { state: 'closed', attempt: 0, retryAt: null, lastMessageAt: null };

export class FleetState {
  /** Every host, in no particular order (the view sorts). */
  hosts = $state.raw<FleetHost[]>([]);
  status = $state.raw<LiveStatus>(IDLE);
  /** Live rows applied so far (for tests and the "updated" hint). */
  updates = $state(0);

  query = $state('');
  sort = $state.raw<FleetSort>({ column: 'name', direction: 'asc' });
  /** A label key to group by; `''` for none. */
  groupBy = $state('');
  collapsed = $state.raw<ReadonlySet<string>>(new Set());

  private index = new Map<string, number>();
  private subscription: LiveSubscription | null = null;

  /** Takes up the hosts list: new hosts in, deleted ones out, labels and state as
   *  listed, figures when they are newer than the row's. */
  sync(list: readonly HostSummary[]) {
    const byName = new Map(this.hosts.map((h) => [h.hostname, h]));
    const next = list.map((s) => {
      const row = byName.get(s.hostname);
      const listed = fromSummary(s);
      if (!row) return listed;
      const newer =
        listed.figures !== null &&
        (row.figures === null || Date.parse(listed.figures.taken_at) > Date.parse(row.figures.taken_at));
      return {
        ...(newer ? listed : row),
        id: s.id,
        local: s.local,
        online: s.online,
        lastSeen: Math.max(row.lastSeen, listed.lastSeen),
        labels: listed.labels,
        adminLabels: listed.adminLabels,
      };
    });
    this.replace(next);
  }

  private replace(next: FleetHost[]) {
    this.hosts = next;
    this.index = new Map(next.map((h, i) => [h.hostname, i]));
  }

  /** Applies a message of the fleet stream. */
  apply(rows: readonly FleetRow[]) {
    if (rows.length === 0) return;
    const next = this.hosts.slice();
    for (const row of rows) {
      const i = this.index.get(row.hostname);
      // A host the list does not have yet: the next poll of the list brings it whole.
      if (i === undefined) continue;
      next[i] = withUpdate(next[i], row);
    }
    this.hosts = next;
    this.updates += 1;
  }

  /** Follows the fleet stream until `stop`. */
  start(transport: Transport) {
    this.stop();
    this.subscription = transport.fleet({
      onRows: (rows) => this.apply(rows),
      onStatus: (status) => (this.status = status),
    });
  }

  stop() {
    this.subscription?.close();
    this.subscription = null;
    this.status = IDLE;
  }

  retryNow() {
    this.subscription?.retryNow();
  }

  toggleGroup(key: string) {
    const next = new Set(this.collapsed);
    if (next.has(key)) next.delete(key);
    else next.add(key);
    this.collapsed = next;
  }

  sortBy(column: FleetSort['column']) {
    if (this.sort.column === column) {
      this.sort = { column, direction: this.sort.direction === 'asc' ? 'desc' : 'asc' };
    } else {
      // Names and labels read A to Z; figures busiest first.
      const ascending = column === 'name' || column === 'labels' || column === 'busiest' || column === 'status';
      this.sort = { column, direction: ascending ? 'asc' : 'desc' };
    }
  }
}
