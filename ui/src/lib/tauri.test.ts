// The desktop transport against Tauri's IPC mocks: REST replies and command errors as
// the web transport's responses and errors, live channel events as socket callbacks,
// the implicit local session, the remote one, and what signing out does.

import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { Channel } from '@tauri-apps/api/core';
import { emit } from '@tauri-apps/api/event';
import { clearMocks, mockIPC, mockWindows } from '@tauri-apps/api/mocks';
import type { ApiReply, ApiRequest, DesktopState, LiveEvent } from './model';
import { ApiError, createTransport, type LiveStatus, type StoredSnapshot } from './transport';
import { CommandFailure, TauriTransport, commandFailure, replyToResponse } from './tauri';
import { LOCAL_STATE as LOCAL, snapshot } from './testing/fixtures';

beforeAll(() => {
  // The mocks live on `window`; vitest runs these tests in Node, where an event target
  // with `crypto` stands in for it.
  (globalThis as unknown as { window: unknown }).window = Object.assign(new EventTarget(), { crypto: globalThis.crypto });
});

const REMOTE: DesktopState = {
  ...LOCAL,
  mode: 'remote',
  remote: { url: 'https://procyon.example.com', username: 'grace', role: 'viewer', expires_at: '2999-01-01T00:00:00Z' },
  settings: { ...LOCAL.settings, remote_url: 'https://procyon.example.com' },
};

const json = (status: number, body: unknown, extra: Partial<ApiReply> = {}): ApiReply => ({
  status,
  content_type: 'application/json',
  content_disposition: null,
  body: JSON.stringify(body),
  ...extra,
});

/** A fake app: its state, a REST router for `api`, live channels, and every call made. */
function fakeApp(initial: DesktopState = LOCAL) {
  const calls: { cmd: string; args: Record<string, unknown> }[] = [];
  const requests: ApiRequest[] = [];
  const channels: Channel<LiveEvent>[] = [];
  const stopped: number[] = [];
  const app = {
    state: initial,
    /** `GET /api/auth/me`'s answer; a status of 401 refuses. */
    me: (s: DesktopState): ApiReply =>
      s.mode === 'remote' && s.remote
        ? json(200, { username: s.remote.username, role: s.remote.role })
        : json(200, { username: s.username, role: 'admin' }),
    routes: new Map<string, (r: ApiRequest) => ApiReply>(),
    calls,
    requests,
    channels,
    stopped,
    failNext: null as null | { cmd: string; error: unknown },
    /** When set, `live` answers with this (a subscription still being made). */
    liveAnswer: null as null | Promise<number>,
  };
  mockIPC(
    (cmd, args) => {
      const a = (args ?? {}) as Record<string, unknown>;
      calls.push({ cmd, args: a });
      if (app.failNext && app.failNext.cmd === cmd) {
        const error = app.failNext.error;
        app.failNext = null;
        throw error;
      }
      switch (cmd) {
        case 'desktop_state':
          return app.state;
        case 'remote_sign_out':
          app.state = { ...app.state, mode: 'local', remote: null };
          return app.state;
        case 'remote_sign_in':
          app.state = { ...REMOTE, remote: { ...REMOTE.remote!, url: a.url as string, username: a.username as string } };
          return app.state;
        case 'set_paused':
          app.state = { ...app.state, paused: a.paused as boolean };
          return app.state;
        case 'api': {
          const request = a.request as ApiRequest;
          requests.push(request);
          if (request.path === '/api/auth/me') return app.me(app.state);
          const route = app.routes.get(`${request.method} ${request.path.split('?')[0]}`);
          return route ? route(request) : json(404, { error: 'not_found', message: 'No such thing.', field: null });
        }
        case 'live':
          channels.push(a.onEvent as Channel<LiveEvent>);
          return app.liveAnswer ?? channels.length;
        case 'live_stop':
          stopped.push(a.id as number);
          return null;
        default:
          throw { code: 'invalid', detail: `unknown command ${cmd}` };
      }
    },
    { shouldMockEvents: true },
  );
  return app;
}

/** Sends one event down a live channel, as the app's Rust side would. */
const sequence = new WeakMap<object, number>();
function send(channel: Channel<LiveEvent>, event: LiveEvent) {
  const index = sequence.get(channel) ?? 0;
  sequence.set(channel, index + 1);
  const internals = (window as unknown as { __TAURI_INTERNALS__: { runCallback(id: number, data: unknown): void } })
    .__TAURI_INTERNALS__;
  internals.runCallback(channel.id, { index, message: event });
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

beforeEach(() => mockWindows('main'));
afterEach(() => {
  clearMocks();
  vi.useRealTimers();
});

describe('replyToResponse', () => {
  it('keeps status, type, disposition and body', async () => {
    const r = replyToResponse({ status: 201, content_type: 'text/csv', content_disposition: 'attachment; filename="a.csv"', body: 'a,b\n' });
    expect(r.status).toBe(201);
    expect(r.ok).toBe(true);
    expect(r.headers.get('Content-Type')).toBe('text/csv');
    expect(r.headers.get('Content-Disposition')).toBe('attachment; filename="a.csv"');
    expect(await r.text()).toBe('a,b\n');
  });
  it('gives no body where HTTP has none, and refuses statuses no server sends', async () => {
    expect(replyToResponse({ status: 204, content_type: '', content_disposition: null, body: '' }).body).toBeNull();
    expect(() => replyToResponse({ status: 42, content_type: '', content_disposition: null, body: '' })).toThrow(TypeError);
  });
});

describe('commandFailure', () => {
  it('keeps the code and uses the detail as the message', () => {
    const f = commandFailure({ code: 'keyring', detail: 'The keyring is locked.' });
    expect(f).toBeInstanceOf(CommandFailure);
    expect([f.code, f.message]).toEqual(['keyring', 'The keyring is locked.']);
    expect(commandFailure('command quit not allowed').message).toBe('command quit not allowed');
    expect(commandFailure(undefined).code).toBe('internal');
  });
});

describe('TauriTransport: REST over the api command', () => {
  it('signs the window in implicitly in local mode, as an admin, without a token', async () => {
    const app = fakeApp();
    const t = new TauriTransport();
    const session = await t.restore();
    expect(session).toMatchObject({ username: 'ada', role: 'admin', token: '' });
    expect(Date.parse(session!.expires_at)).toBeGreaterThan(Date.parse('9000-01-01'));
    expect(app.requests.map((r) => r.path)).toEqual(['/api/auth/me']);
    expect(t.state()?.hostname).toBe('ada-laptop');
  });

  it('carries method, path with query and body, and parses the reply', async () => {
    const app = fakeApp();
    app.routes.set('GET /api/hosts/', () => json(200, [{ hostname: 'ada-laptop' }]));
    app.routes.set('POST /api/monitoring/web-1/process/42/terminate', () => json(200, { status: 'success', message: 'done' }));
    const t = new TauriTransport();
    await t.restore();
    expect(await t.hosts()).toEqual([{ hostname: 'ada-laptop' }]);
    const result = await t.act({ host: 'web-1', pid: 42, action: 'terminate', startTime: '2026-01-01T00:00:00Z', tree: true });
    expect(result).toEqual({ status: 'success', message: 'done' });
    const post = app.requests.find((r) => r.method === 'POST')!;
    expect(post.path).toBe('/api/monitoring/web-1/process/42/terminate?start_time=2026-01-01T00%3A00%3A00Z&tree=true');
    expect(post.body).toBeNull();
  });

  it('carries a bulk action as one POST with its targets in the body', async () => {
    const app = fakeApp();
    app.routes.set('POST /api/monitoring/web-1/processes/suspend', () =>
      json(200, { results: [{ pid: 42, status: 'success', error: null }] }),
    );
    const t = new TauriTransport();
    await t.restore();
    const targets = [{ pid: 42, start_time: '2026-01-01T00:00:00Z' }];
    expect(await t.actMany({ host: 'web-1', action: 'suspend', targets })).toEqual([{ pid: 42, status: 'success', error: null }]);
    const post = app.requests.find((r) => r.method === 'POST')!;
    expect(post.path).toBe('/api/monitoring/web-1/processes/suspend');
    expect(JSON.parse(post.body!)).toEqual({ targets });
  });

  it('turns 4xx and 5xx replies into ApiErrors with the server message', async () => {
    const app = fakeApp();
    app.routes.set('GET /api/process-snapshots/7/', () => json(404, { error: 'not_found', message: 'No snapshot 7.', field: null }));
    app.routes.set('GET /api/process-snapshots/8/', () => ({ status: 502, content_type: 'text/html', content_disposition: null, body: '<h1>bad</h1>' }));
    const t = new TauriTransport();
    await t.restore();
    const e404 = await t.snapshot(7).catch((e) => e);
    expect(e404).toBeInstanceOf(ApiError);
    expect([e404.status, e404.code, e404.message]).toEqual([404, 'not_found', 'No snapshot 7.']);
    const e502 = await t.snapshot(8).catch((e) => e);
    expect([e502.status, e502.code, e502.message]).toEqual([502, 'http_502', 'The collector answered 502.']);
  });

  it('turns a rejected command into an ApiError carrying its detail', async () => {
    const app = fakeApp();
    const t = new TauriTransport();
    await t.restore();
    app.failNext = { cmd: 'api', error: { code: 'unavailable', detail: 'procyon.example.com cannot be reached.' } };
    const e = await t.hosts().catch((x) => x);
    expect(e).toBeInstanceOf(ApiError);
    expect([e.status, e.code, e.message]).toEqual([503, 'unavailable', 'procyon.example.com cannot be reached.']);
  });

  it('downloads with the filename from Content-Disposition', async () => {
    const app = fakeApp();
    app.routes.set('GET /api/process-snapshots/3/export', (r) => {
      expect(r.path).toBe('/api/process-snapshots/3/export?format=csv');
      return { status: 200, content_type: 'text/csv', content_disposition: 'attachment; filename="web-1 snap.csv"', body: 'pid,name\n1,init\n' };
    });
    const t = new TauriTransport();
    await t.restore();
    const d = await t.download({ kind: 'snapshot', snapshotId: 3, format: 'csv' });
    expect(d.filename).toBe('web-1_snap.csv');
    expect(await d.blob.text()).toBe('pid,name\n1,init\n');
  });

  it('issues agent keys and reports refusals', async () => {
    const app = fakeApp();
    app.routes.set('POST /api/keys', (r) => {
      const body = JSON.parse(r.body!);
      if (!body.name) return json(400, { error: 'invalid', message: "A key's name is 1 to 100 characters.", field: 'name' });
      return json(201, { key: 'pk_secret', summary: { id: 1, name: body.name, prefix: 'pk_s', hostname: body.hostname } });
    });
    const t = new TauriTransport();
    await t.restore();
    const created = await t.createAgentKey('web-1 agent', 'web-1');
    expect(created.key).toBe('pk_secret');
    expect(JSON.parse(app.requests.at(-1)!.body!)).toEqual({ name: 'web-1 agent', hostname: 'web-1' });
    const e = await t.createAgentKey('', null).catch((x) => x);
    expect([e.status, e.field, e.message]).toEqual([400, 'name', "A key's name is 1 to 100 characters."]);
  });
});

describe('TauriTransport: live over the live command', () => {
  function collect() {
    const snapshots: StoredSnapshot[] = [];
    const statuses: LiveStatus[] = [];
    return {
      snapshots,
      statuses,
      handlers: { onSnapshot: (s: StoredSnapshot) => snapshots.push(s), onStatus: (s: LiveStatus) => statuses.push(s) },
      last: () => statuses[statuses.length - 1],
    };
  }
  const stored = (hostname: string) => ({ ...snapshot({ hostname }), snapshot_id: 1, hostname, snapshot_time: '' });

  it('subscribes for one host and maps open, message and close', async () => {
    const app = fakeApp();
    const t = new TauriTransport({ backoff: { initialMs: 10, debounceMs: 10, jitter: 0 } });
    await t.restore();
    const c = collect();
    const sub = t.live('web-1', c.handlers);
    await flush();
    const live = app.calls.filter((x) => x.cmd === 'live');
    expect(live).toHaveLength(1);
    expect(live[0].args.hostname).toBe('web-1');
    // The dashboard asks for deltas, over the channel as over the WebSocket.
    expect(live[0].args.delta).toBe(true);
    expect(c.last().state).toBe('connecting');
    send(app.channels[0], { kind: 'open' });
    expect(c.last().state).toBe('live');
    send(app.channels[0], { kind: 'message', data: JSON.stringify(stored('web-1')) });
    send(app.channels[0], { kind: 'message', data: JSON.stringify(stored('other')) });
    expect(c.snapshots.map((s) => s.host.hostname)).toEqual(['web-1']);
    // The app failed the stream: reconnect with a new subscription.
    send(app.channels[0], { kind: 'closed', code: 1011, reason: 'sampler failed' });
    expect(c.last().state).toBe('reconnecting');
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(app.calls.filter((x) => x.cmd === 'live')).toHaveLength(2);
    // Events of the old channel are ignored now.
    send(app.channels[0], { kind: 'message', data: JSON.stringify(stored('web-1')) });
    expect(c.snapshots).toHaveLength(1);
    sub.close();
    await flush();
    expect(app.stopped).toEqual([2]);
    expect(c.last().state).toBe('closed');
  });

  it('opens the stream again on close code 4001 when the session was renewed', async () => {
    const app = fakeApp(REMOTE);
    const t = new TauriTransport();
    await t.restore();
    const ended = vi.fn();
    t.onSessionEnd(ended);
    const c = collect();
    t.live('web-1', c.handlers);
    await flush();
    send(app.channels[0], { kind: 'closed', code: 4001, reason: 'token expired' });
    await flush();
    expect(ended).not.toHaveBeenCalled();
    expect(app.calls.filter((x) => x.cmd === 'live')).toHaveLength(2);
  });

  it('ends the session on close code 4001', async () => {
    const app = fakeApp(REMOTE);
    const t = new TauriTransport();
    await t.restore();
    const ended = vi.fn();
    t.onSessionEnd(ended);
    const c = collect();
    t.live('web-1', c.handlers);
    await flush();
    const me = app.me;
    app.me = (s) => (s.mode === 'remote' ? json(401, { error: 'unauthorized', message: 'expired', field: null }) : me(s));
    send(app.channels[0], { kind: 'closed', code: 4001, reason: 'expired' });
    await flush();
    expect(c.last().state).toBe('closed');
    expect(ended).toHaveBeenCalledTimes(1);
    expect(ended.mock.calls[0][0]).toMatch(/procyon\.example\.com has ended/);
    await flush();
    // The dead remote token is dropped: back to this machine.
    expect(app.calls.some((x) => x.cmd === 'remote_sign_out')).toBe(true);
    expect(await t.restore()).toMatchObject({ username: 'ada', role: 'admin' });
  });

  it('reports a refused subscription as a failed connection', async () => {
    const app = fakeApp();
    const t = new TauriTransport({ backoff: { initialMs: 1000 } });
    await t.restore();
    app.failNext = { cmd: 'live', error: { code: 'invalid', detail: 'No host named web-9.' } };
    const c = collect();
    const sub = t.live('web-9', c.handlers);
    await flush();
    expect(c.last()).toMatchObject({ state: 'reconnecting', attempt: 1 });
    sub.close();
  });

  it('stops a subscription closed before its id arrived', async () => {
    const app = fakeApp();
    const t = new TauriTransport();
    await t.restore();
    let answer: (id: number) => void = () => undefined;
    app.liveAnswer = new Promise<number>((resolve) => (answer = resolve));
    const sub = t.live('web-1', collect().handlers);
    await flush();
    expect(app.channels).toHaveLength(1);
    sub.close();
    answer(7);
    await flush();
    expect(app.stopped).toEqual([7]);
  });

  it('does not subscribe at all when closed at once', async () => {
    const app = fakeApp();
    const t = new TauriTransport();
    await t.restore();
    t.live('web-1', collect().handlers).close();
    await flush();
    expect(app.channels).toHaveLength(0);
    expect(app.stopped).toEqual([]);
  });
});

describe('TauriTransport: sessions and modes', () => {
  it('mirrors the remote sign-in, and signing out returns to this machine', async () => {
    const app = fakeApp(REMOTE);
    const t = new TauriTransport();
    expect(await t.restore()).toMatchObject({ username: 'grace', role: 'viewer', expires_at: '2999-01-01T00:00:00Z', token: '' });
    const ended = vi.fn();
    t.onSessionEnd(ended);
    t.signOut();
    await flush();
    expect(app.calls.filter((x) => x.cmd === 'remote_sign_out')).toHaveLength(1);
    expect(ended).toHaveBeenCalledWith('Signed out of the remote collector: showing this machine again.');
    expect(t.session()).toBeNull();
    expect(await t.restore()).toMatchObject({ username: 'ada', role: 'admin' });
  });

  it('has nothing to sign out of in local mode', async () => {
    const app = fakeApp();
    const t = new TauriTransport();
    await t.restore();
    t.signOut();
    await flush();
    expect(app.calls.some((x) => x.cmd === 'remote_sign_out')).toBe(false);
    expect(t.session()).not.toBeNull();
  });

  it('signs a remote sign-in that no longer works out, with a notice', async () => {
    const app = fakeApp(REMOTE);
    app.me = (s) => (s.mode === 'remote' ? json(401, { error: 'unauthorized', message: 'Expired.', field: null }) : json(200, { username: 'ada', role: 'admin' }));
    const t = new TauriTransport();
    const notices: string[] = [];
    t.onNotice((n) => notices.push(n));
    const ended = vi.fn();
    t.onSessionEnd(ended);
    expect(await t.restore()).toMatchObject({ username: 'ada', role: 'admin' });
    expect(app.calls.filter((x) => x.cmd === 'remote_sign_out')).toHaveLength(1);
    expect(notices).toEqual(['Your sign-in to procyon.example.com has ended. Showing this machine; connect again in Settings.']);
    expect(ended).not.toHaveBeenCalled();
  });

  it('ends the session when the app switches source, from a command or from an event', async () => {
    fakeApp();
    const t = new TauriTransport();
    await t.restore();
    const ended = vi.fn();
    t.onSessionEnd(ended);
    const states: DesktopState[] = [];
    t.onState((s) => states.push(s));
    // A pause changes no source.
    await t.setPaused(true);
    expect(ended).not.toHaveBeenCalled();
    expect(states.at(-1)?.paused).toBe(true);
    await t.remoteSignIn('https://procyon.example.com', 'grace', 'pw');
    expect(ended).toHaveBeenCalledWith('Now showing the collector at procyon.example.com.');
    expect(await t.restore()).toMatchObject({ username: 'grace', role: 'viewer' });
    // The app signed out by itself (the tray, an expiry it noticed).
    await emit('desktop-state', LOCAL);
    expect(ended).toHaveBeenCalledTimes(2);
    expect(states.at(-1)?.mode).toBe('local');
  });

  it('passes command errors on with their detail', async () => {
    const app = fakeApp();
    const t = new TauriTransport();
    await t.restore();
    app.failNext = { cmd: 'remote_sign_in', error: { code: 'unauthorized', detail: 'Wrong user name or password.' } };
    const e = await t.remoteSignIn('https://x.example', 'grace', 'bad').catch((x) => x);
    expect(e).toBeInstanceOf(CommandFailure);
    expect([e.code, e.message]).toEqual(['unauthorized', 'Wrong user name or password.']);
    expect(t.state()?.mode).toBe('local');
  });
});

describe('createTransport', () => {
  it('picks the desktop transport in a Tauri window, the web one elsewhere', () => {
    fakeApp();
    expect(createTransport().kind).toBe('tauri');
    clearMocks();
    delete (window as unknown as Record<string, unknown>).__TAURI_INTERNALS__;
    Object.assign(window, { location: { origin: 'http://127.0.0.1:7450' } });
    expect(createTransport().kind).toBe('web');
  });
});
