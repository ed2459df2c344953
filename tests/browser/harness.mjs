// Shared by the browser end-to-end test and the browser benchmark: starting a real
// `procyon serve` (port 0, a temporary data directory, its first admin password read
// from stdout, as tests/common/collector.rs does), the `procyon` CLI, and Debian's
// Chromium driven by playwright-core (installed with the dashboard's npm packages, so
// it is resolved from ui/node_modules).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(join(ROOT, 'ui', 'package.json'));
export const { chromium } = require('playwright-core');

/** The `procyon` binary: $PROCYON_BIN, else target/<profile>/procyon under
 *  $CARGO_TARGET_DIR or ./target. */
export function procyonBin(profile = 'debug') {
  if (process.env.PROCYON_BIN) return process.env.PROCYON_BIN;
  const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
  const bin = join(target, profile, 'procyon');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`cargo build${profile === 'release' ? ' --release' : ''}\` first`);
  return bin;
}

/** Runs `procyon ARGS --data DIR` and returns its stdout. */
export function cli(bin, data, args, input) {
  const r = spawnSync(bin, [...args, '--data', data], { input: input ?? '', encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`procyon ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/**
 * A running collector. `stop()` ends it and removes its data. `argv0` is the program
 * name its command line shows (the binary's path by default).
 */
export async function startCollector({ bin = procyonBin(), args = [], timeoutMs = 30_000, argv0 } = {}) {
  const data = mkdtempSync(join(tmpdir(), 'procyon-e2e-'));
  const child = spawn(bin, ['serve', '--bind', '127.0.0.1:0', '--data', data, ...args], {
    argv0,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  const lines = createInterface({ input: child.stdout });
  let adminPassword = null;
  const base = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('the collector did not start in time')), timeoutMs);
    child.once('exit', (code) => fail(new Error(`the collector exited early (${code})`)));
    lines.on('line', (line) => {
      const pw = /^No users yet: created `admin`; its password is in (.+?) \(/.exec(line);
      if (pw) adminPassword = readFileSync(pw[1], 'utf8').trim();
      const url = /^Procyon collector on (http:\/\/\S+?)\/? /.exec(line);
      if (url) {
        clearTimeout(timer);
        ok(url[1].replace(/\/$/, ''));
      }
    });
  });
  let stopped = false;
  return {
    base,
    data,
    adminPassword,
    child,
    cli: (a, input) => cli(bin, data, a, input),
    async login(username, password) {
      const r = await fetch(`${base}/api/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
      if (!r.ok) throw new Error(`login of ${username}: ${r.status}`);
      return (await r.json()).token;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const exited = await Promise.race([
          new Promise((ok) => child.once('exit', () => ok(true))),
          new Promise((ok) => setTimeout(() => ok(false), 10_000)),
        ]);
        if (!exited) child.kill('SIGKILL');
      }
      rmSync(data, { recursive: true, force: true });
    },
  };
}

/** Debian's Chromium, headless. playwright-core gives every launch a fresh, temporary
 *  profile (`--user-data-dir`) and removes it on close. */
export async function launchChromium() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
    ],
    timeout: 60_000,
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
    },
  };
}

/** Uploads a snapshot with an agent key. */
export async function upload(base, key, body) {
  const r = await fetch(`${base}/api/process-snapshots/`, {
    method: 'POST',
    headers: { Authorization: `Api-Key ${key}`, 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  if (r.status !== 200 && r.status !== 201) throw new Error(`upload: ${r.status} ${await r.text()}`);
  return r.json();
}

/** The state letter of a process (R, S, T, ...): the third field of /proc/PID/stat,
 *  after the parenthesised name. */
export function stateOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
}

/** Polls `check` until it returns something truthy (which is returned). */
export async function waitFor(what, check, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

/** A uniquely named process under a known parent: a symlink to sleep gives the kernel's
 *  name and argv[0] the name `name`; bash starts it and waits. Returns the parent (a
 *  ChildProcess), the process's pid, and the folder of the symlink (remove it after). */
export async function startNamedProcess(name) {
  const binDir = mkdtempSync(join(tmpdir(), 'procyon-e2e-bin-'));
  const sleep = ['/usr/bin/sleep', '/bin/sleep'].find(existsSync);
  symlinkSync(sleep, join(binDir, name));
  const parent = spawn('bash', ['-c', `"${join(binDir, name)}" 600 & echo $!; wait`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = await new Promise((ok, fail) => {
    parent.stdout.once('data', (d) => ok(Number(String(d).trim())));
    parent.once('exit', () => fail(new Error('the test process did not start')));
  });
  return { parent, pid, binDir };
}
