// A small W3C WebDriver client for the desktop app's test: tauri-driver (which starts
// WebKit's WebDriver and, through it, the real app) speaks the standard protocol, so a
// few fetch calls are all the test needs.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';

const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

/** A free TCP port on loopback. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** The tauri-driver binary: on PATH, else where `cargo install` puts it. */
export function tauriDriverBin() {
  const cargo = join(process.env.CARGO_HOME ?? join(homedir(), '.cargo'), 'bin', 'tauri-driver');
  if (existsSync(cargo)) return cargo;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'tauri-driver'))) return join(dir, 'tauri-driver');
  }
  throw new Error('tauri-driver is missing: `cargo install tauri-driver --locked` (scripts/deps.sh test does it)');
}

/** Starts tauri-driver with `env` for the app it will start; resolves once it listens. */
export async function startDriver(env) {
  const port = await freePort();
  const nativePort = await freePort();
  const child = spawn(tauriDriverBin(), ['--port', String(port), '--native-port', String(nativePort)], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
  });
  const base = `http://127.0.0.1:${port}`;
  const end = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`tauri-driver exited (${child.exitCode})`);
    try {
      await fetch(`${base}/status`);
      break;
    } catch {
      if (Date.now() > end) throw new Error('tauri-driver did not start');
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    base,
    child,
    stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
}

async function call(base, method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`WebDriver ${method} ${path}: ${r.status} ${JSON.stringify(json.value ?? json)}`);
  return json.value;
}

/** A WebDriver session on the app at `application`, started with `args`. */
export class Session {
  static async start(driver, application, args = []) {
    const value = await call(driver.base, 'POST', '/session', {
      capabilities: { alwaysMatch: { 'tauri:options': { application, args } } },
    });
    return new Session(driver.base, value.sessionId);
  }

  constructor(base, id) {
    this.base = base;
    this.id = id;
  }

  cmd(method, path, body) {
    return call(this.base, method, `/session/${this.id}${path}`, body);
  }

  /**
   * Every element `css` matches now. The page updates live: an element can leave the
   * page (a process table row whose process moved out of view, say) between matching
   * and being handed over, and WebKit's driver then refuses the whole answer as stale;
   * asking again gets the page as it is a moment later.
   */
  async find(css) {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const found = await this.cmd('POST', '/elements', { using: 'css selector', value: css });
        return found.map((e) => e[ELEMENT]);
      } catch (e) {
        if (attempt >= 20 || !/stale element/.test(String(e))) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Waits for `css` to match, and returns the first element. */
  async waitFor(css, timeoutMs = 20_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const [first] = await this.find(css);
      if (first) return first;
      if (Date.now() > end) throw new Error(`timed out waiting for ${css}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async gone(css, timeoutMs = 10_000) {
    const end = Date.now() + timeoutMs;
    while ((await this.find(css)).length > 0) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${css} to go`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  click(element) {
    return this.cmd('POST', `/element/${element}/click`, {});
  }

  async type(element, text) {
    await this.cmd('POST', `/element/${element}/clear`, {});
    if (text) await this.cmd('POST', `/element/${element}/value`, { text });
  }

  text(element) {
    return this.cmd('GET', `/element/${element}/text`);
  }

  attribute(element, name) {
    return this.cmd('GET', `/element/${element}/attribute/${name}`);
  }

  /** Runs `script` (a function body) in the page; async scripts resolve through the
   *  last argument, as the protocol defines. */
  execute(script, args = []) {
    return this.cmd('POST', '/execute/sync', { script, args });
  }

  executeAsync(script, args = []) {
    return this.cmd('POST', '/execute/async', { script, args });
  }

  /** A PNG of the current window. */
  async screenshot() {
    return Buffer.from(await this.cmd('GET', '/screenshot'), 'base64');
  }

  handles() {
    return this.cmd('GET', '/window/handles');
  }

  switchTo(handle) {
    return this.cmd('POST', '/window', { handle });
  }

  async close() {
    try {
      await call(this.base, 'DELETE', `/session/${this.id}`);
    } catch {
      /* the app may be gone already */
    }
  }
}
