// The dashboard state in the desktop app: no sign-in page, the session follows the app's
// mode, and a change of mode (connect, sign out) tears down and takes up the next
// session, hosts and default host included.

import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { clearMocks, mockIPC, mockWindows } from '@tauri-apps/api/mocks';
import type { ApiReply, ApiRequest, HostSummary } from './model';
import { App } from './app.svelte';
import { TauriTransport } from './tauri';
import { LOCAL_STATE as LOCAL } from './testing/fixtures';

beforeAll(() => {
  // Just enough of a browser for the state object: a window with a URL hash and
  // history, and a document root for the theme.
  const location = { hash: '', origin: 'tauri://localhost' };
  const history = {
    pushState: (_s: unknown, _t: string, hash: string) => (location.hash = hash),
    replaceState: (_s: unknown, _t: string, hash: string) => (location.hash = hash),
  };
  Object.assign(globalThis, {
    window: Object.assign(new EventTarget(), { crypto: globalThis.crypto, location, history }),
    document: { documentElement: { dataset: {} } },
  });
});

const host = (hostname: string, local: boolean): HostSummary => ({
  id: hostname.length,
  hostname,
  info: null,
  first_seen: '2026-01-01T00:00:00Z',
  last_seen: '2026-01-01T00:00:00Z',
  online: true,
  local,
  snapshot_count: 0,
  labels: {},
  admin_labels: {},
  figures: null,
});

const reply = (status: number, body: unknown): ApiReply => ({
  status,
  content_type: 'application/json',
  content_disposition: null,
  body: JSON.stringify(body),
});

function fakeApp() {
  let state = LOCAL;
  const commands: string[] = [];
  mockIPC((cmd, args) => {
    const a = (args ?? {}) as Record<string, unknown>;
    commands.push(cmd);
    switch (cmd) {
      case 'desktop_state':
        return state;
      case 'remote_sign_in':
        state = {
          ...state,
          mode: 'remote',
          remote: { url: a.url as string, username: a.username as string, role: 'operator', expires_at: '2999-01-01T00:00:00Z' },
        };
        return state;
      case 'remote_sign_out':
        state = { ...state, mode: 'local', remote: null };
        return state;
      case 'live':
        return 1;
      case 'live_stop':
        return null;
      case 'api': {
        const r = a.request as ApiRequest;
        const remote = state.mode === 'remote';
        if (r.path === '/api/auth/me') return reply(200, remote ? { username: 'grace', role: 'operator' } : { username: 'ada', role: 'admin' });
        if (r.path === '/api/hosts/') return reply(200, remote ? [host('web-1', false), host('db-1', false)] : [host('ada-laptop', true), host('agent-1', false)]);
        if (r.path.startsWith('/api/process-snapshots/series/')) return reply(200, { hostname: '', tier: 'raw', points: [] });
        return reply(404, { error: 'not_found', message: 'No such thing.', field: null });
      }
      default:
        return null;
    }
  });
  return { commands };
}

const settle = async () => {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
};

let app: App | null = null;
afterEach(() => {
  app?.destroy();
  app = null;
  clearMocks();
});

describe('App in the desktop app', () => {
  it('starts signed in as this machine, with its hosts and this machine first', async () => {
    mockWindows('main');
    fakeApp();
    app = new App(new TauriTransport());
    await app.start();
    expect(app.session).toMatchObject({ username: 'ada', role: 'admin' });
    expect(app.canAct).toBe(true);
    expect(app.hosts.map((h) => h.hostname)).toEqual(['ada-laptop', 'agent-1']);
    expect(app.route.host).toBe('ada-laptop');
    expect(app.desktop?.mode).toBe('local');
    expect(app.startError).toBeNull();
  });

  it('follows a remote sign-in and a sign-out, hosts and default host included', async () => {
    mockWindows('main');
    const fake = fakeApp();
    app = new App(new TauriTransport());
    await app.start();
    await app.tauri!.remoteSignIn('https://procyon.example.com', 'grace', 'pw');
    await settle();
    expect(app.session).toMatchObject({ username: 'grace', role: 'operator' });
    expect(app.hosts.map((h) => h.hostname)).toEqual(['db-1', 'web-1']);
    expect(app.route.host).toBe('db-1');
    expect(app.toasts.map((t) => t.title)).toContain('Now showing the collector at procyon.example.com.');
    app.signOut();
    await settle();
    expect(fake.commands).toContain('remote_sign_out');
    expect(app.session).toMatchObject({ username: 'ada', role: 'admin' });
    expect(app.route.host).toBe('ada-laptop');
    expect(app.endedReason).toBeNull();
  });

  it('says why it cannot start when the app does not answer', async () => {
    mockWindows('main');
    mockIPC(() => {
      throw { code: 'internal', detail: 'The store could not be opened.' };
    });
    app = new App(new TauriTransport());
    await app.start();
    expect(app.session).toBeNull();
    expect(app.startError).toBe('The store could not be opened.');
  });
});
