// The one place the dashboard talks to a backend. `Transport` is what the UI needs;
// `WebTransport` implements it over the collector's REST API and WebSockets (fetch +
// WebSocket, reconnecting with a debounced, jittered backoff). The desktop app's Tauri
// implementation (`tauri.ts`, over the app's commands) is picked by `createTransport()`.
//
// The sign-in token lives in memory and in sessionStorage (so a reload keeps the
// session but closing the tab ends it), never in localStorage and never in a URL:
// browsers cannot set headers on a WebSocket, so each connection first asks for a
// single-use ticket (`POST /api/auth/ws-ticket`, valid for seconds) and puts that in the
// URL instead, where a proxy's log would find nothing worth stealing.

import { DeltaMismatch, applyDelta } from './delta';
import type {
  Alert,
  AlertChannel,
  AlertDelivery,
  AlertEvent,
  AlertRule,
  AuditEntry,
  BulkActionRequest,
  BulkActionResponse,
  BulkResult,
  BulkTarget,
  Dashboard,
  DashboardInput,
  ErrorBody,
  FleetRow,
  FleetUpdate,
  HostSummary,
  LiveMessage,
  LoginResponse,
  NetworkMap,
  NewSilence,
  ProcessAction,
  ProcessDetails,
  ProcessHistoryPoint,
  ProcessSearch,
  Role,
  Series,
  Silence,
  Snapshot,
  SnapshotSummary,
  TopProcess,
} from './model';
import { TauriTransport } from './tauri';

export type { BulkResult, ProcessHistoryPoint };

// ---------------------------------------------------------------------------------------
// What the UI sees

/** A signed-in user. */
export interface Session {
  token: string;
  username: string;
  role: Role;
  /** When the token stops working (RFC 3339). */
  expires_at: string;
}

/** A stored snapshot as the API serves it: the snapshot plus its id and the names the
 *  original API uses. (Processes also carry alias fields; the UI uses the snapshot's.) */
export type StoredSnapshot = Snapshot & {
  snapshot_id: number;
  hostname: string;
  snapshot_time: string;
};

/** A host as the API names it: its id (preferred) or its host name. */
export type HostRef = number | string;

export interface Range {
  from?: string;
  to?: string;
}

/** `GET /api/network-map`'s parameters: `hosts` is names or patterns separated by commas. */
export interface NetworkMapRequest extends Range {
  hosts?: string;
  max_nodes?: number;
  max_edges?: number;
}

export interface Page<T> {
  items: T[];
  /** How many there are in all. */
  total: number;
}

export type ExportFormat = 'csv' | 'json';

export type ExportRequest =
  | { kind: 'snapshot'; snapshotId: number; format: ExportFormat }
  | { kind: 'range'; host: HostRef; from: string; to: string; format: ExportFormat };

/** A file to save. */
export interface Download {
  filename: string;
  blob: Blob;
}

export interface ActionRequest {
  host: HostRef;
  pid: number;
  action: ProcessAction;
  /** The start time from the snapshot the user saw: the server refuses to act if the
   *  pid now belongs to another process. Sent whenever the snapshot has one; `null` for
   *  a process without (a short upload's), which the server then refuses to act on. */
  startTime: string | null;
  /** The process and all its descendants, children first. */
  tree: boolean;
}

export interface ActionResult {
  status: string;
  message: string;
  signalled?: number;
}

/** One action on several processes of one host: each carried out on its own, with its
 *  own pid-reuse guard and audit row. */
export interface BulkRequest {
  host: HostRef;
  action: ProcessAction;
  /** At most `MAX_BULK_TARGETS`, each pid once, with the start time the user saw. */
  targets: BulkTarget[];
}

/** The most processes one bulk action may name: the collector's `MAX_BULK_TARGETS`,
 *  over which it refuses the whole request. */
export const MAX_BULK_TARGETS = 1000;

export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'closed';

/** The live stream's health, for the "Live / Reconnecting" indicator. */
export interface LiveStatus {
  state: LiveState;
  /** Failed attempts in a row. */
  attempt: number;
  /** When the next attempt starts (ms since the epoch), while reconnecting. */
  retryAt: number | null;
  /** When the last snapshot arrived. */
  lastMessageAt: number | null;
}

export interface LiveHandlers {
  onSnapshot(snapshot: StoredSnapshot): void;
  onStatus(status: LiveStatus): void;
}

export interface FleetHandlers {
  /** Hosts whose figures or online state changed. */
  onRows(rows: FleetRow[]): void;
  onStatus(status: LiveStatus): void;
}

/** How often the fleet is polled where there is no fleet stream (the desktop app's own
 *  collector, reached through its commands). */
export const FLEET_POLL_MS = 2000;

export interface LiveSubscription {
  /** Stops the stream for good. */
  close(): void;
  /** Skips the wait before the next attempt. */
  retryNow(): void;
}

/** A failed call, with the server's `{error, message}` when there was one. */
export class ApiError extends Error {
  /** HTTP status; 0 when the collector could not be reached at all. */
  readonly status: number;
  /** The server's machine-readable kind (`pid_reused`, `forbidden`, ...), or
   *  `network` / `http_<status>` when the server said nothing usable. */
  readonly code: string;
  readonly field: string | null;

  constructor(status: number, code: string, message: string, field: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** Everything the dashboard asks of a backend. */
export interface Transport {
  readonly kind: 'web' | 'tauri';
  /** The current session, if signed in. */
  session(): Session | null;
  signIn(username: string, password: string): Promise<Session>;
  /** Picks up a session kept from before a reload, if it still works. */
  restore(): Promise<Session | null>;
  signOut(): void;
  /** Called when the session ends on its own (expired or revoked), with a sentence
   *  saying so. Returns a function that stops listening. */
  onSessionEnd(listener: (reason: string) => void): () => void;

  hosts(): Promise<HostSummary[]>;
  /** The newest snapshot of one host, then every new one as it arrives. */
  live(hostname: string, handlers: LiveHandlers): LiveSubscription;
  snapshots(hostname: string, page: { limit: number; offset: number }): Promise<Page<SnapshotSummary>>;
  snapshot(id: number): Promise<StoredSnapshot>;
  series(hostname: string, range: Range & { limit?: number }): Promise<Series>;
  topProcesses(host: HostRef, range: Range & { n?: number }): Promise<TopProcess[]>;
  /** Processes matching a query on every host's newest snapshot, grouped by host. */
  searchProcesses(q: string, limit?: number): Promise<ProcessSearch>;
  /** The fleet's network map: live without a range, else as of `to` alone or over `from`..`to`. */
  networkMap(request: NetworkMapRequest): Promise<NetworkMap>;
  processHistory(host: HostRef, pid: number, startTime: string | null, range: Range): Promise<ProcessHistoryPoint[]>;
  /** One process in depth (threads, open files, limits, ...), read now on its host; a
   *  start time makes a reused pid an error (409) rather than another process's answer. */
  processDetails(host: HostRef, pid: number, startTime: string | null): Promise<ProcessDetails>;
  audit(query: { host?: string; limit: number; offset: number }): Promise<AuditEntry[]>;
  download(request: ExportRequest): Promise<Download>;
  act(request: ActionRequest): Promise<ActionResult>;
  /** One action on several processes; the answer lists each one's outcome. */
  actMany(request: BulkRequest): Promise<BulkResult[]>;
  /** Deletes a host with its whole history (admins). */
  deleteHost(host: HostRef): Promise<void>;
  /** The signed-in user's dashboards and those shared with them. */
  dashboards(): Promise<Dashboard[]>;
  /** Stores a new dashboard (`id` null) or changes one of the user's own. */
  saveDashboard(id: number | null, dashboard: DashboardInput): Promise<Dashboard>;
  deleteDashboard(id: number): Promise<void>;
  /** Follows the fleet overview's changes: the hosts whose figures or state changed. */
  fleet(handlers: FleetHandlers): LiveSubscription;
  /** Sets the labels an admin gives a host (replacing the admin's earlier ones). */
  setHostLabels(host: HostRef, labels: Record<string, string>): Promise<HostSummary>;

  /** Firing and pending alerts, and those resolved in the last 24 hours. */
  alerts(): Promise<Alert[]>;
  /** Every firing and resolution, newest first. */
  alertHistory(page: { limit: number; offset: number }): Promise<AlertEvent[]>;
  /** Every notification attempt, newest first. */
  alertDeliveries(page: { limit: number; offset: number }): Promise<AlertDelivery[]>;
  alertRules(): Promise<AlertRule[]>;
  /** Makes a rule (`previous` null) or replaces the rule named `previous` (admins). */
  saveAlertRule(rule: AlertRule, previous: string | null): Promise<AlertRule>;
  deleteAlertRule(name: string): Promise<void>;
  /** Channels, their secrets masked. */
  alertChannels(): Promise<AlertChannel[]>;
  /** Sends a test notification; fails saying why it did not arrive. */
  testAlertChannel(name: string): Promise<void>;
  silences(): Promise<Silence[]>;
  createSilence(silence: NewSilence): Promise<Silence>;
  deleteSilence(id: number): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Reconnecting WebSocket

export interface BackoffOptions {
  /** Wait before the first retry. Never zero: a collector that restarts should not be
   *  hammered by every open dashboard at once. */
  initialMs: number;
  /** Longest wait. */
  maxMs: number;
  /** Growth per failed attempt. */
  factor: number;
  /** Share of the wait that is random (0-1), so that many dashboards spread out. */
  jitter: number;
  /** Close and error events within this time count as one drop. */
  debounceMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialMs: 1000,
  maxMs: 15_000,
  factor: 2,
  jitter: 0.5,
  debounceMs: 250,
};

/** The wait before attempt number `attempt` (0-based), jittered downwards: between
 *  `(1 - jitter)` and 1 times the exponential delay. */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF, random = Math.random): number {
  const exp = Math.min(options.maxMs, options.initialMs * options.factor ** Math.max(0, attempt));
  return Math.max(options.debounceMs, Math.round(exp * (1 - options.jitter * random())));
}

/** What a WebSocket must offer; the browser's does, and tests pass a fake. */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string) => SocketLike;

export interface LiveStreamOptions {
  /** The URL for each attempt (built afresh: it carries a single-use ticket). */
  url: () => string | Promise<string>;
  socket?: SocketFactory;
  onMessage: (data: string) => void;
  onStatus: (status: LiveStatus) => void;
  /** The server closed with 4001: the token expired. No retry. */
  onExpired: () => void;
  /** Asked before retrying after a failure: `false` means the session is gone (a
   *  rejected upgrade looks like any network failure to a browser). */
  stillAuthorized?: () => Promise<boolean>;
  backoff?: Partial<BackoffOptions>;
  random?: () => number;
  now?: () => number;
}

/** Close code the collector sends when the token expires. */
export const CLOSE_TOKEN_EXPIRED = 4001;

/** A WebSocket that reconnects by itself until closed. */
export class LiveStream {
  private socket: SocketLike | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private status: LiveStatus = { state: 'connecting', attempt: 0, retryAt: null, lastMessageAt: null };
  private readonly backoff: BackoffOptions;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly factory: SocketFactory;
  private generation = 0;

  constructor(private readonly options: LiveStreamOptions) {
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.factory = options.socket ?? ((url) => new WebSocket(url) as unknown as SocketLike);
  }

  /** Opens the first connection. */
  start(): this {
    this.connect();
    return this;
  }

  current(): LiveStatus {
    return this.status;
  }

  private setStatus(patch: Partial<LiveStatus>) {
    this.status = { ...this.status, ...patch };
    this.options.onStatus(this.status);
  }

  private connect() {
    if (this.stopped) return;
    this.timer = null;
    const generation = ++this.generation;
    this.setStatus({ state: this.status.attempt === 0 ? 'connecting' : 'reconnecting', retryAt: null });
    let url: string | Promise<string>;
    try {
      url = this.options.url();
    } catch {
      this.dropped(generation);
      return;
    }
    if (typeof url === 'string') {
      this.open(url, generation);
      return;
    }
    url.then(
      (ready) => {
        if (generation === this.generation && !this.stopped) this.open(ready, generation);
      },
      () => {
        if (generation === this.generation && !this.stopped) this.dropped(generation);
      },
    );
  }

  private open(url: string, generation: number) {
    let socket: SocketLike;
    try {
      socket = this.factory(url);
    } catch {
      this.dropped(generation);
      return;
    }
    this.socket = socket;
    // Events of a socket that has been replaced are ignored: `generation` tells.
    socket.onopen = () => {
      if (generation !== this.generation || this.stopped) return;
      this.setStatus({ state: 'live', retryAt: null });
    };
    socket.onmessage = (ev) => {
      if (generation !== this.generation || this.stopped) return;
      // The backoff starts over only once data flows: a server that accepts and then
      // closes at once must not be retried at full speed forever.
      this.setStatus({ state: 'live', attempt: 0, lastMessageAt: this.now() });
      if (typeof ev.data === 'string') this.options.onMessage(ev.data);
    };
    socket.onerror = () => {
      // A close event always follows; reconnecting is decided there, once.
    };
    socket.onclose = (ev) => {
      if (generation !== this.generation || this.stopped) return;
      this.socket = null;
      if (ev.code === CLOSE_TOKEN_EXPIRED) {
        void this.expiredOrRenewed(generation);
        return;
      }
      this.dropped(generation);
    };
  }

  /** The server ended the stream with the token it was opened with. If the session has a
   *  newer token since (it was renewed), open the stream again with that one; else the
   *  session is over. */
  private async expiredOrRenewed(generation: number) {
    let renewed = false;
    if (this.options.stillAuthorized) {
      try {
        renewed = await this.options.stillAuthorized();
      } catch {
        renewed = false;
      }
    }
    if (this.stopped || generation !== this.generation) return;
    if (renewed) {
      this.connect();
      return;
    }
    this.stopped = true;
    this.setStatus({ state: 'closed', retryAt: null });
    this.options.onExpired();
  }

  /** Schedules the next attempt, once per drop however many events report it. */
  private dropped(generation: number) {
    if (this.stopped || this.timer !== null || generation !== this.generation) return;
    const delay = backoffDelay(this.status.attempt, this.backoff, this.random);
    this.setStatus({ state: 'reconnecting', attempt: this.status.attempt + 1, retryAt: this.now() + delay });
    this.timer = setTimeout(() => void this.retry(), delay);
  }

  private async retry() {
    this.timer = null;
    if (this.stopped) return;
    if (this.options.stillAuthorized && this.status.attempt > 1) {
      let ok = true;
      try {
        ok = await this.options.stillAuthorized();
      } catch {
        ok = true; // cannot tell (network down): keep trying
      }
      if (this.stopped) return;
      if (!ok) {
        this.stopped = true;
        this.setStatus({ state: 'closed', retryAt: null });
        this.options.onExpired();
        return;
      }
    }
    this.connect();
  }

  /** Drops the connection and opens a new one at once, which starts over with full
   *  snapshots (after a delta that did not fit what the client holds). */
  reconnect() {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
      socket.close(1000, 'resubscribing');
    }
    this.connect();
  }

  /** Retries at once (the "Retry now" button, the browser coming back online). */
  retryNow() {
    if (this.stopped || this.status.state !== 'reconnecting' || this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.connect();
  }

  close() {
    if (this.stopped && this.socket === null) return;
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    this.generation += 1;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
      socket.close(1000, 'dashboard closed the stream');
    }
    this.setStatus({ state: 'closed', retryAt: null });
  }
}

// ---------------------------------------------------------------------------------------
// Over HTTP: the collector's REST API and WebSockets

const SESSION_KEY = 'procyon.session';

/** Storage the web transport keeps the session in (sessionStorage in a browser). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface WebTransportOptions {
  /** The collector's origin, e.g. `http://127.0.0.1:7450`. */
  origin: string;
  fetch?: typeof fetch;
  storage?: KeyValueStore | null;
  socket?: SocketFactory;
  backoff?: Partial<BackoffOptions>;
  /** How live sockets prove who opens them: `ticket` (the default) asks the collector
   *  for a single-use ticket first; `none` for sockets that never cross a network (the
   *  desktop app's channel, which is its own sign-in). */
  socketCredentials?: 'ticket' | 'none';
  /** When someone last used the dashboard (ms since the epoch). A token is renewed
   *  before it expires only if this moved since it was issued, so that a dashboard left
   *  alone signs out. Defaults to the last key press or pointer press on the page. */
  lastActivity?: () => number;
  /** Whether this transport keeps the session's clock: ends it at its expiry and renews
   *  it before (the default). The desktop app's Rust side holds the token and renews it
   *  itself; there a refused request (401) is what ends the session. */
  sessionClock?: boolean;
}

/** Renew this long before a token expires (or halfway through shorter tokens). */
const RENEW_BEFORE_MS = 2 * 60_000;
/** After a renewal that failed for want of a network, try again this soon. */
const RENEW_RETRY_MS = 30_000;

/** The last key press or pointer press on this page, tracked once per page. */
let lastInput = Date.now();
let trackingInput = false;
function pageActivity(): number {
  if (!trackingInput && typeof globalThis.addEventListener === 'function') {
    trackingInput = true;
    const note = () => {
      lastInput = Date.now();
    };
    for (const type of ['pointerdown', 'keydown', 'wheel']) globalThis.addEventListener(type, note, { capture: true, passive: true });
  }
  return lastInput;
}

function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

const seg = (v: string | number) => encodeURIComponent(String(v));

/** A filename from `Content-Disposition`, reduced to safe characters. */
export function filenameFrom(disposition: string | null, fallback: string): string {
  const m = disposition ? /filename="?([^";]+)"?/i.exec(disposition) : null;
  const name = (m ? m[1] : fallback).replace(/[^A-Za-z0-9._-]+/g, '_');
  return name.length > 0 ? name : fallback;
}

export class WebTransport implements Transport {
  readonly kind = 'web' as const;
  private current: Session | null = null;
  private readonly listeners = new Set<(reason: string) => void>();
  private expiryTimer: ReturnType<typeof setTimeout> | null = null;
  private renewTimer: ReturnType<typeof setTimeout> | null = null;
  /** When the current token was received: activity after it earns a renewal. */
  private issuedAt = 0;
  private readonly lastActivity: () => number;
  private readonly fetcher: typeof fetch;
  private readonly storage: KeyValueStore | null;

  constructor(private readonly options: WebTransportOptions) {
    this.fetcher = options.fetch ?? ((input, init) => fetch(input, init));
    this.storage = options.storage === undefined ? safeSessionStorage() : options.storage;
    this.lastActivity = options.lastActivity ?? pageActivity;
    this.lastActivity();
  }

  session(): Session | null {
    return this.current;
  }

  onSessionEnd(listener: (reason: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private begin(session: Session) {
    this.current = session;
    this.storage?.setItem(SESSION_KEY, JSON.stringify(session));
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    if (this.options.sessionClock === false) return;
    // Timers cannot wait longer than ~24.8 days; tokens live hours.
    const ms = Math.min(2 ** 31 - 1, Date.parse(session.expires_at) - Date.now());
    this.expiryTimer = setTimeout(() => this.end('Your sign-in has expired. Sign in again to continue.'), Math.max(0, ms));
    this.issuedAt = Date.now();
    this.scheduleRenewal(Math.max(0, ms - Math.min(RENEW_BEFORE_MS, ms / 2)));
  }

  private scheduleRenewal(ms: number) {
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), Math.min(2 ** 31 - 1, ms));
  }

  /** Shortly before the token expires: a new one if someone used the dashboard since the
   *  last, else nothing (the session ends at its expiry). The collector refuses once the
   *  sign-in is its maximum age old; then the session ends as it would have. */
  private async renew() {
    this.renewTimer = null;
    const session = this.current;
    if (!session || !(this.lastActivity() > this.issuedAt)) return;
    try {
      const body = await this.request<LoginResponse>('POST', '/api/auth/refresh');
      if (this.current !== session) return;
      this.begin({ ...session, token: body.token, role: body.role, expires_at: body.expires_at });
    } catch (e) {
      // A 401 has already ended the session; a network failure is retried until expiry.
      if (this.current === session && !(e instanceof ApiError && e.status === 401)) {
        if (Date.parse(session.expires_at) - Date.now() > RENEW_RETRY_MS) this.scheduleRenewal(RENEW_RETRY_MS);
      }
    }
  }

  private clear() {
    this.current = null;
    this.storage?.removeItem(SESSION_KEY);
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    if (this.renewTimer !== null) clearTimeout(this.renewTimer);
    this.expiryTimer = null;
    this.renewTimer = null;
  }

  /** The session ended without the user asking. */
  private end(reason: string) {
    if (this.current === null) return;
    this.clear();
    for (const l of [...this.listeners]) l(reason);
  }

  async signIn(username: string, password: string): Promise<Session> {
    const body = await this.request<LoginResponse>('POST', '/api/auth/login', { json: { username, password }, anonymous: true });
    const session: Session = {
      token: body.token,
      username: body.username,
      role: body.role,
      expires_at: body.expires_at,
    };
    this.begin(session);
    return session;
  }

  async restore(): Promise<Session | null> {
    let saved: Session | null = null;
    try {
      const text = this.storage?.getItem(SESSION_KEY);
      saved = text ? (JSON.parse(text) as Session) : null;
    } catch {
      saved = null;
    }
    if (!saved || typeof saved.token !== 'string' || !(Date.parse(saved.expires_at) > Date.now() + 5000)) {
      this.clear();
      return null;
    }
    this.current = saved;
    try {
      // The role may have changed since; the server's word counts.
      const me = await this.request<{ username: string; role: Role }>('GET', '/api/auth/me');
      const session = { ...saved, username: me.username, role: me.role };
      this.begin(session);
      return session;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.clear();
        return null;
      }
      // The collector is unreachable: keep the session and let the UI say so.
      this.begin(saved);
      return saved;
    }
  }

  signOut(): void {
    this.clear();
  }

  /** One REST call; errors become `ApiError`s with the server's message. */
  private async request<T>(
    method: string,
    path: string,
    opts: { json?: unknown; anonymous?: boolean; raw?: boolean } = {},
  ): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (!opts.anonymous) {
      if (!this.current) throw new ApiError(401, 'unauthorized', 'You are not signed in.');
      headers.Authorization = `Bearer ${this.current.token}`;
    }
    let body: string | undefined;
    if (opts.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.json);
    }
    let response: Response;
    try {
      response = await this.fetcher(`${this.options.origin}${path}`, { method, headers, body, credentials: 'omit' });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the collector. Check that `procyon serve` is running and that this machine can reach it.');
    }
    if (!response.ok) {
      let error: Partial<ErrorBody> = {};
      try {
        error = (await response.json()) as ErrorBody;
      } catch {
        // Not our JSON (a proxy's error page, say): fall back to the status.
      }
      const message =
        typeof error.message === 'string' && error.message.length > 0
          ? error.message
          : `The collector answered ${response.status} ${response.statusText}.`.replace(' .', '.');
      const apiError = new ApiError(response.status, typeof error.error === 'string' ? error.error : `http_${response.status}`, message, error.field ?? null);
      if (response.status === 401 && !opts.anonymous) {
        this.end('Your sign-in is no longer valid (it expired or the account changed). Sign in again.');
      }
      throw apiError;
    }
    if (opts.raw) return response as unknown as T;
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  hosts(): Promise<HostSummary[]> {
    return this.request('GET', '/api/hosts/');
  }

  live(hostname: string, handlers: LiveHandlers): LiveSubscription {
    const wsOrigin = this.options.origin.replace(/^http/, 'ws');
    // `delta=1`: the host's first snapshot whole, then deltas against the one held. A
    // collector without deltas ignores the parameter and sends stored snapshots.
    let held: Snapshot | null = null;
    const stream: LiveStream = new LiveStream({
      url:
        this.options.socketCredentials === 'none'
          ? () => `${wsOrigin}/ws/process-snapshots/${query({ hostname, delta: 1 })}`
          : async () => {
              const { ticket } = await this.request<{ ticket: string }>('POST', '/api/auth/ws-ticket');
              return `${wsOrigin}/ws/process-snapshots/${query({ ticket, hostname, delta: 1 })}`;
            },
      socket: this.options.socket,
      backoff: this.options.backoff,
      onMessage: (data) => {
        let parsed: StoredSnapshot | LiveMessage;
        try {
          parsed = JSON.parse(data) as StoredSnapshot | LiveMessage;
        } catch {
          return; // not a snapshot: nothing to show
        }
        if (!parsed || typeof parsed !== 'object') return;
        let next: StoredSnapshot;
        if ('type' in parsed && (parsed.type === 'full' || parsed.type === 'delta')) {
          let snapshot: Snapshot;
          try {
            if (parsed.type === 'full') snapshot = parsed.snapshot;
            else if (held) snapshot = applyDelta(held, parsed.delta);
            else throw new DeltaMismatch('a delta before any full snapshot');
          } catch (e) {
            // Never show a snapshot that may be wrong: start over with a full one.
            if (!(e instanceof DeltaMismatch)) throw e;
            held = null;
            stream.reconnect();
            return;
          }
          if (snapshot.host.hostname !== hostname) return;
          held = snapshot;
          next = { ...snapshot, snapshot_id: parsed.snapshot_id, hostname, snapshot_time: snapshot.taken_at };
        } else {
          next = parsed as StoredSnapshot;
        }
        // The stream carries only this host's snapshots; checking again costs nothing
        // and guards against a server without the `hostname` filter.
        if (next.host && next.host.hostname === hostname) handlers.onSnapshot(next);
      },
      onStatus: handlers.onStatus,
      onExpired: () => this.end('Your sign-in has expired. Sign in again to continue.'),
      stillAuthorized: () => this.stillSignedIn(),
    });
    return follow(stream);
  }

  async snapshots(hostname: string, page: { limit: number; offset: number }): Promise<Page<SnapshotSummary>> {
    const response = await this.request<Response>('GET', `/api/process-snapshots/list/${query({ hostname, ...page })}`, { raw: true });
    const items = (await response.json()) as SnapshotSummary[];
    const total = Number(response.headers.get('X-Total-Count'));
    return { items, total: Number.isFinite(total) && total >= items.length ? total : items.length };
  }

  snapshot(id: number): Promise<StoredSnapshot> {
    return this.request('GET', `/api/process-snapshots/${seg(id)}/`);
  }

  series(hostname: string, range: Range & { limit?: number }): Promise<Series> {
    return this.request('GET', `/api/process-snapshots/series/${query({ hostname, ...range })}`);
  }

  topProcesses(host: HostRef, range: Range & { n?: number }): Promise<TopProcess[]> {
    return this.request('GET', `/api/hosts/${seg(host)}/top-processes${query({ ...range })}`);
  }

  searchProcesses(q: string, limit?: number): Promise<ProcessSearch> {
    return this.request('GET', `/api/processes${query({ q, limit })}`);
  }

  networkMap(request: NetworkMapRequest): Promise<NetworkMap> {
    return this.request('GET', `/api/network-map${query({ ...request })}`);
  }

  processHistory(host: HostRef, pid: number, startTime: string | null, range: Range): Promise<ProcessHistoryPoint[]> {
    return this.request('GET', `/api/hosts/${seg(host)}/process-history${query({ pid, start_time: startTime, ...range })}`);
  }

  processDetails(host: HostRef, pid: number, startTime: string | null): Promise<ProcessDetails> {
    return this.request('GET', `/api/hosts/${seg(host)}/processes/${seg(pid)}/details${query({ start_time: startTime })}`);
  }

  audit(q: { host?: string; limit: number; offset: number }): Promise<AuditEntry[]> {
    return this.request('GET', `/api/audit${query(q)}`);
  }

  async download(request: ExportRequest): Promise<Download> {
    const path =
      request.kind === 'snapshot'
        ? `/api/process-snapshots/${seg(request.snapshotId)}/export${query({ format: request.format })}`
        : `/api/hosts/${seg(request.host)}/export${query({ from: request.from, to: request.to, format: request.format })}`;
    const response = await this.request<Response>('GET', path, { raw: true });
    const fallback = request.kind === 'snapshot' ? `snapshot-${request.snapshotId}.${request.format}` : `range.${request.format}`;
    return { filename: filenameFrom(response.headers.get('Content-Disposition'), fallback), blob: await response.blob() };
  }

  act(request: ActionRequest): Promise<ActionResult> {
    const q = query({ start_time: request.startTime, tree: request.tree ? 'true' : undefined });
    return this.request('POST', `/api/monitoring/${seg(request.host)}/process/${seg(request.pid)}/${seg(request.action)}${q}`);
  }

  async actMany(request: BulkRequest): Promise<BulkResult[]> {
    const body: BulkActionRequest = { targets: request.targets };
    const answer = await this.request<BulkActionResponse>('POST', `/api/monitoring/${seg(request.host)}/processes/${seg(request.action)}`, {
      json: body,
    });
    return answer.results;
  }

  deleteHost(host: HostRef): Promise<void> {
    return this.request('DELETE', `/api/hosts/${seg(host)}`);
  }

  alerts(): Promise<Alert[]> {
    return this.request('GET', '/api/alerts');
  }

  dashboards(): Promise<Dashboard[]> {
    return this.request('GET', '/api/dashboards');
  }

  saveDashboard(id: number | null, dashboard: DashboardInput): Promise<Dashboard> {
    return id === null
      ? this.request('POST', '/api/dashboards', { json: dashboard })
      : this.request('PUT', `/api/dashboards/${seg(id)}`, { json: dashboard });
  }

  deleteDashboard(id: number): Promise<void> {
    return this.request('DELETE', `/api/dashboards/${seg(id)}`);
  }

  setHostLabels(host: HostRef, labels: Record<string, string>): Promise<HostSummary> {
    return this.request('PUT', `/api/hosts/${seg(host)}/labels`, { json: { labels } });
  }

  fleet(handlers: FleetHandlers): LiveSubscription {
    if (this.options.socketCredentials === 'none') return this.pollFleet(handlers);
    const wsOrigin = this.options.origin.replace(/^http/, 'ws');
    const stream = new LiveStream({
      url: async () => {
        const { ticket } = await this.request<{ ticket: string }>('POST', '/api/auth/ws-ticket');
        return `${wsOrigin}/ws/fleet${query({ ticket })}`;
      },
      socket: this.options.socket,
      backoff: this.options.backoff,
      onMessage: (data) => {
        let parsed: FleetUpdate;
        try {
          parsed = JSON.parse(data) as FleetUpdate;
        } catch {
          return;
        }
        if (parsed && parsed.type === 'rows' && Array.isArray(parsed.rows)) handlers.onRows(parsed.rows);
      },
      onStatus: handlers.onStatus,
      onExpired: () => this.end('Your sign-in has expired. Sign in again to continue.'),
      stillAuthorized: () => this.stillSignedIn(),
    });
    return follow(stream);
  }

  /** Whether the session still stands, asked when a stream is refused: a 401 ends it. */
  private async stillSignedIn(): Promise<boolean> {
    try {
      await this.request('GET', '/api/auth/me');
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return false;
      throw e;
    }
  }

  /** The fleet's changes where there is no stream to carry them: the hosts list, polled. */
  private pollFleet(handlers: FleetHandlers): LiveSubscription {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | null = null;
    const status: LiveStatus = { state: 'connecting', attempt: 0, retryAt: null, lastMessageAt: null };
    const tick = async () => {
      timer = null;
      try {
        const hosts = await this.hosts();
        if (stopped) return;
        handlers.onRows(hosts.map((h) => ({ hostname: h.hostname, online: h.online, last_seen: h.last_seen, figures: h.figures })));
        handlers.onStatus({ ...status, state: 'live', lastMessageAt: Date.now() });
      } catch {
        if (stopped) return;
        handlers.onStatus({ ...status, state: 'reconnecting', attempt: 1, retryAt: Date.now() + FLEET_POLL_MS });
      }
      if (!stopped) timer = setTimeout(() => void tick(), FLEET_POLL_MS);
    };
    handlers.onStatus(status);
    void tick();
    return {
      close: () => {
        stopped = true;
        if (timer !== null) clearTimeout(timer);
        handlers.onStatus({ ...status, state: 'closed' });
      },
      retryNow: () => {
        if (timer !== null) clearTimeout(timer);
        void tick();
      },
    };
  }

  alertHistory(page: { limit: number; offset: number }): Promise<AlertEvent[]> {
    return this.request('GET', `/api/alerts/history${query(page)}`);
  }

  alertDeliveries(page: { limit: number; offset: number }): Promise<AlertDelivery[]> {
    return this.request('GET', `/api/alerts/deliveries${query(page)}`);
  }

  alertRules(): Promise<AlertRule[]> {
    return this.request('GET', '/api/alert-rules');
  }

  saveAlertRule(rule: AlertRule, previous: string | null): Promise<AlertRule> {
    return previous === null
      ? this.request('POST', '/api/alert-rules', { json: rule })
      : this.request('PUT', `/api/alert-rules/${seg(previous)}`, { json: rule });
  }

  deleteAlertRule(name: string): Promise<void> {
    return this.request('DELETE', `/api/alert-rules/${seg(name)}`);
  }

  alertChannels(): Promise<AlertChannel[]> {
    return this.request('GET', '/api/alert-channels');
  }

  async testAlertChannel(name: string): Promise<void> {
    await this.request('POST', `/api/alert-channels/${seg(name)}/test`);
  }

  silences(): Promise<Silence[]> {
    return this.request('GET', '/api/silences');
  }

  createSilence(silence: NewSilence): Promise<Silence> {
    return this.request('POST', '/api/silences', { json: silence });
  }

  deleteSilence(id: number): Promise<void> {
    return this.request('DELETE', `/api/silences/${seg(id)}`);
  }
}

function safeSessionStorage(): KeyValueStore | null {
  try {
    return typeof sessionStorage === 'undefined' ? null : sessionStorage;
  } catch {
    return null; // storage disabled: the session lasts as long as the page
  }
}

/** The transport for where the dashboard runs: in the desktop app (a Tauri window,
 *  recognised by `__TAURI_INTERNALS__`) the app's commands (see `tauri.ts`); everywhere
 *  else the collector that served this page. */
export function createTransport(): Transport {
  if ('__TAURI_INTERNALS__' in window) return new TauriTransport();
  return new WebTransport({ origin: window.location.origin });
}

/** Starts `stream` and hands it out as a subscription; the browser coming back online
 *  retries at once instead of waiting out the backoff. */
function follow(stream: LiveStream): LiveSubscription {
  stream.start();
  const online = () => stream.retryNow();
  if (typeof window !== 'undefined') window.addEventListener('online', online);
  return {
    close: () => {
      if (typeof window !== 'undefined') window.removeEventListener('online', online);
      stream.close();
    },
    retryNow: () => stream.retryNow(),
  };
}
