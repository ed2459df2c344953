// The desktop app end to end: the real app (debug build with the `desktop` feature) in a
// real window under Xvfb with a D-Bus session, driven over WebDriver (tauri-driver and
// Debian's webkit2gtk-driver), with its data and settings in temporary folders.
//
//   cargo build --features desktop && (cd ui && npm ci && npm run build) &&
//   xvfb-run -a dbus-run-session -- node --test tests/desktop/e2e.test.mjs
//
// Xvfb has no tray host, so the first run is also the "no tray host" case; a second run
// hides the appindicator library from the app (a private mount namespace, where root
// may make one) and checks that the app still opens, without a tray.
// Screenshots of the main window and the quick view go to artifacts/ (gitignored).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, procyonBin, startNamedProcess, stateOf, waitFor } from '../browser/harness.mjs';
import { Session, startDriver } from './webdriver.mjs';

const ARTIFACTS = join(ROOT, 'artifacts');
const UNIQUE = `procyon-desk-${randomBytes(4).toString('hex')}`;

let home; // XDG folders of the app under test
let binDir;
let parent;
let targetPid;
const cleanups = [];

function saveShot(name, png) {
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(join(ARTIFACTS, `desktop-${name}.png`), png);
}

/** The environment the app runs in: its own data and settings, quiet logs. */
function appEnv(dir) {
  return {
    ...process.env,
    XDG_DATA_HOME: join(dir, 'data'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
  };
}

/** Kills every process that runs with the app environment of `dir` (the app and the
 *  WebKit processes it started): closing a WebDriver session only closes the window,
 *  which hides the app in its tray. */
function killApps(dir) {
  const mark = `XDG_DATA_HOME=${join(dir, 'data')}`;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(mark)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone, or not ours */
    }
  }
}

/** Starts the app through tauri-driver; `application` may be a wrapper script. */
async function openApp(dir, application = procyonBin()) {
  const driver = await startDriver(appEnv(dir));
  cleanups.push(() => killApps(dir));
  cleanups.push(() => driver.stop());
  const session = await Session.start(driver, application, ['desktop']);
  cleanups.push(() => session.close());
  return session;
}

const row = (pid) => `[data-testid=process-table] .prow[data-pid="${pid}"]`;

/** Calls one of the app's commands from the page, as the dashboard does. */
function invoke(session, cmd, args = {}) {
  return session.executeAsync(
    `const done = arguments[arguments.length - 1];
     window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1])
       .then((v) => done({ ok: v }), (e) => done({ err: e }));`,
    [cmd, args],
  );
}

before(async () => {
  assert.ok(existsSync(join(ROOT, 'ui/dist/index.html')), 'ui/dist is missing: run `npm ci && npm run build` in ui/');
  assert.ok(process.env.DISPLAY, 'run under xvfb-run (see the top of this file)');
  home = mkdtempSync(join(tmpdir(), 'procyon-desktop-e2e-'));
  ({ parent, pid: targetPid, binDir } = await startNamedProcess(UNIQUE));
});

after(async () => {
  for (const step of [
    ...cleanups.reverse(),
    () => {
      try {
        process.kill(targetPid, 'SIGCONT');
        process.kill(targetPid, 'SIGKILL');
      } catch {
        /* gone */
      }
    },
    () => parent?.kill('SIGKILL'),
    () => home && rmSync(home, { recursive: true, force: true }),
    () => binDir && rmSync(binDir, { recursive: true, force: true }),
  ]) {
    try {
      await step();
    } catch (e) {
      console.error('cleanup:', e);
    }
  }
});

test('the desktop window', { timeout: 240_000 }, async (t) => {
  const app = await openApp(join(home, 'first'));

  await t.test('shows this machine with no sign-in', async () => {
    await app.waitFor('[data-testid=process-table] .prow', 60_000);
    const state = await invoke(app, 'desktop_state');
    assert.ok(state.ok, JSON.stringify(state));
    assert.equal(state.ok.mode, 'local');
    assert.equal((await app.find('input[name=password]')).length, 0, 'no sign-in form');
  });

  await t.test('finds the test process and suspends and resumes it through the dialog', async () => {
    const search = await app.waitFor('[data-testid=process-search]');
    await app.type(search, UNIQUE);
    const r = await app.waitFor(row(targetPid), 30_000);
    assert.equal(await app.attribute(r, 'data-name'), UNIQUE);
    await app.click(r);
    await app.waitFor('[data-testid=process-drawer]');

    await app.click(await app.waitFor('[data-testid=act-suspend]'));
    const dialog = await app.waitFor('[data-testid=action-dialog]');
    const text = await app.text(dialog);
    assert.ok(text.includes(UNIQUE) && text.includes(String(targetPid)), text);
    saveShot('confirm-dialog', await app.screenshot());
    await app.click(await app.waitFor('[data-testid=confirm-action]'));
    await app.gone('[data-testid=action-dialog]');
    await waitFor('the process to stop', () => stateOf(targetPid) === 'T');
    await waitFor('the table to say stopped', async () => {
      const [s] = await app.find(`${row(targetPid)} [data-status]`);
      return s && (await app.attribute(s, 'data-status')) === 'stopped';
    });
    saveShot('suspended', await app.screenshot());

    await app.click(await app.waitFor('[data-testid=act-resume]'));
    await app.click(await app.waitFor('[data-testid=confirm-action]'));
    await app.gone('[data-testid=action-dialog]');
    await waitFor('the process to run again', () => stateOf(targetPid) !== 'T');
  });

  await t.test('the main window and the quick view, on screen', async () => {
    await app.click(await app.waitFor('button[aria-label="Close details"]'));
    // Clearing through the page, as typing would: the table listens to input events.
    await app.execute(`const i = document.querySelector('[data-testid=process-search]');
      i.value = ''; i.dispatchEvent(new Event('input', { bubbles: true }));`);
    await waitFor('the whole table', async () => (await app.find('[data-testid=process-table] .prow')).length > 5);
    await new Promise((r) => setTimeout(r, 1500));
    saveShot('main', await app.screenshot());

    const before = await app.handles();
    const opened = await invoke(app, 'open_quick_view');
    assert.ok(!opened.err, JSON.stringify(opened));
    const handles = await waitFor('the quick view window', async () => {
      const h = await app.handles();
      return h.length > before.length ? h : null;
    });
    const quick = handles.find((h) => !before.includes(h));
    await app.switchTo(quick);
    await app.waitFor('[data-testid=quick-view] [data-testid=quick-top] tr', 30_000);
    await new Promise((r) => setTimeout(r, 1500));
    saveShot('quick-view', await app.screenshot());
    // The quick view may not call what it does not need.
    const refused = await invoke(app, 'api', { request: { method: 'GET', path: '/api/hosts/' } });
    assert.ok(refused.err, 'api is not granted to the quick view');
    await app.switchTo(before[0]);
  });
});

test('the app opens without the appindicator library', { timeout: 180_000 }, async (t) => {
  const lib = spawnSync('sh', ['-c', 'ldconfig -p | grep -o "/.*libayatana-appindicator3.so.1$" | head -1'], {
    encoding: 'utf8',
  }).stdout.trim();
  const probe = spawnSync('unshare', ['-m', 'true']);
  if (!lib || probe.status !== 0) {
    t.skip(`cannot hide the library here (library: ${lib || 'not installed'}, private mounts: ${probe.status === 0})`);
    return;
  }
  // The app starts in a mount namespace where the library is an empty file, so loading
  // it fails exactly as on a machine without it.
  const wrapper = join(home, 'no-appindicator.sh');
  writeFileSync(
    wrapper,
    `#!/bin/sh\nexec unshare -m sh -c 'mount --bind /dev/null "$0" && exec "$@"' "${lib}" "${procyonBin()}" "$@"\n`,
  );
  chmodSync(wrapper, 0o755);
  const app = await openApp(join(home, 'second'), wrapper);
  await app.waitFor('[data-testid=process-table] .prow', 60_000);
  const state = await invoke(app, 'desktop_state');
  assert.equal(state.ok?.tray, false, JSON.stringify(state));
  saveShot('no-tray', await app.screenshot());
});
