// The transport: reconnect with backoff (fake timers, fake WebSocket), REST errors,
// sessions and where the token goes.

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { LiveStatus, SocketLike } from './transport';
import { ApiError, DEFAULT_BACKOFF, LiveStream, WebTransport, backoffDelay, filenameFrom } from './transport';

/** A WebSocket the test drives by hand. */
class FakeSocket implements SocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  closed: { code?: number; reason?: string } | null = null;
  constructor(readonly url: string) {}
  open() {
    this.onopen?.({});
  }
  message(data: string) {
    this.onmessage?.({ data });
  }
  drop(code = 1006) {
    this.onerror?.({});
    this.onclose?.({ code, reason: '' });
  }
  close(code?: number, reason?: string) {
    this.closed = { code, reason };
  }
}

function harness(extra: Partial<ConstructorParameters<typeof LiveStream>[0]> = {}) {
  const sockets: FakeSocket[] = [];
  const statuses: LiveStatus[] = [];
  const messages: string[] = [];
  const expired = vi.fn();
  let n = 0;
  const stream = new LiveStream({
    url: () => `ws://collector/ws?attempt=${n++}`,
    socket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    onMessage: (m) => messages.push(m),
    onStatus: (s) => statuses.push(s),
    onExpired: expired,
    random: () => 0, // no jitter: the longest wait
    ...extra,
  });
  return { stream, sockets, statuses, messages, expired, last: () => statuses[statuses.length - 1] };
}

describe('backoffDelay', () => {
  it('grows exponentially up to the cap', () => {
    const d = (a: number) => backoffDelay(a, DEFAULT_BACKOFF, () => 0);
    expect([0, 1, 2, 3, 4, 5, 10].map(d)).toEqual([1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  });
  it('jitters downwards by at most the jitter share, never below the debounce', () => {
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 0.999)).toBeGreaterThanOrEqual(500);
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 1)).toBe(4000);
    expect(backoffDelay(0, { ...DEFAULT_BACKOFF, initialMs: 10 }, () => 0)).toBe(DEFAULT_BACKOFF.debounceMs);
  });
});

describe('LiveStream', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('connects, reports live and passes messages on', () => {
    const h = harness();
    h.stream.start();
    expect(h.last().state).toBe('connecting');
    h.sockets[0].open();
    expect(h.last().state).toBe('live');
    h.sockets[0].message('{"a":1}');
    expect(h.messages).toEqual(['{"a":1}']);
    expect(h.last().lastMessageAt).not.toBeNull();
  });

  it('reconnects after a drop with growing waits, showing "reconnecting"', () => {
    const h = harness();
    h.stream.start();
    h.sockets[0].open();
    h.sockets[0].drop();
    expect(h.last()).toMatchObject({ state: 'reconnecting', attempt: 1 });
    expect(h.sockets).toHaveLength(1);
    vi.advanceTimersByTime(999);
    expect(h.sockets).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(h.sockets).toHaveLength(2);
    // Fails again at once: the next wait doubles.
    h.sockets[1].drop();
    expect(h.last()).toMatchObject({ state: 'reconnecting', attempt: 2 });
    vi.advanceTimersByTime(1999);
    expect(h.sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(h.sockets).toHaveLength(3);
    // Data flows again: back to live, and the backoff starts over.
    h.sockets[2].open();
    h.sockets[2].message('x');
    expect(h.last()).toMatchObject({ state: 'live', attempt: 0 });
    h.sockets[2].drop();
    vi.advanceTimersByTime(1000);
    expect(h.sockets).toHaveLength(4);
  });

  it('does not reset the backoff on an open that delivers nothing', () => {
    const h = harness();
    h.stream.start();
    h.sockets[0].drop();
    vi.advanceTimersByTime(1000);
    h.sockets[1].open();
    h.sockets[1].drop();
    expect(h.last().attempt).toBe(2);
  });

  it('treats error and close of one drop as one, and ignores stale sockets', () => {
    const h = harness();
    h.stream.start();
    const first = h.sockets[0];
    first.onerror?.({});
    first.onclose?.({ code: 1006, reason: '' });
    first.onclose?.({ code: 1006, reason: '' });
    expect(h.statuses.filter((s) => s.state === 'reconnecting')).toHaveLength(1);
    vi.advanceTimersByTime(1000);
    expect(h.sockets).toHaveLength(2);
    // The old socket's late events change nothing.
    first.message('late');
    first.drop();
    expect(h.messages).toEqual([]);
    vi.advanceTimersByTime(60_000);
    expect(h.sockets).toHaveLength(2);
  });

  it('stops for good when the token expired (4001)', () => {
    const h = harness();
    h.stream.start();
    h.sockets[0].open();
    h.sockets[0].drop(4001);
    expect(h.expired).toHaveBeenCalledOnce();
    expect(h.last().state).toBe('closed');
    vi.advanceTimersByTime(60_000);
    expect(h.sockets).toHaveLength(1);
  });

  it('asks whether the session still works before retrying repeatedly', async () => {
    const stillAuthorized = vi.fn(async () => false);
    const h = harness({ stillAuthorized });
    h.stream.start();
    h.sockets[0].drop();
    await vi.advanceTimersByTimeAsync(1000);
    h.sockets[1].drop();
    await vi.advanceTimersByTimeAsync(2000);
    expect(stillAuthorized).toHaveBeenCalledOnce();
    expect(h.expired).toHaveBeenCalledOnce();
    expect(h.sockets).toHaveLength(2);
  });

  it('retries at once on request, only while waiting', () => {
    const h = harness();
    h.stream.start();
    h.stream.retryNow();
    expect(h.sockets).toHaveLength(1);
    h.sockets[0].drop();
    h.stream.retryNow();
    expect(h.sockets).toHaveLength(2);
    vi.advanceTimersByTime(60_000);
    expect(h.sockets).toHaveLength(2);
  });

  it('closes cleanly and never reconnects afterwards', () => {
    const h = harness();
    h.stream.start();
    h.sockets[0].open();
    h.stream.close();
    expect(h.sockets[0].closed).toMatchObject({ code: 1000 });
    expect(h.last().state).toBe('closed');
    h.sockets[0].drop();
    vi.advanceTimersByTime(60_000);
    expect(h.sockets).toHaveLength(1);
  });

  it('cancels a pending retry when closed', () => {
    const h = harness();
    h.stream.start();
    h.sockets[0].drop();
    h.stream.close();
    vi.advanceTimersByTime(60_000);
    expect(h.sockets).toHaveLength(1);
  });

  it('builds the URL afresh for every attempt', () => {
    const h = harness();
    h.stream.start();
    h.sockets[0].drop();
    vi.advanceTimersByTime(1000);
    expect(h.sockets.map((s) => s.url)).toEqual(['ws://collector/ws?attempt=0', 'ws://collector/ws?attempt=1']);
  });
});

/** A fetch that answers from a table of (method path) → response. */
function fakeFetch(routes: Record<string, () => Response>) {
  const calls: { url: string; init: RequestInit }[] = [];
  const f = (async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = String(input);
    calls.push({ url, init });
    const path = url.replace('http://c', '').split('?')[0];
    const handler = routes[`${init.method ?? 'GET'} ${path}`];
    if (!handler) throw new TypeError('Failed to fetch');
    return handler();
  }) as typeof fetch;
  return { f, calls };
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
}

class MemoryStore {
  map = new Map<string, string>();
  getItem(k: string) {
    return this.map.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.map.set(k, v);
  }
  removeItem(k: string) {
    this.map.delete(k);
  }
}

const future = () => new Date(Date.now() + 3600_000).toISOString();

describe('WebTransport', () => {
  it('signs in, keeps the token in session storage and sends it as a bearer token', async () => {
    const storage = new MemoryStore();
    const { f, calls } = fakeFetch({
      'POST /api/auth/login': () => json({ token: 'T0K', expires_at: future(), role: 'operator', username: 'ada' }),
      'GET /api/hosts/': () => json([]),
    });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage });
    const session = await t.signIn('ada', 'pw');
    expect(session).toMatchObject({ username: 'ada', role: 'operator' });
    expect(JSON.parse(storage.getItem('procyon.session')!).token).toBe('T0K');
    await t.hosts();
    expect((calls[1].init.headers as Record<string, string>).Authorization).toBe('Bearer T0K');
    expect(calls[1].url).not.toContain('T0K');
    t.signOut();
    expect(storage.getItem('procyon.session')).toBeNull();
  });

  it('turns error bodies into ApiErrors with the server message', async () => {
    const { f } = fakeFetch({
      'POST /api/auth/login': () => json({ error: 'unauthorized', message: 'Wrong user name or password.', field: null }, 401),
    });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null });
    const err = await t.signIn('x', 'y').catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 401, code: 'unauthorized', message: 'Wrong user name or password.' });
  });

  it('says in words when the collector cannot be reached', async () => {
    const t = new WebTransport({ origin: 'http://c', fetch: fakeFetch({}).f, storage: null });
    const err = await t.signIn('x', 'y').catch((e) => e);
    expect(err).toMatchObject({ status: 0, code: 'network' });
    expect(err.message).toContain('Cannot reach the collector');
  });

  it('ends the session on a 401 and tells listeners', async () => {
    const { f } = fakeFetch({
      'POST /api/auth/login': () => json({ token: 'T', expires_at: future(), role: 'viewer', username: 'v' }),
      'GET /api/hosts/': () => json({ error: 'unauthorized', message: 'expired' }, 401),
    });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null });
    const ended = vi.fn();
    t.onSessionEnd(ended);
    await t.signIn('v', 'pw');
    await expect(t.hosts()).rejects.toMatchObject({ status: 401 });
    expect(ended).toHaveBeenCalledOnce();
    expect(t.session()).toBeNull();
  });

  it('renews its token before expiry while the dashboard is used, and lets an idle one expire', async () => {
    vi.useFakeTimers();
    try {
      let activity = Date.now();
      let renewals = 0;
      const soon = () => new Date(Date.now() + 10 * 60_000).toISOString();
      const { f, calls } = fakeFetch({
        'POST /api/auth/login': () => json({ token: 'T1', expires_at: soon(), role: 'viewer', username: 'v' }),
        'POST /api/auth/refresh': () => {
          renewals += 1;
          return json({ token: `R${renewals}`, expires_at: soon(), role: 'operator', username: 'v' });
        },
      });
      const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null, lastActivity: () => activity });
      const ended = vi.fn();
      t.onSessionEnd(ended);
      await t.signIn('v', 'pw');
      // Someone clicks a minute in: the token is renewed two minutes before it expires.
      await vi.advanceTimersByTimeAsync(60_000);
      activity = Date.now();
      await vi.advanceTimersByTimeAsync(7 * 60_000 + 1000);
      expect(renewals).toBe(1);
      const refresh = calls.find((c) => c.url.endsWith('/api/auth/refresh'))!;
      expect((refresh.init.headers as Record<string, string>).Authorization).toBe('Bearer T1');
      expect(t.session()).toMatchObject({ token: 'R1', role: 'operator' });
      // Then nobody touches it: no renewal, and it ends at its expiry.
      await vi.advanceTimersByTimeAsync(10 * 60_000 + 1000);
      expect(renewals).toBe(1);
      expect(ended).toHaveBeenCalledOnce();
      expect(t.session()).toBeNull();
    } finally {
      vi.useRealTimers();
    }
  });

  it('ends the session when the collector refuses to renew it', async () => {
    vi.useFakeTimers();
    try {
      const { f } = fakeFetch({
        'POST /api/auth/login': () => json({ token: 'T', expires_at: new Date(Date.now() + 600_000).toISOString(), role: 'viewer', username: 'v' }),
        'POST /api/auth/refresh': () => json({ error: 'unauthorized', message: 'This session is 12 hours old' }, 401),
      });
      const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null, lastActivity: () => Date.now() });
      const ended = vi.fn();
      t.onSessionEnd(ended);
      await t.signIn('v', 'pw');
      await vi.advanceTimersByTimeAsync(8 * 60_000 + 1000);
      expect(ended).toHaveBeenCalledOnce();
      expect(t.session()).toBeNull();
    } finally {
      vi.useRealTimers();
    }
  });

  it('restores a stored session with the role the server reports now', async () => {
    const storage = new MemoryStore();
    storage.setItem('procyon.session', JSON.stringify({ token: 'T', username: 'ada', role: 'admin', expires_at: future() }));
    const { f } = fakeFetch({ 'GET /api/auth/me': () => json({ username: 'ada', role: 'viewer' }) });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage });
    expect(await t.restore()).toMatchObject({ role: 'viewer' });
  });

  it('drops a stored session that expired or that the server refuses', async () => {
    const storage = new MemoryStore();
    storage.setItem('procyon.session', JSON.stringify({ token: 'T', username: 'a', role: 'admin', expires_at: new Date(Date.now() - 1000).toISOString() }));
    const t = new WebTransport({ origin: 'http://c', fetch: fakeFetch({}).f, storage });
    expect(await t.restore()).toBeNull();
    expect(storage.getItem('procyon.session')).toBeNull();

    storage.setItem('procyon.session', JSON.stringify({ token: 'T', username: 'a', role: 'admin', expires_at: future() }));
    const { f } = fakeFetch({ 'GET /api/auth/me': () => json({ error: 'unauthorized', message: 'no' }, 401) });
    const t2 = new WebTransport({ origin: 'http://c', fetch: f, storage });
    expect(await t2.restore()).toBeNull();
  });

  it('sends actions with the start time seen, and tree when asked', async () => {
    const { f, calls } = fakeFetch({
      'POST /api/auth/login': () => json({ token: 'T', expires_at: future(), role: 'operator', username: 'o' }),
      'POST /api/monitoring/3/process/42/kill': () => json({ status: 'success', message: 'Process 42 killed' }),
      'POST /api/monitoring/3/process/43/suspend': () =>
        json({ error: 'pid_reused', message: 'Process 43 is not the one you saw.' }, 409),
    });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null });
    await t.signIn('o', 'pw');
    const ok = await t.act({ host: 3, pid: 42, action: 'kill', startTime: '2026-01-01T00:00:00.000Z', tree: true });
    expect(ok.message).toBe('Process 42 killed');
    const url = new URL(calls[1].url);
    expect(url.searchParams.get('start_time')).toBe('2026-01-01T00:00:00.000Z');
    expect(url.searchParams.get('tree')).toBe('true');
    const err = await t.act({ host: 3, pid: 43, action: 'suspend', startTime: 'x', tree: false }).catch((e) => e);
    expect(err).toMatchObject({ status: 409, code: 'pid_reused' });
    expect(new URL(calls[2].url).searchParams.has('tree')).toBe(false);
  });

  it('sends a bulk action as one request naming every target, and returns each outcome', async () => {
    const { f, calls } = fakeFetch({
      'POST /api/auth/login': () => json({ token: 'T', expires_at: future(), role: 'operator', username: 'o' }),
      'POST /api/monitoring/3/processes/kill': () =>
        json({ results: [{ pid: 42, status: 'success', error: null }, { pid: 43, status: 'pid_reused', error: 'Not the one you saw.' }] }),
    });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null });
    await t.signIn('o', 'pw');
    const targets = [
      { pid: 42, start_time: '2026-01-01T00:00:00.000Z' },
      { pid: 43, start_time: '2026-01-01T00:00:01.000Z' },
    ];
    const results = await t.actMany({ host: 3, action: 'kill', targets });
    expect(results.map((r) => r.status)).toEqual(['success', 'pid_reused']);
    expect(calls[1].init?.method).toBe('POST');
    expect(JSON.parse(String(calls[1].init?.body))).toEqual({ targets });
  });

  it('reads the total of a snapshot list from X-Total-Count', async () => {
    const { f } = fakeFetch({
      'POST /api/auth/login': () => json({ token: 'T', expires_at: future(), role: 'viewer', username: 'v' }),
      'GET /api/process-snapshots/list/': () => json([{ snapshot_id: 1 }], 200, { 'X-Total-Count': '57' }),
    });
    const t = new WebTransport({ origin: 'http://c', fetch: f, storage: null });
    await t.signIn('v', 'pw');
    expect(await t.snapshots('h', { limit: 1, offset: 0 })).toMatchObject({ total: 57 });
  });

  it('streams one host over a WebSocket opened with a single-use ticket, never the token', async () => {
    const sockets: FakeSocket[] = [];
    let tickets = 0;
    const { f, calls } = fakeFetch({
      'POST /api/auth/ws-ticket': () => json({ ticket: `ticket-${++tickets}`, expires_in_secs: 30 }),
    });
    const t = new WebTransport({
      origin: 'http://c',
      fetch: f,
      storage: null,
      socket: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
    });
    // A session without the network round trip.
    (t as unknown as { current: unknown }).current = { token: 'T K', username: 'v', role: 'viewer', expires_at: future() };
    const got: string[] = [];
    const sub = t.live('web-1', { onSnapshot: (s) => got.push(s.host.hostname), onStatus: () => {} });
    await vi.waitFor(() => expect(sockets.length).toBe(1));
    // The ticket was asked for with the token in a header ...
    expect(calls[0].url).toBe('http://c/api/auth/ws-ticket');
    expect((calls[0].init.headers as Record<string, string>).Authorization).toBe('Bearer T K');
    // ... and only the ticket is in the URL.
    const url = new URL(sockets[0].url);
    expect(url.protocol).toBe('ws:');
    expect(url.pathname).toBe('/ws/process-snapshots/');
    expect(url.searchParams.get('ticket')).toBe('ticket-1');
    expect(url.searchParams.has('token')).toBe(false);
    expect(sockets[0].url).not.toContain('T%20K');
    expect(url.searchParams.get('hostname')).toBe('web-1');
    sockets[0].open();
    sockets[0].message(JSON.stringify({ host: { hostname: 'web-1' } }));
    sockets[0].message(JSON.stringify({ host: { hostname: 'other' } }));
    sockets[0].message('not json');
    expect(got).toEqual(['web-1']);
    sub.close();
  });
});

describe('filenameFrom', () => {
  it('takes the server name and strips what a file name should not hold', () => {
    expect(filenameFrom('attachment; filename="web-1-snapshot-3.csv"', 'x')).toBe('web-1-snapshot-3.csv');
    expect(filenameFrom('attachment; filename="../../etc/passwd"', 'x')).toBe('.._.._etc_passwd');
    expect(filenameFrom(null, 'fallback.json')).toBe('fallback.json');
  });
});
