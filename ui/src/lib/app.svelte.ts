// The dashboard's state: who is signed in, the hosts, where the user is (the route),
// the live stream of the selected host and what is shown from it (live, frozen or a
// stored snapshot), recent figures for sparklines, toasts and the theme. Components read
// it and call its methods; only it talks to the transport for these, so a host switch or
// a sign-out tears down exactly what it set up.
//
// In the desktop app there is no sign-in page: the session follows the app's mode (this
// machine, or a remote collector), and when the mode changes the dashboard tears down
// and picks up the new session by itself.

import { diskTotals, hottest } from './hostdepth';
import { ExplorerState } from './explorer.svelte';
import { FleetState } from './fleet.svelte';
import { firingByHost } from './fleet';
import { naturalCompare } from './natural';
import type { Alert, DesktopState, HostSummary } from './model';
import { formatHash, isBare, parseHash, type Route, type View } from './router';
import {
  ApiError,
  type LiveStatus,
  type LiveSubscription,
  type Session,
  type StoredSnapshot,
  type Transport,
} from './transport';
import { TauriTransport } from './tauri';

export interface Toast {
  id: number;
  kind: 'ok' | 'error' | 'info';
  title: string;
  detail?: string;
}

/** One point of the overview sparklines. */
export interface RecentPoint {
  t: number;
  cpu: number;
  /** `null` where the snapshot does not say (a short upload has no memory size or
   *  network counters). */
  memPercent: number | null;
  sent: number | null;
  received: number | null;
  /** One-minute load average; `null` where the OS has none or for seeded points. */
  load: number | null;
  /** The disks' read and write rates together; `null` where not measured. */
  diskRead: number | null;
  diskWrite: number | null;
  /** The hottest sensor, °C; `null` where there is none. */
  hottest: number | null;
}

export type ThemeChoice = 'system' | 'light' | 'dark';

const RECENT_POINTS = 90;
const HOSTS_POLL_MS = 5000;
const THEME_KEY = 'procyon.theme';

const IDLE_STATUS: LiveStatus = { state: 'closed', attempt: 0, retryAt: null, lastMessageAt: null };

/** A sentence for any error, for banners and toasts. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

function point(s: StoredSnapshot): RecentPoint {
  const total = s.memory.total_bytes;
  return {
    t: Date.parse(s.taken_at),
    cpu: s.cpu.total_percent,
    memPercent: total !== null && total > 0 ? (s.memory.used_bytes / total) * 100 : null,
    sent: s.network.total?.sent_bytes_per_sec ?? null,
    received: s.network.total?.received_bytes_per_sec ?? null,
    load: s.cpu.load_average?.one ?? null,
    diskRead: diskTotals(s)?.read ?? null,
    diskWrite: diskTotals(s)?.write ?? null,
    hottest: hottest(s)?.celsius ?? null,
  };
}

export class App {
  readonly transport: Transport;
  /** The desktop app's transport, in its window; `null` in a browser. */
  readonly tauri: TauriTransport | null;
  /** The desktop app's state (mode, settings, built-in collector, paused). */
  desktop = $state.raw<DesktopState | null>(null);
  /** The dashboard could not start (the desktop app did not answer): why. */
  startError = $state<string | null>(null);
  /** The process explorer's search, sort and tree state. */
  readonly explorer = new ExplorerState();
  /** The fleet overview's rows, stream, filter and sort. */
  readonly fleet = new FleetState();
  /** The page was opened without naming a view: the first host list picks one. */
  private landing = false;

  booting = $state(true);
  session = $state.raw<Session | null>(null);
  /** Why the last session ended without the user signing out. */
  endedReason = $state<string | null>(null);

  hosts = $state.raw<HostSummary[]>([]);
  hostsLoaded = $state(false);
  hostsError = $state<string | null>(null);
  /** The last host refresh failed because the collector could not be reached at all. */
  collectorUnreachable = $state(false);

  route = $state.raw<Route>({ view: 'processes', host: null, snapshot: null });

  /** The newest snapshot of the selected host. */
  live = $state.raw<StoredSnapshot | null>(null);
  liveStatus = $state.raw<LiveStatus>(IDLE_STATUS);
  /** Frozen: the tables hold still while new snapshots keep arriving. */
  frozen = $state(false);
  frozenSnapshot = $state.raw<StoredSnapshot | null>(null);
  heldUpdates = $state(0);

  /** A stored snapshot opened from the history. */
  historical = $state.raw<StoredSnapshot | null>(null);
  historicalLoading = $state(false);
  historicalError = $state<string | null>(null);

  recent = $state.raw<RecentPoint[]>([]);
  toasts = $state<Toast[]>([]);
  theme = $state<ThemeChoice>('system');
  systemDark = $state(false);
  /** Changes after each process action, so that views listing actions refresh. */
  actionCount = $state(0);
  /** Alerts firing now, on every host (the top bar's badge); `null` until known or
   *  when this backend has no alerts. Refreshed with the hosts. */
  firingAlerts = $state<number | null>(null);
  /** The same alerts counted by host name (the fleet overview's column); `null` as
   *  `firingAlerts` is. */
  firingByHost = $state.raw<ReadonlyMap<string, number> | null>(null);
  /** Wall clock, once a second, for "12 s ago" labels. */
  now = $state(Date.now());

  private subscription: LiveSubscription | null = null;
  private subscribedHost: string | null = null;
  private hostsTimer: ReturnType<typeof setInterval> | null = null;
  private clockTimer: ReturnType<typeof setInterval> | null = null;
  private toastId = 0;
  private historicalRequest = 0;
  private resumeRequest = 0;

  constructor(transport: Transport) {
    this.transport = transport;
    this.tauri = transport instanceof TauriTransport ? transport : null;
    if (this.tauri) {
      this.tauri.onState((state) => {
        const collectorChanged = this.desktop !== null && this.desktop.collector.running !== state.collector.running;
        this.desktop = state;
        // Agents of the built-in collector come and go with it: show that at once.
        if (collectorChanged && this.session) void this.refreshHosts();
      });
      this.tauri.onNotice((notice) => this.toast('info', notice));
    }
    transport.onSessionEnd((reason) => this.endSession(reason));
  }

  // ---- derived ----------------------------------------------------------------------

  get host(): HostSummary | null {
    return this.hosts.find((h) => h.hostname === this.route.host) ?? null;
  }

  get canAct(): boolean {
    return this.session?.role === 'operator' || this.session?.role === 'admin';
  }

  get isAdmin(): boolean {
    return this.session?.role === 'admin';
  }

  /** Sets the labels an admin gives a host; the host's row and the list follow. */
  async setHostLabels(hostname: string, labels: Record<string, string>) {
    const updated = await this.transport.setHostLabels(hostname, labels);
    this.hosts = this.hosts.map((h) => (h.hostname === hostname ? { ...h, labels: updated.labels, admin_labels: updated.admin_labels } : h));
    this.fleet.sync(this.hosts);
    return updated;
  }

  /** Deletes a host with its history, then shows another one. */
  async deleteHost(hostname: string) {
    await this.transport.deleteHost(hostname);
    this.hosts = this.hosts.filter((h) => h.hostname !== hostname);
    if (this.route.host === hostname) this.navigate({ host: null, snapshot: null });
    await this.refreshHosts();
  }

  get resolvedTheme(): 'light' | 'dark' {
    if (this.theme === 'system') return this.systemDark ? 'dark' : 'light';
    return this.theme;
  }

  /** What the process and network views show. */
  get shown(): StoredSnapshot | null {
    if (this.route.snapshot !== null) return this.historical;
    return this.frozen ? this.frozenSnapshot : this.live;
  }

  get viewingHistory(): boolean {
    return this.route.snapshot !== null;
  }

  // ---- start and sign-in -------------------------------------------------------------

  async start() {
    this.initTheme();
    window.addEventListener('hashchange', () => {
      // Somewhere named: the front door's choice no longer applies.
      this.landing = false;
      this.applyRoute(parseHash(window.location.hash));
    });
    this.landing = isBare(window.location.hash);
    this.route = parseHash(window.location.hash);
    this.clockTimer = setInterval(() => (this.now = Date.now()), 1000);
    try {
      if (this.tauri) await this.resume();
      else {
        const session = await this.transport.restore();
        if (session) {
          this.session = session;
          await this.afterSignIn();
        }
      }
    } finally {
      this.booting = false;
    }
  }

  /** Desktop: takes up the session of the app's current mode. The newest call wins. */
  async resume() {
    const request = ++this.resumeRequest;
    try {
      const session = await this.transport.restore();
      if (request !== this.resumeRequest) return;
      if (!session) {
        this.startError = 'The desktop app did not sign this window in. Restart the app.';
        return;
      }
      this.startError = null;
      this.session = session;
      await this.afterSignIn();
    } catch (e) {
      if (request === this.resumeRequest) this.startError = describeError(e);
    }
  }

  async signIn(username: string, password: string) {
    const session = await this.transport.signIn(username, password);
    this.endedReason = null;
    this.session = session;
    await this.afterSignIn();
  }

  signOut() {
    if (this.tauri) {
      // Back to this machine: the app's change of mode ends this session and `resume`
      // takes up the next.
      this.tauri.disconnect().catch((e) => this.toast('error', 'Could not sign out', describeError(e)));
      return;
    }
    this.transport.signOut();
    this.teardown();
    this.session = null;
    this.endedReason = null;
  }

  private endSession(reason: string) {
    this.teardown();
    this.session = null;
    if (this.tauri) {
      // Another source: its hosts are others, so start from its default host.
      if (this.route.host !== null || this.route.snapshot !== null) {
        this.route = { ...this.route, host: null, snapshot: null };
        window.history.replaceState(null, '', formatHash(this.route));
      }
      if (reason) this.toast('info', reason);
      void this.resume();
      return;
    }
    this.endedReason = reason;
  }

  /** Desktop: pauses or resumes the app's updates (also from the tray). */
  async setPaused(paused: boolean) {
    try {
      await this.tauri?.setPaused(paused);
    } catch (e) {
      this.toast('error', paused ? 'Could not pause updates' : 'Could not resume updates', describeError(e));
    }
  }

  private teardown() {
    this.unsubscribe();
    this.fleet.stop();
    if (this.hostsTimer !== null) clearInterval(this.hostsTimer);
    this.hostsTimer = null;
    this.hosts = [];
    this.hostsLoaded = false;
    this.firingAlerts = null;
    this.firingByHost = null;
    this.historical = null;
    this.recent = [];
    this.frozen = false;
    this.frozenSnapshot = null;
  }

  private async afterSignIn() {
    await this.refreshHosts();
    if (this.hostsTimer !== null) clearInterval(this.hostsTimer);
    this.hostsTimer = setInterval(() => {
      void this.refreshHosts();
      void this.refreshAlerts();
    }, HOSTS_POLL_MS);
    void this.refreshAlerts();
    this.applyRoute(this.route, true);
  }

  async refreshHosts() {
    try {
      const hosts = await this.transport.hosts();
      // Online first, then by name in natural order (`web-2` before `web-10`).
      hosts.sort((a, b) => Number(b.online) - Number(a.online) || naturalCompare(a.hostname, b.hostname));
      this.hosts = hosts;
      this.hostsError = null;
      this.collectorUnreachable = false;
      this.fleet.sync(hosts);
      if (this.landing && hosts.length > 0) {
        // The front door: the fleet when there is more than one host, else the host.
        this.landing = false;
        const view: View = hosts.length > 1 ? 'fleet' : this.route.view;
        const next = { ...this.route, view };
        window.history.replaceState(null, '', formatHash(next));
        this.applyRoute(next, true);
      } else if (this.route.host === null && hosts.length > 0) this.applyRoute(this.route, true);
      // A host named in the URL that has just appeared: start its stream now.
      else if (
        this.route.view !== 'fleet' &&
        this.route.host !== this.subscribedHost &&
        hosts.some((h) => h.hostname === this.route.host)
      )
        this.subscribe(this.route.host);
    } catch (e) {
      this.hostsError = describeError(e);
      this.collectorUnreachable = e instanceof ApiError && e.status === 0;
    } finally {
      this.hostsLoaded = true;
    }
  }

  /** Takes up the alerts now: the badge's count and the fleet overview's per host. */
  showAlerts(alerts: readonly Alert[]) {
    this.firingAlerts = alerts.filter((a) => a.state === 'firing').length;
    this.firingByHost = firingByHost(alerts);
  }

  /** Counts the alerts firing now, for the badge and the fleet overview. A failure leaves the count as it
   *  was: the hosts' refresh already says when the collector cannot be reached. */
  async refreshAlerts() {
    try {
      const alerts = await this.transport.alerts();
      if (this.session) this.showAlerts(alerts);
    } catch {
      // kept as it was
    }
  }

  // ---- navigation --------------------------------------------------------------------

  /** Goes somewhere: the URL changes (so Back works) and the state follows. */
  navigate(patch: Partial<Route>) {
    const next: Route = { ...this.route, ...patch };
    if (patch.host !== undefined && patch.host !== this.route.host && patch.snapshot === undefined) next.snapshot = null;
    const hash = formatHash(next);
    if (window.location.hash !== hash) window.history.pushState(null, '', hash);
    this.applyRoute(next);
  }

  setView(view: View) {
    this.navigate({ view });
  }

  private defaultHost(): string | null {
    const h = this.hosts.find((x) => x.local) ?? this.hosts.find((x) => x.online) ?? this.hosts[0];
    return h ? h.hostname : null;
  }

  private applyRoute(route: Route, force = false) {
    if (!this.session) {
      this.route = route;
      return;
    }
    let next = route;
    if (next.host === null && this.hosts.length > 0) {
      next = { ...next, host: this.defaultHost() };
      window.history.replaceState(null, '', formatHash(next));
    }
    const previous = this.route;
    this.route = next;
    // The overview follows the fleet stream; every other view one host's stream.
    if (next.view === 'fleet') {
      if (previous.view !== 'fleet' || force || this.fleet.status.state === 'closed') {
        this.fleet.sync(this.hosts);
        if (this.fleet.status.state === 'closed') this.fleet.start(this.transport);
      }
      if (this.subscribedHost !== null) this.unsubscribe();
      return;
    }
    if (previous.view === 'fleet') this.fleet.stop();
    if (next.host !== this.subscribedHost) {
      // Only hosts the collector knows: a stream for an unknown name would be refused
      // and retried forever. The view says that the host is unknown.
      const known = this.hosts.some((h) => h.hostname === next.host);
      this.subscribe(known ? next.host : null);
    }
    if (next.snapshot !== previous.snapshot || (force && next.snapshot !== null)) void this.loadHistorical(next.snapshot);
  }

  // ---- live stream -------------------------------------------------------------------

  private unsubscribe() {
    this.subscription?.close();
    this.subscription = null;
    this.subscribedHost = null;
    this.live = null;
    this.liveStatus = IDLE_STATUS;
  }

  private subscribe(hostname: string | null) {
    this.unsubscribe();
    this.recent = [];
    this.frozen = false;
    this.frozenSnapshot = null;
    this.heldUpdates = 0;
    if (!hostname) return;
    this.subscribedHost = hostname;
    this.subscription = this.transport.live(hostname, {
      onSnapshot: (s) => this.receive(s),
      onStatus: (status) => (this.liveStatus = status),
    });
    void this.seedRecent(hostname);
  }

  /** Fills the sparklines with the last few minutes, so they are not empty at first. */
  private async seedRecent(hostname: string) {
    try {
      const from = new Date(Date.now() - 3 * 60_000).toISOString();
      const series = await this.transport.series(hostname, { from, limit: RECENT_POINTS });
      if (this.subscribedHost !== hostname) return;
      const seeded: RecentPoint[] = series.points.map((p) => ({
        t: Date.parse(p.timestamp),
        cpu: p.cpu_percent,
        memPercent: null,
        sent: p.sent_bytes_per_sec,
        received: p.received_bytes_per_sec,
        load: null,
        diskRead: p.disk_read_bytes_per_sec,
        diskWrite: p.disk_write_bytes_per_sec,
        hottest: p.temperature_celsius,
      }));
      const total = this.hosts.find((h) => h.hostname === hostname)?.info?.memory_total_bytes ?? 0;
      series.points.forEach((p, i) => (seeded[i].memPercent = total > 0 ? (p.memory_used_bytes / total) * 100 : null));
      const newest = this.recent.length > 0 ? this.recent[0].t : Infinity;
      this.recent = [...seeded.filter((p) => p.t < newest), ...this.recent].slice(-RECENT_POINTS);
    } catch {
      // Sparklines fill from the live stream instead.
    }
  }

  private receive(s: StoredSnapshot) {
    if (s.host.hostname !== this.subscribedHost) return;
    this.live = s;
    const p = point(s);
    const last = this.recent[this.recent.length - 1];
    if (!last || p.t > last.t) this.recent = [...this.recent, p].slice(-RECENT_POINTS);
    if (this.frozen) this.heldUpdates += 1;
  }

  retryNow() {
    this.subscription?.retryNow();
  }

  toggleFreeze() {
    if (this.frozen) {
      this.frozen = false;
      this.frozenSnapshot = null;
      this.heldUpdates = 0;
    } else if (this.live) {
      this.frozenSnapshot = this.live;
      this.frozen = true;
      this.heldUpdates = 0;
    }
  }

  // ---- stored snapshots --------------------------------------------------------------

  openSnapshot(id: number, hostname: string) {
    this.navigate({ view: 'processes', host: hostname, snapshot: id });
  }

  backToLive() {
    this.navigate({ snapshot: null });
  }

  private async loadHistorical(id: number | null) {
    const request = ++this.historicalRequest;
    this.historicalError = null;
    if (id === null) {
      this.historical = null;
      this.historicalLoading = false;
      return;
    }
    this.historicalLoading = true;
    try {
      const snapshot = await this.transport.snapshot(id);
      if (request !== this.historicalRequest) return;
      this.historical = snapshot;
      if (snapshot.hostname !== this.route.host) {
        // A link to a snapshot names its host: follow it.
        const next = { ...this.route, host: snapshot.hostname };
        window.history.replaceState(null, '', formatHash(next));
        this.applyRoute(next);
      }
    } catch (e) {
      if (request !== this.historicalRequest) return;
      this.historical = null;
      this.historicalError = describeError(e);
    } finally {
      if (request === this.historicalRequest) this.historicalLoading = false;
    }
  }

  // ---- toasts and theme --------------------------------------------------------------

  toast(kind: Toast['kind'], title: string, detail?: string) {
    const id = ++this.toastId;
    this.toasts = [...this.toasts, { id, kind, title, detail }].slice(-4);
    setTimeout(() => this.dismiss(id), kind === 'error' ? 9000 : 5000);
  }

  dismiss(id: number) {
    this.toasts = this.toasts.filter((t) => t.id !== id);
  }

  private initTheme() {
    try {
      const saved = localStorage.getItem(THEME_KEY);
      if (saved === 'light' || saved === 'dark') this.theme = saved;
    } catch {
      // No storage: follow the system.
    }
    const media = window.matchMedia?.('(prefers-color-scheme: dark)');
    if (media) {
      this.systemDark = media.matches;
      media.addEventListener('change', (e) => (this.systemDark = e.matches));
    }
    this.applyTheme();
  }

  setTheme(choice: ThemeChoice) {
    this.theme = choice;
    try {
      if (choice === 'system') localStorage.removeItem(THEME_KEY);
      else localStorage.setItem(THEME_KEY, choice);
    } catch {
      // Kept for this page only.
    }
    this.applyTheme();
  }

  private applyTheme() {
    const root = document.documentElement;
    if (this.theme === 'system') delete root.dataset.theme;
    else root.dataset.theme = this.theme;
  }

  destroy() {
    this.teardown();
    if (this.clockTimer !== null) clearInterval(this.clockTimer);
  }
}
