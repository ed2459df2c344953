// The dashboard's transport inside the desktop app (a Tauri window). It is the web
// transport with two parts swapped: REST calls go through the app's `api` command
// instead of the network, and live streams through its `live` command (a Tauri channel)
// instead of a WebSocket. Everything else (error handling, parsing, downloads, the
// reconnecting stream) is `WebTransport`'s, unchanged.
//
// Sessions: the window never holds a token. In local mode the app signs the window in as
// the person using it (an admin of this machine), so the session is implicit and never
// expires for the user; in remote mode it mirrors the remote sign-in the app keeps (the
// token stays in the OS keyring, on the Rust side). A change of mode (a remote sign-in,
// a sign-out, a sign-in that ended) ends the current session with a sentence saying
// why; the dashboard then picks up the new one with `restore()`.

import type { ApiKeySummary, ApiReply, DesktopSettings, DesktopState, ErrorBody, LiveEvent } from './model';
import {
  ApiError,
  WebTransport,
  type ActionRequest,
  type ActionResult,
  type BackoffOptions,
  type BulkRequest,
  type BulkResult,
  type Download,
  type ExportRequest,
  type FleetHandlers,
  type HostRef,
  type KeyValueStore,
  type LiveHandlers,
  type LiveSubscription,
  type NetworkMapRequest,
  type Page,
  type ProcessHistoryPoint,
  type Range,
  type Session,
  type SocketLike,
  type StoredSnapshot,
  type Transport,
} from './transport';
import type {
  Alert,
  AlertChannel,
  AlertDelivery,
  AlertEvent,
  AlertRule,
  AuditEntry,
  Dashboard,
  DashboardInput,
  HostSummary,
  NetworkMap,
  NewSilence,
  ProcessDetails,
  ProcessSearch,
  Series,
  Silence,
  SnapshotSummary,
  TopProcess,
} from './model';

/** Calls one of the app's commands (Tauri's `invoke`, or a test's). */
export type Invoke = <T>(cmd: string, args?: Record<string, unknown>) => Promise<T>;
/** Listens to one of the app's events (Tauri's `listen`, or a test's). */
export type Listen = <T>(event: string, handler: (event: { payload: T }) => void) => Promise<() => void>;

// Tauri's own API is loaded on first use: a browser never needs it, and the dashboard's
// first load should not carry it.
let tauriCore: Promise<typeof import('@tauri-apps/api/core')> | null = null;
const loadCore = () => (tauriCore ??= import('@tauri-apps/api/core'));

const tauriInvoke: Invoke = async <T>(cmd: string, args?: Record<string, unknown>) =>
  (await loadCore()).invoke<T>(cmd, args);

const tauriListen: Listen = async <T>(event: string, handler: (event: { payload: T }) => void) =>
  (await import('@tauri-apps/api/event')).listen<T>(event, handler);

/** A command that failed: the app's `CommandError` (`code`, and `detail` as the
 *  message, a sentence for the user). */
export class CommandFailure extends Error {
  readonly code: string;
  constructor(code: string, detail: string) {
    super(detail);
    this.name = 'CommandFailure';
    this.code = code;
  }
}

/** Whatever a command rejected with, as a `CommandFailure`. The app rejects with
 *  `{code, detail}`; Tauri itself may reject with a bare string (an unknown command, a
 *  missing permission). */
export function commandFailure(e: unknown): CommandFailure {
  if (e instanceof CommandFailure) return e;
  if (e && typeof e === 'object' && typeof (e as { detail?: unknown }).detail === 'string') {
    const code = (e as { code?: unknown }).code;
    return new CommandFailure(typeof code === 'string' ? code : 'internal', (e as { detail: string }).detail);
  }
  if (typeof e === 'string' && e.length > 0) return new CommandFailure('internal', e);
  if (e instanceof Error) return new CommandFailure('internal', e.message);
  return new CommandFailure('internal', 'The desktop app did not answer.');
}

/** The HTTP status a failed `api` command stands for, so that the web transport's error
 *  handling treats it like the collector's own answer (401 ends the session, the detail
 *  becomes the message). */
const STATUS_FOR_CODE: Record<string, number> = {
  invalid: 400,
  unauthorized: 401,
  unavailable: 503,
};

// Statuses whose responses have no body by definition.
const NULL_BODY = new Set([101, 204, 205, 304]);

/** A `Response` from the app's answer to an `api` request, as `fetch` would have given
 *  it: status, `Content-Type`, `Content-Disposition` and the body. */
export function replyToResponse(reply: ApiReply): Response {
  if (!Number.isInteger(reply.status) || reply.status < 200 || reply.status > 599) {
    // Not something a server answers with; treated like a failed connection.
    throw new TypeError(`The app answered with HTTP status ${reply.status}.`);
  }
  const headers = new Headers();
  if (reply.content_type) headers.set('Content-Type', reply.content_type);
  if (reply.content_disposition) headers.set('Content-Disposition', reply.content_disposition);
  return new Response(NULL_BODY.has(reply.status) ? null : reply.body, { status: reply.status, headers });
}

/** A `Response` standing for a failed command, in the collector's error shape. */
export function failureToResponse(failure: CommandFailure): Response {
  const body: ErrorBody = { error: failure.code, message: failure.message, field: null };
  return new Response(JSON.stringify(body), {
    status: STATUS_FOR_CODE[failure.code] ?? 500,
    headers: { 'Content-Type': 'application/json' },
  });
}

/** The origin `WebTransport` builds its URLs on. Never contacted: only the path and
 *  query string of each URL are used. */
export const DESKTOP_ORIGIN = 'http://procyon.desktop';

/** A `fetch` that sends each request through the app's `api` command. Only `/api/`
 *  paths are carried; headers are not (the app signs requests in by itself). */
export function apiFetch(invoke: Invoke): typeof fetch {
  return async (input, init) => {
    const raw = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(raw, DESKTOP_ORIGIN);
    const path = `${url.pathname}${url.search}`;
    if (!path.startsWith('/api/')) throw new TypeError(`Only /api/ requests go through the app, not ${url.pathname}.`);
    const method = (init?.method ?? 'GET').toUpperCase();
    const body = typeof init?.body === 'string' ? init.body : null;
    let reply: ApiReply;
    try {
      reply = await invoke<ApiReply>('api', { request: { method, path, body } });
    } catch (e) {
      return failureToResponse(commandFailure(e));
    }
    return replyToResponse(reply);
  };
}

/** A WebSocket look-alike over the app's `live` command, so that `LiveStream` (backoff,
 *  reconnection, expiry) works unchanged. The host comes from the URL's `hostname`
 *  parameter; other parameters (opt-ins) mean nothing here. */
export class ChannelSocket implements SocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  /** The app's subscription id, once known. */
  private id: number | null = null;
  /** Closed by us: events are dropped and the subscription is stopped. */
  private closed = false;
  /** Ended by the app: there is nothing left to stop. */
  private ended = false;

  constructor(
    url: string,
    private readonly invoke: Invoke,
  ) {
    const params = new URL(url, DESKTOP_ORIGIN).searchParams;
    // The stream's form follows the URL, as the WebSocket's does: `delta=1` asks for
    // live messages (whole, then deltas) rather than whole stored snapshots each time.
    void this.subscribe(params.get('hostname'), params.get('delta') === '1');
  }

  private async subscribe(hostname: string | null, delta: boolean) {
    let id: number;
    try {
      const { Channel } = await loadCore();
      if (this.closed) return;
      const channel = new Channel<LiveEvent>();
      channel.onmessage = (event) => this.deliver(event);
      id = await this.invoke<number>('live', { hostname, delta, onEvent: channel });
    } catch (e) {
      this.onerror?.(e);
      this.finish(1011, commandFailure(e).message);
      return;
    }
    this.id = id;
    // Closed while the subscription was being made: stop it now.
    if (this.closed && !this.ended) this.stop();
  }

  private deliver(event: LiveEvent) {
    if (this.closed || this.ended) return;
    if (event.kind === 'open') this.onopen?.({});
    else if (event.kind === 'message') this.onmessage?.({ data: event.data });
    else if (event.kind === 'closed') this.finish(event.code, event.reason);
  }

  private finish(code: number, reason: string) {
    if (this.ended) return;
    this.ended = true;
    if (!this.closed) this.onclose?.({ code, reason });
  }

  private stop() {
    const id = this.id;
    if (id === null) return;
    this.id = null;
    this.invoke('live_stop', { id }).catch(() => {
      // Already gone (the app stopped it): nothing to undo.
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.ended) this.stop();
  }
}

/** Keeps the one session `WebTransport.restore()` reads: the session of the current
 *  mode, held in memory only (there is no token in it to keep). */
class SessionSlot implements KeyValueStore {
  private value: string | null = null;
  getItem(): string | null {
    return this.value;
  }
  setItem(_key: string, value: string): void {
    this.value = value;
  }
  removeItem(): void {
    this.value = null;
  }
}

/** A session in local mode never ends for the user; this date stands for "never". */
const LOCAL_EXPIRES_AT = '9999-12-31T23:59:59Z';

/** The session the window has in a given state of the app: the person using the app as
 *  an admin of this machine, or the remote sign-in. No token: the app holds it. */
export function implicitSession(state: DesktopState): Session {
  if (state.mode === 'remote' && state.remote) {
    return { token: '', username: state.remote.username, role: state.remote.role, expires_at: state.remote.expires_at };
  }
  return { token: '', username: state.username, role: 'admin', expires_at: LOCAL_EXPIRES_AT };
}

/** What a session belongs to: this machine, or one remote sign-in. */
function sourceKey(state: DesktopState): string {
  return state.mode === 'remote' ? `remote ${state.remote?.url ?? ''} ${state.remote?.username ?? ''}` : 'local';
}

/** Where the data comes from, in words. */
export function sourceName(state: DesktopState): string {
  if (state.mode === 'remote' && state.remote) {
    try {
      return new URL(state.remote.url).host;
    } catch {
      return state.remote.url;
    }
  }
  return 'this machine';
}

/** A key issued by `POST /api/keys`: the secret (shown once) and its summary. */
export interface CreatedKey {
  key: string;
  summary: ApiKeySummary;
}

export interface TauriTransportOptions {
  invoke?: Invoke;
  listen?: Listen;
  backoff?: Partial<BackoffOptions>;
}

export class TauriTransport implements Transport {
  readonly kind = 'tauri' as const;
  private readonly invoke: Invoke;
  private readonly listenTo: Listen;
  private readonly inner: WebTransport;
  private readonly slot = new SessionSlot();
  private desktop: DesktopState | null = null;
  /** The source the current session belongs to; `null` while there is none. */
  private sessionSource: string | null = null;
  /** While a session is being set up, a failed check is an answer, not an end. */
  private establishing = false;
  private watching = false;
  private readonly endListeners = new Set<(reason: string) => void>();
  private readonly stateListeners = new Set<(state: DesktopState) => void>();
  private readonly noticeListeners = new Set<(notice: string) => void>();
  /** A sign-out in progress: `restore()` waits for it. */
  private pending: Promise<unknown> = Promise.resolve();

  constructor(options: TauriTransportOptions = {}) {
    this.invoke = options.invoke ?? tauriInvoke;
    this.listenTo = options.listen ?? tauriListen;
    const invoke = this.invoke;
    this.inner = new WebTransport({
      origin: DESKTOP_ORIGIN,
      fetch: apiFetch(invoke),
      storage: this.slot,
      socket: (url) => new ChannelSocket(url, invoke),
      backoff: options.backoff,
      // The app's channel is not a network socket: the app itself vouches for the window.
      socketCredentials: 'none',
      // The token is the app's: it renews it, and a 401 says when it is over.
      sessionClock: false,
    });
    this.inner.onSessionEnd(() => this.innerEnded());
  }

  // ---- the app's commands ------------------------------------------------------------

  /** One command; failures become `CommandFailure`s. */
  private async call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
    try {
      return await this.invoke<T>(cmd, args);
    } catch (e) {
      throw commandFailure(e);
    }
  }

  /** The app's state as last seen (`null` before the first `restore()` or `refreshState()`). */
  state(): DesktopState | null {
    return this.desktop;
  }

  /** Called with every new state of the app, from the window's own commands and from
   *  the app (the tray, the built-in collector). Returns a function that stops it. */
  onState(listener: (state: DesktopState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Called with sentences worth showing that are not errors of a user's action (a
   *  remote sign-in that ended on its own). */
  onNotice(listener: (notice: string) => void): () => void {
    this.noticeListeners.add(listener);
    return () => this.noticeListeners.delete(listener);
  }

  /** Starts following the app's `desktop-state` event (once). */
  watch(): void {
    if (this.watching) return;
    this.watching = true;
    this.listenTo<DesktopState>('desktop-state', (event) => this.apply(event.payload)).catch(() => {
      // Without the event the window still works; it learns of changes from its own
      // commands only.
      this.watching = false;
    });
  }

  async refreshState(): Promise<DesktopState> {
    return this.apply(await this.call<DesktopState>('desktop_state'));
  }

  async saveSettings(settings: DesktopSettings): Promise<DesktopState> {
    return this.apply(await this.call<DesktopState>('save_settings', { settings }));
  }

  async setPaused(paused: boolean): Promise<DesktopState> {
    return this.apply(await this.call<DesktopState>('set_paused', { paused }));
  }

  /** Signs in to a remote collector; the window then shows it (the current session
   *  ends, and `restore()` picks up the remote one). */
  async remoteSignIn(url: string, username: string, password: string): Promise<DesktopState> {
    return this.apply(await this.call<DesktopState>('remote_sign_in', { url, username, password }));
  }

  /** Signs out of the remote collector; the window shows this machine again. */
  disconnect(): Promise<DesktopState> {
    const done = this.call<DesktopState>('remote_sign_out').then((state) => this.apply(state));
    this.pending = done.catch(() => undefined);
    return done;
  }

  openMain(): Promise<void> {
    return this.call('open_main');
  }

  openQuickView(): Promise<void> {
    return this.call('open_quick_view');
  }

  quit(): Promise<void> {
    return this.call('quit');
  }

  /** Issues an API key for an agent (`POST /api/keys`, admins only), optionally bound to
   *  one host name. The secret is in this answer only. */
  async createAgentKey(name: string, hostname: string | null): Promise<CreatedKey> {
    const response = await apiFetch(this.invoke)(`${DESKTOP_ORIGIN}/api/keys`, {
      method: 'POST',
      body: JSON.stringify({ name, hostname }),
    });
    let parsed: unknown = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    if (response.ok) {
      const created = parsed as Partial<CreatedKey> | null;
      if (created && typeof created.key === 'string' && created.key.length > 0 && created.summary) return created as CreatedKey;
      throw new ApiError(response.status, 'bad_reply', 'The collector issued no key. Try again.');
    }
    const error = (parsed ?? {}) as Partial<ErrorBody>;
    throw new ApiError(
      response.status,
      typeof error.error === 'string' ? error.error : `http_${response.status}`,
      typeof error.message === 'string' && error.message ? error.message : `The collector answered ${response.status}.`,
      error.field ?? null,
    );
  }

  /** Takes in a new state of the app; a change of source ends the current session. */
  private apply(state: DesktopState): DesktopState {
    this.desktop = state;
    for (const listener of [...this.stateListeners]) listener(state);
    if (this.sessionSource !== null && sourceKey(state) !== this.sessionSource) {
      this.sessionSource = null;
      this.inner.signOut();
      this.emitEnd(
        state.mode === 'remote'
          ? `Now showing the collector at ${sourceName(state)}.`
          : 'Signed out of the remote collector: showing this machine again.',
      );
    }
    return state;
  }

  private emitEnd(reason: string) {
    for (const listener of [...this.endListeners]) listener(reason);
  }

  private notice(text: string) {
    for (const listener of [...this.noticeListeners]) listener(text);
  }

  // ---- session -------------------------------------------------------------------------

  session(): Session | null {
    return this.inner.session();
  }

  onSessionEnd(listener: (reason: string) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** The window's session for the app's current mode. In remote mode, a sign-in that no
   *  longer works is signed out, and the session is this machine's. */
  async restore(): Promise<Session | null> {
    await this.pending;
    this.watch();
    const state = await this.call<DesktopState>('desktop_state');
    // A session of another source is over: this one replaces it, without announcing.
    this.sessionSource = null;
    this.apply(state);
    return this.establish(state);
  }

  private async establish(state: DesktopState): Promise<Session | null> {
    this.inner.signOut();
    this.sessionSource = sourceKey(state);
    this.slot.setItem('', JSON.stringify(implicitSession(state)));
    let session: Session | null;
    this.establishing = true;
    try {
      // Asks the collector who we are (`/api/auth/me`): the role it grants counts.
      session = await this.inner.restore();
    } finally {
      this.establishing = false;
    }
    if (session || state.mode === 'local') return session;
    const where = sourceName(state);
    this.sessionSource = null;
    const local = await this.call<DesktopState>('remote_sign_out');
    this.apply(local);
    this.notice(`Your sign-in to ${where} has ended. Showing this machine; connect again in Settings.`);
    return local.mode === 'local' ? this.establish(local) : null;
  }

  /** The inner session ended on its own: expired, revoked or refused. */
  private innerEnded() {
    if (this.establishing || this.sessionSource === null) return;
    const state = this.desktop;
    this.sessionSource = null;
    if (state?.mode === 'remote') {
      // The token the app holds no longer works: drop it, and show this machine.
      this.pending = this.call<DesktopState>('remote_sign_out')
        .then((s) => this.apply(s))
        .catch(() => undefined);
      this.emitEnd(`Your sign-in to ${sourceName(state)} has ended (it expired or was revoked). Showing this machine; connect again in Settings.`);
    } else {
      // This machine's implicit session is renewed at once: nothing to tell (an empty
      // reason).
      this.emitEnd('');
    }
  }

  /** Signs in to the remote collector last used (the dashboard's sign-in form; the
   *  Settings view names the collector itself). */
  async signIn(username: string, password: string): Promise<Session> {
    const url = this.desktop?.settings.remote_url;
    if (!url) throw new CommandFailure('invalid', 'Choose a remote collector in Settings first.');
    await this.remoteSignIn(url, username, password);
    const session = await this.restore();
    if (!session) throw new CommandFailure('unauthorized', 'The remote collector did not accept the sign-in.');
    return session;
  }

  /** Signs out of the remote collector (in local mode there is nothing to sign out of). */
  signOut(): void {
    if (this.desktop?.mode !== 'remote') return;
    this.disconnect().catch((e) => this.notice(commandFailure(e).message));
  }

  // ---- data: the web transport's, over the app's commands ------------------------------

  hosts(): Promise<HostSummary[]> {
    return this.inner.hosts();
  }

  live(hostname: string, handlers: LiveHandlers): LiveSubscription {
    return this.inner.live(hostname, handlers);
  }

  snapshots(hostname: string, page: { limit: number; offset: number }): Promise<Page<SnapshotSummary>> {
    return this.inner.snapshots(hostname, page);
  }

  snapshot(id: number): Promise<StoredSnapshot> {
    return this.inner.snapshot(id);
  }

  series(hostname: string, range: Range & { limit?: number }): Promise<Series> {
    return this.inner.series(hostname, range);
  }

  topProcesses(host: HostRef, range: Range & { n?: number }): Promise<TopProcess[]> {
    return this.inner.topProcesses(host, range);
  }

  searchProcesses(q: string, limit?: number): Promise<ProcessSearch> {
    return this.inner.searchProcesses(q, limit);
  }

  networkMap(request: NetworkMapRequest): Promise<NetworkMap> {
    return this.inner.networkMap(request);
  }

  processHistory(host: HostRef, pid: number, startTime: string | null, range: Range): Promise<ProcessHistoryPoint[]> {
    return this.inner.processHistory(host, pid, startTime, range);
  }

  processDetails(host: HostRef, pid: number, startTime: string | null): Promise<ProcessDetails> {
    return this.inner.processDetails(host, pid, startTime);
  }

  audit(query: { host?: string; limit: number; offset: number }): Promise<AuditEntry[]> {
    return this.inner.audit(query);
  }

  download(request: ExportRequest): Promise<Download> {
    return this.inner.download(request);
  }

  act(request: ActionRequest): Promise<ActionResult> {
    return this.inner.act(request);
  }

  actMany(request: BulkRequest): Promise<BulkResult[]> {
    return this.inner.actMany(request);
  }

  deleteHost(host: HostRef): Promise<void> {
    return this.inner.deleteHost(host);
  }

  alerts(): Promise<Alert[]> {
    return this.inner.alerts();
  }

  // This machine's dashboards are kept in the app's own store, through the same routes
  // a collector serves; a remote collector keeps the signed-in user's.
  dashboards(): Promise<Dashboard[]> {
    return this.inner.dashboards();
  }

  saveDashboard(id: number | null, dashboard: DashboardInput): Promise<Dashboard> {
    return this.inner.saveDashboard(id, dashboard);
  }

  deleteDashboard(id: number): Promise<void> {
    return this.inner.deleteDashboard(id);
  }

  fleet(handlers: FleetHandlers): LiveSubscription {
    return this.inner.fleet(handlers);
  }

  setHostLabels(host: HostRef, labels: Record<string, string>): Promise<HostSummary> {
    return this.inner.setHostLabels(host, labels);
  }

  alertHistory(page: { limit: number; offset: number }): Promise<AlertEvent[]> {
    return this.inner.alertHistory(page);
  }

  alertDeliveries(page: { limit: number; offset: number }): Promise<AlertDelivery[]> {
    return this.inner.alertDeliveries(page);
  }

  alertRules(): Promise<AlertRule[]> {
    return this.inner.alertRules();
  }

  saveAlertRule(rule: AlertRule, previous: string | null): Promise<AlertRule> {
    return this.inner.saveAlertRule(rule, previous);
  }

  deleteAlertRule(name: string): Promise<void> {
    return this.inner.deleteAlertRule(name);
  }

  alertChannels(): Promise<AlertChannel[]> {
    return this.inner.alertChannels();
  }

  testAlertChannel(name: string): Promise<void> {
    return this.inner.testAlertChannel(name);
  }

  silences(): Promise<Silence[]> {
    return this.inner.silences();
  }

  createSilence(silence: NewSilence): Promise<Silence> {
    return this.inner.createSilence(silence);
  }

  deleteSilence(id: number): Promise<void> {
    return this.inner.deleteSilence(id);
  }
}

/** True inside a Tauri window. */
export function inTauri(): boolean {
  return typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window;
}
